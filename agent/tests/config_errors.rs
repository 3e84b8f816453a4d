//! Configuration errors and warnings: every invalid configuration here asserts the exact
//! text it produces (`FILE:LINE:COL: <object>: field '<field>': <what>; <what to do>`), so a
//! change of wording is a deliberate change of these tests. Also: the examples load, the
//! defaults are DESIGN.md's, and `describe()` output is pinned.

use std::num::{NonZeroU16, NonZeroU32};
use std::path::{Path, PathBuf};
use std::time::Duration;

use xwan::config::{
    self, Config, Failback, LinkKind, LoadBalancing, Member, Monitor, OnFailure, RuleAction, Sla,
    Warning,
};
use xwan_common::maps::{MAX_GATEWAYS, MAX_ROUTERS, MAX_RULES};
use xwan_common::plan::PortRange;

/// A valid configuration (lines 1-18) that error cases extend.
const BASE: &str = r#"[agent]
lan_interfaces = ["lan0"]

[[link]]
name = "WAN1"
interface = "tun1"
kind = "tunnel"
address = "172.16.1.1/30"

[[gateway]]
name = "GW1"
link = "WAN1"
address = "172.16.1.2"

[[router]]
name = "R1"
gateways = ["GW1"]
on_failure = "drop"
"#;

/// A valid configuration, with a rule for its router, that warning cases extend.
const WBASE: &str = r#"[agent]
lan_interfaces = ["lan0"]

[[link]]
name = "WAN1"
interface = "tun1"
kind = "tunnel"
address = "172.16.1.1/30"

[[link]]
name = "WAN2"
interface = "tun2"
kind = "tunnel"
address = "172.16.1.5/30"

[[gateway]]
name = "GW1"
link = "WAN1"
address = "172.16.1.2"

[[router]]
name = "R1"
gateways = ["GW1"]
on_failure = "drop"

[[rule]]
name = "Web"
protocol = ["tcp"]
dst_port = [80, 443]
action = "route"
router = "R1"
"#;

fn base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn errors_in(text: &str, file: &str) -> String {
    match config::parse(text, file) {
        Ok(_) => panic!("expected errors, the configuration is valid:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn errors(text: &str) -> String {
    errors_in(text, "test.toml")
}

fn warnings(extra: &str) -> String {
    let text = format!("{WBASE}{extra}");
    match config::parse(&text, "test.toml") {
        Ok((_, w)) => w
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => panic!("expected a valid configuration:\n{e}"),
    }
}

/// `invalid!(name, config text, expected errors)`
macro_rules! invalid {
    ($name:ident, $text:expr, $expected:expr $(,)?) => {
        #[test]
        fn $name() {
            assert_eq!(errors(&$text), $expected);
        }
    };
}

/// `suspicious!(name, text appended to WBASE, expected warnings)`
macro_rules! suspicious {
    ($name:ident, $text:expr, $expected:expr $(,)?) => {
        #[test]
        fn $name() {
            assert_eq!(warnings($text), $expected);
        }
    };
}

// ---- invalid configurations ------------------------------------------------------------------

invalid!(
    unknown_field_in_link_suggests_the_right_one,
    r#"[[link]]
name = "WAN1"
interfce = "tun1"
kind = "tunnel"
"#,
    "test.toml:3:1: link 'WAN1': field 'interfce': unknown field; did you mean 'interface'?"
);

invalid!(
    unknown_field_in_router_member_table,
    base(
        r#"
[[router]]
name = "R2"
gateways = [{ gateway = "GW1", wieght = 3 }]
"#
    ),
    "test.toml:22:32: router 'R2': field 'gateways[0].wieght': unknown field; did you mean 'weight'?"
);

invalid!(
    unknown_field_lists_valid_fields,
    base(
        r#"
[[rule]]
name = "Web"
port = [80]
action = "pass"
"#
    ),
    "test.toml:22:1: rule 'Web': field 'port': unknown field; valid fields here are name, src, dst, protocol, src_port, dst_port, dscp, in, action, router, set_dscp"
);

invalid!(
    unknown_section_suggests_header,
    base(
        r#"
[[links]]
name = "WAN2"
"#
    ),
    "test.toml:20:3: unknown section 'links'; did you mean [[link]]?"
);

invalid!(
    unknown_section_without_suggestion,
    base(
        r#"
[logging]
level = "debug"
"#
    ),
    "test.toml:20:2: unknown section 'logging'; valid sections are [agent], [[link]], [[gateway]], [[router]], [[rule]], [[return_route]] and [[hook]]"
);

invalid!(
    link_section_with_single_brackets,
    r#"[link]
name = "WAN1"
interface = "tun1"
kind = "tunnel"
"#,
    "test.toml:1:2: 'link' must be an array of tables; write each link under its own [[link]] header"
);

invalid!(
    syntax_error_unterminated_string,
    r#"[[link]]
name = "WAN1
interface = "tun1"
"#,
    "test.toml:2:13: syntax error: a string is not closed; end it with '\"' on the same line"
);

invalid!(
    syntax_error_duplicate_key,
    r#"[[link]]
name = "WAN1"
interface = "tun1"
name = "WAN2"
"#,
    "test.toml:4:1: syntax error: duplicate key 'name'; a key may appear only once per table"
);

invalid!(
    syntax_error_unclosed_list_stops_there,
    r#"[agent]
lan_interfaces = ["lan0"

[[link]]
name = "WAN1"
interface = "tun1"
kind = "tunnel"
"#,
    "test.toml:4:1: syntax error: a list is not closed, or a comma is missing between its elements; close the list with ']' or add the comma"
);

invalid!(
    integer_written_as_string,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2"
weight = "3"
"#
    ),
    "test.toml:24:10: gateway 'GW2': field 'weight': expected an integer, found the string \"3\"; write the number without quotes"
);

invalid!(
    list_written_as_string,
    base(
        r#"
[[router]]
name = "R2"
gateways = "GW1"
"#
    ),
    "test.toml:22:12: router 'R2': field 'gateways': expected a list, found the string \"GW1\"; write a list in square brackets, e.g. [\"a\", \"b\"]"
);

invalid!(
    router_member_of_wrong_type,
    base(
        r#"
[[router]]
name = "R2"
gateways = [1]
"#
    ),
    "test.toml:22:13: router 'R2': field 'gateways[0]': expected a gateway name or a table, found the integer 1; write \"NAME\" or { gateway = \"NAME\", weight = N }"
);

invalid!(
    link_missing_required_fields,
    r#"[agent]
lan_interfaces = ["lan0"]

[[link]]
address = "172.16.1.1/30"
"#,
    concat!(
        "test.toml:4:1: link #1: field 'name': required field is missing; add name = \"...\" to this [[link]]\n",
        "test.toml:4:1: link #1: field 'interface': required field is missing; add interface = \"tun0\"\n",
        "test.toml:4:1: link #1: field 'kind': required field is missing; add kind = \"tunnel\", \"ethernet\", \"vti\" or \"xfrm\"",
    )
);

invalid!(
    duplicate_link_name,
    base(
        r#"
[[link]]
name = "WAN1"
interface = "tun2"
kind = "tunnel"
"#
    ),
    "test.toml:21:8: link 'WAN1': field 'name': duplicate name: link 'WAN1' is already defined at line 4; give each link a unique name"
);

invalid!(
    duplicate_gateway_name,
    base(
        r#"
[[gateway]]
name = "GW1"
link = "WAN1"
address = "172.16.1.2"
"#
    ),
    concat!(
        "test.toml:21:8: gateway 'GW1': field 'name': duplicate name: gateway 'GW1' is already defined at line 10; give each gateway a unique name\n",
        "test.toml:23:11: gateway 'GW1': field 'address': 172.16.1.2 is already the address of gateway 'GW1' on the same link; one gateway per next hop: use gateway 'GW1' wherever this one is used",
    )
);

invalid!(
    invalid_object_name,
    base(
        r#"
[[router]]
name = "my router"
gateways = ["GW1"]
"#
    ),
    "test.toml:21:8: router 'my router': field 'name': 'my router' is not a valid name; use letters, digits, '_', '-' and '.', starting with a letter or digit, at most 64 characters"
);

invalid!(
    gateway_on_unknown_link,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"
"#
    ),
    "test.toml:22:8: gateway 'GW2': field 'link': unknown link 'WAN2'; did you mean 'WAN1'? (or define it in a [[link]] section)"
);

invalid!(
    router_backup_unknown_gateway_suggests_the_only_close_name,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW2"]
"#
    ),
    "test.toml:22:13: router 'R2': field 'gateways[0]': unknown gateway 'GW2'; did you mean 'GW1'? (or define it in a [[gateway]] section)"
);

invalid!(
    rule_unknown_router_suggests_close_name,
    base(
        r#"
[[rule]]
name = "Web"
protocol = ["tcp"]
dst_port = [80]
action = "route"
router = "r1"
"#
    ),
    "test.toml:25:10: rule 'Web': field 'router': unknown router 'r1'; did you mean 'R1'? (or define it in a [[router]] section)"
);

invalid!(
    rule_unknown_ingress_interface,
    base(
        r#"
[[rule]]
name = "Web"
in = ["lan1"]
action = "pass"
"#
    ),
    "test.toml:22:7: rule 'Web': field 'in[0]': unknown LAN interface 'lan1'; did you mean 'lan0'? (or add it to [agent] lan_interfaces)"
);

invalid!(
    gateway_outside_link_subnet,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.6"
"#
    ),
    "test.toml:23:11: gateway 'GW2': field 'address': 172.16.1.6 is outside the subnet 172.16.1.0/30 of link 'WAN1' (172.16.1.1/30); use an address in 172.16.1.0/30 or attach the gateway to the link it is on"
);

invalid!(
    gateway_family_differs_from_link,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "2001:db8::2"
"#
    ),
    "test.toml:23:11: gateway 'GW2': field 'address': 2001:db8::2 is IPv6 but link 'WAN1' has the IPv4 address 172.16.1.1/30; use an IPv4 address or a link of the same family"
);

invalid!(
    gateway_is_the_link_address,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.1"
"#
    ),
    "test.toml:23:11: gateway 'GW2': field 'address': 172.16.1.1 is the local address of link 'WAN1' itself; use the address of the next hop (the far end)"
);

