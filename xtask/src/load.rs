//! `cargo xtask load [-- args]`: setup's checks, a release build of the agent (`xwan`, which
//! the xwan mode runs) and of `xwan-bench`, then the load test `xwan-bench load <args>`
//! (needs root). `cargo xtask load -- --help` lists its options.

use anyhow::{Result, bail};

use crate::{
    process::{self, cargo, is_root},
    setup,
};

pub fn run(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the load test creates network namespaces and loads eBPF programs: run as root");
    }
    setup::ensure()?;
    process::run(&mut cargo([
        "build",
        "--release",
        "--package",
        "xwan",
        "--package",
        "xwan-bench",
    ]))?;
    let bin = process::repo_root().join("target/release/xwan-bench");
    process::run(process::command(bin).arg("load").args(args))
}
