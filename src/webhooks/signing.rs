//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the base64 part of a `whsec_` secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A fresh secret: `whsec_` and base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// `v1,<signature>` for one secret. Secrets this module generated always decode; a stored
/// secret that does not is a bug, reported as `None`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header: one signature per secret, space-separated (during a
/// rotation's grace period both the new and the previous secret sign).
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let signatures: Option<Vec<String>> = secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect();
    Some(signatures?.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A signature verifies (constant-time, through the MAC's own check) for exactly the
        /// id, timestamp and body it signed, under any generated secret.
        #[test]
        fn signatures_verify_for_what_they_signed_and_nothing_else(
            id in "msg_[0-9A-Za-z]{1,40}",
            timestamp in 0..4_102_444_800_i64,
            body in proptest::collection::vec(any::<u8>(), 0..512),
            flip in any::<prop::sample::Index>(),
        ) {
            let secret = generate_secret();
            let header = signature_header(&[&secret], &id, timestamp, &body).unwrap();
            let signature = STANDARD.decode(header.strip_prefix("v1,").unwrap()).unwrap();
            let key = STANDARD.decode(secret.strip_prefix(PREFIX).unwrap()).unwrap();
            let verify = |body: &[u8]| {
                let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                mac.update(format!("{id}.{timestamp}.").as_bytes());
                mac.update(body);
                mac.verify_slice(&signature).is_ok()
            };
            prop_assert!(verify(&body));
            let mut tampered = body.clone();
            if tampered.is_empty() {
                tampered.push(0);
            } else {
                let at = flip.index(tampered.len());
                tampered[at] ^= 1;
            }
            prop_assert!(!verify(&tampered));
        }
    }

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn a_rotation_sends_both_signatures() {
        let (new, old) = (generate_secret(), generate_secret());
        let header = signature_header(&[&new, &old], "msg_1", 1, b"{}").unwrap();
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&new, "msg_1", 1, b"{}").unwrap());
        assert_eq!(parts[1], sign(&old, "msg_1", 1, b"{}").unwrap());
    }

    #[test]
    fn generated_secrets_have_the_standard_shape() {
        let secret = generate_secret();
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
        assert!(sign("not-a-secret", "m", 1, b"").is_none());
    }
}
