//! The load test's smoke version (`xwan-bench load --smoke`, a second or so per mode): every
//! mode forwards traffic through the namespace topology, over veth and over TUN links, and
//! xwan sends each traffic class to the link its rule names, nowhere else. A check of behaviour, not of speed: no figure
//! is compared with a threshold.
//!
//! Needs root and the `xwan` binary in the same target directory (`cargo test --workspace
//! --release` builds it for the agent's own tests; alone: `cargo build --release -p xwan`).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// The run's output directory, removed however the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `xwan-bench load --smoke` with `args`; returns its JSON report once it has checked
/// that the run succeeded and left no namespace behind.
fn smoke(args: &[&str]) -> serde_json::Value {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "xwan-load-smoke-{}-{}",
        std::process::id(),
        args.join("")
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let json = dir.0.join("load.json");
    let child = Command::new(env!("CARGO_BIN_EXE_xwan-bench"))
        .args(["load", "--smoke", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(dir.0.join("load.svg"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run xwan-bench");
    // The bench names its namespaces after its pid.
    let prefix = format!("xload{}", child.id());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "xwan-bench load --smoke {args:?} failed:\n{stdout}\n{stderr}"
    );
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    assert!(
        !ns.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left behind: {ns}"
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

/// Every sample forwarded something, and xwan, on veth (XDP redirect) and TUN links (TC
/// redirect), delivered every class, and only on its own link (TUN: the frames still queued
/// on each device).
fn assert_forwarding_and_steering(v: &serde_json::Value) {
    let samples = v["samples"].as_array().unwrap();
    for s in samples {
        assert!(
            s["forwarded_mpps"].as_f64().unwrap() > 0.0,
            "{} forwarded nothing: {s}",
            s["mode"]
        );
    }
    let classes = v["classes"].as_array().unwrap();
    let xwan: Vec<_> = samples.iter().filter(|s| s["mode"] == "xwan").collect();
    let links: Vec<&str> = xwan.iter().map(|s| s["links"].as_str().unwrap()).collect();
    assert_eq!(links, ["veth", "tun"], "xwan samples");
    for s in xwan {
        for (i, c) in classes.iter().enumerate() {
            let link = c["link"].as_u64().unwrap() as usize - 1;
            let per_link: Vec<u64> = s["class_link"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .collect();
            assert!(
                per_link[link] > 0,
                "xwan ({} links) forwarded no {} packets on link {}: {per_link:?}",
                s["links"],
                c["name"],
                link + 1
            );
            for (l, n) in per_link.iter().enumerate() {
                assert!(
                    l == link || *n == 0,
                    "xwan ({} links) sent {n} {} packets to link {} instead of link {}",
                    s["links"],
                    c["name"],
                    l + 1,
                    link + 1
                );
            }
        }
    }
}

#[test]
fn every_mode_forwards_and_xwan_steers_each_class_to_its_link() {
    let v = smoke(&[]);
    let modes: Vec<&str> = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["mode"].as_str().unwrap())
        .collect();
    for m in [
        "xwan",
        "xwan-netfilter",
        "xwan-offload",
        "kernel-maps",
        "kernel-linear",
        "kernel-plain",
        "bare-xdp",
    ] {
        assert!(modes.contains(&m), "mode {m} was not measured: {modes:?}");
    }
    assert_forwarding_and_steering(&v);
}

/// The fallback source (what `--source auto` picks where the kernel refuses live frames)
/// drives the same topology, whatever this kernel allows.
#[test]
fn the_relay_source_drives_the_load_test() {
    let v = smoke(&["--source", "relay", "--modes", "xwan,kernel-maps"]);
    assert_eq!(v["source"], "relay", "the JSON names the source");
    assert_forwarding_and_steering(&v);
}
