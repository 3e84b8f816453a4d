//! xwan developer tooling, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! One module per command; `process` holds the helpers that run external commands.

mod bench;
mod build;
mod fmt;
mod process;
mod setup;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, test and benchmark xwan",
    after_help = "Start with `cargo xtask setup`; `cargo xtask test` is the project's test command (run it as root)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the build/test prerequisites and install what is missing (idempotent).
    ///
    /// Items: rustfmt/clippy, the nightly toolchain (cannot be installed by setup),
    /// nightly rust-src, bpf-linker 0.13.0 built against the nightly's LLVM, and the Debian
    /// packages iproute2, nftables, bpftool (installing those needs root).
    Setup,
    /// Run setup's checks, then `cargo build --workspace` (agent/build.rs builds the eBPF object).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// The project's test command (needs root): setup, fmt check, clippy, `cargo test --release`.
    ///
    /// Arguments after `--` are passed to `cargo test --workspace --release`, e.g.
    /// `cargo xtask test -- flow -- --nocapture`; with `-p PACKAGE` among them, `--workspace`
    /// is left out: `cargo xtask test -- -p xwan-common`.
    Test {
        /// Leave out the Linux 6.1 VM suite (`vm-test`), which otherwise runs after the
        /// host's tests and fails the run when its VM cannot be set up.
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The data-plane tests on Debian 12's Linux 6.1 in a QEMU VM (needs root).
    ///
    /// Installs what it needs on first use (QEMU and friends, virtme-ng, the kernel), builds
    /// the test binaries here, boots the kernel with this host's root filesystem read-only
    /// and runs them inside as root (or the command after `--`).
    VmTest(VmTestArgs),
    /// Run setup's checks, then the benchmarks: `cargo run --release -p xwan-bench -- <args>`.
    Bench {
        /// Arguments for the benchmark binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Format the workspace: `cargo fmt --all`.
    Fmt,
}

#[derive(clap::Args)]
struct VmTestArgs {
    /// Stop the VM after this many seconds, boot included.
    #[arg(long, default_value_t = vm::DEFAULT_TIMEOUT_S)]
    timeout: u64,
    /// Packets per model-vs-kernel property test (emulated CPU: keep it small).
    #[arg(long, default_value_t = vm::DEFAULT_CASES)]
    cases: u32,
    /// Use KVM instead of emulating the CPU (only where /dev/kvm works).
    #[arg(long)]
    kvm: bool,
    /// A command to run in the VM (as root) instead of the suite, e.g. `-- uname -r`; its
    /// exit status is the result.
    #[arg(last = true)]
    command: Vec<String>,
}

impl VmTestArgs {
    fn options(&self) -> vm::Options {
        vm::Options {
            timeout: std::time::Duration::from_secs(self.timeout),
            cases: self.cases,
            kvm: self.kvm,
            command: self.command.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => build::run(release),
        Command::Test { no_vm, args } => test::run(&args, !no_vm),
        Command::VmTest(a) => vm::run(&a.options()),
        Command::Bench { args } => bench::run(&args),
        Command::Fmt => fmt::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
