//! `Stripe-Signature` verification, as Stripe's own libraries do it.
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]`. Each `v1` is the hex
//! HMAC-SHA256 of `"{t}.{raw body}"` keyed with the endpoint's signing secret as UTF-8 bytes,
//! `whsec_` prefix included (unlike Standard Webhooks, the secret is not base64-decoded). Any
//! `v1` may match any configured secret: Stripe signs platform and Connect destinations with
//! different secrets, and during a secret roll it sends one signature per live secret. Other
//! schemes (`v0` is a test-mode legacy) are ignored. A timestamp more than [`TOLERANCE_SECS`]
//! away from now, in either direction, is refused so a captured request cannot be replayed
//! later. Comparisons are constant-time and run on the raw bytes, before any parsing.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a signature's timestamp may be from now (Stripe's libraries default to 300 s).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused (logged; the caller only ever sees `invalid_signature`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no Stripe-Signature header, or it has no t= and v1= parts")]
    Malformed,
    #[error("the signature's timestamp is outside the {TOLERANCE_SECS} s tolerance")]
    Stale,
    #[error("no v1 signature matches a configured signing secret")]
    NoMatch,
}

/// The `v1` signature of `body` at `timestamp` under `secret`, in hex.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks `header` against `body` for any of `secrets`, at `now_secs`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now_secs: i64,
) -> Result<(), Refused> {
    let header = header.ok_or(Refused::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex)) => signatures.extend(hex::decode(hex).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refused::Malformed)?;
    if signatures.is_empty() {
        return Err(Refused::Malformed);
    }
    if now_secs.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
        return Err(Refused::Stale);
    }
    let matched = secrets.iter().any(|secret| {
        let expected = hex::decode(sign(secret, timestamp, body)).expect("hex we just wrote");
        signatures
            .iter()
            .any(|given| bool::from(given.as_slice().ct_eq(&expected)))
    });
    if matched {
        Ok(())
    } else {
        Err(Refused::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    #[test]
    fn a_signature_is_hex_hmac_sha256_of_timestamp_dot_body_under_the_whole_secret() {
        // printf '1700000000.{"id":"evt_1","object":"event"}' \
        //   | openssl dgst -sha256 -hmac whsec_test_secret
        assert_eq!(
            sign(SECRET, 1_700_000_000, BODY),
            "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd"
        );
    }

    #[test]
    fn any_v1_under_any_secret_within_the_tolerance_is_accepted() {
        let now = 1_700_000_000;
        let good = sign(SECRET, now, BODY);
        let secrets = vec!["whsec_other".to_owned(), SECRET.to_owned()];
        let header = format!("t={now},v1={},v1={good},v0=abc", "00".repeat(32));
        assert_eq!(verify(Some(&header), BODY, &secrets, now + 300), Ok(()));
        assert_eq!(
            verify(Some(&header), BODY, &secrets, now + 301),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(Some(&header), BODY, &secrets, now - 301),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(Some(&header), b"{}", &secrets, now),
            Err(Refused::NoMatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, &["whsec_other".to_owned()], now),
            Err(Refused::NoMatch)
        );
        for malformed in [
            "",
            "t=abc,v1=00",
            &format!("v1={good}"),
            &format!("t={now},v0={good}"),
        ] {
            assert_eq!(
                verify(Some(malformed), BODY, &secrets, now),
                Err(Refused::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(verify(None, BODY, &secrets, now), Err(Refused::Malformed));
    }
}
