//! The daemon's IPsec links, supervised: at start and on reload the tunnel interfaces xwan
//! owns are created or adopted and manual SAs installed ([`Supervisor::setup`]), and what a
//! reload dropped is removed ([`Supervisor::remove_stale`]); `xwan stop` removes them all
//! ([`Supervisor::teardown`]). Meanwhile every SA of the namespace is re-read on each XFRM
//! event and every 10 s ([`Supervisor::next_read`], in a reader task: the daemon's loop never
//! waits for it), which tells whether each link has a usable SA pair (its gateways' link
//! state), when it was rekeyed, and the rows `xwan status` and the metrics show.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use futures::{StreamExt, channel::mpsc::UnboundedReceiver};
use tokio::time::Interval;
use tracing::{info, warn};

use super::{LinkSas, SaInfo, XfrmEvent, XfrmSocket};
use crate::{
    config::{Config, IpsecTunnel, Link, Owner, TunnelDevice},
    kernel::{DEADLINE, Reader, bounded},
    metrics::{self, Metrics},
    netlink::{Netlink, tunnel::TunnelSpec},
    status::{self, IpsecLinkRow, SaRow},
};

/// How often the SAs are re-read besides on XFRM events: this catches what a lost event
/// (netlink buffer overrun) would hide.
const SA_RESYNC: Duration = Duration::from_secs(10);

pub struct Supervisor {
    nl: Netlink,
    /// Every SA of the namespace, as of the last read.
    sas: Vec<SaInfo>,
    /// Per IPsec link name: when a new SA last replaced one of it.
    last_rekey: HashMap<String, SystemTime>,
    /// The IPsec links, for metric scrapes.
    links: Arc<Mutex<Vec<(String, IpsecTunnel)>>>,
    reader: Reader<Vec<SaInfo>>,
    resync: Interval,
}

/// The IPsec links of `config`: (name, tunnel).
fn ipsec_links(config: &Config) -> Vec<(String, IpsecTunnel)> {
    config
        .links
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.ipsec.clone()?)))
        .collect()
}

impl Supervisor {
    /// Reads every manual key file of `config`: a refused one stops the start before anything
    /// is set up.
    pub fn check_keys(config: &Config) -> Result<()> {
        for l in &config.links {
            if let Some(m) = l.ipsec.as_ref().and_then(|t| t.manual_sa.as_ref()) {
                super::keys::load(&l.name, m)?;
            }
        }
        Ok(())
    }

    /// Subscribes to XFRM events and serves the IPsec metrics; knows no SA until
    /// [`Supervisor::setup`].
    pub fn start(config: &Config, nl: Netlink, metrics: &Metrics) -> Result<Supervisor> {
        let reader = sa_reader(super::subscribe()?);
        let links = Arc::new(Mutex::new(ipsec_links(config)));
        let scraped = links.clone();
        metrics.set_xfrm_source(Arc::new(move || {
            let links = scraped.lock().map(|l| l.clone()).unwrap_or_default();
            let sas = if links.is_empty() { vec![] } else { dump_sas() };
            metrics::XfrmSnapshot {
                links: links
                    .iter()
                    .map(|(n, t)| (n.clone(), LinkSas::of(t, &sas)))
                    .collect(),
                errors: super::stats::read().unwrap_or_default(),
                now_unix: now_unix(),
            }
        }));
        Ok(Supervisor {
            nl,
            sas: vec![],
            last_rekey: HashMap::new(),
            links,
            reader,
            resync: tokio::time::interval(SA_RESYNC),
        })
    }

    /// Creates (or adopts) the tunnel interfaces xwan owns and installs manual SAs; then reads
    /// every SA. Errors name the link and say what to do.
    pub async fn setup(&mut self, config: &Config) -> Result<()> {
        for l in &config.links {
            let Some(t) = &l.ipsec else { continue };
            if t.owner == Owner::Xwan {
                let address = l
                    .address
                    .context("an xwan-owned tunnel link has an address (validated)")?;
                let spec = TunnelSpec::new(&l.name, &l.interface, t, address, l.mtu);
                let what = format!(
                    "link '{}': creating or adopting the tunnel interface {}",
                    l.name, l.interface
                );
                let done = bounded(what, self.nl.ensure_tunnel(&spec)).await?;
                info!(link = %l.name, interface = %l.interface, kind = t.device.kind(), id = t.device.id(), ?done, "tunnel interface ready");
            }
            if let Some(m) = &t.manual_sa {
                let keys = super::keys::load(&l.name, m)?;
                let mut sock = XfrmSocket::open()?;
                super::install_manual(&mut sock, &l.name, t, m, keys)?;
            }
        }
        if let Ok(mut i) = self.links.lock() {
            *i = ipsec_links(config);
        }
        self.on_sas(config, sas().await);
        Ok(())
    }

