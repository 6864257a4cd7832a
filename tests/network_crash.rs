//! The server binary is SIGKILLed with partner upserts queued while the Network is down, and
//! started again once it is back: every partner's newest state arrives, and the vendor token
//! appears in no log line (the server logs at debug level throughout).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::network::FakeNetwork;
use common::process::{free_port, key_in, switchyard, terminate, wait_ready};
use common::{Engine, TestDb};
use serde_json::{json, Value};

on_both_engines!(a_killed_server_sends_every_queued_upsert_after_restart);

const PARTNERS: usize = 12;

type Logs = Arc<Mutex<Vec<String>>>;

/// The binary, its output kept line by line in `logs`.
fn serve(db: &TestDb, port: u16, logs: &Logs) -> Child {
    let mut child = switchyard(db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SWITCHYARD_OUTBOUND_ALLOW", "127.0.0.0/8")
        .env("SWITCHYARD_JOB_LEASE_SECS", "2")
        .env("SWITCHYARD_PAYOUT_SCHEDULE", "off")
        .env(
            "SWITCHYARD_LOG",
            "debug,sqlx=warn,hyper=warn,reqwest=warn,h2=warn",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                logs.lock().unwrap().push(line);
            }
        });
    }
    child
}

async fn call(client: &reqwest::Client, base: &str, key: &str, path: &str, body: Value) -> Value {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

async fn a_killed_server_sends_every_queued_upsert_after_restart(engine: Engine) {
    let db = TestDb::create(engine).await;
    let fake = FakeNetwork::start().await;
    let logs: Logs = Arc::default();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(&db, port, &logs);
    let deadline = Instant::now() + Duration::from_secs(30);
    let admin = loop {
        if let Some(key) = logs.lock().unwrap().iter().find_map(|l| key_in(l)) {
            break key;
        }
        assert!(Instant::now() < deadline, "no first-start key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    call(
        &client,
        &base,
        &admin,
        "/v1/network/connect",
        json!({"network_url": fake.url, "contact_email": "ops@example.com",
               "display_name": "Acme"}),
    )
    .await;
    let (token, _) = fake.mailed();
    call(
        &client,
        &base,
        &admin,
        "/v1/network/connect/complete",
        json!({"token": token}),
    )
    .await;

    // The Network goes down; partners are created and some revoked: upserts queue up.
    fake.set_down(true);
    let mut expected = Vec::new();
    for n in 0..PARTNERS {
        let partner = call(
            &client,
            &base,
            &admin,
            "/v1/partners",
            json!({"email": format!("p{n}@example.com"), "name": format!("P{n}")}),
        )
        .await;
        let id = partner["id"].as_str().unwrap().to_owned();
        let status = if n % 3 == 0 {
            call(
                &client,
                &base,
                &admin,
                &format!("/v1/partners/{id}/revoke"),
                json!({}),
            )
            .await;
            "revoked"
        } else {
            "active"
        };
        expected.push((id, status));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill")
        .args(["-KILL", &server.id().to_string()])
        .status()
        .unwrap();
    server.wait().unwrap();
    assert_eq!(
        fake.known(),
        0,
        "nothing reached the Network before the kill"
    );

    fake.set_down(false);
    let mut restarted = serve(&db, port, &logs);
    wait_ready(&base).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let missing: Vec<&(String, &str)> = expected
            .iter()
            .filter(|(id, status)| fake.partner(id).is_none_or(|p| p["status"] != *status))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never arrived: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent: usize = expected.iter().map(|(id, _)| fake.received(id).len()).sum();
    println!(
        "partners {PARTNERS}, states applied {}, upserts received {sent}",
        fake.known()
    );
    assert!(terminate(&mut restarted).success());

    let vendor_token = fake.vendor_token().unwrap();
    let logs = logs.lock().unwrap();
    assert!(logs.len() > 20, "the server logged at debug level");
    assert!(
        logs.iter().all(|line| !line.contains(&vendor_token)),
        "the vendor token was logged"
    );
}
