//! The xwan lab: the seed scenario (DESIGN.md §1) on one machine, without hardware or VPN.
//!
//! Four network namespaces — client workstations (`lan`), the branch router, the head-office
//! router, the servers — and three WAN links between the two routers (two L3 tunnel
//! stand-ins made of TUN devices and a user-space wire, one Ethernet veth). Both routers run
//! the real `xwan` with the seed's configuration; real HTTP, FTP, SQL and VoIP flows cross
//! them; taps on every link say which link each packet took.
//!
//! * [`topology`] builds the namespaces and links; [`wire`] is the user-space TUN wire (cut,
//!   delay, loss); [`netns`] the namespace primitives.
//! * [`config`] generates both agents' configurations from `examples/seed-*.toml`;
//!   [`agent`] runs `xwan run` inside a namespace.
//! * [`traffic`] has the servers and clients; [`observe`] the per-link taps.
//! * [`firewall`]: with `--firewall`, a stateful forward policy on both sites and the
//!   agents' `netfilter` forwarding;
//! * [`ipsec`] keys the real tunnels of the VM lab (manual keys, strongSwan) and reads SAs;
//! * [`lab`] ties them into a [`lab::Lab`] that cleans everything up on drop;
//!   [`control`] lets a second terminal drive a running lab, and removes a killed one.
//!
//! `cargo xtask lab` runs the `xwan-lab` binary (live view); `lab/tests/` are the end-to-end
//! failover tests on the same library.

pub mod agent;
pub mod config;
pub mod control;
pub mod firewall;
pub mod ipsec;
pub mod lab;
pub mod netns;
pub mod observe;
pub mod topology;
pub mod traffic;
pub mod wire;
