//! A running lab: the [`Topology`], both agents with their generated configurations, the
//! servers and the link taps. [`Lab::start`] returns once the branch sees every gateway
//! Ready and both agents have committed a plan; dropping a [`Lab`] stops the agents with
//! `xwan stop` (detach, unpin), kills them if they do not answer, unmounts their bpffs and
//! deletes the namespaces. Clients ([`crate::traffic::Traffic`]) are owned by the caller and
//! must be dropped first (declare them after the lab).
//!
//! What a reader may change: what "ready" means ([`Lab::wait_ready`]); keep every wait bounded.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xwan::{
    control::{Answer, Request},
    status::{Availability, Status},
};

use crate::{
    agent::{Agent, AgentDir},
    config::{self, Options},
    firewall,
    ipsec::{self, Ike, Secrets},
    observe::Observer,
    topology::{LINKS, Medium, Topology, Tunnels},
    traffic::Servers,
};

/// How long the agents get to come up and see every gateway Ready (real IPsec runs in an
/// emulated VM: longer).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const READY_TIMEOUT_IPSEC: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the lab lives: namespace name prefix and state directory.
#[derive(Clone, Debug)]
pub struct Place {
    pub prefix: String,
    pub dir: PathBuf,
}

impl Place {
    /// A place no other process uses: `xwl<pid>-<n>-` and a directory under the system's
    /// temporary directory (for tests, which may run in parallel).
    pub fn unique() -> Place {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("xwl{}-{n}-", std::process::id());
        Place {
            dir: std::env::temp_dir().join(format!("xwan-lab-{}", prefix.trim_end_matches('-'))),
            prefix,
        }
    }
}

// Field order is drop order: agents stop before the taps, servers and namespaces go.
pub struct Lab {
    pub branch: Agent,
    pub headoffice: Agent,
    /// The charons keying the IKE links (real IPsec only).
    pub ike: Option<Ike>,
    /// Key material of the real tunnels (none with stand-ins).
    pub secrets: Secrets,
    pub observer: Observer,
    _servers: Servers,
    pub branch_dir: AgentDir,
    pub headoffice_dir: AgentDir,
    pub topo: Topology,
    xwan: PathBuf,
    opts: Options,
    state_dir: RemoveDir,
}

