//! Campaigns: validation with per-field messages, defaults, edits, ending; terms snapshotted
//! when a partner joins; per-partner amendments.

mod common;

use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::json;

on_both_engines!(
    a_campaign_has_documented_defaults_and_can_be_ended,
    invalid_campaigns_get_a_message_per_field,
    editing_terms_changes_new_partnerships_only,
    an_amendment_overrides_the_campaign_terms_until_cleared,
);

async fn a_campaign_has_documented_defaults_and_can_be_ended(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let campaign = srv
        .campaign(json!({"allowed_domains": ["Blog.Example.com"]}))
        .await;
    assert_eq!(
        campaign["commission"],
        json!({"type": "percent", "bps": 1500})
    );
    assert_eq!(campaign["click_param"], "click_id");
    assert_eq!(campaign["attribution_model"], "last_click");
    assert_eq!(campaign["attribution_window_days"], 30);
    assert_eq!(campaign["holdback_days"], 30);
    assert_eq!(campaign["recurring"], false);
    assert_eq!(campaign["allowed_domains"], json!(["blog.example.com"]));
    assert_eq!(campaign["status"], "active");
    let id = campaign["id"].as_str().unwrap();

    let (status, flat) = srv
        .post(
            "/v1/campaigns",
            &srv.admin_key,
            json!({"name": "Flat", "destination_url": "https://example.com",
                   "commission": {"type": "flat", "amount": 2500, "currency": "gbp"},
                   "recurring": true, "attribution_model": "first_click",
                   "starts_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{flat}");
    assert_eq!(
        flat["commission"],
        json!({"type": "flat", "amount": 2500, "currency": "GBP"})
    );
    assert_eq!(flat["status"], "scheduled");

    let (status, ended) = srv
        .post(
            &format!("/v1/campaigns/{id}/end"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["status"], "ended");
    let (_, read) = srv
        .get(&format!("/v1/campaigns/{id}"), &srv.admin_key)
        .await;
    assert_eq!(read["ends_at"], ended["ends_at"]);

    let (_, list) = srv.get("/v1/campaigns?limit=1", &srv.admin_key).await;
    assert_eq!(list["data"][0]["id"], flat["id"], "newest first");
    assert!(list["next_cursor"].is_string());
    srv.stop().await;
}

async fn invalid_campaigns_get_a_message_per_field(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let bad = srv
        .post(
            "/v1/campaigns",
            &srv.admin_key,
            json!({"name": "", "destination_url": "javascript:alert(1)",
                   "commission": {"type": "percent", "bps": 0},
                   "allowed_domains": ["https://x.com"], "click_param": "a b",
                   "holdback_days": -1, "attribution_model": "linear",
                   "attribution_window_days": 0, "starts_at": "2026-12-01T00:00:00Z",
                   "ends_at": "2026-11-01T00:00:00Z"}),
        )
        .await;
    let problem = assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "allowed_domains",
            "attribution_model",
            "attribution_window_days",
            "click_param",
            "commission.bps",
            "destination_url",
            "ends_at",
            "holdback_days",
            "name"
        ]
    );
    let flat = srv
        .post(
            "/v1/campaigns",
            &srv.admin_key,
            json!({"name": "F", "destination_url": "https://example.com",
                   "commission": {"type": "flat", "amount": 100}}),
        )
        .await;
    let problem = assert_problem(&flat, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "commission.currency");
    let (_, list) = srv.get("/v1/campaigns", &srv.admin_key).await;
    assert!(
        list["data"].as_array().unwrap().is_empty(),
        "nothing was saved"
    );

    let scoped = srv
        .mint(json!({"name": "s", "scopes": ["partners:write"]}))
        .await
        .1;
    let refused = srv.get("/v1/campaigns", &scoped).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_scope");
    srv.stop().await;
}

async fn editing_terms_changes_new_partnerships_only(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let campaign = srv.campaign(json!({"holdback_days": 14})).await;
    let cid = campaign["id"].as_str().unwrap();
    let early = srv.partner("early@example.com").await;
    let early_id = early["id"].as_str().unwrap();
    let (status, membership) = srv
        .post(
            &format!("/v1/partners/{early_id}/campaigns"),
            &srv.admin_key,
            json!({"campaign_id": cid}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{membership}");
    assert_eq!(
        membership["commission"],
        json!({"type": "percent", "bps": 1500})
    );
    assert_eq!(membership["holdback_days"], 14);

    let (status, edited) = srv
        .patch(
            &format!("/v1/campaigns/{cid}"),
            &srv.admin_key,
            json!({"commission": {"type": "percent", "bps": 2000}, "holdback_days": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["commission"]["bps"], 2000);

    // The early partner keeps its terms, also when it joins "again" (through a link).
    let (status, again) = srv
        .post(
            &format!("/v1/partners/{early_id}/campaigns"),
            &srv.admin_key,
            json!({"campaign_id": cid}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["commission"]["bps"], 1500);
    let (status, _) = srv
        .post(
            &format!("/v1/partners/{early_id}/links"),
            &srv.admin_key,
            json!({"campaign_id": cid}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // A partner who joins with its first link after the edit gets the new terms.
    let late = srv.partner("late@example.com").await;
    let late_id = late["id"].as_str().unwrap();
    let (status, _) = srv
        .post(
            &format!("/v1/partners/{late_id}/links"),
            &srv.admin_key,
            json!({"campaign_id": cid}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for (partner, bps, holdback) in [(early_id, 1500, 14), (late_id, 2000, 7)] {
        let (_, memberships) = srv
            .get(&format!("/v1/partners/{partner}/campaigns"), &srv.admin_key)
            .await;
        let data = memberships["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{memberships}");
        assert_eq!(data[0]["commission"]["bps"], bps);
        assert_eq!(data[0]["effective_commission"]["bps"], bps);
        assert_eq!(data[0]["holdback_days"], holdback);
    }
    srv.stop().await;
}

async fn an_amendment_overrides_the_campaign_terms_until_cleared(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let campaign = srv.campaign(json!({})).await;
    let partner = srv.partner("vip@example.com").await;
    let pid = partner["id"].as_str().unwrap();
    srv.post(
        &format!("/v1/partners/{pid}/campaigns"),
        &srv.admin_key,
        json!({"campaign_id": campaign["id"]}),
    )
    .await;
    let terms = format!("/v1/partners/{pid}/commission-terms");
    let (status, amended) = srv
        .put(
            &terms,
            &srv.admin_key,
            json!({"type": "flat", "amount": 5000, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{amended}");
    assert_eq!(
        amended["commission_terms"],
        json!({"type": "flat", "amount": 5000, "currency": "EUR"})
    );
    let (_, memberships) = srv
        .get(&format!("/v1/partners/{pid}/campaigns"), &srv.admin_key)
        .await;
    assert_eq!(memberships["data"][0]["commission"]["bps"], 1500);
    assert_eq!(
        memberships["data"][0]["effective_commission"]["amount"],
        5000
    );

    let bad = srv
        .put(
            &terms,
            &srv.admin_key,
            json!({"type": "percent", "bps": 20000}),
        )
        .await;
    assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    let (status, _) = srv.delete(&terms, &srv.admin_key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, memberships) = srv
        .get(&format!("/v1/partners/{pid}/campaigns"), &srv.admin_key)
        .await;
    assert_eq!(
        memberships["data"][0]["effective_commission"],
        json!({"type": "percent", "bps": 1500})
    );
    let scoped = srv
        .mint(json!({"name": "s", "scopes": ["partners:write"]}))
        .await
        .1;
    let refused = srv.delete(&terms, &scoped).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_scope");
    srv.stop().await;
}