invalid!(
    gateway_is_the_broadcast_address,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.3"
"#
    ),
    "test.toml:23:11: gateway 'GW2': field 'address': 172.16.1.3 is the broadcast address of 172.16.1.0/30; use the next hop's host address"
);

invalid!(
    gateway_address_with_prefix,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2/30"
"#
    ),
    "test.toml:23:11: gateway 'GW2': field 'address': '172.16.1.2/30' is a network; write the host address alone: \"172.16.1.2\""
);

invalid!(
    gateway_same_address_as_another,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2"
"#
    ),
    "test.toml:23:11: gateway 'GW2': field 'address': 172.16.1.2 is already the address of gateway 'GW1' on the same link; one gateway per next hop: use gateway 'GW1' wherever this one is used"
);

invalid!(
    link_address_without_prefix,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "tun2"
kind = "tunnel"
address = "172.16.1.5"
"#
    ),
    "test.toml:24:11: link 'WAN2': field 'address': '172.16.1.5' has no prefix length; write the address with its prefix, e.g. \"172.16.1.5/30\""
);

invalid!(
    link_address_is_network_address,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "tun2"
kind = "tunnel"
address = "172.16.1.4/30"
"#
    ),
    "test.toml:24:11: link 'WAN2': field 'address': 172.16.1.4 is the network address of 172.16.1.4/30; use a host address of the subnet"
);

invalid!(
    link_kind_unknown_and_mtu_too_small,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "tun2"
kind = "gre"
mtu = 40
"#
    ),
    concat!(
        "test.toml:23:8: link 'WAN2': field 'kind': unknown value 'gre'; use \"tunnel\" or \"ethernet\" or \"vti\" or \"xfrm\"\n",
        "test.toml:24:7: link 'WAN2': field 'mtu': 40 is out of range; mtu must be between 68 and 65535; remove mtu to use the interface's own",
    )
);

invalid!(
    two_links_on_one_interface,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "tun1"
kind = "tunnel"
"#
    ),
    "test.toml:22:13: link 'WAN2': field 'interface': interface 'tun1' is already used by link 'WAN1'; a link is one interface: put the gateways of both on link 'WAN1'"
);

invalid!(
    interface_name_too_long,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "a-very-long-ifname"
kind = "ethernet"
"#
    ),
    "test.toml:22:13: link 'WAN2': field 'interface': 'a-very-long-ifname' is not a valid interface name; Linux names have 1 to 15 characters, without '/', ':' or spaces"
);

invalid!(
    gateway_weight_zero,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2"
weight = 0
"#
    ),
    "test.toml:24:10: gateway 'GW2': field 'weight': 0 is out of range; weight must be between 1 and 1000 (to stop using a gateway, remove it from the router)"
);

invalid!(
    router_member_weight_zero,
    base(
        r#"
[[router]]
name = "R2"
gateways = [{ gateway = "GW1", weight = 0 }]
"#
    ),
    "test.toml:22:41: router 'R2': field 'gateways[0].weight': 0 is out of range; weight must be between 1 and 1000 (to stop using a gateway, remove it from the router)"
);

invalid!(
    tries_and_recover_zero,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
tries = 0
recover = 0
"#
    ),
    concat!(
        "test.toml:23:9: router 'R2': field 'tries': 0 is out of range; tries must be between 1 and 100 (consecutive failed probes that make a gateway Unavailable)\n",
        "test.toml:24:11: router 'R2': field 'recover': 0 is out of range; recover must be between 1 and 100 (consecutive successful probes that make a gateway Ready again)",
    )
);

invalid!(
    frequency_zero,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
frequency = "0s"
"#
    ),
    "test.toml:23:13: router 'R2': field 'frequency': frequency must be greater than 0; write e.g. \"15s\""
);

invalid!(
    frequency_without_unit,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
frequency = "15"
"#
    ),
    "test.toml:23:13: router 'R2': field 'frequency': '15' is not a duration; write a number with a unit, e.g. \"15s\""
);

invalid!(
    wait_not_shorter_than_frequency,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
frequency = "2s"
wait = "2s"
"#
    ),
    "test.toml:24:8: router 'R2': field 'wait': wait (2s) must be shorter than frequency (2s): an unanswered probe is retried after wait, before the next one is due; lower wait or raise frequency"
);

invalid!(
    default_wait_not_shorter_than_frequency,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
frequency = "1s"
"#
    ),
    "test.toml:23:13: router 'R2': field 'frequency': wait (2s) must be shorter than frequency (1s): an unanswered probe is retried after wait, before the next one is due; lower wait or raise frequency"
);

invalid!(
    backup_threshold_zero,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
backup_threshold = 0
"#
    ),
    "test.toml:23:20: router 'R2': field 'backup_threshold': 0 never activates the backups; with one main gateway use 1 (the default: backups when the main is down)"
);

invalid!(
    backup_threshold_above_mains,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
backup_threshold = 2
"#
    ),
    "test.toml:23:20: router 'R2': field 'backup_threshold': 2 is more than the number of main gateways (1); with one main gateway use 1 (the default: backups when the main is down)"
);

invalid!(
    router_without_gateways,
    base(
        r#"
[[router]]
name = "R2"
backups = ["GW1"]
"#
    ),
    "test.toml:20:1: router 'R2': field 'gateways': a router needs at least one main gateway; add gateways = [\"NAME\"]"
);

invalid!(
    router_with_empty_gateways,
    base(
        r#"
[[router]]
name = "R2"
gateways = []
"#
    ),
    "test.toml:22:12: router 'R2': field 'gateways': a router needs at least one main gateway; add gateways = [\"NAME\"]"
);

invalid!(
    router_lists_a_gateway_twice,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
backups = ["GW1"]
"#
    ),
    "test.toml:23:12: router 'R2': field 'backups[0]': gateway 'GW1' is already listed in gateways[0]; list each gateway once per router"
);

invalid!(
    router_policy_values_unknown,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
load_balancing = "round-robin"
on_failure = "Drop"
failback = "new-connection"
"#
    ),
    concat!(
        "test.toml:23:18: router 'R2': field 'load_balancing': unknown value 'round-robin'; use \"connection\" or \"source\" or \"none\" or \"best-quality\"\n",
        "test.toml:24:14: router 'R2': field 'on_failure': unknown value 'Drop'; did you mean \"drop\"? (use \"default-route\" or \"drop\")\n",
        "test.toml:25:12: router 'R2': field 'failback': unknown value 'new-connection'; did you mean \"new-connections\"? (use \"new-connections\" or \"all\")",
    )
);

invalid!(
    sla_values_invalid,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
sla = { rtt = "0ms", loss = 100.0, window = 0 }
"#
    ),
    concat!(
        "test.toml:23:15: router 'R2': field 'sla.rtt': sla.rtt must be greater than 0; write e.g. \"150ms\"\n",
        "test.toml:23:29: router 'R2': field 'sla.loss': 100 is out of range; loss is a percentage from 0 up to (not including) 100, e.g. 5.0\n",
        "test.toml:23:45: router 'R2': field 'sla.window': 0 is out of range; window must be between 1 and 1000 (probes the figures are computed over)",
    )
);

invalid!(
    sla_without_threshold,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
sla = { window = 20 }
"#
    ),
    "test.toml:23:7: router 'R2': field 'sla': sets no threshold; give rtt, jitter or loss, or remove sla"
);

invalid!(
    monitor_and_check_invalid,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2"
monitor = "tcp"
check = ["172.16.1.2", "2001:db8::1", "172.16.1.2"]
"#
    ),
    concat!(
        "test.toml:24:11: gateway 'GW2': field 'monitor': tcp needs a port; write \"tcp:PORT\", e.g. \"tcp:443\"\n",
        "test.toml:25:24: gateway 'GW2': field 'check[1]': 2001:db8::1 is IPv6 but probes leave from 172.16.1.1, the IPv4 address of link 'WAN1'; use an IPv4 target\n",
        "test.toml:25:39: gateway 'GW2': field 'check[2]': target 172.16.1.2 is already listed in check[0]; remove the duplicate",
    )
);

invalid!(
    quorum_above_the_targets,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2"
check = ["172.16.1.2", "198.51.100.1", "198.51.100.2"]
quorum = 4
"#
    ),
    "test.toml:25:10: gateway 'GW2': field 'quorum': 4 is out of range; quorum must be between 1 and 3 (how many of the 3 check targets must answer)"
);

invalid!(
    quorum_zero,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2"
check = ["198.51.100.1", "198.51.100.2"]
quorum = 0
"#
    ),
    "test.toml:25:10: gateway 'GW2': field 'quorum': 0 is out of range; quorum must be between 1 and 2 (how many of the 2 check targets must answer)"
);

invalid!(
    quorum_of_the_default_single_target,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2"
quorum = 2
"#
    ),
    "test.toml:24:10: gateway 'GW2': field 'quorum': 2 is out of range; quorum must be between 1 and 1 (one check target, which must answer: remove quorum or add targets)"
);

invalid!(
    quorum_without_targets,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.2"
check = []
quorum = 1
"#
    ),
    "test.toml:25:10: gateway 'GW2': field 'quorum': quorum needs check targets, and check = [] probes nothing (the gateway is always Ready); remove quorum, or list the targets"
);

invalid!(
    sla_alarm_not_below_sla,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
sla = { rtt = "150ms", loss = 5.0 }
sla_alarm = { rtt = "200ms", loss = 5.0, jitter = "10ms" }
"#
    ),
    concat!(
        "test.toml:24:21: router 'R2': field 'sla_alarm.rtt': 200ms is not below sla.rtt 150ms: the alarm level must be stricter than the down level, or the gateway is down before it is Degraded; lower sla_alarm.rtt or raise sla.rtt\n",
        "test.toml:24:37: router 'R2': field 'sla_alarm.loss': 5% is not below sla.loss 5%: the alarm level must be stricter than the down level, or the gateway is down before it is Degraded; lower sla_alarm.loss or raise sla.loss",
    )
);

invalid!(
    sla_alarm_without_threshold,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
sla_alarm = { window = 5 }
"#
    ),
    "test.toml:23:13: router 'R2': field 'sla_alarm': sets no threshold; give rtt, jitter or loss, or remove sla_alarm"
);

