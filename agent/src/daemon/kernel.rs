//! The daemon's kernel requests, each with a deadline. The loop decides failover, so it does
//! not wait for the kernel after an event: re-reading the addresses (after an address event)
//! and the SAs (after an XFRM event, and every 10 s) happen in reader tasks, whose results
//! come back as messages. Requests that a reload or `xwan stop` needs in order ([`bounded`],
//! [`sas`]) are awaited where they are made, within [`DEADLINE`].

use std::{fmt::Display, future::Future, net::IpAddr, sync::Arc, time::Duration};

use anyhow::{Result, anyhow};
use futures::{StreamExt, channel::mpsc::UnboundedReceiver};
use tokio::{
    sync::{Notify, mpsc},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    netlink::Netlink,
    xfrm::{SaInfo, XfrmEvent, XfrmSocket},
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

/// Every SA of the namespace (for a scrape, already on a blocking thread). An error is logged
/// and reads as none. The XFRM socket's own receive timeout bounds each read.
pub fn dump_sas() -> Vec<SaInfo> {
    match XfrmSocket::open().and_then(|mut s| s.sas()) {
        Ok(v) => v,
        Err(e) => {
            warn!("reading the XFRM SAs failed: {e}");
            vec![]
        }
    }
}

/// [`dump_sas`] on a blocking thread, within [`DEADLINE`] (a missed one reads as none too).
pub async fn sas() -> Vec<SaInfo> {
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
    let wake = Arc::new(Notify::new());
    let (tx, results) = mpsc::channel(1);
    let asked = wake.clone();
    let task = tokio::spawn(async move {
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
    });
    Reader {
        wake,
        results,
        task,
    }
}

/// Re-reads every SA on each XFRM event (logged here) that concerns SAs, and when asked (the
/// periodic resync, which catches what a lost event would hide).
pub fn sa_reader(mut events: UnboundedReceiver<XfrmEvent>) -> Reader<Vec<SaInfo>> {
    let wake = Arc::new(Notify::new());
    let (tx, results) = mpsc::channel(1);
    let asked = wake.clone();
    let task = tokio::spawn(async move {
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
    });
    Reader {
        wake,
        results,
        task,
    }
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
