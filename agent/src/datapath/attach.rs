//! Attaching the programs to interfaces, with fallbacks: native XDP → generic XDP, tcx →
//! clsact (netlink). Every fallback is logged and reported, so status can show it.
//!
//! # Attachments outlive the agent
//!
//! Restarting the agent must not interrupt forwarding, so what it attaches stays attached when
//! its [`Datapath`] is dropped (the process exits); only [`Datapath::detach_interface`] and
//! [`Datapath::detach_all`] (`xwan stop`) remove it. A new agent finds it in
//! `<pin dir>/links/` and **adopts** it: the program it has just loaded (same pinned maps)
//! replaces the running one in place, with no window without a program.
//!
//! bpffs refuses names containing `.`, so entries are named `<interface>:<program>` (`:` is
//! never part of an interface name; a `.` or `%` in the interface name is written `%2E` /
//! `%25`):
//!
//! * `l0:xwan_xdp_lan`: a pinned bpf_link (XDP native or generic, or tcx). Adoption checks
//!   that the link is of the expected kind and still on this interface (the link info's
//!   ifindex: an interface deleted and recreated leaves a defunct link behind, which is
//!   removed and replaced by a fresh attachment), then `BPF_LINK_UPDATE`s it to the new
//!   program (aya's `attach_to_link`).
//! * `l0:xwan_xdp_lan:mode`: a symlink whose target is the mode (`native`, `generic`, `tcx`,
//!   `clsact`); the kernel does not say in which mode an XDP link runs.
//! * `l0:clsact`: a symlink to the ifindex on which xwan added the clsact qdisc (so the agent
//!   that stops removes it, even if an earlier one added it).
//!
//! clsact filters are not bpf_links: nothing to pin, and they stay until deleted (aya's link
//! would delete them when dropped: the datapath forgets it instead). xwan always puts its
//! filter at priority [`CLSACT_PRIORITY`], handle [`CLSACT_HANDLE`]; a new agent replaces the
//! filter there (`RTM_NEWTFILTER` without `NLM_F_CREATE`/`NLM_F_EXCL`: cls_bpf swaps the
//! program under RCU, also hitless).
//!
//! Not kept across restarts: XDP attached through netlink, which aya uses only when the kernel
//! has no XDP bpf_link (before 5.9). It is detached when the datapath is dropped, as before.
//!
//! Adoption follows the attach policy: a pinned attachment whose mode the policy no longer
//! allows is detached and replaced by a fresh one (with a short window without a program).
//! Each program is replaced on its own: on a LAN interface the new `xwan_tc_steer` runs for a
//! few milliseconds behind the old `xwan_xdp_lan`, which is fine as both share the maps and
//! the tunnel tag of one build (`xwan_common::TUNNEL_TAG_PREFIX`). [`Datapath::detach_unclaimed`] detaches what a previous
//! agent left and the new one did not attach (an interface removed from the configuration).
//!
//! # What a reader may change
//!
//! Entry names and record contents are read by the next agent, possibly of another version:
//! change them only with a fallback that still recognises the old ones (an entry it does not
//! recognise is left alone, then removed by `xwan stop`).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, Link as _, PinnedLink};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::xdp::XdpLink;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, TcError, Xdp, XdpMode};
use aya::util::KernelVersion;
use xwan_common::{PROG_TC_RETURN, PROG_TC_STEER, PROG_XDP_LAN, PROG_XDP_PASS, TUNNEL_HANDOFF};

use super::{Datapath, DatapathError, chain, sys};

/// Subdirectory of the pin directory holding the attachments (see the module doc).
pub const LINKS_DIR: &str = "links";

/// Priority of xwan's clsact filters (lower runs first).
pub const CLSACT_PRIORITY: u16 = 1;

/// Handle of xwan's clsact filters ("xw").
pub const CLSACT_HANDLE: u32 = 0x7877;

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
            write!(f, " XDP {p} {m} (tunnel hand-off {TUNNEL_HANDOFF})")?;
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
        if !self.fallbacks.is_empty() {
            write!(f, " (fallback: {})", self.fallbacks.join("; "))?;
        }
        Ok(())
    }
}

/// The mode one attachment runs in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Xdp(XdpAttachMode),
    Tc(TcAttachMode),
}