invalid!(
    damping_reuse_not_below_suppress,
    base(
        r#"
[[router]]
name = "R2"
gateways = ["GW1"]
damping = { half_life = "0s", suppress = 1000, reuse = 1000, penalty = 0 }
"#
    ),
    concat!(
        "test.toml:23:25: router 'R2': field 'damping.half_life': damping.half_life must be greater than 0; write e.g. \"15m\"\n",
        "test.toml:23:56: router 'R2': field 'damping.reuse': 1000 is not below suppress 1000: damping holds a gateway out from above suppress until its figure has decayed to reuse, so reuse must be lower; e.g. reuse = 375\n",
        "test.toml:23:72: router 'R2': field 'damping.penalty': 0 is out of range; penalty must be between 1 and 1000000 (a penalty figure)",
    )
);

invalid!(
    port_range_reversed,
    base(
        r#"
[[rule]]
name = "Web"
protocol = ["tcp"]
dst_port = ["2000-1000"]
action = "pass"
"#
    ),
    "test.toml:23:13: rule 'Web': field 'dst_port[0]': port range 2000-1000 is reversed; write \"1000-2000\""
);

invalid!(
    port_zero_and_out_of_range,
    base(
        r#"
[[rule]]
name = "Web"
protocol = ["udp"]
src_port = [0]
dst_port = [70000, "http"]
action = "pass"
"#
    ),
    concat!(
        "test.toml:23:13: rule 'Web': field 'src_port[0]': port 0 is not a real port; ports start at 1\n",
        "test.toml:24:13: rule 'Web': field 'dst_port[0]': port 70000 is out of range; ports are 1 to 65535\n",
        "test.toml:24:20: rule 'Web': field 'dst_port[1]': 'http' is not a port or range; write e.g. 443 or \"1000-2000\"",
    )
);

invalid!(
    dscp_above_63,
    base(
        r#"
[[rule]]
name = "Marked"
dscp = [46, 64]
action = "pass"
set_dscp = 64
"#
    ),
    concat!(
        "test.toml:22:13: rule 'Marked': field 'dscp[1]': 64 is out of range; dscp must be between 0 and 63 (6-bit DSCP values)\n",
        "test.toml:24:12: rule 'Marked': field 'set_dscp': 64 is out of range; set_dscp must be between 0 and 63 (6-bit DSCP values)",
    )
);

invalid!(
    set_dscp_on_block,
    base(
        r#"
[[rule]]
name = "Drop"
dst = ["192.0.2.0/24"]
action = "block"
set_dscp = 10
"#
    ),
    "test.toml:24:12: rule 'Drop': field 'set_dscp': a blocked packet is dropped, its DSCP cannot be set; remove set_dscp or change the action"
);

invalid!(
    network_with_host_bits,
    base(
        r#"
[[rule]]
name = "Net"
src = ["10.1.2.3/8"]
dst = ["10.0.0.0/33", "bogus"]
action = "pass"
"#
    ),
    concat!(
        "test.toml:22:8: rule 'Net': field 'src[0]': '10.1.2.3/8' has host bits set; write the network \"10.0.0.0/8\" (or \"10.1.2.3/32\" for the single host)\n",
        "test.toml:23:8: rule 'Net': field 'dst[0]': prefix length /33 is longer than /32; use /0 to /32\n",
        "test.toml:23:23: rule 'Net': field 'dst[1]': 'bogus' is not a network; write an address or address/prefix, e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\"",
    )
);

invalid!(
    unknown_protocol,
    base(
        r#"
[[rule]]
name = "Web"
protocol = ["tpc", 300]
action = "pass"
"#
    ),
    concat!(
        "test.toml:22:13: rule 'Web': field 'protocol[0]': unknown protocol 'tpc'; did you mean 'tcp'?\n",
        "test.toml:22:20: rule 'Web': field 'protocol[1]': protocol number 300 is out of range; use 0 to 255 or a name (icmp, tcp, udp, gre, esp, ah, icmpv6, sctp)",
    )
);

invalid!(
    ports_with_icmp,
    base(
        r#"
[[rule]]
name = "Ping"
protocol = ["icmp"]
dst_port = [80]
action = "pass"
"#
    ),
    "test.toml:22:13: rule 'Ping': field 'protocol[0]': protocol 'icmp' has no ports, so it never matches a rule with dst_port; move it to a rule without ports (only tcp, udp and sctp have ports)"
);

invalid!(
    icmp_with_ipv6_networks,
    base(
        r#"
[[rule]]
name = "Ping6"
protocol = ["icmp"]
dst = ["2001:db8::/32"]
action = "pass"
"#
    ),
    "test.toml:22:13: rule 'Ping6': field 'protocol[0]': protocol 'icmp' is IPv4 only but this rule's networks are IPv6; use 'icmpv6' instead"
);

invalid!(
    source_and_destination_families_differ,
    base(
        r#"
[[rule]]
name = "Mixed"
src = ["10.0.0.0/8"]
dst = ["2001:db8::/32"]
action = "pass"
"#
    ),
    "test.toml:23:7: rule 'Mixed': field 'dst': only IPv6 destinations but only IPv4 sources: no packet has both; split this rule into one rule per family"
);

invalid!(
    empty_criterion_list,
    base(
        r#"
[[rule]]
name = "Empty"
src = []
action = "pass"
"#
    ),
    "test.toml:22:7: rule 'Empty': field 'src': empty list; remove src to match any source, or list values"
);

invalid!(
    duplicate_values_in_rule_lists,
    base(
        r#"
[[rule]]
name = "Dups"
protocol = ["tcp", 6]
dscp = [10, 10]
action = "pass"
"#
    ),
    concat!(
        "test.toml:22:20: rule 'Dups': field 'protocol[1]': protocol 'tcp' is already listed in protocol[0]; remove the duplicate\n",
        "test.toml:23:13: rule 'Dups': field 'dscp[1]': DSCP 10 is already listed in dscp[0]; remove the duplicate",
    )
);

invalid!(
    route_without_router,
    base(
        r#"
[[rule]]
name = "Web"
action = "route"
"#
    ),
    "test.toml:22:10: rule 'Web': field 'action': action \"route\" needs a router; add router = \"NAME\""
);

invalid!(
    router_with_pass_action,
    base(
        r#"
[[rule]]
name = "Web"
action = "pass"
router = "R1"
"#
    ),
    "test.toml:23:10: rule 'Web': field 'router': a router is only used with action = \"route\", but the action is \"pass\"; remove router or set action = \"route\""
);

invalid!(
    unknown_action,
    base(
        r#"
[[rule]]
name = "Web"
action = "allow"
"#
    ),
    "test.toml:22:10: rule 'Web': field 'action': unknown value 'allow'; use \"route\" or \"pass\" or \"block\""
);

invalid!(
    rule_missing_action,
    base(
        r#"
[[rule]]
dst_port = [80]
"#
    ),
    "test.toml:20:1: rule #1: field 'action': required field is missing; add action = \"route\" (with router = \"NAME\"), \"pass\" or \"block\""
);

invalid!(
    rule_shadowed_by_broader_rule,
    base(
        r#"
[[rule]]
name = "AllTCP"
protocol = ["tcp"]
action = "route"
router = "R1"

[[rule]]
name = "HTTP"
protocol = ["tcp"]
dst_port = [80, 443]
action = "block"
"#
    ),
    "test.toml:27:8: rule 'HTTP': can never match: rule 'AllTCP' (line 20) comes first and matches every packet this rule matches; remove this rule, move it above rule 'AllTCP', or narrow rule 'AllTCP'"
);

invalid!(
    rule_shadowed_by_union_of_ranges,
    base(
        r#"
[[rule]]
name = "Low"
src = ["10.0.0.0/8"]
dst_port = ["1-1024", "1025-2048"]
action = "pass"

[[rule]]
src = ["10.1.0.0/16"]
protocol = ["udp"]
dst_port = ["1000-2000"]
dscp = [46]
action = "block"
"#
    ),
    "test.toml:26:1: rule #2: can never match: rule 'Low' (line 20) comes first and matches every packet this rule matches; remove this rule, move it above rule 'Low', or narrow rule 'Low'"
);

invalid!(
    identical_rules,
    base(
        r#"
[[rule]]
name = "A"
dst = ["192.0.2.0/24"]
action = "pass"

[[rule]]
name = "B"
dst = ["192.0.2.0/24"]
action = "block"
"#
    ),
    "test.toml:26:8: rule 'B': can never match: rule 'A' (line 20) comes first and matches every packet this rule matches; remove this rule, move it above rule 'A', or narrow rule 'A'"
);

invalid!(
    duplicate_rule_name,
    base(
        r#"
[[rule]]
name = "A"
dst = ["192.0.2.0/24"]
action = "pass"

[[rule]]
name = "A"
dst = ["198.51.100.0/24"]
action = "pass"
"#
    ),
    "test.toml:26:8: rule 'A': field 'name': duplicate name: rule 'A' is already defined at line 20; give each rule a unique name"
);

invalid!(
    return_route_gateway_on_another_link,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "tun2"
kind = "tunnel"
address = "172.16.1.5/30"

[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"

[[return_route]]
link = "WAN1"
gateway = "GW2"
"#
    ),
    "test.toml:33:11: return_route #1: field 'gateway': gateway 'GW2' is on link 'WAN2', not on link 'WAN1'; replies must leave over the link they arrived on: use a gateway of link 'WAN1'"
);

invalid!(
    return_route_twice_for_a_link,
    base(
        r#"
[[return_route]]
link = "WAN1"
gateway = "GW1"

[[return_route]]
link = "WAN1"
gateway = "GW1"
"#
    ),
    "test.toml:25:8: return_route #2: field 'link': link 'WAN1' already has a return route at line 20; keep one per link"
);

invalid!(
    return_route_missing_gateway,
    base(
        r#"
[[return_route]]
link = "WAN9"
"#
    ),
    concat!(
        "test.toml:20:1: return_route #1: field 'gateway': required field is missing; add gateway = \"GATEWAY\"\n",
        "test.toml:21:8: return_route #1: field 'link': unknown link 'WAN9'; did you mean 'WAN1'? (or define it in a [[link]] section)",
    )
);

