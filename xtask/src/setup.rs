//! `cargo xtask setup`: check every build/test prerequisite and install what is missing.
//!
//! Idempotent and fast when everything is present (only version queries and file checks).
//! One line per item: `ok: …`, `installing: …` (followed by the installer's output and an
//! `ok: …`), `warn: …`, or `error: …`. An item that fails does not stop the others; setup
//! fails at the end naming every item that could not be set up.
//!
//! Items and how they are detected:
//! * Linux kernel: `/proc/sys/kernel/osrelease` (warning only below 6.1);
//! * rustup: `rustup --version` (the eBPF build runs `rustup run nightly …`);
//! * rustfmt and clippy for the workspace toolchain: `cargo fmt --version`,
//!   `cargo clippy --version`; installed with `rustup component add`;
//! * the nightly toolchain: `rustup toolchain list`, then `rustc +nightly -vV`; never
//!   installed by setup;
//! * nightly rust-src (for `-Z build-std=core`): `<nightly sysroot>/lib/rustlib/src/rust/
//!   library/core`; installed with `rustup component add rust-src --toolchain nightly`;
//! * bpf-linker 0.13.0: found on `PATH`, run as `bpf-linker --version` with the nightly's
//!   `lib/` on `LD_LIBRARY_PATH` (what `rustup run nightly` does during the eBPF build), so a
//!   missing binary, another version, or a binary whose libLLVM does not load is caught;
//!   installed with `cargo install` against the nightly's own libLLVM (see [`install_bpf_linker`]);
//! * Debian packages iproute2, nftables, iputils-ping, procps (required), bpftool (optional,
//!   diagnostics), prometheus (optional: promtool and prometheus check examples/prometheus
//!   and the metrics exposition; those tests skip without them) and lintian (optional: `cargo
//!   xtask deb` checks the package with it): `dpkg-query -W`; installed with `apt-get` when
//!   running as root.

use std::{
    fs,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::process::{self, cargo, command, format_duration, is_root, output, which};

/// bpf-linker release the eBPF build is tested with.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM major versions bpf-linker 0.13.0 has a cargo feature for (`llvm-21` … `llvm-23`).
const BPF_LINKER_LLVM_MAJORS: RangeInclusive<u32> = 21..=23;
/// Debian packages the tests need (ip, tc; nft; ping, which a probe test uses to wait for
/// IPv6 without the code under test; sysctl, for the load test's namespaces).
const REQUIRED_PACKAGES: &[&str] = &["iproute2", "nftables", "iputils-ping", "procps"];
/// Debian packages that help diagnose the data plane (bpftool) or that tests use when present
/// (prometheus: promtool and the server, for the metrics tests, which skip without them;
/// lintian, for the package `cargo xtask deb` builds).
const OPTIONAL_PACKAGES: &[&str] = &["bpftool", "prometheus", "lintian"];
/// Oldest kernel xwan supports (Debian 12).
const MIN_KERNEL: (u32, u32) = (6, 1);

const NIGHTLY_MISSING: &str = "the Rust nightly toolchain is not installed, and setup does not \
install toolchains (on the xwan development and CI machines no other toolchain can be \
installed: the nightly comes with the machine). The eBPF object is built with `rustup run \
nightly` plus rust-src and bpf-linker 0.13.0, which needs a nightly whose LLVM major version is \
21, 22 or 23. Where installing is possible: `rustup toolchain install nightly --profile minimal \
--component rust-src`, then run `cargo xtask setup` again";

/// `cargo xtask setup`.
pub fn run() -> Result<()> {
    let start = Instant::now();
    ensure()?;
    // What `cargo xtask vm-test` (part of `cargo xtask test`) boots and runs: QEMU, strongSwan.
    crate::vm::packages().context("VM packages")?;
    println!(
        "setup: everything is ready ({})",
        format_duration(start.elapsed())
    );
    Ok(())
}

/// Checks every item, installing what is missing; used by every command that builds.
pub fn ensure() -> Result<()> {
    let mut failed: Vec<&str> = Vec::new();
    let mut item = |name: &'static str, result: Result<()>| {
        if let Err(err) = result {
            eprintln!("error: {name}: {err:#}");
            failed.push(name);
        }
    };

    kernel();
    match rustup() {
        Ok(()) => {
            item("rustfmt and clippy", host_components());
            match nightly() {
                Ok(nightly) => {
                    item("nightly rust-src", rust_src(&nightly));
                    item("bpf-linker", bpf_linker(&nightly));
                }
                Err(err) => {
                    item("nightly toolchain", Err(err));
                    println!(
                        "skipped: nightly rust-src, bpf-linker (they need the nightly toolchain)"
                    );
                }
            }
        }
        Err(err) => {
            item("rustup", Err(err));
            println!("skipped: Rust toolchains and bpf-linker (they need rustup)");
        }
    }
    item("Debian packages", packages());

    if !failed.is_empty() {
        bail!("setup could not provide: {}", failed.join(", "));
    }
    Ok(())
}

