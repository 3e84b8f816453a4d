//! IPsec over XFRM netlink in private network namespaces: what a kernel without ESP (the
//! development kernel) can show, and more where ESP exists (the Debian 6.1 VM):
//!
//! * a link's policies are installed, read back with their mark and template, updated,
//!   announced as events, and deleted; traffic matching them without an SA raises an acquire;
//! * manual SAs: installed and matched to their link (ESP present), or refused with an error
//!   naming the link and the missing kernel support (ESP absent); removed again;
//! * the agent: a VTI link without SAs keeps its gateway Unavailable (`no SA`), status and
//!   metrics say so; a key file readable by others is refused; key material appears in no
//!   log, status or metrics output; `xwan stop` leaves an external interface in place;
//! * with a peer namespace answering through ESP (kernels with ip_vti): a manual-key link's
//!   gateway is Ready, Unavailable (`no SA`) when one SA is deleted, Ready again once it is
//!   back (the times are printed).
//!
//! Needs root. Namespaces, agents and files are removed even when a test fails.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    os::{fd::AsRawFd, unix::fs::PermissionsExt},
    path::Path,
    time::{Duration, Instant},
};

use crate::support::{
    self,
    netns::{Netns, tun},
    wan::{Agent, AgentConfig, AgentDir, Events, Link, Rule, scrape, status, wait_until},
};
use futures::StreamExt;
use xwan::{
    config::{Aead, IpsecTunnel, ManualSa, Owner, SaAlgorithms, TunnelDevice},
    status::Status,
    xfrm::{self, LinkSas, PolicySpec, XfrmEvent, XfrmSocket, keys::LinkKeys},
};

/// Bound of every wait: generous, as the VM emulates its CPU (waits poll, so the host's runs
/// take what they take).
const WAIT: Duration = Duration::from_secs(60);
/// Key material of the tests: must never appear in any output.
const KEY_IN: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
const KEY_OUT: &str = "0dd5a1700dd5a1700dd5a1700dd5a1700dd5a170";

fn link(key: u32) -> IpsecTunnel {
    IpsecTunnel {
        device: TunnelDevice::Vti {
            key: NonZeroU32::new(key).unwrap(),
        },
        local: "192.0.2.1".parse().unwrap(),
        remote: "192.0.2.2".parse().unwrap(),
        owner: Owner::External,
        manual_sa: None,
    }
}

/// The next event satisfying `f`, within WAIT.
async fn wait_event(
    rx: &mut futures::channel::mpsc::UnboundedReceiver<XfrmEvent>,
    f: impl Fn(&XfrmEvent) -> bool,
) -> Option<XfrmEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Ok(Some(e)) if f(&e) => return Some(e),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

