//! The server process is killed with SIGKILL in the middle of fanning messages out to five
//! endpoints; after a restart every accepted message reaches every subscribed endpoint at least
//! once. The restarted node (same identity: host and port) takes back the jobs its previous
//! run held at once, long before their leases would run out.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::HeaderMap;
use common::process::{free_port, key_in, switchyard, terminate, wait_ready};
use common::{Engine, TestDb};
use serde_json::json;
use switchyard::clock::Clock;
use switchyard::db::Db;

const MESSAGES: usize = 60;
const ENDPOINTS: usize = 5;

on_both_engines!(a_killed_server_delivers_every_accepted_message_after_restart);

type Log = Arc<Mutex<Vec<(usize, String)>>>;

/// Five endpoints on one local receiver; each delivery takes 200 ms to answer, so the fan-out
/// is still under way when the server is killed.
async fn receiver() -> (u16, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let app = axum::Router::new().route(
        "/hook/{n}",
        axum::routing::post(move |Path(n): Path<usize>, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let id = headers["webhook-id"].to_str().unwrap().to_owned();
                seen.lock().unwrap().push((n, id));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, log)
}

fn serve(db: &TestDb, port: u16) -> Child {
    switchyard(db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SWITCHYARD_OUTBOUND_ALLOW", "127.0.0.0/8")
        // A long lease: the restarted node takes its previous run's jobs back at start, not
        // when their leases run out.
        .env("SWITCHYARD_JOB_LEASE_SECS", "60")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn distinct(log: &Log) -> BTreeSet<(usize, String)> {
    log.lock().unwrap().iter().cloned().collect()
}

async fn a_killed_server_delivers_every_accepted_message_after_restart(engine: Engine) {
    let db = TestDb::create(engine).await;
    let (receiver_port, log) = receiver().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(&db, port);
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let admin = loop {
        let line = lines.next().expect("the first-start notice").unwrap();
        if let Some(key) = key_in(&line) {
            break key;
        }
    };
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    for n in 0..ENDPOINTS {
        let url = format!("http://127.0.0.1:{receiver_port}/hook/{n}");
        let created = client
            .post(format!("{base}/v1/webhooks"))
            .bearer_auth(&admin)
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    }
    let me: serde_json::Value = client
        .get(format!("{base}/v1/whoami"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant = me["tenant_id"].as_str().unwrap();

    // Messages are accepted the way every slice accepts them: emitted in a committed transaction.
    let store = Db::connect(&db.url, 2).await.unwrap();
    let clock = Clock::default();
    let queue = job_queue::Queue::new(store.writer().clone(), store.dialect().queue_engine(), {
        let clock = clock.clone();
        Arc::new(move || clock.now_ms())
    });
    let mut accepted = Vec::new();
    for n in 0..MESSAGES {
        let mut tx = store.write(tenant).await.unwrap();
        let mut handoff = queue.handoff();
        let id = switchyard::outbox::emit(
            &mut tx,
            &mut handoff,
            &clock,
            tenant,
            "partner.created",
            json!({ "n": n }),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        handoff.start(); // No worker in this process: the server's workers claim it.
        accepted.push(id);
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct(&log).len() < 40 {
        assert!(Instant::now() < deadline, "deliveries never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Command::new("kill")
        .args(["-KILL", &server.id().to_string()])
        .status()
        .unwrap();
    server.wait().unwrap();
    let before_restart = distinct(&log).len();
    assert!(
        before_restart < MESSAGES * ENDPOINTS,
        "the kill landed mid-fan-out"
    );

    let restarted_at = Instant::now();
    let mut restarted = serve(&db, port);
    wait_ready(&base).await;
    let expected: BTreeSet<(usize, String)> = (0..ENDPOINTS)
        .flat_map(|n| accepted.iter().map(move |id| (n, id.clone())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !distinct(&log).is_superset(&expected) {
        assert!(
            Instant::now() < deadline,
            "missing after restart: {} of {}",
            expected.difference(&distinct(&log)).count(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = restarted_at.elapsed();
    assert!(terminate(&mut restarted).success());

    let mut copies: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for delivery in log.lock().unwrap().iter() {
        *copies.entry(delivery.clone()).or_default() += 1;
    }
    let twice = copies.values().filter(|c| **c > 1).count();
    println!(
        "{} deliveries before the kill, all {} after the restart; {twice} arrived twice (at least once); \
         restart to last delivery {:.1} s",
        before_restart,
        expected.len(),
        recovered.as_secs_f64()
    );
    // The goal is under 5 s; the bound leaves room for a slow machine, and is far below the
    // 60 s lease a takeover would otherwise wait for.
    assert!(
        recovered < Duration::from_secs(20),
        "recovered in {recovered:?}"
    );
    store.close().await;
}