fn warn(message: impl std::fmt::Display) {
    eprintln!("warn: {message}");
}

/// Kernel version: a warning only, the build does not depend on it.
fn kernel() {
    let release = match fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(release) => release.trim().to_owned(),
        Err(err) => return warn(format_args!("cannot read the kernel version: {err}")),
    };
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_KERNEL => {
            println!("ok: Linux {release}");
        }
        (Some(_), Some(_)) => warn(format_args!(
            "Linux {release} is older than {}.{}, the oldest kernel xwan supports: \
             the eBPF tests will probably fail",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        _ => warn(format_args!("cannot parse the kernel version {release:?}")),
    }
}

fn rustup() -> Result<()> {
    let version = output(command("rustup").arg("--version")).map_err(|err| {
        anyhow!(
            "{err:#}\nrustup is needed: the eBPF object is built with `rustup run nightly`. \
             Install it (https://rustup.rs) or put ~/.cargo/bin on PATH"
        )
    })?;
    let version = version
        .split_whitespace()
        .nth(1)
        .unwrap_or("(unknown version)");
    println!("ok: rustup {version}");
    Ok(())
}

/// rustfmt and clippy for the toolchain the workspace builds with (`test` runs both).
fn host_components() -> Result<()> {
    let rustc = output(command("rustc").arg("--version"))?;
    let rustc = rustc
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let missing = || {
        [("rustfmt", "fmt"), ("clippy", "clippy")]
            .into_iter()
            .filter(|(_, sub)| output(&mut cargo([*sub, "--version"])).is_err())
            .map(|(component, _)| component)
            .collect::<Vec<_>>()
    };
    let to_install = missing();
    if !to_install.is_empty() {
        println!("installing: {} for {rustc}", to_install.join(", "));
        process::run(
            command("rustup")
                .args(["component", "add"])
                .args(&to_install),
        )?;
        let still = missing();
        if !still.is_empty() {
            bail!(
                "{} still missing after `rustup component add`",
                still.join(", ")
            );
        }
    }
    println!("ok: rustfmt and clippy for {rustc}");
    Ok(())
}

/// What setup needs to know about the installed nightly toolchain.
struct Nightly {
    sysroot: PathBuf,
    llvm_major: u32,
}

impl Nightly {
    /// The directory holding the nightly's `libLLVM.so.*`.
    fn lib_dir(&self) -> PathBuf {
        self.sysroot.join("lib")
    }
}

/// `rustc +nightly …`, never letting rustup install a missing toolchain on the fly.
fn rustc_nightly() -> Command {
    let mut cmd = command("rustc");
    cmd.arg("+nightly").env("RUSTUP_AUTO_INSTALL", "0");
    cmd
}

