//! The fast path of confirmed flows (`netfilter` mode, docs/firewall.md): follows conntrack
//! and sets or clears each flow's offload flag in the data plane (`FLOW_OFFLOADED`).
//!
//! A flow is offloaded once its conntrack entry is assured (seen both ways), without a
//! helper, untranslated or with only its source translated (`masquerade`, `snat`: the fast
//! path then translates as conntrack does, `FLOW_SNAT`) and, for TCP, established: from then on the firewall has accepted it and
//! conntrack needs only what the fast path still hands to the kernel (the replies, and TCP's
//! SYN, FIN and RST). Before the flag is set, the entry's TCP window tracking is turned off
//! ([`Conntrack::be_liberal`]): the kernel no longer sees one direction's segments, so it
//! would take the replies that acknowledge them for invalid (the kernel's own flowtable does
//! the same). The flag is cleared when the entry is destroyed or TCP leaves established.
//!
//! Lost changes (the event socket overflowed), a start, or the mode turned on: every flag is
//! cleared, then a dump of conntrack offloads again what qualifies; events are subscribed to
//! first, so nothing between the dump and the events is missed. Conntrack reports the changes
//! of an entry only if a listener existed when it was made (`nf_conntrack_events = 2`, the
//! default): the dump's entries that may still qualify (not yet assured, TCP not yet
//! established) are looked up again every [`RECHECK`] until they do, go, or [`PENDING_FOR`]
//! has passed. So are the dump's confirmed entries whose flow the data plane has no entry for
//! yet (a fresh start: the flow table is new, conntrack's connections are not): they are
//! offloaded when their flow's next packet has made one. At most [`PENDING_MAX`] are kept. When the agent exits (the
//! data plane keeps forwarding), every flag is cleared: nobody would see conntrack forget a
//! flow.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{info, warn};
use xwan_common::{FlowKey, FlowPath, Snat};

use crate::{
    datapath::{Flag, FlowOffload},
    metrics::Metrics,
    netlink::conntrack::{
        Change, Conntrack, EVENTS_TICK, Entry, Events, IPS_ASSURED, IPS_DST_NAT, IPS_SEQ_ADJUST,
        TCP_ESTABLISHED,
    },
};

/// How often the entries made before the events were followed are looked up again.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How long such an entry is looked up again (UDP is assured after 2 s of a stream; a TCP
/// handshake takes a few round trips; a flow's next packet may take a while).
pub const PENDING_FOR: Duration = Duration::from_secs(120);
/// The most entries looked up again (a box may track far more connections than xwan steers).
pub const PENDING_MAX: usize = 65_536;

/// A dumped entry looked up again, and what it waits for.
#[derive(Clone, Copy, Debug)]
struct Pending {
    original: FlowKey,
    until: Instant,
    /// `true`: it qualifies, its flow has no entry yet; `false`: it may qualify later.
    needs_flow: bool,
}

/// What [`Follower::offload`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offloaded {
    /// The flag is set now.
    Now,
    /// Set before, or it could not be (logged and counted).
    Not,
    /// No LAN interface has an entry for the flow.
    NoFlow,
}

/// What a conntrack entry means for its flow's fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// With the source NAT conntrack applies, if any.
    Offload(Option<Snat>),
    /// Back to the kernel path.
    Return,
    /// Look the entry up: a TCP event that does not say the connection's state (conntrack
    /// includes it only when the state changed, and a connection picked up mid-stream is
    /// established before it is assured).
    LookUp,
    /// Nothing to do (not confirmed yet, or never offloaded: destination translated,
    /// helper, protocol).
    Leave,
}

/// The verdict on `change`.
pub fn verdict(change: &Change) -> Verdict {
    match change {
        Change::Destroyed(_) => Verdict::Return,
        Change::Updated(e) => entry_verdict(e),
    }
}

