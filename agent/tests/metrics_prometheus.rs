//! examples/prometheus: the alerting rules and scrape config are valid (`promtool check`), the
//! rules behave as intended (`promtool test rules`), they only use metrics the agent exposes,
//! and a real Prometheus ingests the agent's exposition. examples/grafana/xwan.json: every
//! panel's query returns data from a real Prometheus scraping the agent's endpoint.
//!
//! promtool and prometheus come with Debian's `prometheus` package (`cargo xtask setup`
//! installs it); without them those checks are skipped with a message, the name check runs.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use xwan::{
    metrics::{self, DatapathSource, Metrics, XfrmSnapshot},
    xfrm::{LinkSas, SaInfo},
};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/prometheus")
}

/// Path of `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_examples() {
    let Some(promtool) = which("promtool") else {
        eprintln!(
            "SKIPPED: promtool not found on PATH (Debian package `prometheus`; \
             `cargo xtask setup` installs it): examples/prometheus not checked with promtool"
        );
        return;
    };
    let dir = examples();
    run(Command::new(&promtool)
        .current_dir(&dir)
        .args(["check", "config", "prometheus.yml"]));
    run(Command::new(&promtool)
        .current_dir(&dir)
        .args(["check", "rules", "alerts.yml"]));
    run(Command::new(&promtool)
        .current_dir(&dir)
        .args(["test", "rules", "alerts_test.yml"]));
}