fn nightly() -> Result<Nightly> {
    let list = output(command("rustup").args(["toolchain", "list"]))?;
    // `nightly-<host>` (possibly followed by "(default)"), not a dated `nightly-2026-…`.
    let installed = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|name| {
            name == "nightly"
                || name
                    .strip_prefix("nightly-")
                    .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        });
    if !installed {
        bail!(NIGHTLY_MISSING);
    }
    let verbose = output(rustc_nightly().arg("-vV"))?;
    let field = |key: &str| {
        verbose
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .ok_or_else(|| anyhow!("`rustc +nightly -vV` has no `{key}` line"))
    };
    let release = field("release:")?;
    let llvm = field("LLVM version:")?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("cannot parse the nightly's LLVM version {llvm:?}"))?;
    let sysroot = PathBuf::from(output(rustc_nightly().args(["--print", "sysroot"]))?.trim());
    println!("ok: nightly toolchain (rustc {release}, LLVM {llvm})");
    Ok(Nightly {
        sysroot,
        llvm_major,
    })
}

/// rust-src for the nightly: `-Z build-std=core` compiles `core` from it.
fn rust_src(nightly: &Nightly) -> Result<()> {
    let core = nightly
        .sysroot
        .join("lib/rustlib/src/rust/library/core/src/lib.rs");
    if !core.is_file() {
        println!("installing: nightly rust-src (about 1 minute)");
        process::run(command("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        if !core.is_file() {
            bail!(
                "rust-src was installed but {} does not exist",
                core.display()
            );
        }
    }
    println!("ok: nightly rust-src");
    Ok(())
}

/// What `bpf-linker --version` says when run the way the eBPF build runs it.
enum Linker {
    Missing,
    /// Installed under `$CARGO_HOME/bin` but that directory is not on `PATH`.
    NotOnPath(PathBuf),
    Broken(PathBuf, anyhow::Error),
    OtherVersion(PathBuf, String),
    Good(PathBuf),
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    Ok(home()?.join(".cargo"))
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("HOME is not set"))
}

/// Prepends `dir` to `LD_LIBRARY_PATH`, as `rustup run nightly` does with the nightly's `lib/`.
fn ld_library_path(dir: &Path) -> Result<std::ffi::OsString> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&old));
    }
    Ok(std::env::join_paths(dirs)?)
}

fn probe_bpf_linker(nightly: &Nightly) -> Result<Linker> {
    let Some(path) = which("bpf-linker") else {
        let installed = cargo_home()?.join("bin/bpf-linker");
        return Ok(if process::is_executable(&installed) {
            Linker::NotOnPath(installed)
        } else {
            Linker::Missing
        });
    };
    let version = output(
        Command::new(&path)
            .arg("--version")
            .env("LD_LIBRARY_PATH", ld_library_path(&nightly.lib_dir())?),
    );
    Ok(match version {
        Err(err) => Linker::Broken(path, err),
        Ok(out) => match out.split_whitespace().nth(1) {
            Some(BPF_LINKER_VERSION) => Linker::Good(path),
            other => Linker::OtherVersion(path, other.unwrap_or("(unknown)").to_owned()),
        },
    })
}

