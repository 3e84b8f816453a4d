//! The daemon's kernel requests, each with a deadline. The daemon's loop decides failover, so
//! it does not wait for the kernel after an event: re-reading the addresses (after an address
//! event, [`addresses`]) and the SAs (`xfrm::supervisor`) happen in [`Reader`] tasks, whose
//! results come back as messages. Requests that a start, a reload or `xwan stop` needs in
//! order ([`facts`]) are awaited where they are made, within [`DEADLINE`] ([`bounded`]).

use std::{fmt::Display, future::Future, net::IpAddr, sync::Arc, time::Duration};

use anyhow::{Result, anyhow};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};
use tracing::{error, info, warn};

use crate::{
    config::Config,
    datapath::MovedRing,
    metrics::Metrics,
    netlink::{
        Netlink,
        conntrack::{Conntrack, Reset},
        policy::Policy,
    },
    planner::Facts,
};

/// Longest wait for one kernel request (a netlink answer, an SA dump). The kernel answers in
/// microseconds; this is for the answer that never comes (a lost reply, a dead connection).
pub const DEADLINE: Duration = Duration::from_secs(5);

/// `request` within [`DEADLINE`]: its result (its error unchanged), or an error saying `what`
/// got no answer.
pub async fn bounded<T, E>(
    what: impl Display,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(DEADLINE, request).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(anyhow!(
            "{what}: no answer from the kernel within {}",
            humantime::format_duration(DEADLINE)
        )),
    }
}

/// What the plan needs of the kernel: interfaces, local addresses, and the neighbours of the
/// gateways of `config`.
pub async fn facts(nl: &Netlink, config: &Config) -> Result<Facts> {
    let mut f = Facts::default();
    for i in bounded("reading the interfaces", nl.interfaces()).await? {
        f.interfaces.insert(i.name.clone(), i);
    }
    f.local_addrs = bounded("reading the addresses", nl.addresses())
        .await?
        .into_iter()
        .map(|(_, ip, _)| ip)
        .collect();
    for g in &config.gateways {
        let link = config.link(g.link);
        for address in g.next_hops() {
            let what = format!("reading the neighbour {address} of gateway '{}'", g.name);
            if let Some(i) = f.interfaces.get(&link.interface)
                && let Some(mac) = bounded(what, nl.neighbour(i.ifindex, address)).await?
            {
                f.neighbours.insert((i.ifindex, address), mac);
            }
        }
    }
    Ok(f)
}

/// A task that reads something from the kernel when asked, and hands the result over. Asks
/// made while it reads coalesce into one more read. Dropping it stops the task.
pub struct Reader<T> {
    wake: Arc<Notify>,
    results: mpsc::Receiver<T>,
    task: JoinHandle<()>,
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Send + 'static> Reader<T> {
    /// Spawns `read(asked, results)`: a loop that waits for `asked` and sends what it read to
    /// `results` (a send fails once the reader is dropped; the loop should end then).
    pub fn spawn<F>(read: impl FnOnce(Arc<Notify>, mpsc::Sender<T>) -> F) -> Reader<T>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let wake = Arc::new(Notify::new());
        let (tx, results) = mpsc::channel(1);
        let task = tokio::spawn(read(wake.clone(), tx));
        Reader {
            wake,
            results,
            task,
        }
    }
}

impl<T> Reader<T> {
    /// Asks for a (new) read.
    pub fn request(&self) {
        self.wake.notify_one();
    }

    /// The next result; pending while there is none.
    pub async fn next(&mut self) -> Option<T> {
        self.results.recv().await
    }
}

