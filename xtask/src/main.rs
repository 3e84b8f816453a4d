//! xwan developer tooling, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! One module per command; `process` holds the helpers that run external commands.

mod bench;
mod build;
mod fmt;
mod lab;
mod load;
mod process;
mod setup;
mod test;

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
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run setup's checks, then the benchmarks: `cargo run --release -p xwan-bench -- <args>`.
    Bench {
        /// Arguments for the benchmark binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Format the workspace: `cargo fmt --all`.
    Fmt,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => build::run(release),
        Command::Test { args } => test::run(&args),
        Command::Bench { args } => bench::run(&args),
        Command::Fmt => fmt::run(),
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