#[test]
fn policies_events_acquire_and_manual_sas() {
    let _turn = support::shared(module_path!());
    let ns = Netns::new("xfrm");
    let _t0 = ns.run(|| tun("t0"));
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "t0"]);
    ns.ip(&["link", "set", "t0", "up"]);
    ns.block_on(async {
            let mut events = xfrm::subscribe().unwrap();
            let mut sock = XfrmSocket::open().unwrap();
            let l = link(101);
            assert!(sock.policies().unwrap().is_empty());

            // Install the link's out/in/fwd policies; each is announced.
            for p in PolicySpec::for_link(&l) {
                sock.execute(p.add_message(false)).unwrap();
            }
            assert!(wait_event(&mut events, |e| *e == XfrmEvent::Policies).await.is_some());
            let mut got = sock.policies().unwrap();
            got.sort_by_key(|p| p.dir);
            assert_eq!(got.len(), 3, "{got:?}");
            let (a, b): (IpAddr, IpAddr) = (l.local, l.remote);
            for (p, dir) in got.iter().zip([0u8, 1, 2]) {
                assert_eq!((p.dir, p.mark, p.if_id), (dir, Some(101), None), "{p:?}");
                // out: local -> remote; in and fwd: remote -> local.
                let want = if dir == 1 { (Some(a), Some(b)) } else { (Some(b), Some(a)) };
                assert_eq!(p.template, Some(want), "{p:?}");
            }
            // A second add is refused (EEXIST); an update is accepted.
            let out = &PolicySpec::for_link(&l)[0];
            assert_eq!(sock.execute(out.add_message(false)).unwrap_err().errno(), Some(libc::EEXIST));
            sock.execute(out.add_message(true)).unwrap();

            // Traffic carrying the link's mark matches the out policy but has no SA: the
            // kernel asks for one (what strongSwan's trap policies wait for).
            let udp = std::net::UdpSocket::bind("10.99.0.1:0").unwrap();
            let mark: libc::c_int = 101;
            // SAFETY: setsockopt with a valid int on our socket.
            let rc = unsafe {
                libc::setsockopt(udp.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MARK,
                    &mark as *const _ as *const libc::c_void, std::mem::size_of::<libc::c_int>() as u32)
            };
            assert_eq!(rc, 0);
            let sent = udp.send_to(b"x", "10.99.0.2:9");
            println!("send through the policy without SA: {sent:?}");
            assert!(
                wait_event(&mut events, |e| *e == XfrmEvent::Acquire).await.is_some(),
                "no acquire event"
            );

            // Manual SAs: installed where the kernel has ESP, refused with a clear error where not.
            let dir = std::env::temp_dir().join(format!("xwan-xfrm-test-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let manual = ManualSa {
                spi_in: 0xb000_0001,
                spi_out: 0xa000_0001,
                algorithms: SaAlgorithms::Aead(Aead::Aes128Gcm16),
                key_file: dir.join("k"),
            };
            let keys: LinkKeys = xfrm::keys::parse(
                &format!("in = 0x{KEY_IN}\nout = 0x{KEY_OUT}\n"),
                &manual.algorithms,
            )
            .unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            match xfrm::install_manual(&mut sock, "TunWAN1", &l, &manual, keys) {
                Ok(()) => {
                    let ev = wait_event(&mut events, |e| matches!(e, XfrmEvent::SaAdded(_))).await;
                    assert!(ev.is_some(), "no new-SA event");
                    let sas = LinkSas::of(&l, &sock.sas().unwrap());
                    assert!(sas.usable(), "{sas:?}");
                    assert_eq!(sas.outbound[0].spi, 0xa000_0001);
                    assert_eq!(sas.inbound[0].algorithms, "aes128gcm16");
                    assert!(!format!("{sas:?}").contains("5ec7"));
                    // Installing the same again (a restart, a reload) keeps them as they are.
                    let keys = xfrm::keys::parse(&format!("in = 0x{KEY_IN}\nout = 0x{KEY_OUT}\n"), &manual.algorithms).unwrap();
                    xfrm::install_manual(&mut sock, "TunWAN1", &l, &manual, keys).unwrap();
                    let again = LinkSas::of(&l, &sock.sas().unwrap());
                    assert_eq!((again.inbound.len(), again.outbound.len()), (1, 1));
                    assert_eq!(again.outbound[0].add_time, sas.outbound[0].add_time, "not replaced");
                    // 2 SAs + 3 policies.
                    assert_eq!(xfrm::remove_manual(&mut sock, "TunWAN1", &l, &manual), 5);
                    let ev = wait_event(&mut events, |e| matches!(e, XfrmEvent::SaRemoved(_))).await;
                    assert!(ev.is_some(), "no deleted-SA event");
                    assert!(!LinkSas::of(&l, &sock.sas().unwrap()).usable());
                }
                Err(e) => {
                    let msg = e.to_string();
                    println!("manual SA refused here: {msg}");
                    assert!(
                        msg.starts_with("link 'TunWAN1': installing its outbound SA (spi 0xa0000001, 192.0.2.1 -> 192.0.2.2) failed: the kernel refused it"),
                        "{msg}"
                    );
                    assert!(msg.ends_with("; the kernel lacks ESP or the algorithm (modprobe esp4 / esp6 and the crypto modules, e.g. aes, gcm)"), "{msg}");
                    assert!(!msg.contains("5ec7") && !msg.contains("0dd5"), "{msg}");
                    // Only the acquire's larval state (SPI 0), which is no SA of the link.
                    let sas = sock.sas().unwrap();
                    assert!(sas.iter().all(|s| s.spi == 0), "{sas:?}");
                    assert!(LinkSas::of(&l, &sas).outbound.is_empty());
                    // The policies (installed above) are still removed, and nothing else.
                    assert_eq!(xfrm::remove_manual(&mut sock, "TunWAN1", &l, &manual), 3);
                }
            }
            assert!(sock.policies().unwrap().is_empty());
    });
}

