//! rtnetlink: what the agent reads from the kernel — interfaces (index, MAC, MTU, L2 or L3,
//! admin and carrier state), local addresses, neighbours (next-hop MACs) — and the events
//! it reacts to (link up/down, neighbour changes, addresses). Everything here works in the
//! calling thread's network namespace.
//!
//! Read-only, except [`tunnel`]: the tunnel interfaces xwan owns (VTI / xfrm), which it
//! creates, adopts and removes, [`policy`]: the per-gateway routing tables and `fwmark`
//! rules of the `netfilter` forwarding mode and of remote probes, and [`neighbours`]: the
//! next hops the kernel keeps resolved for the data plane. [`conntrack`] (ctnetlink) resets
//! the conntrack entries of the flows that changed gateway in the `netfilter` mode.

pub mod conntrack;
pub mod neighbours;
pub mod netdev;
pub mod policy;
pub mod tunnel;

use std::{
    fmt, io,
    net::IpAddr,
    os::fd::{AsRawFd, RawFd},
};

use futures::{StreamExt, TryStreamExt, channel::mpsc::UnboundedReceiver};
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::AddressAttribute,
    link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
};
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK, RTMGRP_NEIGH};

/// An interface as the agent needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
    /// `None` for L3 devices (VTI, xfrm, TUN, WireGuard...).
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Frames carry an Ethernet header.
    pub l2: bool,
    /// `ip link set up`.
    pub admin_up: bool,
    /// Lower layer up (carrier).
    pub carrier: bool,
}

impl Interface {
    /// Able to carry traffic: administratively up and with carrier.
    pub fn is_up(&self) -> bool {
        self.admin_up && self.carrier
    }
}

/// Something changed in the kernel's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An interface appeared or changed (state, MAC, MTU...).
    Link(Interface),
    /// An interface disappeared.
    LinkRemoved { ifindex: u32, name: String },
    /// A neighbour entry changed; `mac` is `None` when it is gone or unresolved.
    Neighbour {
        ifindex: u32,
        ip: IpAddr,
        mac: Option<[u8; 6]>,
    },
    /// An address was added or removed somewhere.
    Addresses,
    /// Notifications were lost (the socket's buffer overflowed): what was learnt from them
    /// must be read again from the kernel.
    Resync,
}

/// The receive buffer of a subscription's socket (rtnetlink's and ctnetlink's): a burst of
/// neighbour changes (hundreds of LAN clients, a hub's gateways) or of new connections must
/// not overflow it.
pub const EVENTS_BUFFER: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket failed: {0}")]
    Socket(#[from] io::Error),
    #[error("netlink request {what} failed: {source}")]
    Request {
        what: &'static str,
        source: rtnetlink::Error,
    },
}

