//! `cargo xtask lab [ARGS]`: the lab (the seed scenario in network namespaces, with traffic
//! and a live view). Runs setup's checks (installing what is missing), builds `xwan` and
//! `xwan-lab` in release, then runs `target/release/xwan-lab ARGS` as root with `XWAN_BIN`
//! pointing at the agent just built. `cargo xtask lab --down`, `cut WAN2`, `restore WAN2`,
//! `metrics`… are passed through the same way (see `xwan-lab --help`).

use anyhow::{Result, bail};

use crate::{
    process::{self, cargo, is_root, repo_root},
    setup,
};

pub fn run(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!(
            "the lab creates network namespaces and loads eBPF programs: run `cargo xtask lab` \
             as root"
        );
    }
    setup::ensure()?;
    process::run(&mut cargo([
        "build",
        "--release",
        "-p",
        "xwan",
        "-p",
        "xwan-lab",
    ]))?;
    let release = repo_root().join("target/release");
    let mut lab = process::command(release.join("xwan-lab"));
    lab.args(args).env("XWAN_BIN", release.join("xwan"));
    process::run(&mut lab)
}
