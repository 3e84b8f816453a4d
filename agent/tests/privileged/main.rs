//! The agent's privileged tests, one binary with a module per topic: they load eBPF programs,
//! mount bpffs, create network namespaces, veth and TUN devices, and start real `xwan run`
//! agents, so they need root. Each module's own doc says what its topic covers; `support` is
//! what they share (frames, plans and the model harness, namespaces, the two-WAN topology, its
//! agent configuration and the agent process).
//!
//! One topic: `cargo test --release -p xwan --test privileged -- daemon::` (libtest filters
//! are substrings of the test's path, `datapath::netns::` for one module of `datapath`; give
//! several to run several topics).
//!
//! Which tests run at the same time: libtest runs a binary's tests in parallel; each test
//! first takes its turn from [`support::exclusive`] or [`support::shared`], which keep the
//! isolation the topics had as binaries of their own (run one after another) and give the
//! timing-sensitive tests the machine to themselves:
//!
//! * `support::exclusive()`: no other test runs meanwhile. Every test that starts an agent
//!   (control, daemon, events, health, restart, service, xfrm's agent tests), that asserts a time bound (probe's answer
//!   times, timeouts, blackhole detection, carrier loss), and every test that was alone in its
//!   binary (control, netlink).
//! * `support::shared(module_path!())`: runs alongside the other shared tests of its own
//!   module only, as it did in its binary: datapath (crafted packets, the model on generated
//!   packets, the programs on real interfaces), doctor, xfrm's policies and events, probe's
//!   namespaces removed on panic.
//!
//! A new test takes one or the other as its first line; when in doubt, `exclusive`.

mod control;
mod daemon;
mod datapath;
mod doctor;
mod events;
mod health;
mod netlink;
mod probe;
mod restart;
mod service;
mod support;
mod xfrm;
