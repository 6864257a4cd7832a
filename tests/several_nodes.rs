//! Several nodes on one PostgreSQL: two server processes share a burst of partner changes (each
//! announced to a webhook endpoint); one is SIGKILLed mid-burst. Every change a node accepted
//! is delivered at least once (duplicates are counted and printed), and the survivor takes over
//! the dead node's leased jobs within the lease. (That each periodic window runs once across
//! schedulers is `each_periodic_window_runs_once_across_schedulers` in `tests/queue.rs`.)
//! PostgreSQL only: several processes sharing the work is what PostgreSQL mode is for.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::process::{free_port, key_in, switchyard, terminate, wait_ready};
use common::{Engine, TestDb};
use serde_json::{json, Value};

const CHANGES: usize = 120;
const LEASE_SECS: u64 = 3;

fn serve(db: &TestDb, port: u16) -> Child {
    switchyard(db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SWITCHYARD_OUTBOUND_ALLOW", "127.0.0.0/8")
        .env("SWITCHYARD_JOB_LEASE_SECS", LEASE_SECS.to_string())
        .env("SWITCHYARD_RATE_LIMIT_PER_KEY", "100000")
        .env("SWITCHYARD_PAYOUT_SCHEDULE", "off")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A receiver that takes 100 ms per delivery and keeps the partner id of each, in order.
async fn receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let log = log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Some(id) = message["data"]["partner_id"].as_str() {
                    log.lock().unwrap().push(id.to_owned());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(switchyard_pg_tests),
    ignore = "several nodes on one PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL"
)]
async fn a_node_killed_mid_burst_loses_nothing_its_peer_takes_over() {
    let db = TestDb::create(Engine::Postgres).await;
    let (hook, seen) = receiver().await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = serve(&db, port_a);
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    let admin = loop {
        let line = lines.next().expect("the first-start notice").unwrap();
        if let Some(key) = key_in(&line) {
            break key;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let b = serve(&db, port_b);
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    wait_ready(&base_a).await;
    wait_ready(&base_b).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base_a}/v1/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({"url": format!("http://127.0.0.1:{hook}/hook"),
                      "event_types": ["partner.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // The burst, alternating between the nodes; B is killed a third of the way through.
    let mut accepted = BTreeSet::new();
    let mut killed_at = None;
    let mut b = Some(b);
    for n in 0..CHANGES {
        if n == CHANGES / 3 {
            let mut node = b.take().unwrap();
            Command::new("kill")
                .args(["-KILL", &node.id().to_string()])
                .status()
                .unwrap();
            node.wait().unwrap();
            killed_at = Some(Instant::now());
        }
        let base = if n % 2 == 0 { &base_a } else { &base_b };
        let sent = client
            .post(format!("{base}/v1/partners"))
            .bearer_auth(&admin)
            .json(&json!({"email": format!("p{n}@example.com"), "name": format!("P{n}")}))
            .send()
            .await;
        if let Ok(response) = sent {
            if response.status() == 201 {
                let partner: Value = response.json().await.unwrap();
                accepted.insert(partner["id"].as_str().unwrap().to_owned());
            }
        }
    }
    let killed_at = killed_at.unwrap();
    assert!(accepted.len() > CHANGES / 2, "{} accepted", accepted.len());

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: BTreeSet<String> = seen.lock().unwrap().iter().cloned().collect();
        if delivered.is_superset(&accepted) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} accepted changes never delivered",
            accepted.difference(&delivered).count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = killed_at.elapsed();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for id in seen.lock().unwrap().iter() {
        *copies.entry(id.clone()).or_default() += 1;
    }
    let twice = copies.values().filter(|c| **c > 1).count();
    println!(
        "accepted {}, delivered {} (at least once; {twice} twice), kill to last delivery {:.1} s \
         with a {LEASE_SECS} s lease",
        accepted.len(),
        copies.len(),
        recovered.as_secs_f64()
    );
    // The burst itself takes a while after the kill; the dead node's jobs wait at most their
    // lease (and the reaper's next pass) on top of that.
    assert!(recovered < Duration::from_secs(30), "{recovered:?}");

    assert!(terminate(&mut a).success());
}
