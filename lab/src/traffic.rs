//! Real flows of each class of the seed scenario, between the branch's client workstations
//! (namespace `lan`) and the head office's servers (namespace `servers`):
//!
//! * HTTP: keep-alive sessions to the web host, port 80 (`GET`, a 1 KiB answer);
//! * FTP: control sessions to the web host, port 21 (greeting, `NOOP`s);
//! * SQL: sessions to the SQL host, port 1433 (one query line, one answer line), and clients
//!   opening a new connection per query;
//! * VoIP: calls to the VoIP host, UDP from/to RTP ports 16384.., one sequence-numbered packet
//!   every 20 ms echoed back (so loss is exact), plus SIP on 5060.
//!
//! Each client is a thread of the lab process inside the `lan` namespace; each keeps a
//! [`FlowStats`] (answers, errors, TCP retransmissions, local address) the live view and the
//! tests read. Stopping a [`Traffic`] stops its clients (VoIP waits for echoes in flight).
//!
//! What a reader may change: rates and message sizes; tests rely on VoIP loss being exact
//! and on TCP retransmissions being counted.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    netns,
    observe::{Class, FlowKey},
    topology::{SQL_HOST, VOIP_HOST, WEB_HOST},
};

pub const HTTP_PORT: u16 = 80;
pub const FTP_PORT: u16 = 21;
pub const SQL_PORT: u16 = 1433;
pub const SIP_PORT: u16 = 5060;
/// First RTP port; calls use consecutive ports.
pub const RTP_PORT: u16 = 16384;
/// RTP ports the VoIP host answers on.
pub const RTP_PORTS: u16 = 16;
/// How long a client waits for an answer before it counts an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
const HTTP_BODY: usize = 1024;
/// Connect and answer timeout of a connection-per-query SQL client.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// The servers; stopped on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Starts the HTTP, FTP, SQL and VoIP servers in namespace `ns`.
    pub fn start(ns: &str) -> Result<Servers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (host, port) in [
            (WEB_HOST, HTTP_PORT),
            (WEB_HOST, FTP_PORT),
            (SQL_HOST, SQL_PORT),
        ] {
            let (tx, rx) = std::sync::mpsc::channel();
            let (stop, ns) = (stop.clone(), ns.to_owned());
            threads.push(std::thread::spawn(move || {
                let l = netns::enter_by_name(&ns).and_then(|()| {
                    let l = TcpListener::bind(SocketAddrV4::new(host, port))?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                });
                match l {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        accept_loop(&l, port, &stop);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }));
            rx.recv()??;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop2, ns) = (stop.clone(), ns.to_owned());
        threads.push(std::thread::spawn(move || {
            let socks = netns::enter_by_name(&ns).and_then(|()| {
                let mut v = vec![UdpSocket::bind(SocketAddrV4::new(VOIP_HOST, SIP_PORT))?];
                for p in RTP_PORT..RTP_PORT + RTP_PORTS {
                    v.push(UdpSocket::bind(SocketAddrV4::new(VOIP_HOST, p))?);
                }
                Ok(v)
            });
            match socks {
                Ok(socks) => {
                    let _ = tx.send(Ok(()));
                    udp_echo(&socks, &stop2);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }));
        rx.recv()??;
        Ok(Servers { stop, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(l: &TcpListener, port: u16, stop: &Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; wakes at least every 50 ms to see `stop`.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        while let Ok((s, _)) = l.accept() {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let _ = serve(s, port, &stop);
            });
        }
    }
}

/// One connection: HTTP answers each request (up to its blank line), FTP greets and answers
/// each command, SQL answers each line.
fn serve(s: TcpStream, port: u16, stop: &AtomicBool) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    if port == FTP_PORT {
        w.write_all(b"220 xwan lab FTP service ready\r\n")?;
    }
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match r.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
        if !line.ends_with('\n') {
            continue;
        }
        let req = std::mem::take(&mut line);
        let req = req.trim_end();
        match port {
            HTTP_PORT if req.is_empty() => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \
                     {HTTP_BODY}\r\n\r\n"
                );
                w.write_all(head.as_bytes())?;
                w.write_all(&[b'x'; HTTP_BODY])?;
            }
            HTTP_PORT => {}
            FTP_PORT if req.eq_ignore_ascii_case("QUIT") => {
                w.write_all(b"221 Goodbye\r\n")?;
                return Ok(());
            }
            FTP_PORT => w.write_all(b"200 NOOP ok\r\n")?,
            _ => w.write_all(format!("OK {req}\n").as_bytes())?,
        }
    }
    Ok(())
}

