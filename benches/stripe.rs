//! Stripe-in benchmark: accepted Stripe events/s through the signed webhook (verify the raw body,
//! store the event, enqueue its processing, answer) beside the queue's own enqueue rate measured
//! in the same run on the same server (the accept path is an enqueue plus the HTTP, the
//! signature and the event row: the goal is at least half of it), and the latency from sending
//! a `checkout.session.completed` to its `commission.accrued` webhook arriving. Both engines.
//!
//!     cargo bench --bench stripe                    # SQLite
//!     SWITCHYARD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench stripe

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::program::{admin, engines, percentile, receiver, setup, start};
use job_queue::NewJob;
use serde_json::json;
use tokio::sync::Semaphore;

const EVENTS: usize = 1000;
const CONCURRENCY: usize = 16;
const SECRET: &str = "whsec_bench_secret";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engines = engines("stripe", dir.path()).await;
    for (name, url, cleanup) in engines {
        let running = start(&url, &["--stripe-webhook-secrets", SECRET]).await;
        let (port, mut arrivals) = receiver().await;
        let clicks = setup(&running, port, EVENTS).await;

        // The reference: the same server's queue, one job per transaction, on a queue no
        // worker takes.
        let queue = &running.state.queue;
        let started = Instant::now();
        for n in 0..EVENTS {
            let mut job = NewJob::new("bench.reference", json!({ "n": n }));
            job.queue = "bench".to_owned();
            queue.enqueue(job).await.unwrap();
        }
        let enqueue_rate = EVENTS as f64 / started.elapsed().as_secs_f64();

        let client = reqwest::Client::new();
        let webhook = format!("http://{}/v1/stripe/webhook", running.addr);
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let mut sent_at = HashMap::new();
        let mut answers = tokio::task::JoinSet::new();
        let started = Instant::now();
        for (n, click) in clicks.into_iter().enumerate() {
            let permit = slots.clone().acquire_owned().await.unwrap();
            let id = format!("evt_bench_{n}");
            let now = running.state.clock.now_ms() / 1000;
            let body = json!({
                "id": id, "object": "event", "type": "checkout.session.completed",
                "created": now, "livemode": false,
                "data": {"object": {"id": format!("cs_{n}"), "mode": "payment",
                    "client_reference_id": click, "customer": format!("cus_{n}"),
                    "payment_intent": format!("pi_{n}"), "amount_total": 10_000,
                    "currency": "eur", "metadata": {}}},
            })
            .to_string();
            let signature = format!(
                "t={now},v1={}",
                switchyard::stripe::signature::sign(SECRET, now, body.as_bytes())
            );
            let request = client
                .post(&webhook)
                .header("stripe-signature", signature)
                .header("content-type", "application/json")
                .body(body);
            sent_at.insert(id, Instant::now());
            answers.spawn(async move {
                let sent = Instant::now();
                let status = request.send().await.unwrap().status();
                drop(permit);
                assert_eq!(status, 200);
                sent.elapsed()
            });
        }
        let mut answer_times: Vec<Duration> = answers.join_all().await;
        let accepted = EVENTS as f64 / started.elapsed().as_secs_f64();
        let mut end_to_end = Vec::with_capacity(EVENTS);
        while end_to_end.len() < EVENTS {
            let (event_id, at) = tokio::time::timeout(Duration::from_secs(120), arrivals.recv())
                .await
                .expect("every commission.accrued arrives")
                .unwrap();
            if let Some(sent) = sent_at.remove(&event_id) {
                end_to_end.push(at - sent);
            }
        }
        let converted = EVENTS as f64 / started.elapsed().as_secs_f64();
        println!("\n== {name} ({EVENTS} events, {CONCURRENCY} concurrent senders) ==");
        println!("queue enqueue (reference) {enqueue_rate:>7.0} jobs/s");
        println!(
            "Stripe events accepted    {accepted:>7.0} events/s  {:>4.0}% of enqueue   answer p50 {:>6.2} ms   p99 {:>6.2} ms",
            100.0 * accepted / enqueue_rate,
            percentile(&mut answer_times, 0.50),
            percentile(&mut answer_times, 0.99),
        );
        println!(
            "commission.accrued        {converted:>7.0} events/s  event->webhook p50 {:>8.2} ms   p99 {:>8.2} ms",
            percentile(&mut end_to_end, 0.50),
            percentile(&mut end_to_end, 0.99),
        );
        running.shutdown().await.unwrap();
        if let Some((server, name)) = cleanup {
            admin(&server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
        }
    }
}
