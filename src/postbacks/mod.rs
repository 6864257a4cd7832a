//! Partner postbacks: unsigned GETs to a partner's ad tracker when its commissions change.
//!
//! A partner keeps URL templates subscribed to `commission.*` types (all of them when it names
//! none) and, when it names it, `payout.paid`. The dispatch of every such message (the same dispatch that fans out to webhook endpoints) renders the
//! templates of the commission's partner and schedules one fire per (message, postback), so a
//! second dispatch fires nothing twice. Macros:
//!
//! `{click_id} {partner_id} {commission_id} {commission_amount} {currency} {event_id}
//! {transaction_id} {event_type} {campaign_id} {payout_id}`
//!
//! Values are URL-encoded; `{commission_amount}` is in major units with the currency's decimals
//! (`29985` EUR is `299.85`), as trackers expect a payout; `{transaction_id}` is stable per
//! conversion, so trackers deduplicate our retries; `{payout_id}` is empty until the commission
//! is bound to a payout (on `payout.paid`, `{commission_amount}` is the payout's amount and the
//! commission macros are empty). An unknown macro stays literal, so the partner notices the typo.
//!
//! A fire succeeds on 2xx; otherwise it is retried after 30 s, 2 min, 10 min and 1 h (stored
//! delays), then counted failed. A postback failing `SWITCHYARD_POSTBACK_DISABLE_AFTER` times in
//! a row is disabled, with the reason on it.

pub mod routes;
pub mod store;

use std::time::{Duration, Instant};

use job_queue::{Job, KindOptions, NewJob, Outcome, Queue, RetrySchedule, Worker};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::db::Tx;
use crate::ids;

pub const FIRE: &str = "postbacks.fire";
/// The first attempt and four retries.
const MAX_ATTEMPTS: u32 = 5;
const RETRY_DELAYS_SECS: [u64; 4] = [30, 120, 600, 3600];

/// The types a postback may subscribe to.
pub const TYPES: [&str; 4] = [
    "commission.accrued",
    "commission.approved",
    "commission.reversed",
    "payout.paid",
];

/// The types a postback naming none fires on: conversions only, as trackers expect.
const DEFAULT_TYPES: [&str; 3] = [
    "commission.accrued",
    "commission.approved",
    "commission.reversed",
];

