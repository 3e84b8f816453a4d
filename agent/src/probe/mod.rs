//! Gateway probing: the probes themselves (real I/O) and the schedule that drives them.
//!
//! * [`Prober`]: "send one probe to `target`, answer its RTT or why it failed". Implemented by
//!   [`IcmpProber`] (ICMP echo / ICMPv6 echo, `icmp.rs`), [`TcpProber`] (TCP connect,
//!   `tcp.rs`), [`Monitor`] (either, chosen by configuration) and by test fakes.
//! * [`run_gateway`] (`schedule.rs`): the per-gateway task that sends probe rounds on the
//!   `frequency` / `wait` / `tries` schedule of DESIGN.md §2, feeds the results and the link
//!   events into [`crate::health::GatewayHealth`] and reports [`GatewayEvent`]s.
//! * [`Fleet`] (`fleet.rs`): the daemon's probe tasks, one per configured gateway, each with
//!   the method and binding its configuration gives ([`Monitor::new`], [`LinkBinding::of`]),
//!   and the latest verdict of each ([`GatewayView`]).
//!
//! Every probe leaves through its link: sockets are bound to the link's interface
//! (`SO_BINDTODEVICE`) and, when given, its source address and firewall mark
//! ([`LinkBinding`]). With the device bound the kernel routes the probe out of that interface
//! even when the main table would pick another one; a check target that is not on the link
//! itself (a host beyond the gateway) needs a route through the gateway: its probes carry the
//! gateway's policy-routing mark ([`LinkBinding::mark`], [`crate::planner::probe_mark`]), and
//! the planner's policy has a rule and table for it.
//!
//! # What a reader may change
//!
//! Probers are interchangeable behind [`Prober`]; new methods (HTTP, DNS) go in new files and
//! in [`Monitor`] (and [`Monitor::new`], which maps the configuration to it). The error → [`FailureCause`] mapping decides the reason users see. The
//! schedule's timing is the product contract: see `schedule.rs` before touching it.

mod fleet;
mod icmp;
mod schedule;
mod tcp;

use std::{
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

pub use fleet::{Fleet, GatewayView, Recorded, Tag};
pub use icmp::IcmpProber;
pub use schedule::{GatewayEvent, LinkState, ProbeReport, run_gateway, run_tagged};
pub use tcp::TcpProber;

use crate::{config, health::FailureCause};

/// Why one probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the wait.
    #[error("timeout")]
    Timeout,
    /// TCP: connection refused (the host is up, the service is not).
    #[error("connection refused")]
    Refused,
    /// The kernel says the target cannot be reached (no route, no neighbour, link down).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A local error: socket, bind, send.
    #[error("{0}")]
    Io(String),
}

impl ProbeError {
    /// What health records as the reason.
    pub fn cause(&self) -> FailureCause {
        match self {
            ProbeError::Timeout => FailureCause::Timeout,
            ProbeError::Refused => FailureCause::Refused,
            ProbeError::Unreachable(_) => FailureCause::Unreachable,
            ProbeError::Io(_) => FailureCause::Error,
        }
    }

    /// Maps an I/O error of a probe socket, `what` saying which operation failed.
    pub fn from_io(what: &str, e: &io::Error) -> ProbeError {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ProbeError::Refused,
            Some(
                libc::ENETUNREACH
                | libc::EHOSTUNREACH
                | libc::ENETDOWN
                | libc::EHOSTDOWN
                | libc::ENONET,
            ) => ProbeError::Unreachable(format!("{what}: {e}")),
            Some(libc::ETIMEDOUT) => ProbeError::Timeout,
            _ => ProbeError::Io(format!("{what}: {e}")),
        }
    }
}

/// Sends one probe and measures it.
///
/// `timeout` is the schedule's `wait`; an implementation should give up after it (the
/// schedule also cancels the future at that point, so implementations must be
/// cancellation-safe: dropping the future releases whatever it reserved).
pub trait Prober: Send + Sync {
    fn probe(
        &self,
        target: IpAddr,
        timeout: Duration,
    ) -> impl Future<Output = Result<Duration, ProbeError>> + Send;
}

impl<P: Prober> Prober for Arc<P> {
    fn probe(
        &self,
        target: IpAddr,
        timeout: Duration,
    ) -> impl Future<Output = Result<Duration, ProbeError>> + Send {
        (**self).probe(target, timeout)
    }
}

/// Where probes of one link leave from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LinkBinding {
    /// Interface name (`SO_BINDTODEVICE`); `None` lets the routing table decide.
    pub device: Option<String>,
    /// Source address of IPv4 probes (the link's address).
    pub source_v4: Option<Ipv4Addr>,
    /// Source address of IPv6 probes.
    pub source_v6: Option<Ipv6Addr>,
    /// Firewall mark (`SO_MARK`) for policy routing of probes to remote check targets.
    pub mark: Option<u32>,
}

impl LinkBinding {
    /// Bound to `device` only.
    pub fn device(name: &str) -> LinkBinding {
        LinkBinding {
            device: Some(name.to_string()),
            ..LinkBinding::default()
        }
    }

    /// Bound to `link`'s interface, and to its address as the source of probes of that family.
    pub fn of(link: &config::Link) -> LinkBinding {
        let mut b = LinkBinding::device(&link.interface);
        match link.address.map(|a| a.addr) {
            Some(IpAddr::V4(a)) => b.source_v4 = Some(a),
            Some(IpAddr::V6(a)) => b.source_v6 = Some(a),
            None => {}
        }
        b
    }

    /// Interface index of the bound device (for IPv6 link-local scope ids), 0 if none.
    pub(crate) fn ifindex(&self) -> u32 {
        let Some(dev) = &self.device else { return 0 };
        let Ok(c) = std::ffi::CString::new(dev.as_str()) else {
            return 0;
        };
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    }
}

/// The monitor method of a gateway, as configured: ICMP echo (default) or TCP connect.
#[derive(Clone, Debug)]
pub enum Monitor {
    Icmp(IcmpProber),
    Tcp(TcpProber),
}

impl Monitor {
    /// The configured `method`, its probes leaving through `binding`.
    pub fn new(method: config::Monitor, binding: LinkBinding) -> Monitor {
        match method {
            config::Monitor::Icmp => Monitor::Icmp(IcmpProber::new(binding)),
            config::Monitor::Tcp(port) => Monitor::Tcp(TcpProber::new(binding, port.get())),
        }
    }
}

impl Prober for Monitor {
    async fn probe(&self, target: IpAddr, timeout: Duration) -> Result<Duration, ProbeError> {
        match self {
            Monitor::Icmp(p) => p.probe(target, timeout).await,
            Monitor::Tcp(p) => p.probe(target, timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_causes() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(ProbeError::from_io("connect", &e), ProbeError::Refused);
        let e = io::Error::from_raw_os_error(libc::ENETUNREACH);
        let p = ProbeError::from_io("send", &e);
        assert_eq!(p.cause(), FailureCause::Unreachable);
        assert!(p.to_string().starts_with("unreachable: send: "), "{p}");
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(
            ProbeError::from_io("socket", &e).cause(),
            FailureCause::Error
        );
        assert_eq!(ProbeError::Timeout.cause(), FailureCause::Timeout);
    }

    #[test]
    fn binding_without_device_has_no_ifindex() {
        assert_eq!(LinkBinding::default().ifindex(), 0);
        assert_eq!(LinkBinding::device("xwan-no-such-if0").ifindex(), 0);
    }
}
