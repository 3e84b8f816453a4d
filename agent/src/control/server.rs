//! The control socket's server. The daemon's loop decides failover, so no local client may hold
//! it up: one task accepts, and each connection is served by a task of its own that reads the
//! request within [`Limits::read`] and [`Limits::max_request`] bytes, gets the answer, and
//! writes it within [`Limits::write`].
//!
//! * `status` is answered from the latest [`StatusSnapshot`] the daemon published, without the
//!   loop;
//! * `events` subscribes the connection to the daemon's events (`crate::events::Hub`) and
//!   streams them, each line written within [`Limits::write`], until the client closes; one
//!   that reads too slowly is told how many it lost, one that stops reading is dropped;
//! * every other request reaches the loop as a [`Call`] message, and its answer comes back by
//!   channel (within [`Limits::answer`]).
//!
//! At most [`Limits::max_connections`] connections are served at once; the excess gets an
//! error answer and is closed at once. A client that stalls, floods or sends garbage gets a
//! JSON error; the agent logs the first such client, then at most one line per [`LOG_EVERY`]
//! counting the others.

use std::{
    fmt, io,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, broadcast, mpsc, oneshot, watch},
    task::{JoinHandle, JoinSet},
};
use tracing::{debug, error, warn};

use super::{Answer, Request};
use crate::{events::Event, status::Status};

/// What one connection may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time a client has to send its whole request (the JSON line and its newline).
    pub read: Duration,
    /// Longest request, its newline included (bytes).
    pub max_request: usize,
    /// Time the answer has to reach the client's socket.
    pub write: Duration,
    /// Time the daemon has to answer a request it handles itself. A reload re-plans and may
    /// create tunnels; each kernel request in it has a deadline of its own.
    pub answer: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read: Duration::from_secs(2),
            max_request: 64 * 1024,
            write: Duration::from_secs(2),
            answer: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// At most one log line per this period about misbehaving clients.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Requests waiting for the daemon's loop.
const CALL_QUEUE: usize = 16;
/// Read buffer per connection (requests are a few hundred bytes).
const READ_BUFFER: usize = 2048;

/// The daemon's status as of its last change, and when that was.
#[derive(Clone, Debug)]
pub struct StatusSnapshot {
    status: Arc<Status>,
    taken: SystemTime,
}

impl StatusSnapshot {
    pub fn new(status: Status) -> StatusSnapshot {
        StatusSnapshot {
            status: Arc::new(status),
            taken: SystemTime::now(),
        }
    }

    /// The status now: SA ages and lifetimes moved on since it was taken.
    fn now(&self) -> Status {
        let secs = SystemTime::now()
            .duration_since(self.taken)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        (*self.status).clone().aged(secs)
    }
}

/// A request for the daemon's loop. Answer it with [`Call::answer`]; a call dropped unanswered
/// tells the client that the agent is stopping.
pub struct Call {
    pub request: Request,
    reply: oneshot::Sender<Reply>,
    write: Duration,
}

struct Reply {
    answer: Answer,
    /// Told once the answer is written (or cannot be).
    delivered: Option<oneshot::Sender<()>>,
}

impl Call {
    pub fn answer(self, answer: Answer) {
        let _ = self.reply.send(Reply {
            answer,
            delivered: None,
        });
    }

    /// Answers, and returns once the answer is written to the client or cannot be (at most
    /// the write deadline): for `stop`, after which the process exits.
    pub async fn answer_and_wait(self, answer: Answer) {
        let (tx, rx) = oneshot::channel();
        let reply = Reply {
            answer,
            delivered: Some(tx),
        };
        if self.reply.send(reply).is_ok() {
            let _ = tokio::time::timeout(self.write + Duration::from_millis(100), rx).await;
        }
    }
}

