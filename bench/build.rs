//! Builds the load test's eBPF tooling (crate `bench/ebpf-load`: traffic generator, counting
//! sinks, XDP pass, bare redirect) with the nightly toolchain and bpf-linker, the way
//! `agent/build.rs` builds `ebpf-prog`; `cargo xtask load` embeds the object.

use std::{env, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    xwan_ebpf_build::build(&xwan_ebpf_build::EbpfCrate {
        dir: manifest_dir.join("ebpf-load"),
        bin: "xwan-load-ebpf",
        also_watch: vec![manifest_dir.join("src/load/layout.rs")],
        target_dir: root.join("target").join("ebpf-load"),
        what: "the load-test eBPF programs",
        env: "XWAN_LOAD_EBPF_OBJECT",
    });
}
