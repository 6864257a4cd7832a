//! Soak: steady mixed load for `SWITCHYARD_SOAK_MINUTES` (default 10) on PostgreSQL (on SQLite
//! when `SWITCHYARD_BENCH_DATABASE_URL` is unset): every second 50 clicks and 10 purchases
//! through them (attribution, a commission, `commission.accrued` delivered to a receiver that
//! fails one request in twenty, so retries run too). Each minute it prints the process's RSS
//! (server and load generator share it; the generator's part is small and constant), the
//! queue's waiting jobs and oldest due job, and the p99 of clicks and of event intake.
//!
//! It passes when memory stops growing after warm-up (under 10% growth over the second half)
//! and no backlog builds (the queue at the end no deeper than a minute's work).
//!
//!     SWITCHYARD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench soak

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::program::{admin, click, engines, linked, percentile, start};
use serde_json::{json, Value};

const CLICKS_PER_SECOND: usize = 50;
const EVENTS_PER_SECOND: usize = 10;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A receiver answering 500 to one request in twenty.
async fn flaky_receiver() -> u16 {
    let count = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                if count.fetch_add(1, Ordering::Relaxed) % 20 == 19 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let minutes: u64 = std::env::var("SWITCHYARD_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let mut engines = engines("soak", dir.path()).await;
    // PostgreSQL when configured, else SQLite: one engine per soak.
    let (name, url, cleanup) = engines.pop().unwrap();
    let running = start(&url, &[]).await;
    let base = format!("http://{}", running.addr);
    let key = running.first_start.as_ref().unwrap().key.plaintext.clone();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let hook = flaky_receiver().await;
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let follow = linked(&running, hook).await;

    println!("{name}: soak of {minutes} min, {CLICKS_PER_SECOND} clicks/s and {EVENTS_PER_SECOND} events/s");
    println!("minute  rss_mib  waiting_jobs  oldest_due_ms  click_p99_ms  event_p99_ms");
    let mut rss = Vec::new();
    let mut waiting_at_end = 0;
    let mut event_n = 0_u64;
    let mut previous: Vec<String> = Vec::new();
    for minute in 1..=minutes {
        let (mut clicks, mut events) = (Vec::new(), Vec::new());
        let started = Instant::now();
        let mut second = tokio::time::interval(Duration::from_secs(1));
        for _ in 0..60 {
            second.tick().await;
            let mut ids = Vec::new();
            for n in 0..CLICKS_PER_SECOND {
                let at = Instant::now();
                let id = click(&client, &follow).await;
                clicks.push(at.elapsed());
                if n < EVENTS_PER_SECOND {
                    ids.push(id);
                }
            }
            // Conversions come a second after their clicks (stored by then, as in life).
            for click in std::mem::replace(&mut previous, ids) {
                event_n += 1;
                let at = Instant::now();
                let answer = post(
                    "/v1/events",
                    json!({"event_id": format!("soak-{event_n}"), "type": "purchase",
                           "click_id": click, "amount": 10_000, "currency": "EUR"}),
                )
                .await
                .unwrap();
                events.push(at.elapsed());
                assert_eq!(answer.status(), 201);
            }
        }
        let stats = running.state.queue.stats().await.unwrap();
        let waiting: i64 = stats.kinds.iter().map(|k| k.available + k.running).sum();
        let oldest = stats
            .kinds
            .iter()
            .map(|k| k.oldest_available_age_ms)
            .max()
            .unwrap_or(0);
        let mib = rss_mib();
        rss.push(mib);
        waiting_at_end = waiting;
        println!(
            "{minute:>6}  {mib:>7.1}  {waiting:>12}  {oldest:>13}  {:>12.2}  {:>12.2}   ({:.0} s)",
            percentile(&mut clicks, 0.99),
            percentile(&mut events, 0.99),
            started.elapsed().as_secs_f64()
        );
    }
    let half = rss.len() / 2;
    let (mid, end) = (rss[half.saturating_sub(1)], *rss.last().unwrap());
    let growth = (end - mid) / mid * 100.0;
    let per_minute = (CLICKS_PER_SECOND + 2 * EVENTS_PER_SECOND) as i64 * 60;
    println!(
        "{name}: RSS {mid:.1} MiB at the half, {end:.1} MiB at the end ({growth:+.1}%, goal under \
         +10%); {waiting_at_end} jobs waiting at the end (goal: under a minute's work, {per_minute})"
    );
    running.shutdown().await.unwrap();
    if let Some((server, database)) = cleanup {
        admin(&server, &format!("DROP DATABASE {database} WITH (FORCE)")).await;
    }
}