/// The running server: dropping it stops accepting and closes every connection.
pub struct Server {
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `listener` (bound at `socket`, named in logs) in tasks of its own. `status` is the
/// daemon's latest status, `events` where it sends its events; the other requests come out
/// of the returned receiver.
pub fn spawn(
    listener: UnixListener,
    socket: PathBuf,
    limits: Limits,
    status: watch::Receiver<StatusSnapshot>,
    events: broadcast::Sender<Arc<Event>>,
) -> (Server, mpsc::Receiver<Call>) {
    let (calls, rx) = mpsc::channel(CALL_QUEUE);
    let ctx = Arc::new(Ctx {
        limits,
        status,
        events,
        calls,
        log: ClientLog::new(socket),
    });
    let task = tokio::spawn(accept(listener, ctx));
    (Server { task }, rx)
}

struct Ctx {
    limits: Limits,
    status: watch::Receiver<StatusSnapshot>,
    events: broadcast::Sender<Arc<Event>>,
    calls: mpsc::Sender<Call>,
    log: ClientLog,
}

async fn accept(listener: UnixListener, ctx: Arc<Ctx>) {
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    // Owns the connection tasks: aborting this task aborts them.
    let mut conns = JoinSet::new();
    let mut flush = tokio::time::interval(LOG_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let ctx = ctx.clone();
                        conns.spawn(async move {
                            serve(stream, &ctx).await;
                            drop(permit);
                        });
                    }
                    Err(_) => refuse(stream, &ctx),
                },
                Err(e) => {
                    // Out of file descriptors, typically: the backlog waits meanwhile.
                    ctx.log.note(&Problem::Accept(e), Instant::now());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = conns.join_next() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    error!(socket = %ctx.log.socket.display(), "a control connection's task panicked: {e}");
                }
            }
            _ = flush.tick() => {
                ctx.log.flush(Instant::now());
            }
        }
    }
}

/// Over the connection limit: an error answer if the socket takes it without waiting, then
/// the connection is closed.
fn refuse(stream: UnixStream, ctx: &Ctx) {
    let problem = Problem::TooMany(ctx.limits.max_connections);
    let _ = stream.try_write(&line(&Answer::Error {
        message: problem.to_string(),
    }));
    ctx.log.note(&problem, Instant::now());
}

async fn serve(stream: UnixStream, ctx: &Ctx) {
    let limits = ctx.limits;
    let (mut read, mut write) = stream.into_split();
    let request = tokio::time::timeout(limits.read, read_request(&mut read, limits.max_request))
        .await
        .unwrap_or(Err(Problem::ReadTimeout(limits.read)));
    let (answer, delivered) = match request {
        Ok(Request::Events) => return stream_events(read, write, ctx).await,
        Ok(Request::Status) => {
            let snapshot = ctx.status.borrow().clone();
            (Answer::Status(snapshot.now()), None)
        }
        Ok(request) => ctx.ask(request).await,
        Err(problem) => {
            if matches!(problem, Problem::Empty) {
                // A connect-only liveness check, or a client that gave up: nothing to report.
                debug!(socket = %ctx.log.socket.display(), "control connection closed without a request");
            } else {
                ctx.log.note(&problem, Instant::now());
            }
            let message = problem.to_string();
            (Answer::Error { message }, None)
        }
    };
    match tokio::time::timeout(limits.write, write_answer(&mut write, &answer)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            debug!(socket = %ctx.log.socket.display(), "control client gone before its answer: {e}")
        }
        Err(_) => {
            ctx.log
                .note(&Problem::WriteTimeout(limits.write), Instant::now());
        }
    }
    if let Some(d) = delivered {
        let _ = d.send(());
    }
}

/// `events`: every event from now on, until the client closes its side or stops reading.
async fn stream_events(
    mut read: impl AsyncRead + Unpin,
    mut write: impl AsyncWrite + Unpin,
    ctx: &Ctx,
) {
    let mut events = ctx.events.subscribe();
    let mut answer = Answer::Listening;
    loop {
        match tokio::time::timeout(ctx.limits.write, write_answer(&mut write, &answer)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(socket = %ctx.log.socket.display(), "events client gone: {e}");
                return;
            }
            Err(_) => {
                ctx.log
                    .note(&Problem::WriteTimeout(ctx.limits.write), Instant::now());
                return;
            }
        }
        let mut byte = [0u8; 1];
        answer = tokio::select! {
            e = events.recv() => match e {
                Ok(e) => Answer::Event((*e).clone()),
                Err(broadcast::error::RecvError::Lagged(n)) => Answer::Lost { events: n },
                // The daemon is stopping.
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // The client sends nothing more: end of file (or an error) means it is gone.
            _ = read.read(&mut byte) => return,
        };
    }
}

impl Ctx {
    /// Hands `request` to the daemon's loop and waits for its answer.
    async fn ask(&self, request: Request) -> (Answer, Option<oneshot::Sender<()>>) {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            request,
            reply,
            write: self.limits.write,
        };
        let asked = async {
            self.calls.send(call).await.ok()?;
            answer.await.ok()
        };
        let error = |message: String| (Answer::Error { message }, None);
        match tokio::time::timeout(self.limits.answer, asked).await {
            Ok(Some(r)) => (r.answer, r.delivered),
            Ok(None) => error("the agent is stopping".into()),
            Err(_) => {
                let after = humantime::format_duration(self.limits.answer);
                warn!(socket = %self.log.socket.display(), "a control request got no answer from the daemon within {after}");
                error(format!(
                    "the agent did not answer within {after} (a reload may still be under way: see its log)"
                ))
            }
        }
    }
}