/// Every `xwan_*` token of `text` (metric names; alert names are `Xwan...`).
fn xwan_names(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("xwan_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// Names of the samples the agent exposes once every kind of series exists.
fn exposed() -> BTreeSet<String> {
    let (m, _) = metrics::bench_fixture(3, 8);
    m.encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn alerts_only_use_exposed_metrics() {
    let exposed = exposed();
    for file in ["alerts.yml", "alerts_test.yml"] {
        let text = std::fs::read_to_string(examples().join(file)).expect("read");
        let used = xwan_names(&text);
        assert!(used.len() >= 8, "{file}: the parser found only {used:?}");
        let unknown: Vec<_> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the agent does not expose: {unknown:?}\nexposed: {exposed:?}"
        );
    }
    // The brief's data-plane drop alert, verbatim.
    let alerts = std::fs::read_to_string(examples().join("alerts.yml")).expect("read");
    assert!(alerts.contains(r#"rate(xwan_datapath_packets_total{reason=~"drop_.*"}[5m]) > 0"#));
    for alert in [
        "XwanGatewayDown",
        "XwanRouterOnBackup",
        "XwanRouterNoUsableGateway",
        "XwanProbeLossHigh",
        "XwanConfigReloadFailed",
        "XwanDatapathDropsRising",
    ] {
        assert!(
            alerts.contains(&format!("- alert: {alert}\n")),
            "no {alert}"
        );
    }
}

#[test]
fn name_parser() {
    let names = xwan_names(
        "expr: max without (router) (xwan_gateway_up) == 0 # job=\"xwan\" Xwan_x my_xwan_y\n\
         rate(xwan_datapath_packets_total{reason=~\"drop_.*\"}[5m])",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["xwan_datapath_packets_total", "xwan_gateway_up"]
    );
}

/// A Prometheus scraping one target every second, its data in a directory of its own: killed,
/// and the directory removed, when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
    /// Its HTTP API.
    web: SocketAddr,
}

impl Server {
    fn start(prometheus: &Path, target: SocketAddr, tag: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("xwan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - \
                 job_name: xwan\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write config");
        let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Server { child, dir, web }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET path` over HTTP/1.0 (no chunking), body only.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// The agent's endpoint, with 1,000 rules and 256 gateways, scraped by a real Prometheus: the
/// target is up and every sample was ingested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_ingests_the_exposition() {
    let Some(prometheus) = which("prometheus") else {
        eprintln!(
            "SKIPPED: prometheus not found on PATH (Debian package `prometheus`): the exposition \
             is not checked against Prometheus' own parser"
        );
        return;
    };
    let (m, snapshot) = metrics::bench_fixture(1000, 256);
    let samples = m.encode().lines().filter(|l| !l.starts_with('#')).count();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = listener.local_addr().expect("local addr");
    let source: DatapathSource = Arc::new(move || snapshot.clone());
    tokio::spawn(metrics::serve_on(listener, Arc::new(m), source));

    let server = Server::start(&prometheus, target, "metrics-prometheus");
    let web = server.web;

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let ingested = loop {
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the agent within 60 s; last targets answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(body) = tokio::task::spawn_blocking(move || get(web, "/api/v1/targets"))
            .await
            .unwrap()
        else {
            continue;
        };
        last = body.clone();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let Some(t) = v["data"]["activeTargets"].get(0) else {
            continue;
        };
        let error = t["lastError"].as_str().unwrap_or_default();
        assert!(error.is_empty(), "prometheus rejected the scrape: {error}");
        if t["health"] != "up" {
            continue;
        }
        let q = "/api/v1/query?query=scrape_samples_scraped";
        let Some(body) = tokio::task::spawn_blocking(move || get(web, q))
            .await
            .unwrap()
        else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(n) = v["data"]["result"][0]["value"][1].as_str() {
            break n.parse::<usize>().expect("a count");
        }
    };
    drop(server);
    assert_eq!(ingested, samples);
}

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana/xwan.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
        .expect("the dashboard is JSON")
}

/// Every query of the dashboard's panels (title, expression), as Prometheus gets it: the
/// router variable matching all, `$__rate_interval` a minute.
fn dashboard_queries() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("an expr").to_owned();
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$router", ".*");
            out.push((p["title"].as_str().unwrap_or("?").to_owned(), expr));
        }
    }
    out
}

/// The agent's metrics with every kind of series, an IPsec link among them; its data-plane
/// counters grow with every scrape, so rates are not zero.
fn growing_fixture() -> (Metrics, DatapathSource) {
    let (m, snapshot) = metrics::bench_fixture(20, 16);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sa = |spi: u32, src: [u8; 4], dst: [u8; 4]| SaInfo {
        src: src.into(),
        dst: dst.into(),
        spi,
        proto: 50,
        reqid: 101,
        mark: Some((101, 0xffff_ffff)),
        if_id: None,
        algorithms: "aes128gcm16".into(),
        keyed: true,
        bytes: 1_000_000,
        packets: 1_000,
        add_time: now - 600,
        hard_lifetime: 3_600,
        replay_errors: 1,
        integrity_errors: 0,
    };
    let link = LinkSas {
        inbound: vec![sa(0xb000_0001, [192, 0, 2, 2], [192, 0, 2, 1])],
        outbound: vec![sa(0xa000_0001, [192, 0, 2, 1], [192, 0, 2, 2])],
    };
    m.set_xfrm_source(Arc::new(move || XfrmSnapshot {
        links: vec![("TunWAN1".into(), link.clone())],
        errors: vec![("in_no_states", 4)],
        now_unix: now,
    }));
    let scrapes = AtomicU64::new(0);
    let source: DatapathSource = Arc::new(move || {
        let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut s = snapshot.clone();
        let grow = |c: &mut xwan_common::Counter, i: usize| {
            c.packets += n * 100 * (i as u64 + 1);
            c.bytes += n * 150_000 * (i as u64 + 1);
        };
        for (i, (_, c)) in (s.gateways.iter_mut().chain(&mut s.gateway_failures)).enumerate() {
            grow(c, i % 16);
        }
        for (i, c) in s.reasons.iter_mut().enumerate() {
            grow(c, i);
        }
        for (i, (_, f)) in s.gateway_new_flows.iter_mut().enumerate() {
            *f += n * (i as u64 + 1);
        }
        s
    });
    (m, source)
}

/// Percent-encodes a query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The dashboard is a Grafana dashboard whose queries all use the Prometheus variable and
/// only metrics the agent exposes.
#[test]
fn the_dashboard_only_uses_exposed_metrics() {
    let d = dashboard();
    assert_eq!(d["uid"], "xwan");
    let (m, _) = growing_fixture();
    let exposed: BTreeSet<String> = m
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            let name = l.split(['{', ' ']).next().unwrap();
            // A histogram's series are queried by their family's `_bucket`.
            [name.to_owned(), name.trim_end_matches("_bucket").to_owned()]
        })
        .collect();
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "two panels with id {}",
            p["id"]
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    for (title, expr) in &queries {
        let used = xwan_names(expr);
        assert!(!used.is_empty(), "{title}: no xwan metric in {expr}");
        let unknown: Vec<_> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{title}: {unknown:?} not exposed\n{exposed:?}"
        );
    }
}

/// A real Prometheus scrapes the agent's endpoint every second; each panel's query returns
/// data (a typo in a metric or label would return nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_returns_data() {
    let Some(prometheus) = which("prometheus") else {
        eprintln!(
            "SKIPPED: prometheus not found on PATH (Debian package `prometheus`): the dashboard's \
             queries are not run"
        );
        return;
    };
    let (m, source) = growing_fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = listener.local_addr().expect("local addr");
    let m = Arc::new(m);
    tokio::spawn(metrics::serve_on(listener, m.clone(), source));
    // Probes and commits go on, as in a running agent: the histograms' rates are not zero.
    let feeder = tokio::spawn(async move {
        for k in 0u64.. {
            for g in 0..16 {
                let rtt = Duration::from_micros(300 + 50 * ((k + g) % 20));
                m.observe_probe(&metrics::bench_gateway_name(g as usize), Some(rtt));
            }
            m.observe_commit(Duration::from_micros(80 + 10 * (k % 30)));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let server = Server::start(&prometheus, target, "grafana");
    let web = server.web;
    // Rates need two scrapes in their minute; wait for a few.
    let query = |q: String| async move {
        let path = format!("/api/v1/query?query={}", encode(&q));
        let body = tokio::task::spawn_blocking(move || get(web, &path))
            .await
            .unwrap()?;
        serde_json::from_str::<serde_json::Value>(&body).ok()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape 4 times within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let scraped = query("count_over_time(up[1m])".into()).await;
        let n = scraped.as_ref().and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<u32>()
                .ok()
        });
        if n.is_some_and(|n| n >= 4) {
            break;
        }
    }
    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries() {
        let v = query(expr.clone()).await.expect("an answer");
        assert_eq!(v["status"], "success", "{title}: {expr}: {v}");
        let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
        let numbers = results
            .iter()
            .filter(|r| r["value"][1].as_str().is_some_and(|x| x != "NaN"))
            .count();
        if numbers == 0 {
            empty.push(format!("{title}: {expr} -> {v}"));
        }
    }
    feeder.abort();
    drop(server);
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
}