fn udp_echo(socks: &[UdpSocket], stop: &AtomicBool) {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [0u8; 2048];
    for s in socks {
        let _ = s.set_nonblocking(true);
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: valid pollfds owned here.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as u64, 50) };
        for (s, f) in socks.iter().zip(&mut fds) {
            if f.revents & libc::POLLIN == 0 {
                continue;
            }
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    }
}

/// What one client did.
pub struct FlowStats {
    pub class: Class,
    /// Human label, e.g. "HTTP 10.1.0.11 → web".
    pub label: String,
    /// The current connection's (or the call's) flow, once it exists.
    pub key: Mutex<Option<FlowKey>>,
    /// Answers received (requests answered, VoIP packets echoed, connections completed).
    pub answered: AtomicU64,
    /// Requests sent (VoIP: packets sent).
    pub sent: AtomicU64,
    /// Failed requests or connections.
    pub errors: AtomicU64,
    /// TCP retransmissions on this client's connections (from `TCP_INFO`).
    pub retransmits: AtomicU64,
}

impl FlowStats {
    fn new(class: Class, label: String) -> Arc<FlowStats> {
        Arc::new(FlowStats {
            class,
            label,
            key: Mutex::new(None),
            answered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retransmits: AtomicU64::new(0),
        })
    }

    pub fn key(&self) -> Option<FlowKey> {
        *self.key.lock().expect("flow stats lock")
    }

    /// VoIP: packets sent and not echoed (meaningful once the traffic stopped).
    pub fn lost(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.answered.load(Ordering::Relaxed))
    }
}

/// A client kind.
#[derive(Clone, Copy, Debug)]
pub enum Client {
    /// Keep-alive HTTP session.
    Http,
    /// FTP control session.
    Ftp,
    /// Long-lived SQL session.
    SqlSession,
    /// A new SQL connection per query.
    SqlConnections,
    /// A new SQL connection attempt every interval without waiting for any (each is closed
    /// a second later): new connections keep coming at a steady pace even while a link
    /// swallows some, which is what convergence is measured with.
    SqlOpener,
    /// A VoIP call on RTP port `RTP_PORT + n`.
    Voip(u16),
    /// SIP signalling (UDP 5060).
    Sip,
}

/// Running clients; stopped on drop.
pub struct Traffic {
    lan: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub flows: Vec<Arc<FlowStats>>,
}