/// Reads one request line: at most `max` bytes, newline included. A client that closes its
/// side after the JSON without a newline is served too.
async fn read_request(r: impl AsyncRead + Unpin, max: usize) -> Result<Request, Problem> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, r.take(max as u64));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(Problem::Read)?;
    match line.last() {
        None => return Err(Problem::Empty),
        Some(b'\n') => {}
        Some(_) if line.len() >= max => return Err(Problem::TooLarge(max)),
        Some(_) => {}
    }
    serde_json::from_slice(&line).map_err(Problem::Bad)
}

fn line(answer: &Answer) -> Vec<u8> {
    let mut v = serde_json::to_vec(answer).unwrap_or_else(|e| {
        // Only a status with a non-finite number could fail; say so rather than nothing.
        let message = format!("encoding the answer failed: {e}");
        serde_json::to_vec(&Answer::Error { message }).unwrap_or_default()
    });
    v.push(b'\n');
    v
}

async fn write_answer(w: &mut (impl AsyncWrite + Unpin), answer: &Answer) -> io::Result<()> {
    w.write_all(&line(answer)).await?;
    w.flush().await
}

/// What went wrong with a client (the text is also its error answer).
#[derive(Debug)]
enum Problem {
    ReadTimeout(Duration),
    TooLarge(usize),
    Empty,
    Read(io::Error),
    Bad(serde_json::Error),
    TooMany(usize),
    WriteTimeout(Duration),
    Accept(io::Error),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| humantime::format_duration(*d);
        match self {
            Problem::ReadTimeout(t) => write!(
                f,
                "no complete request within {}: send one JSON request followed by a newline",
                d(t)
            ),
            Problem::TooLarge(n) => write!(f, "request longer than {n} bytes"),
            Problem::Empty => write!(f, "no request: the connection closed before one"),
            Problem::Read(e) => write!(f, "reading the request failed: {e}"),
            Problem::Bad(e) => write!(f, "bad request: {e}"),
            Problem::TooMany(n) => write!(
                f,
                "too many control connections ({n} being served); try again in a few seconds"
            ),
            Problem::WriteTimeout(t) => {
                write!(f, "the client did not take its answer within {}", d(t))
            }
            Problem::Accept(e) => write!(f, "accepting a connection failed: {e}"),
        }
    }
}

/// Client problems in the log: the first one, then at most one line per [`LOG_EVERY`], which
/// counts those not logged.
struct ClientLog {
    socket: PathBuf,
    state: Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    last: Option<Instant>,
    unlogged: u64,
}

impl ClientLog {
    fn new(socket: PathBuf) -> ClientLog {
        ClientLog {
            socket,
            state: Mutex::default(),
        }
    }

