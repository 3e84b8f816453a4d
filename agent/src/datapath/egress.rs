//! Counting the redirects an egress did not take: attaches `xwan_trace_xmit` and
//! `xwan_trace_redirect_err` to the kernel's XDP tracepoints (`xwan_common::tracepoint`), so
//! a frame steered to an Ethernet gateway that never left counts as `drop_xmit` /
//! `drop_redirect` and as the gateway's failure, not as steered (`xwan_common::EgressLog`).
//!
//! Without it a veth WAN link whose peer has no XDP program (or a full TX ring, or a link
//! that went down) swallows steered traffic while the counters say it left: the trap the
//! `doctor` names. So it is attached wherever the kernel allows, and where it does not (no
//! tracefs, a tracepoint missing or laid out differently from what the programs read, no
//! perf-event bpf_link) xwan runs without it and says so ([`EgressWatch::Unavailable`]).
//!
//! The tracepoints' ids and formats are read from tracefs; when none is mounted, a private
//! one is mounted on a temporary directory for the reading and unmounted at once. The links
//! are pinned under `<pin dir>/`[`TRACE_DIR`] like the interfaces' links: they outlive the
//! agent, and the next one replaces them (detach, then attach: the moment between counts a
//! failure as steered, never twice).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use xwan_common::tracepoint::{self, Tracepoint};

use super::{Datapath, attach::detach_pin, bpffs, sys};

/// Subdirectory of the pin directory holding the tracepoint links (one per program).
pub const TRACE_DIR: &str = "tracepoints";

/// Whether failed redirects are counted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EgressWatch {
    /// As `drop_redirect` / `drop_xmit` and gateway failures.
    Counting,
    /// Not counted (a redirect the egress drops counts as steered): why.
    Unavailable(String),
}

impl fmt::Display for EgressWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressWatch::Counting => f.write_str("counted"),
            EgressWatch::Unavailable(why) => write!(f, "not counted: {why}"),
        }
    }
}

impl Datapath {
    /// Whether failed redirects are counted (`None` before [`Self::watch_egress`]).
    pub fn egress_watch(&self) -> Option<&EgressWatch> {
        self.egress.as_ref()
    }

    /// Attaches the egress programs (replacing what a previous agent left). Never fails: what
    /// the kernel does not allow is reported in the result and logged.
    pub fn watch_egress(&mut self) -> EgressWatch {
        let watch = match self.try_watch_egress() {
            Ok(()) => EgressWatch::Counting,
            Err(why) => EgressWatch::Unavailable(why),
        };
        match &watch {
            EgressWatch::Counting => log::info!("failed redirects: {watch}"),
            EgressWatch::Unavailable(_) => log::warn!(
                "failed redirects: {watch}; a frame an Ethernet gateway's egress drops counts \
                 as steered (`xwan doctor` says what the kernel offers)"
            ),
        }
        self.egress = Some(watch.clone());
        watch
    }