fn bpf_linker(nightly: &Nightly) -> Result<()> {
    let major = nightly.llvm_major;
    if !BPF_LINKER_LLVM_MAJORS.contains(&major) {
        bail!(
            "the nightly toolchain uses LLVM {major}, but bpf-linker {BPF_LINKER_VERSION} \
             supports LLVM {} to {} only: use a nightly with one of those, or move xwan to a \
             bpf-linker release that supports LLVM {major} (xtask/src/setup.rs)",
            BPF_LINKER_LLVM_MAJORS.start(),
            BPF_LINKER_LLVM_MAJORS.end()
        );
    }
    let (reason, force) = match probe_bpf_linker(nightly)? {
        Linker::Good(path) => {
            println!(
                "ok: bpf-linker {BPF_LINKER_VERSION} ({}, loads the nightly's LLVM {major})",
                path.display()
            );
            return Ok(());
        }
        Linker::NotOnPath(path) => bail!(not_on_path(&path)),
        Linker::Missing => ("not installed".to_owned(), false),
        Linker::OtherVersion(path, version) => {
            (format!("{} is version {version}", path.display()), true)
        }
        Linker::Broken(path, err) => (
            format!(
                "{} does not run with the nightly's LLVM: {err:#}",
                path.display()
            ),
            true,
        ),
    };
    println!("installing: bpf-linker {BPF_LINKER_VERSION} ({reason}; about 2 minutes)");
    install_bpf_linker(nightly, force)?;
    match probe_bpf_linker(nightly)? {
        Linker::Good(path) => {
            println!(
                "ok: bpf-linker {BPF_LINKER_VERSION} ({}, loads the nightly's LLVM {major})",
                path.display()
            );
            Ok(())
        }
        Linker::NotOnPath(path) => bail!(not_on_path(&path)),
        Linker::Missing => bail!("`cargo install` succeeded but bpf-linker is not on PATH"),
        Linker::OtherVersion(path, version) => bail!(
            "bpf-linker {BPF_LINKER_VERSION} was installed, but the first bpf-linker on PATH \
             is {} (version {version}): remove it or reorder PATH",
            path.display()
        ),
        Linker::Broken(path, err) => bail!(
            "bpf-linker {BPF_LINKER_VERSION} was installed, but {} still does not run: {err:#}",
            path.display()
        ),
    }
}

fn not_on_path(path: &Path) -> String {
    let dir = path.parent().unwrap_or(path);
    format!(
        "bpf-linker is installed as {} but {} is not on PATH (rustc looks the linker up there): \
         add it, e.g. `export PATH=\"{}:$PATH\"`",
        path.display(),
        dir.display(),
        dir.display()
    )
}

/// Where setup keeps its files: `$XDG_CACHE_HOME/xwan` or `~/.cache/xwan`.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => home()?.join(".cache"),
    };
    Ok(base.join("xwan"))
}

/// Builds bpf-linker against the nightly's own libLLVM, so the linker and rustc agree on
/// the bitcode format.
///
/// The nightly ships `lib/libLLVM.so.<version>-rust-<release>` but no `libLLVM.so`, and
/// bpf-linker's build script links `-lLLVM` from `$LLVM_PREFIX/lib`. So setup makes a prefix
/// whose `lib/` holds `libLLVM.so` (and the versioned name, so the binary's rpath also finds
/// it outside `rustup run`), both symlinks to the nightly's file.
fn install_bpf_linker(nightly: &Nightly, force: bool) -> Result<()> {
    let nightly_lib = nightly.lib_dir();
    let libllvm = find_libllvm(&nightly_lib)?;
    let prefix = cache_dir()?.join("llvm-prefix");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let target = nightly_lib.join(&libllvm);
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = lib.join(name);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("cannot remove {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot create the symlink {}", link.display()))?;
    }
    let feature = format!("llvm-{}", nightly.llvm_major);
    let mut install = cargo([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        &feature,
    ]);
    if force {
        install.arg("--force");
    }
    install.env("LLVM_PREFIX", &prefix);
    process::run(&mut install)
}

/// The file name of the nightly's `libLLVM.so.*` (looked up, not hard-coded: it changes
/// with every nightly).
fn find_libllvm(dir: &Path) -> Result<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.") && entry.path().is_file() {
            found.push(name);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no libLLVM.so.* in {}: this nightly does not ship a shared LLVM, \
             which bpf-linker needs to be built against",
            dir.display()
        ),
        many => bail!(
            "several libLLVM.so.* in {}: {}",
            dir.display(),
            many.join(", ")
        ),
    }
}

