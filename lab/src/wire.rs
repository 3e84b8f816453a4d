//! The user-space wire that joins two TUN devices into an L3 tunnel stand-in (this kernel has
//! no VTI): every IP packet one end's kernel sends into its TUN device is written into the
//! other end's. The wire can cut the link silently (drop everything, carrier stays up: only
//! probes notice), add a one-way delay and drop a share of packets at random.
//!
//! One thread per wire polls both devices; delayed packets wait in a queue ordered by due
//! time (the delay is the same for all, so arrival order is due order).
//!
//! What a reader may change: the impairments (add jitter, reordering) as long as a cut wire
//! forwards nothing at all.

use std::{
    collections::VecDeque,
    fs::File,
    io,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Impairments of a wire, changed while it runs.
#[derive(Default)]
pub struct WireControl {
    cut: AtomicBool,
    delay_us: AtomicU32,
    /// Packets dropped per million.
    loss_ppm: AtomicU32,
    /// Packets forwarded and dropped, both directions.
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
}

impl WireControl {
    /// Cut (drop everything) or restore.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_us.store(
            delay.as_micros().min(u32::MAX as u128) as u32,
            Ordering::Relaxed,
        );
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed) as u64)
    }

    /// Random loss, percent (0 to 100).
    pub fn set_loss(&self, percent: f64) {
        let ppm = (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32;
        self.loss_ppm.store(ppm, Ordering::Relaxed);
    }

    pub fn loss(&self) -> f64 {
        self.loss_ppm.load(Ordering::Relaxed) as f64 / 10_000.0
    }
}

/// A running wire between two TUN devices; stops (and closes both devices, which takes their
/// carrier down) on drop.
pub struct Wire {
    pub control: Arc<WireControl>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Wire {
    /// Joins TUN devices `a` and `b` (each opened in its own namespace).
    pub fn start(name: &str, a: File, b: File) -> io::Result<Wire> {
        let control = Arc::new(WireControl::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (control, stop) = (control.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("wire-{name}"))
                .spawn(move || pump(&[a, b], &control, &stop))?
        };
        Ok(Wire {
            control,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A packet waiting for its delay: due time, destination (index into the devices), bytes.
type Delayed = (Instant, usize, Vec<u8>);

fn pump(dev: &[File; 2], control: &WireControl, stop: &AtomicBool) {
    let mut queue: VecDeque<Delayed> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ dev[0].as_raw_fd() as u64);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, to, p) = queue.pop_front().expect("front exists");
            write(&dev[to], &p);
        }
        // Wake for the next delayed packet, and at least every 50 ms to see `stop`.
        let timeout = queue
            .front()
            .map(|(due, _, _)| due.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        let mut fds = [0, 1].map(|i| libc::pollfd {
            fd: dev[i].as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two valid pollfds; the timeout rounds up so a due packet is not spun on.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                2,
                timeout.as_micros().div_ceil(1000) as i32,
            )
        };
        for from in 0..2 {
            if fds[from].revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                // SAFETY: reading into a buffer we own.
                let n = unsafe { libc::read(fds[from].fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                let loss = control.loss_ppm.load(Ordering::Relaxed);
                if control.is_cut() || (loss > 0 && rng.below(1_000_000) < loss) {
                    control.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                control.forwarded.fetch_add(1, Ordering::Relaxed);
                let delay = control.delay();
                let p = &buf[..n as usize];
                if delay.is_zero() && queue.is_empty() {
                    write(&dev[1 - from], p);
                } else {
                    queue.push_back((Instant::now() + delay, 1 - from, p.to_vec()));
                }
            }
        }
    }
}

fn write(dev: &File, p: &[u8]) {
    // A TUN write fails only for a malformed packet or a device going away: nothing to do
    // but lose the packet, as a real link would.
    // SAFETY: writing a buffer we own.
    let _ = unsafe { libc::write(dev.as_raw_fd(), p.as_ptr().cast(), p.len()) };
}

/// xorshift64: enough randomness for link loss, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as u32
    }
}
