//! IPsec SAs and policies over XFRM netlink, per tunnel link (`kind = "vti"` / `"xfrm"`).
//!
//! * [`client`]: requests (add/delete/dump) and the event stream;
//! * [`sa`]: the SA/policy model, message building, which SA belongs to which link;
//! * [`keys`] and [`secret`]: manual keys from root-only files, never printed;
//! * [`stats`]: the kernel's XFRM error counters;
//! * [`supervisor`]: the daemon's IPsec links over time (tunnel interfaces and manual SAs set
//!   up, SAs watched, stale ones removed, status rows);
//! * here: a link's SA pair ([`LinkSas`]) and installing / removing manual SAs.
//!
//! A tunnel link is usable only with an SA in each direction (a "usable SA pair"); when an
//! event shows the pair broken, the daemon marks the link's gateways Unavailable (reason
//! `no SA`) at once, as it does on carrier loss. Who creates the SAs: the agent for
//! `manual_sa` links ([`install_manual`], removed by [`remove_manual`] on `xwan stop`), an
//! IKE daemon (strongSwan) otherwise, and then the agent only reads them.
//!
//! # What a reader may change
//!
//! Anything but the rule "key material only in [`secret::Secret`]": no error, log line,
//! status field or metric may be built from it.

pub mod client;
pub mod keys;
pub mod sa;
pub mod secret;
pub mod stats;
pub mod supervisor;

use std::net::IpAddr;

use tracing::{info, warn};

pub use client::{XfrmError, XfrmEvent, XfrmSocket, subscribe};
pub use sa::{Direction, PolicySpec, SaInfo, SaSpec};
pub use supervisor::Supervisor;

use crate::config::{IpsecTunnel, ManualSa};
use keys::LinkKeys;

/// The SAs of one tunnel link, newest first in each direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkSas {
    pub inbound: Vec<SaInfo>,
    pub outbound: Vec<SaInfo>,
}

impl LinkSas {
    /// The SAs among `all` that belong to `link`.
    pub fn of(link: &IpsecTunnel, all: &[SaInfo]) -> LinkSas {
        let mut s = LinkSas::default();
        for sa in all {
            match Direction::of(sa, link) {
                Some(Direction::In) => s.inbound.push(sa.clone()),
                Some(Direction::Out) => s.outbound.push(sa.clone()),
                None => {}
            }
        }
        for v in [&mut s.inbound, &mut s.outbound] {
            v.sort_by(|a, b| b.add_time.cmp(&a.add_time).then(a.spi.cmp(&b.spi)));
        }
        s
    }

    /// An SA in each direction.
    pub fn usable(&self) -> bool {
        !self.inbound.is_empty() && !self.outbound.is_empty()
    }

    /// What is missing, for the `no SA` reason's detail: "inbound", "outbound" or "both".
    pub fn missing(&self) -> Option<&'static str> {
        match (self.inbound.is_empty(), self.outbound.is_empty()) {
            (false, false) => None,
            (true, false) => Some("inbound"),
            (false, true) => Some("outbound"),
            (true, true) => Some("both"),
        }
    }
}

/// Why installing manual SAs failed (never contains key material).
#[derive(Debug, thiserror::Error)]
#[error("link '{link}': installing {what} failed: {error}{hint}")]
pub struct InstallError {
    pub link: String,
    pub what: String,
    pub hint: &'static str,
    /// Shown in the message (not as a separate cause, so it is printed once).
    pub error: XfrmError,
}

fn hint(e: &XfrmError) -> &'static str {
    match e.errno() {
        // ENOSYS: no ESP type registered (xfrm_user's "Requested type not found").
        Some(libc::ENOSYS | libc::EPROTONOSUPPORT | libc::ENOPROTOOPT | libc::ENOENT) => {
            "; the kernel lacks ESP or the algorithm (modprobe esp4 / esp6 and the crypto \
             modules, e.g. aes, gcm)"
        }
        Some(libc::EPERM) => "; xwan needs CAP_NET_ADMIN",
        _ => "",
    }
}

fn describe_sa(dir: Direction, spec: &SaSpec) -> String {
    let d = match dir {
        Direction::In => "inbound",
        Direction::Out => "outbound",
    };
    format!(
        "its {d} SA (spi {:#010x}, {} -> {})",
        spec.spi, spec.src, spec.dst
    )
}