impl Mode {
    /// The mode record's text.
    fn name(self) -> &'static str {
        match self {
            Mode::Xdp(XdpAttachMode::Native) => "native",
            Mode::Xdp(XdpAttachMode::Generic) => "generic",
            Mode::Tc(TcAttachMode::Tcx) => "tcx",
            Mode::Tc(TcAttachMode::Clsact) => "clsact",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [
            Mode::Xdp(XdpAttachMode::Native),
            Mode::Xdp(XdpAttachMode::Generic),
            Mode::Tc(TcAttachMode::Tcx),
            Mode::Tc(TcAttachMode::Clsact),
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

/// What keeps one attachment in place.
#[derive(Debug)]
enum Handle {
    /// A bpf_link (XDP or tcx) pinned at this path: stays attached when the agent exits.
    Pinned(PathBuf),
    /// A clsact filter at [`CLSACT_PRIORITY`] / [`CLSACT_HANDLE`]: stays attached when the
    /// agent exits (the link is forgotten, not dropped).
    Clsact(SchedClassifierLink),
    /// XDP attached through netlink (kernel without XDP bpf_link): detached when dropped.
    XdpNetlink(XdpLink),
}

/// One program attached to one interface. [`Attachment::release`] (the agent exits) leaves it
/// attached for the next agent; [`Attachment::detach`] removes it.
#[derive(Debug)]
pub(super) struct Attachment {
    ifindex: u32,
    ifname: String,
    program: &'static str,
    mode: Mode,
    handle: Handle,
    /// Its mode record in the links directory.
    record: PathBuf,
}

impl Attachment {
    fn detach(self) -> Result<(), DatapathError> {
        let r = match self.handle {
            Handle::Pinned(path) => {
                detach_pin(&path).map_err(|e| format!("unpinning {}: {e}", path.display()))
            }
            Handle::Clsact(l) => l.detach().map_err(|e| chain(&e)),
            Handle::XdpNetlink(l) => l.detach().map_err(|e| chain(&e)),
        };
        remove_entry(&self.record);
        r.map_err(|detail| DatapathError::Detach {
            ifname: self.ifname.clone(),
            detail: format!("{}: {detail}", self.program),
        })
    }

    /// The agent exits: the program stays attached, for the next agent to adopt.
    fn release(self) {
        match self.handle {
            Handle::Pinned(_) => {}
            // aya deletes the filter when its link is dropped: forget it (no fd inside).
            Handle::Clsact(l) => std::mem::forget(l),
            Handle::XdpNetlink(l) => {
                let _ = l.detach();
                remove_entry(&self.record);
            }
        }
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
/// Why TC ingress uses clsact where the policy prefers tcx and the kernel has none.
const NO_TCX: &str = "tcx: not in this kernel (Linux 6.6 added it), clsact qdisc used";

/// Whether the kernel has tcx, asked of the kernel rather than guessed from its version: a
/// `BPF_LINK_CREATE` of `prog` (a TC program) as `BPF_TCX_INGRESS` on ifindex 0 fails with
/// `ENODEV` where tcx exists and `EINVAL` where the attach type is unknown (before 6.6).
/// Nothing is attached either way.
pub(super) fn kernel_has_tcx(prog: BorrowedFd<'_>) -> bool {
    match sys::link_create(prog, 0, sys::BPF_TCX_INGRESS) {
        // Cannot happen on ifindex 0; the link is closed here.
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EINVAL),
    }
}

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

/// Which entries of the links directory [`Datapath::sweep`] removes.
#[derive(Clone, Copy, Debug)]
enum Sweep<'a> {
    /// Everything (`xwan stop`).
    All,
    /// Everything of one interface.
    Interface(&'a str),
    /// What this datapath has not adopted or attached.
    Unclaimed,
}

impl Datapath {
    /// Chooses the attachment modes used by later attach calls.
    pub fn set_attach_policy(&mut self, policy: AttachPolicy) {
        self.policy = policy;
    }

    /// Attaches a LAN interface: TC ingress `xwan_tc_steer` (tcx, else clsact) then XDP
    /// `xwan_xdp_lan` (native, else generic). If XDP cannot be attached the TC program is
    /// removed again (a LAN interface is all or nothing). Attaching an interface twice is a
    /// no-op that reports the existing attachment. What a previous agent left attached there
    /// is adopted: our program replaces its program in place.
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
    /// datapath added there), including what a previous agent pinned for it.
    pub fn detach_interface(&mut self, ifname: &str) -> Result<(), DatapathError> {
        let index = match ifindex(ifname) {
            Ok(i) => Some(i),
            Err(_) => self
                .attachments
                .iter()
                .find(|a| a.ifname == ifname)
                .map(|a| a.ifindex),
        };
        let mut result = Ok(());
        if let Some(index) = index {
            while let Some(pos) = self.attachments.iter().rposition(|a| a.ifindex == index) {
                let a = self.attachments.remove(pos);
                if let Err(e) = a.detach() {
                    log::warn!("{e}");
                    result = result.and(Err(e));
                }
            }
            if let Some(&(i, ref name)) = self.clsact.iter().find(|(i, _)| *i == index) {
                let name = name.clone();
                result = result.and(self.drop_qdisc(i, &name));
            }
        }
        result.and(self.sweep(Sweep::Interface(ifname)))
    }

    /// Detaches every program this datapath attached or adopted, and whatever else is pinned
    /// in the links directory; removes the clsact qdiscs xwan added, then the links
    /// directory. Continues after an error; returns the first one.
    pub fn detach_all(&mut self) -> Result<(), DatapathError> {
        let mut result = self.unwatch_egress().map_err(|error| DatapathError::Sys {
            what: format!("detaching the tracepoint programs in {}", super::TRACE_DIR),
            error,
        });
        while let Some(a) = self.attachments.pop() {
            if let Err(e) = a.detach() {
                log::warn!("{e}");
                result = result.and(Err(e));
            }
        }
        for (i, name) in self.clsact.clone() {
            result = result.and(self.drop_qdisc(i, &name));
        }
        result = result.and(self.sweep(Sweep::All));
        let dir = self.links_dir();
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                result = result.and(Err(DatapathError::Sys {
                    what: format!("removing {}", dir.display()),
                    error: e,
                }));
            }
            _ => {}
        }
        result
    }

    /// Detaches what a previous agent left attached and this datapath has neither adopted nor
    /// attached (interfaces no longer configured). Call it once the configured interfaces are
    /// attached.
    pub fn detach_unclaimed(&mut self) -> Result<(), DatapathError> {
        self.sweep(Sweep::Unclaimed)
    }

    fn links_dir(&self) -> PathBuf {
        self.pin_dir.join(LINKS_DIR)
    }

    /// Where the bpf_link of `program` on `ifname` is pinned.
    fn link_pin(&self, ifname: &str, program: &str) -> PathBuf {
        self.links_dir()
            .join(format!("{}:{program}", escape(ifname)))
    }

    /// The mode record of `program` on `ifname`.
    fn mode_record(&self, ifname: &str, program: &str) -> PathBuf {
        self.links_dir()
            .join(format!("{}:{program}:mode", escape(ifname)))
    }

    /// The record saying xwan added the clsact qdisc of `ifname`.
    fn qdisc_record(&self, ifname: &str) -> PathBuf {
        self.links_dir().join(format!("{}:clsact", escape(ifname)))
    }

    fn write_record(&self, path: &Path, target: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.links_dir())?;
        remove_entry(path);
        std::os::unix::fs::symlink(target, path)
    }

    /// Pins a new bpf_link at `path`.
    fn pin(&self, link: FdLink, path: &Path) -> Result<(), String> {
        std::fs::create_dir_all(self.links_dir())
            .map_err(|e| format!("creating {}: {e}", self.links_dir().display()))?;
        // A pin left there would make the pin fail: it is stale (adoption rejected it).
        remove_entry(path);
        link.pin(path)
            .map(drop)
            .map_err(|e| format!("pinning the link at {}: {}", path.display(), chain(&e)))
    }

    fn push(
        &mut self,
        ifindex: u32,
        ifname: &str,
        program: &'static str,
        mode: Mode,
        handle: Handle,
    ) {
        let record = self.mode_record(ifname, program);
        if let Err(e) = self.write_record(&record, mode.name()) {
            log::warn!(
                "recording the mode of {program} on '{ifname}' at {}: {e} (a restarted agent \
                 will attach it afresh instead of replacing it in place)",
                record.display()
            );
        }
        self.attachments.push(Attachment {
            ifindex,
            ifname: ifname.into(),
            program,
            mode,
            handle,
            record,
        });
    }

    /// Takes over the clsact qdisc of `ifname` if xwan added it (recorded for this ifindex).
    fn claim_qdisc(&mut self, ifname: &str, ifindex: u32) {
        let recorded = read_record(&self.qdisc_record(ifname)).and_then(|t| t.parse::<u32>().ok());
        if recorded == Some(ifindex) && !self.clsact.iter().any(|(i, _)| *i == ifindex) {
            self.clsact.push((ifindex, ifname.into()));
        }
    }

    /// Removes the clsact qdisc xwan added on `ifindex` and its record.
    fn drop_qdisc(&mut self, ifindex: u32, ifname: &str) -> Result<(), DatapathError> {
        self.clsact.retain(|(i, _)| *i != ifindex);
        remove_entry(&self.qdisc_record(ifname));
        remove_clsact(ifindex, ifname)
    }

    /// Removes entries of the links directory (see [`Sweep`]): pinned links are detached,
    /// recorded clsact filters deleted, recorded qdiscs removed (in that order).
    fn sweep(&mut self, which: Sweep<'_>) -> Result<(), DatapathError> {
        let Ok(dir) = std::fs::read_dir(self.links_dir()) else {
            return Ok(());
        };
        let mut entries = Vec::new();
        let mut others = Vec::new();
        for e in dir.flatten() {
            match e.file_name().to_str().and_then(Entry::parse) {
                Some(entry) => entries.push((entry, e.path())),
                None => others.push(e.path()),
            }
        }
        entries.retain(|(e, _)| !self.claims(e, which));
        entries.sort_by_key(|(e, _)| e.rank());
        let mut result = Ok(());
        for (entry, path) in entries {
            let r = match &entry {
                Entry::Pin { .. } => detach_pin(&path).map_err(|e| e.to_string()),
                Entry::Mode { ifname, .. } => {
                    if read_record(&path).as_deref() == Some(Mode::Tc(TcAttachMode::Clsact).name())
                    {
                        delete_filter(ifname);
                    }
                    remove_entry(&path);
                    Ok(())
                }
                Entry::Qdisc { ifname } => {
                    let recorded = read_record(&path).and_then(|t| t.parse::<u32>().ok());
                    remove_entry(&path);
                    match (recorded, ifindex(ifname)) {
                        (Some(r), Ok(now)) if r == now => {
                            remove_clsact(now, ifname).map_err(|e| e.to_string())
                        }
                        _ => Ok(()),
                    }
                }
            };
            match r {
                Ok(()) if matches!(which, Sweep::Unclaimed) => {
                    log::info!(
                        "removed {} (left by a previous run, not configured now)",
                        path.display()
                    );
                }
                Ok(()) => log::debug!("removed {}", path.display()),
                Err(detail) => {
                    log::warn!("removing {}: {detail}", path.display());
                    result = result.and(Err(DatapathError::Detach {
                        ifname: entry.ifname().into(),
                        detail,
                    }));
                }
            }
        }
        if matches!(which, Sweep::All) {
            for p in others {
                remove_entry(&p);
            }
        }
        result
    }

    /// Whether `entry` stays in a [`Sweep`].
    fn claims(&self, entry: &Entry, which: Sweep<'_>) -> bool {
        match which {
            Sweep::All => false,
            Sweep::Interface(name) => entry.ifname() != name,
            Sweep::Unclaimed => match entry {
                Entry::Pin { ifname, program } | Entry::Mode { ifname, program } => self
                    .attachments
                    .iter()
                    .any(|a| a.ifname == *ifname && a.program == program),
                Entry::Qdisc { ifname } => self.clsact.iter().any(|(_, n)| n == ifname),
            },
        }
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
            match a.mode {
                Mode::Xdp(m) => r.xdp = Some((a.program, m)),
                Mode::Tc(m) => r.tc = Some((a.program, m)),
            }
            // Why a preferred mode is not in use, for status (attach time also logs the error).
            match a.mode {
                Mode::Xdp(XdpAttachMode::Generic) if self.policy.xdp == XdpPolicy::Auto => r
                    .fallbacks
                    .push("native XDP unavailable on this interface, generic XDP used".into()),
                Mode::Tc(TcAttachMode::Clsact)
                    if self.policy.tc == TcPolicy::Auto
                        && !self.has_tcx(a.program).unwrap_or(true) =>
                {
                    r.fallbacks.push(NO_TCX.into())
                }
                _ => {}
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

    /// [`kernel_has_tcx`], probed with the loaded TC program `program`.
    fn has_tcx(&self, program: &'static str) -> Result<bool, DatapathError> {
        let fd = self.program_fd(program)?;
        Ok(kernel_has_tcx(fd))
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

    /// The bpf_link pinned for `program` on `ifname` if it is a live link of `kind` on
    /// `ifindex`. Anything else pinned there is detached and removed (with its mode record):
    /// e.g. the defunct link of an interface deleted and recreated since.
    fn live_pin(&self, ifname: &str, program: &str, ifindex: u32, kind: u32) -> Option<LinkFacts> {
        let pin = self.link_pin(ifname, program);
        let why = match pinned_link(&pin) {
            Ok(None) => return None,
            Ok(Some(f)) if f.kind == kind && f.ifindex == ifindex => return Some(f),
            Ok(Some(f)) if f.kind != kind => format!("it is a link of type {}, not {kind}", f.kind),
            Ok(Some(f)) if f.ifindex == 0 => {
                "its interface is gone (deleted and recreated since)".to_string()
            }
            Ok(Some(f)) => format!(
                "it is on ifindex {}, '{ifname}' is now ifindex {ifindex}",
                f.ifindex
            ),
            Err(e) => format!("reading it failed: {e}"),
        };
        self.drop_stale(ifname, program, &why);
        None
    }

    /// Detaches and removes a pinned attachment that cannot be adopted.
    fn drop_stale(&self, ifname: &str, program: &str, why: &str) {
        let pin = self.link_pin(ifname, program);
        log::warn!(
            "not adopting {program} on '{ifname}' pinned at {}: {why}; attaching afresh",
            pin.display()
        );
        if let Err(e) = detach_pin(&pin) {
            log::warn!("removing {}: {e}", pin.display());
        }
        remove_entry(&self.mode_record(ifname, program));
    }

    /// Whether our program replaced the pinned link's in place; if not, the stale pin is
    /// dropped (see [`Self::drop_stale`]) and the caller attaches afresh.
    fn replaced_or_stale(&self, ifname: &str, program: &str, r: Result<(), String>) -> bool {
        r.map_err(|e| {
            self.drop_stale(
                ifname,
                program,
                &format!("replacing its program failed: {e}"),
            )
        })
        .is_ok()
    }

    /// Adopts the XDP link a previous agent pinned for `program` on `ifname`: our program
    /// replaces its program in place (`BPF_LINK_UPDATE`). `None`: nothing adoptable, attach
    /// afresh.
    fn adopt_xdp(
        &mut self,
        program: &'static str,
        ifname: &str,
        ifindex: u32,
        modes: &[XdpAttachMode],
    ) -> Result<Option<XdpAttachMode>, DatapathError> {
        let Some(old) = self.live_pin(ifname, program, ifindex, BPF_LINK_TYPE_XDP) else {
            return Ok(None);
        };
        let mode = match read_record(&self.mode_record(ifname, program))
            .as_deref()
            .and_then(Mode::parse)
        {
            Some(Mode::Xdp(m)) if modes.contains(&m) => m,
            Some(Mode::Xdp(m)) => {
                self.drop_stale(
                    ifname,
                    program,
                    &format!("{m} XDP is not in the attach policy"),
                );
                return Ok(None);
            }
            _ => {
                self.drop_stale(ifname, program, "its mode record is missing");
                return Ok(None);
            }
        };
        let pin = self.link_pin(ifname, program);
        let p = self.xdp_program(program)?;
        let replaced = PinnedLink::from_pin(&pin)
            .map_err(|e| chain(&e))
            .and_then(|l| XdpLink::try_from(FdLink::from(l)).map_err(|e| chain(&e)))
            .and_then(|l| {
                p.attach_to_link(l)
                    .and_then(|id| p.take_link(id))
                    .map_err(|e| chain(&e))
            });
        // Dropping our handle closes its fd; the pin keeps the link.
        if !self.replaced_or_stale(ifname, program, replaced.map(drop)) {
            return Ok(None);
        }
        self.log_adopted(ifname, program, mode.to_string() + " XDP", old, &pin);
        self.push(
            ifindex,
            ifname,
            program,
            Mode::Xdp(mode),
            Handle::Pinned(pin),
        );
        Ok(Some(mode))
    }

    /// Adopts the TC attachment a previous agent left for `program` on `ifname` (a pinned tcx
    /// link, or a recorded clsact filter): our program replaces its program in place.
    fn adopt_tc(
        &mut self,
        program: &'static str,
        ifname: &str,
        ifindex: u32,
        modes: &[TcAttachMode],
    ) -> Result<Option<TcAttachMode>, DatapathError> {
        let pin = self.link_pin(ifname, program);
        let record = self.mode_record(ifname, program);
        if let Some(old) = self.live_pin(ifname, program, ifindex, BPF_LINK_TYPE_TCX) {
            if !modes.contains(&TcAttachMode::Tcx) {
                self.drop_stale(ifname, program, "tcx is not in the attach policy");
                return Ok(None);
            }
            let p = self.tc_program(program)?;
            let replaced = PinnedLink::from_pin(&pin)
                .map_err(|e| chain(&e))
                .and_then(|l| SchedClassifierLink::try_from(FdLink::from(l)).map_err(|e| chain(&e)))
                .and_then(|l| {
                    p.attach_to_link(l)
                        .and_then(|id| p.take_link(id))
                        .map_err(|e| chain(&e))
                });
            if !self.replaced_or_stale(ifname, program, replaced.map(drop)) {
                return Ok(None);
            }
            self.log_adopted(ifname, program, "tcx".into(), old, &pin);
            self.push(
                ifindex,
                ifname,
                program,
                Mode::Tc(TcAttachMode::Tcx),
                Handle::Pinned(pin),
            );
            return Ok(Some(TcAttachMode::Tcx));
        }
        if read_record(&record).and_then(|t| Mode::parse(&t))
            != Some(Mode::Tc(TcAttachMode::Clsact))
        {
            // Nothing attached, or a record without its pin.
            remove_entry(&record);
            return Ok(None);
        }
        if !modes.contains(&TcAttachMode::Clsact) {
            log::warn!(
                "not adopting the clsact filter of {program} on '{ifname}': clsact is not in the attach policy; attaching afresh"
            );
            delete_filter(ifname);
            remove_entry(&record);
            return Ok(None);
        }
        self.claim_qdisc(ifname, ifindex);
        let p = self.tc_program(program)?;
        let replaced = SchedClassifierLink::attached(
            ifname,
            TcAttachType::Ingress,
            CLSACT_PRIORITY,
            TcHandle::from(CLSACT_HANDLE),
            None,
        )
        .map_err(|e| e.to_string())
        .and_then(|l| {
            p.attach_to_link(l)
                .and_then(|id| p.take_link(id))
                .map_err(|e| chain(&e))
        });
        match replaced {
            Ok(link) => {
                log::info!(
                    "adopted {program} on '{ifname}' (clsact filter, priority {CLSACT_PRIORITY}, handle {CLSACT_HANDLE:#x}): program replaced in place"
                );
                self.push(
                    ifindex,
                    ifname,
                    program,
                    Mode::Tc(TcAttachMode::Clsact),
                    Handle::Clsact(link),
                );
                Ok(Some(TcAttachMode::Clsact))
            }
            Err(e) => {
                log::warn!(
                    "not adopting the clsact filter of {program} on '{ifname}': {e}; attaching afresh"
                );
                remove_entry(&record);
                Ok(None)
            }
        }
    }

    fn log_adopted(&self, ifname: &str, program: &str, mode: String, old: LinkFacts, pin: &Path) {
        let new = pinned_link(pin).ok().flatten().map_or(0, |f| f.prog_id);
        log::info!(
            "adopted {program} on '{ifname}' ({mode}, bpf_link {} pinned at {}): program id {} replaced by {new} in place",
            old.id,
            pin.display(),
            old.prog_id
        );
    }

    fn attach_xdp(
        &mut self,
        program: &'static str,
        ifname: &str,
        ifindex: u32,
        fallbacks: &mut Vec<String>,
    ) -> Result<XdpAttachMode, DatapathError> {
        if let Some(a) = self.find(ifindex, program)
            && let Mode::Xdp(m) = a.mode
        {
            return Ok(m);
        }
        let modes: &[XdpAttachMode] = match self.policy.xdp {
            XdpPolicy::Auto => &[XdpAttachMode::Native, XdpAttachMode::Generic],
            XdpPolicy::Native => &[XdpAttachMode::Native],
            XdpPolicy::Generic => &[XdpAttachMode::Generic],
        };
        if let Some(m) = self.adopt_xdp(program, ifname, ifindex, modes)? {
            return Ok(m);
        }
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
                    let handle = if xdp_has_bpf_link() {
                        // aya attached through a bpf_link (it falls back to netlink only
                        // where the kernel has none).
                        let pin = self.link_pin(ifname, program);
                        FdLink::try_from(link)
                            .map_err(|e| chain(&e))
                            .and_then(|l| self.pin(l, &pin))
                            .map_err(|detail| DatapathError::Attach {
                                program,
                                ifname: ifname.into(),
                                detail,
                            })?;
                        Handle::Pinned(pin)
                    } else {
                        Handle::XdpNetlink(link)
                    };
                    self.push(ifindex, ifname, program, Mode::Xdp(mode), handle);
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
            && let Mode::Tc(m) = a.mode
        {
            return Ok(m);
        }
        let modes: &[TcAttachMode] = match self.policy.tc {
            TcPolicy::Auto if !self.has_tcx(program)? => &[TcAttachMode::Clsact],
            TcPolicy::Auto => &[TcAttachMode::Tcx, TcAttachMode::Clsact],
            TcPolicy::Tcx => &[TcAttachMode::Tcx],
            TcPolicy::Clsact => &[TcAttachMode::Clsact],
        };
        if self.policy.tc == TcPolicy::Auto && modes == [TcAttachMode::Clsact] {
            log::info!("{program} on '{ifname}': {NO_TCX}");
            fallbacks.push(NO_TCX.into());
        }
        if let Some(m) = self.adopt_tc(program, ifname, ifindex, modes)? {
            return Ok(m);
        }
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
                        self.claim_qdisc(ifname, ifindex);
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
                        TcAttachOptions::Netlink(NlOptions {
                            priority: CLSACT_PRIORITY,
                            handle: TcHandle::from(CLSACT_HANDLE),
                            classid: None,
                        }),
                    )
                    .and_then(|id| p.take_link(id))
                    .map_err(|e| format!("{}{}", chain(&e), hint(&e)))
                }),
            };
            if added_clsact {
                if !self.clsact.iter().any(|(i, _)| *i == ifindex) {
                    self.clsact.push((ifindex, ifname.into()));
                }
                if let Err(e) = self.write_record(&self.qdisc_record(ifname), &ifindex.to_string())
                {
                    log::warn!(
                        "recording the clsact qdisc of '{ifname}': {e} (`xwan stop` after a restart will leave it)"
                    );
                }
            }
            match attached {
                Ok(link) => {
                    let handle = match mode {
                        TcAttachMode::Tcx => {
                            let pin = self.link_pin(ifname, program);
                            FdLink::try_from(link)
                                .map_err(|e| chain(&e))
                                .and_then(|l| self.pin(l, &pin))
                                .map_err(|detail| DatapathError::Attach {
                                    program,
                                    ifname: ifname.into(),
                                    detail,
                                })?;
                            Handle::Pinned(pin)
                        }
                        TcAttachMode::Clsact => Handle::Clsact(link),
                    };
                    self.push(ifindex, ifname, program, Mode::Tc(mode), handle);
                    return Ok(mode);
                }
                Err(msg) => {
                    let msg = format!("TC {mode}: {msg}");
                    if added_clsact && !self.attachments.iter().any(|a| a.ifindex == ifindex) {
                        let _ = self.drop_qdisc(ifindex, ifname);
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

/// Deletes xwan's clsact filter on `ifname` (absent filter or interface: nothing to do).
fn delete_filter(ifname: &str) {
    if let Ok(link) = SchedClassifierLink::attached(
        ifname,
        TcAttachType::Ingress,
        CLSACT_PRIORITY,
        TcHandle::from(CLSACT_HANDLE),
        None,
    ) && let Err(e) = link.detach()
    {
        log::debug!("deleting xwan's clsact filter on '{ifname}': {}", chain(&e));
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // The agent exits (or a test drops its datapath): what is attached stays attached,
        // for the next agent to adopt. Before the programs are dropped: a netlink XDP link
        // needs its program's fd to detach.
        for a in std::mem::take(&mut self.attachments) {
            a.release();
        }
    }
}

// ---- names in the links directory ---------------------------------------------------------

/// `ifname` as part of a bpffs name: bpffs refuses `.` in names.
fn escape(ifname: &str) -> String {
    let mut s = String::with_capacity(ifname.len());
    for c in ifname.chars() {
        match c {
            '%' => s.push_str("%25"),
            '.' => s.push_str("%2E"),
            c => s.push(c),
        }
    }
    s
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        out.push(match rest.get(i + 1..i + 3)? {
            "25" => '%',
            "2E" => '.',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// An entry of the links directory.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// `<if>:<program>`: a pinned bpf_link.
    Pin { ifname: String, program: String },
    /// `<if>:<program>:mode`: the mode record.
    Mode { ifname: String, program: String },
    /// `<if>:clsact`: xwan added this interface's clsact qdisc.
    Qdisc { ifname: String },
}

impl Entry {
    fn parse(name: &str) -> Option<Entry> {
        let parts: Vec<&str> = name.split(':').collect();
        let ifname = unescape(parts.first()?)?;
        match parts[1..] {
            ["clsact"] => Some(Entry::Qdisc { ifname }),
            [program] if !program.is_empty() => Some(Entry::Pin {
                ifname,
                program: program.into(),
            }),
            [program, "mode"] if !program.is_empty() => Some(Entry::Mode {
                ifname,
                program: program.into(),
            }),
            _ => None,
        }
    }

    fn ifname(&self) -> &str {
        match self {
            Entry::Pin { ifname, .. } | Entry::Mode { ifname, .. } | Entry::Qdisc { ifname } => {
                ifname
            }
        }
    }

    /// Removal order: links, then filters, then qdiscs.
    fn rank(&self) -> u8 {
        match self {
            Entry::Pin { .. } => 0,
            Entry::Mode { .. } => 1,
            Entry::Qdisc { .. } => 2,
        }
    }
}

/// The target of a record (symlink).
fn read_record(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// Removes an entry of the links directory; an absent one is fine.
fn remove_entry(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("removing {}: {e}", path.display());
    }
}

/// Whether aya attaches XDP through a bpf_link (Linux ≥ 5.9) rather than netlink.
fn xdp_has_bpf_link() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 9, 0))
}

// ---- the few bpf(2) link calls aya 0.14 does not offer -------------------------------------

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `enum bpf_link_type`.
const BPF_LINK_TYPE_XDP: u32 = 6;
const BPF_LINK_TYPE_TCX: u32 = 11;

#[repr(C, align(8))]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _rest: [u8; sys::ATTR_SIZE - 20],
}

#[repr(C, align(8))]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
    _rest: [u8; sys::ATTR_SIZE - 16],
}

#[repr(C, align(8))]
struct LinkDetachAttr {
    link_fd: u32,
    _rest: [u8; sys::ATTR_SIZE - 4],
}

/// `struct bpf_link_info` up to the XDP / tcx members (`ifindex` first in both), plus room.
#[repr(C, align(8))]
struct RawLinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    attach_type: u32,
    _rest: [u64; 8],
}

/// What the kernel says about a bpf_link.
#[derive(Clone, Copy, Debug)]
struct LinkFacts {
    /// `enum bpf_link_type`.
    kind: u32,
    id: u32,
    prog_id: u32,
    /// For XDP and tcx links; 0 once the interface is gone.
    ifindex: u32,
}

/// Opens the object pinned at `path` (`BPF_OBJ_GET`).
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _rest: [0; sys::ATTR_SIZE - 20],
    };
    // SAFETY: `c` outlives the call; the kernel only reads the path.
    let fd = unsafe { sys::sys_bpf(BPF_OBJ_GET, &mut attr)? };
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkFacts> {
    // SAFETY: all zeroes is a valid RawLinkInfo (plain integers).
    let mut info: RawLinkInfo = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<RawLinkInfo>() as u32,
        info: &mut info as *mut RawLinkInfo as u64,
        _rest: [0; sys::ATTR_SIZE - 16],
    };
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which outlives the call.
    unsafe { sys::sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    Ok(LinkFacts {
        kind: info.kind,
        id: info.id,
        prog_id: info.prog_id,
        ifindex: info.ifindex,
    })
}