invalid!(
    hook_with_a_relative_command_unknown_event_and_long_timeout,
    base(
        r#"
[[hook]]
name = "notify"
command = "notify.sh"
on = ["gateway", "routr", "gateway"]
timeout = "2h"
"#
    ),
    concat!(
        "test.toml:22:11: hook 'notify': field 'command': 'notify.sh' is not an absolute path; hooks run with no search path and in /: write the full path, e.g. \"/usr/local/sbin/notify.sh\"\n",
        "test.toml:23:18: hook 'notify': field 'on[1]': unknown value 'routr'; did you mean \"router\"? (use \"gateway\" or \"router\" or \"reload\" or \"ipsec\")\n",
        "test.toml:23:27: hook 'notify': field 'on[2]': 'gateway' is already listed in on[0]; remove the duplicate\n",
        "test.toml:24:11: hook 'notify': field 'timeout': 2h is too long; a hook's timeout is at most 1h (a hook runs its events one at a time: one stuck run holds up the next)",
    )
);

invalid!(
    hook_without_name_or_command,
    base(
        r#"
[[hook]]
on = []
"#
    ),
    concat!(
        "test.toml:20:1: hook #1: field 'name': required field is missing; add name = \"...\" to this [[hook]]\n",
        "test.toml:20:1: hook #1: field 'command': required field is missing; add command = \"/usr/local/sbin/xwan-hook\"\n",
        "test.toml:21:6: hook #1: field 'on': empty list; remove on to match any event, or list values",
    )
);

invalid!(
    lan_interface_listed_twice,
    r#"[agent]
lan_interfaces = ["lan0", "lan1", "lan0"]
"#,
    "test.toml:2:35: agent: field 'lan_interfaces[2]': interface 'lan0' is already listed in lan_interfaces[0]; remove the duplicate"
);

invalid!(
    agent_values_invalid,
    r#"[agent]
lan_interfaces = ["lan0"]
metrics_listen = "localhost"
control_socket = "xwan.sock"
flow_idle = "five minutes"
flow_table_size = 100_000_000
"#,
    concat!(
        "test.toml:3:18: agent: field 'metrics_listen': 'localhost' is not an address and port; write e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"\n",
        "test.toml:4:18: agent: field 'control_socket': 'xwan.sock' is not an absolute path; write a path starting with '/', e.g. \"/run/xwan/control.sock\"\n",
        "test.toml:5:13: agent: field 'flow_idle': 'five minutes' is not a duration; write a number with a unit, e.g. \"300s\"\n",
        "test.toml:6:19: agent: field 'flow_table_size': 100000000 is out of range; flow_table_size must be between 4096 and 16777216 (flows; each takes about 280 bytes of kernel memory, 270 MiB per million)",
    )
);

invalid!(
    forwarding_mode_unknown,
    r#"[agent]
lan_interfaces = ["lan0"]
forwarding = "netfiltre"
"#,
    "test.toml:3:14: agent: field 'forwarding': unknown value 'netfiltre'; did you mean \"netfilter\"? (use \"xdp\" or \"netfilter\")"
);

invalid!(
    netfilter_values_invalid,
    r#"[agent]
lan_interfaces = ["lan0"]
forwarding = "netfilter"

[agent.netfilter]
mark_mask = 0xf0f0
first_table = 254
rule_priority = 32766
"#,
    concat!(
        "test.toml:6:13: agent: field 'netfilter.mark_mask': 0xf0f0 must be one run of bits with room for a mark per gateway (0) besides 0, e.g. 0x0fff0000\n",
        "test.toml:7:15: agent: field 'netfilter.first_table': table 254 would meet the kernel's own tables (253 default, 254 main, 255 local); choose tables above 255, e.g. 30000\n",
        "test.toml:8:17: agent: field 'netfilter.rule_priority': 32766 is out of range; rule_priority must be between 1 and 32765 (before the main table's rule, 32766)",
    )
);

invalid!(
    agent_as_array_of_tables,
    r#"[[agent]]
lan_interfaces = ["lan0"]
"#,
    "test.toml:1:3: agent: must be a single table; write it as [agent] (single brackets)"
);

invalid!(
    broken_gateway_is_not_reported_again_where_used,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
adress = "172.16.1.2"

[[router]]
name = "R2"
gateways = ["GW2", "GW3"]
"#
    ),
    concat!(
        "test.toml:23:1: gateway 'GW2': field 'adress': unknown field; did you mean 'address'?\n",
        "test.toml:27:20: router 'R2': field 'gateways[1]': unknown gateway 'GW3'; did you mean 'GW1'? (or define it in a [[gateway]] section)",
    )
);

invalid!(
    errors_are_collected_across_objects_in_file_order,
    base(
        r#"
[[gateway]]
name = "GW2"
link = "WAN1"
address = "172.16.1.9"
weight = 0

[[router]]
name = "R2"
gateways = ["GW2"]
tries = 0

[[rule]]
name = "R"
protocol = ["tcp"]
dst_port = ["443-80"]
action = "route"
router = "R3"
"#
    ),
    concat!(
        "test.toml:23:11: gateway 'GW2': field 'address': 172.16.1.9 is outside the subnet 172.16.1.0/30 of link 'WAN1' (172.16.1.1/30); use an address in 172.16.1.0/30 or attach the gateway to the link it is on\n",
        "test.toml:24:10: gateway 'GW2': field 'weight': 0 is out of range; weight must be between 1 and 1000 (to stop using a gateway, remove it from the router)\n",
        "test.toml:29:9: router 'R2': field 'tries': 0 is out of range; tries must be between 1 and 100 (consecutive failed probes that make a gateway Unavailable)\n",
        "test.toml:34:13: rule 'R': field 'dst_port[0]': port range 443-80 is reversed; write \"80-443\"\n",
        "test.toml:36:10: rule 'R': field 'router': unknown router 'R3'; define it in a [[router]] section or fix the name",
    )
);

invalid!(
    agent_unknown_field_does_not_hide_or_cascade,
    r#"[agent]
lan_interface = ["lan0"]

[[rule]]
in = ["lan0"]
action = "pass"
"#,
    "test.toml:2:1: agent: field 'lan_interface': unknown field; did you mean 'lan_interfaces'?"
);

// ---- warnings ----------------------------------------------------------------------------

suspicious!(
    netfilter_settings_without_netfilter_forwarding,
    "\n[agent.netfilter]\nmark_mask = 0xff00\n",
    concat!(
        "test.toml:11:8: link 'WAN2': no gateway uses this link; add a [[gateway]] with link = \"WAN2\", or remove the link\n",
        "test.toml:33:1: agent: field 'netfilter': has no effect with forwarding = \"xdp\"; remove it or set forwarding = \"netfilter\""
    )
);

// Web (tcp/80,443 → R1) takes the HTTPS part of a later rule that passes tcp/443,8443 to
// 10.0.0.0/8; a rule by DSCP after it overlaps it in another criterion only (no warning), and
// so does one by the same ports and the same outcome.
suspicious!(
    warn_partly_shadowed_rule,
    r#"
[[rule]]
name = "Sites"
dst = ["10.0.0.0/8"]
protocol = ["tcp"]
dst_port = [443, 8443]
action = "pass"

[[rule]]
name = "Voice"
dscp = [46]
action = "pass"

[[rule]]
name = "Alt"
protocol = ["tcp"]
dst_port = ["440-450"]
action = "route"
router = "R1"
"#,
    concat!(
        "test.toml:11:8: link 'WAN2': no gateway uses this link; add a [[gateway]] with link = \"WAN2\", or remove the link\n",
        "test.toml:34:8: rule 'Sites': partly shadowed: rule 'Web' (line 26) comes first and takes this rule's packets where their dst_port overlap, with another action; move this rule above rule 'Web' if those packets are meant for it, or narrow one of them"
    )
);

suspicious!(
    warn_empty_check,
    r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"
check = []

[[router]]
name = "R2"
gateways = ["GW2"]
on_failure = "drop"

[[rule]]
name = "R2"
dst = ["192.0.2.0/24"]
action = "route"
router = "R2"
"#,
    "test.toml:37:9: gateway 'GW2': field 'check': empty: the gateway is never probed and always counts as Ready, even when it is down; list targets to probe, or remove check to probe the gateway itself"
);

suspicious!(
    warn_fast_probing,
    r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"

[[router]]
name = "R2"
gateways = ["GW2"]
frequency = "500ms"
wait = "200ms"
on_failure = "drop"

[[rule]]
dst = ["192.0.2.0/24"]
action = "route"
router = "R2"
"#,
    "test.toml:41:13: router 'R2': field 'frequency': probing every 500ms is very frequent: it adds load and turns brief jitter into failovers; use 1s or more unless sub-second failover is required"
);

suspicious!(
    warn_default_route_fallback_without_backups,
    r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"

[[router]]
name = "R2"
gateways = ["GW2"]

[[rule]]
dst = ["192.0.2.0/24"]
action = "route"
router = "R2"
"#,
    "test.toml:39:8: router 'R2': field 'on_failure': no backups, and on_failure defaults to \"default-route\": when the main gateways are down, this router's traffic leaves by the kernel's default route; add backups, set on_failure = \"drop\" if it must not leave another way, or write on_failure = \"default-route\" to confirm"
);

suspicious!(
    warn_backup_options_without_effect,
    r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"

[[router]]
name = "R2"
gateways = ["GW1"]
backups = ["GW2"]
activate_all_backups = true

[[router]]
name = "R3"
gateways = ["GW2"]
backup_threshold = 1
on_failure = "drop"

[[rule]]
dst = ["192.0.2.0/24"]
action = "route"
router = "R2"

[[rule]]
dst = ["198.51.100.0/24"]
action = "route"
router = "R3"
"#,
    concat!(
        "test.toml:42:24: router 'R2': field 'activate_all_backups': has no effect with 1 backup; remove it or add backups\n",
        "test.toml:47:20: router 'R3': field 'backup_threshold': has no effect: this router has no backups; remove it or add backups",
    )
);

