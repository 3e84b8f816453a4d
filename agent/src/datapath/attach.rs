//! Attaching the programs to interfaces, with fallbacks: native XDP → generic XDP, tcx →
//! clsact (netlink). Every fallback is logged and reported, so status can show it.

use std::ffi::CString;
use std::fmt;

use aya::programs::links::Link as _;
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::xdp::XdpLink;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, TcError, Xdp, XdpMode};
use xwan_common::{PROG_TC_RETURN, PROG_TC_STEER, PROG_XDP_LAN, PROG_XDP_PASS};

use super::{Datapath, DatapathError, chain, sys};

/// How an XDP program ended up attached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum XdpAttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// In the kernel's generic path (`XDP_FLAGS_SKB_MODE`): works everywhere, slower.
    Generic,
}

/// How a TC program ended up attached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TcAttachMode {
    /// A tcx link (kernel ≥ 6.6).
    Tcx,
    /// A direct-action filter on the clsact qdisc, via netlink.
    Clsact,
}

/// Which XDP mode to use.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum XdpPolicy {
    /// Native, falling back to generic.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Which TC attachment to use.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum TcPolicy {
    /// tcx, falling back to clsact.
    #[default]
    Auto,
    Tcx,
    Clsact,
}

/// Attachment modes to try (default: best available, with fallbacks).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AttachPolicy {
    pub xdp: XdpPolicy,
    pub tc: TcPolicy,
}

impl fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
        })
    }
}

impl fmt::Display for TcAttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcAttachMode::Tcx => "tcx",
            TcAttachMode::Clsact => "clsact",
        })
    }
}

/// What is attached to one interface, and how.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AttachReport {
    pub ifname: String,
    pub ifindex: u32,
    /// The XDP program attached (if any) and its mode.
    pub xdp: Option<(&'static str, XdpAttachMode)>,
    /// The TC ingress program attached (if any) and its mode.
    pub tc: Option<(&'static str, TcAttachMode)>,
    /// Why a preferred mode was not used (empty when none was needed).
    pub fallbacks: Vec<String>,
}

impl fmt::Display for AttachReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (ifindex {}):", self.ifname, self.ifindex)?;
        if let Some((p, m)) = self.xdp {
            write!(f, " XDP {p} {m}")?;
        }
        if let Some((p, m)) = self.tc {
            write!(
                f,
                "{} TC ingress {p} {m}",
                if self.xdp.is_some() { "," } else { "" }
            )?;
        }
        if self.xdp.is_none() && self.tc.is_none() {
            f.write_str(" nothing attached")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
enum AttachedLink {
    Xdp(XdpLink, XdpAttachMode),
    Tc(SchedClassifierLink, TcAttachMode),
}

/// One program attached to one interface; detached when dropped.
#[derive(Debug)]
pub(super) struct Attachment {
    ifindex: u32,
    ifname: String,
    program: &'static str,
    link: AttachedLink,
}

impl Attachment {
    fn detach(self) -> Result<(), DatapathError> {
        let r = match self.link {
            AttachedLink::Xdp(l, _) => l.detach(),
            AttachedLink::Tc(l, _) => l.detach(),
        };
        r.map_err(|e| DatapathError::Detach {
            ifname: self.ifname.clone(),
            detail: format!("{}: {}", self.program, chain(&e)),
        })
    }
}

/// The index of interface `ifname`.
pub(super) fn ifindex(ifname: &str) -> Result<u32, DatapathError> {
    let not_found = || DatapathError::InterfaceNotFound {
        ifname: ifname.into(),
    };
    let c = CString::new(ifname).map_err(|_| not_found())?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(not_found()),
        i => Ok(i),
    }
}

/// A hint for common attach errors.
fn hint(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) => {
                    return " (another program is already attached there: remove it, e.g. `ip link set dev IF xdp off`, or stop the other xwan)";
                }
                Some(libc::EOPNOTSUPP) => return " (the driver does not support this mode)",
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    return " (xwan needs root / CAP_NET_ADMIN + CAP_BPF)";
                }
                _ => {}
            }
        }
        cur = err.source();
    }
    ""
}

