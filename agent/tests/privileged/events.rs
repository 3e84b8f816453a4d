//! What the agent tells operators' tooling: the real `xwan run` (two WAN gateways, GW2 a
//! backup, probed every 200 ms) with a `[[hook]]` that records each event it gets (its
//! environment and its JSON on stdin), and an `xwan events` client listening. A
//! cut-and-restore of the main gateway, a rejected reload and an applied one: the hook
//! records every transition in order, with its environment, and `xwan events` prints the same
//! events, numbered alike.
//!
//! Needs root. Namespaces, the agent process and the bpffs mount are removed even when the
//! test fails.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::{
    self,
    wan::{
        Agent, AgentConfig, AgentDir, Events, Roles, TwoWan, assert_nothing_left, blackhole,
        clear_blackhole, gateway_state, status, wait, wait_until,
    },
};

/// An event's kind and what changed: `gateway GW1 ready -> unavailable`.
fn summary(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
    match s("event").as_str() {
        "gateway" => format!(
            "gateway {} {} -> {}",
            s("gateway"),
            s("previous"),
            s("state")
        ),
        "router" => format!(
            "router {} {} -> {} {}",
            s("router"),
            s("previous"),
            s("state"),
            e["active"]
        ),
        "reload" => format!("reload {}", s("result")),
        other => format!("{other} {e}"),
    }
}

#[test]
fn a_hook_and_xwan_events_see_a_cut_and_restore_in_order() {
    let _turn = support::exclusive();
    let net = TwoWan::new("10.84.0");
    let dir = AgentDir::new("events");
    let (record, env) = (dir.path().join("hook.jsonl"), dir.path().join("hook.env"));
    let hook = dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >> {}\necho \"$XWAN_SEQ $XWAN_EVENT $XWAN_GATEWAY$XWAN_ROUTER \
             $XWAN_STATE $XWAN_ACTIVE\" >> {}\n",
            record.display(),
            env.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = AgentConfig::two_wan(Roles::MainAndBackup);
    config.more.push(format!(
        "\n[[hook]]\nname = \"recorder\"\ncommand = \"{}\"\ntimeout = \"5s\"",
        hook.display()
    ));
    dir.write(&config);
    let mut agent = Agent::start(&net.rtr, &dir, "agent.log");
    let socket = dir.socket();
    wait_until("GW1 active and GW2 ready", wait(), || {
        status(&socket).is_some_and(|s| {
            gateway_state(&s, "GW1").is_some_and(|g| g == ("Active".into(), "Ready".into()))
                && gateway_state(&s, "GW2").is_some_and(|g| g.1 == "Ready")
        })
    });

    let out = dir.path().join("events.jsonl");
    let mut listener = Events::listen(&socket, &out, Some(6));

    // Cut and restore.
    blackhole(&net.wan1);
    wait_until("GW2 active", wait(), || {
        status(&socket)
            .and_then(|s| gateway_state(&s, "GW2"))
            .is_some_and(|g| g.0 == "Active")
    });
    clear_blackhole(&net.wan1);
    wait_until("GW1 active again", wait(), || {
        status(&socket)
            .and_then(|s| gateway_state(&s, "GW1"))
            .is_some_and(|g| g.0 == "Active")
    });
    // A reload rejected (a broken file), then applied, with the command line as an operator
    // types it: the agent named by its configuration file.
    let good = std::fs::read_to_string(dir.config()).unwrap();
    std::fs::write(dir.config(), good.replace("[[router]]", "[[routr]]")).unwrap();
    let rejected = xwan(&["reload", "--config"], &dir.config());
    assert!(
        !rejected.status.success() && text(&rejected.stderr).contains("unknown section 'routr'"),
        "{rejected:?}"
    );
    assert!(
        dir.log("agent.log")
            .contains("reload rejected, keeping the running configuration"),
        "the agent did not log the rejected reload"
    );
    std::fs::write(dir.config(), &good).unwrap();
    let applied = xwan(&["reload", "--config"], &dir.config());
    assert!(
        applied.status.success()
            && text(&applied.stdout)
                .starts_with("reloaded: the configuration is applied (ruleset epoch "),
        "{applied:?}"
    );

    let want = [
        "gateway GW1 ready -> unavailable",
        r#"router R on_mains -> on_backups ["GW2"]"#,
        "gateway GW1 unavailable -> ready",
        r#"router R on_backups -> on_mains ["GW1"]"#,
        "reload rejected",
        "reload applied",
    ];
    // The listener exits after its 6 events.
    let mut exited = None;
    wait_until("xwan events to print 6 events and exit", wait(), || {
        exited = listener.exited();
        exited.is_some()
    });
    assert_eq!(exited, Some(true), "xwan events failed");
    let streamed = Events::read(&out);
    let got: Vec<String> = streamed.iter().map(summary).collect();
    assert_eq!(got, want, "xwan events");
    // Numbered one after the other.
    let first = streamed[0]["seq"].as_u64().unwrap();
    let seqs: Vec<u64> = streamed
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (first..first + 6).collect::<Vec<_>>());
    assert_eq!(streamed[0]["reason"], "timeout", "{}", streamed[0]);
    assert!(
        streamed[4]["error"]
            .as_str()
            .unwrap()
            .contains("unknown section 'routr'")
    );

    // The hook ran for the same events, in the same order (and for the start's before them).
    let mut hooked = Vec::new();
    wait_until("the hook to record the same events", wait(), || {
        hooked = Events::read(&record);
        hooked.iter().any(|e| e["seq"].as_u64() == Some(first + 5))
    });
    let since: Vec<&Value> = hooked
        .iter()
        .filter(|e| e["seq"].as_u64() >= Some(first))
        .collect();
    assert_eq!(
        since,
        streamed.iter().collect::<Vec<_>>(),
        "the hook's stdin and xwan events differ"
    );
    let env = std::fs::read_to_string(&env).unwrap();
    for line in [
        format!("{first} gateway GW1 unavailable "),
        format!("{} router R on_backups GW2", first + 1),
    ] {
        assert!(env.lines().any(|l| l == line), "{line:?} not in\n{env}");
    }
    let runs = |result: &str| {
        let series = format!(r#"xwan_hook_events_total{{hook="recorder",result="{result}"}}"#);
        crate::support::wan::metric(&net.rtr, &series)
    };
    assert!(runs("success") >= Some(6.0), "{:?}", runs("success"));
    assert_eq!(runs("failure"), Some(0.0));
    assert!(dir.log("agent.log").contains(r#""message":"hook ran""#));

    // `xwan status --watch`: the screen redrawn in place, again and again.
    let mut watch = std::process::Command::new(crate::support::wan::xwan_bin())
        .args(["status", "--watch", "0.2", "--config"])
        .arg(dir.config())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    let _ = watch.kill();
    let screens = text(&watch.wait_with_output().unwrap().stdout);
    let frames = screens.matches("\x1b[H").count();
    assert!(
        frames >= 2 && screens.contains("router R  on mains"),
        "{frames} screens in 1 s at 0.2 s: {screens:?}"
    );

    // `xwan stop` returns once everything is removed: nothing is left the moment it does.
    let stopped = xwan(&["stop", "--config"], &dir.config());
    assert!(
        stopped.status.success() && text(&stopped.stdout).starts_with("stopped: "),
        "{stopped:?}"
    );
    assert_nothing_left(&net.rtr, &dir);
    agent.wait_exit(wait());
}

/// `xwan ARGS PATH` from the test, waited for.
fn xwan(args: &[&str], path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(crate::support::wan::xwan_bin())
        .args(args)
        .arg(path)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