suspicious!(
    warn_weights_ignored_without_load_balancing,
    r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"

[[router]]
name = "R2"
gateways = ["GW1", { gateway = "GW2", weight = 5 }]
load_balancing = "none"
on_failure = "drop"

[[rule]]
dst = ["192.0.2.0/24"]
action = "route"
router = "R2"
"#,
    "test.toml:40:48: router 'R2': field 'gateways[1].weight': ignored: load_balancing = \"none\" sends everything to the first Ready gateway; remove the weights or use load_balancing = \"connection\""
);

suspicious!(
    warn_quality_settings_without_best_quality,
    r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"

[[router]]
name = "R2"
gateways = ["GW1", { gateway = "GW2", weight = 5 }]
load_balancing = "best-quality"
on_failure = "drop"

[[router]]
name = "R3"
gateways = ["GW1"]
quality_margin = "20ms"
on_failure = "drop"

[[rule]]
dst = ["192.0.2.0/24"]
action = "route"
router = "R2"

[[rule]]
dst = ["198.51.100.0/24"]
action = "route"
router = "R3"
"#,
    concat!(
        "test.toml:40:48: router 'R2': field 'gateways[1].weight': ignored: load_balancing = \"best-quality\" sends new connections to the gateway of best quality; remove the weights or use load_balancing = \"connection\"\n",
        "test.toml:47:18: router 'R3': field 'quality_margin': has no effect: only load_balancing = \"best-quality\" compares the gateways' quality; remove it or set load_balancing = \"best-quality\"",
    )
);

suspicious!(
    warn_unused_objects,
    r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"
check = ["192.0.2.1"]

[[link]]
name = "WAN3"
interface = "tun3"
kind = "tunnel"

[[router]]
name = "Idle"
gateways = ["GW1"]
on_failure = "drop"
"#,
    concat!(
        "test.toml:34:8: gateway 'GW2': not used by any router or return_route; add it to a router's gateways or backups, or remove it\n",
        "test.toml:40:8: link 'WAN3': no gateway uses this link; add a [[gateway]] with link = \"WAN3\", or remove the link\n",
        "test.toml:45:8: router 'Idle': no rule routes to this router; add a [[rule]] with action = \"route\" and router = \"Idle\", or remove the router",
    )
);

suspicious!(
    warn_sla_thresholds_that_cannot_work,
    r#"
[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.1.6"

[[router]]
name = "R2"
gateways = ["GW2"]
on_failure = "drop"
sla = { rtt = "3s", loss = 5.0, window = 10 }

[[rule]]
dst = ["192.0.2.0/24"]
action = "route"
router = "R2"
"#,
    concat!(
        "test.toml:42:15: router 'R2': field 'sla.rtt': never exceeded: a probe slower than wait (2s) counts as lost; set sla.rtt below wait or raise wait\n",
        "test.toml:42:28: router 'R2': field 'sla.loss': one lost probe in a window of 10 is already 10% loss, above 5%: any single loss breaks the SLA; raise sla.window or sla.loss, or set sla.loss = 0 if that is intended",
    )
);

// ---- IPsec tunnel links ----------------------------------------------------------------------

invalid!(
    vti_link_needs_endpoints_and_key,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "vti2"
kind = "vti"
address = "172.16.1.5/30"
"#
    ),
    concat!(
        "test.toml:20:1: link 'WAN2': field 'local': required field is missing; add local = \"192.0.2.1\"\n",
        "test.toml:20:1: link 'WAN2': field 'remote': required field is missing; add remote = \"192.0.2.2\"\n",
        "test.toml:20:1: link 'WAN2': field 'key': required field is missing; add key = 101",
    )
);

invalid!(
    vti_link_field_errors,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "vti2"
kind = "vti"
local = "192.0.2.1"
remote = "2001:db8::2"
key = 0
if_id = 4
owner = "strongswan"
"#
    ),
    concat!(
        "test.toml:25:10: link 'WAN2': field 'remote': 2001:db8::2 is IPv6 but local 192.0.2.1 is IPv4; both ends of the underlay must be of one family\n",
        "test.toml:26:7: link 'WAN2': field 'key': 0 is out of range; key must be between 1 and 4294967295; it is the xfrm mark or if_id of the link's SAs and policies\n",
        "test.toml:27:9: link 'WAN2': field 'if_id': a vti link has no if_id; write key = 4 instead\n",
        "test.toml:28:9: link 'WAN2': field 'owner': unknown value 'strongswan'; use \"xwan\" or \"external\"",
    )
);

invalid!(
    xfrm_link_endpoint_errors,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "ipsec2"
kind = "xfrm"
address = "172.16.1.5/30"
local = "192.0.2.300"
remote = "0.0.0.0"
key = 7
"#
    ),
    concat!(
        "test.toml:20:1: link 'WAN2': field 'if_id': required field is missing; add if_id = 101\n",
        "test.toml:25:9: link 'WAN2': field 'local': '192.0.2.300' is not an IP address; write the underlay address, e.g. \"192.0.2.1\"\n",
        "test.toml:26:10: link 'WAN2': field 'remote': 0.0.0.0 cannot be a tunnel endpoint; use the unicast address of the underlay\n",
        "test.toml:27:7: link 'WAN2': field 'key': an xfrm link has no key; write if_id = 7 instead",
    )
);

invalid!(
    ipsec_fields_on_a_plain_tunnel,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "tun2"
kind = "tunnel"
remote = "192.0.2.2"
manual_sa = { spi_in = 4096 }
"#
    ),
    concat!(
        "test.toml:24:10: link 'WAN2': field 'remote': only IPsec tunnel links have remote; set kind = \"vti\" or \"xfrm\", or remove it\n",
        "test.toml:25:13: link 'WAN2': field 'manual_sa': only IPsec tunnel links have manual_sa; set kind = \"vti\" or \"xfrm\", or remove it",
    )
);

invalid!(
    two_ipsec_links_with_one_key,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "vti2"
kind = "vti"
address = "172.16.1.5/30"
local = "192.0.2.1"
remote = "192.0.2.2"
key = 101

[[link]]
name = "WAN3"
interface = "vti3"
kind = "vti"
address = "172.16.1.9/30"
local = "198.51.100.1"
remote = "198.51.100.2"
key = 101
"#
    ),
    "test.toml:36:7: link 'WAN3': field 'key': 101 is already the key or if_id of link 'WAN2'; each IPsec link needs its own (it selects the link's SAs and policies)"
);

invalid!(
    manual_sa_errors,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "vti2"
kind = "vti"
address = "172.16.1.5/30"
local = "192.0.2.1"
remote = "192.0.2.2"
key = 102
manual_sa = { spi_in = 100, spi_out = 0x1000, aead = "aes128gcm", key_file = "keys/wan2" }

[[link]]
name = "WAN3"
interface = "vti3"
kind = "vti"
address = "172.16.1.9/30"
local = "198.51.100.1"
remote = "198.51.100.2"
key = 103
manual_sa = { spi_in = 0x2000, spi_out = 0x2000, aead = "aes128gcm16", cipher = "aes128", key_file = "/k" }

[[link]]
name = "WAN4"
interface = "vti4"
kind = "vti"
address = "172.16.1.13/30"
local = "203.0.113.1"
remote = "203.0.113.2"
key = 104
manual_sa = { spi_in = 0x3000, spi_out = 0x3001, cipher = "aes128", key_fle = "/k" }
"#
    ),
    concat!(
        "test.toml:28:24: link 'WAN2': field 'manual_sa.spi_in': 100 is out of range; spi_in must be between 256 and 4294967295 (SPIs 1 to 255 are reserved by RFC 4303)\n",
        "test.toml:28:54: link 'WAN2': field 'manual_sa.aead': unknown value 'aes128gcm'; did you mean \"aes128gcm16\"? (use \"aes128gcm16\" or \"aes192gcm16\" or \"aes256gcm16\" or \"chacha20poly1305\")\n",
        "test.toml:28:78: link 'WAN2': field 'manual_sa.key_file': 'keys/wan2' is a relative path; write the absolute path of the key file\n",
        "test.toml:38:42: link 'WAN3': field 'manual_sa.spi_out': 0x2000 is also spi_in; each direction needs its own SPI\n",
        "test.toml:38:81: link 'WAN3': field 'manual_sa.aead': aead and cipher/auth exclude each other; keep aead = \"aes128gcm16\" alone, or cipher and auth without aead\n",
        "test.toml:48:69: link 'WAN4': field 'manual_sa.key_fle': unknown field; did you mean 'key_file'?",
    )
);

/// The IPsec examples are the seed scenario with VTIs xwan creates: same routers, gateways,
/// rules; each branch link's SPIs are the head office's, swapped.
#[test]
fn ipsec_examples_mirror_each_other() {
    let (b, _) = load_example("ipsec/branch-manual-keys.toml");
    let (h, _) = load_example("ipsec/headoffice-manual-keys.toml");
    let (seed, _) = load_example("seed-branch.toml");
    assert_eq!(
        (&b.routers, &b.rules, &b.gateways),
        (&seed.routers, &seed.rules, &seed.gateways)
    );
    for (lb, lh) in b.links.iter().zip(&h.links) {
        let (tb, th) = (lb.ipsec.as_ref().unwrap(), lh.ipsec.as_ref().unwrap());
        assert_eq!(
            (tb.local, tb.remote, tb.device),
            (th.remote, th.local, th.device)
        );
        let (mb, mh) = (
            tb.manual_sa.as_ref().unwrap(),
            th.manual_sa.as_ref().unwrap(),
        );
        assert_eq!((mb.spi_in, mb.spi_out), (mh.spi_out, mh.spi_in));
    }
    let (s, _) = load_example("ipsec/branch-strongswan.toml");
    assert!(
        s.links
            .iter()
            .all(|l| l.ipsec.as_ref().is_some_and(|t| t.manual_sa.is_none()))
    );
}

