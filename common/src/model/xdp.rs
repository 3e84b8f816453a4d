//! The reference model of `xwan_xdp_lan` and `xwan_tc_return` (see the specification in
//! [`super`]).

use std::collections::HashMap;

use super::packet::{Parsed, parse_ethernet, parse_ip};
use crate::csum::replace16;
use crate::hash::{connection_hash, source_hash};
use crate::plan::{Action, Gateway, GatewayKind, HashMode, Plan, RouterTable, Rule};
use crate::reason::*;
use crate::{
    FLOW_OFFLOADED, FLOW_REFRESH_NS, FLOW_SNAT, FlowKey, FlowPath, FlowValue, Moved, NO_ROUTER,
    ROUTER_SLOTS, ReturnValue, Snat, TUNNEL_TAG_PREFIX, kernel_tag, kernel_tag_gateway,
    may_offload, tunnel_tag, tunnel_tag_ifindex,
};

/// The program's verdict.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum XdpAction {
    Pass,
    Drop,
    Redirect,
}

/// What `xwan_xdp_lan` did to one packet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct XdpOutcome {
    pub action: XdpAction,
    /// One of `crate::reason::*`.
    pub reason: u32,
    /// The rule used (classified or taken from the flow table), if any.
    pub rule: Option<usize>,
    /// The gateway chosen (return route, sticky or hashed), even when forwarding then handed
    /// the packet to the kernel (TTL, MTU, gateway error).
    pub gateway: Option<u16>,
    /// The tunnel ifindex `xwan_tc_steer` redirects the passed frame to ([`Model::tc_steer`]
    /// of `frame`): `Some` only for a successful forward through a tunnel gateway.
    pub handoff: Option<u32>,
    /// The mark `xwan_tc_steer` gives the passed frame for the kernel path
    /// ([`Model::tc_steer`] of `frame`): `Some` only for a successful forward through a
    /// kernel-path gateway.
    pub mark: Option<u32>,
    /// The frame after the program (equal to the input when untouched).
    pub frame: Vec<u8>,
}

/// What `xwan_tc_steer` does with a frame XDP passed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TcSteer {
    /// `bpf_redirect` into the tunnel with this ifindex (source MAC `tunnel_tag`).
    Redirect(u32),
    /// The kernel path (destination MAC `kernel_tag`): `frame` is the frame with the
    /// interface's MAC back as its destination, host-bound for the kernel, and `mark` the
    /// gateway's mark in the marks' bits of `skb->mark` (0 when the gateway no longer takes
    /// the kernel path: the kernel then routes it as any packet). Continues (`TC_ACT_OK`).
    Kernel { mark: u32, frame: Vec<u8> },
    /// Continues into the kernel untouched (`TC_ACT_OK`).
    Continue,
}

/// The data plane's state: the plan it executes, the ruleset epoch, and the flow and
/// return-flow tables.
#[derive(Clone, Debug)]
pub struct Model {
    plan: Plan,
    epoch: u32,
    flows: HashMap<FlowKey, FlowValue>,
    returns: HashMap<FlowKey, ReturnValue>,
    /// `SNAT_MAP`: written only by the agent ([`Model::set_path`]).
    snat: HashMap<FlowKey, Snat>,
    /// `NEW_FLOWS_MAP`'s packet counts: flows given each gateway from a slot table.
    new_flows: HashMap<u16, u64>,
    /// What the kernel writes to `MOVED_MAP`, in order, until [`Model::take_moved`].
    moved: Vec<Moved>,
}

