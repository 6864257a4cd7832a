//! Partners: creation with normalized e-mail and phone, identity entries, the unique e-mail
//! (also under a race), search and pages, revocation that stops the partner's keys at once, and
//! the events each change emits.

mod common;

use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    a_partner_is_created_with_a_normalized_email_and_phone,
    every_uk_phone_form_becomes_one_e164_number,
    an_unreadable_phone_does_not_fail_the_request,
    a_duplicate_email_is_refused_even_in_a_race,
    partners_are_found_by_email_and_paged_newest_first,
    revoking_stops_the_partners_keys_at_once_and_keeps_history,
    a_partner_from_the_network_is_announced_as_approved,
    a_partner_key_sees_only_its_own_partner,
    invalid_partners_get_field_errors,
    a_lookalike_email_is_refused_or_is_the_same_partner,
);

async fn create(srv: &TestServer, body: Value) -> (StatusCode, Value) {
    srv.post("/v1/partners", &srv.admin_key, body).await
}

async fn resolve(srv: &TestServer, namespace: &str, identifier: &str) -> (StatusCode, Value) {
    let path = format!(
        "/v1/identities/resolve?namespace={namespace}&identifier={}",
        urlencode(identifier)
    );
    srv.get(&path, &srv.admin_key).await
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn a_partner_is_created_with_a_normalized_email_and_phone(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, partner) = create(
        &srv,
        json!({"email": " Ada@Example.COM ", "name": "Ada", "phone": "07911 123456",
               "metadata": {"tier": "gold"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{partner}");
    assert_eq!(partner["email"], "ada@example.com");
    assert_eq!(partner["phone"], "+447911123456");
    assert_eq!(partner["status"], "active");
    assert_eq!(partner["source"], "direct");
    assert_eq!(partner["metadata"]["tier"], "gold");
    assert!(partner.get("phone_error").is_none());
    let id = partner["id"].as_str().unwrap();
    assert!(id.starts_with("ptr_"));

    // The partner is a member in the identity graph under its e-mail, phone and WhatsApp JID,
    // found whatever form the identifier is written in.
    for (namespace, identifier) in [
        ("email", "ADA@example.com"),
        ("phone", "+44 (0)7911 123456"),
        ("whatsapp", "447911123456@s.whatsapp.net"),
    ] {
        let (status, found) = resolve(&srv, namespace, identifier).await;
        assert_eq!(status, StatusCode::OK, "{namespace}: {found}");
        assert_eq!(found["subject_type"], "member");
        assert_eq!(found["subject_id"], id);
    }

    let messages = srv.messages().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, "partner.created");
    assert_eq!(messages[0].1["partner_id"], id);
    assert_eq!(messages[0].1["email"], "ada@example.com");
    srv.stop().await;
}

async fn every_uk_phone_form_becomes_one_e164_number(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let forms = [
        ("07911 123456", "+447911123456"),
        ("+44 7911 123456", "+447911123456"),
        ("+44 (0)7911 123456", "+447911123456"),
        ("0044 7911 123456", "+447911123456"),
        // With an explicit country code the tenant's region does not matter.
        ("+1 (415) 555-2671", "+14155552671"),
        ("+49 30 901820", "+4930901820"),
    ];
    for (n, (form, e164)) in forms.iter().enumerate() {
        let (status, partner) = create(
            &srv,
            json!({"email": format!("p{n}@example.com"), "name": "P", "phone": form}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{partner}");
        assert_eq!(partner["phone"], *e164, "{form}");
    }
    srv.stop().await;
}

async fn an_unreadable_phone_does_not_fail_the_request(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, partner) = create(
        &srv,
        json!({"email": "bob@example.com", "name": "Bob", "phone": "call me maybe"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{partner}");
    assert_eq!(partner["phone_error"], "invalid_phone");
    assert_eq!(partner["phone"], Value::Null);
    let (status, found) = srv
        .get(
            &format!("/v1/partners/{}", partner["id"].as_str().unwrap()),
            &srv.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["email"], "bob@example.com");

    // A later edit with a readable phone fixes it.
    let (status, fixed) = srv
        .patch(
            &format!("/v1/partners/{}", partner["id"].as_str().unwrap()),
            &srv.admin_key,
            json!({"phone": "0044 7911 123999"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fixed}");
    assert_eq!(fixed["phone"], "+447911123999", "{fixed}");
    srv.stop().await;
}

async fn a_duplicate_email_is_refused_even_in_a_race(engine: Engine) {
    let srv = TestServer::start(engine).await;
    srv.partner("carol@example.com").await;
    let again = create(&srv, json!({"email": "CAROL@example.com", "name": "C"})).await;
    assert_problem(&again, StatusCode::CONFLICT, "email_taken");

    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = srv
            .client
            .post(srv.url("/v1/partners"))
            .bearer_auth(&srv.admin_key)
            .json(&json!({"email": "dave@example.com", "name": "D"}));
        racers.spawn(async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        });
    }
    let results = racers.join_all().await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "exactly one of the racers wins");
    for result in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_problem(result, StatusCode::CONFLICT, "email_taken");
    }
    let (_, page) = srv
        .get("/v1/partners?email=dave@example.com", &srv.admin_key)
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);

    // Changing a partner's e-mail to a taken one is refused too.
    let erin = srv.partner("erin@example.com").await;
    let path = format!("/v1/partners/{}", erin["id"].as_str().unwrap());
    let taken = srv
        .patch(&path, &srv.admin_key, json!({"email": "dave@example.com"}))
        .await;
    assert_problem(&taken, StatusCode::CONFLICT, "email_taken");
    srv.stop().await;
}

async fn partners_are_found_by_email_and_paged_newest_first(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let partner = srv.partner(&format!("p{n}@example.com")).await;
        ids.push(partner["id"].as_str().unwrap().to_owned());
    }
    let (_, found) = srv
        .get("/v1/partners?email=P3@Example.com", &srv.admin_key)
        .await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["id"], ids[3]);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/partners?limit=2&cursor={c}"),
            None => "/v1/partners?limit=2".to_owned(),
        };
        let (status, page) = srv.get(&path, &srv.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for p in page["data"].as_array().unwrap() {
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every partner once, newest first");

    srv.post(
        &format!("/v1/partners/{}/revoke", ids[0]),
        &srv.admin_key,
        json!({}),
    )
    .await;
    let (_, revoked) = srv.get("/v1/partners?status=revoked", &srv.admin_key).await;
    assert_eq!(revoked["data"].as_array().unwrap().len(), 1);
    assert_eq!(revoked["data"][0]["id"], ids[0]);
    let bad = srv.get("/v1/partners?status=gone", &srv.admin_key).await;
    assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    srv.stop().await;
}

async fn revoking_stops_the_partners_keys_at_once_and_keeps_history(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let partner = srv.partner("frank@example.com").await;
    let id = partner["id"].as_str().unwrap();
    let (_, key) = srv
        .mint(json!({"name": "portal", "kind": "partner", "partner_id": id}))
        .await;
    let (status, _) = srv.get(&format!("/v1/partners/{id}"), &key).await;
    assert_eq!(status, StatusCode::OK);

    let (status, revoked) = srv
        .post(
            &format!("/v1/partners/{id}/revoke"),
            &srv.admin_key,
            json!({"reason": "fraudulent traffic", "notify": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_reason"], "fraudulent traffic");
    let refused = srv.get(&format!("/v1/partners/{id}"), &key).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "partner_revoked");

    // Revoking again changes nothing and announces nothing.
    let (status, _) = srv
        .post(
            &format!("/v1/partners/{id}/revoke"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, reinstated) = srv
        .post(
            &format!("/v1/partners/{id}/reinstate"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reinstated}");
    assert_eq!(reinstated["status"], "active");
    let (status, _) = srv.get(&format!("/v1/partners/{id}"), &key).await;
    assert_eq!(status, StatusCode::OK, "the key works again");

    let (_, read) = srv.get(&format!("/v1/partners/{id}"), &srv.admin_key).await;
    let history = read["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{read}");
    assert_eq!(history[0]["action"], "revoked");
    assert_eq!(history[0]["reason"], "fraudulent traffic");
    assert_eq!(history[0]["notify"], true);
    assert_eq!(history[1]["action"], "reinstated");

    let types: Vec<String> = srv.messages().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        ["partner.created", "partner.revoked", "partner.activated"]
    );
    let revoked_event = &srv.messages().await[1].1;
    assert_eq!(revoked_event["reason"], "fraudulent traffic");
    assert_eq!(revoked_event["notify"], true);

    // A key cannot be minted for an unknown partner.
    let unknown = srv
        .post(
            "/v1/api-keys",
            &srv.admin_key,
            json!({"name": "x", "kind": "partner", "partner_id": "ptr_01J9Z8Y7X6W5V4T3S2R1Q0P9N8"}),
        )
        .await;
    assert_problem(
        &unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    srv.stop().await;
}

async fn a_partner_from_the_network_is_announced_as_approved(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, partner) = create(
        &srv,
        json!({"email": "gina@example.com", "name": "Gina", "source": "network",
               "network_partner_id": "np_42"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{partner}");
    assert_eq!(partner["source"], "network");
    let messages = srv.messages().await;
    let types: Vec<&str> = messages.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["partner.created", "partnership.approved"]);
    assert_eq!(messages[1].1["network_partner_id"], "np_42");
    assert_eq!(messages[1].1["partner_id"], partner["id"]);
    srv.stop().await;
}

async fn a_partner_key_sees_only_its_own_partner(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let own = srv.partner("own@example.com").await;
    let other = srv.partner("other@example.com").await;
    let (_, key) = srv
        .mint(json!({"name": "p", "kind": "partner", "partner_id": own["id"]}))
        .await;
    let (status, _) = srv
        .get(
            &format!("/v1/partners/{}", own["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let refused = srv
        .get(
            &format!("/v1/partners/{}", other["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_partner");
    let listing = srv.get("/v1/partners", &key).await;
    assert_problem(&listing, StatusCode::FORBIDDEN, "forbidden_scope");
    srv.stop().await;
}

async fn invalid_partners_get_field_errors(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let bad = create(
        &srv,
        json!({"email": "not-an-email", "name": " ", "metadata": [1, 2], "source": "network"}),
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
    assert_eq!(fields, ["email", "metadata", "name", "network_partner_id"]);
    let missing = create(&srv, json!({"name": "no email"})).await;
    assert_problem(&missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let unknown = srv
        .get(
            "/v1/partners/ptr_01J9Z8Y7X6W5V4T3S2R1Q0P9N8",
            &srv.admin_key,
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "partner_not_found");
    assert!(srv.messages().await.is_empty(), "nothing was emitted");
    srv.stop().await;
}

/// A NUL or zero-width character once made a second partner beside the clean address; now it is
/// refused, and a decomposed accent is the same address as the composed one.
async fn a_lookalike_email_is_refused_or_is_the_same_partner(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, _) = create(&srv, json!({"email": "r\u{e9}mi@example.com", "name": "R"})).await;
    assert_eq!(status, StatusCode::CREATED);
    for lookalike in [
        "r\u{e9}mi\u{0}@example.com",
        "r\u{e9}mi\u{200b}@example.com",
        "r\u{e9}mi@exam\nple.com",
    ] {
        let refused = create(&srv, json!({"email": lookalike, "name": "R"})).await;
        let problem = assert_problem(
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(problem["errors"][0]["field"], "email", "{lookalike:?}");
    }
    let decomposed = create(
        &srv,
        json!({"email": " RE\u{301}MI@Example.com ", "name": "R"}),
    )
    .await;
    assert_problem(&decomposed, StatusCode::CONFLICT, "email_taken");
    let (status, _) = create(&srv, json!({"email": "other@example.com", "name": "O"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, found) = srv
        .get(
            "/v1/partners?email=re%CC%81mi%40example.com",
            &srv.admin_key,
        )
        .await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["data"][0]["email"], "r\u{e9}mi@example.com");
    // A search for something that is not an address finds nobody (not everybody).
    for query in ["not-an-address", "r%C3%A9mi%00%40example.com"] {
        let (status, found) = srv
            .get(&format!("/v1/partners?email={query}"), &srv.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(found["data"], json!([]), "{query}");
    }
    srv.stop().await;
}