/// The agent's configuration: IPsec link TunWAN1 (192.0.2.1 -> 192.0.2.2) on `interface` of
/// `kind` (`id`: its `key` or `if_id` line) owned by `owner`, with manual SAs keyed by `keys`
/// (else IKE's); gateway RemoteTunWAN1 behind it, probed at its address; router R drops when
/// it is Unavailable; everything goes through R.
fn config(
    interface: &'static str,
    kind: &'static str,
    id: &str,
    owner: &str,
    keys: Option<&Path>,
) -> AgentConfig {
    let mut more = vec![
        id.to_owned(),
        format!("owner = {owner:?}"),
        "local = \"192.0.2.1\"".to_owned(),
        "remote = \"192.0.2.2\"".to_owned(),
    ];
    more.extend(keys.map(|k| {
        format!(
            "manual_sa = {{ spi_in = 0xb0000001, spi_out = 0xa0000001, aead = \"aes128gcm16\", key_file = \"{}\" }}",
            k.display()
        )
    }));
    AgentConfig {
        lan: vec!["l0"],
        agent: vec![],
        links: vec![Link {
            name: "TunWAN1",
            interface,
            kind,
            address: "172.16.1.1/30",
            more,
            gateway: "RemoteTunWAN1",
            gateway_address: "172.16.1.2",
            check: Some("172.16.1.2"),
            gateway_more: vec![],
        }],
        main: vec!["RemoteTunWAN1"],
        backups: vec![],
        on_failure: "drop",
        router: vec![],
        more: vec![],
        rules: vec![Rule {
            name: "all",
            udp_port: None,
            block: false,
        }],
    }
}

/// [`config`] with TunWAN1 on the VTI vti1, key 101.
fn vti_config(owner: &str, keys: Option<&Path>) -> AgentConfig {
    config("vti1", "vti", "key = 101", owner, keys)
}

/// A router namespace: a LAN veth (l0) and a TUN device standing in for the VTI `vti1`.
fn router_ns(tag: &str) -> (Netns, std::fs::File) {
    let ns = Netns::new(tag);
    ns.ip(&["link", "add", "l0", "type", "veth", "peer", "name", "h0"]);
    let t = ns.run(|| tun("vti1"));
    ns.ip(&["addr", "add", "172.16.1.1/30", "dev", "vti1"]);
    for d in ["l0", "h0", "vti1"] {
        ns.ip(&["link", "set", d, "up"]);
    }
    (ns, t)
}

/// `ip -n NS COMMAND`, the command's words separated by spaces.
fn ip(ns: &Netns, command: &str) {
    ns.ip(&command.split(' ').collect::<Vec<_>>());
}

#[test]
fn agent_without_sa_keeps_the_gateway_unavailable() {
    let _turn = support::exclusive();
    let (ns, _tun) = router_ns("sa");
    let dir = AgentDir::new("xfrm-nosa");
    dir.write(&vti_config("external", None));
    let mut agent = Agent::start(&ns, &dir, "agent.log");
    let socket = dir.socket();
    let t = Instant::now();
    wait_no_sa(&socket);
    println!("Unavailable (no SA) {:?} after start", t.elapsed());
    let s = status(&socket).unwrap();
    let row = &s.ipsec[0];
    assert_eq!(
        (
            row.link.as_str(),
            row.device.as_str(),
            row.sa_source.as_str(),
            row.usable
        ),
        ("TunWAN1", "vti key 101", "ike", false)
    );
    assert!(row.sas.is_empty());
    let body = scrape(&ns).unwrap_or_default();
    for want in [
        "xwan_ipsec_link_usable{link=\"TunWAN1\"} 0",
        "xwan_ipsec_sa_count{link=\"TunWAN1\",direction=\"in\"} 0",
        "# TYPE xwan_xfrm_errors counter",
    ] {
        assert!(body.contains(want), "{want} not in\n{body}");
    }
    // Probes would pass (nothing answers here, but the reason must stay `no SA`, not timeout).
    std::thread::sleep(Duration::from_millis(1000));
    let g = &status(&socket).unwrap().routers[0].gateways[0];
    assert_eq!(g.reason, "no SA");
    agent.stop(&dir, WAIT);
    // External interface: left in place.
    ns.ip(&["link", "show", "vti1"]);
}

