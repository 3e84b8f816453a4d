//! Reference model of the data plane: what `xwan_xdp_lan` and `xwan_tc_return` must do to a
//! packet, written as plain Rust over byte slices and a [`Plan`](crate::plan::Plan).
//!
//! The kernel programs (ebpf-prog) implement this specification with maps and bit-vector
//! classification; the model implements it directly (rules scanned in order). Privileged tests
//! run both on the same packets and require identical verdicts, reasons, gateways and bytes.
//! **Change behaviour here first**, then in ebpf-prog, and keep the two in lock-step.
//!
//! # `xwan_xdp_lan` (XDP on a LAN interface)
//!
//! In the kernel, steps 1–7 run in `xwan_xdp_lan` and the rest in `xwan_xdp_decide`, which it
//! tail-calls; the model is one function, as the behaviour is one.
//!
//! Every packet ends in exactly one reason (`crate::reason`), counted with its ingress length.
//! "Pass" = `XDP_PASS` with the frame untouched unless stated.
//!
//! 1. The ingress interface has no `Iface` in the plan → pass, `PASS_NOT_CONFIGURED`.
//! 2. Frame shorter than 14 bytes → pass, `PASS_MALFORMED`.
//! 3. Source or destination MAC starts with `TUNNEL_TAG_PREFIX` → `XDP_DROP`,
//!    `DROP_FORGED_TAG`, whatever the rest (only step 11 may write those tags: they are what
//!    `xwan_tc_steer` trusts).
//!    Destination MAC ≠ the interface's MAC → pass, `PASS_NOT_FOR_US`.
//! 4. EtherType at offset 12. While it is 0x8100 or 0x88a8 and fewer than 2 tags were read:
//!    4 more bytes must be present (else `PASS_MALFORMED`), the inner EtherType is at tag+2.
//!    Still a VLAN EtherType after 2 tags, or neither 0x0800 nor 0x86dd → `PASS_NOT_IP`.
//! 5. IPv4 (at L3 offset `l3`): 20 bytes present, version 4, IHL ≥ 5 and `IHL*4` bytes present,
//!    else `PASS_MALFORMED`. DSCP = TOS >> 2. Fragment offset = `be16[6..8] & 0x1fff`; the
//!    packet is a *fragment* when the offset is not 0 or more fragments follow (`0x2000`).
//!    Destination in 224.0.0.0/4 or = 255.255.255.255 → `PASS_NOT_FOR_US`.
//!    L4 at `l3 + IHL*4`; the packet *has ports* when the fragment offset is 0 and the
//!    protocol is TCP (6), UDP (17) or SCTP (132): then 4 bytes must be present at L4
//!    (else `PASS_MALFORMED`) and hold source and destination port (big endian).
//! 6. IPv6: 40 bytes present and version 6, else `PASS_MALFORMED`. Traffic class =
//!    `(b0 & 0x0f) << 4 | b1 >> 4`, DSCP = TC >> 2. Destination in ff00::/8 or fe80::/10 →
//!    `PASS_NOT_FOR_US`. Extension headers, starting with the Next Header at byte 6 and
//!    offset `l3 + 40`, at most `MAX_IPV6_EXT_HEADERS` (6) of them:
//!    * 0, 43, 60 (hop-by-hop, routing, destination options): 2 bytes present (else
//!      malformed); next = b0; length = (b1 + 1) * 8.
//!    * 51 (AH): 2 bytes present; next = b0; length = (b1 + 2) * 4.
//!    * 44 (fragment): 8 bytes present; next = b0; offset = `be16[2..4] >> 3`; length 8.
//!      The packet is a *fragment*. A non-zero offset ends the walk: the packet is a
//!      non-first fragment (no ports).
//!    * anything else ends the walk: it is the upper-layer protocol.
//!
//!    Still on an extension header after 6 → `PASS_MALFORMED`. The protocol is the last
//!    Next Header. Ports as for IPv4 (TCP/UDP/SCTP, not a non-first fragment, 4 bytes present).
//!    A packet without ports has ports 0 in its flow key. A TCP packet's flags are byte 13
//!    of its header when 14 bytes are present and it is not a non-first fragment, else
//!    `TCP_FLAGS_UNKNOWN` (0xff); other protocols' are 0. The upper-layer header (L4) is
//!    where the walk ended.
//! 7. Return routes on (the plan has links) and the destination is in `Plan::local_addrs` →
//!    pass, `PASS_LOCAL`: a return entry learned from a spoofed source must not divert traffic
//!    for the router itself. Otherwise local delivery is decided with classification (step
//!    9), so a flow hit never looks at the local addresses: no flow is created for a local
//!    destination, and a change of the local addresses commits a new epoch.
//! 8. **Return route.** Key = the packet's flow key with `ifindex` 0. If a return entry exists
//!    and its gateway exists and is `ready` → *forward* (step 11) through it with no DSCP
//!    change, success reason `STEER_RETURN`, no rule counted. Otherwise continue. A plan
//!    without links has return routes off: this step is skipped.
//! 9. **Flow / classification.** `epoch` = the current ruleset epoch. Flow key = the packet's
//!    5-tuple, family and ingress ifindex. A flow entry is *live* when present and
//!    (`flow_idle_ns` = 0 or `now - last_seen ≤ flow_idle_ns`). If live and its epoch =
//!    `epoch`, the rule is the entry's (`from_flow`); otherwise the packet is classified: a
//!    destination in `Plan::local_addrs` → pass, `PASS_LOCAL`; else the first rule whose every
//!    non-empty criterion holds — source/destination in one of the
//!    networks (same family), protocol listed, DSCP listed, ingress ifindex listed, source /
//!    destination port inside a range (a packet without ports never satisfies a port
//!    criterion). No rule → pass, `PASS_NO_MATCH` (no flow entry written).
//! 10. The rule's counter slot counts the packet. By action:
//!     * `Block` → `XDP_DROP`, `DROP_RULE`.
//!     * `Pass` → impose `set_dscp` if any (step 12's DSCP rewrite only), pass, `PASS_RULE`.
//!     * `Route(r)`: table = router r's. If the live flow entry names router r and r's `keep`
//!       holds the entry's gateway → that gateway (sticky). Else if the table has no slots →
//!       `on_failure`: pass `PASS_NO_GATEWAY` or drop `DROP_NO_GATEWAY` (frame untouched, no
//!       flow write). Else slot = `hash & (ROUTER_SLOTS - 1)` with `hash::connection_hash`
//!       (ports 0 when none) or `hash::source_hash` by the table's mode, and the slot's
//!       gateway's `NEW_FLOWS_MAP` counter counts the packet (a flow given to it). The flow is
//!       *offloaded* when the live entry has `FLOW_OFFLOADED` and names router r and the
//!       chosen gateway. Then *forward* with the rule's `set_dscp`, success reason
//!       `STEER_FLOW` if `from_flow` else `STEER_CLASSIFIED` — for an offloaded flow on a
//!       kernel-path gateway with an `Offload` that has a next hop for the packet's family,
//!       when `may_offload(proto, tcp_flags, fragment)` (no SYN, FIN or RST, not a
//!       fragment), forward as through an Ethernet gateway with that next hop's MAC and the
//!       offload's egress MAC, success reason `STEER_OFFLOAD`, instead. If the entry also
//!       has `FLOW_SNAT`, this needs the flow's `SNAT_MAP` entry and a TCP or UDP packet
//!       whose checksum lies in the frame (else the kernel path), and a forwarded frame then
//!       leaves with the entry's source address and port, the IPv4 header checksum and the
//!       TCP / UDP checksum updated incrementally (a UDP checksum of 0 stays 0, an update
//!       giving 0 writes 0xffff).
//!
//!     The flow entry `{last_seen = now, epoch, rule, router (0xffff unless Route), gateway
//!     (0 unless a gateway was chosen), flags (the live entry's FLOW_OFFLOADED and FLOW_SNAT
//!     if offloaded)}` is written when
//!     there was no entry (live or not), or any of epoch/rule/router/gateway/flags differs, or
//!     `now - last_seen ≥ FLOW_REFRESH_NS`. Only the agent sets `FLOW_OFFLOADED` and
//!     `FLOW_SNAT` (when conntrack confirms the flow; `Model::set_path`); they are kept while
//!     the flow keeps its router and gateway.
//!     Before, when the plan has marks (`netfilter` mode), a gateway was chosen, and an entry
//!     was present (live or not) with a router and another gateway, the record
//!     `Moved {key, from: its gateway, to: g}` is appended to `MOVED_MAP` (the agent resets
//!     the flow's conntrack entry).
//! 11. **Forward** through gateway g: g not in the plan → pass `PASS_GATEWAY_ERROR`. A
//!     kernel-path gateway (`netfilter` mode): g's gateway counter counts the packet, DSCP
//!     imposed (step 12), destination MAC = `kernel_tag(g)`, nothing else changed (TTL, MTU
//!     and VLAN tags are the kernel's business), `XDP_PASS` with the success reason (the
//!     hand-off to `xwan_tc_steer`, which marks it). Otherwise: TTL / hop
//!     limit ≤ 1 → pass `PASS_TTL`. Bytes from the IP header to the end of the frame > g's MTU
//!     → pass `PASS_TOO_BIG`. (All three leave the frame untouched.) Otherwise g's gateway
//!     counter counts the packet (ingress length) and the frame is rewritten: VLAN tags removed
//!     (the MACs move up, EtherType becomes the IP one), DSCP imposed (step 12), TTL / hop
//!     limit decremented (IPv4 checksum updated incrementally). Ethernet gateway: destination
//!     MAC = next hop's, source MAC = egress MAC, `XDP_REDIRECT` through DEVMAP index g.
//!     Tunnel gateway: destination MAC kept, source MAC = `tunnel_tag(g.ifindex)`, `XDP_PASS`
//!     (the hand-off to `xwan_tc_steer`; an L3 tunnel discards the Ethernet header).
//! 12. **DSCP imposition**: IPv4 TOS = `dscp << 2 | (TOS & 3)` with the checksum updated;
//!     IPv6 traffic class likewise (ECN bits kept). Nothing else changes.
//!
//! # After `XDP_REDIRECT`: what the egress did with it
//!
//! The verdict above is the packet's fate as far as XDP decides it. A redirect only queues
//! the frame for its egress, which may still refuse it (down, MTU, no XDP transmit) or drop it
//! at transmit (a veth whose peer has no XDP program, a full ring). Where the kernel lets
//! `xwan_trace_redirect_err` / `xwan_trace_xmit` run (the agent says whether), such a packet
//! is moved from its `STEER_*` reason and gateway counter to `DROP_REDIRECT` / `DROP_XMIT`
//! and the gateway's failures, with the same ingress length (`crate::EgressLog`). That is
//! the egress driver's doing, not a function of the packet and the plan: the model never
//! produces these two reasons, and the netns tests check them on real veths.
//!
//! # `xwan_tc_steer` (TC ingress on a LAN interface)
//!
//! A frame whose source MAC is a `tunnel_tag(ifindex)` is redirected to the egress of
//! `ifindex` (`bpf_redirect`). On a configured interface, a frame whose destination MAC is a
//! `kernel_tag(g)` gets the interface's MAC back as its destination, is made host-bound
//! (`PACKET_HOST`, as the frame XDP saw was) and has the marks' bits of `skb->mark` set to
//! g's mark (`MarkLayout::mark`), or cleared when g does not take the kernel path; the other
//! bits of the mark are kept. Every frame but a redirected one continues into the kernel
//! (`TC_ACT_OK`).
//!
//! # `xwan_tc_return` (TC ingress on a link)
//!
//! The link's `Link` entry gives the frame's start (Ethernet with up to 2 VLAN tags, or the
//! IP header directly). The packet is parsed as in steps 4–6; any failure → nothing learned.
//! Otherwise the reply's key (addresses and ports swapped, same protocol and family, ifindex
//! 0) gets `{last_seen = now, gateway = return_gateway}`, written when absent, different, or
//! older than `FLOW_REFRESH_NS`. The packet always continues (`TC_ACT_OK`).

mod packet;
mod xdp;

pub use packet::{Parsed, build, parse_ethernet, parse_ip};
pub use xdp::{Model, TcSteer, XdpAction, XdpOutcome};
