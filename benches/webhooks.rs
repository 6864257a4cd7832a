//! Webhook benchmark: emit-to-receipt throughput and latency with 1, 5 and 10 endpoints, in a
//! burst (as fast as messages can be accepted) and paced (250 messages/s), beside the receiver's
//! own capacity measured in the same run.
//!
//!     cargo bench --bench webhooks                    # SQLite
//!     SWITCHYARD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench webhooks
//!
//! Each message is accepted the way slices accept them (`outbox::emit` in a committed
//! transaction; a burst from 16 concurrent producers); latency runs from that commit to the receiver reading the request.
//! Each run starts once the one before has finished its work, and prints the CPU time the hub's
//! process and PostgreSQL used during it (on 2 cores shared by both, that load is what a
//! latency tail waits behind).
//! The hub runs with its default settings (pool size included) but an outbound allowlist for
//! the local receiver and a high per-key rate limit.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use clap::Parser as _;
use common::Ticks;
use serde_json::json;
use switchyard::app::{self, Running};
use switchyard::clock::Clock;
use tokio::sync::mpsc;

const BURST_MESSAGES: usize = 1000;
const PACED_RATE: u64 = 250;
const PACED_MESSAGES: usize = 750;
/// Concurrent producers in a burst.
const EMITTERS: usize = 16;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    // SWITCHYARD_BENCH_ONLY=postgres skips SQLite; SWITCHYARD_BENCH_ENDPOINTS=1,5 picks fan-outs.
    let only_postgres = std::env::var("SWITCHYARD_BENCH_ONLY").is_ok_and(|v| v == "postgres");
    let fan_outs: Vec<usize> = std::env::var("SWITCHYARD_BENCH_ENDPOINTS")
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![1, 5, 10]);
    let mut engines = Vec::new();
    if !only_postgres {
        engines.push((
            "SQLite",
            format!("sqlite:{}", dir.path().join("bench.db").display()),
            None,
        ));
    }
    if let Ok(server) = std::env::var("SWITCHYARD_BENCH_DATABASE_URL") {
        let name = format!("sy_bench_hooks_{}", std::process::id());
        admin(&server, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        engines.push(("PostgreSQL", url.to_string(), Some((server, name))));
    }
    let (receiver_port, mut arrivals) = receiver().await;
    println!(
        "receiver capacity          {:>7.0} requests/s (reference: 32 concurrent plain POSTs)",
        capacity(receiver_port).await
    );
    for (name, url, cleanup) in engines {
        println!("\n== {name} ==");
        let (p50, p99) = paced_reference(receiver_port, &mut arrivals).await;
        println!(
            "receiver, {PACED_RATE} POSTs/s          p50 {p50:>7.2} ms  p99 {p99:>7.2} ms (reference: a plain POST's send-to-arrival, paced)"
        );
        let running = start(&url).await;
        for &endpoints in &fan_outs {
            let key = running.first_start.as_ref().unwrap().key.plaintext.clone();
            subscribe(&running, &key, receiver_port, endpoints).await;
            settle(&running).await;
            let burst = measure(&running, &mut arrivals, endpoints, BURST_MESSAGES, None).await;
            println!("{endpoints:>2} endpoint(s), burst      {burst}");
            settle(&running).await;
            let paced = measure(
                &running,
                &mut arrivals,
                endpoints,
                PACED_MESSAGES,
                Some(PACED_RATE),
            )
            .await;
            println!("{endpoints:>2} endpoint(s), {PACED_RATE} msg/s   {paced}");
        }
        running.shutdown().await.unwrap();
        if let Some((server, name)) = cleanup {
            admin(&server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
        }
    }
}

async fn admin(server: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

/// A receiver that reports (message id, arrival) for every delivery.
async fn receiver() -> (u16, mpsc::UnboundedReceiver<(String, Instant)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/hook/{n}",
            axum::routing::post(move |headers: HeaderMap| {
                let tx = tx.clone();
                async move {
                    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                        let _ = tx.send((id.to_owned(), Instant::now()));
                    }
                    "ok"
                }
            }),
        )
        .route("/plain", axum::routing::post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, rx)
}

