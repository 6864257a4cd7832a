//! The partner Network: an admin connects the program once, partners flow to the Network from
//! a durable outbox (an outage loses nothing, the newest state wins), and the Network's own
//! partners earn at their terms. The Network is a local fake answering as
//! `docs/network-protocol.md` says.

mod common;

use std::time::Duration;

use common::network::FakeNetwork;
use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    connecting_keeps_the_vendor_token_on_the_server,
    partners_are_mirrored_as_auto_enroll_says_and_revocations_always,
    an_outage_loses_nothing_and_the_newest_state_wins,
    backfill_counts_what_the_network_knew_and_can_run_twice,
    network_partners_earn_at_their_terms_and_their_payouts_are_reported,
    admin_pages_are_proxied_and_an_unreachable_network_is_503,
);

/// Connects the program to `fake`: signup, then the mailed token. Returns the federation key.
async fn connect(srv: &TestServer, fake: &FakeNetwork, auto_enroll: bool) -> String {
    let (status, pending) = srv
        .post(
            "/v1/network/connect",
            &srv.admin_key,
            json!({"network_url": fake.url, "contact_email": "Ops@Example.com",
                   "display_name": "Acme", "auto_enroll": auto_enroll}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    assert_eq!(pending["status"], "pending");
    let (token, signup) = fake.mailed();
    let (status, connected) = srv
        .post(
            "/v1/network/connect/complete",
            &srv.admin_key,
            json!({"token": token}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{connected}");
    assert_eq!(connected["status"], "connected");
    signup["api_key"].as_str().unwrap().to_owned()
}

/// Waits until the Network applied a state of `partner` with `status`; returns it.
async fn arrived(fake: &FakeNetwork, partner: &str, status: &str) -> Value {
    for _ in 0..300 {
        if let Some(state) = fake.partner(partner).filter(|p| p["status"] == status) {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{partner} never arrived {status}: {:?}",
        fake.received(partner)
    );
}

async fn network(srv: &TestServer) -> Value {
    let (status, shown) = srv.get("/v1/network", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    shown
}

async fn upsert_jobs(srv: &TestServer) -> Vec<(String, String, i64, i64)> {
    let db = srv.inspect().await;
    let rows = sqlx::query_as(
        "SELECT id, state, attempt, run_at FROM jobs WHERE kind = 'network.upsert' ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    db.close().await;
    rows
}

/// Waits until no upsert is running or untried: each is done, or failed and waits to retry.
async fn quiet(srv: &TestServer) {
    for _ in 0..300 {
        let jobs = upsert_jobs(srv).await;
        if jobs.iter().all(|(_, state, attempt, _)| {
            state == "done" || (state == "available" && *attempt >= 1)
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upserts never settled: {:?}", upsert_jobs(srv).await);
}

/// Waits until `count` upserts have had their first attempt and wait for their retry.
async fn retrying(srv: &TestServer, count: usize) -> Vec<(String, String, i64, i64)> {
    for _ in 0..300 {
        let jobs = upsert_jobs(srv).await;
        let waiting = jobs
            .iter()
            .filter(|(_, state, attempt, _)| state == "available" && *attempt == 1)
            .count();
        if waiting == count {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upserts never failed: {:?}", upsert_jobs(srv).await);
}

async fn connecting_keeps_the_vendor_token_on_the_server(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--public-url", "https://partners.acme.com"]).await;
    let fake = FakeNetwork::start().await;
    assert_eq!(network(&srv).await["status"], "none");
    let (status, pending) = srv
        .post(
            "/v1/network/connect",
            &srv.admin_key,
            json!({"network_url": fake.url, "contact_email": "Ops@Example.com",
                   "display_name": "Acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    let mut answers = vec![pending.clone()];

    // The signup carries this instance's URL and a scoped key that works, and no more.
    let (token, signup) = fake.mailed();
    assert_eq!(signup["instance_url"], "https://partners.acme.com");
    assert_eq!(signup["contact_email"], "ops@example.com");
    assert_eq!(signup["display_name"], "Acme");
    let federation = signup["api_key"].as_str().unwrap();
    let (status, me) = srv.get("/v1/whoami", federation).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["scopes"], json!(["partners:read", "partners:write"]));
    assert_eq!(pending["federation_key_id"], me["key_id"]);
    let refused = srv.get("/v1/commissions", federation).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_scope");

    // A wrong token is the Network's refusal, passed on; the right one connects.
    let wrong = srv
        .post(
            "/v1/network/connect/complete",
            &srv.admin_key,
            json!({"token": "otk_nope"}),
        )
        .await;
    let problem = assert_problem(&wrong, StatusCode::BAD_REQUEST, "network_error");
    assert_eq!(problem["detail"], "The token is not valid.");
    answers.push(wrong.1);
    let (status, connected) = srv
        .post(
            "/v1/network/connect/complete",
            &srv.admin_key,
            json!({"token": token}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{connected}");
    assert_eq!(connected["vendor_id"], "vnd_8fK2");
    assert_eq!(connected["auto_enroll"], true);
    answers.push(connected);
    let again = srv
        .post(
            "/v1/network/connect/complete",
            &srv.admin_key,
            json!({"token": token}),
        )
        .await;
    assert_problem(&again, StatusCode::CONFLICT, "network_not_pending");
    let twice = srv
        .post(
            "/v1/network/connect",
            &srv.admin_key,
            json!({"network_url": fake.url, "contact_email": "ops@example.com",
                   "display_name": "Acme"}),
        )
        .await;
    assert_problem(&twice, StatusCode::CONFLICT, "network_already_connected");
    answers.push(twice.1);
    answers.push(network(&srv).await);

    // The vendor token is in no answer and not in clear in the database.
    let vendor_token = fake.vendor_token().unwrap();
    for answer in &answers {
        assert!(!answer.to_string().contains(&vendor_token), "{answer}");
    }
    let db = srv.inspect().await;
    let (sealed,): (String,) =
        sqlx::query_as("SELECT vendor_token_sealed FROM network_connections")
            .fetch_one(db.pool())
            .await
            .unwrap();
    db.close().await;
    assert!(sealed.starts_with("v1:") && !sealed.contains(&vendor_token));

    // Calls made with it: the heartbeat, as the periodic job runs it (every tenant visited,
    // each connection read in its tenant's scope).
    let state = &srv.running.as_ref().unwrap().state;
    let job = job_queue::NewJob::new(switchyard::network::HEARTBEAT, json!({}));
    state.queue.enqueue(job).await.unwrap();
    for _ in 0..200 {
        if fake.heartbeats() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.heartbeats(), 1);
    let beat = fake.requests().into_iter().last().unwrap();
    assert_eq!(beat.path, "/vendors/me/heartbeat");
    assert_eq!(beat.authorization, Some(format!("Bearer {vendor_token}")));

    // Disconnecting revokes the federation key at once.
    let (status, _) = srv.delete("/v1/network", &srv.admin_key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked = srv.get("/v1/partners", federation).await;
    assert_problem(&revoked, StatusCode::UNAUTHORIZED, "key_revoked");
    assert_eq!(network(&srv).await["status"], "none");
    let gone = srv.delete("/v1/network", &srv.admin_key).await;
    assert_problem(&gone, StatusCode::NOT_FOUND, "network_not_connected");
    let invalid = srv
        .post(
            "/v1/network/connect",
            &srv.admin_key,
            json!({"network_url": "ftp://x", "contact_email": "nope", "display_name": ""}),
        )
        .await;
    let problem = assert_problem(
        &invalid,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3, "{problem}");
    srv.stop().await;
}

async fn partners_are_mirrored_as_auto_enroll_says_and_revocations_always(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let fake = FakeNetwork::start().await;
    connect(&srv, &fake, true).await;
    let ada = srv.partner("ada@example.com").await;
    let ada_id = ada["id"].as_str().unwrap();
    let sent = arrived(&fake, ada_id, "active").await;
    assert_eq!(sent["email"], "ada@example.com");
    assert_eq!(sent["source"], "direct");
    // The creator id the Network answered is stamped on the partner.
    let mut stamped = Value::Null;
    for _ in 0..100 {
        stamped = srv
            .get(&format!("/v1/partners/{ada_id}"), &srv.admin_key)
            .await
            .1;
        if stamped["network_creator_id"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stamped["network_creator_id"], "cr_1", "{stamped}");

    // Auto-enroll off: new partners stay here; a revocation is mirrored anyway.
    let (status, patched) = srv
        .patch("/v1/network", &srv.admin_key, json!({"auto_enroll": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["auto_enroll"], false);
    let grace = srv.partner("grace@example.com").await;
    let grace_id = grace["id"].as_str().unwrap();
    let (status, _) = srv
        .post(
            &format!("/v1/partners/{grace_id}/revoke"),
            &srv.admin_key,
            json!({"reason": "fraud"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    arrived(&fake, grace_id, "revoked").await;
    assert_eq!(fake.received(grace_id).len(), 1, "not sent when created");
    let (status, _) = srv
        .post(
            &format!("/v1/partners/{ada_id}/revoke"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    arrived(&fake, ada_id, "revoked").await;

    // A revocation queued during an outage, then an edit: the edit does not hide the
    // revocation, it travels with it.
    fake.set_down(true);
    let lin = srv.partner("lin@example.com").await;
    let lin_id = lin["id"].as_str().unwrap().to_owned();
    srv.clock.advance(Duration::from_secs(1));
    let (status, _) = srv
        .post(
            &format!("/v1/partners/{lin_id}/revoke"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    srv.clock.advance(Duration::from_secs(1));
    let (status, _) = srv
        .patch(
            &format!("/v1/partners/{lin_id}"),
            &srv.admin_key,
            json!({"name": "Lin W."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    fake.set_down(false);
    let mut applied = None;
    for _ in 0..100 {
        srv.clock.advance(Duration::from_secs(15));
        tokio::time::sleep(Duration::from_millis(50)).await;
        applied = fake.partner(&lin_id).filter(|p| p["name"] == "Lin W.");
        if applied.is_some() {
            break;
        }
    }
    let applied = applied.expect("the edited revocation arrived");
    assert_eq!(applied["status"], "revoked");
    srv.stop().await;
}

async fn an_outage_loses_nothing_and_the_newest_state_wins(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let fake = FakeNetwork::start().await;
    connect(&srv, &fake, true).await;
    fake.set_down(true);
    let ada = srv.partner("ada@example.com").await;
    let ada_id = ada["id"].as_str().unwrap().to_owned();
    // The first attempt fails; its retry is stored 10 s (with 20% jitter) later.
    let jobs = retrying(&srv, 1).await;
    let (_, state, attempt, run_at) = jobs[0].clone();
    assert_eq!((state.as_str(), attempt), ("available", 1), "{jobs:?}");
    let wait = run_at - srv.clock.now_ms();
    assert!((7_000..=12_000).contains(&wait), "retry in {wait} ms");
    let shown = network(&srv).await;
    assert_eq!(shown["outbox_depth"], 1);
    assert!(
        shown["last_error"].as_str().unwrap().contains("503"),
        "{shown}"
    );

    // More changes while the Network is down: revoked, then reinstated.
    for action in ["revoke", "reinstate"] {
        srv.clock.advance(Duration::from_secs(1));
        let (status, _) = srv
            .post(
                &format!("/v1/partners/{ada_id}/{action}"),
                &srv.admin_key,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Each change waits for its retry, unless a newer one superseded it already.
    let depth = network(&srv).await["outbox_depth"].as_i64().unwrap();
    assert!((1..=3).contains(&depth), "{depth}");
    quiet(&srv).await;

    // Back up: the retries run, the superseded ones send nothing, the newest state arrives.
    fake.set_down(false);
    let mut applied = None;
    for _ in 0..100 {
        srv.clock.advance(Duration::from_secs(15));
        tokio::time::sleep(Duration::from_millis(50)).await;
        applied = fake.partner(&ada_id);
        if applied.is_some() {
            break;
        }
    }
    let applied = applied.expect("the newest state arrived");
    assert_eq!(applied["status"], "active");
    for _ in 0..200 {
        if network(&srv).await["outbox_depth"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(network(&srv).await["outbox_depth"], 0);
    let received = fake.received(&ada_id);
    let (_, latest) = srv
        .get(&format!("/v1/partners/{ada_id}"), &srv.admin_key)
        .await;
    let revision = applied["revision"].as_i64().unwrap();
    assert_eq!(
        received.last().unwrap()["revision"].as_i64(),
        Some(revision),
        "newest last: {received:?}"
    );
    assert!(received
        .iter()
        .all(|r| r["revision"].as_i64() <= Some(revision)));
    assert_eq!(applied["status"], latest["status"]);
    assert!(network(&srv).await["last_error"].is_null());

    // Down for a day: the upsert dies, visibly, and a replay sends it.
    fake.set_down(true);
    srv.clock.advance(Duration::from_secs(1));
    let grace = srv.partner("grace@example.com").await;
    let grace_id = grace["id"].as_str().unwrap().to_owned();
    let mut dead = None;
    for _ in 0..40 {
        let jobs = upsert_jobs(&srv).await;
        if let Some((id, _, _, _)) = jobs.iter().find(|(_, state, _, _)| state == "dead") {
            dead = Some(id.clone());
            break;
        }
        srv.clock.advance(Duration::from_secs(10 * 3600));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = dead.expect("the upsert ran out of retries");
    let (_, _, attempts, _) = upsert_jobs(&srv)
        .await
        .into_iter()
        .find(|(id, _, _, _)| *id == dead)
        .unwrap();
    assert_eq!(attempts, 12);
    let shown = network(&srv).await;
    assert_eq!(
        (
            shown["outbox_depth"].as_i64(),
            shown["outbox_dead"].as_i64()
        ),
        (Some(0), Some(1))
    );
    fake.set_down(false);
    let (status, _) = srv
        .post(
            &format!("/v1/queue/jobs/{dead}/replay"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status.as_u16() / 100, 2);
    arrived(&fake, &grace_id, "active").await;
    srv.stop().await;
}

async fn backfill_counts_what_the_network_knew_and_can_run_twice(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let fake = FakeNetwork::start().await;
    for n in 0..130 {
        srv.partner(&format!("p{n}@example.com")).await;
    }
    fake.knows_creator("p7@example.com");
    fake.knows_creator("p99@example.com");
    connect(&srv, &fake, false).await;
    let (status, first) = srv
        .post("/v1/network/backfill", &srv.admin_key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first, json!({"sent": 128, "already_known": 2, "failed": 0}));
    let batches = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/vendors/backfill-partners")
        .count();
    assert_eq!(batches, 2, "batches of 100");
    let (_, second) = srv
        .post("/v1/network/backfill", &srv.admin_key, json!({}))
        .await;
    assert_eq!(
        second,
        json!({"sent": 0, "already_known": 130, "failed": 0})
    );
    assert_eq!(fake.known(), 130);
    let (_, listed) = srv
        .get("/v1/partners?email=p7@example.com", &srv.admin_key)
        .await;
    assert_eq!(listed["data"][0]["network_creator_id"], "cr_elsewhere_1");
    srv.stop().await;
}

async fn network_partners_earn_at_their_terms_and_their_payouts_are_reported(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let fake = FakeNetwork::start().await;
    let federation = connect(&srv, &fake, true).await;
    let campaign = srv
        .campaign(json!({"commission": {"type": "percent", "bps": 1000}, "holdback_days": 0}))
        .await;
    // The Network creates its creator as a partner, with the terms agreed there, and a link.
    let (status, partner) = srv
        .post(
            "/v1/partners",
            &federation,
            json!({"email": "creator@example.com", "name": "Creator", "source": "network",
                   "network_partner_id": "cr_51Hq",
                   "commission": {"type": "percent", "bps": 2000}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{partner}");
    assert_eq!(partner["network_creator_id"], "cr_51Hq");
    let id = partner["id"].as_str().unwrap();
    let approved: Vec<Value> = srv
        .messages()
        .await
        .into_iter()
        .filter(|(t, _)| t == "partnership.approved")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0]["partner_id"], id);
    let (_, crm) = srv
        .mint(json!({"name": "crm", "scopes": ["partners:write"]}))
        .await;
    // A key that is not the Network's cannot set terms at creation, whatever source it
    // claims, nor make links.
    for source in ["direct", "network"] {
        let refused = srv
            .post(
                "/v1/partners",
                &crm,
                json!({"email": "x@example.com", "name": "X", "source": source,
                       "network_partner_id": (source == "network").then_some("cr_x"),
                       "commission": {"type": "percent", "bps": 9000}}),
            )
            .await;
        assert_problem(
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let refused = srv
        .post(
            &format!("/v1/partners/{id}/links"),
            &crm,
            json!({"campaign_id": campaign["id"]}),
        )
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_scope");
    let (status, link) = srv
        .post(
            &format!("/v1/partners/{id}/links"),
            &federation,
            json!({"campaign_id": campaign["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let (_, location) = srv
        .click(&format!("/r/{}", link["key"].as_str().unwrap()), &[])
        .await;
    let click = url::Url::parse(&location.unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "click_id")
        .unwrap()
        .1
        .into_owned();
    let (status, converted) = srv
        .post(
            "/v1/events",
            &srv.admin_key,
            json!({"event_id": "o1", "type": "purchase", "click_id": click,
                   "amount": 10_000, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{converted}");
    let (_, commission) = srv
        .get(
            &format!(
                "/v1/commissions/{}",
                converted["commission_id"].as_str().unwrap()
            ),
            &srv.admin_key,
        )
        .await;
    assert_eq!(
        commission["amount"], 2000,
        "the Network's 20%, not the campaign's 10%"
    );

    // Paid by hand, then reported: once, and the mark moves only when the Network accepted.
    let state = &srv.running.as_ref().unwrap().state;
    switchyard::commissions::approve_matured(state)
        .await
        .unwrap();
    let (status, _) = srv
        .put(
            "/v1/payouts/settings",
            &srv.admin_key,
            json!({"method": "manual"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, run) = srv.post("/v1/payouts/run", &srv.admin_key, json!({})).await;
    let payout = run["payouts"][0]["payout_id"].as_str().unwrap();
    srv.clock.advance(Duration::from_secs(60));
    let (status, _) = srv
        .post(
            &format!("/v1/payouts/{payout}/mark-paid"),
            &srv.admin_key,
            json!({"reference": "wire 1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mark = network(&srv).await["payouts_reported_until"].clone();
    fake.refuse_reports(true);
    srv.clock.advance(Duration::from_secs(60));
    let until = srv.clock.now_ms();
    assert!(
        switchyard::network::report_payouts(state, &srv.tenant_id, until)
            .await
            .is_err()
    );
    assert_eq!(
        network(&srv).await["payouts_reported_until"],
        mark,
        "not advanced"
    );
    fake.refuse_reports(false);
    // The retry, an hour later, sends the window that failed, unchanged.
    srv.clock.advance(Duration::from_secs(3600));
    let later = srv.clock.now_ms();
    let sent = switchyard::network::report_payouts(state, &srv.tenant_id, later)
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    let reports = fake.reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["until"], switchyard::clock::rfc3339(until));
    assert_eq!(
        (
            reports[0]["amount"].as_i64(),
            reports[0]["currency"].as_str()
        ),
        (Some(2000), Some("EUR"))
    );
    assert_eq!(reports[0]["since"], mark);
    let advanced = network(&srv).await["payouts_reported_until"].clone();
    assert_ne!(advanced, mark);
    // Nothing paid since: the mark advances without a call.
    srv.clock.advance(Duration::from_secs(3600));
    let nothing = switchyard::network::report_payouts(state, &srv.tenant_id, srv.clock.now_ms())
        .await
        .unwrap();
    assert!(nothing.is_empty());
    assert_eq!(fake.reports().len(), 1);
    assert_ne!(network(&srv).await["payouts_reported_until"], advanced);
    srv.stop().await;
}

async fn admin_pages_are_proxied_and_an_unreachable_network_is_503(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let fake = FakeNetwork::start().await;
    let not_yet = srv.get("/v1/network/offerings", &srv.admin_key).await;
    assert_problem(&not_yet, StatusCode::CONFLICT, "network_not_connected");
    connect(&srv, &fake, true).await;
    let (status, offerings) = srv.get("/v1/network/offerings", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(offerings["data"][0]["id"], "off_1");
    let (status, created) = srv
        .post(
            "/v1/network/offerings",
            &srv.admin_key,
            json!({"title": "Summer"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["title"], "Summer");
    let (status, patched) = srv
        .patch(
            "/v1/network/offerings/off_1",
            &srv.admin_key,
            json!({"status": "paused"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["status"], "paused");
    let (status, _) = srv
        .delete("/v1/network/offerings/off_1", &srv.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, requests) = srv
        .get("/v1/network/requests?status=pending", &srv.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(requests["data"][0]["id"], "req_1");
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.path == "/vendors/me/requests?status=pending"));
    let (status, approved) = srv
        .post(
            "/v1/network/requests/req_1/approve",
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(approved["status"], "approved");
    let missing = srv
        .post(
            "/v1/network/requests/req_404/reject",
            &srv.admin_key,
            json!({}),
        )
        .await;
    let problem = assert_problem(&missing, StatusCode::NOT_FOUND, "network_error");
    assert_eq!(problem["detail"], "No such request.");
    let bogus = srv
        .get("/v1/network/requests?status=bogus", &srv.admin_key)
        .await;
    assert_problem(
        &bogus,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    // A Network answering 5xx is a 502; one that cannot be reached is a 503.
    fake.set_down(true);
    let failing = srv.get("/v1/network/offerings", &srv.admin_key).await;
    assert_problem(&failing, StatusCode::BAD_GATEWAY, "network_error");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let db = srv.inspect().await;
    sqlx::query("UPDATE network_connections SET network_url = $1")
        .bind(format!("http://127.0.0.1:{closed}"))
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
    let unreachable = srv.get("/v1/network/offerings", &srv.admin_key).await;
    assert_problem(
        &unreachable,
        StatusCode::SERVICE_UNAVAILABLE,
        "network_unreachable",
    );
    // Only admins reach these pages.
    let (_, reader) = srv
        .mint(json!({"name": "r", "scopes": ["partners:read"]}))
        .await;
    let refused = srv.get("/v1/network/offerings", &reader).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_scope");
    srv.stop().await;
}