/// The verdict on an entry as it is now.
pub fn entry_verdict(e: &Entry) -> Verdict {
    if !matches!(e.original.proto, 6 | 17) {
        return Verdict::Leave;
    }
    let snat = source_nat(e);
    let candidate = e.status & IPS_ASSURED != 0 && snat.is_ok() && !e.helper;
    match (e.original.proto, e.tcp_state) {
        (6, Some(TCP_ESTABLISHED)) | (17, _) if candidate => {
            Verdict::Offload(snat.unwrap_or_default())
        }
        (6, Some(TCP_ESTABLISHED)) | (17, _) => Verdict::Leave,
        (6, Some(_)) => Verdict::Return,
        _ if candidate => Verdict::LookUp,
        _ => Verdict::Leave,
    }
}

/// Whether an entry not offloaded may qualify later: TCP or UDP, untranslated, no helper,
/// not closing.
fn may_qualify(e: &Entry) -> bool {
    let assured = Entry {
        status: e.status | IPS_ASSURED,
        tcp_state: e.tcp_state.map(|s| {
            // Before established (SYN_SENT, SYN_RECV, SYN_SENT2) it may still get there.
            if matches!(s, 1 | 2 | 9) {
                TCP_ESTABLISHED
            } else {
                s
            }
        }),
        ..*e
    };
    matches!(entry_verdict(&assured), Verdict::Offload(_))
}

/// How conntrack translates connection `e`: `Ok(None)` not at all, `Ok(Some)` only its
/// source (the reply goes to the translated source: `masquerade`, `snat`), `Err` anything
/// else (destination NAT, sequence adjustment) the fast path does not do.
fn source_nat(e: &Entry) -> Result<Option<Snat>, ()> {
    let (o, r) = (&e.original, &e.reply);
    if e.status & (IPS_DST_NAT | IPS_SEQ_ADJUST) != 0 || r.src != o.dst || r.sport != o.dport {
        return Err(());
    }
    if *r == mirror(o) {
        return Ok(None);
    }
    if r.proto != o.proto || r.family != o.family {
        return Err(());
    }
    Ok(Some(Snat {
        src: r.dst,
        sport: r.dport,
        _pad: 0,
    }))
}

/// The reply direction of an untranslated connection whose original direction is `k`.
fn mirror(k: &FlowKey) -> FlowKey {
    FlowKey {
        src: k.dst,
        dst: k.src,
        sport: k.dport,
        dport: k.sport,
        ..*k
    }
}

/// What the follower did, for `xwan_flow_offloads_total{event}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A flow's flag set.
    Offloaded,
    /// A flow's flag cleared.
    Returned,
    /// Every flag cleared and set again from a dump of conntrack.
    Resync,
    /// A map or ctnetlink request failed.
    Failed,
}

impl Event {
    pub const ALL: [Event; 4] = [
        Event::Offloaded,
        Event::Returned,
        Event::Resync,
        Event::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Event::Offloaded => "offloaded",
            Event::Returned => "returned",
            Event::Resync => "resync",
            Event::Failed => "failed",
        }
    }
}

