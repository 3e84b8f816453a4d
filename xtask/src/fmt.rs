//! `cargo xtask fmt`: format the workspace (`cargo fmt --all`).

use anyhow::Result;

use crate::process;

pub fn run() -> Result<()> {
    process::run(&mut process::cargo(["fmt", "--all"]))
}