/// Removes the (by then empty) state directory, last.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Lab {
    /// Builds the topology in `place`, writes both configurations (from the seed, with
    /// `opts`), starts the agents, servers and taps, and waits until ready.
    pub fn start(xwan: &Path, place: &Place, opts: &Options) -> Result<Lab> {
        std::fs::create_dir_all(&place.dir)
            .with_context(|| format!("creating {}", place.dir.display()))?;
        let topo = Topology::build(&place.prefix, opts.tunnels)?;
        if opts.firewall {
            let uplinks: Vec<&str> = (0..LINKS.len())
                .filter(|&i| topo.medium(i) == Medium::Veth)
                .map(|i| LINKS[i].ifname)
                .collect();
            firewall::install(&topo.branch, false, &uplinks)?;
            firewall::install(&topo.headoffice, true, &[])?;
        }
        let branch_dir = AgentDir::create(place.dir.join("branch"))?;
        let headoffice_dir = AgentDir::create(place.dir.join("headoffice"))?;
        write_config(&branch_dir, &config::branch(branch_dir.path(), opts)?)?;
        write_config(
            &headoffice_dir,
            &config::headoffice(headoffice_dir.path(), opts)?,
        )?;
        let mut secrets = Secrets::default();
        let ike = match opts.tunnels {
            Tunnels::StandIn => None,
            Tunnels::Ipsec(keying) => {
                ipsec::write_keys(
                    keying,
                    branch_dir.path(),
                    headoffice_dir.path(),
                    &mut secrets,
                )?;
                let ike = Ike::start(
                    keying,
                    &topo.branch,
                    &topo.headoffice,
                    &place.dir.join("ike"),
                    &mut secrets,
                )?;
                Some(ike)
            }
        };
        let servers = Servers::start(topo.servers.name())?;
        let headoffice = Agent::start(xwan, &topo.headoffice, &headoffice_dir, "agent.log")?;
        let mut branch = Agent::start(xwan, &topo.branch, &branch_dir, "agent.log")?;
        if opts.tunnels.is_ipsec() {
            // The agents create the VTIs; the kernel's routes and the taps need them.
            let t = Instant::now();
            while !vtis_exist(&topo) {
                branch.check_running()?;
                if t.elapsed() > READY_TIMEOUT_IPSEC {
                    bail!(
                        "the agents created no VTIs within {READY_TIMEOUT_IPSEC:?}\n---- branch \
                         log\n{}",
                        branch.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            topo.route_sites()?;
        }
        let observer = Observer::start(&topo, opts.firewall)?;
        let mut lab = Lab {
            branch,
            headoffice,
            ike,
            secrets,
            observer,
            _servers: servers,
            branch_dir,
            headoffice_dir,
            topo,
            xwan: xwan.to_owned(),
            opts: *opts,
            state_dir: RemoveDir(place.dir.clone()),
        };
        lab.wait_ready()?;
        Ok(lab)
    }

    /// Every gateway of every branch router Ready, both agents committed a plan, every return
    /// route of the head office Ready, and the neighbours of the Ethernet link resolved on both
    /// sides (the head office's return
    /// route over WAN3 needs the branch's MAC address).
    pub fn wait_ready(&mut self) -> Result<Duration> {
        let t = Instant::now();
        let timeout = match self.topo.tunnels {
            Tunnels::StandIn => READY_TIMEOUT,
            Tunnels::Ipsec(_) => READY_TIMEOUT_IPSEC,
        };
        loop {
            self.branch.check_running()?;
            self.headoffice.check_running()?;
            let branch_ready = self.branch.status().is_some_and(|s| all_ready(&s));
            // Return routes work only once their gateways are Ready (first probe verdicts).
            let ho_ready = self.headoffice.status().is_some_and(|s| {
                s.epoch > 0
                    && s.return_routes
                        .iter()
                        .all(|r| r.availability == Availability::Ready)
            });
            if branch_ready && ho_ready && self.neighbours_resolved() {
                return Ok(t.elapsed());
            }
            if t.elapsed() > timeout {
                bail!(
                    "the lab was not ready after {timeout:?} (branch gateways all Ready: \
                     {branch_ready}, head office committed: {ho_ready})\n---- branch log\n{}\n\
                     ---- head office log\n{}",
                    self.branch.log(),
                    self.headoffice.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn neighbours_resolved(&self) -> bool {
        let veths = LINKS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.topo.medium(*i) == Medium::Veth);
        veths.map(|(_, l)| l).all(|l| {
            [
                (&self.topo.branch, l.headoffice),
                (&self.topo.headoffice, l.branch),
            ]
            .iter()
            .all(|(ns, peer)| {
                crate::netns::run(&[
                    "ip",
                    "-n",
                    ns.name(),
                    "neigh",
                    "show",
                    &peer.to_string(),
                    "dev",
                    l.ifname,
                ])
                .is_ok_and(|o| o.contains("lladdr"))
            })
        })
    }

    /// The branch configuration the lab started with, to edit and [`Self::reload_branch`].
    pub fn branch_config(&self) -> Result<toml::Table> {
        config::branch(self.branch_dir.path(), &self.opts)
    }

    /// Writes a new branch configuration and asks the agent to reload it.
    pub fn reload_branch(&self, text: &str) -> Result<Answer> {
        std::fs::write(self.branch_dir.config(), text)?;
        self.branch.request(Request::Reload)
    }

    /// SIGTERM to the branch agent, then a new one with the same configuration. Returns the
    /// time the old agent took to exit.
    pub fn restart_branch(&mut self, log_name: &str) -> Result<Duration> {
        let exited = self.branch.terminate(STOP_TIMEOUT)?;
        self.branch = Agent::start(&self.xwan, &self.topo.branch, &self.branch_dir, log_name)?;
        Ok(exited)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir.0
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // `xwan stop` removes programs, qdiscs and pins; the namespaces go after.
        for a in [&mut self.branch, &mut self.headoffice] {
            if let Err(e) = a.stop(STOP_TIMEOUT) {
                eprintln!("xwan lab: stopping an agent: {e:#}");
            }
        }
    }
}

/// Every link's interface exists on both sites.
fn vtis_exist(topo: &Topology) -> bool {
    [&topo.branch, &topo.headoffice].iter().all(|site| {
        LINKS.iter().all(|l| {
            crate::netns::run(&["ip", "-n", site.name(), "link", "show", l.ifname]).is_ok()
        })
    })
}

fn write_config(dir: &AgentDir, t: &toml::Table) -> Result<()> {
    let path = dir.config();
    std::fs::write(&path, config::render(t)).with_context(|| format!("writing {}", path.display()))
}

/// Every gateway of every router is Ready.
pub fn all_ready(s: &Status) -> bool {
    !s.routers.is_empty()
        && s.routers.iter().all(|r| {
            r.gateways
                .iter()
                .all(|g| g.availability == Availability::Ready)
        })
}

/// (state, availability) of gateway `gw` in router `router`, as the table shows them
/// ("On standby", "Ready").
pub fn gateway_state(s: &Status, router: &str, gw: &str) -> Option<(String, String)> {
    let r = s.routers.iter().find(|r| r.name == router)?;
    let g = r.gateways.iter().find(|g| g.name == gw)?;
    Some((g.state.to_string(), g.availability.to_string()))
}
