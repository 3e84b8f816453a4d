//! `xwan doctor` as an operator runs it before deploying: in a namespace holding the
//! configuration's interfaces, it reports what the kernel offers and, per interface, how xwan
//! will use it. The trap it exists for: an Ethernet egress that is a veth whose peer cannot
//! receive XDP frames drops every frame xwan redirects into it, which only `ip -s link` and
//! xwan's `drop_redirect` / `drop_xmit` counters show. And the trap of a stateful firewall:
//! XDP forwarding bypasses it, the kernel path needs IPv4 forwarding.
//!
//! Needs root. Namespaces are private to the test and removed even when it fails.

use std::process::{Command, Output};

use crate::support::{self, netns::Netns};
use serde_json::Value;
use xwan::datapath::{Datapath, TestBpffs};

/// The `xwan` under test (the installed package's in the Linux 6.1 VM).
fn xwan() -> String {
    crate::support::wan::xwan_bin().display().to_string()
}

fn config(lan: &str, links: &[(&str, &str, &str)]) -> String {
    let mut c = format!("[agent]\nlan_interfaces = [\"{lan}\"]\n");
    for (name, iface, kind) in links {
        c +=
            &format!("\n[[link]]\nname = \"{name}\"\ninterface = \"{iface}\"\nkind = \"{kind}\"\n");
    }
    c
}

fn doctor(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            &xwan(),
            "--log-format",
            "text",
            "doctor",
        ])
        .args(args)
        .output()
        .expect("run xwan doctor")
}

/// The entry of the report's list `list` whose `key` is `name`.
fn entry<'a>(report: &'a Value, list: &str, key: &str, name: &str) -> &'a Value {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == name)
        .unwrap_or_else(|| panic!("no {list} entry {name}: {report:#}"))
}

fn interface<'a>(report: &'a Value, name: &str) -> &'a Value {
    entry(report, "interfaces", "interface", name)
}

fn kernel_check<'a>(report: &'a Value, item: &str) -> &'a Value {
    entry(report, "checks", "item", item)
}