impl Model {
    /// A data plane running `plan`, whose ruleset epoch is `epoch`, with empty flow tables.
    pub fn new(plan: Plan, epoch: u32) -> Model {
        Model {
            plan,
            epoch,
            flows: HashMap::new(),
            returns: HashMap::new(),
            snat: HashMap::new(),
            new_flows: HashMap::new(),
            moved: Vec::new(),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// A new ruleset, with the kernel's new epoch. Flow entries are kept: their epoch no
    /// longer matches, so their packets are classified again.
    pub fn set_plan(&mut self, plan: Plan, epoch: u32) {
        self.plan = plan;
        self.epoch = epoch;
    }

    /// Replaces one router's table without a ruleset change (same epoch).
    ///
    /// # Panics
    /// When `router` is not a router of the plan.
    pub fn set_router(&mut self, router: u16, table: RouterTable) {
        let n = self.plan.routers.len();
        let slot = self
            .plan
            .routers
            .get_mut(router as usize)
            .unwrap_or_else(|| panic!("router {router} is not in the plan ({n} routers)"));
        *slot = table;
    }

    /// Changes a gateway's ready flag (return routes use it). Unknown gateways are ignored.
    pub fn set_gateway_ready(&mut self, gateway: u16, ready: bool) {
        if let Some(g) = self.plan.gateways.iter_mut().find(|g| g.id == gateway) {
            g.ready = ready;
        }
    }

    pub fn flows(&self) -> &HashMap<FlowKey, FlowValue> {
        &self.flows
    }

    /// What the agent does when conntrack confirms a flow ([`FlowPath::Fast`], with its
    /// source NAT if any) or forgets it ([`FlowPath::Kernel`]): the flow's `SNAT_MAP` entry
    /// written or removed, then its flags. `false` when the flow has no entry (an offload
    /// then writes nothing).
    pub fn set_path(&mut self, key: &FlowKey, path: FlowPath) -> bool {
        let flags = match path {
            FlowPath::Kernel => {
                self.snat.remove(key);
                0
            }
            FlowPath::Fast(_) if !self.flows.contains_key(key) => return false,
            FlowPath::Fast(None) => {
                self.snat.remove(key);
                FLOW_OFFLOADED
            }
            FlowPath::Fast(Some(s)) => {
                self.snat.insert(*key, s);
                FLOW_OFFLOADED | FLOW_SNAT
            }
        };
        let Some(e) = self.flows.get_mut(key) else {
            return false;
        };
        e.flags = e.flags & !(FLOW_OFFLOADED | FLOW_SNAT) | flags;
        true
    }

    /// The flows on the kernel path that changed gateway since the last call (the records
    /// of `MOVED_MAP`), oldest first.
    pub fn take_moved(&mut self) -> Vec<Moved> {
        std::mem::take(&mut self.moved)
    }

    pub fn returns(&self) -> &HashMap<FlowKey, ReturnValue> {
        &self.returns
    }

    /// The flows each gateway was given from a router's slot table (`NEW_FLOWS_MAP`'s
    /// packets), by gateway id.
    pub fn new_flows(&self) -> &HashMap<u16, u64> {
        &self.new_flows
    }

    /// Seeds the flow table with `key`'s entry as the kernel holds it (`xwan explain` runs
    /// the model on a live flow).
    pub fn insert_flow(&mut self, key: FlowKey, value: FlowValue) {
        self.flows.insert(key, value);
    }

    /// Seeds the return-route table likewise.
    pub fn insert_return(&mut self, key: FlowKey, value: ReturnValue) {
        self.returns.insert(key, value);
    }

    /// The first rule matching a packet that arrived on `ifindex` (spec step 9).
    pub fn classify(&self, p: &Parsed, ifindex: u32) -> Option<usize> {
        self.plan
            .rules
            .iter()
            .position(|r| rule_matches(r, p, ifindex))
    }

    fn gateway(&self, id: u16) -> Option<&Gateway> {
        self.plan.gateways.iter().find(|g| g.id == id)
    }

    /// The whole `xwan_xdp_lan` program (spec steps 1–12).
    pub fn xdp_lan(&mut self, ifindex: u32, frame: &[u8], now_ns: u64) -> XdpOutcome {
        let pass = |reason| XdpOutcome {
            action: XdpAction::Pass,
            reason,
            rule: None,
            gateway: None,
            handoff: None,
            mark: None,
            frame: frame.to_vec(),
        };

        // 1-3.
        let Some(iface) = self.plan.ifaces.iter().find(|i| i.ifindex == ifindex) else {
            return pass(PASS_NOT_CONFIGURED);
        };
        if frame.len() < 14 {
            return pass(PASS_MALFORMED);
        }
        if frame[6..8] == TUNNEL_TAG_PREFIX || frame[0..2] == TUNNEL_TAG_PREFIX {
            return XdpOutcome {
                action: XdpAction::Drop,
                ..pass(DROP_FORGED_TAG)
            };
        }
        if frame[0..6] != iface.mac {
            return pass(PASS_NOT_FOR_US);
        }
        // 4-6.
        let p = match parse_ethernet(frame) {
            Ok(p) => p,
            Err(reason) => return pass(reason),
        };
        // 7.
        let local = self.plan.local_addrs.contains(&p.dst);
        if !self.plan.links.is_empty() && local {
            return pass(PASS_LOCAL);
        }
        // 8. Return route.
        if !self.plan.links.is_empty()
            && let Some(ret) = self.returns.get(&p.flow_key(0))
            && let Ok(g) = u16::try_from(ret.gateway)
            && self.gateway(g).is_some_and(|gw| gw.ready)
        {
            return self.forward(ifindex, frame, &p, g, None, STEER_RETURN, None);
        }

        // 9. Flow / classification.
        let key = p.flow_key(ifindex);
        let idle = self.plan.flow_idle_ns;
        let live = self
            .flows
            .get(&key)
            .copied()
            .filter(|e| idle == 0 || now_ns.saturating_sub(e.last_seen_ns) <= idle);
        let from_flow = live
            .filter(|e| e.epoch == self.epoch && (e.rule as usize) < self.plan.rules.len())
            .map(|e| e.rule as usize);
        // 9. Local delivery, only where a packet is classified (see the spec).
        if from_flow.is_none() && local {
            return pass(PASS_LOCAL);
        }
        let Some(rule_idx) = from_flow.or_else(|| self.classify(&p, ifindex)) else {
            return pass(PASS_NO_MATCH);
        };
        let rule = &self.plan.rules[rule_idx];
        let set_dscp = rule.set_dscp;

        // 10.
        // The flow's `FLOW_OFFLOADED | FLOW_SNAT` bits, kept while it is offloaded.
        let mut offloaded = 0;
        let (outcome, router, gateway) = match rule.action {
            Action::Block => {
                let o = XdpOutcome {
                    action: XdpAction::Drop,
                    reason: DROP_RULE,
                    rule: Some(rule_idx),
                    gateway: None,
                    handoff: None,
                    mark: None,
                    frame: frame.to_vec(),
                };
                (o, NO_ROUTER, 0)
            }
            Action::Pass => {
                let mut out = frame.to_vec();
                if let Some(d) = set_dscp {
                    impose_dscp(&mut out, p.l3, p.family, d);
                }
                let o = XdpOutcome {
                    action: XdpAction::Pass,
                    reason: PASS_RULE,
                    rule: Some(rule_idx),
                    gateway: None,
                    handoff: None,
                    mark: None,
                    frame: out,
                };
                (o, NO_ROUTER, 0)
            }
            Action::Route(r) => {
                let table = self.plan.routers.get(r as usize);
                let sticky = live
                    .filter(|e| e.router == r && table.is_some_and(|t| t.keep.contains(&e.gateway)))
                    .map(|e| e.gateway);
                let g = match (sticky, table) {
                    (Some(g), _) => g,
                    (None, Some(t)) if !t.slots.is_empty() => {
                        let hash = match t.hash {
                            HashMode::Connection => {
                                connection_hash(&key.src, &key.dst, key.sport, key.dport, key.proto)
                            }
                            HashMode::Source => source_hash(&key.src),
                        };
                        let g = t.slots[hash as usize & (ROUTER_SLOTS - 1)];
                        *self.new_flows.entry(g).or_default() += 1;
                        g
                    }
                    // No slots (a router missing from the plan reads as an empty table with
                    // `on_failure = drop`, as a zeroed slot table does in the kernel).
                    (None, t) => {
                        let (action, reason) = if t.is_some_and(|t| t.on_failure_pass) {
                            (XdpAction::Pass, PASS_NO_GATEWAY)
                        } else {
                            (XdpAction::Drop, DROP_NO_GATEWAY)
                        };
                        return XdpOutcome {
                            action,
                            reason,
                            rule: Some(rule_idx),
                            gateway: None,
                            handoff: None,
                            mark: None,
                            frame: frame.to_vec(),
                        };
                    }
                };
                let success = if from_flow.is_some() {
                    STEER_FLOW
                } else {
                    STEER_CLASSIFIED
                };
                // Offloaded while it keeps its router and gateway.
                offloaded = live
                    .filter(|e| e.flags & FLOW_OFFLOADED != 0 && e.router == r && e.gateway == g)
                    .map(|e| e.flags & (FLOW_OFFLOADED | FLOW_SNAT))
                    .unwrap_or(0);
                let o = if offloaded != 0 {
                    let snat = (offloaded & FLOW_SNAT != 0).then(|| self.snat.get(&key));
                    self.forward_offloaded(ifindex, frame, &p, g, set_dscp, success, rule_idx, snat)
                } else {
                    self.forward(ifindex, frame, &p, g, set_dscp, success, Some(rule_idx))
                };
                (o, r, g)
            }
        };

        let value = FlowValue {
            last_seen_ns: now_ns,
            epoch: self.epoch,
            rule: rule_idx as u16,
            router,
            gateway,
            flags: offloaded,
            _pad: [0; 2],
        };
        // A kernel-path flow that changes gateway, whether its entry is live or idle: its
        // conntrack entry (and a NAT binding) was made for the old one.
        if let Some(e) = self.flows.get(&key)
            && self.plan.marks.is_some()
            && e.router != NO_ROUTER
            && router != NO_ROUTER
            && e.gateway != gateway
        {
            self.moved.push(Moved {
                key,
                from: e.gateway,
                to: gateway,
            });
        }
        let write = match self.flows.get(&key) {
            None => true,
            Some(e) => {
                e.epoch != value.epoch
                    || e.rule != value.rule
                    || e.router != value.router
                    || e.gateway != value.gateway
                    || e.flags != value.flags
                    || now_ns.saturating_sub(e.last_seen_ns) >= FLOW_REFRESH_NS
            }
        };
        if write {
            self.flows.insert(key, value);
        }
        outcome
    }

    /// Step 11 for a flow conntrack confirmed ([`FLOW_OFFLOADED`]) on kernel-path gateway
    /// `g`: forwarded as through an Ethernet gateway (TTL, MTU, VLAN tags, MACs) to the next
    /// hop of the packet's family, with reason `STEER_OFFLOAD`, when the gateway has that
    /// fast path and the packet may skip conntrack ([`may_offload`]); else the kernel path.
    /// `snat`: the flow has [`FLOW_SNAT`], with its `SNAT_MAP` entry if there is one; the
    /// fast path then also needs the entry and a TCP or UDP header with its checksum in the
    /// frame, and translates the source as conntrack would ([`translate_source`]).
    #[allow(clippy::too_many_arguments)]
    fn forward_offloaded(
        &self,
        ifindex: u32,
        frame: &[u8],
        p: &Parsed,
        g: u16,
        dscp: Option<u8>,
        success: u32,
        rule: usize,
        snat: Option<Option<&Snat>>,
    ) -> XdpOutcome {
        let snat_ok = match snat {
            None => true,
            Some(s) => s.is_some() && l4_checksum_at(p).is_some_and(|c| c + 2 <= frame.len()),
        };
        let fast = self.gateway(g).and_then(|gw| match gw.kind {
            GatewayKind::Kernel { offload: Some(o) }
                if snat_ok && may_offload(p.proto, p.tcp_flags, p.fragment) =>
            {
                let mac = if p.family == 4 { o.v4 } else { o.v6 };
                mac.map(|next_hop_mac| {
                    let kind = GatewayKind::Ethernet {
                        next_hop_mac,
                        egress_mac: o.egress_mac,
                    };
                    (gw, kind)
                })
            }
            _ => None,
        });
        match fast {
            Some((gw, kind)) => {
                let mut o =
                    self.forward_via(ifindex, frame, p, gw, kind, dscp, STEER_OFFLOAD, Some(rule));
                if let (XdpAction::Redirect, Some(Some(s))) = (o.action, snat) {
                    // The VLAN tags are gone: the headers start 14 bytes in.
                    let shift = p.l3 - 14;
                    translate_source(&mut o.frame, 14, p.l4 - shift, p, s);
                }
                o
            }
            None => self.forward(ifindex, frame, p, g, dscp, success, Some(rule)),
        }
    }

    /// Step 11: forward the packet through gateway `g`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        ifindex: u32,
        frame: &[u8],
        p: &Parsed,
        g: u16,
        dscp: Option<u8>,
        success: u32,
        rule: Option<usize>,
    ) -> XdpOutcome {
        let Some(gw) = self.gateway(g) else {
            return passed(frame, g, rule, PASS_GATEWAY_ERROR);
        };
        if gw.kind.is_kernel() {
            // The kernel forwards it: TTL, MTU, VLAN tags and MACs are its business. Only
            // the DSCP is imposed, and the hand-off written.
            let mut out = frame.to_vec();
            if let Some(d) = dscp {
                impose_dscp(&mut out, p.l3, p.family, d);
            }
            out[0..6].copy_from_slice(&kernel_tag(g));
            let mark = match self.tc_steer(ifindex, &out) {
                TcSteer::Kernel { mark, .. } => Some(mark),
                _ => None,
            };
            return XdpOutcome {
                action: XdpAction::Pass,
                reason: success,
                rule,
                gateway: Some(g),
                handoff: None,
                mark,
                frame: out,
            };
        }
        self.forward_via(ifindex, frame, p, gw, gw.kind, dscp, success, rule)
    }

    /// Forwards through gateway `gw` as a gateway of `kind` (Ethernet or tunnel) would.
    #[allow(clippy::too_many_arguments)]
    fn forward_via(
        &self,
        ifindex: u32,
        frame: &[u8],
        p: &Parsed,
        gw: &Gateway,
        kind: GatewayKind,
        dscp: Option<u8>,
        success: u32,
        rule: Option<usize>,
    ) -> XdpOutcome {
        let (g, pass) = (gw.id, |reason| passed(frame, gw.id, rule, reason));
        if p.ttl <= 1 {
            return pass(PASS_TTL);
        }
        if (frame.len() - p.l3) as u64 > gw.mtu as u64 {
            return pass(PASS_TOO_BIG);
        }

        // VLAN tags removed: MACs, then the IP EtherType (the 2 bytes before the IP header).
        let mut out = Vec::with_capacity(frame.len() - (p.l3 - 14));
        out.extend_from_slice(&frame[..12]);
        out.extend_from_slice(&frame[p.l3 - 2..]);
        let l3 = 14;
        if let Some(d) = dscp {
            impose_dscp(&mut out, l3, p.family, d);
        }
        decrement_ttl(&mut out, l3, p.family);

        let (action, handoff) = match kind {
            GatewayKind::Kernel { .. } => unreachable!("the caller's"),
            GatewayKind::Ethernet {
                next_hop_mac,
                egress_mac,
            } => {
                out[0..6].copy_from_slice(&next_hop_mac);
                out[6..12].copy_from_slice(&egress_mac);
                (XdpAction::Redirect, None)
            }
            GatewayKind::Tunnel => {
                out[6..12].copy_from_slice(&tunnel_tag(gw.ifindex));
                let handoff = match self.tc_steer(ifindex, &out) {
                    TcSteer::Redirect(i) => Some(i),
                    _ => None,
                };
                (XdpAction::Pass, handoff)
            }
        };
        XdpOutcome {
            action,
            reason: success,
            rule,
            gateway: Some(g),
            handoff,
            mark: None,
            frame: out,
        }
    }

    /// `xwan_tc_steer` on LAN interface `ifindex`, for a frame XDP passed.
    pub fn tc_steer(&self, ifindex: u32, frame: &[u8]) -> TcSteer {
        let (Some(dst), Some(src)) = (frame.get(0..6), frame.get(6..12)) else {
            return TcSteer::Continue;
        };
        if let Some(tunnel) = tunnel_tag_ifindex(src.try_into().expect("6 bytes")) {
            return TcSteer::Redirect(tunnel);
        }
        let Some(g) = kernel_tag_gateway(dst.try_into().expect("6 bytes")) else {
            return TcSteer::Continue;
        };
        // The interface's own MAC back in place of the tag; the mark only for a gateway that
        // takes the kernel path now (the plan may have changed since XDP tagged the frame).
        let Some(iface) = self.plan.ifaces.iter().find(|i| i.ifindex == ifindex) else {
            return TcSteer::Continue;
        };
        let mut out = frame.to_vec();
        out[0..6].copy_from_slice(&iface.mac);
        let kernel = self.gateway(g).is_some_and(|gw| gw.kind.is_kernel());
        let mark = match self.plan.marks {
            Some(m) if kernel => m.mark(g),
            _ => 0,
        };
        TcSteer::Kernel { mark, frame: out }
    }

    /// `xwan_tc_return` on link `ifindex`: the reply key learned, or `None` when nothing was
    /// learned (no link entry for `ifindex`, or the packet failed to parse).
    pub fn tc_return(&mut self, ifindex: u32, frame: &[u8], now_ns: u64) -> Option<FlowKey> {
        let link = self.plan.links.iter().find(|l| l.ifindex == ifindex)?;
        let p = if link.l2 {
            parse_ethernet(frame)
        } else {
            parse_ip(frame, 0)
        }
        .ok()?;
        let key = p.reply_key();
        let value = ReturnValue {
            last_seen_ns: now_ns,
            gateway: link.return_gateway as u32,
            _pad: 0,
        };
        let write = match self.returns.get(&key) {
            None => true,
            Some(e) => {
                e.gateway != value.gateway
                    || now_ns.saturating_sub(e.last_seen_ns) >= FLOW_REFRESH_NS
            }
        };
        if write {
            self.returns.insert(key, value);
        }
        Some(key)
    }
}

fn rule_matches(r: &Rule, p: &Parsed, ifindex: u32) -> bool {
    let port = |ranges: &[crate::plan::PortRange], port: Option<u16>| {
        ranges.is_empty() || port.is_some_and(|port| ranges.iter().any(|pr| pr.contains(port)))
    };
    let c = &r.criteria;
    (c.src.is_empty() || c.src.iter().any(|n| n.contains(p.src)))
        && (c.dst.is_empty() || c.dst.iter().any(|n| n.contains(p.dst)))
        && (c.protocols.is_empty() || c.protocols.contains(&p.proto))
        && (c.dscp.is_empty() || c.dscp.contains(&p.dscp))
        && (c.ifaces.is_empty() || c.ifaces.contains(&ifindex))
        && port(&c.src_ports, p.ports.map(|(s, _)| s))
        && port(&c.dst_ports, p.ports.map(|(_, d)| d))
}

fn be16(buf: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([buf[off], buf[off + 1]])
}

/// Replaces the 16-bit IPv4 header word at `l3 + word_off`, updating the checksum.
fn ipv4_set_word(buf: &mut [u8], l3: usize, word_off: usize, new: u16) {
    let old = be16(buf, l3 + word_off);
    let check = replace16(be16(buf, l3 + 10), old, new);
    buf[l3 + word_off..l3 + word_off + 2].copy_from_slice(&new.to_be_bytes());
    buf[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
}

/// Step 12: DSCP `dscp` imposed on the IP header at `l3`, ECN bits kept.
fn impose_dscp(buf: &mut [u8], l3: usize, family: u8, dscp: u8) {
    if family == 4 {
        let tos = dscp << 2 | (buf[l3 + 1] & 3);
        ipv4_set_word(buf, l3, 0, u16::from_be_bytes([buf[l3], tos]));
    } else {
        let tc = (buf[l3] & 0x0f) << 4 | buf[l3 + 1] >> 4;
        let tc = dscp << 2 | (tc & 3);
        buf[l3] = (buf[l3] & 0xf0) | tc >> 4;
        buf[l3 + 1] = (tc & 0x0f) << 4 | (buf[l3 + 1] & 0x0f);
    }
}

/// TTL / hop limit decremented (caller checked it is > 1).
fn decrement_ttl(buf: &mut [u8], l3: usize, family: u8) {
    if family == 4 {
        ipv4_set_word(
            buf,
            l3,
            8,
            u16::from_be_bytes([buf[l3 + 8] - 1, buf[l3 + 9]]),
        );
    } else {
        buf[l3 + 7] -= 1;
    }
}

/// The offset of the checksum of `p`'s TCP or UDP header, if it has one to translate (not
/// a fragment; ports read).
fn l4_checksum_at(p: &Parsed) -> Option<usize> {
    match p.proto {
        _ if p.fragment || p.ports.is_none() => None,
        6 => Some(p.l4 + 16),
        17 => Some(p.l4 + 6),
        _ => None,
    }
}

/// Source NAT as conntrack applies it (`masquerade`, `snat`): the source address and port
/// become `s`'s, the IPv4 header checksum and the TCP / UDP checksum (its pseudo-header
/// included) are updated incrementally, word by word in that order (the data plane's order:
/// one's complement has two zeros, and a different order could give the other one). A UDP
/// checksum of 0 (none) stays 0; an update that gives 0 writes `0xffff`, as the kernel does.
/// The caller checked [`l4_checksum_at`] lies in `buf` (after moving the headers to `l3`,
/// `l4`).
fn translate_source(buf: &mut [u8], l3: usize, l4: usize, p: &Parsed, s: &Snat) {
    let check_at = l4 + if p.proto == 6 { 16 } else { 6 };
    let mut check = be16(buf, check_at);
    let update = p.proto == 6 || check != 0;
    let (addr_at, words) = if p.family == 4 {
        (l3 + 12, 2)
    } else {
        (l3 + 8, 8)
    };
    let new: Vec<u8> = s.src.iter().flat_map(|w| w.to_ne_bytes()).collect();
    for i in 0..words {
        let at = addr_at + 2 * i;
        let (old, new) = (
            be16(buf, at),
            u16::from_be_bytes([new[2 * i], new[2 * i + 1]]),
        );
        if p.family == 4 {
            let ip = replace16(be16(buf, l3 + 10), old, new);
            buf[l3 + 10..l3 + 12].copy_from_slice(&ip.to_be_bytes());
        }
        check = replace16(check, old, new);
        buf[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }
    check = replace16(check, be16(buf, l4), s.sport);
    buf[l4..l4 + 2].copy_from_slice(&s.sport.to_be_bytes());
    if update {
        let check = if p.proto == 17 && check == 0 {
            0xffff
        } else {
            check
        };
        buf[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
    }
}

/// `frame` handed to the kernel untouched after gateway `g` was chosen, with `reason`.
fn passed(frame: &[u8], g: u16, rule: Option<usize>, reason: u32) -> XdpOutcome {
    XdpOutcome {
        action: XdpAction::Pass,
        reason,
        rule,
        gateway: Some(g),
        handoff: None,
        mark: None,
        frame: frame.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::packet::build::*;
    use super::*;
    use crate::csum::ipv4_header_sum;
    use crate::plan::{Iface, IpNet, Link, PortRange};

    const LAN: u32 = 2;
    const LAN_MAC: [u8; 6] = [0x02, 0x11, 0x11, 0x11, 0x11, 0x11];
    const HOST_MAC: [u8; 6] = [0x02, 0x22, 0x22, 0x22, 0x22, 0x22];
    const NH_MAC: [u8; 6] = [0x02, 0x33, 0x33, 0x33, 0x33, 0x33];
    const EG_MAC: [u8; 6] = [0x02, 0x44, 0x44, 0x44, 0x44, 0x44];
    const WAN_LINK: u32 = 30;
    const TUN_LINK: u32 = 31;
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;
    const EPOCH: u32 = 5;

    fn eth_gw(id: u16, ifindex: u32, mtu: u32) -> Gateway {
        Gateway {
            id,
            kind: GatewayKind::Ethernet {
                next_hop_mac: NH_MAC,
                egress_mac: EG_MAC,
            },
            ifindex,
            mtu,
            ready: true,
        }
    }

    fn tun_gw(id: u16, ifindex: u32, mtu: u32) -> Gateway {
        Gateway {
            id,
            kind: GatewayKind::Tunnel,
            ifindex,
            mtu,
            ready: true,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn rule(action: Action) -> Rule {
        Rule::any(action)
    }

    /// Gateways 1 (Ethernet, MTU 1500), 2 (tunnel, MTU 1400), 3 (Ethernet, MTU 1500);
    /// routers 0 = {1}, 1 = {2}, 2 = {3}; links: WAN_LINK (Ethernet) returns via 1,
    /// TUN_LINK (L3) via 2.
    fn base_plan(rules: Vec<Rule>) -> Plan {
        Plan {
            ifaces: vec![Iface {
                ifindex: LAN,
                mac: LAN_MAC,
            }],
            local_addrs: vec![
                "192.168.1.1".parse().unwrap(),
                "2001:db8::fe".parse().unwrap(),
            ],
            rules,
            routers: vec![
                RouterTable::single(1),
                RouterTable::single(2),
                RouterTable::single(3),
            ],
            gateways: vec![
                eth_gw(1, 10, 1500),
                tun_gw(2, 20, 1400),
                eth_gw(3, 11, 1500),
            ],
            links: vec![
                Link {
                    ifindex: WAN_LINK,
                    l2: true,
                    return_gateway: 1,
                },
                Link {
                    ifindex: TUN_LINK,
                    l2: false,
                    return_gateway: 2,
                },
            ],
            flow_idle_ns: 0,
            marks: None,
        }
    }

    /// [`base_plan`] with gateway 2 on the kernel path, marks in bits 16..28.
    fn kernel_plan(rules: Vec<Rule>) -> Plan {
        let mut p = base_plan(rules);
        p.gateways[1].kind = GatewayKind::KERNEL;
        p.marks = crate::MarkLayout::of_mask(0x0fff_0000, 1024);
        p
    }

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Ip4 {
        Ip4::new(src, dst, TCP, l4(sport, dport))
    }

    fn lan4(tags: &[(u16, u16)], ip: &Ip4) -> Vec<u8> {
        eth(LAN_MAC, HOST_MAC, tags, ETH_P_IP, &ip.bytes())
    }

    fn lan6(tags: &[(u16, u16)], ip: &Ip6) -> Vec<u8> {
        eth(LAN_MAC, HOST_MAC, tags, ETH_P_IPV6, &ip.bytes())
    }

    fn host_pkt() -> Vec<u8> {
        lan4(&[], &tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40000, 443))
    }

    fn parsed(frame: &[u8]) -> Parsed {
        parse_ethernet(frame).unwrap()
    }

    fn assert_untouched(o: &XdpOutcome, frame: &[u8]) {
        assert_eq!(o.frame, frame);
        assert_eq!(o.handoff, None);
    }

    // ---- early reasons -------------------------------------------------------------------

    #[test]
    fn not_configured_short_and_not_for_us() {
        let mut m = Model::new(base_plan(vec![rule(Action::Route(0))]), EPOCH);
        let f = host_pkt();
        let o = m.xdp_lan(99, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway),
            (XdpAction::Pass, PASS_NOT_CONFIGURED, None, None)
        );
        assert_untouched(&o, &f);
        // Not configured wins over a short frame.
        assert_eq!(m.xdp_lan(99, &f[..5], 0).reason, PASS_NOT_CONFIGURED);
        let o = m.xdp_lan(LAN, &f[..13], 0);
        assert_eq!((o.action, o.reason), (XdpAction::Pass, PASS_MALFORMED));
        assert_untouched(&o, &f[..13]);
        // Another MAC, broadcast MAC: not for us, even if the rest is garbage.
        for mac in [HOST_MAC, [0xff; 6]] {
            let mut g = f.clone();
            g[0..6].copy_from_slice(&mac);
            assert_eq!(m.xdp_lan(LAN, &g, 0).reason, PASS_NOT_FOR_US);
            assert_eq!(m.xdp_lan(LAN, &g[..14], 0).reason, PASS_NOT_FOR_US);
        }
        // MAC right, IP header missing.
        assert_eq!(m.xdp_lan(LAN, &f[..14], 0).reason, PASS_MALFORMED);
        assert!(m.flows().is_empty());
    }

    #[test]
    fn a_forged_tunnel_tag_is_dropped_before_anything_else() {
        let mut m = Model::new(base_plan(vec![rule(Action::Route(1))]), EPOCH);
        let ip = tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40000, 443);
        // Whatever the destination MAC or the rest: a LAN host must not reach a tunnel
        // without classification by writing the tag xwan_tc_steer trusts.
        for dst in [LAN_MAC, HOST_MAC, [0xff; 6]] {
            let f = eth(dst, tunnel_tag(20), &[], ETH_P_IP, &ip.bytes());
            for g in [&f[..], &f[..14]] {
                let o = m.xdp_lan(LAN, g, 0);
                assert_eq!(
                    (o.action, o.reason, o.rule, o.handoff),
                    (XdpAction::Drop, DROP_FORGED_TAG, None, None)
                );
                assert_eq!(o.frame, g);
            }
        }
        // The prefix alone is enough; one byte off is an ordinary source.
        let mut other = tunnel_tag(20);
        other[1] ^= 1;
        let f = eth(LAN_MAC, other, &[], ETH_P_IP, &ip.bytes());
        assert_eq!(m.xdp_lan(LAN, &f, 0).reason, STEER_CLASSIFIED);
        assert!(
            m.xdp_lan(
                99,
                &eth(LAN_MAC, tunnel_tag(20), &[], ETH_P_IP, &ip.bytes()),
                0
            )
            .reason
                == PASS_NOT_CONFIGURED
        );
    }

    #[test]
    fn tc_steer_follows_the_tag_only() {
        let m = Model::new(kernel_plan(vec![]), EPOCH);
        assert_eq!(
            m.tc_steer(LAN, &eth(LAN_MAC, tunnel_tag(7), &[], ETH_P_IP, &[0; 20])),
            TcSteer::Redirect(7)
        );
        assert_eq!(
            m.tc_steer(LAN, &eth(LAN_MAC, tunnel_tag(u32::MAX), &[], ETH_P_IP, &[])),
            TcSteer::Redirect(u32::MAX)
        );
        assert_eq!(
            m.tc_steer(LAN, &eth(LAN_MAC, HOST_MAC, &[], ETH_P_IP, &[0; 20])),
            TcSteer::Continue
        );
        assert_eq!(m.tc_steer(LAN, &tunnel_tag(7)[..5]), TcSteer::Continue);
        // The kernel path: the interface's MAC back, the gateway's mark (gateway 2 is id 2:
        // mark (2 + 1) << 16); none for a gateway not on that path, nor on another interface.
        let tagged = |g| eth(kernel_tag(g), HOST_MAC, &[], ETH_P_IP, &[0; 20]);
        let restored = eth(LAN_MAC, HOST_MAC, &[], ETH_P_IP, &[0; 20]);
        assert_eq!(
            m.tc_steer(LAN, &tagged(2)),
            TcSteer::Kernel {
                mark: 0x3_0000,
                frame: restored.clone()
            }
        );
        assert_eq!(
            m.tc_steer(LAN, &tagged(1)),
            TcSteer::Kernel {
                mark: 0,
                frame: restored
            }
        );
        assert_eq!(m.tc_steer(99, &tagged(2)), TcSteer::Continue);
    }

    #[test]
    fn a_kernel_path_gateway_gets_the_tag_and_nothing_else() {
        let mut r = rule(Action::Route(1));
        r.set_dscp = Some(46);
        let mut m = Model::new(kernel_plan(vec![r]), EPOCH);
        // TTL 1, a VLAN tag and a frame above the gateway's MTU: all the kernel's business.
        let mut ip = tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40000, 443);
        ip.ttl = 1;
        let f = lan4(&[(0x8100, 5)], &ip);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.gateway, o.handoff, o.mark),
            (
                XdpAction::Pass,
                STEER_CLASSIFIED,
                Some(2),
                None,
                Some(0x3_0000)
            )
        );
        let mut expected = f.clone();
        expected[0..6].copy_from_slice(&kernel_tag(2));
        let l3 = 18;
        impose_dscp(&mut expected, l3, 4, 46);
        assert_eq!(o.frame, expected);
        // The flow sticks as any other.
        let o = m.xdp_lan(LAN, &f, 1);
        assert_eq!((o.reason, o.mark), (STEER_FLOW, Some(0x3_0000)));
        // A LAN host cannot write the kernel tag itself.
        let forged = eth(kernel_tag(2), HOST_MAC, &[], ETH_P_IP, &ip.bytes());
        assert_eq!(
            (
                m.xdp_lan(LAN, &forged, 0).action,
                m.xdp_lan(LAN, &forged, 0).reason
            ),
            (XdpAction::Drop, DROP_FORGED_TAG)
        );
    }

    #[test]
    fn parse_reasons_pass_through() {
        let mut m = Model::new(base_plan(vec![rule(Action::Route(0))]), EPOCH);
        let arp = eth(LAN_MAC, HOST_MAC, &[], 0x0806, &[0; 28]);
        assert_eq!(m.xdp_lan(LAN, &arp, 0).reason, PASS_NOT_IP);
        let mc = lan4(&[], &tcp4([192, 168, 1, 10], [239, 1, 1, 1], 1, 2));
        let o = m.xdp_lan(LAN, &mc, 0);
        assert_eq!((o.action, o.reason), (XdpAction::Pass, PASS_NOT_FOR_US));
        let bc = lan4(&[], &Ip4::new([192, 168, 1, 10], [255; 4], UDP, l4(68, 67)));
        assert_eq!(m.xdp_lan(LAN, &bc, 0).reason, PASS_NOT_FOR_US);
        let ll = lan6(
            &[],
            &Ip6::new(v6("2001:db8::10"), v6("fe80::1"), UDP, l4(1, 2)),
        );
        assert_eq!(m.xdp_lan(LAN, &ll, 0).reason, PASS_NOT_FOR_US);
        let mc6 = lan6(
            &[],
            &Ip6::new(v6("2001:db8::10"), v6("ff02::16"), 0, l4(1, 2)),
        );
        assert_eq!(m.xdp_lan(LAN, &mc6, 0).reason, PASS_NOT_FOR_US);
        let three = lan4(
            &[(0x8100, 1), (0x8100, 2), (0x8100, 3)],
            &tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2),
        );
        assert_eq!(m.xdp_lan(LAN, &three, 0).reason, PASS_NOT_IP);
        let short_l4 = lan4(
            &[],
            &Ip4::new([192, 168, 1, 10], [8, 8, 8, 8], UDP, vec![0, 53]),
        );
        assert_eq!(m.xdp_lan(LAN, &short_l4, 0).reason, PASS_MALFORMED);
        assert!(m.flows().is_empty());
    }