    /// The next read of every SA (after an XFRM event, or the periodic re-read while `config`
    /// has IPsec links), for [`Supervisor::on_sas`]. Cancel-safe.
    pub async fn next_read(&mut self, config: &Config) -> Option<Vec<SaInfo>> {
        let ipsec = config.links.iter().any(|l| l.ipsec.is_some());
        loop {
            tokio::select! {
                sas = self.reader.next() => return sas,
                _ = self.resync.tick(), if ipsec => self.reader.request(),
            }
        }
    }

    /// Every SA as just read; notes rekeys (a new SPI where the link already had an SA).
    /// Returns the links whose SA pair came or went: (link name, what is missing now).
    pub fn on_sas(
        &mut self,
        config: &Config,
        new: Vec<SaInfo>,
    ) -> Vec<(String, Option<&'static str>)> {
        let mut changed = Vec::new();
        for l in &config.links {
            let Some(t) = &l.ipsec else { continue };
            let (old, now) = (LinkSas::of(t, &self.sas), LinkSas::of(t, &new));
            let rekeyed = [(&old.inbound, &now.inbound), (&old.outbound, &now.outbound)]
                .iter()
                .any(|(o, n)| !o.is_empty() && n.iter().any(|s| !o.iter().any(|x| x.spi == s.spi)));
            if rekeyed {
                info!(link = %l.name, "IPsec SA rekeyed");
                self.last_rekey.insert(l.name.clone(), SystemTime::now());
            }
            if old.usable() != now.usable() {
                match now.missing() {
                    None => info!(link = %l.name, "IPsec SA pair present"),
                    Some(m) => {
                        warn!(link = %l.name, missing = m, "IPsec link has no usable SA pair")
                    }
                }
                changed.push((l.name.clone(), now.missing()));
            }
        }
        self.sas = new;
        changed
    }

    /// An IPsec link without an SA in each direction (its gateways are Unavailable, `no SA`).
    pub fn lacks_sa_pair(&self, link: &Link) -> bool {
        link.ipsec
            .as_ref()
            .is_some_and(|t| !LinkSas::of(t, &self.sas).usable())
    }

    /// `xwan status`'s IPsec rows: each link of `config` and its SAs.
    pub fn rows(&self, config: &Config) -> Vec<IpsecLinkRow> {
        let now = now_unix();
        config
            .links
            .iter()
            .filter_map(|l| {
                let t = l.ipsec.as_ref()?;
                let sas = LinkSas::of(t, &self.sas);
                let row = |dir: &str, s: &SaInfo| SaRow {
                    direction: dir.to_owned(),
                    spi: format!("{:#010x}", s.spi),
                    algorithms: s.algorithms.clone(),
                    bytes: s.bytes,
                    packets: s.packets,
                    age_s: (s.add_time > 0).then(|| now.saturating_sub(s.add_time)),
                    lifetime_left_s: s.lifetime_left(now),
                };
                Some(IpsecLinkRow {
                    link: l.name.clone(),
                    interface: l.interface.clone(),
                    device: match t.device {
                        TunnelDevice::Vti { key } => format!("vti key {key}"),
                        TunnelDevice::Xfrm { if_id } => format!("xfrm if_id {if_id}"),
                    },
                    sa_source: if t.manual_sa.is_some() {
                        "manual"
                    } else {
                        "ike"
                    }
                    .into(),
                    usable: sas.usable(),
                    sas: sas
                        .inbound
                        .iter()
                        .map(|s| row("in", s))
                        .chain(sas.outbound.iter().map(|s| row("out", s)))
                        .collect(),
                    last_rekey: self.last_rekey.get(&l.name).copied(),
                })
            })
            .collect()
    }

    /// After a reload from `previous` to `config`: removes the manual SAs and policies, and
    /// the tunnel interfaces xwan created, that `config` no longer has.
    pub async fn remove_stale(&self, previous: &Config, config: &Config) {
        let now: Vec<super::Installed> = config
            .links
            .iter()
            .filter_map(|l| {
                let t = l.ipsec.as_ref()?;
                Some(super::installed(t, t.manual_sa.as_ref()?))
            })
            .flatten()
            .collect();
        for l in &previous.links {
            let Some(t) = &l.ipsec else { continue };
            if let Some(m) = &t.manual_sa {
                let stale: Vec<_> = super::installed(t, m)
                    .into_iter()
                    .filter(|o| !now.contains(o))
                    .collect();
                if !stale.is_empty() {
                    match XfrmSocket::open() {
                        Ok(mut sock) => {
                            let n = super::remove(&mut sock, &l.name, &stale);
                            info!(link = %l.name, removed = n, "manual SAs and policies no longer configured removed");
                        }
                        Err(e) => warn!(link = %l.name, "removing stale SAs failed: {e}"),
                    }
                }
            }
            let kept = config.links.iter().any(|n| {
                n.interface == l.interface
                    && n.ipsec.as_ref().is_some_and(|t| t.owner == Owner::Xwan)
            });
            if t.owner == Owner::Xwan && !kept {
                let what = format!("removing the tunnel interface {}", l.interface);
                match bounded(what, self.nl.remove_tunnel(&l.name, &l.interface)).await {
                    Ok(true) => {
                        info!(link = %l.name, interface = %l.interface, "tunnel interface no longer configured removed")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!(link = %l.name, "removing tunnel interface {} failed: {e}", l.interface)
                    }
                }
            }
        }
    }

