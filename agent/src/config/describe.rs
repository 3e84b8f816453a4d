//! [`Config::describe`]: the resolved configuration as text, for `xwan check`. Tests pin
//! this output: change it deliberately.

use std::fmt::Write;

use humantime::format_duration;
use xwan_common::plan::{IpNet, PortRange};

use super::model::*;

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(", ")
}

fn nets(n: &[IpNet]) -> String {
    list(n, |n| n.to_string())
}

fn ports(p: &[PortRange]) -> String {
    list(p, |r| {
        if r.first() == r.last() {
            r.first().to_string()
        } else {
            format!("{}-{}", r.first(), r.last())
        }
    })
}

fn protocol(p: &u8) -> String {
    protocol_name(*p).map_or(p.to_string(), str::to_owned)
}

impl Config {
    /// A human-readable description of everything the agent will do with this
    /// configuration: ids, resolved references, defaults filled in. Ends with a newline.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_description(&mut s);
        s
    }

    fn write_description(&self, s: &mut String) -> std::fmt::Result {
        let a = &self.agent;
        writeln!(s, "agent")?;
        let lan = if a.lan_interfaces.is_empty() {
            "none".to_owned()
        } else {
            a.lan_interfaces.join(", ")
        };
        writeln!(s, "  lan interfaces: {lan}")?;
        writeln!(s, "  metrics: {}", a.metrics_listen)?;
        writeln!(s, "  control socket: {}", a.control_socket.display())?;
        writeln!(s, "  bpffs: {}", a.bpffs.display())?;
        if a.flow_idle.is_zero() {
            writeln!(s, "  flow idle: never")?;
        } else {
            writeln!(s, "  flow idle: {}", format_duration(a.flow_idle))?;
        }
        writeln!(s, "  flow table: {} flows", a.flow_table_size)?;
        match a.forwarding {
            Forwarding::Xdp => writeln!(s, "  forwarding: {}", a.forwarding.summary())?,
            Forwarding::Netfilter(n) => writeln!(
                s,
                "  forwarding: netfilter (the kernel forwards by mark: marks {:#x}, tables {}–{}, \
                 rules at priority {})",
                n.marks.mask(),
                n.first_table,
                n.first_table + (self.gateways.len() as u32).max(1) - 1,
                n.rule_priority
            )?,
        }

        writeln!(s, "links ({})", self.links.len())?;
        for l in &self.links {
            let kind = match l.kind {
                LinkKind::Tunnel => "tunnel",
                LinkKind::Ethernet => "ethernet",
            };
            write!(s, "  {}: {kind} on {}", l.name, l.interface)?;
            if let Some(addr) = l.address {
                write!(s, ", address {addr}")?;
            }
            match l.mtu {
                Some(m) => writeln!(s, ", mtu {m}")?,
                None => writeln!(s, ", mtu of the interface")?,
            }
            if let Some(t) = &l.ipsec {
                let id = match t.device {
                    TunnelDevice::Vti { key } => format!("key {key}"),
                    TunnelDevice::Xfrm { if_id } => format!("if_id {if_id}"),
                };
                let owner = match t.owner {
                    Owner::Xwan => "created by xwan",
                    Owner::External => "owned by another program, read only",
                };
                writeln!(
                    s,
                    "    {} {} -> {}, {id}, {owner}",
                    t.device.kind(),
                    t.local,
                    t.remote
                )?;
                match &t.manual_sa {
                    // The key file's path is shown, never its content.
                    Some(m) => writeln!(
                        s,
                        "    manual SAs: spi in {:#010x}, out {:#010x}, {}, keys in {}",
                        m.spi_in,
                        m.spi_out,
                        m.algorithms.name(),
                        m.key_file.display()
                    )?,
                    None => writeln!(s, "    SAs: negotiated by an IKE daemon, read only")?,
                }
            }
        }

        writeln!(s, "gateways ({})", self.gateways.len())?;
        for (i, g) in self.gateways.iter().enumerate() {
            let monitor = match g.monitor {
                Monitor::Icmp => "icmp".to_owned(),
                Monitor::Tcp(p) => format!("tcp:{p}"),
            };
            let check = match g.quorum {
                _ if g.check.is_empty() => "none (always Ready)".to_owned(),
                None => list(&g.check, |a| a.to_string()),
                Some(q) => format!(
                    "{} ({q} of {} must answer)",
                    list(&g.check, |a| a.to_string()),
                    g.check.len()
                ),
            };
            let address = match g.address6 {
                Some(a6) => format!("{} and {a6}", g.address),
                None => g.address.to_string(),
            };
            writeln!(
                s,
                "  [{i}] {}: {address} via link {}, weight {}, monitor {monitor}, check {check}",
                g.name,
                self.link(g.link).name,
                g.weight
            )?;
        }

        writeln!(s, "routers ({})", self.routers.len())?;
        for (i, r) in self.routers.iter().enumerate() {
            let members = |m: &[Member]| {
                if m.is_empty() {
                    "none".to_owned()
                } else {
                    list(m, |m| {
                        format!("{} (weight {})", self.gateway(m.gateway).name, m.weight)
                    })
                }
            };
            writeln!(s, "  [{i}] {}", r.name)?;
            writeln!(s, "    main: {}", members(&r.mains))?;
            writeln!(s, "    backup: {}", members(&r.backups))?;
            if !r.backups.is_empty() {
                let when = if r.options.backup_threshold == 1 {
                    "when no main gateway is Ready".to_owned()
                } else {
                    format!(
                        "when fewer than {} of {} main gateways are Ready",
                        r.options.backup_threshold,
                        r.mains.len()
                    )
                };
                let which = if r.options.activate_all_backups {
                    "all Ready backups"
                } else {
                    "the first Ready backup"
                };
                writeln!(s, "    backups used: {which}, {when}")?;
            }
            let plural =
                |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            writeln!(
                s,
                "    probes: every {}, retry after {}; Unavailable after {}, Ready after {}",
                format_duration(r.frequency),
                format_duration(r.wait),
                plural(r.tries.get(), "failure", "consecutive failures"),
                plural(r.recover.get(), "success", "consecutive successes"),
            )?;
            let o = &r.options;
            let margin = match o.load_balancing {
                LoadBalancing::BestQuality => format!(
                    " (switching past a margin of {} or 10 %)",
                    format_duration(r.quality_margin)
                ),
                _ => String::new(),
            };
            writeln!(
                s,
                "    load balancing: {}{margin}; on failure: {}; failback: {}",
                o.load_balancing.keyword(),
                o.on_failure.keyword(),
                o.failback.keyword()
            )?;
            for (name, sla) in [("sla", &r.sla), ("sla_alarm", &r.sla_alarm)] {
                let Some(sla) = sla else { continue };
                let mut parts = Vec::new();
                if let Some(d) = sla.rtt {
                    parts.push(format!("rtt {}", format_duration(d)));
                }
                if let Some(d) = sla.jitter {
                    parts.push(format!("jitter {}", format_duration(d)));
                }
                if let Some(l) = sla.loss {
                    parts.push(format!("loss {l}%"));
                }
                let then = if name == "sla" {
                    "Unavailable"
                } else {
                    "Degraded"
                };
                writeln!(
                    s,
                    "    {name}: {} over {} probes ({then} beyond)",
                    parts.join(", "),
                    sla.window
                )?;
            }
            if let Some(d) = &r.damping {
                writeln!(
                    s,
                    "    damping: penalty {} per loss, halving every {}; out above {} until \
                     back to {}",
                    d.penalty,
                    format_duration(d.half_life),
                    d.suppress,
                    d.reuse
                )?;
            }
        }

        writeln!(
            s,
            "rules ({}, first match wins; unmatched traffic goes to the kernel)",
            self.rules.len()
        )?;
        for (i, r) in self.rules.iter().enumerate() {
            let c = &r.criteria;
            let mut criteria = Vec::new();
            if !c.ifaces.is_empty() {
                criteria.push(format!("in {}", c.ifaces.join(", ")));
            }
            if !c.src.is_empty() {
                criteria.push(format!("src {}", nets(&c.src)));
            }
            if !c.dst.is_empty() {
                criteria.push(format!("dst {}", nets(&c.dst)));
            }
            if !c.protocols.is_empty() {
                criteria.push(format!("protocol {}", list(&c.protocols, protocol)));
            }
            if !c.src_ports.is_empty() {
                criteria.push(format!("src port {}", ports(&c.src_ports)));
            }
            if !c.dst_ports.is_empty() {
                criteria.push(format!("dst port {}", ports(&c.dst_ports)));
            }
            if !c.dscp.is_empty() {
                criteria.push(format!("dscp {}", list(&c.dscp, |d| d.to_string())));
            }
            let criteria = if criteria.is_empty() {
                "any packet".to_owned()
            } else {
                criteria.join("; ")
            };
            let mut action = match r.action {
                RuleAction::Route(id) => format!("route via {}", self.router(id).name),
                RuleAction::Pass => "pass to kernel routing".to_owned(),
                RuleAction::Block => "block".to_owned(),
            };
            if let Some(d) = r.set_dscp {
                write!(action, ", set dscp {d}")?;
            }
            let name = r.name.as_deref().map_or(String::new(), |n| format!(" {n}"));
            writeln!(s, "  #{}{name}: {criteria} => {action}", i + 1)?;
        }

        writeln!(s, "return routes ({})", self.return_routes.len())?;
        for r in &self.return_routes {
            writeln!(
                s,
                "  replies to connections arriving over {} leave via {}",
                self.link(r.link).name,
                self.gateway(r.gateway).name
            )?;
        }
        if !self.hooks.is_empty() {
            writeln!(s, "hooks ({})", self.hooks.len())?;
        }
        for h in &self.hooks {
            let on: Vec<&str> = h.on.iter().map(|k| k.keyword()).collect();
            let args: String = h.args.iter().map(|a| format!(" {a:?}")).collect();
            writeln!(
                s,
                "  {}: on {} run {}{args} (timeout {})",
                h.name,
                on.join(", "),
                h.command.display(),
                humantime::format_duration(h.timeout)
            )?;
        }
        Ok(())
    }
}