/// Re-reads the local addresses when asked ([`Reader::request`], on an address event).
pub fn addresses(nl: Netlink) -> Reader<Vec<IpAddr>> {
    Reader::spawn(|asked, tx| async move {
        loop {
            asked.notified().await;
            match bounded("re-reading the addresses", nl.addresses()).await {
                Ok(a) => {
                    let a = a.into_iter().map(|(_, ip, _)| ip).collect();
                    if tx.send(a).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!("{e:#}; the previous addresses stay until the next change"),
            }
        }
    })
}

/// Writes the `netfilter` mode's policy routing ([`crate::netlink::policy`]) in a task of its
/// own: the daemon hands over what each plan needs ([`PolicyWriter::set`]) and goes on; the
/// task writes the latest (`None`: removes all of xwan's), within [`DEADLINE`], and logs what
/// changed or why it could not. A start, a reload and `xwan stop` write it themselves, in
/// order, and hand the writer what they wrote.
pub struct PolicyWriter {
    wanted: watch::Sender<Option<Policy>>,
    task: JoinHandle<()>,
}

impl Drop for PolicyWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PolicyWriter {
    /// A writer for `nl`'s namespace, before anything was written ([`Self::written`] says
    /// what was).
    pub fn spawn(nl: Netlink) -> PolicyWriter {
        let (wanted, mut rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let policy = rx.borrow_and_update().clone();
                let r = match &policy {
                    Some(p) => bounded("writing the policy routing", nl.sync_policy(p)).await,
                    None => bounded("removing the policy routing", nl.remove_policy()).await,
                };
                match r {
                    Ok(c) if c.is_empty() => {}
                    Ok(c) => info!(
                        rules_added = c.add_rules.len(),
                        rules_removed = c.delete_rules.len(),
                        routes_set = c.set_routes.len(),
                        routes_removed = c.delete_routes.len(),
                        "policy routing written"
                    ),
                    Err(e) => error!(
                        "{e:#}; marked packets may follow the main table until the next change"
                    ),
                }
            }
        });
        PolicyWriter { wanted, task }
    }

    /// The policy the kernel should hold (written unless it is what was last asked).
    pub fn set(&self, policy: Option<Policy>) {
        self.wanted.send_if_modified(|w| {
            let changed = *w != policy;
            *w = policy;
            changed
        });
    }

    /// Records `policy` as written by the caller (no write of its own).
    pub fn written(&self, policy: Option<Policy>) {
        self.wanted.send_if_modified(|w| {
            *w = policy;
            false
        });
    }
}

/// Resets the conntrack entries of the kernel-path flows the data plane moved to another
/// gateway (`MOVED_MAP`, see [`crate::netlink::conntrack`]), on a thread of its own: the
/// requests are synchronous and a failover may move thousands of flows, which must not hold
/// up the daemon's loop. The ctnetlink socket is opened at the first record, in the
/// namespace the resetter was spawned in, so a box in `xdp` mode never opens one. Stopped
/// and joined on drop.
pub struct ConntrackResetter {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the resetter's thread looks at its stop flag while the ring is empty.
const RESETTER_TICK_MS: i32 = 200;

impl ConntrackResetter {
    pub fn spawn(mut ring: MovedRing, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xwan-conntrack".into())
            .spawn(move || {
                let mut ct: Option<Conntrack> = None;
                while !stopped.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd: ring.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, RESETTER_TICK_MS) };
                    for m in ring.drain() {
                        let outcome = match &mut ct {
                            Some(c) => c.reset(&m.key),
                            None => Conntrack::new().and_then(|mut c| {
                                let r = c.reset(&m.key);
                                ct = Some(c);
                                r
                            }),
                        };
                        match outcome {
                            Ok(r) => {
                                if r == Reset::Deleted {
                                    tracing::debug!(
                                        from = m.from,
                                        to = m.to,
                                        proto = m.key.proto,
                                        "moved flow: its conntrack entry deleted"
                                    );
                                }
                                metrics.record_conntrack_reset(Some(r));
                            }
                            Err(e) => {
                                warn!(
                                    from = m.from,
                                    to = m.to,
                                    "resetting a moved flow's conntrack entry: {e}; it keeps \
                                     the old link's NAT until it expires"
                                );
                                metrics.record_conntrack_reset(None);
                                // A broken socket is opened anew for the next record.
                                ct = None;
                            }
                        }
                    }
                }
            })?;
        Ok(ConntrackResetter {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ConntrackResetter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_without_answer_fails_at_the_deadline() {
        let t = tokio::time::Instant::now();
        let never = std::future::pending::<Result<(), std::io::Error>>();
        let e = bounded("reading the addresses", never).await.unwrap_err();
        assert_eq!(t.elapsed(), DEADLINE);
        assert_eq!(
            e.to_string(),
            "reading the addresses: no answer from the kernel within 5s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answers_and_errors_pass_unchanged() {
        let ok = async { Ok::<_, std::io::Error>(7) };
        assert_eq!(bounded("x", ok).await.unwrap(), 7);
        let refused = async { Err::<(), _>(std::io::Error::other("netlink request failed")) };
        let e = bounded("x", refused).await.unwrap_err();
        assert_eq!(format!("{e:#}"), "netlink request failed");
    }
}
