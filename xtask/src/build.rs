//! `cargo xtask build [--release]`: setup's checks, then `cargo build --workspace`.
//!
//! The eBPF object is not built here: `agent/build.rs` builds `ebpf-prog/` with the nightly
//! toolchain and bpf-linker, which setup has just checked.

use anyhow::Result;

use crate::{process, setup};

pub fn run(release: bool) -> Result<()> {
    setup::ensure()?;
    let mut build = process::cargo(["build", "--workspace"]);
    if release {
        build.arg("--release");
    }
    process::run(&mut build)
}
