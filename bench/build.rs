//! Builds the load test's eBPF tooling (crate `bench/ebpf-load`: traffic generator, counting
//! sinks, XDP pass, bare redirect) with the nightly toolchain and bpf-linker, the way
//! `agent/build.rs` builds `ebpf-prog`; `cargo xtask load` embeds the object.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let ebpf_dir = manifest_dir.join("ebpf-load");
    for p in [
        "ebpf-load/src",
        "ebpf-load/Cargo.toml",
        "src/load/layout.rs",
    ] {
        println!("cargo:rerun-if-changed={}", manifest_dir.join(p).display());
    }
    let target_dir = root.join("target").join("ebpf-load");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&ebpf_dir)
        .args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir);
    // Drop what the outer cargo exported for the host build (compiler, flags, profile...).
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("CARGO") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOC"
        {
            cmd.env_remove(&k);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run `rustup` to build the load-test eBPF programs ({e}); run `cargo xtask setup`")
    });
    if !status.success() {
        panic!(
            "building the load-test eBPF programs in {} failed (see above). If the nightly \
             toolchain, its rust-src component or bpf-linker is missing, run `cargo xtask setup`.",
            ebpf_dir.display()
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/xwan-load-ebpf");
    assert!(
        Path::new(&object).exists(),
        "eBPF object {} was not produced",
        object.display()
    );
    println!("cargo:rustc-env=XWAN_LOAD_EBPF_OBJECT={}", object.display());
}
