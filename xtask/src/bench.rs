//! `cargo xtask bench [-- args]`: setup's checks, then the BPF_PROG_TEST_RUN
//! micro-benchmarks in `bench/` (package `xwan-bench`), built with the release profile.
//! `xwan` is built beside it: `xwan-bench scale` and `flows` run the real agent.

use anyhow::Result;

use crate::{process, setup};

pub fn run(args: &[String]) -> Result<()> {
    setup::ensure()?;
    process::run(&mut process::cargo([
        "build",
        "--release",
        "--package",
        "xwan",
        "--package",
        "xwan-bench",
    ]))?;
    let bin = process::repo_root().join("target/release/xwan-bench");
    process::run(process::command(bin).args(args))
}
