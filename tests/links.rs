//! Share links and the click router: keys, the 302 with the click id, deep links that never
//! become an open redirect, revoked partners and ended campaigns, and every click stored.

mod common;

use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    a_click_redirects_with_its_id_and_is_stored,
    deep_links_never_become_an_open_redirect,
    revoked_partners_and_ended_campaigns_still_redirect,
    link_keys_are_unique_url_safe_and_unguessable,
    only_admins_and_the_partner_itself_create_its_links,
    concurrent_clicks_are_all_stored_by_a_clean_shutdown,
    a_flush_waits_for_every_click_answered_before_it,
    clicks_written_together_keep_their_own_partner_and_flag,
    a_multi_tenant_hub_generates_every_link_key,
);

/// A partner with a link to a campaign created with `campaign` fields; returns
/// (campaign, partner, link).
async fn linked(srv: &TestServer, campaign: Value) -> (Value, Value, Value) {
    let campaign = srv.campaign(campaign).await;
    let partner = srv.partner("linker@example.com").await;
    let link = link_for(srv, &partner, &campaign).await;
    (campaign, partner, link)
}

/// A new link of `partner` to `campaign`, made by the admin.
async fn link_for(srv: &TestServer, partner: &Value, campaign: &Value) -> Value {
    let (status, link) = srv
        .post(
            &format!("/v1/partners/{}/links", partner["id"].as_str().unwrap()),
            &srv.admin_key,
            json!({"campaign_id": campaign["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    link
}

/// The stored clicks: (id, partner_id, campaign_id, revoked, ip_hash, user_agent, referer).
/// The clicks stored, once the recorder has written every click the server buffered (while
/// it runs; after a shutdown, whatever the shutdown stored).
async fn clicks(srv: &TestServer) -> Vec<(String, String, String, i64, String, String, String)> {
    if let Some(running) = &srv.running {
        running.state.links.flush().await;
    }
    let db = srv.inspect().await;
    let rows = sqlx::query_as(
        "SELECT id, partner_id, campaign_id, revoked, ip_hash, user_agent, referer FROM clicks
         ORDER BY created_at, id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    db.close().await;
    rows
}

/// Follows `url` `n` times at once without following the redirects; each answer is a 302.
/// Returns the locations.
async fn click_at_once(url: &str, n: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut clickers = tokio::task::JoinSet::new();
    for _ in 0..n {
        let request = client.get(url);
        clickers.spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::FOUND);
            let location = &response.headers()[reqwest::header::LOCATION];
            location.to_str().unwrap().to_owned()
        });
    }
    clickers.join_all().await
}

/// The clicks committed so far, read on `db` without waiting for the recorder.
async fn committed_clicks(db: &switchyard::db::Db) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM clicks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    count
}

fn query_param(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn a_click_redirects_with_its_id_and_is_stored(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (campaign, partner, link) = linked(&srv, json!({"click_param": "sy_click"})).await;
    let key = link["key"].as_str().unwrap();
    assert!(
        link["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/r/{key}")),
        "{link}"
    );

    let (status, location) = srv
        .click(
            &format!("/r/{key}"),
            &[
                ("user-agent", "Mozilla/5.0 test"),
                ("referer", "https://blog.example.net/post"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FOUND);
    let location = location.unwrap();
    assert!(
        location.starts_with("https://shop.example.com/landing?sy_click=clk_"),
        "{location}"
    );
    let click_id = query_param(&location, "sy_click").unwrap();

    let stored = clicks(&srv).await;
    assert_eq!(stored.len(), 1, "the click is stored");
    let (id, partner_id, campaign_id, revoked, ip_hash, user_agent, referer) = &stored[0];
    assert_eq!(*id, click_id);
    assert_eq!(partner_id, partner["id"].as_str().unwrap());
    assert_eq!(campaign_id, campaign["id"].as_str().unwrap());
    assert_eq!(*revoked, 0);
    assert_eq!(ip_hash.len(), 32);
    assert!(
        !ip_hash.contains("127.0.0.1"),
        "the address is stored hashed"
    );
    assert_eq!(user_agent, "Mozilla/5.0 test");
    assert_eq!(referer, "https://blog.example.net/post");

    // The same visitor hashes to the same value; the next click has its own id.
    let (_, second) = srv.click(&format!("/r/{key}"), &[]).await;
    let stored = clicks(&srv).await;
    assert_eq!(stored[1].4, stored[0].4);
    assert_ne!(query_param(&second.unwrap(), "sy_click").unwrap(), click_id);
    assert_eq!((stored[1].5.as_str(), stored[1].6.as_str()), ("", ""));

    // Headers are stored as sent, whatever characters a batch's encoding treats specially.
    let awkward = r#"Agent "quoted" \back\slash {braces}, NULL"#;
    srv.click(
        &format!("/r/{key}"),
        &[("user-agent", awkward), ("referer", "{}")],
    )
    .await;
    let stored = clicks(&srv).await;
    assert_eq!(
        (stored[2].5.as_str(), stored[2].6.as_str()),
        (awkward, "{}")
    );

    let unknown = srv
        .call(reqwest::Method::GET, "/r/no-such-key", None, None)
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "link_not_found");

    let wrong_method = srv
        .call(reqwest::Method::POST, &format!("/r/{key}"), None, None)
        .await;
    assert_problem(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    // The router's answers are counted by method and route template, redirects and misses alike.
    let metrics = srv.metrics().await;
    for line in [
        r#"switchyard_http_requests_total{method="GET",route="/r/{key}",status="302"} 3"#,
        r#"switchyard_http_requests_total{method="GET",route="/r/{key}",status="404"} 1"#,
        r#"switchyard_http_request_duration_seconds_count{method="GET",route="/r/{key}"} 4"#,
        r#"switchyard_http_requests_total{method="POST",route="/r/{key}",status="405"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    srv.stop().await;
}

async fn deep_links_never_become_an_open_redirect(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, _, link) = linked(&srv, json!({"allowed_domains": ["docs.example.org"]})).await;
    let key = link["key"].as_str().unwrap();
    let follow = |to: &str| {
        let to: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
        format!("/r/{key}?to={to}")
    };
    for allowed in [
        "https://docs.example.org/guide?x=1",
        "https://eu.docs.example.org/",
        "https://shop.example.com/pricing",
    ] {
        let (status, location) = srv.click(&follow(allowed), &[]).await;
        assert_eq!(status, StatusCode::FOUND);
        let location = location.unwrap();
        let expected_host = url::Url::parse(allowed)
            .unwrap()
            .host_str()
            .unwrap()
            .to_owned();
        let got = url::Url::parse(&location).unwrap();
        assert_eq!(
            got.host_str().unwrap(),
            expected_host,
            "{allowed} -> {location}"
        );
        assert!(query_param(&location, "click_id").is_some());
    }
    for attempt in [
        "https://evil.com/",
        "//evil.com/",
        "https:\\\\evil.com",
        "https://docs.example.org.evil.com/",
        "https://evildocs.example.org/",
        "https://docs.example.org@evil.com/",
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "https://evil.com/?next=https://docs.example.org/",
        "http://169.254.169.254/latest/meta-data/",
        "/etc/passwd",
    ] {
        let (status, location) = srv.click(&follow(attempt), &[]).await;
        assert_eq!(status, StatusCode::FOUND, "{attempt}");
        let location = location.unwrap();
        assert!(
            location.starts_with("https://shop.example.com/landing?click_id=clk_"),
            "{attempt} must fall back to the destination, got {location}"
        );
    }
    srv.stop().await;
}

async fn revoked_partners_and_ended_campaigns_still_redirect(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (campaign, partner, link) = linked(&srv, json!({})).await;
    let key = link["key"].as_str().unwrap();
    let pid = partner["id"].as_str().unwrap();
    srv.click(&format!("/r/{key}"), &[]).await;
    srv.post(
        &format!("/v1/partners/{pid}/revoke"),
        &srv.admin_key,
        json!({}),
    )
    .await;
    let (status, _) = srv.click(&format!("/r/{key}"), &[]).await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "a revoked partner's link still redirects"
    );
    srv.post(
        &format!("/v1/partners/{pid}/reinstate"),
        &srv.admin_key,
        json!({}),
    )
    .await;
    srv.post(
        &format!("/v1/campaigns/{}/end", campaign["id"].as_str().unwrap()),
        &srv.admin_key,
        json!({}),
    )
    .await;
    let (status, _) = srv.click(&format!("/r/{key}"), &[]).await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "an ended campaign's link still redirects"
    );
    let flags: Vec<i64> = clicks(&srv).await.into_iter().map(|c| c.3).collect();
    assert_eq!(
        flags,
        [0, 1, 0],
        "only the click made while revoked is flagged"
    );

    // No new links for an ended campaign or a revoked partner.
    let ended = srv
        .post(
            &format!("/v1/partners/{pid}/links"),
            &srv.admin_key,
            json!({"campaign_id": campaign["id"]}),
        )
        .await;
    assert_problem(&ended, StatusCode::CONFLICT, "campaign_ended");
    let other = srv.campaign(json!({})).await;
    srv.post(
        &format!("/v1/partners/{pid}/revoke"),
        &srv.admin_key,
        json!({}),
    )
    .await;
    let revoked = srv
        .post(
            &format!("/v1/partners/{pid}/links"),
            &srv.admin_key,
            json!({"campaign_id": other["id"]}),
        )
        .await;
    assert_problem(&revoked, StatusCode::CONFLICT, "partner_revoked");
    srv.stop().await;
}

async fn link_keys_are_unique_url_safe_and_unguessable(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (campaign, partner, generated) = linked(&srv, json!({})).await;
    let generated = generated["key"].as_str().unwrap();
    assert_eq!(generated.len(), 16);
    assert!(generated.bytes().all(|b| b.is_ascii_alphanumeric()));
    let path = format!("/v1/partners/{}/links", partner["id"].as_str().unwrap());
    let (status, chosen) = srv
        .post(
            &path,
            &srv.admin_key,
            json!({"campaign_id": campaign["id"], "key": "ada-spring_26"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chosen}");
    assert_eq!(chosen["key"], "ada-spring_26");

    let taken = srv
        .post(
            &path,
            &srv.admin_key,
            json!({"campaign_id": campaign["id"], "key": "ada-spring_26"}),
        )
        .await;
    assert_problem(&taken, StatusCode::CONFLICT, "link_key_taken");
    for bad in ["ab", "has space", "slash/y", "émoji", &"x".repeat(65)] {
        let refused = srv
            .post(
                &path,
                &srv.admin_key,
                json!({"campaign_id": campaign["id"], "key": bad}),
            )
            .await;
        assert_problem(
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let (_, list) = srv.get(&path, &srv.admin_key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(list["data"][0]["key"], "ada-spring_26", "newest first");
    srv.stop().await;
}

async fn only_admins_and_the_partner_itself_create_its_links(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let campaign = srv.campaign(json!({})).await;
    let own = srv.partner("own@example.com").await;
    let other = srv.partner("other@example.com").await;
    let (_, key) = srv
        .mint(json!({"name": "p", "kind": "partner", "partner_id": own["id"]}))
        .await;
    let own_path = format!("/v1/partners/{}/links", own["id"].as_str().unwrap());
    let (status, link) = srv
        .post(&own_path, &key, json!({"campaign_id": campaign["id"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let (status, _) = srv.get(&own_path, &key).await;
    assert_eq!(status, StatusCode::OK);
    let other_path = format!("/v1/partners/{}/links", other["id"].as_str().unwrap());
    let refused = srv
        .post(&other_path, &key, json!({"campaign_id": campaign["id"]}))
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_partner");
    // A scoped key, even with partners:write, does not (the partner Network's federation key
    // does: tests/network.rs).
    let writer = srv
        .mint(json!({"name": "w", "scopes": ["partners:write"]}))
        .await
        .1;
    let refused = srv
        .post(&own_path, &writer, json!({"campaign_id": campaign["id"]}))
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_scope");
    let unknown = srv
        .post(
            &own_path,
            &key,
            json!({"campaign_id": "cmp_01J9Z8Y7X6W5V4T3S2R1Q0P9N8"}),
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "campaign_not_found");
    srv.stop().await;
}

/// Clicks are answered before they are written: while the database refuses writes, visitors
/// are still redirected at once, and a clean shutdown that starts right after the last answer
/// stores every one of them once the database accepts writes again.
async fn concurrent_clicks_are_all_stored_by_a_clean_shutdown(engine: Engine) {
    let mut srv = TestServer::start_with(engine, &["--rate-limit-per-ip", "100000"]).await;
    let (_, _, link) = linked(&srv, json!({})).await;
    let url = srv.url(&format!("/r/{}", link["key"].as_str().unwrap()));

    let (holder, lock) = srv.lock_table("clicks").await;

    click_at_once(&url, 300).await;
    assert_eq!(
        committed_clicks(&holder).await,
        0,
        "the redirects did not wait for the writes"
    );

    let running = srv.running.take().unwrap();
    let shutdown = tokio::spawn(running.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();
    holder.close().await;
    shutdown.await.unwrap().unwrap();
    assert_eq!(
        clicks(&srv).await.len(),
        300,
        "every redirected click is stored"
    );
}

/// What a request naming a click relies on (events, identities): once `Links::flush` returns,
/// every click answered before it is in the database, also when the batches holding them are
/// still being written while later ones gather.
async fn a_flush_waits_for_every_click_answered_before_it(engine: Engine) {
    let mut srv = TestServer::start_with(engine, &["--rate-limit-per-ip", "100000"]).await;
    let (_, _, link) = linked(&srv, json!({})).await;
    let url = srv.url(&format!("/r/{}", link["key"].as_str().unwrap()));
    let (holder, lock) = srv.lock_table("clicks").await;
    // Waves of clicks, so that batches are taken (and stall on the lock) one after another.
    for _ in 0..4 {
        click_at_once(&url, 100).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let running = srv.running.take().unwrap();
    let links = running.state.links.clone();
    let flush = tokio::spawn(async move { links.flush().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!flush.is_finished(), "the flush returned before the writes");

    lock.rollback().await.unwrap();
    flush.await.unwrap();
    assert_eq!(
        committed_clicks(&holder).await,
        400,
        "every click answered before the flush is stored"
    );
    holder.close().await;
    running.shutdown().await.unwrap();
}

/// Clicks on two partners' links, one partner revoked, written in the same batches (they wait
/// behind a lock, so batches hold hundreds, more than one insert statement's worth on SQLite):
/// each stored click keeps its own link's partner, and only the revoked partner's are flagged.
async fn clicks_written_together_keep_their_own_partner_and_flag(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--rate-limit-per-ip", "100000"]).await;
    let (campaign, revoked, revoked_link) = linked(&srv, json!({"click_param": "sy_click"})).await;
    let active = srv.partner("active@example.com").await;
    let active_link = link_for(&srv, &active, &campaign).await;
    let revoke = format!("/v1/partners/{}/revoke", revoked["id"].as_str().unwrap());
    srv.post(&revoke, &srv.admin_key, json!({})).await;

    let [revoked_url, active_url] = [&revoked_link, &active_link]
        .map(|l| srv.url(&format!("/r/{}", l["key"].as_str().unwrap())));
    let (holder, lock) = srv.lock_table("clicks").await;
    let (from_revoked, from_active) = tokio::join!(
        click_at_once(&revoked_url, 150),
        click_at_once(&active_url, 150)
    );
    lock.rollback().await.unwrap();
    holder.close().await;

    let stored: std::collections::HashMap<String, (String, i64)> = clicks(&srv)
        .await
        .into_iter()
        .map(|(id, partner, _, flag, ..)| (id, (partner, flag)))
        .collect();
    assert_eq!(stored.len(), 300, "every click is stored");
    for (locations, partner, flag) in [(from_revoked, &revoked, 1), (from_active, &active, 0)] {
        for location in locations {
            let id = query_param(&location, "sy_click").unwrap();
            assert_eq!(
                stored[&id],
                (partner["id"].as_str().unwrap().to_owned(), flag),
                "click {id}"
            );
        }
    }
    srv.stop().await;
}

/// `/r/{key}` names no tenant, so keys are unique across the hub: in multi-tenant mode a chosen
/// key would tell one tenant another's keys (by `link_key_taken`) and let it squat names.
async fn a_multi_tenant_hub_generates_every_link_key(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--tenancy", "multi"]).await;
    let (campaign, partner, generated) = linked(&srv, json!({})).await;
    assert_eq!(generated["key"].as_str().unwrap().len(), 16);
    let chosen = srv
        .post(
            &format!("/v1/partners/{}/links", partner["id"].as_str().unwrap()),
            &srv.admin_key,
            json!({"campaign_id": campaign["id"], "key": "ada-spring_26"}),
        )
        .await;
    let problem = assert_problem(
        &chosen,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(problem["errors"][0]["field"], "key");
    srv.stop().await;
}