    fn try_watch_egress(&mut self) -> Result<(), String> {
        let events = read_events()?;
        let dir = self.pin_dir.join(TRACE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for ((tp, program), id) in tracepoint::ALL.iter().zip(events) {
            let pin = dir.join(program);
            detach_pin(&pin).map_err(|e| format!("removing {}: {e}", pin.display()))?;
            let prog = self.program_fd(program).map_err(|e| e.to_string())?;
            let link = attach(prog, id)
                .map_err(|e| format!("attaching {program} to {}:{}: {e}", tp.category, tp.name))?;
            sys::obj_pin(link.as_fd(), &pin)
                .map_err(|e| format!("pinning {program}'s link at {}: {e}", pin.display()))?;
        }
        Ok(())
    }

    /// Detaches the egress programs and removes their pins (`xwan stop`).
    pub(super) fn unwatch_egress(&mut self) -> io::Result<()> {
        self.egress = None;
        let dir = self.pin_dir.join(TRACE_DIR);
        for (_, program) in tracepoint::ALL {
            detach_pin(&dir.join(program))?;
        }
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The perf event ids of [`tracepoint::ALL`], each checked against its format.
fn read_events() -> Result<Vec<u64>, String> {
    let fs = Tracefs::open()?;
    tracepoint::ALL.iter().map(|(tp, _)| fs.event(tp)).collect()
}

/// A tracefs to read: the mounted one, or a private mount removed when dropped.
struct Tracefs {
    dir: PathBuf,
    temporary: bool,
}

impl Tracefs {
    fn open() -> Result<Tracefs, String> {
        if let Some(dir) = mounted_tracefs() {
            return Ok(Tracefs {
                dir,
                temporary: false,
            });
        }
        // Unique per call: two datapaths of one process (tests) may read at once.
        static CALLS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xwan-tracefs-{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("no tracefs mounted, and creating {}: {e}", dir.display()))?;
        if let Err(e) = bpffs::mount(c"tracefs", &dir) {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("no tracefs mounted, and {e}"));
        }
        log::debug!(
            "no tracefs mounted: reading one mounted on {}",
            dir.display()
        );
        Ok(Tracefs {
            dir,
            temporary: true,
        })
    }

    /// The id of `tp`, once its format has the fields the program reads where it reads them.
    fn event(&self, tp: &Tracepoint) -> Result<u64, String> {
        let base = self.dir.join("events").join(tp.category).join(tp.name);
        let read = |file: &str| {
            std::fs::read_to_string(base.join(file)).map_err(|e| {
                format!(
                    "tracepoint {}:{} ({}): {e}",
                    tp.category,
                    tp.name,
                    base.join(file).display()
                )
            })
        };
        check_format(tp, &read("format")?)?;
        read("id")?
            .trim()
            .parse()
            .map_err(|e| format!("tracepoint {}:{}: bad id: {e}", tp.category, tp.name))
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if !self.temporary {
            return;
        }
        if let Err(e) = bpffs::unmount(&self.dir) {
            log::warn!("unmounting the tracefs read on {}: {e}", self.dir.display());
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Where tracefs is mounted (`/proc/self/mountinfo`), if it is.
fn mounted_tracefs() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split(' ').next()?;
        let mountpoint = left.split(' ').nth(4)?;
        // Mount points with spaces are octal-escaped; tracefs' never are in practice.
        (fstype == "tracefs" && !mountpoint.contains('\\')).then(|| PathBuf::from(mountpoint))
    })
}

/// Checks that `format` (tracefs' description of a record) has each of `tp`'s fields at the
/// offset and size the program reads.
fn check_format(tp: &Tracepoint, format: &str) -> Result<(), String> {
    for want in tp.fields {
        let found = format.lines().find_map(|line| {
            let mut name = None;
            let (mut offset, mut size) = (None, None);
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(decl) = part.strip_prefix("field:") {
                    name = decl.split_whitespace().last();
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<usize>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<usize>().ok();
                }
            }
            (name? == want.name).then_some((offset?, size?))
        });
        match found {
            Some((offset, size)) if offset == want.offset && size == want.size => {}
            Some((offset, size)) => {
                return Err(format!(
                    "tracepoint {}:{}: field {} is at offset {offset}, size {size}; xwan's \
                     program reads offset {}, size {} (a kernel with another layout: report it)",
                    tp.category, tp.name, want.name, want.offset, want.size
                ));
            }
            None => {
                return Err(format!(
                    "tracepoint {}:{} has no field {}",
                    tp.category, tp.name, want.name
                ));
            }
        }
    }
    Ok(())
}

/// Opens the perf event of tracepoint `id` and links program `prog` to it
/// (`BPF_LINK_CREATE`, `BPF_PERF_EVENT`): the returned link holds the event.
fn attach(prog: BorrowedFd<'_>, id: u64) -> io::Result<OwnedFd> {
    /// `struct perf_event_attr` up to `config1` (`PERF_ATTR_SIZE_VER0`).
    #[repr(C)]
    struct PerfEventAttr {
        kind: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        config1: u64,
    }
    const PERF_TYPE_TRACEPOINT: u32 = 2;
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        flags: 0,
        wakeup_events: 1,
        bp_type: 0,
        config1: 0,
    };
    // A tracepoint's programs run on every CPU whatever the event's CPU; the kernel wants one.
    // SAFETY: `attr` is a valid perf_event_attr of the size it states.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    sys::link_create(prog, event.as_raw_fd() as u32, sys::BPF_PERF_EVENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tracefs' format of `xdp:xdp_devmap_xmit` on Linux 6.1 and 6.18 (the same).
    const DEVMAP_XMIT_FORMAT: &str = "name: xdp_devmap_xmit
ID: 578
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int from_ifindex;\toffset:8;\tsize:4;\tsigned:1;
\tfield:u32 act;\toffset:12;\tsize:4;\tsigned:0;
\tfield:int to_ifindex;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int drops;\toffset:20;\tsize:4;\tsigned:1;
\tfield:int sent;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int err;\toffset:28;\tsize:4;\tsigned:1;
";

    #[test]
    fn the_kernels_format_matches_what_the_program_reads() {
        check_format(&tracepoint::DEVMAP_XMIT, DEVMAP_XMIT_FORMAT).unwrap();
    }

    #[test]
    fn a_moved_or_missing_field_is_refused_with_where_it_is() {
        let moved = DEVMAP_XMIT_FORMAT.replace("drops;\toffset:20", "drops;\toffset:36");
        let e = check_format(&tracepoint::DEVMAP_XMIT, &moved).unwrap_err();
        assert!(e.contains("field drops is at offset 36, size 4"), "{e}");
        assert!(e.contains("reads offset 20"), "{e}");
        let missing = DEVMAP_XMIT_FORMAT.replace("sent;", "count;");
        let e = check_format(&tracepoint::DEVMAP_XMIT, &missing).unwrap_err();
        assert!(e.contains("has no field sent"), "{e}");
    }

    /// On this kernel: both tracepoints are found (mounting a private tracefs if needed),
    /// their formats match, and the temporary mount is gone afterwards.
    #[test]
    fn this_kernels_tracepoints_are_readable() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let ids = read_events().unwrap();
        assert_eq!(ids.len(), tracepoint::ALL.len());
        assert!(ids.iter().all(|&id| id > 0));
        let prefix = format!("xwan-tracefs-{}-", std::process::id());
        let leftover = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        assert!(leftover.is_none(), "{leftover:?} left behind");
    }
}
