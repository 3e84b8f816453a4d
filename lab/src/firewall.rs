//! `--firewall`: both sites run the standard stateful forward policy of issue 19, and both
//! agents forward with `forwarding = "netfilter"`, so every steered connection goes through
//! the firewall (and anyone can watch its counters: `ip netns exec xwanlab-branch nft list
//! ruleset`).
//!
//! ```text
//! table inet fw { chain forward { type filter hook forward priority 0; policy drop;
//!   ct state established,related accept; ct state invalid counter drop;
//!   iifname "lan0" counter accept; counter } }
//! ```
//!
//! The head office also accepts new connections from the branch's tunnels to its LAN (a hub
//! serves its branches: without it the branch's clients could reach no server); every other
//! new connection from a WAN link is dropped there too.
//!
//! The branch masquerades what leaves by its Ethernet uplinks (WAN3 with the stand-in
//! tunnels), as an Internet uplink needs: the head office sees those connections come from
//! the branch's WAN3 address, and the branch's conntrack translates the replies back.
//!
//! What a reader may change: the rules, with the lab tests that count them
//! (`lab/tests/steering.rs`).

use anyhow::{Context, Result};

use crate::{
    netns::Netns,
    topology::{LAN_IF, LINKS},
};

/// The rule that counts the connections a site's firewall accepted: its comment.
pub const ACCEPTED_NEW: &str = "xwan-lab: new connection accepted";
/// The rule that counts what its firewall dropped as invalid.
pub const INVALID: &str = "xwan-lab: invalid dropped";
/// The rule that counts what the policy dropped.
pub const POLICY: &str = "xwan-lab: dropped by the policy";
/// The rule that masquerades the connections leaving by an uplink (NAT rules see the first
/// packet of each connection only: it counts connections).
pub const MASQUERADED: &str = "xwan-lab: masqueraded";

/// Installs the firewall of `site` (the head office when `hub`), masquerading what leaves by
/// the interfaces `uplinks`.
pub fn install(site: &Netns, hub: bool, uplinks: &[&str]) -> Result<()> {
    let wans: Vec<String> = LINKS.iter().map(|l| format!("\"{}\"", l.ifname)).collect();
    let hub_rule = if hub {
        format!(
            "iifname {{ {} }} oifname \"{LAN_IF}\" counter accept comment \"{ACCEPTED_NEW}\"\n",
            wans.join(", ")
        )
    } else {
        String::new()
    };
    let ruleset = format!(
        "table inet fw {{
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct state invalid counter drop comment \"{INVALID}\"
    iifname \"{LAN_IF}\" counter accept comment \"{ACCEPTED_NEW}\"
    {hub_rule}    counter comment \"{POLICY}\"
  }}
}}
"
    );
    let ruleset = if uplinks.is_empty() {
        ruleset
    } else {
        let names: Vec<String> = uplinks.iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "{ruleset}table ip nat {{
  chain post {{
    type nat hook postrouting priority 100;
    oifname {{ {} }} counter masquerade comment \"{MASQUERADED}\"
  }}
}}
",
            names.join(", ")
        )
    };
    site.exec("nft", &["-f", "-"], &ruleset)
        .with_context(|| format!("installing the firewall in {}", site.name()))?;
    Ok(())
}

/// Packets counted by the rules of `site`'s firewall whose comment is `comment` (summed).
pub fn counted(site: &Netns, comment: &str) -> Result<u64> {
    let rules = if comment == MASQUERADED {
        site.exec("nft", &["list", "chain", "ip", "nat", "post"], "")?
    } else {
        site.exec("nft", &["list", "chain", "inet", "fw", "forward"], "")?
    };
    Ok(rules
        .lines()
        .filter(|l| l.contains(comment))
        .filter_map(|l| {
            l.split("packets ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}
