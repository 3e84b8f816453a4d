//! Shared by the privileged tests, and the rule of which of them run at the same time
//! ([`exclusive`], [`shared`]; see the binary's doc).

pub mod frames;
pub mod harness;
pub mod netns;
pub mod plans;
pub mod wan;

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Who runs now.
enum Running {
    Nobody,
    Alone,
    /// This many tests of one topic.
    Topic(&'static str, usize),
}

struct Turns {
    running: Running,
    /// Tests waiting to run alone: no topic starts before they have run.
    alone_waiting: usize,
}

static TURNS: Mutex<Turns> = Mutex::new(Turns {
    running: Running::Nobody,
    alone_waiting: 0,
});
static ENDED: Condvar = Condvar::new();

/// A failed test must not fail the others: nothing panics while holding the lock, and a
/// poisoned one is used all the same.
fn turns() -> MutexGuard<'static, Turns> {
    TURNS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A test's turn: over when dropped, also when the test panics.
#[must_use = "the turn ends when this is dropped: `let _turn = ...`"]
pub struct Turn;

impl Drop for Turn {
    fn drop(&mut self) {
        let mut t = turns();
        t.running = match t.running {
            Running::Topic(topic, n) if n > 1 => Running::Topic(topic, n - 1),
            _ => Running::Nobody,
        };
        ENDED.notify_all();
    }
}

/// Waits until no other test runs; none starts until the turn is dropped.
pub fn exclusive() -> Turn {
    let mut t = turns();
    t.alone_waiting += 1;
    let mut t = ENDED
        .wait_while(t, |t| !matches!(t.running, Running::Nobody))
        .unwrap_or_else(PoisonError::into_inner);
    t.alone_waiting -= 1;
    t.running = Running::Alone;
    Turn
}

/// Waits until nothing runs but tests of `topic` (the caller's `module_path!()`), then runs
/// alongside them.
pub fn shared(topic: &'static str) -> Turn {
    let t = turns();
    let mut t = ENDED
        .wait_while(t, |t| match t.running {
            Running::Nobody => t.alone_waiting > 0,
            Running::Alone => true,
            Running::Topic(running, _) => running != topic || t.alone_waiting > 0,
        })
        .unwrap_or_else(PoisonError::into_inner);
    t.running = match t.running {
        Running::Topic(running, n) => Running::Topic(running, n + 1),
        _ => Running::Topic(topic, 1),
    };
    Turn
}