/// The bpf_link pinned at `path`; `None` when nothing is pinned there.
fn pinned_link(path: &Path) -> io::Result<Option<LinkFacts>> {
    match obj_get(path) {
        Ok(fd) => link_info(fd.as_fd()).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Detaches the bpf_link pinned at `path` (`BPF_LINK_DETACH`) and removes the pin; nothing
/// pinned there is fine.
pub(super) fn detach_pin(path: &Path) -> io::Result<()> {
    match obj_get(path) {
        Ok(fd) => {
            let mut attr = LinkDetachAttr {
                link_fd: fd.as_raw_fd() as u32,
                _rest: [0; sys::ATTR_SIZE - 4],
            };
            // SAFETY: an attr without pointers.
            if let Err(e) = unsafe { sys::sys_bpf(BPF_LINK_DETACH, &mut attr) } {
                // Without BPF_LINK_DETACH for this link type, dropping the last reference
                // (the pin, then our fd) detaches it.
                log::debug!("BPF_LINK_DETACH of {}: {e}", path.display());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => log::debug!("opening {}: {e}", path.display()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::datapath::TestBpffs;

    #[test]
    fn names_have_no_dots_and_parse_back() {
        assert_eq!(escape("eth0.100"), "eth0%2E100");
        assert_eq!(escape("a%b"), "a%25b");
        for name in ["l0", "eth0.100", "a%2Eb", "%", "x.y.z"] {
            assert!(!escape(name).contains('.'));
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
        }
        assert_eq!(unescape("bad%zz"), None);
        assert_eq!(
            Entry::parse("eth0%2E100:xwan_xdp_lan"),
            Some(Entry::Pin {
                ifname: "eth0.100".into(),
                program: "xwan_xdp_lan".into()
            })
        );
        assert_eq!(
            Entry::parse("l0:xwan_tc_steer:mode"),
            Some(Entry::Mode {
                ifname: "l0".into(),
                program: "xwan_tc_steer".into()
            })
        );
        assert_eq!(
            Entry::parse("l0:clsact"),
            Some(Entry::Qdisc {
                ifname: "l0".into()
            })
        );
        assert_eq!(Entry::parse("maps.debug"), None);
        assert_eq!(Entry::parse("l0:x:y"), None);
        for m in ["native", "generic", "tcx", "clsact"] {
            assert_eq!(Mode::parse(m).map(Mode::name), Some(m));
        }
    }

    #[test]
    fn attr_layouts() {
        assert_eq!(std::mem::size_of::<ObjGetAttr>(), sys::ATTR_SIZE);
        assert_eq!(std::mem::size_of::<InfoAttr>(), sys::ATTR_SIZE);
        assert_eq!(std::mem::size_of::<LinkDetachAttr>(), sys::ATTR_SIZE);
        assert_eq!(std::mem::offset_of!(RawLinkInfo, ifindex), 16);
    }

    fn root() -> bool {
        // SAFETY: plain libc call.
        unsafe { libc::geteuid() == 0 }
    }

    /// Runs `f` on a thread of its own in a new, empty network namespace.
    fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            // SAFETY: affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            f()
        })
        .join()
        .unwrap()
    }

    fn run(cmd: &str, args: &str) -> String {
        let out = Command::new(cmd)
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd} {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The number after ` id ` following `after` in `text`.
    fn id_after(text: &str, after: &str) -> Option<u32> {
        let rest = &text[text.find(after)?..];
        let rest = &rest[rest.find(" id ")? + 4..];
        rest.split_whitespace().next()?.parse().ok()
    }

    fn xdp_prog(ifname: &str) -> Option<u32> {
        id_after(
            &run("ip", &format!("-d link show dev {ifname}")),
            "prog/xdp",
        )
    }

    fn filter_prog(ifname: &str) -> Option<u32> {
        id_after(
            &run("tc", &format!("filter show dev {ifname} ingress")),
            "xwan_tc_steer",
        )
    }

    fn entries(fs: &TestBpffs) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(fs.path().join(LINKS_DIR))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn veth() {
        run("ip", "link add xa type veth peer name xb");
        run("ip", "link set xa up");
        run("ip", "link set xb up");
    }

    #[test]
    fn a_new_datapath_adopts_what_the_last_one_left_attached() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        in_netns(|| {
            let fs = TestBpffs::new().unwrap();
            veth();
            let mut dp = Datapath::load(fs.path()).unwrap();
            dp.attach_lan("xa").unwrap();
            dp.attach_pass("xb").unwrap();
            let first = xdp_prog("xa").expect("XDP on xa");
            // tcx where the kernel has it; before Linux 6.6, clsact.
            let tcx = kernel_has_tcx(dp.program_fd(PROG_TC_STEER).unwrap());
            let tc_mode = if tcx {
                TcAttachMode::Tcx
            } else {
                TcAttachMode::Clsact
            };
            drop(dp);
            assert_eq!(xdp_prog("xa"), Some(first), "dropping keeps it attached");
            let mut expected = vec![
                "xa:xwan_tc_steer",
                "xa:xwan_tc_steer:mode",
                "xa:xwan_xdp_lan",
                "xa:xwan_xdp_lan:mode",
                "xb:xwan_xdp_pass",
                "xb:xwan_xdp_pass:mode",
            ];
            if !tcx {
                // A clsact filter has no link to pin, only its mode record; the qdisc we added
                // is recorded instead.
                expected[0] = "xa:clsact";
            }
            assert_eq!(entries(&fs), expected);

            // A new datapath replaces the program in place and reports the recorded modes.
            let mut dp = Datapath::load(fs.path()).unwrap();
            let r = dp.attach_lan("xa").unwrap();
            assert_eq!(r.xdp, Some((PROG_XDP_LAN, XdpAttachMode::Native)));
            assert_eq!(r.tc, Some((PROG_TC_STEER, tc_mode)));
            let second = xdp_prog("xa").expect("XDP on xa");
            assert_ne!(second, first, "program replaced");
            // xb is not configured any more.
            dp.detach_unclaimed().unwrap();
            assert_eq!(xdp_prog("xb"), None);
            assert_eq!(entries(&fs).len(), expected.len() - 2);
            drop(dp);

            // The interface is recreated: the defunct links are replaced by fresh ones.
            run("ip", "link del xa");
            veth();
            let mut dp = Datapath::load(fs.path()).unwrap();
            dp.attach_lan("xa").unwrap();
            assert!(xdp_prog("xa").is_some());
            dp.detach_all().unwrap();
            assert_eq!(xdp_prog("xa"), None);
            assert!(
                !fs.path().join(LINKS_DIR).exists(),
                "links directory removed"
            );

            // clsact: the filter survives, is replaced in place, and the qdisc xwan added is
            // removed by whichever agent detaches.
            let clsact = AttachPolicy {
                xdp: XdpPolicy::Generic,
                tc: TcPolicy::Clsact,
            };
            dp.set_attach_policy(clsact);
            dp.attach_lan("xa").unwrap();
            let first = filter_prog("xa").expect("clsact filter");
            drop(dp);
            assert_eq!(filter_prog("xa"), Some(first), "dropping keeps the filter");
            let mut dp = Datapath::load(fs.path()).unwrap();
            dp.set_attach_policy(clsact);
            let r = dp.attach_lan("xa").unwrap();
            assert_eq!(r.tc, Some((PROG_TC_STEER, TcAttachMode::Clsact)));
            assert_eq!(r.xdp, Some((PROG_XDP_LAN, XdpAttachMode::Generic)));
            let second = filter_prog("xa").expect("clsact filter");
            assert_ne!(second, first, "filter program replaced");
            assert_eq!(
                run("tc", "filter show dev xa ingress")
                    .lines()
                    .filter(|l| l.contains("xwan_tc_steer"))
                    .count(),
                1,
                "one filter: {}",
                run("tc", "filter show dev xa ingress")
            );
            dp.detach_all().unwrap();
            assert!(!run("tc", "qdisc show dev xa").contains("clsact"));
            assert!(!run("ip", "link show dev xa").contains("xdp"));
            assert!(!fs.path().join(LINKS_DIR).exists());
        });
    }
}
