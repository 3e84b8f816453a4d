//! The kernel-path flows that changed gateway: the records `xwan_xdp_decide` writes to
//! [`MOVED_MAP`] (see [`Moved`]), for the agent's conntrack resets.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use aya::maps::{MapData, RingBuf};
use xwan_common::{MOVED_MAP, Moved};

use super::{Datapath, DatapathError};

/// The reading end of [`MOVED_MAP`]; readable (poll, epoll) when records wait.
pub struct MovedRing {
    ring: RingBuf<MapData>,
}

impl MovedRing {
    /// Every record waiting, oldest first.
    pub fn drain(&mut self) -> Vec<Moved> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            // Records are written whole by one `bpf_ringbuf_output` of a `Moved`.
            if item.len() == size_of::<Moved>() {
                // SAFETY: `Moved` is plain integers, any bit pattern is valid; the length is
                // checked above and the read is unaligned.
                out.push(unsafe { item.as_ptr().cast::<Moved>().read_unaligned() });
            }
        }
        out
    }
}

impl AsFd for MovedRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for MovedRing {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl Datapath {
    /// Takes the reading end of [`MOVED_MAP`] (once: a ring has one consumer).
    pub fn moved_ring(&mut self) -> Result<MovedRing, DatapathError> {
        let missing = || DatapathError::Missing {
            what: "map (or it was taken already)",
            name: MOVED_MAP.into(),
        };
        let map = self.ebpf.take_map(MOVED_MAP).ok_or_else(missing)?;
        let ring = RingBuf::try_from(map).map_err(|error| DatapathError::Map {
            map: MOVED_MAP,
            op: "opening the ring buffer".into(),
            error: Box::new(error),
        })?;
        Ok(MovedRing { ring })
    }
}
