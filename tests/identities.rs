//! The identity graph: identifiers stitched into one customer, tied to the click that brought
//! them, idempotently; conflicts named; resolution in any written form.

mod common;

use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    identities_bind_to_one_customer_tied_to_a_click,
    an_identifier_of_another_customer_is_a_conflict,
    a_partner_can_also_be_a_customer,
    invalid_identities_get_field_errors,
);

/// A click id from following a fresh link.
async fn click(srv: &TestServer, email: &str) -> String {
    let campaign = srv.campaign(json!({})).await;
    let partner = srv.partner(email).await;
    let (_, link) = srv
        .post(
            &format!("/v1/partners/{}/links", partner["id"].as_str().unwrap()),
            &srv.admin_key,
            json!({"campaign_id": campaign["id"]}),
        )
        .await;
    let (_, location) = srv
        .click(&format!("/r/{}", link["key"].as_str().unwrap()), &[])
        .await;
    url::Url::parse(&location.unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "click_id")
        .unwrap()
        .1
        .into_owned()
}

async fn bind(srv: &TestServer, key: &str, body: Value) -> (StatusCode, Value) {
    srv.post("/v1/identities", key, body).await
}

async fn resolve(srv: &TestServer, namespace: &str, identifier: &str) -> (StatusCode, Value) {
    let identifier: String = url::form_urlencoded::byte_serialize(identifier.as_bytes()).collect();
    srv.get(
        &format!("/v1/identities/resolve?namespace={namespace}&identifier={identifier}"),
        &srv.admin_key,
    )
    .await
}

async fn identities_bind_to_one_customer_tied_to_a_click(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let click_id = click(&srv, "partner@example.com").await;
    let crm = srv
        .mint(json!({"name": "crm", "scopes": ["events:write"]}))
        .await
        .1;

    let (status, bound) = bind(
        &srv,
        &crm,
        json!({"click_id": click_id, "identities": {"email": "Cus@Example.com", "phone": "07911 123456"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    assert_eq!(bound["created"], true);
    let customer = bound["customer_id"].as_str().unwrap().to_owned();
    assert!(customer.starts_with("cus_"));
    let namespaces: Vec<&str> = bound["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["email", "whatsapp", "phone"]);

    // Later, the backend learns more about the same person: same customer, nothing new.
    let (status, again) = bind(
        &srv,
        &crm,
        json!({"identities": {"phone": "+44 7911 123456", "user_id": "u-17",
                              "stripe_customer": "cus_Stripe123", "crm_contact_id": "hs-9"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["customer_id"], customer);
    assert_eq!(again["created"], false);
    let (status, _) = bind(
        &srv,
        &crm,
        json!({"click_id": click_id, "customer_id": customer}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "tying the same click again is idempotent"
    );

    for (namespace, identifier) in [
        ("email", "cus@example.com"),
        ("phone", "0044 7911 123456"),
        ("whatsapp", "447911123456@s.whatsapp.net"),
        ("user_id", "u-17"),
        ("stripe_customer", "cus_Stripe123"),
        ("crm_contact_id", "hs-9"),
    ] {
        let (status, found) = resolve(&srv, namespace, identifier).await;
        assert_eq!(status, StatusCode::OK, "{namespace}: {found}");
        assert_eq!(found["subject_type"], "customer");
        assert_eq!(found["subject_id"], customer);
    }
    let db = srv.inspect().await;
    let tied: (Option<String>,) = sqlx::query_as("SELECT customer_id FROM clicks WHERE id = $1")
        .bind(&click_id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    db.close().await;
    assert_eq!(tied.0.as_deref(), Some(customer.as_str()));

    let missing = resolve(&srv, "email", "nobody@example.com").await;
    assert_problem(&missing, StatusCode::NOT_FOUND, "identity_not_found");
    srv.stop().await;
}

async fn an_identifier_of_another_customer_is_a_conflict(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let key = srv.admin_key.clone();
    let (_, first) = bind(
        &srv,
        &key,
        json!({"identities": {"email": "one@example.com"}}),
    )
    .await;
    let (_, second) = bind(
        &srv,
        &key,
        json!({"identities": {"email": "two@example.com"}}),
    )
    .await;
    let first_id = first["customer_id"].as_str().unwrap();
    let second_id = second["customer_id"].as_str().unwrap();

    // Two identifiers of two different customers in one call.
    let both = bind(
        &srv,
        &key,
        json!({"identities": {"email": "one@example.com", "user_id": "u-2"}, "customer_id": second_id}),
    )
    .await;
    let problem = assert_problem(&both, StatusCode::CONFLICT, "identity_conflict");
    assert!(
        problem["detail"].as_str().unwrap().contains(first_id),
        "{problem}"
    );
    let (status, _) = resolve(&srv, "user_id", "u-2").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused call binds nothing"
    );

    let click_id = click(&srv, "p@example.com").await;
    let (status, _) = bind(
        &srv,
        &key,
        json!({"click_id": click_id, "customer_id": first_id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let taken = bind(
        &srv,
        &key,
        json!({"click_id": click_id, "customer_id": second_id}),
    )
    .await;
    let problem = assert_problem(&taken, StatusCode::CONFLICT, "identity_conflict");
    assert!(
        problem["detail"].as_str().unwrap().contains(first_id),
        "{problem}"
    );

    let unknown_click = bind(
        &srv,
        &key,
        json!({"click_id": "clk_01J9Z8Y7X6W5V4T3S2R1Q0P9N8"}),
    )
    .await;
    assert_problem(&unknown_click, StatusCode::NOT_FOUND, "click_not_found");
    let unknown_customer = bind(
        &srv,
        &key,
        json!({"customer_id": "cus_01J9Z8Y7X6W5V4T3S2R1Q0P9N8", "identities": {"email": "z@example.com"}}),
    )
    .await;
    assert_problem(
        &unknown_customer,
        StatusCode::NOT_FOUND,
        "customer_not_found",
    );
    srv.stop().await;
}

async fn a_partner_can_also_be_a_customer(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let partner = srv.partner("both@example.com").await;
    let (status, bound) = bind(
        &srv,
        &srv.admin_key,
        json!({"identities": {"email": "both@example.com"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    let (_, found) = resolve(&srv, "email", "both@example.com").await;
    assert_eq!(found["subject_type"], "customer", "a customer is preferred");
    let (_, member) = srv
        .get(
            "/v1/identities/resolve?namespace=email&identifier=both@example.com&subject_type=member",
            &srv.admin_key,
        )
        .await;
    assert_eq!(member["subject_id"], partner["id"]);
    srv.stop().await;
}

async fn invalid_identities_get_field_errors(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let key = srv.admin_key.clone();
    let bad = bind(
        &srv,
        &key,
        json!({"click_id": "nope", "identities": {"email": "x", "phone": "12", "user_id": ""}}),
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
            "click_id",
            "identities.email",
            "identities.phone",
            "identities.user_id"
        ]
    );
    let empty = bind(&srv, &key, json!({"identities": {}})).await;
    assert_problem(
        &empty,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let namespace = srv
        .get("/v1/identities/resolve?namespace=fax&identifier=1", &key)
        .await;
    assert_problem(
        &namespace,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let reader = srv
        .mint(json!({"name": "r", "scopes": ["partners:read"]}))
        .await
        .1;
    let refused = bind(
        &srv,
        &reader,
        json!({"identities": {"email": "a@example.com"}}),
    )
    .await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_scope");
    srv.stop().await;
}