    /// `xwan stop`: removes the manual SAs and policies of `config`, and the tunnel
    /// interfaces xwan created. Call it once the programs are detached from them.
    pub async fn teardown(&self, config: &Config) {
        for l in &config.links {
            let Some(t) = &l.ipsec else { continue };
            if let Some(m) = &t.manual_sa {
                match XfrmSocket::open() {
                    Ok(mut sock) => {
                        super::remove_manual(&mut sock, &l.name, t, m);
                    }
                    Err(e) => warn!(link = %l.name, "removing the manual SAs failed: {e}"),
                }
            }
            if t.owner == Owner::Xwan {
                let what = format!("removing the tunnel interface {}", l.interface);
                match bounded(what, self.nl.remove_tunnel(&l.name, &l.interface)).await {
                    Ok(true) => {
                        info!(link = %l.name, interface = %l.interface, "tunnel interface removed")
                    }
                    Ok(false) => {
                        info!(link = %l.name, interface = %l.interface, "tunnel interface not created by xwan: left in place")
                    }
                    Err(e) => {
                        warn!(link = %l.name, interface = %l.interface, "removing the tunnel interface failed: {e}")
                    }
                }
            }
        }
    }
}

fn now_unix() -> u64 {
    status::unix(Some(SystemTime::now())).unwrap_or(0)
}

/// Every SA of the namespace (for a scrape, already on a blocking thread). An error is logged
/// and reads as none. The XFRM socket's own receive timeout bounds each read.
fn dump_sas() -> Vec<SaInfo> {
    match XfrmSocket::open().and_then(|mut s| s.sas()) {
        Ok(v) => v,
        Err(e) => {
            warn!("reading the XFRM SAs failed: {e}");
            vec![]
        }
    }
}

/// [`dump_sas`] on a blocking thread, within [`DEADLINE`] (a missed one reads as none too).
async fn sas() -> Vec<SaInfo> {
    match tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(dump_sas)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            warn!("reading the XFRM SAs failed: {e}");
            vec![]
        }
        Err(_) => {
            warn!(
                "reading the XFRM SAs failed: no answer from the kernel within {}",
                humantime::format_duration(DEADLINE)
            );
            vec![]
        }
    }
}

/// Re-reads every SA on each XFRM event (logged here) that concerns SAs, and when asked (the
/// periodic resync).
fn sa_reader(mut events: UnboundedReceiver<XfrmEvent>) -> Reader<Vec<SaInfo>> {
    Reader::spawn(|asked, tx| async move {
        let mut subscribed = true;
        loop {
            tokio::select! {
                ev = events.next(), if subscribed => match ev {
                    Some(ev) if log_event(&ev) => {}
                    Some(_) => continue,
                    None => {
                        warn!("XFRM events no longer arrive: the SAs are re-read every 10 s only");
                        subscribed = false;
                        continue;
                    }
                },
                _ = asked.notified() => {}
            }
            // Events already queued are covered by the read below.
            while let Ok(ev) = events.try_recv() {
                log_event(&ev);
            }
            if tx.send(sas().await).await.is_err() {
                return;
            }
        }
    })
}

/// Logs an XFRM event; whether it concerns SAs.
fn log_event(ev: &XfrmEvent) -> bool {
    match ev {
        XfrmEvent::SaAdded(s) | XfrmEvent::SaRemoved(s) | XfrmEvent::SaSoftExpired(s) => {
            let event = match ev {
                XfrmEvent::SaAdded(_) => "added",
                XfrmEvent::SaRemoved(_) => "removed",
                _ => "soft lifetime reached",
            };
            info!(event, spi = format_args!("{:#010x}", s.spi), src = %s.src, dst = %s.dst, "XFRM SA event");
            true
        }
        XfrmEvent::SaFlushed => true,
        XfrmEvent::Acquire => {
            info!("XFRM acquire: traffic matched a policy without SA");
            false
        }
        XfrmEvent::Policies => false,
    }
}