/// Currencies whose minor unit is not a hundredth (ISO 4217 exponents other than 2).
const EXPONENTS: [(&str, u32); 21] = [
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("ISK", 0),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("PYG", 0),
    ("RWF", 0),
    ("UGX", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("BHD", 3),
    ("JOD", 3),
    ("KWD", 3),
    ("OMR", 3),
    ("TND", 3),
];

/// `minor` units of `currency` written in major units: `29985 EUR` is `299.85`.
pub fn major_units(minor: i64, currency: &str) -> String {
    let exponent = EXPONENTS
        .iter()
        .find(|(code, _)| *code == currency)
        .map_or(2, |(_, e)| *e);
    if exponent == 0 {
        return minor.to_string();
    }
    let scale = 10_u64.pow(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = exponent as usize
    )
}

/// The macro values of a `commission.*` message.
pub fn macros(event_type: &str, data: &Value) -> Vec<(&'static str, String)> {
    let text = |name: &str| data[name].as_str().unwrap_or_default().to_owned();
    let currency = text("currency");
    vec![
        ("click_id", text("click_id")),
        ("partner_id", text("partner_id")),
        ("commission_id", text("commission_id")),
        (
            "commission_amount",
            major_units(data["amount"].as_i64().unwrap_or_default(), &currency),
        ),
        ("currency", currency),
        ("event_id", text("event_id")),
        ("transaction_id", text("transaction_id")),
        ("event_type", event_type.to_owned()),
        ("campaign_id", text("campaign_id")),
        ("payout_id", text("payout_id")),
    ]
}

/// `template` with every known `{macro}` replaced by its URL-encoded value; unknown ones stay.
pub fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(macro_name, _)| *macro_name == name)
                .map(|(_, value)| (close, value))
        });
        match known {
            Some((close, value)) => {
                // Spaces as %20, not `+`: a macro may stand in the path, where `+` is a plus.
                for piece in url::form_urlencoded::byte_serialize(value.as_bytes()) {
                    out.push_str(if piece == "+" { "%20" } else { piece });
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Schedules the fires of a `commission.*` message to its partner's subscribed postbacks, in
/// the dispatch's transaction.
pub async fn fan_out(
    queue: &Queue,
    tx: &mut Tx,
    tenant_id: &str,
    message_id: &str,
    event_type: &str,
    data: &Value,
    now: i64,
) -> anyhow::Result<()> {
    if !TYPES.contains(&event_type) {
        return Ok(());
    }
    let Some(partner_id) = data["partner_id"].as_str() else {
        return Ok(());
    };
    let values = macros(event_type, data);
    let by_default = DEFAULT_TYPES.contains(&event_type);
    for postback in store::subscribed(tx, tenant_id, partner_id, event_type, by_default).await? {
        let fire = ids::new("pbf");
        let url = render(&postback.url_template, &values);
        if store::insert_fire(tx, &fire, tenant_id, &postback.id, message_id, &url, now).await? {
            let job = NewJob::new(FIRE, json!({ "tenant_id": tenant_id, "fire_id": fire }))
                .max_attempts(MAX_ATTEMPTS)
                .dedupe_key(format!("postback:{fire}"));
            queue.enqueue_in(tx, job).await?;
        }
    }
    Ok(())
}

/// Registers the fire handler on `worker`.
pub fn register(worker: Worker, state: AppState) -> Worker {
    worker.register(
        FIRE,
        KindOptions {
            concurrency: 16,
            schedule: RetrySchedule::Fixed {
                delays: RETRY_DELAYS_SECS
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
                jitter_percent: 20,
            },
            lease: Duration::from_secs(state.config.job_lease_secs),
        },
        move |job| fire(state.clone(), job),
    )
}

#[derive(Deserialize)]
struct FirePayload {
    tenant_id: String,
    fire_id: String,
}

async fn fire(state: AppState, job: Job) -> Outcome {
    let Ok(payload) = serde_json::from_value::<FirePayload>(job.payload) else {
        return Outcome::Fail("malformed postback payload".to_owned());
    };
    match attempt(&state, &payload, job.attempt >= job.max_attempts).await {
        Ok(outcome) => outcome,
        Err(err) => Outcome::retry(format!("postback could not be attempted: {err:#}")),
    }
}

async fn attempt(state: &AppState, payload: &FirePayload, last: bool) -> anyhow::Result<Outcome> {
    let tenant = &payload.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let fire = store::find_fire(&mut tx, tenant, &payload.fire_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("postback fire {} not found", payload.fire_id))?;
    tx.commit().await?;
    if fire.status != "pending" {
        return Ok(Outcome::Done);
    }
    if fire.enabled == 0 {
        let mut tx = state.db.write(tenant).await?;
        sqlx::query("UPDATE postback_fires SET status = 'failed' WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(&fire.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(Outcome::Done);
    }
    let started = Instant::now();
    let answer = match state.outbound.request(reqwest::Method::GET, &fire.url) {
        Ok(request) => state
            .outbound
            .send(request)
            .await
            .map(|response| response.status().as_u16())
            .map_err(|err| format!("{}: {}", err.class.as_str(), err.detail)),
        Err(err) => Err(format!("{}: {}", err.class.as_str(), err.detail)),
    };
    let status = answer.as_ref().ok().map(|s| i64::from(*s));
    let succeeded = status.is_some_and(|s| (200..300).contains(&s));
    let fire_status = match (succeeded, last) {
        (true, _) => "succeeded",
        (false, true) => "failed",
        (false, false) => "pending",
    };
    let now = state.clock.now_ms();
    let mut tx = state.db.write(tenant).await?;
    let attempted = store::Attempted {
        fire_status,
        http_status: status,
        succeeded,
    };
    let disabled = store::record_attempt(
        &mut tx,
        tenant,
        &fire,
        &attempted,
        state.config.postback_disable_after,
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::debug!(fire = %fire.id, ?status, latency = ?started.elapsed(), "postback fired");
    Ok(match (succeeded, disabled, last) {
        (true, _, _) => Outcome::Done,
        (false, true, _) => Outcome::Done,
        (false, false, true) => Outcome::Fail(describe(&answer)),
        (false, false, false) => Outcome::retry(describe(&answer)),
    })
}

fn describe(answer: &Result<u16, String>) -> String {
    match answer {
        Ok(status) => format!("the tracker answered {status}"),
        Err(error) => error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any template renders without a panic; a known macro is replaced by its value,
        /// percent-encoded (so a value can never inject a query parameter or a path).
        #[test]
        fn templates_render_and_values_cannot_break_out(
            template in ".{0,120}",
            value in ".{0,40}",
        ) {
            let values = vec![("click_id", value.clone())];
            let _ = render(&template, &values);
            let rendered = render("https://t.example/pb?c={click_id}&x=1", &values);
            let query = rendered.strip_prefix("https://t.example/pb?c=").unwrap();
            let (encoded, rest) = query.rsplit_once("&x=").unwrap();
            prop_assert_eq!(rest, "1");
            prop_assert!(!encoded.contains(['&', '=', '?', '#', '/', ' ']), "{}", encoded);
            let decoded: String = url::form_urlencoded::parse(format!("c={encoded}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            prop_assert_eq!(decoded, value);
        }
    }

    #[test]
    fn amounts_are_written_in_major_units() {
        assert_eq!(major_units(29_985, "EUR"), "299.85");
        assert_eq!(major_units(5, "USD"), "0.05");
        assert_eq!(major_units(1500, "JPY"), "1500");
        assert_eq!(major_units(12_345, "KWD"), "12.345");
    }

    #[test]
    fn known_macros_are_encoded_and_unknown_ones_stay() {
        let values = vec![
            ("click_id", "clk_1".to_owned()),
            ("event_id", "deal 47/11&x=1".to_owned()),
        ];
        assert_eq!(
            render(
                "https://t.example/pb?cid={click_id}&e={event_id}&x={clickid}&{",
                &values
            ),
            "https://t.example/pb?cid=clk_1&e=deal%2047%2F11%26x%3D1&x={clickid}&{"
        );
    }
}