#[test]
fn hooks_resolve_with_their_defaults_and_describe() {
    let text = base(
        r#"
[[hook]]
name = "notify"
command = "/usr/local/sbin/notify"
args = ["--channel", "noc ops"]

[[hook]]
name = "dns"
command = "/usr/local/sbin/dns-switch"
on = ["router"]
timeout = "30s"
"#,
    );
    let (c, _) = config::parse(&text, "test.toml").unwrap();
    use xwan::events::Kind;
    let h = &c.hooks;
    assert_eq!(h.len(), 2);
    assert_eq!(
        (h[0].name.as_str(), h[0].command.as_path(), &h[0].args[..]),
        (
            "notify",
            Path::new("/usr/local/sbin/notify"),
            &["--channel".to_owned(), "noc ops".to_owned()][..]
        )
    );
    assert_eq!(
        h[0].on,
        [Kind::Gateway, Kind::Router, Kind::Reload, Kind::Ipsec],
        "every kind by default"
    );
    assert_eq!(h[0].timeout, config::DEFAULT_HOOK_TIMEOUT);
    assert_eq!(
        (&h[1].on[..], h[1].timeout),
        (&[Kind::Router][..], Duration::from_secs(30))
    );
    let d = c.describe();
    assert!(
        d.ends_with(
            "hooks (2)\n  notify: on gateway, router, reload, ipsec run /usr/local/sbin/notify \"--channel\" \"noc ops\" (timeout 10s)\n  dns: on router run /usr/local/sbin/dns-switch (timeout 30s)\n"
        ),
        "{d}"
    );
}

#[test]
fn ipsec_links_resolve_and_describe() {
    let text = base(
        r#"
[[link]]
name = "TunWAN2"
interface = "vti2"
kind = "vti"
address = "172.16.1.5/30"
local = "192.0.2.1"
remote = "192.0.2.2"
key = 102
mtu = 1400
manual_sa = { spi_in = 0xb0000002, spi_out = 0xa0000002, cipher = "aes256", auth = "sha256", key_file = "/etc/xwan/keys/wan2.keys" }

[[link]]
name = "TunWAN3"
interface = "ipsec3"
kind = "xfrm"
local = "2001:db8::1"
remote = "2001:db8::2"
if_id = 3
owner = "external"
"#,
    );
    let (c, _) = config::parse(&text, "test.toml").unwrap();
    let t = c.links[1].ipsec.as_ref().unwrap();
    assert_eq!(c.links[1].kind, LinkKind::Tunnel);
    assert_eq!(t.device, config::TunnelDevice::Vti { key: nz(102) });
    let m = t.manual_sa.as_ref().unwrap();
    assert_eq!((m.spi_in, m.spi_out), (0xb000_0002, 0xa000_0002));
    assert_eq!(
        m.algorithms,
        config::SaAlgorithms::CipherAuth {
            cipher: config::Cipher::Aes256Cbc,
            auth: config::Auth::Sha256
        }
    );
    let x = c.links[2].ipsec.as_ref().unwrap();
    assert_eq!(x.device, config::TunnelDevice::Xfrm { if_id: nz(3) });
    assert_eq!(x.owner, config::Owner::External);
    assert!(x.manual_sa.is_none());
    let d = c.describe();
    for want in [
        "  TunWAN2: tunnel on vti2, address 172.16.1.5/30, mtu 1400\n    vti 192.0.2.1 -> 192.0.2.2, key 102, created by xwan\n    manual SAs: spi in 0xb0000002, out 0xa0000002, aes256-sha256, keys in /etc/xwan/keys/wan2.keys\n",
        "  TunWAN3: tunnel on ipsec3, mtu of the interface\n    xfrm 2001:db8::1 -> 2001:db8::2, if_id 3, owned by another program, read only\n    SAs: negotiated by an IKE daemon, read only\n",
    ] {
        assert!(d.contains(want), "{want}\nnot in\n{d}");
    }
}

// ---- examples ------------------------------------------------------------------------------

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn load_example(name: &str) -> (Config, Vec<Warning>) {
    config::load(&example(name)).unwrap_or_else(|e| panic!("{name} is invalid:\n{e}"))
}

#[test]
fn examples_validate_without_errors_or_warnings() {
    for name in [
        "seed-branch.toml",
        "seed-headoffice.toml",
        "minimal.toml",
        "hub.toml",
        "ipsec/branch-strongswan.toml",
        "ipsec/headoffice-strongswan.toml",
        "ipsec/branch-manual-keys.toml",
        "ipsec/headoffice-manual-keys.toml",
    ] {
        let (_, warnings) = load_example(name);
        let shown: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        assert!(shown.is_empty(), "{name}: {shown:#?}");
    }
}