/// The link's two manual SAs.
pub fn manual_sas(link: &IpsecTunnel, m: &ManualSa, keys: LinkKeys) -> [(Direction, SaSpec); 2] {
    [
        (
            Direction::Out,
            SaSpec::new(link, Direction::Out, m.spi_out, m.algorithms, keys.outbound),
        ),
        (
            Direction::In,
            SaSpec::new(link, Direction::In, m.spi_in, m.algorithms, keys.inbound),
        ),
    ]
}

/// Installs the link's manual SAs and its policies. An SA that exists already (an earlier
/// run, a reload) is kept when it is identical, keys included, so traffic does not stop, and
/// replaced otherwise; an existing policy is updated.
pub fn install_manual(
    sock: &mut XfrmSocket,
    name: &str,
    link: &IpsecTunnel,
    m: &ManualSa,
    keys: LinkKeys,
) -> Result<(), InstallError> {
    let err = |what: String, error: XfrmError| InstallError {
        link: name.to_owned(),
        what,
        hint: hint(&error),
        error,
    };
    for (dir, spec) in manual_sas(link, m, keys) {
        let add = || spec.add_message();
        match sock.execute(add()) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {
                let existing = sock
                    .get_sa(spec.del_message())
                    .map_err(|e| err(describe_sa(dir, &spec), e))?;
                if existing.is_some_and(|(info, nlas)| spec.same_as(&info, nlas)) {
                    info!(
                        link = name,
                        spi = format_args!("{:#010x}", spec.spi),
                        dir = dir.as_str(),
                        "manual SA already installed"
                    );
                    continue;
                }
                sock.execute(spec.del_message())
                    .and_then(|()| sock.execute(add()))
                    .map_err(|e| err(describe_sa(dir, &spec), e))?;
            }
            Err(e) => return Err(err(describe_sa(dir, &spec), e)),
        }
        info!(
            link = name,
            spi = format_args!("{:#010x}", spec.spi),
            dir = dir.as_str(),
            "manual SA installed"
        );
    }
    for p in PolicySpec::for_link(link) {
        match sock.execute(p.add_message(false)) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => sock
                .execute(p.add_message(true))
                .map_err(|e| err(format!("its policy (dir {})", p.dir), e))?,
            Err(e) => return Err(err(format!("its policy (dir {})", p.dir), e)),
        }
    }
    Ok(())
}

/// One kernel object xwan installs for a manual link, identified as the kernel does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    Sa {
        src: IpAddr,
        dst: IpAddr,
        spi: u32,
        device: crate::config::TunnelDevice,
    },
    Policy(PolicySpec),
}

impl Installed {
    fn del_message(&self) -> netlink_packet_xfrm::XfrmMessage {
        match self {
            Installed::Sa {
                src,
                dst,
                spi,
                device,
            } => sa::del_sa_message(*src, *dst, *spi, device),
            Installed::Policy(p) => p.del_message(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Installed::Sa { spi, .. } => format!("SA {spi:#010x}"),
            Installed::Policy(p) => format!("policy (dir {})", p.dir),
        }
    }
}

/// What xwan installs for a manual link: its two SAs and three policies.
pub fn installed(link: &IpsecTunnel, m: &ManualSa) -> Vec<Installed> {
    let mut v: Vec<Installed> = [(Direction::Out, m.spi_out), (Direction::In, m.spi_in)]
        .into_iter()
        .map(|(dir, spi)| {
            let (src, dst): (IpAddr, IpAddr) = match dir {
                Direction::Out => (link.local, link.remote),
                Direction::In => (link.remote, link.local),
            };
            Installed::Sa {
                src,
                dst,
                spi,
                device: link.device,
            }
        })
        .collect();
    v.extend(
        PolicySpec::for_link(link)
            .into_iter()
            .map(Installed::Policy),
    );
    v
}

/// Deletes `objects`; what is already gone is skipped. Returns how many it deleted.
pub fn remove(sock: &mut XfrmSocket, name: &str, objects: &[Installed]) -> usize {
    let mut removed = 0;
    for o in objects {
        match sock.execute(o.del_message()) {
            Ok(()) => removed += 1,
            Err(e) if e.errno() == Some(libc::ENOENT) || e.errno() == Some(libc::ESRCH) => {}
            Err(e) => warn!(link = name, "removing {} failed: {e}", o.describe()),
        }
    }
    removed
}

/// Removes the link's manual SAs and policies; what is already gone is skipped. Returns how
/// many objects it deleted.
pub fn remove_manual(sock: &mut XfrmSocket, name: &str, link: &IpsecTunnel, m: &ManualSa) -> usize {
    let removed = remove(sock, name, &installed(link, m));
    info!(link = name, removed, "manual SAs and policies removed");
    removed
}
