//! The metrics HTTP endpoint, scraped with a plain TCP client on loopback.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use xwan::metrics::{self, DatapathSnapshot, DatapathSource, Metrics};
use xwan_common::{Counter, reason};

/// A parsed HTTP/1.1 response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the whole reply.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("reply within 10 s")
        .expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A server on 127.0.0.1:<ephemeral> whose data plane counts its own reads: every scrape
/// reads it once, and rule `Web` has matched as many packets as there were reads.
async fn start() -> (SocketAddr, Arc<Metrics>, Arc<AtomicU64>) {
    let metrics = Arc::new(Metrics::new());
    let reads = Arc::new(AtomicU64::new(0));
    let source: DatapathSource = {
        let reads = reads.clone();
        let metrics = metrics.clone();
        Arc::new(move || {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            // The callback runs without any lock of the metrics module held: updating from
            // here must not deadlock.
            metrics.observe_probe("ISP", Some(Duration::from_millis(1)));
            let mut reasons = vec![Counter::default(); reason::COUNT as usize];
            reasons[reason::DROP_RULE as usize] = Counter {
                packets: n,
                bytes: 60 * n,
            };
            DatapathSnapshot {
                rules: vec![(
                    "Web".into(),
                    Counter {
                        packets: n,
                        bytes: 1500 * n,
                    },
                )],
                reasons,
                flow_entries: Some(n),
                ..DatapathSnapshot::default()
            }
        })
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(metrics::serve_on(listener, metrics.clone(), source));
    (addr, metrics, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_metrics_and_healthz() {
    let (addr, _metrics, reads) = start().await;

    let r = request(addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(metrics::CONTENT_TYPE));
    assert_eq!(
        metrics::CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    assert!(r.body.contains("xwan_rule_packets_total{rule=\"Web\"} 1\n"));
    assert!(
        r.body
            .contains("xwan_datapath_packets_total{reason=\"drop_rule\"} 1\n")
    );
    assert!(r.body.contains("xwan_flow_table_entries 1\n"));
    assert!(r.body.contains("xwan_build_info{version=\""));

    // Counters are read per scrape.
    let r = request(addr, "GET", "/metrics?x=1").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("xwan_rule_packets_total{rule=\"Web\"} 2\n"));
    assert!(
        r.body
            .contains("xwan_rule_bytes_total{rule=\"Web\"} 3000\n")
    );
    assert!(
        r.body
            .contains("xwan_probes_sent_total{gateway=\"ISP\"} 2\n")
    );
    assert_eq!(reads.load(Ordering::SeqCst), 2);

    let r = request(addr, "GET", "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok");
    // Liveness does not read the data plane.
    assert_eq!(reads.load(Ordering::SeqCst), 2);

    let r = request(addr, "HEAD", "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "");

    let r = request(addr, "GET", "/").await;
    assert_eq!(r.status, 404);
    let r = request(addr, "GET", "/metrics/x").await;
    assert_eq!(r.status, 404);
    let r = request(addr, "POST", "/metrics").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_all_succeed() {
    let (addr, _metrics, reads) = start().await;
    let scrapes: Vec<_> = (0..16)
        .map(|_| tokio::spawn(request(addr, "GET", "/metrics")))
        .collect();
    for s in scrapes {
        let r = s.await.expect("task");
        assert_eq!(r.status, 200);
        assert!(r.body.ends_with("# EOF\n"));
    }
    assert_eq!(reads.load(Ordering::SeqCst), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_between_scrapes_are_visible() {
    let (addr, metrics, _) = start().await;
    metrics.record_reload(false);
    let r = request(addr, "GET", "/metrics").await;
    assert!(
        r.body
            .contains("xwan_config_reloads_total{result=\"failure\"} 1\n")
    );
    assert!(r.body.contains("xwan_config_last_reload_successful 0\n"));
    metrics.record_reload(true);
    let r = request(addr, "GET", "/metrics").await;
    assert!(
        r.body
            .contains("xwan_config_reloads_total{result=\"success\"} 1\n")
    );
    assert!(r.body.contains("xwan_config_last_reload_successful 1\n"));
    assert!(
        r.body
            .contains("xwan_config_last_reload_success_timestamp_seconds ")
    );
}

#[tokio::test]
async fn serve_reports_an_address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("local addr");
    let source: DatapathSource = Arc::new(DatapathSnapshot::default);
    let err = metrics::serve(addr, Arc::new(Metrics::new()), source)
        .await
        .expect_err("the address is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(
        metrics::DEFAULT_LISTEN,
        "127.0.0.1:9464".parse::<SocketAddr>().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_closes_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let source: DatapathSource = Arc::new(DatapathSnapshot::default);
    let server = tokio::spawn(metrics::serve_on(
        listener,
        Arc::new(Metrics::new()),
        source,
    ));
    assert_eq!(request(addr, "GET", "/healthz").await.status, 200);
    server.abort();
    let _ = server.await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_counter_read_fails_only_that_scrape() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let calls = Arc::new(AtomicU64::new(0));
    let source: DatapathSource = {
        let calls = calls.clone();
        Arc::new(move || {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("simulated failure reading the counters");
            }
            DatapathSnapshot::default()
        })
    };
    tokio::spawn(metrics::serve_on(
        listener,
        Arc::new(Metrics::new()),
        source,
    ));
    assert_eq!(request(addr, "GET", "/metrics").await.status, 500);
    assert_eq!(request(addr, "GET", "/healthz").await.status, 200);
    let r = request(addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with("# EOF\n"));
}