/// Debian packages: [`REQUIRED_PACKAGES`] and [`OPTIONAL_PACKAGES`].
fn packages() -> Result<()> {
    if which("dpkg-query").is_none() {
        return commands_without_dpkg();
    }
    let all: Vec<&str> = REQUIRED_PACKAGES
        .iter()
        .chain(OPTIONAL_PACKAGES)
        .copied()
        .collect();
    // Exits with 1 when a package is unknown to dpkg, but still prints the known ones.
    let out = command("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\\n")
        .args(&all)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("could not run dpkg-query")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let installed = |pkg: &str| {
        listing.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(pkg) && words.last() == Some("installed")
        })
    };
    let missing_required: Vec<&str> = REQUIRED_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    let missing_optional: Vec<&str> = OPTIONAL_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing_required.is_empty() && missing_optional.is_empty() {
        println!("ok: Debian packages {}", all.join(", "));
        return Ok(());
    }

    if !is_root() {
        if !missing_required.is_empty() {
            let all_missing = [missing_required.as_slice(), missing_optional.as_slice()].concat();
            bail!(
                "{} not installed, and installing needs root: run \
                 `sudo apt-get install -y {}` (or `cargo xtask setup` as root)",
                missing_required.join(", "),
                all_missing.join(" ")
            );
        }
        warn(format_args!(
            "optional Debian package {} is not installed (bpftool: diagnostics; prometheus: \
             promtool for the metrics tests; lintian: the package check); as root: `apt-get install -y {}`",
            missing_optional.join(", "),
            missing_optional.join(" ")
        ));
        println!("ok: Debian packages {}", REQUIRED_PACKAGES.join(", "));
        return Ok(());
    }

    let all_missing = [missing_required.as_slice(), missing_optional.as_slice()].concat();
    println!(
        "installing: Debian packages {} (apt-get)",
        all_missing.join(", ")
    );
    process::run(apt_get().arg("update"))?;
    if !missing_required.is_empty() {
        process::run(&mut apt_install(&missing_required))?;
    }
    if !missing_optional.is_empty()
        && let Err(err) = process::run(&mut apt_install(&missing_optional))
    {
        warn(format_args!(
            "could not install the optional package {}: {err:#}",
            missing_optional.join(", ")
        ));
        println!("ok: Debian packages {}", REQUIRED_PACKAGES.join(", "));
        return Ok(());
    }
    println!("ok: Debian packages {}", all.join(", "));
    Ok(())
}

/// `apt-get -q`, non-interactive (CI runs it without stdin).
pub(crate) fn apt_get() -> Command {
    let mut cmd = command("apt-get");
    cmd.arg("-q")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

fn apt_install(packages: &[&str]) -> Command {
    let mut cmd = apt_get();
    cmd.args(["install", "-y", "--no-install-recommends"])
        .args(packages);
    cmd
}

/// Not a Debian-like system: look for the commands themselves.
fn commands_without_dpkg() -> Result<()> {
    // Non-root PATHs often lack the sbin directories, where these live.
    let find = |program: &str| {
        which(program).is_some()
            || ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .any(|dir| process::is_executable(&Path::new(dir).join(program)))
    };
    let missing: Vec<&str> = [
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("nft", "nftables"),
        ("ping", "iputils-ping"),
        ("sysctl", "procps"),
    ]
    .into_iter()
    .filter(|(program, _)| !find(program))
    .map(|(program, _)| program)
    .collect();
    if !missing.is_empty() {
        bail!(
            "commands {} not found and there is no dpkg-query to install packages with: \
             install iproute2, nftables, iputils-ping and procps with the system's package \
             manager",
            missing.join(", ")
        );
    }
    if !find("bpftool") {
        warn("optional bpftool (diagnostics) not found");
    }
    if !find("promtool") {
        warn("optional promtool (Prometheus; the metrics tests skip their checks) not found");
    }
    println!("ok: ip, tc, nft, ping, sysctl (no dpkg-query: checked the commands)");
    Ok(())
}
