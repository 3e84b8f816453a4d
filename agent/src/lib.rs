//! The xwan agent library. Data flows config → plan → [`datapath`] (maps and programs) →
//! counters → metrics; each step is one module:
//!
//! * [`config`]: parse and validate the TOML file (errors name file, line, object, field);
//! * [`router`]: per router, the active gateway set and its weighted slot table;
//! * [`health`]: per gateway, the Ready/Unavailable state machine fed by probes and links;
//! * [`probe`]: ICMP/ICMPv6 echo and TCP connect probes bound to a link, and the daemon's
//!   fleet of per-gateway probe tasks;
//! * [`netlink`]: interfaces, addresses, neighbours and link events from rtnetlink; the
//!   tunnel interfaces xwan owns;
//! * [`xfrm`]: IPsec SAs and policies per tunnel link (read, watched, manual keys), and their
//!   supervision for the daemon;
//! * [`planner`]: config + kernel facts + router tables → the data plane's plan;
//! * [`datapath`]: load, attach, pin, program the maps, read counters;
//! * [`metrics`]: the Prometheus registry and its HTTP endpoint;
//! * [`daemon`], [`control`], [`status`], [`explain`]: `xwan run` (orchestration only), its
//!   control socket, `xwan status`, `xwan explain`; [`kernel`]: the daemon's kernel requests,
//!   each with a deadline;
//! * [`doctor`]: `xwan doctor`, what the kernel and each interface offer, before deploying;
//! * [`events`]: what changed, for `[[hook]]` commands and `xwan events`;
//! * [`systemd`]: readiness notification and the journal, under `xwan.service`.

pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod doctor;
pub mod events;
pub mod explain;
pub mod health;
pub mod kernel;
pub mod metrics;
pub mod netlink;
pub mod offload;
pub mod planner;
pub mod probe;
pub mod router;
pub mod status;
pub mod systemd;
pub mod xfrm;
