//! `cargo xtask load [-- args]`: setup's checks, a release build of the agent (`xwan`, which
//! the xwan mode runs) and of `xwan-bench`, then the load test `xwan-bench load <args>`
//! (needs root). `cargo xtask load -- --help` lists its options.

use anyhow::{Result, bail};

use crate::process::is_root;

pub fn run(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the load test creates network namespaces and loads eBPF programs: run as root");
    }
    // `cargo xtask bench` does the rest: setup's checks, the build, `xwan-bench <args>`.
    let args: Vec<String> = std::iter::once("load".to_owned())
        .chain(args.iter().cloned())
        .collect();
    crate::bench::run(&args)
}