#[test]
fn manual_keys_are_checked_and_never_shown() {
    let _turn = support::exclusive();
    let (ns, _tun) = router_ns("key");
    let dir = AgentDir::new("xfrm-keys");
    let keys = dir.path().join("wan1.keys");
    std::fs::write(
        &keys,
        format!("# TunWAN1\nin = 0x{KEY_IN}\nout = 0x{KEY_OUT}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir.write(&vti_config("external", Some(&keys)));
    let read_log = || dir.log("agent.log");
    let assert_secret = |what: &str, text: &str| {
        for k in [KEY_IN, KEY_OUT, &KEY_IN[..8], &KEY_OUT[..8]] {
            assert!(!text.contains(k), "key material in {what}:\n{text}");
        }
    };

    // `xwan check` reads the key file too (problems are warnings there); never prints keys.
    let check = |what: &str| {
        let out = std::process::Command::new(crate::support::wan::xwan_bin())
            .args(["check", "--config"])
            .arg(dir.config())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert_secret(what, &text);
        text
    };
    let text = check("xwan check");
    assert!(
        text.contains("is accessible to group or other (mode 0644)"),
        "{text}"
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &keys,
        format!("in = 0x{KEY_IN}\nout = 0x{}\n", &KEY_OUT[..32]),
    )
    .unwrap();
    let text = check("xwan check with a short key");
    assert!(
        text.contains("key 'out' is 16 bytes but aes128gcm16 needs 20 bytes (16-byte key + 4-byte salt): write 40 hex digits"),
        "{text}"
    );
    std::fs::write(
        &keys,
        format!("# TunWAN1\nin = 0x{KEY_IN}\nout = 0x{KEY_OUT}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();

    // Readable by others: refused before anything is installed.
    let mut agent = Agent::start(&ns, &dir, "agent.log");
    agent.wait_exit(WAIT);
    let text = read_log();
    assert!(
        text.contains(&format!(
            "link 'TunWAN1': field 'manual_sa.key_file': {}: is accessible to group or other (mode 0644)",
            keys.display()
        )),
        "{text}"
    );
    assert_secret("the log", &text);

    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let socket = dir.socket();
    let (mut agent, up) =
        start_up_or_exit(&ns, &dir, |s| s.ipsec.first().is_some_and(|r| r.usable));
    if up {
        // A kernel with ESP: the SAs are there, shown without their keys.
        let s = status(&socket).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.contains("0xa0000001") && json.contains("aes128gcm16"),
            "{json}"
        );
        assert_secret("the status", &json);
        let body = scrape(&ns).unwrap_or_default();
        assert!(
            body.contains("xwan_ipsec_link_usable{link=\"TunWAN1\"} 1"),
            "{body}"
        );
        assert_secret("the metrics", &body);
        // With the pair up, probing decides (nothing answers behind this TUN: not `no SA`).
        let reason = || status(&socket).map(|s| s.routers[0].gateways[0].reason.clone());
        wait_until("a verdict other than no SA", WAIT, || {
            reason().is_some_and(|r| r != "no SA")
        });
        // Deleting one SA (as a peer's DELETE or an expiry would): Unavailable at once.
        let t = Instant::now();
        delete_outbound_sa(&ns);
        wait_until("no SA after the deletion", WAIT, || {
            reason().as_deref() == Some("no SA")
        });
        println!(
            "gateway Unavailable (no SA) {:?} after the SA was deleted",
            t.elapsed()
        );
        let s = status(&socket).unwrap();
        assert_eq!(
            s.routers[0].gateways[0].availability,
            xwan::status::Availability::Unavailable
        );
        assert!(!s.ipsec[0].usable);
        agent.stop(&dir, WAIT);
        let left = ns.run(|| XfrmSocket::open().unwrap().sas().unwrap());
        assert!(left.is_empty(), "xwan stop left SAs: {left:?}");
        assert!(
            ns.run(|| XfrmSocket::open().unwrap().policies().unwrap())
                .is_empty()
        );
    } else {
        // No ESP in this kernel: a clear error naming the link.
        let text = read_log();
        assert!(
            text.contains("link 'TunWAN1': installing its outbound SA (spi 0xa0000001, 192.0.2.1 -> 192.0.2.2) failed"),
            "{text}"
        );
        println!("{}", text.lines().last().unwrap_or(""));
    }
    assert_secret("the log", &read_log());
}

#[test]
fn owned_vti_is_created_or_refused_with_what_differs() {
    let _turn = support::exclusive();
    let ns = lan_ns("own");
    let dir = AgentDir::new("xfrm-own");
    dir.write(&vti_config("xwan", None));
    let read_log = || dir.log("agent.log");

    let (mut agent, up) = start_up_or_exit(&ns, &dir, |_| true);
    if up {
        // A kernel with ip_vti: created with xwan's alias, removed by `xwan stop`.
        let text = link_details(&ns, "vti1").expect("vti1 created");
        assert!(
            text.contains("alias xwan:TunWAN1") && text.contains("vti"),
            "{text}"
        );
        agent.stop(&dir, WAIT);
        assert!(link_details(&ns, "vti1").is_none(), "xwan stop left vti1");
    } else {
        let text = read_log();
        assert!(
            text.contains("link 'TunWAN1': creating vti1 failed: ")
                && text.contains("; does the kernel have ip_vti (modprobe ip_vti)?"),
            "{text}"
        );
        println!("{}", text.trim_end().lines().last().unwrap_or(""));
    }

    // An interface of that name that is not the declared VTI: refused, saying what differs.
    let _tun = ns.run(|| tun("vti1"));
    let mut agent = Agent::start(&ns, &dir, "agent.log");
    agent.wait_exit(WAIT);
    let text = read_log();
    assert!(
        text.contains(
            "link 'TunWAN1': interface vti1 exists but differs: it is tun, not vti; delete it \
             (ip link del vti1), rename the link's interface, or set owner = \"external\" to \
             only use it"
        ),
        "{text}"
    );
    ns.ip(&["link", "show", "vti1"]);
}

/// Deletes TunWAN1's outbound SA (SPI 0xa0000001, mark 101), as a peer's DELETE, an expiry
/// or an operator would.
fn delete_outbound_sa(ns: &Netns) {
    ip(
        ns,
        "xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi 0xa0000001 mark 101",
    );
}

/// A namespace with only a LAN veth (l0, peer h0), both up.
fn lan_ns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&["link", "add", "l0", "type", "veth", "peer", "name", "h0"]);
    for d in ["l0", "h0"] {
        ns.ip(&["link", "set", d, "up"]);
    }
    ns
}

/// `ip -d link show DEV` in `ns`; `None` when there is no such interface.
fn link_details(ns: &Netns, dev: &str) -> Option<String> {
    ns.try_ip(&["-d", "link", "show", dev]).ok()
}

/// Waits until the (only) router's first gateway is Unavailable with reason `no SA`.
fn wait_no_sa(socket: &Path) {
    wait_until("the gateway's verdict: no SA", WAIT, || {
        status(socket).is_some_and(|s| {
            s.routers[0].gateways.first().is_some_and(|g| {
                g.availability == xwan::status::Availability::Unavailable && g.reason == "no SA"
            })
        })
    });
}

/// Starts an agent with `dir`'s configuration; returns it and whether it came up (its status
/// satisfies `up`) rather than exited.
fn start_up_or_exit(ns: &Netns, dir: &AgentDir, up: impl Fn(&Status) -> bool) -> (Agent, bool) {
    let mut agent = Agent::start(ns, dir, "agent.log");
    let deadline = Instant::now() + WAIT;
    loop {
        if agent.0.try_wait().unwrap().is_some() {
            return (agent, false);
        }
        if status(&dir.socket()).is_some_and(|s| up(&s)) {
            return (agent, true);
        }
        assert!(
            Instant::now() < deadline,
            "agent neither up nor exited:\n{}",
            dir.log("agent.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An owned xfrm interface (`kind = "xfrm"`, no underlying device): created with its if_id
/// and xwan's alias where the kernel has xfrm interfaces (the 6.1 VM), removed by `xwan
/// stop`; elsewhere the agent refuses to start and says which module is missing.
#[test]
fn owned_xfrm_interface_is_created_and_removed() {
    let _turn = support::exclusive();
    let ns = lan_ns("ownx");
    let dir = AgentDir::new("xfrm-ownx");
    dir.write(&config("ipsec1", "xfrm", "if_id = 101", "xwan", None));
    let socket = dir.socket();
    let (mut agent, up) = start_up_or_exit(&ns, &dir, |_| true);
    let text = dir.log("agent.log");
    if !up {
        assert!(
            text.contains("link 'TunWAN1': creating ipsec1 failed: ")
                && text
                    .contains("; does the kernel have xfrm interfaces (modprobe xfrm_interface)?"),
            "{text}"
        );
        println!("{}", text.trim_end().lines().last().unwrap_or(""));
        return;
    }
    let shown = link_details(&ns, "ipsec1").expect("ipsec1 created");
    assert!(
        shown.contains("alias xwan:TunWAN1") && shown.contains("xfrm if_id 0x65"),
        "{shown}"
    );
    // Its gateway waits for an SA pair like a VTI's does; the status names the device.
    wait_no_sa(&socket);
    let s = status(&socket).unwrap();
    assert_eq!(
        (s.ipsec[0].device.as_str(), s.ipsec[0].usable),
        ("xfrm if_id 101", false)
    );
    agent.stop(&dir, WAIT);
    assert!(
        link_details(&ns, "ipsec1").is_none(),
        "xwan stop left ipsec1"
    );
}

/// `ip xfrm state add` of one ESP SA as the agent installs it for link key 101.
fn add_esp_sa(ns: &Netns, src: &str, dst: &str, spi: &str, key: &str) {
    ip(
        ns,
        &format!(
            "xfrm state add src {src} dst {dst} proto esp spi {spi} reqid 101 mode tunnel \
             mark 101 aead rfc4106(gcm(aes)) 0x{key} 128"
        ),
    );
}

#[test]
fn deleted_sa_takes_the_gateway_down_until_it_is_back() {
    let _turn = support::exclusive();
    // The peer: its own VTI and the mirror image of the agent's SAs, over a veth underlay.
    let router = Netns::new("rsa");
    let peer = Netns::new("psa");
    router.ip(&["link", "add", "l0", "type", "veth", "peer", "name", "h0"]);
    router.ip(&[
        "link", "add", "w0", "type", "veth", "peer", "name", "w1", "netns", &peer.name,
    ]);
    router.ip(&["addr", "add", "192.0.2.1/24", "dev", "w0"]);
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "w1"]);
    for d in ["l0", "h0", "w0"] {
        router.ip(&["link", "set", d, "up"]);
    }
    peer.ip(&["link", "set", "w1", "up"]);
    let vti = "link add vti1 type vti local 192.0.2.2 remote 192.0.2.1 key 101";
    let vti = peer.try_ip(&vti.split(' ').collect::<Vec<_>>());
    let dir = AgentDir::new("xfrm-loss");
    let keys = dir.path().join("wan1.keys");
    std::fs::write(&keys, format!("in = 0x{KEY_IN}\nout = 0x{KEY_OUT}\n")).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir.write(&vti_config("xwan", Some(&keys)));
    let read_log = || dir.log("agent.log");
    if let Err(e) = vti {
        // No ip_vti (the development kernel): the agent refuses to start, saying why.
        println!("no VTI in this kernel ({e:#}): refusal checked only");
        let mut agent = Agent::start(&router, &dir, "agent.log");
        agent.wait_exit(WAIT);
        let text = read_log();
        assert!(
            text.contains("link 'TunWAN1': creating vti1 failed: ")
                && text.contains("; does the kernel have ip_vti (modprobe ip_vti)?"),
            "{text}"
        );
        return;
    }
    peer.ip(&["addr", "add", "172.16.1.2/30", "dev", "vti1"]);
    peer.ip(&["link", "set", "vti1", "up"]);
    add_esp_sa(&peer, "192.0.2.2", "192.0.2.1", "0xb0000001", KEY_IN);
    add_esp_sa(&peer, "192.0.2.1", "192.0.2.2", "0xa0000001", KEY_OUT);
    for (dir, src, dst) in [
        ("out", "192.0.2.2", "192.0.2.1"),
        ("in", "192.0.2.1", "192.0.2.2"),
    ] {
        ip(
            &peer,
            &format!(
                "xfrm policy add src 0.0.0.0/0 dst 0.0.0.0/0 dir {dir} mark 101 tmpl src {src} \
                 dst {dst} proto esp reqid 101 mode tunnel"
            ),
        );
    }

    let mut agent = Agent::start(&router, &dir, "agent.log");
    let socket = dir.socket();
    let gateway = || {
        status(&socket).map(|s| {
            let g = &s.routers[0].gateways[0];
            (g.availability.to_string(), g.reason.clone())
        })
    };
    let ready = |what: &str| {
        let took = wait_until(what, WAIT, || gateway().is_some_and(|(a, _)| a == "Ready"));
        assert!(
            status(&socket).unwrap().ipsec[0].usable,
            "Ready without a usable SA pair"
        );
        took
    };
    // Packets through the link's SA of `direction` (status counters).
    let packets = |direction: &str| {
        status(&socket)
            .and_then(|s| {
                s.ipsec[0]
                    .sas
                    .iter()
                    .find(|r| r.direction == direction)
                    .map(|r| r.packets)
            })
            .unwrap_or(0)
    };
    // Probes answered by the peer through ESP: the gateway becomes Ready.
    let took = ready("the gateway Ready through the tunnel");
    println!("gateway Ready {took:?} after the agent started");
    // The status's SA counters are those of the agent's last SA read (on XFRM events and
    // every 10 s), which may predate the probes that made the gateway Ready.
    wait_until(
        "the probes counted by the link's SAs (Ready through ESP)",
        WAIT,
        || packets("out") > 0 && packets("in") > 0,
    );

    // One SA gone (a peer's DELETE, an expiry, an operator): Unavailable, `no SA`.
    let out = dir.path().join("events.jsonl");
    let _events = Events::listen(&socket, &out, None);
    let t = Instant::now();
    delete_outbound_sa(&router);
    wait_until("Unavailable (no SA) after deleting the SA", WAIT, || {
        gateway().is_some_and(|(a, r)| a == "Unavailable" && r == "no SA")
    });
    println!(
        "gateway Unavailable (no SA) {:?} after the SA was deleted",
        t.elapsed()
    );
    assert!(!status(&socket).unwrap().ipsec[0].usable);

    // The SA back (as IKE would install it): probes pass again, Ready.
    let t = Instant::now();
    add_esp_sa(&router, "192.0.2.1", "192.0.2.2", "0xa0000001", KEY_OUT);
    ready("the gateway Ready again after re-adding the SA");
    println!("gateway Ready {:?} after the SA was re-added", t.elapsed());
    // The loss and the return as events: the link's, then the gateway's.
    let summary = |e: &serde_json::Value| {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
        match s("event").as_str() {
            "ipsec" => format!("ipsec {} {} {}", s("link"), s("state"), s("missing"))
                .trim_end()
                .to_owned(),
            "gateway" => format!("gateway {} {} ({})", s("gateway"), s("state"), s("reason")),
            other => other.to_owned(),
        }
    };
    let mut got = Vec::new();
    wait_until("the SA's loss and return as events", WAIT, || {
        got = Events::read(&out).iter().map(summary).collect::<Vec<_>>();
        got.iter()
            .any(|e| e.starts_with("gateway RemoteTunWAN1 ready"))
    });
    let link_events: Vec<&str> = (got.iter())
        .filter(|e| !e.starts_with("router"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        link_events,
        [
            "ipsec TunWAN1 lost outbound",
            "gateway RemoteTunWAN1 unavailable (no SA)",
            "ipsec TunWAN1 up",
            "gateway RemoteTunWAN1 ready (answering)",
        ],
        "{got:?}"
    );
    // Probes go through the new SA and their answers come back.
    let answered = packets("in");
    wait_until("probes through the re-added SA, answered", WAIT, || {
        packets("out") > 0 && packets("in") > answered
    });
    assert!(
        !read_log().contains(KEY_OUT) && !read_log().contains(&KEY_OUT[..8]),
        "key material in the log"
    );
    agent.stop(&dir, WAIT);
    assert!(
        link_details(&router, "vti1").is_none(),
        "xwan stop left vti1"
    );
}