impl Datapath {
    /// Chooses the attachment modes used by later attach calls.
    pub fn set_attach_policy(&mut self, policy: AttachPolicy) {
        self.policy = policy;
    }

    /// Attaches a LAN interface: TC ingress `xwan_tc_steer` (tcx, else clsact) then XDP
    /// `xwan_xdp_lan` (native, else generic). If XDP cannot be attached the TC program is
    /// removed again (a LAN interface is all or nothing). Attaching an interface twice is a
    /// no-op that reports the existing attachment.
    pub fn attach_lan(&mut self, ifname: &str) -> Result<AttachReport, DatapathError> {
        let ifindex = ifindex(ifname)?;
        let mut report = self.report(ifname, ifindex);
        let tc_was_attached = self.find(ifindex, PROG_TC_STEER).is_some();
        let tc = self.attach_tc(PROG_TC_STEER, ifname, ifindex, &mut report.fallbacks)?;
        report.tc = Some((PROG_TC_STEER, tc));
        match self.attach_xdp(PROG_XDP_LAN, ifname, ifindex, &mut report.fallbacks) {
            Ok(m) => report.xdp = Some((PROG_XDP_LAN, m)),
            Err(e) => {
                if !tc_was_attached {
                    let _ = self.detach_program(ifindex, PROG_TC_STEER);
                }
                return Err(e);
            }
        }
        log::info!("attached {report}");
        Ok(report)
    }

    /// Attaches a link interface: TC ingress `xwan_tc_return` (learns return routes).
    pub fn attach_link(&mut self, ifname: &str) -> Result<AttachReport, DatapathError> {
        let ifindex = ifindex(ifname)?;
        let mut report = self.report(ifname, ifindex);
        let tc = self.attach_tc(PROG_TC_RETURN, ifname, ifindex, &mut report.fallbacks)?;
        report.tc = Some((PROG_TC_RETURN, tc));
        log::info!("attached {report}");
        Ok(report)
    }

    /// Attaches `xwan_xdp_pass` (a veth peer needs an XDP program to accept XDP_REDIRECTed
    /// frames natively). Follows the XDP policy (native first by default).
    pub fn attach_pass(&mut self, ifname: &str) -> Result<AttachReport, DatapathError> {
        let ifindex = ifindex(ifname)?;
        let mut report = self.report(ifname, ifindex);
        let m = self.attach_xdp(PROG_XDP_PASS, ifname, ifindex, &mut report.fallbacks)?;
        report.xdp = Some((PROG_XDP_PASS, m));
        log::info!("attached {report}");
        Ok(report)
    }

    /// What is attached, per interface.
    pub fn attachments(&self) -> Vec<AttachReport> {
        let mut out: Vec<AttachReport> = Vec::new();
        for a in &self.attachments {
            if !out.iter().any(|r| r.ifindex == a.ifindex) {
                out.push(self.report(&a.ifname, a.ifindex));
            }
        }
        out
    }

    /// Detaches everything attached to interface `ifname` (and removes a clsact qdisc this
    /// datapath added there).
    pub fn detach_interface(&mut self, ifname: &str) -> Result<(), DatapathError> {
        let index = match ifindex(ifname) {
            Ok(i) => Some(i),
            Err(_) => self
                .attachments
                .iter()
                .find(|a| a.ifname == ifname)
                .map(|a| a.ifindex),
        };
        let Some(index) = index else { return Ok(()) };
        let mut result = Ok(());
        while let Some(pos) = self.attachments.iter().rposition(|a| a.ifindex == index) {
            let a = self.attachments.remove(pos);
            if let Err(e) = a.detach() {
                log::warn!("{e}");
                result = result.and(Err(e));
            }
        }
        if let Some(pos) = self.clsact.iter().position(|(i, _)| *i == index) {
            let (i, name) = self.clsact.remove(pos);
            result = result.and(remove_clsact(i, &name));
        }
        result
    }