    #[test]
    fn local_addresses() {
        let mut m = Model::new(base_plan(vec![rule(Action::Block)]), EPOCH);
        let f = lan4(&[], &tcp4([192, 168, 1, 10], [192, 168, 1, 1], 40000, 22));
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule),
            (XdpAction::Pass, PASS_LOCAL, None)
        );
        let f = lan6(
            &[],
            &Ip6::new(v6("2001:db8::10"), v6("2001:db8::fe"), TCP, l4(1, 22)),
        );
        assert_eq!(m.xdp_lan(LAN, &f, 0).reason, PASS_LOCAL);
        // Local is checked before return routes: a return entry exists for this packet.
        let wan = eth(
            LAN_MAC,
            NH_MAC,
            &[],
            ETH_P_IP,
            &tcp4([192, 168, 1, 1], [10, 0, 0, 5], 22, 50000).bytes(),
        );
        let key = m.tc_return(WAN_LINK, &wan, 0).unwrap();
        let f = lan4(&[], &tcp4([10, 0, 0, 5], [192, 168, 1, 1], 50000, 22));
        assert_eq!(parsed(&f).flow_key(0), key);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!((o.reason, o.gateway), (PASS_LOCAL, None));
        assert_untouched(&o, &f);
        // A local source address does not matter.
        let f = lan4(&[], &tcp4([192, 168, 1, 1], [8, 8, 8, 8], 40000, 443));
        assert_eq!(m.xdp_lan(LAN, &f, 0).reason, DROP_RULE);
        // Other addresses are not local.
        let f = lan4(&[], &tcp4([192, 168, 1, 10], [192, 168, 1, 2], 40000, 22));
        assert_eq!(m.xdp_lan(LAN, &f, 0).reason, DROP_RULE);
    }

    // ---- classification ------------------------------------------------------------------

    #[test]
    fn no_match_writes_no_flow() {
        let mut r = rule(Action::Block);
        r.criteria.dst = vec![net("10.0.0.0/8")];
        let mut m = Model::new(base_plan(vec![r]), EPOCH);
        let f = host_pkt();
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway),
            (XdpAction::Pass, PASS_NO_MATCH, None, None)
        );
        assert_untouched(&o, &f);
        assert!(m.flows().is_empty());
        let empty = Model::new(base_plan(vec![]), EPOCH);
        assert_eq!(empty.classify(&parsed(&f), LAN), None);
    }

    #[test]
    fn first_match_wins() {
        let mut r0 = rule(Action::Block);
        r0.criteria.dst = vec![net("10.1.0.0/16"), net("10.3.0.0/16")];
        let mut r1 = rule(Action::Pass);
        r1.criteria.protocols = vec![UDP];
        let r2 = rule(Action::Route(0));
        let mut r3 = rule(Action::Block); // shadowed
        r3.criteria.protocols = vec![TCP];
        let m = Model::new(base_plan(vec![r0, r1, r2, r3]), EPOCH);
        let p = |ip: Ip4| parsed(&lan4(&[], &ip));
        assert_eq!(
            m.classify(&p(tcp4([1, 1, 1, 1], [10, 1, 2, 3], 1, 2)), LAN),
            Some(0)
        );
        assert_eq!(
            m.classify(
                &p(Ip4::new([1, 1, 1, 1], [10, 3, 0, 1], UDP, l4(1, 2))),
                LAN
            ),
            Some(0)
        );
        assert_eq!(
            m.classify(
                &p(Ip4::new([1, 1, 1, 1], [10, 2, 0, 1], UDP, l4(1, 2))),
                LAN
            ),
            Some(1)
        );
        assert_eq!(
            m.classify(&p(tcp4([1, 1, 1, 1], [10, 2, 0, 1], 1, 2)), LAN),
            Some(2)
        );
    }

    #[test]
    fn criteria() {
        let mut src = rule(Action::Pass);
        src.criteria.src = vec![net("192.168.1.0/25")];
        let mut dscp = rule(Action::Pass);
        dscp.criteria.dscp = vec![46, 34];
        let mut iface = rule(Action::Pass);
        iface.criteria.ifaces = vec![7, 8];
        let mut ports = rule(Action::Pass);
        ports.criteria.src_ports = vec![PortRange::new(1000, 2000).unwrap(), PortRange::single(5)];
        ports.criteria.dst_ports = vec![PortRange::single(53)];
        let mut all = rule(Action::Pass);
        all.criteria.src = vec![net("10.0.0.0/8")];
        all.criteria.dst = vec![net("10.9.0.0/16")];
        all.criteria.protocols = vec![UDP];
        all.criteria.dscp = vec![10];
        all.criteria.ifaces = vec![LAN];
        all.criteria.src_ports = vec![PortRange::new(0, 65535).unwrap()];
        all.criteria.dst_ports = vec![PortRange::new(0, 65535).unwrap()];
        let m = Model::new(base_plan(vec![src, dscp, iface, ports, all]), EPOCH);
        let cls = |ip: Ip4, ifindex| m.classify(&parsed(&lan4(&[], &ip)), ifindex);

        assert_eq!(
            cls(tcp4([192, 168, 1, 127], [1, 1, 1, 1], 1, 2), LAN),
            Some(0)
        );
        assert_eq!(cls(tcp4([192, 168, 1, 128], [1, 1, 1, 1], 1, 2), LAN), None);
        let mut ip = tcp4([192, 168, 1, 128], [1, 1, 1, 1], 1, 2);
        ip.tos = 34 << 2 | 3;
        assert_eq!(cls(ip.clone(), LAN), Some(1));
        ip.tos = 35 << 2;
        assert_eq!(cls(ip, LAN), None);
        assert_eq!(
            cls(tcp4([192, 168, 1, 128], [1, 1, 1, 1], 1, 2), 8),
            Some(2)
        );
        let udp = |s, d| Ip4::new([172, 16, 0, 1], [1, 1, 1, 1], UDP, l4(s, d));
        assert_eq!(cls(udp(1000, 53), LAN), Some(3));
        assert_eq!(cls(udp(2000, 53), LAN), Some(3));
        assert_eq!(cls(udp(5, 53), LAN), Some(3));
        assert_eq!(cls(udp(2001, 53), LAN), None);
        assert_eq!(cls(udp(1500, 54), LAN), None);

        // Every criterion at once, each one broken in turn.
        let mut ok = Ip4::new([10, 1, 1, 1], [10, 9, 1, 1], UDP, l4(9, 9));
        ok.tos = 10 << 2;
        assert_eq!(cls(ok.clone(), LAN), Some(4));
        assert_eq!(cls(ok.clone(), 3), None);
        let mut b = ok.clone();
        b.src = [11, 1, 1, 1];
        assert_eq!(cls(b, LAN), None);
        let mut b = ok.clone();
        b.dst = [10, 8, 1, 1];
        assert_eq!(cls(b, LAN), None);
        let mut b = ok.clone();
        b.tos = 11 << 2;
        assert_eq!(cls(b, LAN), None);
        let mut b = ok.clone();
        b.proto = TCP;
        assert_eq!(cls(b, LAN), None);
        // A port-less packet (non-first fragment) never satisfies a port criterion, even 0-65535.
        let mut b = ok.clone();
        b.frag = 10;
        b.payload = vec![];
        assert_eq!(cls(b, LAN), None);
    }

    #[test]
    fn port_criterion_needs_ports() {
        let mut r = rule(Action::Block);
        r.criteria.dst_ports = vec![PortRange::new(0, 65535).unwrap()];
        let mut r2 = rule(Action::Block);
        r2.criteria.src_ports = vec![PortRange::single(0)];
        let any = rule(Action::Pass);
        let m = Model::new(base_plan(vec![r, r2, any]), EPOCH);
        let icmp = parsed(&lan4(
            &[],
            &Ip4::new([1, 1, 1, 1], [2, 2, 2, 2], ICMP, vec![8, 0, 0, 0]),
        ));
        assert_eq!(icmp.ports, None);
        assert_eq!(m.classify(&icmp, LAN), Some(2));
        let tcp = parsed(&lan4(&[], &tcp4([1, 1, 1, 1], [2, 2, 2, 2], 0, 0)));
        assert_eq!(m.classify(&tcp, LAN), Some(0));
        let frag6 = parsed(&lan6(
            &[],
            &Ip6::new(
                v6("2001:db8::1"),
                v6("2001:db8::2"),
                44,
                frag6(TCP, 8, false),
            ),
        ));
        assert_eq!(m.classify(&frag6, LAN), Some(2));
    }

    #[test]
    fn families_never_cross() {
        let mut v4 = rule(Action::Block);
        v4.criteria.src = vec![net("0.0.0.0/0")];
        let mut v4d = rule(Action::Block);
        v4d.criteria.dst = vec![net("0.0.0.0/0")];
        let mut v6r = rule(Action::Pass);
        v6r.criteria.src = vec![net("::/0")];
        let m = Model::new(base_plan(vec![v4, v4d, v6r]), EPOCH);
        let p6 = parsed(&lan6(
            &[],
            &Ip6::new(v6("2001:db8::1"), v6("2001:db8::2"), TCP, l4(1, 2)),
        ));
        assert_eq!(m.classify(&p6, LAN), Some(2));
        // The IPv4-mapped form of an IPv4 source is still IPv6.
        let p6m = parsed(&lan6(
            &[],
            &Ip6::new(v6("::ffff:10.0.0.1"), v6("2001:db8::2"), TCP, l4(1, 2)),
        ));
        assert_eq!(m.classify(&p6m, LAN), Some(2));
        let p4 = parsed(&host_pkt());
        assert_eq!(m.classify(&p4, LAN), Some(0));
        let only6 = Model::new(base_plan(vec![m.plan().rules[2].clone()]), EPOCH);
        assert_eq!(only6.classify(&p4, LAN), None);
    }

    // ---- actions -------------------------------------------------------------------------

    #[test]
    fn block_writes_flow() {
        let mut m = Model::new(base_plan(vec![rule(Action::Block)]), EPOCH);
        let f = host_pkt();
        let o = m.xdp_lan(LAN, &f, 123);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway),
            (XdpAction::Drop, DROP_RULE, Some(0), None)
        );
        assert_untouched(&o, &f);
        let key = parsed(&f).flow_key(LAN);
        assert_eq!(
            m.flows()[&key],
            FlowValue {
                last_seen_ns: 123,
                epoch: EPOCH,
                rule: 0,
                router: 0xffff,
                gateway: 0,
                flags: 0,
                _pad: [0; 2]
            }
        );
        assert_eq!(m.flows().len(), 1);
    }

    #[test]
    fn pass_rule_dscp_only() {
        let mut r = rule(Action::Pass);
        r.set_dscp = Some(46);
        let mut m = Model::new(base_plan(vec![r, rule(Action::Pass)]), EPOCH);
        let mut ip = tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40000, 443);
        ip.tos = 0x03; // ECN CE
        let f = lan4(&[(0x8100, 42)], &ip);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway, o.handoff),
            (XdpAction::Pass, PASS_RULE, Some(0), None, None)
        );
        let mut want_ip = ip.clone();
        want_ip.tos = 46 << 2 | 3;
        let want = lan4(&[(0x8100, 42)], &want_ip); // tag kept, TTL kept
        assert_eq!(o.frame, want);
        assert_eq!(ipv4_header_sum(&o.frame[18..38]), 0);
        assert_eq!(m.flows()[&parsed(&f).flow_key(LAN)].router, 0xffff);

        // Without set_dscp: untouched.
        let mut m = Model::new(base_plan(vec![rule(Action::Pass)]), EPOCH);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!((o.reason, o.rule), (PASS_RULE, Some(0)));
        assert_untouched(&o, &f);

        // IPv6 traffic class: ECN kept, flow label nibble kept.
        let mut r = rule(Action::Pass);
        r.set_dscp = Some(10);
        let mut m = Model::new(base_plan(vec![r]), EPOCH);
        let mut ip6 = Ip6::new(v6("2001:db8::10"), v6("2001:db8:9::1"), UDP, l4(1, 2));
        ip6.tc = 0xb9;
        let f = lan6(&[], &ip6);
        let o = m.xdp_lan(LAN, &f, 0);
        ip6.tc = 10 << 2 | 1;
        assert_eq!(o.frame, lan6(&[], &ip6));
        assert_eq!(&o.frame[14..16], &[0x62, 0x9a]);
    }

    #[test]
    fn route_ethernet_rewrites() {
        let mut m = Model::new(base_plan(vec![rule(Action::Route(0))]), EPOCH);
        let mut ip = tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40000, 443);
        ip.tos = 0x21;
        ip.ttl = 64;
        ip.options = vec![1, 1, 1, 0];
        let f = lan4(&[(0x88a8, 7), (0x8100, 42)], &ip);
        let o = m.xdp_lan(LAN, &f, 1_000);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway, o.handoff),
            (
                XdpAction::Redirect,
                STEER_CLASSIFIED,
                Some(0),
                Some(1),
                None
            )
        );
        let mut want_ip = ip.clone();
        want_ip.ttl = 63;
        let want = eth(NH_MAC, EG_MAC, &[], ETH_P_IP, &want_ip.bytes());
        assert_eq!(o.frame, want);
        assert_eq!(ipv4_header_sum(&o.frame[14..38]), 0);
        let key = parsed(&f).flow_key(LAN);
        assert_eq!(
            m.flows()[&key],
            FlowValue {
                last_seen_ns: 1_000,
                epoch: EPOCH,
                rule: 0,
                router: 0,
                gateway: 1,
                flags: 0,
                _pad: [0; 2]
            }
        );
        // Next packet: decided by the flow entry.
        let o2 = m.xdp_lan(LAN, &f, 2_000);
        assert_eq!(
            (o2.action, o2.reason, o2.rule, o2.gateway),
            (XdpAction::Redirect, STEER_FLOW, Some(0), Some(1))
        );
        assert_eq!(o2.frame, want);
        // Not refreshed before FLOW_REFRESH_NS, refreshed at it.
        assert_eq!(m.flows()[&key].last_seen_ns, 1_000);
        m.xdp_lan(LAN, &f, 1_000 + FLOW_REFRESH_NS - 1);
        assert_eq!(m.flows()[&key].last_seen_ns, 1_000);
        m.xdp_lan(LAN, &f, 1_000 + FLOW_REFRESH_NS);
        assert_eq!(m.flows()[&key].last_seen_ns, 1_000 + FLOW_REFRESH_NS);
        // The same connection from another interface is another flow (interface not configured
        // here, so only the key matters).
        assert_ne!(parsed(&f).flow_key(LAN), parsed(&f).flow_key(LAN + 1));
    }

    #[test]
    fn route_with_dscp_v4_and_v6() {
        let mut r = rule(Action::Route(0));
        r.set_dscp = Some(46);
        let mut m = Model::new(base_plan(vec![r]), EPOCH);
        let mut ip = Ip4::new([192, 168, 1, 10], [8, 8, 4, 4], UDP, l4(5000, 53));
        ip.tos = 0x02; // ECT(0)
        ip.ttl = 2;
        let o = m.xdp_lan(LAN, &lan4(&[(0x8100, 3)], &ip), 0);
        assert_eq!((o.reason, o.gateway), (STEER_CLASSIFIED, Some(1)));
        let mut want = ip.clone();
        want.tos = 46 << 2 | 2;
        want.ttl = 1;
        assert_eq!(o.frame, eth(NH_MAC, EG_MAC, &[], ETH_P_IP, &want.bytes()));
        assert_eq!(ipv4_header_sum(&o.frame[14..34]), 0);
        assert_eq!(o.frame[15], 0xba);
        assert_eq!(o.frame[22], 1);

        let mut ip6 = Ip6::new(v6("2001:db8::10"), v6("2001:db8:9::1"), TCP, l4(1, 2));
        ip6.tc = 0x03;
        ip6.hop = 255;
        let o = m.xdp_lan(LAN, &lan6(&[(0x8100, 3), (0x8100, 4)], &ip6), 0);
        assert_eq!(
            (o.action, o.reason, o.gateway),
            (XdpAction::Redirect, STEER_CLASSIFIED, Some(1))
        );
        ip6.tc = 46 << 2 | 3;
        ip6.hop = 254;
        assert_eq!(o.frame, eth(NH_MAC, EG_MAC, &[], ETH_P_IPV6, &ip6.bytes()));
    }

    #[test]
    fn route_tunnel_tag() {
        let mut m = Model::new(base_plan(vec![rule(Action::Route(1))]), EPOCH);
        let ip = tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40000, 443);
        let f = lan4(&[(0x8100, 42)], &ip);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway, o.handoff),
            (
                XdpAction::Pass,
                STEER_CLASSIFIED,
                Some(0),
                Some(2),
                Some(20)
            )
        );
        let mut want = ip.clone();
        want.ttl = 63;
        // The VLAN tag goes; the source MAC carries the tunnel, the destination is kept.
        assert_eq!(
            o.frame,
            eth(LAN_MAC, tunnel_tag(20), &[], ETH_P_IP, &want.bytes())
        );
        assert_eq!(ipv4_header_sum(&o.frame[14..34]), 0);
    }

    #[test]
    fn forward_failures_leave_frame() {
        // TTL 1 and 0.
        let mut m = Model::new(base_plan(vec![rule(Action::Route(0))]), EPOCH);
        for ttl in [0, 1] {
            let mut ip = tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40000 + ttl as u16, 443);
            ip.ttl = ttl;
            let f = lan4(&[(0x8100, 1)], &ip);
            let o = m.xdp_lan(LAN, &f, 0);
            assert_eq!(
                (o.action, o.reason, o.rule, o.gateway),
                (XdpAction::Pass, PASS_TTL, Some(0), Some(1))
            );
            assert_untouched(&o, &f);
            // The decision is still recorded.
            assert_eq!(m.flows()[&parsed(&f).flow_key(LAN)].gateway, 1);
        }
        let mut ip6 = Ip6::new(v6("2001:db8::10"), v6("2001:db8:9::1"), TCP, l4(1, 2));
        ip6.hop = 1;
        assert_eq!(m.xdp_lan(LAN, &lan6(&[], &ip6), 0).reason, PASS_TTL);

        // MTU: bytes from the IP header on (VLAN tags and Ethernet header excluded).
        let mut m = Model::new(base_plan(vec![rule(Action::Route(1))]), EPOCH); // MTU 1400
        let sized = |len: usize, sport| {
            let mut payload = l4(sport, 443);
            payload.resize(len - 20, 0x5a);
            lan4(
                &[(0x8100, 1), (0x8100, 2)],
                &Ip4::new([192, 168, 1, 10], [8, 8, 8, 8], TCP, payload),
            )
        };
        let f = sized(1400, 1);
        assert_eq!(f.len(), 1400 + 22);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!((o.reason, o.gateway), (STEER_CLASSIFIED, Some(2)));
        assert_eq!(o.frame.len(), 1414);
        let f = sized(1401, 2);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.gateway, o.handoff),
            (XdpAction::Pass, PASS_TOO_BIG, Some(2), None)
        );
        assert_untouched(&o, &f);
        // TTL is checked before the MTU.
        let mut ip = Ip4::new([192, 168, 1, 10], [8, 8, 8, 8], TCP, l4(3, 443));
        ip.payload.resize(3000, 0);
        ip.ttl = 1;
        assert_eq!(m.xdp_lan(LAN, &lan4(&[], &ip), 0).reason, PASS_TTL);

        // Gateway missing from the plan (checked first).
        let mut plan = base_plan(vec![rule(Action::Route(0))]);
        plan.routers[0] = RouterTable::single(9);
        let mut m = Model::new(plan, EPOCH);
        let mut ip = tcp4([192, 168, 1, 10], [8, 8, 8, 8], 1, 2);
        ip.ttl = 1;
        let f = lan4(&[], &ip);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway),
            (XdpAction::Pass, PASS_GATEWAY_ERROR, Some(0), Some(9))
        );
        assert_untouched(&o, &f);
    }

    #[test]
    fn no_gateway_on_failure() {
        let empty = |pass| RouterTable {
            slots: vec![],
            keep: vec![],
            hash: HashMode::Connection,
            on_failure_pass: pass,
        };
        let mut plan = base_plan(vec![rule(Action::Route(0))]);
        plan.routers[0] = empty(true);
        let mut m = Model::new(plan, EPOCH);
        let f = host_pkt();
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway),
            (XdpAction::Pass, PASS_NO_GATEWAY, Some(0), None)
        );
        assert_untouched(&o, &f);
        assert!(m.flows().is_empty());
        m.set_router(0, empty(false));
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway),
            (XdpAction::Drop, DROP_NO_GATEWAY, Some(0), None)
        );
        assert_untouched(&o, &f);
        assert!(m.flows().is_empty());
    }

    // ---- flows, stickiness, hashing ------------------------------------------------------

    fn table(slots: Vec<u16>, keep: Vec<u16>, hash: HashMode) -> RouterTable {
        RouterTable {
            slots,
            keep,
            hash,
            on_failure_pass: false,
        }
    }

    #[test]
    fn sticky_flows_and_keep() {
        let mut m = Model::new(base_plan(vec![rule(Action::Route(0))]), EPOCH);
        let f = host_pkt();
        let key = parsed(&f).flow_key(LAN);
        assert_eq!(m.xdp_lan(LAN, &f, 0).gateway, Some(1));
        // Router now sends everything to 3 but keeps 1: the flow stays.
        m.set_router(
            0,
            table(vec![3; ROUTER_SLOTS], vec![1, 3], HashMode::Connection),
        );
        let o = m.xdp_lan(LAN, &f, 10);
        assert_eq!((o.reason, o.gateway), (STEER_FLOW, Some(1)));
        // A new connection takes 3.
        let g = lan4(&[], &tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40001, 443));
        assert_eq!(m.xdp_lan(LAN, &g, 10).gateway, Some(3));
        // 1 no longer kept: the flow moves (still decided from the flow entry's rule).
        m.set_router(
            0,
            table(vec![3; ROUTER_SLOTS], vec![3], HashMode::Connection),
        );
        let o = m.xdp_lan(LAN, &f, 20);
        assert_eq!(
            (o.reason, o.gateway, o.frame[0..6].to_vec()),
            (STEER_FLOW, Some(3), NH_MAC.to_vec())
        );
        assert_eq!(
            m.flows()[&key],
            FlowValue {
                last_seen_ns: 20,
                epoch: EPOCH,
                rule: 0,
                router: 0,
                gateway: 3,
                flags: 0,
                _pad: [0; 2]
            }
        );
        // Kept again: stays on 3 even though the slots say 1.
        m.set_router(
            0,
            table(vec![1; ROUTER_SLOTS], vec![1, 3], HashMode::Connection),
        );
        assert_eq!(m.xdp_lan(LAN, &f, 30).gateway, Some(3));
        // Sticky even when the slots are empty.
        m.set_router(0, table(vec![], vec![3], HashMode::Connection));
        assert_eq!(m.xdp_lan(LAN, &f, 40).reason, STEER_FLOW);
    }

    #[test]
    fn ruleset_change_reclassifies() {
        let mut m = Model::new(base_plan(vec![rule(Action::Route(0))]), EPOCH);
        let f = host_pkt();
        let key = parsed(&f).flow_key(LAN);
        m.xdp_lan(LAN, &f, 0);
        // New ruleset, router 0 now prefers 3 but keeps 1: classified again, still sticky.
        let mut plan = base_plan(vec![rule(Action::Route(0))]);
        plan.routers[0] = table(vec![3; ROUTER_SLOTS], vec![1, 3], HashMode::Connection);
        m.set_plan(plan, EPOCH + 1);
        assert_eq!(m.epoch(), EPOCH + 1);
        let o = m.xdp_lan(LAN, &f, 5);
        assert_eq!(
            (o.reason, o.rule, o.gateway),
            (STEER_CLASSIFIED, Some(0), Some(1))
        );
        assert_eq!(m.flows()[&key].epoch, EPOCH + 1);
        assert_eq!(m.flows()[&key].last_seen_ns, 5);
        assert_eq!(m.xdp_lan(LAN, &f, 6).reason, STEER_FLOW);
        // New ruleset where another rule comes first.
        let mut b = rule(Action::Block);
        b.criteria.protocols = vec![TCP];
        let mut plan = base_plan(vec![b, rule(Action::Route(0))]);
        plan.routers[0] = table(vec![3; ROUTER_SLOTS], vec![1, 3], HashMode::Connection);
        m.set_plan(plan, EPOCH + 2);
        let o = m.xdp_lan(LAN, &f, 7);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway),
            (XdpAction::Drop, DROP_RULE, Some(0), None)
        );
        assert_eq!(
            m.flows()[&key],
            FlowValue {
                last_seen_ns: 7,
                epoch: EPOCH + 2,
                rule: 0,
                router: 0xffff,
                gateway: 0,
                flags: 0,
                _pad: [0; 2]
            }
        );
        // Back to routing: the Block entry names no router, so the flow is hashed (to 3).
        m.set_plan(base_plan(vec![rule(Action::Route(2))]), EPOCH + 3);
        let o = m.xdp_lan(LAN, &f, 8);
        assert_eq!((o.reason, o.gateway), (STEER_CLASSIFIED, Some(3)));
        // A different router does not make the flow sticky.
        let mut plan = base_plan(vec![rule(Action::Route(0))]);
        plan.routers[0] = table(vec![1; ROUTER_SLOTS], vec![1, 3], HashMode::Connection);
        m.set_plan(plan, EPOCH + 4);
        assert_eq!(m.xdp_lan(LAN, &f, 9).gateway, Some(1));
    }

    #[test]
    fn idle_flows_are_decided_anew() {
        let mut plan = base_plan(vec![rule(Action::Route(0))]);
        plan.flow_idle_ns = 1_000;
        let mut m = Model::new(plan, EPOCH);
        let f = host_pkt();
        let key = parsed(&f).flow_key(LAN);
        m.xdp_lan(LAN, &f, 10_000);
        m.set_router(
            0,
            table(vec![3; ROUTER_SLOTS], vec![1, 3], HashMode::Connection),
        );
        // Exactly flow_idle_ns later: live, sticky.
        let o = m.xdp_lan(LAN, &f, 11_000);
        assert_eq!((o.reason, o.gateway), (STEER_FLOW, Some(1)));
        assert_eq!(m.flows()[&key].last_seen_ns, 10_000); // not refreshed (< FLOW_REFRESH_NS)
        // One more nanosecond: idle, classified and hashed.
        let o = m.xdp_lan(LAN, &f, 11_001);
        assert_eq!((o.reason, o.gateway), (STEER_CLASSIFIED, Some(3)));
        assert_eq!(m.flows()[&key].last_seen_ns, 11_001);
        assert_eq!(m.flows()[&key].gateway, 3);
        // A clock that goes backwards does not panic and counts as age 0.
        assert_eq!(m.xdp_lan(LAN, &f, 5).reason, STEER_FLOW);
    }

    /// Slots alternating between gateways 1 and 3.
    fn split() -> Vec<u16> {
        (0..ROUTER_SLOTS)
            .map(|i| if i.is_multiple_of(2) { 1 } else { 3 })
            .collect()
    }

    /// The gateway `split()` gives a hash.
    fn split_gateway(h: u32) -> u16 {
        split()[h as usize & (ROUTER_SLOTS - 1)]
    }

    #[test]
    fn connection_hashing() {
        let mut plan = base_plan(vec![rule(Action::Route(0))]);
        plan.routers[0] = table(split(), vec![], HashMode::Connection);
        let mut m = Model::new(plan, EPOCH);
        let mut seen = [false; 2];
        for sport in 1000..1064u16 {
            let f = lan4(&[], &tcp4([192, 168, 1, 10], [8, 8, 8, 8], sport, 443));
            let k = parsed(&f).flow_key(LAN);
            let h = crate::hash::connection_hash(&k.src, &k.dst, sport, 443, TCP);
            let want = split_gateway(h);
            let o = m.xdp_lan(LAN, &f, 0);
            assert_eq!(o.gateway, Some(want), "sport {sport}");
            seen[(want == 3) as usize] = true;
        }
        // One host's connections spread over both gateways.
        assert_eq!(seen, [true, true]);
        // Port-less packets hash with ports 0.
        let f = lan4(
            &[],
            &Ip4::new([192, 168, 1, 10], [8, 8, 8, 8], ICMP, vec![8, 0, 0, 0]),
        );
        let k = parsed(&f).flow_key(LAN);
        let h = crate::hash::connection_hash(&k.src, &k.dst, 0, 0, ICMP);
        let want = split_gateway(h);
        assert_eq!(m.xdp_lan(LAN, &f, 0).gateway, Some(want));
    }

    #[test]
    fn source_hashing() {
        let mut plan = base_plan(vec![rule(Action::Route(0))]);
        plan.routers[0] = table(split(), vec![], HashMode::Source);
        let mut m = Model::new(plan, EPOCH);
        let mut seen = [false; 2];
        for host in 10..42u8 {
            let src = [192, 168, 1, host];
            let h = crate::hash::source_hash(&[u32::from_ne_bytes(src), 0, 0, 0]);
            let want = split_gateway(h);
            seen[(want == 3) as usize] = true;
            // Every connection of the host, to anywhere, takes the same gateway.
            for (i, sport) in (2000..2008u16).enumerate() {
                let f = lan4(&[], &tcp4(src, [8, 8, i as u8, 8], sport, 443));
                assert_eq!(
                    m.xdp_lan(LAN, &f, 0).gateway,
                    Some(want),
                    "host {host} sport {sport}"
                );
            }
        }
        assert_eq!(seen, [true, true]);
    }

    // ---- return routes -------------------------------------------------------------------

    #[test]
    fn return_routes() {
        // The LAN rule would send the reply out through router 2 (gateway 3) with DSCP 46.
        let mut r = rule(Action::Route(2));
        r.set_dscp = Some(46);
        let mut m = Model::new(base_plan(vec![r]), EPOCH);
        // A connection arrives on the WAN link from 8.8.8.8:443 to 192.168.1.10:40000.
        let inbound = tcp4([8, 8, 8, 8], [192, 168, 1, 10], 443, 40000);
        let wan = eth(EG_MAC, NH_MAC, &[(0x8100, 100)], ETH_P_IP, &inbound.bytes());
        let key = m.tc_return(WAN_LINK, &wan, 500).expect("learned");
        let reply = host_pkt(); // 192.168.1.10:40000 -> 8.8.8.8:443
        assert_eq!(key, parsed(&reply).flow_key(0));
        assert_eq!(
            m.returns()[&key],
            ReturnValue {
                last_seen_ns: 500,
                gateway: 1,
                _pad: 0
            }
        );
        let o = m.xdp_lan(LAN, &reply, 600);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway, o.handoff),
            (XdpAction::Redirect, STEER_RETURN, None, Some(1), None)
        );
        let mut want = tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40000, 443);
        want.ttl = 63; // no DSCP change
        assert_eq!(o.frame, eth(NH_MAC, EG_MAC, &[], ETH_P_IP, &want.bytes()));
        assert!(m.flows().is_empty());
        // Other connections are classified.
        let other = lan4(&[], &tcp4([192, 168, 1, 10], [8, 8, 8, 8], 40001, 443));
        assert_eq!(m.xdp_lan(LAN, &other, 600).reason, STEER_CLASSIFIED);
        // Gateway not ready: the return route is ignored.
        m.set_gateway_ready(1, false);
        let o = m.xdp_lan(LAN, &reply, 700);
        assert_eq!(
            (o.reason, o.rule, o.gateway),
            (STEER_CLASSIFIED, Some(0), Some(3))
        );
        m.set_gateway_ready(1, true);
        assert_eq!(m.xdp_lan(LAN, &reply, 800).reason, STEER_RETURN);
        // Return routes still apply after a ruleset change.
        m.set_plan(m.plan().clone(), EPOCH + 1);
        assert_eq!(m.xdp_lan(LAN, &reply, 900).reason, STEER_RETURN);
        // Return gateway missing from the plan: classified.
        let mut plan = m.plan().clone();
        plan.gateways.retain(|g| g.id != 1);
        m.set_plan(plan, EPOCH + 2);
        assert_eq!(m.xdp_lan(LAN, &reply, 1000).gateway, Some(3));
    }

    #[test]
    fn return_route_failures_pass() {
        let mut m = Model::new(base_plan(vec![rule(Action::Route(0))]), EPOCH);
        // Learned on the L3 link (frame starts with the IP header), tunnel gateway 2.
        let inbound = Ip4::new([8, 8, 8, 8], [192, 168, 1, 10], UDP, l4(53, 5353)).bytes();
        m.tc_return(TUN_LINK, &inbound, 0).unwrap();
        let mut ip = Ip4::new([192, 168, 1, 10], [8, 8, 8, 8], UDP, l4(5353, 53));
        ip.ttl = 1;
        let f = lan4(&[], &ip);
        let o = m.xdp_lan(LAN, &f, 0);
        assert_eq!(
            (o.action, o.reason, o.rule, o.gateway),
            (XdpAction::Pass, PASS_TTL, None, Some(2))
        );
        assert_untouched(&o, &f);
        assert!(m.flows().is_empty());
        ip.ttl = 9;
        let o = m.xdp_lan(LAN, &lan4(&[], &ip), 0);
        assert_eq!(
            (o.action, o.reason, o.handoff),
            (XdpAction::Pass, STEER_RETURN, Some(20))
        );
        ip.payload.resize(1400, 0);
        assert_eq!(m.xdp_lan(LAN, &lan4(&[], &ip), 0).reason, PASS_TOO_BIG);
    }

    #[test]
    fn tc_return_learning() {
        let mut m = Model::new(base_plan(vec![]), EPOCH);
        let inbound6 = Ip6::new(
            v6("2001:db8:ffff::1"),
            v6("2001:db8::10"),
            TCP,
            l4(443, 50000),
        );
        let k = m.tc_return(TUN_LINK, &inbound6.bytes(), 100).unwrap();
        let reply = lan6(
            &[],
            &Ip6::new(
                v6("2001:db8::10"),
                v6("2001:db8:ffff::1"),
                TCP,
                l4(50000, 443),
            ),
        );
        assert_eq!(k, parsed(&reply).flow_key(0));
        assert_eq!(m.returns()[&k].gateway, 2);
        // Refresh only after FLOW_REFRESH_NS...
        assert_eq!(
            m.tc_return(TUN_LINK, &inbound6.bytes(), 100 + FLOW_REFRESH_NS - 1),
            Some(k)
        );
        assert_eq!(m.returns()[&k].last_seen_ns, 100);
        m.tc_return(TUN_LINK, &inbound6.bytes(), 100 + FLOW_REFRESH_NS);
        assert_eq!(m.returns()[&k].last_seen_ns, 100 + FLOW_REFRESH_NS);
        // ...or when the gateway differs (the same connection seen on another link).
        let wan = eth(EG_MAC, NH_MAC, &[], ETH_P_IPV6, &inbound6.bytes());
        assert_eq!(m.tc_return(WAN_LINK, &wan, 200 + FLOW_REFRESH_NS), Some(k));
        assert_eq!(
            m.returns()[&k],
            ReturnValue {
                last_seen_ns: 200 + FLOW_REFRESH_NS,
                gateway: 1,
                _pad: 0
            }
        );
        assert_eq!(m.returns().len(), 1);

        // Nothing learned: unknown link, parse failures of every kind.
        assert_eq!(m.tc_return(99, &wan, 0), None);
        assert_eq!(m.tc_return(TUN_LINK, &wan, 0), None); // Ethernet on an L3 link: bad version
        assert_eq!(m.tc_return(WAN_LINK, &inbound6.bytes(), 0), None); // not IP ethertype
        assert_eq!(m.tc_return(WAN_LINK, &wan[..13], 0), None);
        assert_eq!(m.tc_return(TUN_LINK, &[], 0), None);
        let mc = Ip4::new([8, 8, 8, 8], [224, 0, 0, 1], UDP, l4(1, 2)).bytes();
        assert_eq!(m.tc_return(TUN_LINK, &mc, 0), None);
        let short = Ip4::new([8, 8, 8, 8], [192, 168, 1, 10], TCP, vec![0, 1]).bytes();
        assert_eq!(m.tc_return(TUN_LINK, &short, 0), None);
        let arp = eth(EG_MAC, NH_MAC, &[], 0x0806, &[0; 28]);
        assert_eq!(m.tc_return(WAN_LINK, &arp, 0), None);
        assert_eq!(m.returns().len(), 1);

        // No MAC check on links; VLAN tags parsed; port-less packets learn ports 0.
        let icmp = Ip4::new([8, 8, 8, 8], [192, 168, 1, 10], ICMP, vec![0, 0, 0, 0]);
        let f = eth(
            [0xff; 6],
            NH_MAC,
            &[(0x88a8, 1), (0x8100, 2)],
            ETH_P_IP,
            &icmp.bytes(),
        );
        let k = m.tc_return(WAN_LINK, &f, 0).unwrap();
        assert_eq!(
            (k.sport, k.dport, k.proto, k.family, k.ifindex),
            (0, 0, ICMP, 4, 0)
        );
        assert_eq!(k.src[0], u32::from_ne_bytes([192, 168, 1, 10]));
    }

    #[test]
    fn plan_accessors() {
        let mut m = Model::new(base_plan(vec![rule(Action::Pass)]), 9);
        assert_eq!((m.epoch(), m.plan().rules.len()), (9, 1));
        m.set_router(1, RouterTable::single(3));
        assert_eq!(m.plan().routers[1], RouterTable::single(3));
        assert_eq!(m.epoch(), 9);
        m.set_gateway_ready(2, false);
        assert!(!m.plan().gateways.iter().find(|g| g.id == 2).unwrap().ready);
        m.set_gateway_ready(77, false); // unknown: ignored
        let _: IpAddr = m.plan().local_addrs[0];
    }
}
