//! Builds an eBPF crate (`bpfel-unknown-none`, nightly, `build-std=core`, bpf-linker) from a
//! host crate's `build.rs` and tells cargo where the object is: `ebpf-prog` for the agent,
//! `bench/ebpf-load` for the load test. One place for the recipe, the environment clean-up
//! and the errors that point at `cargo xtask setup`.
//!
//! Needs the `nightly` toolchain with `rust-src` and `bpf-linker` on PATH.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// An eBPF crate to build.
pub struct EbpfCrate<'a> {
    /// The crate's directory.
    pub dir: PathBuf,
    /// Its binary's name (the object file cargo produces).
    pub bin: &'a str,
    /// Paths whose change rebuilds it (besides `src/` and `Cargo.toml` of `dir`).
    pub also_watch: Vec<PathBuf>,
    /// A target directory of its own: no lock contention with the outer build, and the
    /// bpfel build's flags never mix with the host's.
    pub target_dir: PathBuf,
    /// What it is, for error messages ("the eBPF programs").
    pub what: &'a str,
    /// The environment variable that receives the object's path (`env!` in the host crate).
    pub env: &'a str,
}

/// Builds `c` and exports its object's path as `cargo:rustc-env={c.env}`. Panics (the way a
/// build script reports errors) with what to do when the toolchain or the build fails.
pub fn build(c: &EbpfCrate<'_>) {
    for p in [c.dir.join("src"), c.dir.join("Cargo.toml")]
        .iter()
        .chain(&c.also_watch)
    {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&c.dir)
        .args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&c.target_dir);
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
    let what = c.what;
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run `rustup` to build {what} ({e}); run `cargo xtask setup`")
    });
    if !status.success() {
        panic!(
            "building {what} in {} failed (see above). If the nightly toolchain, its rust-src \
             component or bpf-linker is missing, run `cargo xtask setup`.",
            c.dir.display()
        );
    }
    let object = c.target_dir.join("bpfel-unknown-none/release").join(c.bin);
    assert!(
        Path::new(&object).exists(),
        "eBPF object {} was not produced",
        object.display()
    );
    println!("cargo:rustc-env={}={}", c.env, object.display());
}