/// The hub example: hundreds of tunnels, one gateway each, a router per branch.
#[test]
fn hub_example_has_a_router_per_branch_over_its_two_tunnels() {
    let (c, _) = load_example("hub.toml");
    assert_eq!((c.links.len(), c.gateways.len()), (250, 250));
    assert_eq!((c.routers.len(), c.rules.len()), (125, 125));
    assert!(c.links.iter().all(|l| l.kind == LinkKind::Tunnel));
    let r = c.router(c.router_by_name("Branch042").unwrap());
    let gw = |n: &str| c.gateway_by_name(n).unwrap();
    assert_eq!(
        (r.mains[0].gateway, r.backups[0].gateway),
        (gw("B042-GW1"), gw("B042-GW2"))
    );
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

#[test]
fn seed_branch_resolves_as_designed() {
    let (c, _) = load_example("seed-branch.toml");
    let gw = |n: &str| c.gateway_by_name(n).unwrap();
    let member = |n: &str, w: u32| Member {
        gateway: gw(n),
        weight: nz(w),
    };
    assert_eq!(c.agent.lan_interfaces, ["lan0"]);
    assert_eq!(c.links.len(), 3);
    for (i, (link, local, remote)) in [
        ("TunWAN1", "172.16.1.1", "172.16.1.2"),
        ("TunWAN2", "172.16.1.5", "172.16.1.6"),
        ("TunWAN3", "172.16.1.9", "172.16.1.10"),
    ]
    .into_iter()
    .enumerate()
    {
        let l = c.link(c.link_by_name(link).unwrap());
        assert_eq!(l.kind, LinkKind::Tunnel);
        let a = l.address.unwrap();
        assert_eq!((a.addr.to_string(), a.prefix_len), (local.to_owned(), 30));
        let g = c.gateway(gw(&format!("RemoteTunWAN{}", i + 1)));
        assert_eq!(g.address.to_string(), remote);
        assert_eq!(c.link(g.link).name, link);
        assert_eq!(g.check, vec![g.address]);
    }

    let http = c.router(c.router_by_name("HTTPRouter").unwrap());
    assert_eq!(http.mains, [member("RemoteTunWAN1", 1)]);
    assert!(http.backups.is_empty());
    assert_eq!(http.options.on_failure, OnFailure::Drop);

    let prod = c.router(c.router_by_name("ProductionRouter").unwrap());
    assert_eq!(prod.mains, [member("RemoteTunWAN2", 1)]);
    assert_eq!(
        prod.backups,
        [member("RemoteTunWAN1", 50), member("RemoteTunWAN3", 10)]
    );
    assert!(prod.options.activate_all_backups);
    assert_eq!(prod.options.on_failure, OnFailure::DefaultRoute);

    let voip_id = c.router_by_name("VoIPRouter").unwrap();
    let voip = c.router(voip_id);
    assert_eq!(voip.mains, [member("RemoteTunWAN3", 1)]);
    assert_eq!(voip.backups, [member("RemoteTunWAN2", 1)]);
    assert!(!voip.options.activate_all_backups);

    let names: Vec<_> = c.rules.iter().map(|r| r.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["HTTP", "FTP", "SQL", "VoIP"]);
    let r = &c.rules[3];
    assert_eq!(r.criteria.protocols, [17]);
    assert_eq!(
        r.criteria.dst_ports,
        [
            PortRange::single(5060),
            PortRange::new(10000, 20000).unwrap()
        ]
    );
    assert_eq!(r.action, RuleAction::Route(voip_id));
    assert_eq!(
        r.action.to_plan(),
        xwan_common::plan::Action::Route(voip_id.0)
    );
    assert_eq!(r.set_dscp, Some(18));
    assert_eq!(
        c.rules[1].criteria.dst_ports,
        [PortRange::new(20, 21).unwrap()]
    );
    assert!(c.rules[..3].iter().all(|r| r.set_dscp.is_none()));
    assert!(c.return_routes.is_empty());
}

#[test]
fn seed_headoffice_returns_over_the_arrival_link() {
    let (c, _) = load_example("seed-headoffice.toml");
    assert!(c.rules.is_empty());
    assert!(c.routers.is_empty());
    assert_eq!(c.return_routes.len(), 3);
    for (i, rr) in c.return_routes.iter().enumerate() {
        let link = c.link(rr.link);
        let gateway = c.gateway(rr.gateway);
        assert_eq!(link.name, format!("TunWAN{}", i + 1));
        assert_eq!(gateway.name, format!("LocalTunWAN{}", i + 1));
        assert_eq!(gateway.link, rr.link);
        assert!(link.address.unwrap().network().contains(gateway.address));
    }
}

/// A reload keeps what only a start can change (bound sockets, made maps) and names it;
/// everything else takes the file's value.
#[test]
fn a_reload_keeps_the_settings_read_at_start() {
    let (running, _) = load_example("minimal.toml");
    let mut reloaded = running.agent.clone();
    reloaded.metrics_listen = "127.0.0.1:9100".parse().unwrap();
    reloaded.bpffs = PathBuf::from("/sys/fs/bpf/other");
    reloaded.flow_table_size = 1_000_000;
    reloaded.flow_idle = Duration::from_secs(60);
    let changed = reloaded.keep_start_only(&running.agent);
    assert_eq!(changed, ["metrics_listen", "bpffs", "flow_table_size"]);
    assert_eq!(reloaded.metrics_listen, running.agent.metrics_listen);
    assert_eq!(reloaded.bpffs, running.agent.bpffs);
    assert_eq!(reloaded.flow_table_size, running.agent.flow_table_size);
    assert_eq!(
        reloaded.flow_idle,
        Duration::from_secs(60),
        "not a start-only setting"
    );
    let mut same = running.agent.clone();
    assert!(same.keep_start_only(&running.agent).is_empty());
}

#[test]
fn defaults_follow_design() {
    let (c, _) = load_example("minimal.toml");
    let a = &c.agent;
    assert_eq!(a.metrics_listen.to_string(), "127.0.0.1:9464");
    assert_eq!(a.control_socket, Path::new("/run/xwan/control.sock"));
    assert_eq!(a.bpffs, Path::new("/sys/fs/bpf/xwan"));
    assert_eq!(a.flow_idle, Duration::from_secs(300));
    assert_eq!(a.flow_table_size, 262_144);
    let g = &c.gateways[0];
    assert_eq!(g.weight, nz(1));
    assert_eq!(g.check, vec![g.address]);
    assert_eq!(g.monitor, Monitor::Icmp);
    assert_eq!(c.links[0].mtu, None);
    let r = &c.routers[0];
    assert_eq!(r.frequency, Duration::from_secs(15));
    assert_eq!(r.wait, Duration::from_secs(2));
    assert_eq!(r.tries, nz(3));
    assert_eq!(r.recover, nz(1));
    assert_eq!(r.options.backup_threshold, 1);
    assert!(!r.options.activate_all_backups);
    assert_eq!(r.options.load_balancing, LoadBalancing::Connection);
    assert_eq!(r.options.on_failure, OnFailure::DefaultRoute);
    assert_eq!(r.options.failback, Failback::NewConnections);
    assert_eq!(r.sla, None);

    // A router that sets nothing but its gateways gets the same defaults.
    let (c, _) = config::parse(BASE, "t.toml").unwrap();
    let r = &c.routers[0];
    assert_eq!(
        (r.frequency, r.wait, r.tries, r.recover),
        (
            Duration::from_secs(15),
            Duration::from_secs(2),
            nz(3),
            nz(1)
        )
    );
    assert_eq!(
        (r.options.load_balancing, r.options.failback),
        (LoadBalancing::Connection, Failback::NewConnections)
    );
    // Without on_failure the router hands traffic to the kernel.
    let text = BASE.replace("on_failure = \"drop\"\n", "");
    let (c, _) = config::parse(&text, "t.toml").unwrap();
    assert_eq!(c.routers[0].options.on_failure, OnFailure::DefaultRoute);
    assert_eq!(config::DEFAULT_FREQUENCY, Duration::from_secs(15));
    assert_eq!(config::DEFAULT_WAIT, Duration::from_secs(2));
    assert_eq!((config::DEFAULT_TRIES, config::DEFAULT_RECOVER), (3, 1));
}

#[test]
fn describe_seed_branch() {
    let (c, _) = load_example("seed-branch.toml");
    assert_eq!(c.describe(), SEED_BRANCH_PLAN);
}

const SEED_BRANCH_PLAN: &str = "\
agent
  lan interfaces: lan0
  metrics: 127.0.0.1:9464
  control socket: /run/xwan/control.sock
  bpffs: /sys/fs/bpf/xwan
  flow idle: 5m
  flow table: 262144 flows
  forwarding: xdp: steered traffic bypasses netfilter (no firewall or NAT)
links (3)
  TunWAN1: tunnel on vti-wan1, address 172.16.1.1/30, mtu of the interface
  TunWAN2: tunnel on vti-wan2, address 172.16.1.5/30, mtu of the interface
  TunWAN3: tunnel on vti-wan3, address 172.16.1.9/30, mtu of the interface
gateways (3)
  [0] RemoteTunWAN1: 172.16.1.2 via link TunWAN1, weight 1, monitor icmp, check 172.16.1.2
  [1] RemoteTunWAN2: 172.16.1.6 via link TunWAN2, weight 1, monitor icmp, check 172.16.1.6
  [2] RemoteTunWAN3: 172.16.1.10 via link TunWAN3, weight 1, monitor icmp, check 172.16.1.10
routers (3)
  [0] HTTPRouter
    main: RemoteTunWAN1 (weight 1)
    backup: none
    probes: every 15s, retry after 2s; Unavailable after 3 consecutive failures, Ready after 1 success
    load balancing: connection; on failure: drop; failback: new-connections
  [1] ProductionRouter
    main: RemoteTunWAN2 (weight 1)
    backup: RemoteTunWAN1 (weight 50), RemoteTunWAN3 (weight 10)
    backups used: all Ready backups, when no main gateway is Ready
    probes: every 15s, retry after 2s; Unavailable after 3 consecutive failures, Ready after 1 success
    load balancing: connection; on failure: default-route; failback: new-connections
  [2] VoIPRouter
    main: RemoteTunWAN3 (weight 1)
    backup: RemoteTunWAN2 (weight 1)
    backups used: the first Ready backup, when no main gateway is Ready
    probes: every 15s, retry after 2s; Unavailable after 3 consecutive failures, Ready after 1 success
    load balancing: connection; on failure: default-route; failback: new-connections
rules (4, first match wins; unmatched traffic goes to the kernel)
  #1 HTTP: protocol tcp; dst port 80, 443 => route via HTTPRouter
  #2 FTP: protocol tcp; dst port 20-21 => route via HTTPRouter
  #3 SQL: protocol tcp; dst port 1433, 3306, 5432 => route via ProductionRouter
  #4 VoIP: protocol udp; dst port 5060, 10000-20000 => route via VoIPRouter, set dscp 18
return routes (0)
";

const EVERY_OPTION: &str = r#"
[agent]
lan_interfaces = ["lan0", "lan1"]
metrics_listen = "[::1]:9100"
control_socket = "/run/edge/control.sock"
bpffs = "/sys/fs/bpf/edge"
flow_idle = "0s"
flow_table_size = 1_000_000
forwarding = "netfilter"

[agent.netfilter]
mark_mask = 0xff00
first_table = 1000
rule_priority = 900

[[link]]
name = "Fibre"
interface = "eth0"
kind = "ethernet"
address = "192.0.2.1/24"
mtu = 1500

[[link]]
name = "Tun6"
interface = "wg0"
kind = "tunnel"
address = "2001:db8:1::1/64"
mtu = 1420

[[link]]
name = "LTE"
interface = "wwan0"
kind = "tunnel"

[[gateway]]
name = "ISP1"
link = "Fibre"
address = "192.0.2.254"
weight = 3
monitor = "tcp:443"
check = ["192.0.2.254", "198.51.100.53"]
quorum = 1

[[gateway]]
name = "ISP2"
link = "Fibre"
address = "192.0.2.253"
check = []

[[gateway]]
name = "V6"
link = "Tun6"
address = "2001:db8:1::2"

[[gateway]]
name = "Mobile"
link = "LTE"
address = "10.64.0.1"

[[router]]
name = "Internet"
gateways = ["ISP1", { gateway = "ISP2", weight = 2 }]
backups = ["Mobile"]
frequency = "5s"
wait = "1s"
tries = 5
recover = 3
backup_threshold = 2
load_balancing = "source"
on_failure = "default-route"
failback = "all"
sla = { rtt = "150ms", jitter = "30ms", loss = 10.0, window = 20 }
sla_alarm = { rtt = "80ms", loss = 2.0 }
damping = { half_life = "5m", penalty = 1000, suppress = 3000, reuse = 800 }

[[router]]
name = "Six"
gateways = ["V6"]
load_balancing = "none"
on_failure = "drop"

[[rule]]
name = "Blocked"
src = ["10.0.0.13"]
action = "block"

[[rule]]
name = "Voice"
in = ["lan1"]
dscp = [46, 34]
protocol = ["udp"]
src_port = ["16384-32767"]
action = "route"
router = "Internet"
set_dscp = 46

[[rule]]
name = "SixPing"
dst = ["2001:db8::/32"]
protocol = ["icmpv6"]
action = "route"
router = "Six"

[[rule]]
name = "Local"
dst = ["10.0.0.0/8", "172.16.0.0/12"]
action = "pass"
set_dscp = 0

[[rule]]
protocol = ["gre", 89]
action = "route"
router = "Internet"

[[return_route]]
link = "LTE"
gateway = "Mobile"
"#;

#[test]
fn describe_every_option() {
    let (c, warnings) = config::parse(EVERY_OPTION, "every.toml").unwrap_or_else(|e| panic!("{e}"));
    let warnings: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        [
            "every.toml:48:9: gateway 'ISP2': field 'check': empty: the gateway is never probed and \
          always counts as Ready, even when it is down; list targets to probe, or remove check \
          to probe the gateway itself"
        ]
    );
    assert_eq!(c.describe(), EVERY_OPTION_PLAN);
    let r = &c.routers[0];
    assert_eq!(
        r.sla,
        Some(Sla {
            rtt: Some(Duration::from_millis(150)),
            jitter: Some(Duration::from_millis(30)),
            loss: Some(10.0),
            window: nz(20),
        })
    );
    assert_eq!(
        c.gateways[0].monitor,
        Monitor::Tcp(NonZeroU16::new(443).unwrap())
    );
    assert_eq!(c.rules[0].criteria.src, ["10.0.0.13/32".parse().unwrap()]);
    assert_eq!(c.rules[1].criteria.ifaces, ["lan1"]);
    assert_eq!(c.rules[4].criteria.protocols, [47, 89]);
    assert_eq!(c.agent.flow_idle, Duration::ZERO);
    assert_eq!(c.agent.flow_table_size, 1_000_000);
}

const EVERY_OPTION_PLAN: &str = "\
agent
  lan interfaces: lan0, lan1
  metrics: [::1]:9100
  control socket: /run/edge/control.sock
  bpffs: /sys/fs/bpf/edge
  flow idle: never
  flow table: 1000000 flows
  forwarding: netfilter (the kernel forwards by mark: marks 0xff00, tables 1000–1003, rules at priority 900)
links (3)
  Fibre: ethernet on eth0, address 192.0.2.1/24, mtu 1500
  Tun6: tunnel on wg0, address 2001:db8:1::1/64, mtu 1420
  LTE: tunnel on wwan0, mtu of the interface
gateways (4)
  [0] ISP1: 192.0.2.254 via link Fibre, weight 3, monitor tcp:443, check 192.0.2.254, 198.51.100.53 (1 of 2 must answer)
  [1] ISP2: 192.0.2.253 via link Fibre, weight 1, monitor icmp, check none (always Ready)
  [2] V6: 2001:db8:1::2 via link Tun6, weight 1, monitor icmp, check 2001:db8:1::2
  [3] Mobile: 10.64.0.1 via link LTE, weight 1, monitor icmp, check 10.64.0.1