impl Traffic {
    /// No clients yet; `lan` is the client namespace.
    pub fn new(lan: &str) -> Traffic {
        Traffic {
            lan: lan.to_owned(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            flows: Vec::new(),
        }
    }

    /// Starts a client from workstation `src`, one request (VoIP: packet) every `interval`.
    pub fn start(&mut self, client: Client, src: Ipv4Addr, interval: Duration) -> Arc<FlowStats> {
        let (class, label) = match client {
            Client::Http => (Class::Http, format!("HTTP {src} → web")),
            Client::Ftp => (Class::Ftp, format!("FTP {src} → web")),
            Client::SqlSession => (Class::Sql, format!("SQL session {src} → sql")),
            Client::SqlConnections => (Class::Sql, format!("SQL connects {src} → sql")),
            Client::SqlOpener => (Class::Sql, format!("SQL opener {src} → sql")),
            Client::Voip(n) => (Class::Voip, format!("VoIP call {src} → :{}", RTP_PORT + n)),
            Client::Sip => (Class::Voip, format!("SIP {src} → :{SIP_PORT}")),
        };
        let stats = FlowStats::new(class, label);
        let (lan, stop, st) = (self.lan.clone(), self.stop.clone(), stats.clone());
        self.threads.push(std::thread::spawn(move || {
            if netns::enter_by_name(&lan).is_err() {
                st.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match client {
                Client::Http => session(&st, src, WEB_HOST, HTTP_PORT, interval, &stop),
                Client::Ftp => session(&st, src, WEB_HOST, FTP_PORT, interval, &stop),
                Client::SqlSession => session(&st, src, SQL_HOST, SQL_PORT, interval, &stop),
                Client::SqlConnections => connections(&st, src, interval, &stop),
                Client::SqlOpener => opener(&st, src, interval, &stop),
                Client::Voip(n) => call(&st, src, RTP_PORT + n, interval, &stop),
                Client::Sip => call(&st, src, SIP_PORT, interval, &stop),
            }
        }));
        self.flows.push(stats.clone());
        stats
    }

    /// Stops every client and waits for them (VoIP calls wait up to 500 ms for echoes).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking TCP connection from `src` to `dst`, established within `timeout`.
fn connect(src: Ipv4Addr, dst: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let (s, in_progress) = start_connect(src, dst)?;
    if in_progress {
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if n <= 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
    }
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(s)
}

/// A non-blocking TCP socket bound to `src`, connecting to `dst` (the SYN is sent); `true`
/// when the connection is still in progress.
fn start_connect(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<(TcpStream, bool)> {
    // std has no bind-then-connect; socket2 would, but a raw bind is short.
    // SAFETY: plain socket call; ownership passes to TcpStream below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket owned from here on.
    let s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: bind with a sockaddr_in of the right size.
    if unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    s.set_nonblocking(true)?;
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: dst.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*dst.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect with a sockaddr_in of the right size.
    let r = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if r == 0 {
        return Ok((s, false));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok((s, true))
    } else {
        Err(e)
    }
}

fn key_of(proto: u8, local: SocketAddr, server: SocketAddrV4) -> Option<FlowKey> {
    match local {
        SocketAddr::V4(client) => Some(FlowKey {
            proto,
            client,
            server,
        }),
        SocketAddr::V6(_) => None,
    }
}

/// Total retransmissions of a TCP connection.
fn retransmits(s: &TcpStream) -> u64 {
    // SAFETY: zeroed tcp_info is valid; getsockopt fills at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as u32;
    // SAFETY: getsockopt with a buffer of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if r == 0 {
        info.tcpi_total_retrans as u64
    } else {
        0
    }
}

/// One request and its answer on a session.
fn exchange(port: u16, w: &mut TcpStream, r: &mut BufReader<TcpStream>, n: u64) -> io::Result<()> {
    let mut line = String::new();
    match port {
        HTTP_PORT => {
            w.write_all(format!("GET /page/{n} HTTP/1.1\r\nHost: web\r\n\r\n").as_bytes())?;
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = [0u8; HTTP_BODY];
            r.read_exact(&mut body)
        }
        FTP_PORT => {
            w.write_all(b"NOOP\r\n")?;
            r.read_line(&mut line)?;
            if line.starts_with("200") {
                Ok(())
            } else {
                Err(io::Error::other(format!("FTP answered {line:?}")))
            }
        }
        _ => {
            w.write_all(format!("SELECT {n};\n").as_bytes())?;
            r.read_line(&mut line)?;
            if line.starts_with("OK") {
                Ok(())
            } else {
                Err(io::Error::other(format!("SQL answered {line:?}")))
            }
        }
    }
}

/// A long-lived session: reconnects after an error.
fn session(
    st: &FlowStats,
    src: Ipv4Addr,
    host: Ipv4Addr,
    port: u16,
    interval: Duration,
    stop: &AtomicBool,
) {
    let server = SocketAddrV4::new(host, port);
    let mut retrans_before = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut w) = connect(src, server, ANSWER_TIMEOUT) else {
            st.errors.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        *st.key.lock().expect("flow stats lock") =
            w.local_addr().ok().and_then(|l| key_of(6, l, server));
        let Ok(rs) = w.try_clone() else { return };
        let mut r = BufReader::new(rs);
        if port == FTP_PORT {
            let mut greeting = String::new();
            if r.read_line(&mut greeting).is_err() {
                st.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let n = st.sent.fetch_add(1, Ordering::Relaxed);
            let ok = exchange(port, &mut w, &mut r, n);
            st.retransmits
                .store(retrans_before + retransmits(&w), Ordering::Relaxed);
            if ok.is_err() {
                st.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            st.answered.fetch_add(1, Ordering::Relaxed);
            next += interval;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        retrans_before += retransmits(&w);
    }
}

/// A new connection per query.
fn connections(st: &FlowStats, src: Ipv4Addr, interval: Duration, stop: &AtomicBool) {
    let server = SocketAddrV4::new(SQL_HOST, SQL_PORT);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let n = st.sent.fetch_add(1, Ordering::Relaxed);
        match sql_query(src, server, n) {
            Ok(key) => {
                *st.key.lock().expect("flow stats lock") = key;
                st.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                st.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        next += interval;
        match next.checked_duration_since(Instant::now()) {
            Some(d) => std::thread::sleep(d),
            None => next = Instant::now(),
        }
    }
}

/// Opens a connection every `interval` (non-blocking), closes each a second later;
/// `answered` counts those established by then.
fn opener(st: &FlowStats, src: Ipv4Addr, interval: Duration, stop: &AtomicBool) {
    let server = SocketAddrV4::new(SQL_HOST, SQL_PORT);
    let mut open: std::collections::VecDeque<(Instant, TcpStream)> = Default::default();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match start_connect(src, server) {
            Ok((s, _)) => {
                if let Ok(local) = s.local_addr() {
                    *st.key.lock().expect("flow stats lock") = key_of(6, local, server);
                }
                open.push_back((Instant::now(), s));
            }
            Err(_) => {
                st.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        st.sent.fetch_add(1, Ordering::Relaxed);
        while open
            .front()
            .is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(1))
        {
            let (_, s) = open.pop_front().expect("front exists");
            if s.peer_addr().is_ok() {
                st.answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        next += interval;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
}

/// Connects, sends one query, reads its answer, closes. Returns the connection's flow.
pub fn sql_query(src: Ipv4Addr, server: SocketAddrV4, n: u64) -> io::Result<Option<FlowKey>> {
    let mut w = connect(src, server, QUERY_TIMEOUT)?;
    // A one-query connection that does not answer quickly is given up, so a client keeps
    // opening new connections while a link fails.
    w.set_read_timeout(Some(QUERY_TIMEOUT))?;
    let key = w.local_addr().ok().and_then(|l| key_of(6, l, server));
    let mut r = BufReader::new(w.try_clone()?);
    exchange(SQL_PORT, &mut w, &mut r, n)?;
    Ok(key)
}

/// A VoIP call: a sequence-numbered packet every `interval`, echoed by the VoIP host.
fn call(st: &FlowStats, src: Ipv4Addr, port: u16, interval: Duration, stop: &AtomicBool) {
    let server = SocketAddrV4::new(VOIP_HOST, port);
    let Ok(s) = UdpSocket::bind(SocketAddrV4::new(src, 0)) else {
        st.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if s.connect(server).is_err() || s.set_nonblocking(true).is_err() {
        st.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    *st.key.lock().expect("flow stats lock") =
        s.local_addr().ok().and_then(|l| key_of(17, l, server));
    let mut buf = [0u8; 256];
    let mut payload = [0u8; 160];
    let mut next = Instant::now();
    let mut seq: u64 = 0;
    let drain = |st: &FlowStats, buf: &mut [u8]| {
        while s.recv(buf).is_ok() {
            st.answered.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        if s.send(&payload).is_ok() {
            st.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            st.errors.fetch_add(1, Ordering::Relaxed);
        }
        seq += 1;
        next += interval;
        while let Some(d) = next.checked_duration_since(Instant::now()) {
            let mut pfd = libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, d.as_millis().max(1) as i32) };
            drain(st, &mut buf);
        }
    }
    // Echoes still in flight.
    let t = Instant::now();
    while st.lost() > 0 && t.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(10));
        drain(st, &mut buf);
    }
}

/// `per_client` new SQL connections (one query each) from each of `clients`, concurrently,
/// from namespace `lan`. Returns the flows that were answered and the number that failed.
pub fn sql_burst(lan: &str, clients: &[Ipv4Addr], per_client: usize) -> (Vec<FlowKey>, usize) {
    let server = SocketAddrV4::new(SQL_HOST, SQL_PORT);
    std::thread::scope(|s| {
        let workers: Vec<_> = clients
            .iter()
            .map(|&src| {
                s.spawn(move || {
                    let mut ok = Vec::new();
                    let mut failed = 0;
                    if netns::enter_by_name(lan).is_err() {
                        return (ok, per_client);
                    }
                    for n in 0..per_client {
                        match sql_query(src, server, n as u64) {
                            Ok(Some(k)) => ok.push(k),
                            _ => failed += 1,
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut failed = 0;
        for w in workers {
            let (ok, f) = w.join().expect("burst worker");
            all.extend(ok);
            failed += f;
        }
        (all, failed)
    })
}
