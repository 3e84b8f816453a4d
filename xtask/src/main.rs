//! xwan developer tooling, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! One module per command; `process` holds the helpers that run external commands.

mod bench;
mod build;
mod deb;
mod fmt;
mod lab;
mod load;
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
    /// The Debian package (`target/deb/xwan_VERSION_ARCH.deb`): the release binary, the
    /// systemd unit, a conffile, manual pages, completions and the documentation; its
    /// contents, control data and lintian's verdict are checked.
    Deb,
    /// The lab (root): the seed scenario in network namespaces with traffic and a live view.
    ///
    /// Runs setup's checks, builds `xwan` and `xwan-lab` (release), then `xwan-lab ARGS`:
    /// no arguments starts the lab (Ctrl-C removes it); `cut WAN2 [--silent|--carrier]`,
    /// `restore WAN2`, `delay WAN1 80`, `loss WAN1 5`, `metrics` drive a running lab from
    /// another terminal; `--down` removes a lab, also one whose process was killed.
    Lab {
        /// Arguments for the lab binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The line-rate load test (needs root): xwan against kernel policy routing on veth
    /// namespaces; builds `xwan` and `xwan-bench` (release), then runs `xwan-bench load <args>`.
    ///
    /// `cargo xtask load -- --smoke` is the short version the test suite runs;
    /// `cargo xtask load -- --help` lists the options.
    Load {
        /// Arguments for `xwan-bench load`.
        #[arg(last = true)]
        args: Vec<String>,
    },
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
        Command::Deb => deb::run(),
        Command::Lab { args } => lab::run(&args),
        Command::Load { args } => load::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