routers (2)
  [0] Internet
    main: ISP1 (weight 3), ISP2 (weight 2)
    backup: Mobile (weight 1)
    backups used: the first Ready backup, when fewer than 2 of 2 main gateways are Ready
    probes: every 5s, retry after 1s; Unavailable after 5 consecutive failures, Ready after 3 consecutive successes
    load balancing: source; on failure: default-route; failback: all
    sla: rtt 150ms, jitter 30ms, loss 10% over 20 probes (Unavailable beyond)
    sla_alarm: rtt 80ms, loss 2% over 10 probes (Degraded beyond)
    damping: penalty 1000 per loss, halving every 5m; out above 3000 until back to 800
  [1] Six
    main: V6 (weight 1)
    backup: none
    probes: every 15s, retry after 2s; Unavailable after 3 consecutive failures, Ready after 1 success
    load balancing: none; on failure: drop; failback: new-connections
rules (5, first match wins; unmatched traffic goes to the kernel)
  #1 Blocked: src 10.0.0.13/32 => block
  #2 Voice: in lan1; protocol udp; src port 16384-32767; dscp 46, 34 => route via Internet, set dscp 46
  #3 SixPing: dst 2001:db8::/32; protocol icmpv6 => route via Six
  #4 Local: dst 10.0.0.0/8, 172.16.0.0/12 => pass to kernel routing, set dscp 0
  #5: protocol gre, 89 => route via Internet
return routes (1)
  replies to connections arriving over LTE leave via Mobile
";

// ---- whole files ---------------------------------------------------------------------------

#[test]
fn brief_example_unknown_backup_gateway_in_the_seed() {
    let text = std::fs::read_to_string(example("seed-branch.toml"))
        .unwrap()
        .replace(
            "\"RemoteTunWAN3\", weight = 10",
            "\"RemoteTunWAN4\", weight = 10",
        );
    assert_eq!(
        errors_in(&text, "seed.toml"),
        "seed.toml:71:17: router 'ProductionRouter': field 'backups[1].gateway': unknown gateway \
         'RemoteTunWAN4'; define it in a [[gateway]] section or fix the name"
    );
}

#[test]
fn fixture_branch_with_seven_mistakes() {
    let e = config::load(Path::new("tests/config_errors/branch-typos.toml")).unwrap_err();
    assert_eq!(e.len(), 7);
    assert_eq!(e.to_string(), BRANCH_TYPOS);
}

const BRANCH_TYPOS: &str = concat!(
    "tests/config_errors/branch-typos.toml:32:11: link 'TunWAN2': field 'address': '172.16.1.5' \
     has no prefix length; write the address with its prefix, e.g. \"172.16.1.5/30\"\n",
    "tests/config_errors/branch-typos.toml:55:11: gateway 'RemoteTunWAN3': field 'address': \
     172.16.1.14 is outside the subnet 172.16.1.8/30 of link 'TunWAN3' (172.16.1.9/30); use an \
     address in 172.16.1.8/30 or attach the gateway to the link it is on\n",
    "tests/config_errors/branch-typos.toml:70:17: router 'ProductionRouter': field \
     'backups[1].gateway': unknown gateway 'RemoteTunWAN4'; define it in a [[gateway]] section \
     or fix the name\n",
    "tests/config_errors/branch-typos.toml:77:8: router 'VoIPRouter': field 'wait': wait (20s) \
     must be shorter than frequency (15s): an unanswered probe is retried after wait, before \
     the next one is due; lower wait or raise frequency\n",
    "tests/config_errors/branch-typos.toml:90:8: rule 'HTTPS': can never match: rule 'HTTP' \
     (line 82) comes first and matches every packet this rule matches; remove this rule, move \
     it above rule 'HTTP', or narrow rule 'HTTP'\n",
    "tests/config_errors/branch-typos.toml:106:13: rule 'SQL': field 'dst_port[0]': port range \
     5432-1433 is reversed; write \"1433-5432\"\n",
    "tests/config_errors/branch-typos.toml:116:12: rule 'VoIP': field 'set_dscp': 80 is out of \
     range; set_dscp must be between 0 and 63 (6-bit DSCP values)",
);

#[test]
fn fixture_syntax_errors_are_all_reported() {
    let e = config::load(Path::new("tests/config_errors/syntax.toml")).unwrap_err();
    assert_eq!(e.to_string(), SYNTAX);
}

const SYNTAX: &str = concat!(
    "tests/config_errors/syntax.toml:6:13: syntax error: a string is not closed; end it with '\"' \
     on the same line\n",
    "tests/config_errors/syntax.toml:12:1: syntax error: duplicate key 'name'; a key may appear \
     only once per table\n",
    "tests/config_errors/syntax.toml:14:9: syntax error: unclosed array table, expected ']]'; fix \
     the TOML syntax here",
);

#[test]
fn unreadable_file() {
    let e = config::load(Path::new("tests/config_errors/missing.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tests/config_errors/missing.toml: cannot read the configuration: No such file or \
         directory (os error 2)"
    );
}

#[test]
fn errors_carry_their_parts() {
    let e = config::parse(
        &base("[[router]]\nname = \"R2\"\ngateways = [\"GW1\"]\ntries = 0\n"),
        "t.toml",
    )
    .unwrap_err();
    let first = &e.errors[0];
    assert_eq!(first.file, "t.toml");
    assert_eq!(first.position, Some((22, 9)));
    assert_eq!(first.object.as_deref(), Some("router 'R2'"));
    assert_eq!(first.field.as_deref(), Some("tries"));
    assert!(first.message.starts_with("0 is out of range; "));
}

// ---- data-plane limits -----------------------------------------------------------------------

#[test]
fn too_many_rules() {
    let mut text = base("");
    for i in 0..=MAX_RULES {
        text += &format!(
            "[[rule]]\ndst = [\"10.{}.{}.0/24\"]\naction = \"pass\"\n",
            i / 256,
            i % 256
        );
    }
    let line = 19 + 3 * MAX_RULES;
    assert_eq!(
        errors(&text),
        format!(
            "test.toml:{line}:1: rule #{0}: too many rules: {0}; the data plane holds at most \
             {MAX_RULES}; merge rules (a rule takes lists of networks and ports)",
            MAX_RULES + 1
        )
    );
}

#[test]
fn too_many_gateways() {
    let mut text = String::from(
        "[agent]\nlan_interfaces = [\"lan0\"]\n[[link]]\nname = \"L\"\ninterface = \"eth0\"\n\
         kind = \"ethernet\"\naddress = \"10.0.0.1/16\"\n",
    );
    for i in 0..=MAX_GATEWAYS {
        text += &format!(
            "[[gateway]]\nname = \"G{i}\"\nlink = \"L\"\naddress = \"10.0.{}.{}\"\n",
            4 + i / 250,
            1 + i % 250
        );
    }
    let line = 8 + 4 * MAX_GATEWAYS as usize + 1;
    assert_eq!(
        errors(&text),
        format!(
            "test.toml:{line}:8: gateway 'G{MAX_GATEWAYS}': too many gateways: {}; the data \
             plane holds at most {MAX_GATEWAYS}; remove gateways",
            MAX_GATEWAYS + 1
        )
    );
}

#[test]
fn too_many_routers() {
    let mut text = base("");
    // BASE has one router: MAX_ROUTERS more are one too many.
    for i in 0..MAX_ROUTERS {
        text += &format!("[[router]]\nname = \"X{i}\"\ngateways = [\"GW1\"]\n");
    }
    let line = 19 + 3 * (MAX_ROUTERS as usize - 1) + 1;
    assert_eq!(
        errors(&text),
        format!(
            "test.toml:{line}:8: router 'X{}': too many routers: {}; the data plane holds at \
             most {MAX_ROUTERS}; merge routers",
            MAX_ROUTERS - 1,
            MAX_ROUTERS + 1
        )
    );
}

invalid!(
    gateway_address6_must_be_an_ipv6_next_hop_of_an_ipv4_ethernet_gateway,
    base(
        r#"
[[link]]
name = "WAN2"
interface = "eth2"
kind = "ethernet"
address = "172.16.2.1/30"

[[link]]
name = "WAN3"
interface = "eth3"
kind = "ethernet"
address = "2001:db8:3::1/64"

[[gateway]]
name = "GW2"
link = "WAN2"
address = "172.16.2.2"
address6 = "172.16.2.3"

[[gateway]]
name = "GW3"
link = "WAN1"
address = "172.16.1.2"
address6 = "fe80::1"

[[gateway]]
name = "GW4"
link = "WAN3"
address = "2001:db8:3::2"
address6 = "fe80::1"

[[gateway]]
name = "GW5"
link = "WAN2"
address = "172.16.2.2"
address6 = "fe80::/64"
"#
    ),
    concat!(
        "test.toml:36:12: gateway 'GW2': field 'address6': 172.16.2.3 is IPv4; write the next hop's IPv6 address, e.g. its link-local \"fe80::1\"\n",
        "test.toml:42:12: gateway 'GW3': field 'address6': link 'WAN1' is a tunnel, which carries both families without a next hop; remove address6\n",
        "test.toml:48:12: gateway 'GW4': field 'address6': address 2001:db8:3::2 is already IPv6 and carries this gateway's IPv6 traffic; remove address6\n",
        "test.toml:54:12: gateway 'GW5': field 'address6': 'fe80::/64' is a network; write the host address alone: \"fe80::\"",
    )
);

suspicious!(
    gateway_address6_with_xdp_forwarding,
    r#"
[[link]]
name = "WAN3"
interface = "eth3"
kind = "ethernet"
address = "172.16.3.1/30"

[[gateway]]
name = "GW3"
link = "WAN3"
address = "172.16.3.2"
address6 = "fe80::2"

[[router]]
name = "R3"
gateways = ["GW3"]
on_failure = "drop"

[[rule]]
dst = ["2001:db8::/32"]
action = "route"
router = "R3"
"#,
    concat!(
        "test.toml:11:8: link 'WAN2': no gateway uses this link; add a [[gateway]] with link = \"WAN2\", or remove the link\n",
        "test.toml:43:12: gateway 'GW3': field 'address6': has no effect with forwarding = \"xdp\": XDP sends both families to the MAC address of 172.16.3.2; remove it or set forwarding = \"netfilter\""
    )
);