    /// Detaches every program this datapath attached, and removes the clsact qdiscs it added.
    /// Continues after an error; returns the first one.
    pub fn detach_all(&mut self) -> Result<(), DatapathError> {
        let mut result = Ok(());
        while let Some(a) = self.attachments.pop() {
            if let Err(e) = a.detach() {
                log::warn!("{e}");
                result = result.and(Err(e));
            }
        }
        for (i, name) in std::mem::take(&mut self.clsact) {
            result = result.and(remove_clsact(i, &name));
        }
        result
    }

    fn report(&self, ifname: &str, ifindex: u32) -> AttachReport {
        let mut r = AttachReport {
            ifname: ifname.into(),
            ifindex,
            xdp: None,
            tc: None,
            fallbacks: vec![],
        };
        for a in self.attachments.iter().filter(|a| a.ifindex == ifindex) {
            match a.link {
                AttachedLink::Xdp(_, m) => r.xdp = Some((a.program, m)),
                AttachedLink::Tc(_, m) => r.tc = Some((a.program, m)),
            }
        }
        r
    }

    fn find(&self, ifindex: u32, program: &str) -> Option<&Attachment> {
        self.attachments
            .iter()
            .find(|a| a.ifindex == ifindex && a.program == program)
    }

    fn detach_program(&mut self, ifindex: u32, program: &str) -> Result<(), DatapathError> {
        match self
            .attachments
            .iter()
            .position(|a| a.ifindex == ifindex && a.program == program)
        {
            Some(pos) => self.attachments.remove(pos).detach(),
            None => Ok(()),
        }
    }

    fn xdp_program(&mut self, program: &'static str) -> Result<&mut Xdp, DatapathError> {
        let p = self
            .ebpf
            .program_mut(program)
            .ok_or(DatapathError::Missing {
                what: "program",
                name: program.into(),
            })?;
        p.try_into().map_err(|_| DatapathError::Missing {
            what: "XDP program",
            name: program.into(),
        })
    }

    fn tc_program(&mut self, program: &'static str) -> Result<&mut SchedClassifier, DatapathError> {
        let p = self
            .ebpf
            .program_mut(program)
            .ok_or(DatapathError::Missing {
                what: "program",
                name: program.into(),
            })?;
        p.try_into().map_err(|_| DatapathError::Missing {
            what: "TC program",
            name: program.into(),
        })
    }

    fn attach_xdp(
        &mut self,
        program: &'static str,
        ifname: &str,
        ifindex: u32,
        fallbacks: &mut Vec<String>,
    ) -> Result<XdpAttachMode, DatapathError> {
        if let Some(a) = self.find(ifindex, program)
            && let AttachedLink::Xdp(_, m) = a.link
        {
            return Ok(m);
        }
        let modes: &[XdpAttachMode] = match self.policy.xdp {
            XdpPolicy::Auto => &[XdpAttachMode::Native, XdpAttachMode::Generic],
            XdpPolicy::Native => &[XdpAttachMode::Native],
            XdpPolicy::Generic => &[XdpAttachMode::Generic],
        };
        let mut errors = Vec::new();
        for &mode in modes {
            let flags = match mode {
                XdpAttachMode::Native => XdpMode::Driver,
                XdpAttachMode::Generic => XdpMode::Skb,
            };
            let p = self.xdp_program(program)?;
            let attached = p
                .attach_to_if_index(ifindex, flags)
                .and_then(|id| p.take_link(id));
            match attached {
                Ok(link) => {
                    self.attachments.push(Attachment {
                        ifindex,
                        ifname: ifname.into(),
                        program,
                        link: AttachedLink::Xdp(link, mode),
                    });
                    return Ok(mode);
                }
                Err(e) => {
                    let msg = format!("{mode} XDP: {}{}", chain(&e), hint(&e));
                    if mode == XdpAttachMode::Native && modes.len() > 1 {
                        log::warn!(
                            "native XDP for {program} on '{ifname}' failed ({msg}); falling back to generic XDP (slower)"
                        );
                        fallbacks.push(format!("XDP native unavailable on '{ifname}': {msg}"));
                    }
                    errors.push(msg);
                }
            }
        }
        Err(DatapathError::Attach {
            program,
            ifname: ifname.into(),
            detail: errors.join("; "),
        })
    }

