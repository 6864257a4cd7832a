//! A partner program to convert on, for the conversion benchmarks (`events`, `stripe`): a
//! server, a receiver of `commission.accrued`, clicks to attribute to, and percentiles.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use clap::Parser as _;
use serde_json::{json, Value};
use switchyard::app::{self, Running};
use switchyard::clock::Clock;
use tokio::sync::mpsc;

/// The engines to run on: SQLite in `dir`, and PostgreSQL in a database made for this run when
/// `SWITCHYARD_BENCH_DATABASE_URL` names a server. Each with its URL and, for PostgreSQL, the
/// (server, database) to drop afterwards.
pub async fn engines(
    bench: &str,
    dir: &std::path::Path,
) -> Vec<(&'static str, String, Option<(String, String)>)> {
    let mut engines = vec![(
        "SQLite",
        format!("sqlite:{}", dir.join("bench.db").display()),
        None,
    )];
    if let Ok(server) = std::env::var("SWITCHYARD_BENCH_DATABASE_URL") {
        let name = format!("sy_bench_{bench}_{}", std::process::id());
        admin(&server, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        engines.push(("PostgreSQL", url.to_string(), Some((server, name))));
    }
    engines
}

pub fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).max(1);
    samples[rank - 1].as_secs_f64() * 1000.0
}

pub async fn admin(server: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

/// A server on `url` with the limits out of the way, and `extra` options.
pub async fn start(url: &str, extra: &[&str]) -> Running {
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    args.push("serve");
    let config = switchyard::cli::Cli::try_parse_from(args).unwrap().config;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    app::start(config, Clock::default(), listener)
        .await
        .unwrap()
}

/// The receiver: reports the `event_id` of every `commission.accrued` it gets, and when.
pub async fn receiver() -> (u16, mpsc::UnboundedReceiver<(String, Instant)>) {
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

/// A subscription to `commission.accrued` (to `port`), a partner, a campaign and a link;
/// returns the link's URL (`/r/{key}` on the server).
pub async fn linked(running: &Running, port: u16) -> String {
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
    format!("{base}/r/{}", link["key"].as_str().unwrap())
}

/// Follows `link` once; returns the click id the destination received.
pub async fn click(client: &reqwest::Client, link: &str) -> String {
    let response = client.get(link).send().await.unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "click_id")
        .unwrap()
        .1
        .into_owned()
}

/// [`linked`], and `count` clicks on the link; returns the click ids.
pub async fn setup(running: &Running, port: u16, count: usize) -> Vec<String> {
    let follow = linked(running, port).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut clicks = Vec::with_capacity(count);
    for _ in 0..count {
        clicks.push(click(&client, &follow).await);
    }
    clicks
}
