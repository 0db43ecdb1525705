//! History benchmark: 100,000 executions in a SQLite store, a real server on loopback, and a load generator
//! (concurrent keep-alive clients) listing the first page of a project's history with an API token. Prints
//! p50 / p99 latency and requests per second. Run: `cargo bench -p pipewright-server --bench history`
//! (`PW_BENCH_EXECUTIONS`, `PW_BENCH_SECONDS`, `PW_BENCH_CLIENTS` change the size).

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` asks; nothing to list.
    }
    let n = env("PW_BENCH_EXECUTIONS", 100_000);
    let seconds = env("PW_BENCH_SECONDS", 10);
    let clients = env("PW_BENCH_CLIENTS", 16);
    let dir = tempfile::tempdir().unwrap();
    let store = common::seeded(dir.path(), n).await;

    let config = server::Config {
        max_body: 1 << 20,
        request_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
        lease: Duration::from_secs(30 * 86_400),
        ..server::Config::new(dir.path().to_path_buf())
    };
    let (app, token) = server::start(store.clone(), config).await.unwrap();
    let token = token.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/orgs/default/projects/default/executions", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(app, listener, async {
        let _ = stop_rx.await;
    }));
    println!("url: {url}\ntoken: {token}");

    let client = reqwest::Client::builder().pool_max_idle_per_host(clients as usize).build().unwrap();
    let first: serde_json::Value = client.get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 50);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "history first page, {n} executions, {clients} clients, {seconds}s: {} requests, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        all.len(),
        all.len() as f64 / seconds as f64,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    // One request at a time, for latency without queueing.
    let mut single = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let _ = client.get(&url).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
        single.push(t.elapsed());
    }
    single.sort();
    println!(
        "sequential: p50 {:.2} ms, p99 {:.2} ms",
        single[250].as_secs_f64() * 1000.0,
        single[495].as_secs_f64() * 1000.0
    );
    if std::env::var("PW_BENCH_HOLD").is_ok() {
        // Keep serving for an external load generator (wrk, oha) until Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(());
    let _ = serving.await;
}