/// The thread that follows conntrack. Off (nothing offloaded, no socket) until
/// [`Offloader::set_lans`] names the LAN interfaces of a `netfilter`-mode plan.
pub struct Offloader {
    lans: Arc<Mutex<Vec<u32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Offloader {
    pub fn spawn(table: FlowOffload, metrics: Arc<Metrics>) -> std::io::Result<Offloader> {
        let lans = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut follower = Follower {
            table,
            metrics,
            lans: lans.clone(),
            stop: stop.clone(),
            following: Vec::new(),
            events: None,
            ct: None,
            pending: Vec::new(),
            rechecked: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("xwan-offload".into())
            .spawn(move || follower.run())?;
        Ok(Offloader {
            lans,
            stop,
            thread: Some(thread),
        })
    }

    /// The LAN interfaces whose flows may be offloaded (their flow keys' ifindex); empty in
    /// `xdp` mode, which clears every flag.
    pub fn set_lans(&self, lans: Vec<u32>) {
        *self.lans.lock().expect("offloader lock") = lans;
    }
}

impl Drop for Offloader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Follower {
    table: FlowOffload,
    metrics: Arc<Metrics>,
    lans: Arc<Mutex<Vec<u32>>>,
    stop: Arc<AtomicBool>,
    /// The LAN interfaces followed now (empty: off).
    following: Vec<u32>,
    events: Option<Events>,
    ct: Option<Conntrack>,
    /// Entries of the last dump looked up again (see the module docs).
    pending: Vec<Pending>,
    rechecked: Instant,
}

impl Follower {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let lans = self.lans.lock().expect("offloader lock").clone();
            if lans != self.following {
                let off = lans.is_empty() && !self.following.is_empty();
                self.following = lans;
                self.events = None;
                if off && self.clear_flags() {
                    info!("flow offload off (xdp forwarding): every flow back on its path");
                }
            }
            if self.following.is_empty() {
                std::thread::sleep(EVENTS_TICK);
                continue;
            }
            if self.events.is_none() && !self.resync() {
                std::thread::sleep(EVENTS_TICK);
                continue;
            }
            if !self.pending.is_empty() && self.rechecked.elapsed() >= RECHECK {
                self.recheck();
            }
            let Some(events) = &mut self.events else {
                continue;
            };
            match events.receive() {
                Ok(changes) => {
                    for c in &changes {
                        self.apply(c);
                    }
                }
                Err(e) => {
                    warn!("following conntrack: {e}; clearing every offload and reading it again");
                    self.events = None;
                }
            }
        }
        // Nobody follows conntrack any more: a flow it forgets must not stay offloaded.
        if !self.following.is_empty() {
            self.clear_flags();
        }
    }

    /// Clears every flag (after a mode change); whether there were any.
    fn clear_flags(&mut self) -> bool {
        match self.table.clear_all() {
            Ok(n) => n > 0,
            Err(e) => {
                warn!("clearing the flows' offload flags: {e}");
                self.metrics.record_offload(Event::Failed);
                false
            }
        }
    }

    /// Subscribes to conntrack's events, clears every flag, then offloads what a dump of
    /// conntrack shows confirmed. Whether it succeeded (else it is tried again).
    fn resync(&mut self) -> bool {
        let events = match Events::subscribe() {
            Ok(e) => e,
            Err(e) => {
                warn!("subscribing to conntrack's events: {e}; flows stay on the kernel path");
                self.metrics.record_offload(Event::Failed);
                return false;
            }
        };
        self.clear_flags();
        let entries = match self.conntrack().and_then(|c| c.dump()) {
            Ok(entries) => entries,
            Err(e) => {
                warn!("reading conntrack's table: {e}; flows stay on the kernel path");
                self.metrics.record_offload(Event::Failed);
                self.ct = None;
                return false;
            }
        };
        self.events = Some(events);
        self.metrics.record_offload(Event::Resync);
        let until = Instant::now() + PENDING_FOR;
        self.pending.clear();
        let mut offloaded = 0;
        for e in &entries {
            let needs_flow = match entry_verdict(e) {
                Verdict::Offload(snat) => match self.offload(&e.original, snat) {
                    Offloaded::Now => {
                        offloaded += 1;
                        continue;
                    }
                    Offloaded::Not => continue,
                    Offloaded::NoFlow => true,
                },
                _ if may_qualify(e) => false,
                _ => continue,
            };
            if self.pending.len() < PENDING_MAX {
                self.pending.push(Pending {
                    original: e.original,
                    until,
                    needs_flow,
                });
            }
        }
        self.rechecked = Instant::now();
        info!(
            connections = entries.len(),
            offloaded,
            pending = self.pending.len(),
            "following conntrack: confirmed flows take the fast path"
        );
        true
    }

