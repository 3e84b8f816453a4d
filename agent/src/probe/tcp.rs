//! TCP-connect monitor: a probe succeeds when a connection to `target:port`, bound to the
//! link's interface and source address, is established within the wait; its RTT is the
//! handshake time (SYN → SYN/ACK). A refused connection (RST) fails with
//! [`ProbeError::Refused`]: the host is up but the monitored service is not.
//!
//! The connection is closed with a reset (`SO_LINGER` 0) at once, so probing every few
//! seconds leaves no `TIME_WAIT` sockets behind and the peer's service sees a short-lived
//! connection without data.
//!
//! # What a reader may change
//!
//! Anything beyond the handshake (sending a request, checking a banner) would make this an
//! application check: add a new prober for that rather than changing this one.

use std::{
    net::{IpAddr, SocketAddr, SocketAddrV6},
    sync::Arc,
    time::{Duration, Instant},
};

use socket2::SockRef;
use tokio::net::TcpSocket;

use super::{LinkBinding, ProbeError, Prober};

/// TCP-connect prober for one link and port. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TcpProber {
    binding: Arc<LinkBinding>,
    port: u16,
}

impl TcpProber {
    pub fn new(binding: LinkBinding, port: u16) -> TcpProber {
        TcpProber {
            binding: Arc::new(binding),
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn binding(&self) -> &LinkBinding {
        &self.binding
    }

    fn socket(&self, target: IpAddr) -> Result<TcpSocket, ProbeError> {
        let io = |what: &'static str| move |e: std::io::Error| ProbeError::from_io(what, &e);
        let sock = match target {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(io("tcp socket"))?;
        if let Some(dev) = &self.binding.device {
            sock.bind_device(Some(dev.as_bytes()))
                .map_err(io("bind to device"))?;
        }
        if let Some(mark) = self.binding.mark {
            SockRef::from(&sock).set_mark(mark).map_err(io("SO_MARK"))?;
        }
        let source = match target {
            IpAddr::V4(_) => self.binding.source_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.binding.source_v6.map(IpAddr::V6),
        };
        if let Some(src) = source {
            sock.bind(SocketAddr::new(src, 0))
                .map_err(io("bind to source address"))?;
        }
        Ok(sock)
    }
}

impl Prober for TcpProber {
    async fn probe(&self, target: IpAddr, timeout: Duration) -> Result<Duration, ProbeError> {
        let sock = self.socket(target)?;
        let dest = match target {
            IpAddr::V6(a) if a.is_unicast_link_local() => {
                SocketAddr::V6(SocketAddrV6::new(a, self.port, 0, self.binding.ifindex()))
            }
            a => SocketAddr::new(a, self.port),
        };
        let start = Instant::now();
        match tokio::time::timeout(timeout, sock.connect(dest)).await {
            Ok(Ok(stream)) => {
                let rtt = start.elapsed().max(Duration::from_nanos(1));
                // abortive close: no TIME_WAIT; failure to set it is harmless
                let _ = stream.set_zero_linger();
                Ok(rtt)
            }
            Ok(Err(e)) => Err(ProbeError::from_io("connect", &e)),
            Err(_) => Err(ProbeError::Timeout),
        }
    }
}
