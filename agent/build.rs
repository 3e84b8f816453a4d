//! Builds the eBPF object (crate `ebpf-prog`) with the nightly toolchain and bpf-linker, so
//! that `cargo build` of the agent is all a developer runs; the object is embedded into the
//! agent binary (see `datapath::object`).
//!
//! Needs the `nightly` toolchain with `rust-src` and `bpf-linker` on PATH: `cargo xtask setup`
//! installs both.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let ebpf_dir = root.join("ebpf-prog");
    for p in [
        "ebpf-prog/src",
        "ebpf-prog/Cargo.toml",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    // A target directory of its own: no lock contention with the outer build, and the
    // bpfel build's flags never mix with the host's.
    let target_dir = root.join("target").join("ebpf");
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
        panic!("cannot run `rustup` to build the eBPF programs ({e}); run `cargo xtask setup`")
    });
    if !status.success() {
        panic!(
            "building the eBPF programs in {} failed (see above). If the nightly toolchain, its \
             rust-src component or bpf-linker is missing, run `cargo xtask setup`.",
            ebpf_dir.display()
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/xwan-ebpf");
    assert!(
        Path::new(&object).exists(),
        "eBPF object {} was not produced",
        object.display()
    );
    println!("cargo:rustc-env=XWAN_EBPF_OBJECT={}", object.display());
}
