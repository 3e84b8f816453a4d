//! RCU grace periods run in the background, so that a table flip never waits for one.
//!
//! A double-buffered structure (a router's slot table, the ruleset generation) may be rewritten
//! only once every program that could have read its old copy has finished: an RCU grace
//! period *after* its flip. A grace period costs about 10 ms of waiting (see
//! [`sys::RcuBarrier`]). Waiting for it at the next write of the same structure made every
//! verdict pay it; instead, each flip takes a sequence number and kicks the keeper's thread,
//! which runs grace periods until every flip so far is covered. A writer only blocks when it
//! rewrites a structure flipped less than a grace period ago (two verdicts for the same router
//! within ~10 ms, or a reload's break-after-make).
//!
//! Invariant: `graced >= s` means an RCU grace period started after flip `s` and has ended.
//! The thread reads the target sequence *before* starting a grace period, so it only ever
//! claims flips that happened before the period began.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::sys;

/// A flip's sequence number (0: nothing flipped yet).
pub(super) type FlipSeq = u64;

#[derive(Debug, Default)]
struct State {
    /// The last flip's sequence number.
    flipped: FlipSeq,
    /// Every flip up to this one is covered by a completed grace period.
    graced: FlipSeq,
    /// The last failure of the barrier, for the waiters (the thread retries).
    error: Option<(io::ErrorKind, String)>,
    shutdown: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled on a flip and on shutdown.
    kick: Condvar,
    /// Signalled when `graced` moves or the barrier fails.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under a panic (plain integers), so poison is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Owns the grace-period thread (stopped and joined on drop).
#[derive(Debug)]
pub(super) struct GraceKeeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GraceKeeper {
    /// Creates the barrier map and starts the thread. `pending` records one flip at once: after
    /// a load, a previous agent may just have flipped anything.
    pub(super) fn new(pending: bool) -> io::Result<GraceKeeper> {
        let barrier = sys::RcuBarrier::new()?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("xwan-rcu-grace".into())
                .spawn(move || run(&shared, &barrier))?
        };
        let keeper = GraceKeeper {
            shared,
            thread: Some(thread),
        };
        if pending {
            keeper.flipped();
        }
        Ok(keeper)
    }

    /// Records a flip that has just been written; returns its sequence number.
    pub(super) fn flipped(&self) -> FlipSeq {
        let mut s = self.shared.lock();
        s.flipped += 1;
        self.shared.kick.notify_one();
        s.flipped
    }

    /// The last flip's sequence number (wait for it to cover everything flipped so far).
    pub(super) fn last(&self) -> FlipSeq {
        self.shared.lock().flipped
    }

    /// Returns once a grace period has elapsed since flip `seq` (at once if one has).
    pub(super) fn wait(&self, seq: FlipSeq) -> io::Result<()> {
        let mut s = self.shared.lock();
        while s.graced < seq {
            if let Some((kind, msg)) = s.error.take() {
                return Err(io::Error::new(kind, msg));
            }
            s = self.shared.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Whether flip `seq` is already covered (no waiting needed).
    #[cfg(test)]
    pub(super) fn is_graced(&self, seq: FlipSeq) -> bool {
        self.shared.lock().graced >= seq
    }
}

impl Drop for GraceKeeper {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.kick.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, barrier: &sys::RcuBarrier) {
    loop {
        let target = {
            let mut s = shared.lock();
            while !s.shutdown && s.graced >= s.flipped {
                s = shared.kick.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.shutdown {
                return;
            }
            s.flipped
        };
        let result = barrier.wait();
        let failed = result.is_err();
        {
            let mut s = shared.lock();
            match result {
                Ok(()) => {
                    s.graced = target;
                    s.error = None;
                }
                Err(e) => s.error = Some((e.kind(), e.to_string())),
            }
            shared.done.notify_all();
        }
        if failed {
            // Waiters have the error; retry without spinning.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn root() -> bool {
        // SAFETY: plain libc call.
        unsafe { libc::geteuid() == 0 }
    }

    /// A flip is graced in the background: waiting for it some time later returns at once,
    /// and a wait right after a flip blocks until a grace period covers it.
    #[test]
    fn flips_are_graced_in_the_background() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let k = GraceKeeper::new(false).unwrap();
        assert_eq!(k.last(), 0);
        k.wait(0).unwrap();
        let a = k.flipped();
        let t = Instant::now();
        while !k.is_graced(a) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "flip {a} never graced"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!("background grace took {:?}", t.elapsed());
        let t = Instant::now();
        k.wait(a).unwrap();
        let waited = t.elapsed();
        eprintln!("waiting for a graced flip took {waited:?}");
        // Many flips in a row are all covered once the last one is.
        let mut last = a;
        for _ in 0..100 {
            last = k.flipped();
        }
        k.wait(last).unwrap();
        assert!(k.is_graced(last) && k.is_graced(a));
        let pending = GraceKeeper::new(true).unwrap();
        assert_eq!(pending.last(), 1);
        pending.wait(1).unwrap();
    }
}