    /// Looks the pending entries up again: offloads those that qualify now and have a flow,
    /// forgets those gone or too old.
    fn recheck(&mut self) {
        let now = Instant::now();
        self.rechecked = now;
        let mut still = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            if now >= p.until {
                continue;
            }
            // Waiting for a flow: the flow table first, which is cheaper than conntrack.
            if p.needs_flow && !self.has_flow(&p.original) {
                still.push(p);
                continue;
            }
            let entry = match self.conntrack().and_then(|c| c.get(&p.original)) {
                Ok(e) => e,
                Err(e) => {
                    warn!("looking a connection up again: {e}");
                    self.metrics.record_offload(Event::Failed);
                    self.ct = None;
                    still.push(p);
                    continue;
                }
            };
            match entry.map(|e| (entry_verdict(&e), may_qualify(&e))) {
                Some((Verdict::Offload(snat), _)) => match self.offload(&p.original, snat) {
                    Offloaded::NoFlow => still.push(Pending {
                        needs_flow: true,
                        ..p
                    }),
                    Offloaded::Now | Offloaded::Not => {}
                },
                Some((_, true)) => still.push(p),
                _ => {}
            }
        }
        self.pending = still;
    }

    /// Whether a LAN interface has a flow entry for connection `original`.
    fn has_flow(&self, original: &FlowKey) -> bool {
        self.keys(original)
            .iter()
            .any(|k| matches!(self.table.get(k), Ok(Flag::Set | Flag::Clear)))
    }

    fn conntrack(&mut self) -> std::io::Result<&mut Conntrack> {
        if self.ct.is_none() {
            self.ct = Some(Conntrack::new()?);
        }
        Ok(self.ct.as_mut().expect("opened above"))
    }

    fn apply(&mut self, change: &Change) {
        let (Change::Updated(e) | Change::Destroyed(e)) = change;
        let verdict = match verdict(change) {
            Verdict::LookUp => match self.conntrack().and_then(|c| c.get(&e.original)) {
                Ok(Some(now)) => entry_verdict(&now),
                Ok(None) => Verdict::Return,
                Err(err) => {
                    warn!("looking a connection up: {err}");
                    self.metrics.record_offload(Event::Failed);
                    self.ct = None;
                    Verdict::Leave
                }
            },
            v => v,
        };
        match verdict {
            Verdict::Offload(snat) => {
                self.offload(&e.original, snat);
            }
            Verdict::Return => self.give_back(&e.original),
            Verdict::LookUp | Verdict::Leave => {}
        }
    }

    /// The flow keys of connection `original` on the LAN interfaces followed.
    fn keys(&self, original: &FlowKey) -> Vec<FlowKey> {
        self.following
            .iter()
            .map(|&ifindex| FlowKey {
                ifindex,
                ..*original
            })
            .collect()
    }

    /// Offloads the flow of connection `original` (translated by `snat`) if xwan steers it
    /// and it is not offloaded yet.
    fn offload(&mut self, original: &FlowKey, snat: Option<Snat>) -> Offloaded {
        let mut done = Offloaded::NoFlow;
        for key in self.keys(original) {
            match self.table.get(&key) {
                Ok(Flag::Clear) => {}
                Ok(Flag::Set) => {
                    done = Offloaded::Not;
                    continue;
                }
                Ok(Flag::Absent) => continue,
                Err(e) => {
                    warn!("reading a flow's offload flag: {e}");
                    self.metrics.record_offload(Event::Failed);
                    continue;
                }
            }
            // TCP: window tracking off first, or the first replies to segments the kernel
            // did not see would be invalid.
            if key.proto == 6 {
                match self.conntrack().and_then(|c| c.be_liberal(original)) {
                    Ok(true) => {}
                    Ok(false) => return Offloaded::Not, // the entry is gone
                    Err(e) => {
                        warn!("turning off a connection's TCP window tracking: {e}");
                        self.metrics.record_offload(Event::Failed);
                        self.ct = None;
                        return Offloaded::Not;
                    }
                }
            }
            match self.table.set(&key, FlowPath::Fast(snat)) {
                Ok(Flag::Clear) => {
                    self.metrics.record_offload(Event::Offloaded);
                    done = Offloaded::Now;
                }
                Ok(_) => done = Offloaded::Not,
                Err(e) => {
                    warn!("setting a flow's offload flag: {e}");
                    self.metrics.record_offload(Event::Failed);
                    done = Offloaded::Not;
                }
            }
        }
        done
    }

    /// Puts the flow of connection `original` back on the kernel path.
    fn give_back(&mut self, original: &FlowKey) {
        for key in self.keys(original) {
            match self.table.set(&key, FlowPath::Kernel) {
                Ok(Flag::Set) => self.metrics.record_offload(Event::Returned),
                Ok(_) => {}
                Err(e) => {
                    warn!("clearing a flow's offload flag: {e}");
                    self.metrics.record_offload(Event::Failed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::conntrack::IPS_SRC_NAT;

    fn key(proto: u8) -> FlowKey {
        FlowKey {
            src: [u32::from_ne_bytes([10, 1, 0, 7]), 0, 0, 0],
            dst: [u32::from_ne_bytes([203, 0, 113, 9]), 0, 0, 0],
            sport: 40000,
            dport: 443,
            proto,
            family: 4,
            _pad: 0,
            ifindex: 0,
        }
    }

    fn entry(proto: u8, status: u32, tcp_state: Option<u8>) -> Entry {
        Entry {
            original: key(proto),
            reply: mirror(&key(proto)),
            status,
            tcp_state,
            helper: false,
        }
    }

    #[test]
    fn only_confirmed_tcp_and_udp_without_destination_nat_are_offloaded() {
        let up = |e: Entry| verdict(&Change::Updated(e));
        assert_eq!(up(entry(17, IPS_ASSURED, None)), Verdict::Offload(None));
        assert_eq!(
            up(entry(6, IPS_ASSURED, Some(TCP_ESTABLISHED))),
            Verdict::Offload(None)
        );
        // Not seen both ways yet.
        assert_eq!(up(entry(17, 0, None)), Verdict::Leave);
        assert_eq!(up(entry(6, 0, Some(TCP_ESTABLISHED))), Verdict::Leave);
        // TCP closing (FIN_WAIT) or not established: back to the kernel.
        assert_eq!(up(entry(6, IPS_ASSURED, Some(4))), Verdict::Return);
        assert_eq!(up(entry(6, 0, Some(4))), Verdict::Return);
        // An event without TCP's state (it did not change): looked up if it may qualify.
        assert_eq!(up(entry(6, IPS_ASSURED, None)), Verdict::LookUp);
        assert_eq!(up(entry(6, 0, None)), Verdict::Leave);
        // Masquerade: the replies go to the uplink's address and a new port; the fast path
        // translates the same way.
        let mut masq = entry(6, IPS_ASSURED | IPS_SRC_NAT, Some(TCP_ESTABLISHED));
        masq.reply.dst[0] = u32::from_ne_bytes([192, 0, 2, 1]);
        masq.reply.dport = 61000;
        let snat = Snat {
            src: [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0],
            sport: 61000,
            _pad: 0,
        };
        assert_eq!(up(masq), Verdict::Offload(Some(snat)));
        assert!(may_qualify(&Entry { status: 0, ..masq }));
        // Destination NAT (a port forward, a redirect), by its status or by its tuples;
        // sequence adjustment; a helper; another protocol.
        let dnat = Entry {
            status: IPS_ASSURED | IPS_DST_NAT,
            ..entry(17, 0, None)
        };
        assert_eq!(up(dnat), Verdict::Leave);
        let mut redirected = entry(17, IPS_ASSURED, None);
        redirected.reply.src[0] = u32::from_ne_bytes([10, 1, 0, 1]);
        assert_eq!(up(redirected), Verdict::Leave);
        let mut port_forward = entry(17, IPS_ASSURED, None);
        port_forward.reply.sport = 8443;
        assert_eq!(up(port_forward), Verdict::Leave);
        assert!(!may_qualify(&port_forward));
        assert_eq!(
            up(entry(
                6,
                IPS_ASSURED | IPS_SEQ_ADJUST,
                Some(TCP_ESTABLISHED)
            )),
            Verdict::Leave
        );
        let helped = Entry {
            helper: true,
            ..entry(6, IPS_ASSURED, Some(TCP_ESTABLISHED))
        };
        assert_eq!(up(helped), Verdict::Leave);
        assert_eq!(up(entry(132, IPS_ASSURED, None)), Verdict::Leave);
        // Destroyed: back to the kernel, whatever it was.
        assert_eq!(
            verdict(&Change::Destroyed(entry(17, IPS_ASSURED, None))),
            Verdict::Return
        );
    }
}