    fn attach_tc(
        &mut self,
        program: &'static str,
        ifname: &str,
        ifindex: u32,
        fallbacks: &mut Vec<String>,
    ) -> Result<TcAttachMode, DatapathError> {
        if let Some(a) = self.find(ifindex, program)
            && let AttachedLink::Tc(_, m) = a.link
        {
            return Ok(m);
        }
        let modes: &[TcAttachMode] = match self.policy.tc {
            TcPolicy::Auto => &[TcAttachMode::Tcx, TcAttachMode::Clsact],
            TcPolicy::Tcx => &[TcAttachMode::Tcx],
            TcPolicy::Clsact => &[TcAttachMode::Clsact],
        };
        let mut errors = Vec::new();
        for &mode in modes {
            let mut added_clsact = false;
            let attached = match mode {
                TcAttachMode::Tcx => {
                    let p = self.tc_program(program)?;
                    p.attach_with_options(
                        ifname,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .and_then(|id| p.take_link(id))
                    .map_err(|e| format!("{}{}", chain(&e), hint(&e)))
                }
                TcAttachMode::Clsact => match aya::programs::tc::qdisc_add_clsact(ifname) {
                    Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                        Ok(())
                    }
                    Err(e) => Err(format!(
                        "adding the clsact qdisc: {}{}",
                        chain(&e),
                        hint(&e)
                    )),
                    Ok(()) => {
                        added_clsact = true;
                        Ok(())
                    }
                }
                .and_then(|()| {
                    let p = self.tc_program(program).map_err(|e| e.to_string())?;
                    p.attach_with_options(
                        ifname,
                        TcAttachType::Ingress,
                        TcAttachOptions::Netlink(NlOptions::default()),
                    )
                    .and_then(|id| p.take_link(id))
                    .map_err(|e| format!("{}{}", chain(&e), hint(&e)))
                }),
            };
            if added_clsact && !self.clsact.iter().any(|(i, _)| *i == ifindex) {
                self.clsact.push((ifindex, ifname.into()));
            }
            match attached {
                Ok(link) => {
                    self.attachments.push(Attachment {
                        ifindex,
                        ifname: ifname.into(),
                        program,
                        link: AttachedLink::Tc(link, mode),
                    });
                    return Ok(mode);
                }
                Err(msg) => {
                    let msg = format!("TC {mode}: {msg}");
                    if added_clsact && !self.attachments.iter().any(|a| a.ifindex == ifindex) {
                        self.clsact.retain(|(i, _)| *i != ifindex);
                        let _ = remove_clsact(ifindex, ifname);
                    }
                    if mode == TcAttachMode::Tcx && modes.len() > 1 {
                        log::warn!(
                            "tcx attachment of {program} on '{ifname}' failed ({msg}); falling back to the clsact qdisc"
                        );
                        fallbacks.push(format!("tcx unavailable on '{ifname}': {msg}"));
                    }
                    errors.push(msg);
                }
            }
        }
        Err(DatapathError::Attach {
            program,
            ifname: ifname.into(),
            detail: errors.join("; "),
        })
    }
}

/// Removes a clsact qdisc we added; a vanished interface or qdisc is not an error.
fn remove_clsact(ifindex: u32, ifname: &str) -> Result<(), DatapathError> {
    match sys::delete_clsact(ifindex) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::EINVAL)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(DatapathError::Detach {
            ifname: ifname.into(),
            detail: format!("removing the clsact qdisc: {e}"),
        }),
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Links before programs: a netlink XDP link needs its program's fd to detach.
        if let Err(e) = self.detach_all() {
            log::warn!("while dropping the datapath: {e}");
        }
    }
}