async fn capacity(port: u16) -> f64 {
    let client = reqwest::Client::new();
    let total = 4000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let client = client.clone();
        tasks.spawn(async move {
            for _ in (worker..total).step_by(32) {
                client
                    .post(format!("http://127.0.0.1:{port}/plain"))
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    total as f64 / started.elapsed().as_secs_f64()
}

async fn start(url: &str) -> Running {
    let args = [
        "switchyard",
        "--database-url",
        url,
        "--secrets-key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "--outbound-allow",
        "127.0.0.0/8",
        "--rate-limit-per-key",
        "100000",
        "--log",
        "warn",
        "serve",
    ];
    let config = switchyard::cli::Cli::try_parse_from(args).unwrap().config;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    app::start(config, Clock::default(), listener)
        .await
        .unwrap()
}

/// Replaces the subscriptions with `count` endpoints on the receiver.
async fn subscribe(running: &Running, key: &str, port: u16, count: usize) {
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let existing: serde_json::Value = client
        .get(format!("{base}/v1/webhooks?limit=200"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for endpoint in existing["data"].as_array().unwrap() {
        let id = endpoint["id"].as_str().unwrap();
        client
            .delete(format!("{base}/v1/webhooks/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
    }
    for n in 0..count {
        let body = json!({ "url": format!("http://127.0.0.1:{port}/hook/{n}") });
        let created = client
            .post(format!("{base}/v1/webhooks"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    }
}

/// The latency floor of the paced runs on this machine at this moment: `PACED_MESSAGES` POSTs
/// sent straight to the receiver at `PACED_RATE`, each timed from its send to the receiver
/// reading it, as deliveries are timed from their commit. Returns p50 and p99 in ms.
async fn paced_reference(
    port: u16,
    arrivals: &mut mpsc::UnboundedReceiver<(String, Instant)>,
) -> (f64, f64) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = HashMap::new();
    for n in 0..PACED_MESSAGES {
        let due = started + Duration::from_micros(n as u64 * 1_000_000 / PACED_RATE);
        tokio::time::sleep_until(due.into()).await;
        let id = format!("reference-{n}");
        sent.insert(id.clone(), Instant::now());
        let request = client
            .post(format!("http://127.0.0.1:{port}/hook/0"))
            .header("webhook-id", id)
            .body("{}");
        tokio::spawn(async move { request.send().await.unwrap() });
    }
    let mut latencies = Vec::with_capacity(PACED_MESSAGES);
    while latencies.len() < PACED_MESSAGES {
        let (id, at) = arrivals.recv().await.unwrap();
        latencies.push(at.saturating_duration_since(sent[&id]).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99))
}

/// Waits until the hub has finished the work of the run before (every job recorded done), so
/// that a run measures its own messages and not the tail of the previous run's.
async fn settle(running: &Running) {
    while running
        .state
        .queue
        .stats()
        .await
        .unwrap()
        .kinds
        .iter()
        .any(|k| k.available > 0 || k.running > 0)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One measured run.
struct Run {
    deliveries_per_s: f64,
    /// Commit-to-receipt latency, ms.
    p50: f64,
    p99: f64,
    /// CPU time of the hub's process (with the receiver and producers) and PostgreSQL's, from
    /// the first emit to the last receipt: as a share of all cores, and in ms per message.
    cpu: Option<(f64, f64)>,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>7.0} deliveries/s   p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.deliveries_per_s, self.p50, self.p99
        )?;
        if let Some((busy, per_message)) = self.cpu {
            write!(
                f,
                "   CPU {busy:>3.0}% of the cores, {per_message:.2} ms/message"
            )?;
        }
        Ok(())
    }
}

/// Emits `messages` (as fast as possible, or at `rate` per second) and waits for every
/// delivery.
async fn measure(
    running: &Running,
    arrivals: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    endpoints: usize,
    messages: usize,
    rate: Option<u64>,
) -> Run {
    let state = running.state.clone();
    let tenant = running.first_start.as_ref().unwrap().tenant.id.clone();
    let committed: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    // A burst comes from EMITTERS concurrent producers, as from that many API requests at once;
    // the paced run from one producer keeping the schedule.
    let emitters = if rate.is_some() { 1 } else { EMITTERS };
    let cpu_before = Ticks::now();
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for first in 0..emitters {
        let committed = committed.clone();
        let state = state.clone();
        let tenant = tenant.clone();
        producers.spawn(async move {
            for n in (first..messages).step_by(emitters) {
                if let Some(rate) = rate {
                    let due = started + Duration::from_micros(n as u64 * 1_000_000 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let mut tx = state.db.write(&tenant).await.unwrap();
                let mut handoff = state.queue.handoff();
                let id = switchyard::outbox::emit(
                    &mut tx,
                    &mut handoff,
                    &state.clock,
                    &tenant,
                    "partner.created",
                    json!({ "n": n }),
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                committed.lock().unwrap().insert(id, Instant::now());
                handoff.start();
            }
        });
    }
    let expected = messages * endpoints;
    let mut received = Vec::with_capacity(expected);
    while received.len() < expected {
        let arrival = tokio::time::timeout(Duration::from_secs(120), arrivals.recv())
            .await
            .expect("deliveries keep arriving")
            .unwrap();
        received.push(arrival);
    }
    while producers.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    // The hub, the receiver and the producers (this process), and PostgreSQL.
    let cpu = cpu_before.zip(Ticks::now()).map(|(before, after)| {
        let used = after.since(before);
        let cpu_ms = common::millis(used.own + used.postgres);
        let share = cpu_ms / (cores * elapsed.as_secs_f64() * 1000.0);
        (100.0 * share, cpu_ms / messages as f64)
    });
    let last = received.iter().map(|(_, at)| *at).max().unwrap();
    let committed = committed.lock().unwrap();
    let mut latencies: Vec<f64> = received
        .iter()
        .filter_map(|(id, at)| {
            Some(
                at.saturating_duration_since(*committed.get(id)?)
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run {
        deliveries_per_s: expected as f64 / last.duration_since(started).as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        cpu,
    }
}