/// A request handle (cheap to clone). Needs a tokio runtime: the connection runs as a task.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    pub fn new() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The interface called `name`, if any.
    pub async fn interface(&self, name: &str) -> Result<Option<Interface>, NetlinkError> {
        let msg = self
            .link_message(name)
            .await
            .map_err(|source| NetlinkError::Request {
                what: "get link",
                source,
            })?;
        Ok(msg.as_ref().map(interface))
    }

    pub async fn interfaces(&self) -> Result<Vec<Interface>, NetlinkError> {
        let links = self.handle.link().get().execute();
        let msgs: Vec<LinkMessage> =
            links
                .try_collect()
                .await
                .map_err(|e| NetlinkError::Request {
                    what: "dump links",
                    source: e,
                })?;
        Ok(msgs.iter().map(interface).collect())
    }

    /// Every address on every interface: (ifindex, address, prefix length).
    pub async fn addresses(&self) -> Result<Vec<(u32, IpAddr, u8)>, NetlinkError> {
        let mut out = Vec::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(|e| NetlinkError::Request {
            what: "dump addresses",
            source: e,
        })? {
            // IFA_LOCAL is the interface's own address on point-to-point links (IFA_ADDRESS
            // is then the peer); elsewhere the two are equal.
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                out.push((msg.header.index, ip, msg.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// The MAC of neighbour `ip` on `ifindex`, if the kernel has resolved it.
    pub async fn neighbour(
        &self,
        ifindex: u32,
        ip: IpAddr,
    ) -> Result<Option<[u8; 6]>, NetlinkError> {
        let family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let mut neigh = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(msg) = neigh.try_next().await.map_err(|e| NetlinkError::Request {
            what: "dump neighbours",
            source: e,
        })? {
            if let Some((i, addr, mac)) = neighbour(&msg)
                && i == ifindex
                && addr == ip
            {
                return Ok(mac);
            }
        }
        Ok(None)
    }
}

/// Subscribes to link, neighbour and address changes (in the calling thread's namespace),
/// with a receive buffer of [`EVENTS_BUFFER`] bytes; lost notifications come as
/// [`Event::Resync`]. Needs a tokio runtime.
pub fn subscribe() -> Result<UnboundedReceiver<Event>, NetlinkError> {
    subscribe_buffered(EVENTS_BUFFER)
}

/// [`subscribe`] with a receive buffer of `bytes` (the kernel doubles it, and has a floor).
pub fn subscribe_buffered(bytes: usize) -> Result<UnboundedReceiver<Event>, NetlinkError> {
    let (conn, _handle, messages) = rtnetlink::new_connection()?;
    let groups = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    Ok(notifications(
        conn,
        messages,
        groups,
        event,
        Some((bytes, Event::Resync)),
    )?)
}

/// The event a kernel notification means, if any.
fn event(m: RouteNetlinkMessage) -> Option<Event> {
    Some(match m {
        RouteNetlinkMessage::NewLink(l) => Event::Link(interface(&l)),
        RouteNetlinkMessage::DelLink(l) => {
            let i = interface(&l);
            Event::LinkRemoved {
                ifindex: i.ifindex,
                name: i.name,
            }
        }
        RouteNetlinkMessage::NewNeighbour(n) => {
            let (ifindex, ip, mac) = neighbour(&n)?;
            Event::Neighbour { ifindex, ip, mac }
        }
        RouteNetlinkMessage::DelNeighbour(n) => {
            let (ifindex, ip, _) = neighbour(&n)?;
            Event::Neighbour {
                ifindex,
                ip,
                mac: None,
            }
        }
        RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => Event::Addresses,
        _ => return None,
    })
}

/// Binds a netlink connection to the multicast `groups`, runs it, and forwards every
/// notification that `event` gives a meaning to, until the receiver is dropped. With
/// `overrun`, the socket's receive buffer is set to its size and a lost notification (ENOBUFS)
/// is forwarded as its event. Shared by the rtnetlink and XFRM subscriptions. Needs a tokio
/// runtime.
pub(crate) fn notifications<M, E>(
    mut conn: netlink_proto::Connection<M>,
    mut messages: UnboundedReceiver<(NetlinkMessage<M>, SocketAddr)>,
    groups: u32,
    event: fn(M) -> Option<E>,
    overrun: Option<(usize, E)>,
) -> io::Result<UnboundedReceiver<E>>
where
    M: NetlinkSerializable + NetlinkDeserializable + fmt::Debug + Unpin + Send + 'static,
    E: Clone + Send + 'static,
{
    let socket = conn.socket_mut().socket_mut();
    socket.bind(&SocketAddr::new(0, groups))?;
    if let Some((bytes, _)) = &overrun {
        set_rcvbuf(socket.as_raw_fd(), *bytes)?;
    }
    tokio::spawn(conn);
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let m = match msg.payload {
                NetlinkPayload::InnerMessage(m) => m,
                NetlinkPayload::Overrun(_) => match &overrun {
                    Some((_, lost)) => {
                        if tx.unbounded_send(lost.clone()).is_err() {
                            break;
                        }
                        continue;
                    }
                    None => continue,
                },
                _ => continue,
            };
            let Some(event) = event(m) else { continue };
            if tx.unbounded_send(event).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Sets a socket's receive buffer: beyond `net.core.rmem_max` where allowed (root), else up
/// to it.
pub(crate) fn set_rcvbuf(fd: RawFd, bytes: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt(fd, libc::SO_RCVBUFFORCE, &size).or_else(|_| setsockopt(fd, libc::SO_RCVBUF, &size))
}

/// `setsockopt(fd, SOL_SOCKET, option, value)`.
pub(crate) fn setsockopt<T>(fd: RawFd, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of the size given, as `option` expects.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn interface(msg: &LinkMessage) -> Interface {
    let mut i = Interface {
        ifindex: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        l2: msg.header.link_layer_type == LinkLayerType::Ether,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => i.name = n.clone(),
            LinkAttribute::Mtu(m) => i.mtu = *m,
            LinkAttribute::Address(a) if i.l2 && a.len() == 6 => {
                i.mac = Some(a.as_slice().try_into().expect("6 bytes"))
            }
            _ => {}
        }
    }
    i
}

/// (ifindex, address, MAC if usable) of a neighbour message.
fn neighbour(msg: &NeighbourMessage) -> Option<(u32, IpAddr, Option<[u8; 6]>)> {
    let ip = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let usable = !matches!(
        msg.header.state,
        NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
    );
    let mac = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) if usable && m.len() == 6 => {
            Some(<[u8; 6]>::try_from(m.as_slice()).expect("6 bytes"))
        }
        _ => None,
    });
    Some((msg.header.ifindex, ip, mac))
}
