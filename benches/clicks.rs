//! Click-router benchmark: `wrk` with 64 connections against `GET /r/{key}`, beside a bare axum
//! handler answering the same 302 measured in the same run (bare, router, router, bare, each
//! server first warmed up by an unmeasured run); then the stored clicks are counted to show none
//! was lost.
//!
//!     apt-get install wrk
//!     cargo bench --bench clicks                    # SQLite
//!     SWITCHYARD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench clicks
//!
//! The load generator shares the machine's cores with the server, for the reference as for
//! Switchyard, so only the ratio between the two is meaningful. Each run also prints the CPU time
//! per request of the server (this process), wrk and PostgreSQL, from their own counters.

mod common;

use std::process::Command;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use clap::Parser as _;
use common::Ticks;
use serde_json::{json, Value};
use switchyard::app::{self, Running};
use switchyard::clock::Clock;

const CONNECTIONS: &str = "64";
const DURATION: &str = "10s";
/// An unmeasured run before the first measurement of each server: the first seconds of a run
/// on a fresh process and an empty database have a longer tail (for the bare handler too).
const WARM_UP: &str = "3s";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    // SWITCHYARD_BENCH_ONLY=postgres skips SQLite.
    let mut engines = Vec::new();
    if !std::env::var("SWITCHYARD_BENCH_ONLY").is_ok_and(|v| v == "postgres") {
        engines.push((
            "SQLite",
            format!("sqlite:{}", dir.path().join("bench.db").display()),
            None,
        ));
    }
    if let Ok(server) = std::env::var("SWITCHYARD_BENCH_DATABASE_URL") {
        let name = format!("sy_bench_clicks_{}", std::process::id());
        admin(&server, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        engines.push(("PostgreSQL", url.to_string(), Some((server, name))));
    }
    let bare = bare_handler().await;
    let reference = format!("{bare}/r/reference");
    for (name, url, cleanup) in engines {
        let running = start(&url).await;
        let key = link(&running).await;
        let router = format!("http://{}/r/{key}", running.addr);
        // Bare, router, router, bare: the machine's speed drifts by the minute, and a drift over
        // the four runs weighs on both sides of the ratio alike.
        wrk(&reference, WARM_UP);
        let first_bare = wrk(&reference, DURATION);
        let warm_up = wrk(&router, WARM_UP);
        let routed = [wrk(&router, DURATION), wrk(&router, DURATION)];
        let bare = [first_bare, wrk(&reference, DURATION)];
        let stored = stored_clicks(&running).await;
        running.shutdown().await.unwrap();
        println!("\n== {name} ({CONNECTIONS} connections, {DURATION} per run after {WARM_UP} unmeasured) ==");
        for (what, runs) in [("bare axum 302", &bare), ("click router", &routed)] {
            for figures in runs {
                println!(
                    "{what:<14} {:>8.0} requests/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
                    figures.rps, figures.p50_ms, figures.p99_ms
                );
            }
        }
        let rps = |runs: &[Figures; 2]| (runs[0].rps + runs[1].rps) / 2.0;
        let worst_p99 = routed[0].p99_ms.max(routed[1].p99_ms);
        println!(
            "click router: {:.1}% of bare (means of two runs each), p99 {worst_p99:.2} ms (the worse run)",
            100.0 * rps(&routed) / rps(&bare)
        );
        for (what, runs) in [("bare axum 302", &bare), ("click router", &routed)] {
            if let (Some(a), Some(b)) = (runs[0].cpu, runs[1].cpu) {
                let requests = (runs[0].requests + runs[1].requests) as f64;
                let per_request = |ticks| common::millis(ticks) * 1000.0 / requests;
                println!(
                    "CPU per request, {what:<14} server {:>5.1} us   wrk {:>5.1} us   PostgreSQL {:>5.1} us",
                    per_request(a.own + b.own),
                    per_request(a.children + b.children),
                    per_request(a.postgres + b.postgres)
                );
            }
        }
        let redirects = warm_up.requests + routed[0].requests + routed[1].requests;
        println!(
            "clicks stored  {stored} for {redirects} redirects counted by wrk ({} errors); {}",
            warm_up.errors + routed[0].errors + routed[1].errors,
            if stored >= redirects {
                "none lost"
            } else {
                "SOME LOST"
            }
        );
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

/// The reference: a bare axum handler answering the same redirect (a fresh click id appended
/// to the destination), with no lookup and no storage.
async fn bare_handler() -> String {
    let app = axum::Router::new().route(
        "/r/{key}",
        axum::routing::get(|| async {
            let location = format!(
                "https://shop.example.com/landing?click_id={}",
                switchyard::ids::new("clk")
            );
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn start(url: &str) -> Running {
    let args = [
        "switchyard",
        "--database-url",
        url,
        "--secrets-key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "--rate-limit-per-ip",
        "1000000",
        "--log",
        "warn",
        "--db-max-connections",
        "20",
        "serve",
    ];
    let config = switchyard::cli::Cli::try_parse_from(args).unwrap().config;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    app::start(config, Clock::default(), listener)
        .await
        .unwrap()
}

/// A partner, a campaign and a link, made through the API; returns the link key.
async fn link(running: &Running) -> String {
    let base = format!("http://{}", running.addr);
    let key = &running.first_start.as_ref().unwrap().key.plaintext;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let partner: Value = post(
        "/v1/partners",
        json!({"email": "bench@example.com", "name": "B"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let campaign: Value = post(
        "/v1/campaigns",
        json!({"name": "Bench", "destination_url": "https://shop.example.com/landing",
               "commission": {"type": "percent", "bps": 1000}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let link: Value = post(
        &format!("/v1/partners/{}/links", partner["id"].as_str().unwrap()),
        json!({"campaign_id": campaign["id"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    link["key"].as_str().unwrap().to_owned()
}

async fn stored_clicks(running: &Running) -> u64 {
    // Let requests wrk abandoned at the end of its run finish before counting.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM clicks")
        .fetch_one(running.state.db.pool())
        .await
        .unwrap();
    count as u64
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
    /// What the server (this process), wrk and PostgreSQL used during the run.
    cpu: Option<Ticks>,
}

/// Runs wrk against `url` for `duration` and reads its report.
fn wrk(url: &str, duration: &str) -> Figures {
    let before = Ticks::now();
    let output = Command::new("wrk")
        .args(["-t2", "-c", CONNECTIONS, "-d", duration, "--latency", url])
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let cpu = before
        .zip(Ticks::now())
        .map(|(before, after)| after.since(before));
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        report
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
    };
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
        + report
            .lines()
            .find(|l| l.contains("Socket errors"))
            .map(|l| {
                l.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
    let requests = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected wrk report:\n{report}"));
    Figures {
        rps: field("Requests/sec:")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0),
        p50_ms: field("50%").map(|t| millis(&t)).unwrap_or(f64::NAN),
        p99_ms: field("99%").map(|t| millis(&t)).unwrap_or(f64::NAN),
        requests,
        errors,
        cpu,
    }
}

/// wrk's durations (`812.00us`, `1.23ms`, `2.01s`) in milliseconds.
fn millis(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => f64::NAN,
    }
}
