//! Builds the eBPF object (crate `ebpf-prog`) with the nightly toolchain and bpf-linker, so
//! that `cargo build` of the agent is all a developer runs; the object is embedded into the
//! agent binary (see `datapath::object`).
//!
//! Needs the `nightly` toolchain with `rust-src` and `bpf-linker` on PATH: `cargo xtask setup`
//! installs both.

use std::{env, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    xwan_ebpf_build::build(&xwan_ebpf_build::EbpfCrate {
        dir: root.join("ebpf-prog"),
        bin: "xwan-ebpf",
        also_watch: vec![root.join("common/src"), root.join("common/Cargo.toml")],
        target_dir: root.join("target").join("ebpf"),
        what: "the eBPF programs",
        env: "XWAN_EBPF_OBJECT",
    });
}
