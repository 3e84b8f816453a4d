//! Next hops the kernel keeps resolved for xwan: *managed* neighbour entries (`ip neigh …
//! managed proto 120`, Linux 5.16+), which the kernel resolves at once and re-confirms by
//! itself, with no traffic of its own to them.
//!
//! The data plane writes a next hop's MAC into the frames it forwards, so the kernel never
//! sends to that next hop: unless the probes go to it, its entry would never be resolved (an
//! Ethernet gateway checked through other targets stayed unusable), or would go stale and be
//! collected. A managed entry fixes both.
//!
//! Each entry carries [`RTPROT_XWAN`]: a later run adopts it and `xwan stop` removes it. An
//! entry of the operator's that is static (`permanent`, `noarp`) is never changed; a dynamic
//! one becomes managed, keeping its MAC (the kernel keeps the state of an entry made managed).
//!
//! [`changes`] decides (pure, table-driven tests); [`Netlink::sync_neighbours`] and
//! [`Netlink::remove_neighbours`] read the kernel's entries and apply them.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::{
    AddressFamily,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourState},
    route::RouteProtocol,
};

use super::{Netlink, NetlinkError, policy::RTPROT_XWAN};

/// A next hop: an address on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbour {
    pub ifindex: u32,
    pub address: IpAddr,
}

/// A neighbour entry as [`changes`] compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub next_hop: Neighbour,
    /// Managed and carrying [`RTPROT_XWAN`].
    pub ours: bool,
    /// `permanent` or `noarp`: the operator's, never changed.
    pub fixed: bool,
}

/// What [`changes`] asks of the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Made managed (created, or an existing dynamic entry changed in place).
    pub manage: Vec<Neighbour>,
    /// xwan's, no longer wanted.
    pub release: Vec<Neighbour>,
}

/// What to change so that the kernel's `entries` manage exactly the `wanted` next hops.
pub fn changes(wanted: &[Neighbour], entries: &[Entry]) -> Changes {
    let entry = |n: &Neighbour| entries.iter().find(|e| e.next_hop == *n);
    Changes {
        manage: (wanted.iter())
            .filter(|n| entry(n).is_none_or(|e| !e.ours && !e.fixed))
            .copied()
            .collect(),
        release: (entries.iter())
            .filter(|e| e.ours && !wanted.contains(&e.next_hop))
            .map(|e| e.next_hop)
            .collect(),
    }
}

fn request(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Request { what, source }
}

impl Netlink {
    /// Makes the kernel manage exactly the `wanted` next hops of xwan's.
    pub async fn sync_neighbours(&self, wanted: &[Neighbour]) -> Result<Changes, NetlinkError> {
        let c = changes(wanted, &self.entries().await?);
        self.apply_neighbours(&c).await?;
        Ok(c)
    }

    /// Removes every entry xwan manages (`xwan stop`).
    pub async fn remove_neighbours(&self) -> Result<Changes, NetlinkError> {
        self.sync_neighbours(&[]).await
    }

    /// Every neighbour entry of both families.
    async fn entries(&self) -> Result<Vec<Entry>, NetlinkError> {
        let mut entries = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut dump = (self.handle.neighbours().get())
                .set_address_family(family)
                .execute();
            while let Some(m) = dump.try_next().await.map_err(request("dump neighbours"))? {
                let Some(address) = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        Some(IpAddr::V6(*a))
                    }
                    _ => None,
                }) else {
                    continue;
                };
                let has = |want: &NeighbourAttribute| m.attributes.contains(want);
                let managed = (m.attributes.iter()).any(|a| {
                    matches!(a, NeighbourAttribute::ExtFlags(f) if f.contains(NeighbourExtFlags::Managed))
                });
                entries.push(Entry {
                    next_hop: Neighbour {
                        ifindex: m.header.ifindex,
                        address,
                    },
                    ours: managed
                        && has(&NeighbourAttribute::Protocol(RouteProtocol::from(
                            RTPROT_XWAN,
                        ))),
                    fixed: matches!(
                        m.header.state,
                        NeighbourState::Permanent | NeighbourState::Noarp
                    ),
                });
            }
        }
        Ok(entries)
    }

    async fn apply_neighbours(&self, c: &Changes) -> Result<(), NetlinkError> {
        for n in &c.release {
            let mut m = netlink_packet_route::neighbour::NeighbourMessage::default();
            m.header.family = family(n.address);
            m.header.ifindex = n.ifindex;
            m.attributes
                .push(NeighbourAttribute::Destination(destination(n.address)));
            match self.handle.neighbours().del(m).execute().await {
                // Gone already: the kernel flushes a link's entries when it loses carrier.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => {}
                r => r.map_err(request("delete neighbour"))?,
            }
        }
        for n in &c.manage {
            // No state (NUD_NONE): the kernel keeps a resolved entry's state and MAC, and
            // resolves a new one at once.
            let mut add = (self.handle.neighbours())
                .add(n.ifindex, n.address)
                .state(NeighbourState::None)
                .replace();
            let m = add.message_mut();
            m.attributes
                .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
            m.attributes
                .push(NeighbourAttribute::Protocol(RouteProtocol::from(
                    RTPROT_XWAN,
                )));
            add.execute()
                .await
                .map_err(request("add managed neighbour"))?;
        }
        Ok(())
    }
}

fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn destination(a: IpAddr) -> NeighbourAddress {
    match a {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(last: u8) -> Neighbour {
        Neighbour {
            ifindex: 7,
            address: IpAddr::from([192, 0, 2, last]),
        }
    }

    fn entry(last: u8, ours: bool, fixed: bool) -> Entry {
        Entry {
            next_hop: hop(last),
            ours,
            fixed,
        }
    }

    /// (wanted, kernel entries, made managed, released): next hops by last address byte.
    type Case<'a> = (&'a [u8], &'a [Entry], &'a [u8], &'a [u8]);

    #[test]
    fn the_kernel_manages_exactly_the_wanted_next_hops() {
        let cases: &[Case] = &[
            // Unknown to the kernel: created.
            (&[2], &[], &[2], &[]),
            // Already ours: nothing to do.
            (&[2], &[entry(2, true, false)], &[], &[]),
            // The kernel's dynamic entry: made managed in place.
            (&[2], &[entry(2, false, false)], &[2], &[]),
            // The operator's static entry: left alone, and never released.
            (&[2], &[entry(2, false, true)], &[], &[]),
            (&[], &[entry(2, false, true)], &[], &[]),
            // Ours, no longer wanted: released; theirs, never.
            (
                &[3],
                &[entry(2, true, false), entry(4, false, false)],
                &[3],
                &[2],
            ),
        ];
        for (wanted, entries, manage, release) in cases {
            let wanted: Vec<Neighbour> = wanted.iter().map(|&l| hop(l)).collect();
            let c = changes(&wanted, entries);
            let want = Changes {
                manage: manage.iter().map(|&l| hop(l)).collect(),
                release: release.iter().map(|&l| hop(l)).collect(),
            };
            assert_eq!(c, want, "wanted {wanted:?}, kernel {entries:?}");
        }
    }

    /// Another interface's entry for the same address is another next hop.
    #[test]
    fn a_next_hop_is_an_address_on_an_interface() {
        let other = Entry {
            next_hop: Neighbour {
                ifindex: 8,
                ..hop(2)
            },
            ours: true,
            fixed: false,
        };
        let c = changes(&[hop(2)], &[other]);
        assert_eq!(c.manage, vec![hop(2)]);
        assert_eq!(c.release, vec![other.next_hop]);
    }
}
