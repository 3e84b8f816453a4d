//! The HTTP endpoint: `GET /metrics` (OpenMetrics text), `GET /healthz` (liveness).
//!
//! A scrape reads the data-plane counters through the daemon's [`DatapathSource`] on a
//! blocking thread (map reads are system calls; they must not stall the runtime's probe
//! tasks), then encodes. Scrapes are serialised, so concurrent scrapers cost one counter read
//! at a time; connections are capped and must send their request headers within a timeout.

use std::{
    convert::Infallible,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE as CONTENT_TYPE_HEADER, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Mutex, Semaphore},
    task::JoinSet,
};

use super::{DatapathSnapshot, Metrics};

/// The default `metrics_listen`: loopback only.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// Content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads the data plane's counters; called once per scrape, on a blocking thread, with no lock
/// of the metrics module held. It should not take a lock that table commits hold for long.
pub type DatapathSource = Arc<dyn Fn() -> DatapathSnapshot + Send + Sync>;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

struct Ctx {
    metrics: Arc<Metrics>,
    datapath: DatapathSource,
    /// One scrape at a time.
    scrape: Mutex<()>,
}

/// Binds `listen` and serves until the future is dropped (dropping it closes every
/// connection). Fails only if the address cannot be bound: bind first with
/// [`TcpListener::bind`] and use [`serve_on`] to report that error before spawning.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    datapath: DatapathSource,
) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    serve_on(listener, metrics, datapath).await
}

/// Serves on an already bound listener until the future is dropped. Accept errors (e.g. out of
/// file descriptors) are logged and retried; the future does not return on its own.
pub async fn serve_on(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    datapath: DatapathSource,
) -> io::Result<()> {
    let ctx = Arc::new(Ctx {
        metrics,
        datapath,
        scrape: Mutex::new(()),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owns the connection tasks: dropping the future aborts them.
    let mut conns = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics endpoint listening");
    }
    loop {
        while conns.try_join_next().is_some() {}
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
            });
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "metrics endpoint: connection error");
            }
        });
    }
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    match scrape(ctx).await {
        Ok(body) => response(StatusCode::OK, CONTENT_TYPE, Bytes::from(body)),
        Err(error) => {
            tracing::warn!(%error, "metrics scrape failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
        }
    }
}

/// Reads the data plane and encodes, off the runtime's worker threads.
async fn scrape(ctx: &Ctx) -> Result<String, tokio::task::JoinError> {
    let _one_at_a_time = ctx.scrape.lock().await;
    let metrics = ctx.metrics.clone();
    let datapath = ctx.datapath.clone();
    tokio::task::spawn_blocking(move || {
        metrics.set_datapath(datapath());
        metrics.encode()
    })
    .await
}