#[test]
fn doctor_reports_the_kernel_and_the_interfaces_traps() {
    let _turn = support::shared(module_path!());
    let ns = Netns::new("doc");
    // LAN l0; Ethernet egress a0 whose peer b0 has no XDP program (the trap); egress c0 whose
    // peer d0 runs one (fine); TUN t0 as an L3 link.
    for (a, b) in [("l0", "h0"), ("a0", "b0"), ("c0", "d0")] {
        ns.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        ns.ip(&["link", "set", a, "up"]);
        ns.ip(&["link", "set", b, "up"]);
    }
    ns.ip(&["tuntap", "add", "t0", "mode", "tun"]);
    let fs = TestBpffs::new().unwrap();
    let mut dp = Datapath::load(fs.path()).unwrap();
    ns.run(|| dp.attach_pass("d0").unwrap());

    let dir = std::env::temp_dir().join(format!("xwan-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("xwan.toml");
    std::fs::write(
        &cfg,
        config(
            "l0",
            &[
                ("Trap", "a0", "ethernet"),
                ("Fine", "c0", "ethernet"),
                ("Tun", "t0", "tunnel"),
                ("Gone", "nosuch0", "ethernet"),
            ],
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();

    let out = doctor(&ns, &["--config", cfg, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&text).expect("--json prints JSON");
    println!("{r:#}");

    // The kernel: the real programs verify; the hand-off needs nothing optional.
    assert_eq!(kernel_check(&r, "programs")["status"], "ok");
    assert_eq!(kernel_check(&r, "tunnel hand-off")["status"], "ok");
    for item in ["tcx", "XDP metadata", "XDP live frames", "failed redirects"] {
        let s = kernel_check(&r, item)["status"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            ["ok", "fallback", "absent"].contains(&s.as_str()),
            "{item}: {s}"
        );
    }

    // The interfaces.
    let lan = interface(&r, "l0");
    assert_eq!(
        (lan["role"].as_str(), lan["driver"].as_str()),
        (Some("lan"), Some("veth"))
    );
    assert_eq!(interface(&r, "t0")["status"], "ok");
    assert_eq!(interface(&r, "nosuch0")["status"], "warning");
    let trap = interface(&r, "a0");
    assert_eq!(trap["status"], "warning", "{trap:#}");
    assert!(
        trap["detail"].as_str().unwrap().contains("peer"),
        "the warning says what to do: {trap:#}"
    );
    if trap["xdp_features"].is_array() {
        // The kernel reports XDP features (Linux 6.3+): the veth whose peer runs XDP is
        // known to accept redirected frames, the other known not to.
        assert_eq!(lan["status"], "ok", "veth has native XDP: {lan:#}");
        let fine = interface(&r, "c0");
        assert_eq!(fine["status"], "ok", "{fine:#}");
        assert!(
            fine["xdp_features"]
                .as_array()
                .unwrap()
                .contains(&"ndo-xmit".into())
        );
        assert!(
            !trap["xdp_features"]
                .as_array()
                .unwrap()
                .contains(&"ndo-xmit".into())
        );
    } else {
        // Older kernels do not say: every veth egress gets the warning.
        assert_eq!(interface(&r, "c0")["status"], "warning");
    }

    // The table says the same for a human, and the exit status is still success.
    let out = doctor(&ns, &["--config", cfg]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{table}");
    assert!(table.contains("WARNING"), "{table}");
    assert!(table.contains("xwan can run;"), "{table}");

    // How steered traffic leaves. XDP forwarding with nothing tracked here: fine; once a
    // ruleset makes conntrack track connections here (a stateful firewall), a warning that
    // says what to set.
    let forwarding = |cfg: &str| {
        let out = doctor(&ns, &["--config", cfg, "--json"]);
        let r: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
        kernel_check(&r, "forwarding").clone()
    };
    assert_eq!(forwarding(cfg)["status"], "ok");
    ns.exec(
        "nft",
        &["add table inet fw; \
           add chain inet fw out { type filter hook output priority 0; }; \
           add rule inet fw out ct state new counter"],
    );
    ns.exec("ping", &["-c", "1", "-W", "1", "127.0.0.1"]);
    let xdp = forwarding(cfg);
    assert_eq!(xdp["status"], "warning", "{xdp:#}");
    assert!(
        xdp["detail"]
            .as_str()
            .unwrap()
            .contains("forwarding = \"netfilter\""),
        "{xdp:#}"
    );
    // The kernel path needs IPv4 forwarding.
    let nf = dir.join("netfilter.toml");
    let text = std::fs::read_to_string(cfg).unwrap().replacen(
        "[agent]\n",
        "[agent]\nforwarding = \"netfilter\"\n",
        1,
    );
    std::fs::write(&nf, text).unwrap();
    let nf = nf.to_str().unwrap();
    ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=0"]);
    let off = forwarding(nf);
    assert_eq!(off["status"], "warning", "{off:#}");
    assert!(
        off["detail"].as_str().unwrap().contains("ip_forward=1"),
        "{off:#}"
    );
    ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    assert_eq!(forwarding(nf)["status"], "ok");
    // Its fast path learns of confirmed connections from conntrack's events.
    ns.exec("sysctl", &["-qw", "net.netfilter.nf_conntrack_events=0"]);
    let silent = forwarding(nf);
    assert_eq!(silent["status"], "warning", "{silent:#}");
    assert!(
        silent["detail"]
            .as_str()
            .unwrap()
            .contains("nf_conntrack_events=2"),
        "{silent:#}"
    );
    ns.exec("sysctl", &["-qw", "net.netfilter.nf_conntrack_events=2"]);
    assert_eq!(forwarding(nf)["status"], "ok");

    ns.run(|| dp.detach_all().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn doctor_fails_where_xwan_cannot_run() {
    let _turn = support::shared(module_path!());
    // Without root nothing can be loaded: the one check that makes xwan impossible.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &xwan(),
            "doctor",
        ])
        .output()
        .expect("run setpriv (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("root") && text.contains("FAIL"), "{text}");
    assert!(text.contains("xwan cannot run here"), "{text}");
}
