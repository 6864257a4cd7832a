//! Conversion-event benchmark: sustained events/s through `POST /v1/events` (each attributed to
//! a click and accruing a commission), and the latency from sending an event to its answer and
//! to the signed `commission.accrued` webhook arriving at a local receiver. Both engines.
//!
//!     cargo bench --bench events                    # SQLite
//!     SWITCHYARD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench events

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use clap::Parser as _;
use serde_json::{json, Value};
use switchyard::app::{self, Running};
use switchyard::clock::Clock;
use tokio::sync::{mpsc, Semaphore};

const EVENTS: usize = 2000;
const CONCURRENCY: usize = 16;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut engines = vec![(
        "SQLite",
        format!("sqlite:{}", dir.path().join("bench.db").display()),
        None,
    )];
    if let Ok(server) = std::env::var("SWITCHYARD_BENCH_DATABASE_URL") {
        let name = format!("sy_bench_events_{}", std::process::id());
        admin(&server, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        engines.push(("PostgreSQL", url.to_string(), Some((server, name))));
    }
    for (name, url, cleanup) in engines {
        let running = start(&url).await;
        let (port, mut arrivals) = receiver().await;
        let clicks = setup(&running, port).await;
        let client = reqwest::Client::new();
        let base = format!("http://{}", running.addr);
        let key = running.first_start.as_ref().unwrap().key.plaintext.clone();
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let mut sent_at = HashMap::new();
        let mut answers = tokio::task::JoinSet::new();
        let started = Instant::now();
        for (n, click) in clicks.into_iter().enumerate() {
            let permit = slots.clone().acquire_owned().await.unwrap();
            let event_id = format!("evt-{n}");
            let request = client
                .post(format!("{base}/v1/events"))
                .bearer_auth(&key)
                .json(
                    &json!({"event_id": event_id, "type": "purchase", "click_id": click,
                              "amount": 10_000, "currency": "EUR"}),
                );
            sent_at.insert(event_id, Instant::now());
            answers.spawn(async move {
                let sent = Instant::now();
                let status = request.send().await.unwrap().status();
                drop(permit);
                assert_eq!(status, 201);
                sent.elapsed()
            });
        }
        let mut answer_times: Vec<Duration> = answers.join_all().await;
        let accepted = started.elapsed();
        let mut end_to_end = Vec::with_capacity(EVENTS);
        while end_to_end.len() < EVENTS {
            let (event_id, at) = tokio::time::timeout(Duration::from_secs(60), arrivals.recv())
                .await
                .expect("every commission.accrued arrives")
                .unwrap();
            if let Some(sent) = sent_at.get(&event_id) {
                end_to_end.push(at - *sent);
            }
        }
        let delivered = started.elapsed();
        println!("\n== {name} ({EVENTS} events, {CONCURRENCY} concurrent senders) ==");
        println!(
            "accepted        {:>7.0} events/s    answer p50 {:>6.2} ms   p99 {:>6.2} ms",
            EVENTS as f64 / accepted.as_secs_f64(),
            percentile(&mut answer_times, 0.50),
            percentile(&mut answer_times, 0.99),
        );
        println!(
            "webhook arrived {:>7.0} events/s    event->webhook p50 {:>6.2} ms   p99 {:>6.2} ms",
            EVENTS as f64 / delivered.as_secs_f64(),
            percentile(&mut end_to_end, 0.50),
            percentile(&mut end_to_end, 0.99),
        );
        running.shutdown().await.unwrap();
        if let Some((server, name)) = cleanup {
            admin(&server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
        }
    }
}

fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).max(1);
    samples[rank - 1].as_secs_f64() * 1000.0
}

async fn admin(server: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
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
        "--rate-limit-per-ip",
        "100000",
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

/// The receiver: reports the `event_id` of every `commission.accrued` it gets, and when.
async fn receiver() -> (u16, mpsc::UnboundedReceiver<(String, Instant)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let at = Instant::now();
                if let Ok(message) = serde_json::from_slice::<Value>(&body) {
                    if let Some(event_id) = message["data"]["event_id"].as_str() {
                        let _ = tx.send((event_id.to_owned(), at));
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, rx)
}

/// A subscription to `commission.accrued`, a partner, a campaign, a link, and one click per
/// event to come; returns the click ids.
async fn setup(running: &Running, port: u16) -> Vec<String> {
    let base = format!("http://{}", running.addr);
    let key = &running.first_start.as_ref().unwrap().key.plaintext;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    post(
        "/v1/webhooks",
        json!({"url": format!("http://127.0.0.1:{port}/hook"), "event_types": ["commission.accrued"]}),
    )
    .await
    .unwrap();
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
        json!({"name": "Bench", "destination_url": "https://shop.example.com/",
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
    let follow = format!("{base}/r/{}", link["key"].as_str().unwrap());
    let mut clicks = Vec::with_capacity(EVENTS);
    for _ in 0..EVENTS {
        let response = client.get(&follow).send().await.unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let click = url::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "click_id")
            .unwrap()
            .1
            .into_owned();
        clicks.push(click);
    }
    clicks
}
