//! `cargo xtask bench [-- args]`: setup's checks, then the BPF_PROG_TEST_RUN
//! micro-benchmarks in `bench/` (package `xwan-bench`), built with the release profile.

use anyhow::Result;

use crate::{process, setup};

pub fn run(args: &[String]) -> Result<()> {
    setup::ensure()?;
    process::run(process::cargo(["run", "--release", "--package", "xwan-bench", "--"]).args(args))
}