    /// Logs `problem` unless a line went out less than [`LOG_EVERY`] before `now`; returns
    /// whether it did.
    fn note(&self, problem: &Problem, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            s.unlogged += 1;
            return false;
        }
        let earlier = std::mem::take(&mut s.unlogged);
        s.last = Some(now);
        warn!(
            socket = %self.socket.display(),
            problem = %problem,
            not_logged_before = earlier,
            "control client refused or dropped"
        );
        true
    }

    /// Logs how many problems went unlogged, once [`LOG_EVERY`] has passed since the last
    /// line; returns that count.
    fn flush(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().ok()?;
        if s.unlogged == 0 || s.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return None;
        }
        let n = std::mem::take(&mut s.unlogged);
        s.last = Some(now);
        warn!(
            socket = %self.socket.display(),
            clients = n,
            "more control clients refused or dropped (not logged one by one)"
        );
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::call;
    use tokio::io::AsyncWriteExt;

    fn limits() -> Limits {
        Limits {
            read: Duration::from_millis(300),
            max_request: 1024,
            write: Duration::from_millis(300),
            answer: Duration::from_millis(500),
            max_connections: 4,
        }
    }

    fn status(epoch: u32) -> Status {
        Status {
            config: "x.toml".into(),
            epoch,
            attachments: vec![],
            failed_redirects: None,
            forwarding: None,
            routers: vec![],
            ipsec: vec![],
            return_routes: vec![],
        }
    }

    struct Fixture {
        socket: PathBuf,
        _server: Server,
        calls: mpsc::Receiver<Call>,
        publish: watch::Sender<StatusSnapshot>,
        events: broadcast::Sender<Arc<Event>>,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.socket.parent().unwrap());
        }
    }

    fn fixture(tag: &str, limits: Limits) -> Fixture {
        let dir = std::env::temp_dir().join(format!("xwan-ctl-{tag}-{}", std::process::id()));
        let socket = dir.join("ctl.sock");
        let listener = crate::control::bind(&socket).unwrap();
        let (publish, status) = watch::channel(StatusSnapshot::new(status(7)));
        // Room for 4 events per client, so that a slow one is easily overtaken.
        let events = broadcast::channel(4).0;
        let (server, calls) = spawn(listener, socket.clone(), limits, status, events.clone());
        Fixture {
            socket,
            _server: server,
            calls,
            publish,
            events,
        }
    }

    /// Sends `bytes` and reads the answer line (bounded).
    async fn raw(socket: &PathBuf, bytes: &[u8]) -> (Answer, Duration) {
        let t = Instant::now();
        let mut s = UnixStream::connect(socket).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut line = String::new();
        let mut r = BufReader::new(s);
        tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        (serde_json::from_str(&line).unwrap(), t.elapsed())
    }

    fn error(a: Answer) -> String {
        match a {
            Answer::Error { message } => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stalled_client_is_dropped_and_others_are_served_meanwhile() {
        let f = fixture("stall", limits());
        let socket = f.socket.clone();
        let stalled = tokio::spawn(async move { raw(&socket, b"{\"").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        let a = call(&f.socket, &Request::Status).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        assert!(matches!(a, Answer::Status(s) if s.epoch == 7));
        f.publish.send_replace(StatusSnapshot::new(status(8)));
        let a = call(&f.socket, &Request::Status).await.unwrap();
        assert!(matches!(a, Answer::Status(s) if s.epoch == 8));
        let (a, took) = stalled.await.unwrap();
        assert!(
            error(a).starts_with("no complete request within 300ms"),
            "{took:?}"
        );
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_oversized_request_is_cut_at_the_limit() {
        let f = fixture("big", limits());
        // Far more than the limit, without a newline: answered as soon as the limit is read.
        let (a, _) = raw(&f.socket, &vec![b'x'; 256 * 1024]).await;
        assert_eq!(error(a), "request longer than 1024 bytes");
        // Just under it, with its newline: served.
        let mut ok = serde_json::to_vec(&Request::Status).unwrap();
        ok.resize(1023, b' ');
        ok.push(b'\n');
        assert!(matches!(raw(&f.socket, &ok).await.0, Answer::Status(_)));
        // Closed without a newline after the JSON: served too.
        let mut s = UnixStream::connect(&f.socket).await.unwrap();
        s.write_all(br#"{"request":"status"}"#).await.unwrap();
        s.shutdown().await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        assert!(line.starts_with(r#"{"answer":"status""#), "{line}");
        let (a, _) = raw(&f.socket, b"{\"request\":\"fly\"}\n").await;
        assert!(error(a).starts_with("bad request: unknown variant `fly`"));
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused_with_an_error() {
        let f = fixture("many", limits());
        let mut held = vec![];
        for _ in 0..4 {
            let mut s = UnixStream::connect(&f.socket).await.unwrap();
            s.write_all(b"{").await.unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = call(&f.socket, &Request::Status).await.unwrap();
        assert_eq!(
            error(e),
            "too many control connections (4 being served); try again in a few seconds"
        );
        // Once the held ones time out, the slots are free again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(
            call(&f.socket, &Request::Status).await.unwrap(),
            Answer::Status(_)
        ));
    }

    #[tokio::test]
    async fn other_requests_go_to_the_loop_and_back() {
        let mut f = fixture("loop", limits());
        let socket = f.socket.clone();
        let client = tokio::spawn(async move { call(&socket, &Request::Reload).await });
        let c = f.calls.recv().await.unwrap();
        assert_eq!(c.request, Request::Reload);
        c.answer(Answer::Reloaded { epoch: 9 });
        assert_eq!(
            client.await.unwrap().unwrap(),
            Answer::Reloaded { epoch: 9 }
        );

        // `stop`: the loop resumes only once the answer is written.
        let socket = f.socket.clone();
        let client = tokio::spawn(async move { call(&socket, &Request::Stop).await });
        let c = f.calls.recv().await.unwrap();
        c.answer_and_wait(Answer::Stopped).await;
        assert_eq!(
            tokio::time::timeout(Duration::from_millis(100), client)
                .await
                .expect("answer already written")
                .unwrap()
                .unwrap(),
            Answer::Stopped
        );

        // A loop that does not answer in time, then one that is gone.
        let socket = f.socket.clone();
        let client = tokio::spawn(async move { call(&socket, &Request::Reload).await });
        let _held = f.calls.recv().await.unwrap();
        let e = error(client.await.unwrap().unwrap());
        assert!(
            e.starts_with("the agent did not answer within 500ms"),
            "{e}"
        );
        f.calls.close();
        let e = call(&f.socket, &Request::Reload).await.unwrap();
        assert_eq!(error(e), "the agent is stopping");
    }

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            seq,
            time: SystemTime::UNIX_EPOCH,
            what: crate::events::What::Reload {
                result: crate::events::ReloadResult::Applied,
                epoch: Some(seq as u32),
                error: None,
            },
        })
    }

    /// Reads answer lines until the server closes (bounded).
    async fn answers(r: &mut BufReader<UnixStream>, n: usize) -> Vec<Answer> {
        let mut got = Vec::new();
        while got.len() < n {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line));
            match read.await.expect("a line within 5 s").unwrap() {
                0 => break,
                _ => got.push(serde_json::from_str(&line).unwrap()),
            }
        }
        got
    }

    async fn subscribe(socket: &PathBuf) -> BufReader<UnixStream> {
        let mut s = UnixStream::connect(socket).await.unwrap();
        s.write_all(b"{\"request\":\"events\"}\n").await.unwrap();
        let mut r = BufReader::new(s);
        assert_eq!(answers(&mut r, 1).await, [Answer::Listening]);
        r
    }

    /// Every event in order; a client overtaken is told how many it lost; one that hangs up
    /// frees its slot.
    #[tokio::test]
    async fn events_stream_in_order_and_a_slow_reader_learns_what_it_lost() {
        let f = fixture("events", limits());
        let mut r = subscribe(&f.socket).await;
        for seq in 1..=3 {
            f.events.send(event(seq)).unwrap();
        }
        let want: Vec<Answer> = (1..=3)
            .map(|s| Answer::Event((*event(s)).clone()))
            .collect();
        assert_eq!(answers(&mut r, 3).await, want);

        // This test's runtime has one thread: the connection's task sends nothing until the
        // test awaits, so ten events overtake it by six.
        for seq in 4..=13 {
            f.events.send(event(seq)).unwrap();
        }
        let mut want = vec![Answer::Lost { events: 6 }];
        want.extend((10..=13).map(|s| Answer::Event((*event(s)).clone())));
        assert_eq!(answers(&mut r, 5).await, want);

        // Hung up: the subscription ends with the connection.
        drop(r);
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.events.receiver_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "the hung-up client is still subscribed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A client that stops reading is dropped once a line cannot be written in time; others
    /// are served meanwhile.
    #[tokio::test]
    async fn an_events_client_that_stops_reading_is_dropped() {
        let f = fixture("deaf", limits());
        let deaf = subscribe(&f.socket).await;
        let events = f.events.clone();
        let flood = tokio::spawn(async move {
            // Far more than a socket buffer holds.
            for seq in 0..200_000 {
                let _ = events.send(event(seq));
                if seq % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let a = call(&f.socket, &Request::Status).await.unwrap();
        assert!(matches!(a, Answer::Status(_)));
        flood.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.events.receiver_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "the deaf client is still subscribed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(deaf);
    }

    #[test]
    fn client_problems_are_logged_once_per_period_with_a_count() {
        let log = ClientLog::new("/run/xwan/control.sock".into());
        let t = Instant::now();
        let p = Problem::ReadTimeout(Duration::from_secs(2));
        assert!(log.note(&p, t));
        for i in 1..200 {
            assert!(!log.note(&p, t + Duration::from_millis(i)));
        }
        assert_eq!(log.flush(t + Duration::from_secs(1)), None);
        assert_eq!(log.flush(t + LOG_EVERY), Some(199));
        assert_eq!(log.flush(t + LOG_EVERY * 3), None);
        assert!(!log.note(&p, t + LOG_EVERY + Duration::from_secs(1)));
        assert!(log.note(&p, t + LOG_EVERY * 2));
    }
}
