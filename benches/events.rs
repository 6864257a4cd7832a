//! Conversion-event benchmark: sustained events/s through `POST /v1/events` (each attributed to
//! a click and accruing a commission), and the latency from sending an event to its answer and
//! to the signed `commission.accrued` webhook arriving at a local receiver. Both engines.
//!
//!     cargo bench --bench events                    # SQLite
//!     SWITCHYARD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench events

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::program::{admin, engines, percentile, receiver, setup, start};
use serde_json::json;
use tokio::sync::Semaphore;

const EVENTS: usize = 2000;
const CONCURRENCY: usize = 16;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engines = engines("events", dir.path()).await;
    for (name, url, cleanup) in engines {
        let running = start(&url, &[]).await;
        let (port, mut arrivals) = receiver().await;
        let clicks = setup(&running, port, EVENTS).await;
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
