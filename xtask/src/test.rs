//! `cargo xtask test`: the project's test command (what `.ci/run` runs).
//!
//! Steps, each timed: setup's checks, `cargo fmt --all -- --check`,
//! `cargo clippy --workspace --all-targets -- -D warnings`, and
//! `cargo test --workspace --release [extra args]` (without `--workspace` when the extra
//! arguments select packages with `-p`). Release, because the model-vs-kernel
//! property tests push 100k+ packets through BPF_PROG_TEST_RUN. Then the data-plane tests
//! again on Linux 6.1 in a VM ([`vm`], `cargo xtask vm-test`), unless `--no-vm` or the extra
//! arguments select a subset. Must run as root: the tests load eBPF programs and create
//! network namespaces.

use anyhow::{Result, bail};

use crate::{
    process::{self, Steps, cargo, is_root},
    setup, vm,
};

pub fn run(extra_args: &[String], with_vm: bool) -> Result<()> {
    if !is_root() {
        bail!(
            "the test suite loads eBPF programs and creates network namespaces: run as root \
             (`cargo xtask build` and `cargo xtask setup` work without)"
        );
    }
    let mut steps = Steps::new();
    steps.step("setup", setup::ensure)?;
    steps.step("fmt", || {
        process::run(&mut cargo(["fmt", "--all", "--", "--check"]))?;
        // The eBPF crates are outside the workspace, so `cargo fmt --all` does not see them.
        let mut rustfmt = process::command("rustfmt");
        rustfmt
            .args(["--edition", "2024", "--check"])
            .args(ebpf_sources()?);
        process::run(&mut rustfmt)
    })?;
    steps.step("clippy", || {
        process::run(&mut cargo([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    steps.step("test", || {
        let mut test = cargo(["test"]);
        // `--workspace` would override a package selection (`-p xwan-common`).
        if !selects_packages(extra_args) {
            test.arg("--workspace");
        }
        process::run(test.arg("--release").args(extra_args))
    })?;
    if extra_args.is_empty() {
        steps.step("deb", crate::deb::run)?;
    }
    if !with_vm {
        println!("vm-test: left out (--no-vm); the Linux 6.1 suite did not run");
    } else if !extra_args.is_empty() {
        println!(
            "vm-test: left out because test arguments select a subset; run `cargo xtask vm-test`"
        );
    } else {
        // A VM that cannot be set up fails the run: the 6.1 suite is part of the contract.
        steps.step("vm-test (Linux 6.1)", || vm::run(&vm::Options::default()))?;
    }
    steps.summary();
    Ok(())
}

/// The eBPF crates' sources (the product's and the load test's), for rustfmt.
fn ebpf_sources() -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for dir in ["ebpf-prog/src", "bench/ebpf-load/src"] {
        for e in std::fs::read_dir(process::repo_root().join(dir))? {
            files.push(e?.path());
        }
    }
    files.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    files.sort();
    Ok(files)
}

/// Whether cargo's own arguments (before a `--`) choose packages with `-p`/`--package`.
fn selects_packages(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--package" || a.starts_with("--package=") || a.starts_with("-p"))
}
