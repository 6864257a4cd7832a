//! Every route x every kind of caller gets the expected status.
//!
//! The route table is checked against the OpenAPI document, so a new route cannot be added
//! without saying here who may call it.

mod common;

use common::{Engine, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_engines!(every_route_answers_every_caller_as_documented);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Needs {
    Nothing,
    AnyKey,
    Admin,
    /// A scoped key holding this scope, or an admin key.
    Scope(&'static str),
    /// As `Scope`, and any partner key, which is answered about its own partner only.
    ScopeOrPartner(&'static str),
}

/// (method, documented path, who may call it, the answer to an allowed caller)
const ROUTES: &[(&str, &str, Needs, u16)] = &[
    ("GET", "/healthz", Needs::Nothing, 200),
    ("GET", "/readyz", Needs::Nothing, 200),
    ("GET", "/metrics", Needs::Nothing, 200),
    ("GET", "/v1/whoami", Needs::AnyKey, 200),
    ("POST", "/v1/api-keys", Needs::Admin, 201),
    ("GET", "/v1/api-keys", Needs::Admin, 200),
    ("DELETE", "/v1/api-keys/{id}", Needs::Admin, 204),
    ("GET", "/v1/queue", Needs::Admin, 200),
    // No dead job has this id: an allowed caller reaches the handler and gets 404.
    ("POST", "/v1/queue/jobs/{id}/replay", Needs::Admin, 404),
    ("POST", "/v1/webhooks", Needs::Scope("webhooks:write"), 201),
    ("GET", "/v1/webhooks", Needs::Scope("webhooks:read"), 200),
    (
        "GET",
        "/v1/webhooks/{id}",
        Needs::Scope("webhooks:read"),
        200,
    ),
    (
        "PATCH",
        "/v1/webhooks/{id}",
        Needs::Scope("webhooks:write"),
        200,
    ),
    (
        "DELETE",
        "/v1/webhooks/{id}",
        Needs::Scope("webhooks:write"),
        204,
    ),
    (
        "POST",
        "/v1/webhooks/{id}/pause",
        Needs::Scope("webhooks:write"),
        200,
    ),
    (
        "POST",
        "/v1/webhooks/{id}/resume",
        Needs::Scope("webhooks:write"),
        200,
    ),
    (
        "POST",
        "/v1/webhooks/{id}/rotate-secret",
        Needs::Scope("webhooks:write"),
        200,
    ),
    (
        "GET",
        "/v1/webhooks/{id}/deliveries",
        Needs::Scope("webhooks:read"),
        200,
    ),
    // The endpoint's port is closed: the test fire answers with the failed attempt.
    (
        "POST",
        "/v1/webhooks/{id}/test",
        Needs::Scope("webhooks:write"),
        200,
    ),
    ("GET", "/v1/event-types", Needs::Scope("webhooks:read"), 200),
    (
        "POST",
        "/v1/webhooks/{id}/replay",
        Needs::Scope("webhooks:write"),
        202,
    ),
    // No delivery has this id: an allowed caller reaches the handler and gets 404.
    (
        "GET",
        "/v1/deliveries/{id}",
        Needs::Scope("webhooks:read"),
        404,
    ),
    (
        "POST",
        "/v1/deliveries/{id}/replay",
        Needs::Scope("webhooks:write"),
        404,
    ),
    // Routes a partner's own key may also call are listed with the rule for everyone else: the
    // matrix's partner key belongs to another partner (own-key access is tested in partners.rs
    // and links.rs).
    ("POST", "/v1/partners", Needs::Scope("partners:write"), 201),
    ("GET", "/v1/partners", Needs::Scope("partners:read"), 200),
    (
        "GET",
        "/v1/partners/{id}",
        Needs::Scope("partners:read"),
        200,
    ),
    (
        "PATCH",
        "/v1/partners/{id}",
        Needs::Scope("partners:write"),
        200,
    ),
    (
        "POST",
        "/v1/partners/{id}/revoke",
        Needs::Scope("partners:write"),
        200,
    ),
    (
        "POST",
        "/v1/partners/{id}/reinstate",
        Needs::Scope("partners:write"),
        200,
    ),
    (
        "PUT",
        "/v1/partners/{id}/commission-terms",
        Needs::Admin,
        200,
    ),
    (
        "DELETE",
        "/v1/partners/{id}/commission-terms",
        Needs::Admin,
        204,
    ),
    ("POST", "/v1/partners/{id}/campaigns", Needs::Admin, 201),
    (
        "GET",
        "/v1/partners/{id}/campaigns",
        Needs::Scope("partners:read"),
        200,
    ),
    // And the partner Network's federation key (tests/network.rs).
    ("POST", "/v1/partners/{id}/links", Needs::Admin, 201),
    (
        "GET",
        "/v1/partners/{id}/links",
        Needs::Scope("partners:read"),
        200,
    ),
    ("POST", "/v1/campaigns", Needs::Admin, 201),
    ("GET", "/v1/campaigns", Needs::Admin, 200),
    ("GET", "/v1/campaigns/{id}", Needs::Admin, 200),
    ("PATCH", "/v1/campaigns/{id}", Needs::Admin, 200),
    ("POST", "/v1/campaigns/{id}/end", Needs::Admin, 200),
    ("POST", "/v1/identities", Needs::Scope("events:write"), 201),
    // Nothing is bound to the identifier asked for: an allowed caller gets 404.
    (
        "GET",
        "/v1/identities/resolve",
        Needs::Scope("partners:read"),
        404,
    ),
    ("GET", "/r/{key}", Needs::Nothing, 302),
    (
        "POST",
        "/v1/partners/{id}/postbacks",
        Needs::Scope("postbacks:write"),
        201,
    ),
    (
        "GET",
        "/v1/partners/{id}/postbacks",
        Needs::Scope("postbacks:write"),
        200,
    ),
    (
        "PATCH",
        "/v1/partners/{id}/postbacks/{postback_id}",
        Needs::Scope("postbacks:write"),
        200,
    ),
    (
        "DELETE",
        "/v1/partners/{id}/postbacks/{postback_id}",
        Needs::Scope("postbacks:write"),
        204,
    ),
    ("POST", "/v1/events", Needs::Scope("events:write"), 201),
    (
        "POST",
        "/v1/events/batch",
        Needs::Scope("events:write"),
        200,
    ),
    (
        "GET",
        "/v1/commissions",
        Needs::Scope("commissions:read"),
        200,
    ),
    // No commission has this id: an allowed caller reaches the handler and gets 404.
    (
        "GET",
        "/v1/commissions/{id}",
        Needs::Scope("commissions:read"),
        404,
    ),
    (
        "GET",
        "/v1/partners/{id}/commissions",
        Needs::Scope("commissions:read"),
        200,
    ),
    ("GET", "/v1/stripe", Needs::Admin, 200),
    ("PUT", "/v1/stripe", Needs::Admin, 200),
    // Public, authenticated by Stripe-Signature alone: without one, 400 for every caller.
    ("POST", "/v1/stripe/webhook", Needs::Nothing, 400),
    ("GET", "/sdk.js", Needs::Nothing, 200),
    ("GET", "/v1/stripe/events", Needs::Admin, 200),
    // No Stripe event has this id: an allowed caller reaches the handler and gets 404.
    ("GET", "/v1/stripe/events/{id}", Needs::Admin, 404),
    (
        "POST",
        "/v1/stripe/events/{id}/reprocess",
        Needs::Admin,
        404,
    ),
    // No SWITCHYARD_PLATFORM_STRIPE_KEY in the test server: allowed callers learn that.
    ("POST", "/v1/billing/report-usage", Needs::Admin, 409),
    ("GET", "/v1/payouts/settings", Needs::Admin, 200),
    ("PUT", "/v1/payouts/settings", Needs::Admin, 200),
    // No Stripe key in the test server: allowed callers learn that.
    (
        "POST",
        "/v1/partners/{id}/payout-account",
        Needs::Admin,
        409,
    ),
    (
        "GET",
        "/v1/partners/{id}/payout-account",
        Needs::Scope("payouts:read"),
        200,
    ),
    (
        "GET",
        "/v1/partners/{id}/balance",
        Needs::Scope("payouts:read"),
        200,
    ),
    // Public, the token in the path is the credential: a made-up one is 404 for every caller.
    ("GET", "/v1/payout-onboarding/{token}", Needs::Nothing, 404),
    (
        "GET",
        "/v1/payout-onboarding/{token}/return",
        Needs::Nothing,
        404,
    ),
    ("POST", "/v1/payouts/run", Needs::Admin, 200),
    (
        "GET",
        "/v1/payouts",
        Needs::ScopeOrPartner("payouts:read"),
        200,
    ),
    (
        "GET",
        "/v1/payouts/export.csv",
        Needs::Scope("payouts:read"),
        200,
    ),
    // No payout has this id: an allowed caller reaches the handler and gets 404.
    (
        "GET",
        "/v1/payouts/{id}",
        Needs::ScopeOrPartner("payouts:read"),
        404,
    ),
    ("POST", "/v1/payouts/{id}/mark-paid", Needs::Admin, 404),
    ("GET", "/v1/payout-runs", Needs::Scope("payouts:read"), 200),
    // Not connected in the test server: allowed callers get the state, or learn that.
    ("GET", "/v1/network", Needs::Admin, 200),
    ("PATCH", "/v1/network", Needs::Admin, 404),
    ("DELETE", "/v1/network", Needs::Admin, 404),
    // Nothing listens on the Network URL given (port 9 on loopback): the signup cannot reach it,
    // and the pending connection it leaves cannot be completed either.
    ("POST", "/v1/network/connect", Needs::Admin, 503),
    ("POST", "/v1/network/connect/complete", Needs::Admin, 503),
    ("POST", "/v1/network/backfill", Needs::Admin, 409),
    ("GET", "/v1/network/offerings", Needs::Admin, 409),
    ("POST", "/v1/network/offerings", Needs::Admin, 409),
    ("PATCH", "/v1/network/offerings/{id}", Needs::Admin, 409),
    ("DELETE", "/v1/network/offerings/{id}", Needs::Admin, 409),
    ("GET", "/v1/network/requests", Needs::Admin, 409),
    (
        "POST",
        "/v1/network/requests/{id}/approve",
        Needs::Admin,
        409,
    ),
    (
        "POST",
        "/v1/network/requests/{id}/reject",
        Needs::Admin,
        409,
    ),
];

enum Caller {
    NoKey,
    Malformed,
    Unknown,
    Revoked,
    Scoped(&'static str),
    Partner,
    Admin,
}

const SCOPES: [&str; 8] = [
    "events:write",
    "partners:read",
    "partners:write",
    "commissions:read",
    "webhooks:read",
    "webhooks:write",
    "postbacks:write",
    "payouts:read",
];

#[test]
fn the_table_covers_every_documented_route() {
    let document: Value =
        serde_json::from_str(&switchyard::http::openapi::document_json()).unwrap();
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut table: Vec<_> = ROUTES
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
        .collect();
    table.sort();
    assert_eq!(documented, table);
}

fn expected(needs: Needs, caller: &Caller, ok: u16) -> StatusCode {
    let ok = StatusCode::from_u16(ok).unwrap();
    let authenticated = matches!(caller, Caller::Scoped(_) | Caller::Partner | Caller::Admin);
    match (needs, caller) {
        (Needs::Nothing, _) => ok,
        (_, _) if !authenticated => StatusCode::UNAUTHORIZED,
        (Needs::AnyKey, _) | (_, Caller::Admin) => ok,
        (Needs::ScopeOrPartner(_), Caller::Partner) => ok,
        (Needs::Scope(needed) | Needs::ScopeOrPartner(needed), Caller::Scoped(held))
            if needed == *held =>
        {
            ok
        }
        _ => StatusCode::FORBIDDEN,
    }
}

/// A fresh object for a route's `{id}`, so every allowed call has something to act on.
async fn target(srv: &TestServer, path: &str, n: usize, campaign: &str) -> String {
    if path.starts_with("/v1/partners/") {
        srv.partner(&format!("target{n}@example.com")).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    } else if path.starts_with("/v1/campaigns/") {
        srv.campaign(json!({})).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    } else if path.starts_with("/r/") {
        let partner = srv.partner(&format!("linked{n}@example.com")).await;
        let (_, link) = srv
            .post(
                &format!("/v1/partners/{}/links", partner["id"].as_str().unwrap()),
                &srv.admin_key,
                json!({"campaign_id": campaign}),
            )
            .await;
        link["key"].as_str().unwrap().to_owned()
    } else if path.starts_with("/v1/stripe/events/") {
        "evt_none".to_owned()
    } else if path.starts_with("/v1/network/") {
        "off_1".to_owned()
    } else if path.starts_with("/v1/payouts/") {
        "pay_01J00000000000000000000000".to_owned()
    } else if path.starts_with("/v1/payout-onboarding/") {
        "ten_x.ptr_y.forged".to_owned()
    } else if path.starts_with("/v1/commissions/") {
        "com_01J00000000000000000000000".to_owned()
    } else if path.starts_with("/v1/queue/jobs/") {
        "job_01J00000000000000000000000".to_owned()
    } else if path.starts_with("/v1/deliveries/") {
        "dlv_01J00000000000000000000000".to_owned()
    } else if path.starts_with("/v1/webhooks/") {
        let (_, endpoint) = srv
            .post(
                "/v1/webhooks",
                &srv.admin_key,
                json!({"url": format!("http://127.0.0.1:9/target/{n}")}),
            )
            .await;
        endpoint["id"].as_str().unwrap().to_owned()
    } else {
        srv.mint(json!({"name": "victim", "scopes": ["events:write"]}))
            .await
            .0
    }
}

fn body(method: &str, path: &str, n: usize, campaign: &str) -> Option<Value> {
    match (method, path) {
        ("POST", "/v1/partners") => {
            Some(json!({"email": format!("new{n}@example.com"), "name": "N"}))
        }
        ("POST", "/v1/campaigns") => Some(
            json!({"name": "C", "destination_url": "https://example.com",
            "commission": {"type": "percent", "bps": 100}}),
        ),
        ("POST", "/v1/events") => Some(json!({"event_id": format!("e{n}"), "type": "signup"})),
        ("POST", "/v1/events/batch") => {
            Some(json!({"events": [{"event_id": format!("b{n}"), "type": "signup"}]}))
        }
        ("POST", "/v1/identities") => {
            Some(json!({"identities": {"email": format!("c{n}@example.com")}}))
        }
        ("POST", p) if p.ends_with("/postbacks") => {
            Some(json!({"url_template": "https://tracker.example/?c={click_id}"}))
        }
        ("POST", p) if p.ends_with("/campaigns") || p.ends_with("/links") => {
            Some(json!({"campaign_id": campaign}))
        }
        ("PUT", "/v1/payouts/settings") => Some(json!({"payout_minimum": 100})),
        ("PUT", _) => Some(json!({"type": "percent", "bps": 100})),
        ("POST", p) if p.ends_with("/mark-paid") => Some(json!({"reference": "wire 1"})),
        ("POST", "/v1/api-keys") => Some(json!({"name": "minted", "scopes": ["events:write"]})),
        ("POST", "/v1/webhooks") => Some(json!({"url": format!("http://127.0.0.1:9/new/{n}")})),
        ("POST", "/v1/network/connect") => Some(json!({"network_url": "http://127.0.0.1:9",
            "contact_email": "ops@example.com", "display_name": "Acme"})),
        ("POST", "/v1/network/connect/complete") => Some(json!({"token": "otk_1"})),
        ("PATCH", "/v1/network") => Some(json!({"auto_enroll": false})),
        ("PATCH", _) => Some(json!({"description": "changed"})),
        ("POST", _) => Some(json!({})),
        _ => None,
    }
}

async fn every_route_answers_every_caller_as_documented(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (revoked_id, revoked) = srv
        .mint(json!({"name": "old", "scopes": ["events:write"]}))
        .await;
    srv.delete(&format!("/v1/api-keys/{revoked_id}"), &srv.admin_key)
        .await;
    let bound = srv.partner("matrix-partner@example.com").await;
    let (_, partner) = srv
        .mint(json!({"name": "p", "kind": "partner", "partner_id": bound["id"]}))
        .await;
    let campaign = srv.campaign(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut callers = vec![
        ("no key".to_owned(), Caller::NoKey, None),
        (
            "malformed key".to_owned(),
            Caller::Malformed,
            Some("not-a-key".to_owned()),
        ),
        (
            "unknown key".to_owned(),
            Caller::Unknown,
            Some(format!("sy_{}_{}", "A".repeat(12), "b".repeat(32))),
        ),
        ("revoked key".to_owned(), Caller::Revoked, Some(revoked)),
        ("partner key".to_owned(), Caller::Partner, Some(partner)),
        (
            "admin key".to_owned(),
            Caller::Admin,
            Some(srv.admin_key.clone()),
        ),
    ];
    for scope in SCOPES {
        let (_, key) = srv.mint(json!({"name": scope, "scopes": [scope]})).await;
        callers.push((
            format!("key with {scope}"),
            Caller::Scoped(scope),
            Some(key),
        ));
    }

    let mut mismatches = Vec::new();
    let mut n = 0;
    for (method, path, needs, ok) in ROUTES {
        for (label, caller, key) in &callers {
            n += 1;
            let mut path = if path.contains("{postback_id}") {
                let partner = target(&srv, path, n, &campaign).await;
                let (_, postback) = srv
                    .post(
                        &format!("/v1/partners/{partner}/postbacks"),
                        &srv.admin_key,
                        json!({"url_template": "https://tracker.example/?c={click_id}"}),
                    )
                    .await;
                path.replace("{id}", &partner)
                    .replace("{postback_id}", postback["id"].as_str().unwrap())
            } else if path.contains("{id}") {
                path.replace("{id}", &target(&srv, path, n, &campaign).await)
            } else if path.contains("{token}") {
                path.replace("{token}", &target(&srv, path, n, &campaign).await)
            } else if path.contains("{key}") {
                path.replace("{key}", &target(&srv, path, n, &campaign).await)
            } else {
                path.to_string()
            };
            if path == "/v1/identities/resolve" {
                path.push_str("?namespace=email&identifier=nobody@example.com");
            }
            if path.ends_with("/replay") && path.starts_with("/v1/webhooks/") {
                path.push_str("?since=2026-01-01T00:00:00Z");
            }
            let body = body(method, &path, n, &campaign);
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, answer) = srv
                .call(method.clone(), &path, key.as_deref(), body.as_ref())
                .await;
            let want = expected(*needs, caller, *ok);
            if status != want {
                mismatches.push(format!(
                    "{method} {path} as {label}: got {status}, want {want}: {answer}"
                ));
            }
            if status.is_client_error() {
                assert_eq!(
                    answer["status"],
                    status.as_u16(),
                    "errors are problem documents: {answer}"
                );
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    srv.stop().await;
}
