//! Encryption of secrets at rest (webhook signing secrets, Stripe and Network tokens, mail
//! passwords) with AES-256-GCM.
//!
//! A sealed secret is `v1:` followed by base64 of a random 96-bit nonce and the ciphertext with
//! its tag, so it can be stored in a `TEXT` column on either engine. The key comes from
//! configuration; the embedded SQLite mode generates one beside the database on first start so
//! that zero set-up still means encrypted secrets.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 12;

/// Seals secrets with the current AES-256-GCM key, and opens them with it or with a previous
/// key (during a rotation, until `switchyard secrets rotate` has re-sealed everything).
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
    previous: Vec<Aes256Gcm>,
    /// The HMAC for [`SecretBox::fingerprint`], keyed with a key derived from the secrets key
    /// (each digest starts from a copy, so the key is prepared once).
    fingerprint: Hmac<Sha256>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secrets key must be 32 bytes, written as 64 hex digits or in base64")]
    BadKey,
    #[error("sealed secret is malformed")]
    Malformed,
    #[error("sealed secret does not open with this key (wrong key or tampered data)")]
    WrongKey,
}

impl SecretBox {
    /// A box from a 32-byte key written in hex or base64.
    pub fn from_encoded_key(encoded: &str) -> Result<Self, SecretError> {
        let bytes = decode_key(encoded)?;
        let fingerprint_key = Sha256::new()
            .chain_update(b"switchyard fingerprint v1")
            .chain_update(&bytes)
            .finalize();
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            previous: Vec::new(),
            fingerprint: <Hmac<Sha256> as Mac>::new_from_slice(&fingerprint_key)
                .expect("HMAC takes keys of any length"),
        })
    }

    /// This box, also opening what `previous` keys (hex or base64, as the current one) sealed.
    pub fn with_previous(mut self, previous: &[String]) -> Result<Self, SecretError> {
        for encoded in previous.iter().filter(|k| !k.trim().is_empty()) {
            let bytes = decode_key(encoded)?;
            self.previous
                .push(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)));
        }
        Ok(self)
    }

    /// A keyed, one-way digest of `data` (128 bits, hex): recognisable when it recurs, but not
    /// reversible by anyone without the secrets key, even for small inputs such as IP addresses.
    pub fn fingerprint(&self, data: &str) -> String {
        let mut mac = self.fingerprint.clone();
        mac.update(data.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{VERSION}{}", STANDARD.encode(out))
    }

    /// Opens a sealed secret with the current key or, failing that, a previous one.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        self.open_as(sealed).map(|(plaintext, _)| plaintext)
    }

    /// Opens a sealed secret; also says whether it is sealed under the current key.
    pub fn open_as(&self, sealed: &str) -> Result<(String, bool), SecretError> {
        let raw = sealed
            .strip_prefix(VERSION)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|raw| raw.len() > NONCE_LEN)
            .ok_or(SecretError::Malformed)?;
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::from_slice(nonce);
        let (plaintext, current) = match self.cipher.decrypt(nonce, ciphertext) {
            Ok(plaintext) => (plaintext, true),
            Err(_) => (
                self.previous
                    .iter()
                    .find_map(|cipher| cipher.decrypt(nonce, ciphertext).ok())
                    .ok_or(SecretError::WrongKey)?,
                false,
            ),
        };
        let plaintext = String::from_utf8(plaintext).map_err(|_| SecretError::Malformed)?;
        Ok((plaintext, current))
    }
}

fn decode_key(encoded: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = encoded.trim();
    hex::decode(encoded)
        .ok()
        .or_else(|| STANDARD.decode(encoded).ok())
        .filter(|b| b.len() == 32)
        .ok_or(SecretError::BadKey)
}

/// Every sealed column: (table, its key columns, the sealed column). `switchyard secrets
/// rotate` re-seals each under the current key; `tests/secrets.rs` checks that every column
/// of the schema that holds a sealed value is listed here.
pub const SEALED: [(&str, &[&str], &str); 7] = [
    ("webhook_endpoints", &["id"], "secret"),
    ("webhook_endpoints", &["id"], "previous_secret"),
    ("stripe_settings", &["tenant_id"], "secret_key_sealed"),
    ("stripe_settings", &["tenant_id"], "webhook_secrets_sealed"),
    ("stripe_settings", &["tenant_id"], "connect_secrets_sealed"),
    (
        "idempotency_keys",
        &["tenant_id", "caller", "key"],
        "response_sealed",
    ),
    ("network_connections", &["tenant_id"], "vendor_token_sealed"),
];

/// What a rotation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotated {
    /// Secrets re-sealed under the current key.
    pub resealed: u64,
    /// Secrets that were already under it.
    pub current: u64,
}

/// Re-seals every stored secret under the current key, tenant by tenant, one transaction per
/// tenant. A secret no key opens fails the rotation (nothing of that tenant is changed).
pub async fn rotate(db: &crate::db::Db, secrets: &SecretBox) -> anyhow::Result<Rotated> {
    let mut rotated = Rotated::default();
    for tenant in crate::tenants::all_ids(db.pool()).await? {
        let mut tx = db.write(&tenant).await?;
        for (table, keys, column) in SEALED {
            let select = format!(
                "SELECT {}, {column} FROM {table} WHERE tenant_id = $1 AND {column} IS NOT NULL",
                keys.join(", ")
            );
            let rows = sqlx::query(&select)
                .bind(&tenant)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                use sqlx::Row as _;
                let sealed: String = row.try_get(keys.len())?;
                let (plaintext, current) = secrets
                    .open_as(&sealed)
                    .map_err(|e| anyhow::anyhow!("{table}.{column} of tenant {tenant}: {e}"))?;
                if current {
                    rotated.current += 1;
                    continue;
                }
                let matches: Vec<String> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, key)| format!("{key} = ${}", i + 2))
                    .collect();
                let update = format!(
                    "UPDATE {table} SET {column} = $1 WHERE {}",
                    matches.join(" AND ")
                );
                let mut query = sqlx::query(&update).bind(secrets.seal(&plaintext));
                for i in 0..keys.len() {
                    let value: String = row.try_get(i)?;
                    query = query.bind(value);
                }
                query.execute(&mut *tx).await?;
                rotated.resealed += 1;
            }
        }
        tx.commit().await?;
    }
    Ok(rotated)
}

/// Where the embedded mode keeps its generated key: beside the database, `<db file>.key`.
pub fn key_file_for(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// Reads the key file, or creates it (mode 0600) with a fresh random key. Returns the key and
/// whether it was just created.
pub fn load_or_create_key_file(path: &Path) -> anyhow::Result<(SecretBox, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    if path.exists() {
        let encoded = std::fs::read_to_string(path)?;
        let key = SecretBox::from_encoded_key(&encoded)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok((key, false));
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let encoded = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create secrets key file {}: {e}", path.display()))?;
    writeln!(file, "{encoded}")?;
    file.sync_all()?;
    Ok((SecretBox::from_encoded_key(&encoded)?, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_fingerprint_is_the_same_from_one_version_to_the_next() {
        // HMAC-SHA256 under SHA-256("switchyard fingerprint v1" || key), first 16 bytes, as
        // Python's hmac module computes it: stored click fingerprints stay comparable.
        let secrets = SecretBox::from_encoded_key(HEX_KEY).unwrap();
        assert_eq!(
            secrets.fingerprint("ten_1:127.0.0.1"),
            "df5a1d350f144957b70adab869a65595"
        );
        assert_ne!(
            secrets.fingerprint("ten_1:127.0.0.1"),
            secrets.fingerprint("ten_2:127.0.0.1")
        );
    }

    #[test]
    fn a_sealed_secret_opens_with_the_same_key_only() {
        let sealed_box = SecretBox::from_encoded_key(HEX_KEY).unwrap();
        let sealed = sealed_box.seal("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("MfKQ9r8"));
        assert_eq!(
            sealed_box.open(&sealed).unwrap(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        );

        let other = SecretBox::from_encoded_key(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(matches!(other.open(&sealed), Err(SecretError::WrongKey)));
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let sealed_box = SecretBox::from_encoded_key(HEX_KEY).unwrap();
        assert_ne!(sealed_box.seal("same"), sealed_box.seal("same"));
    }

    #[test]
    fn tampering_is_detected() {
        let sealed_box = SecretBox::from_encoded_key(HEX_KEY).unwrap();
        let sealed = sealed_box.seal("token");
        let mut raw = STANDARD.decode(&sealed[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("v1:{}", STANDARD.encode(raw));
        assert!(matches!(
            sealed_box.open(&tampered),
            Err(SecretError::WrongKey)
        ));
        assert!(matches!(
            sealed_box.open("v1:!!"),
            Err(SecretError::Malformed)
        ));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(SecretBox::from_encoded_key("abcd").is_err());
        assert!(SecretBox::from_encoded_key(&STANDARD.encode([1u8; 16])).is_err());
        assert!(SecretBox::from_encoded_key(&format!(" {HEX_KEY}\n")).is_ok());
    }

    #[test]
    fn the_generated_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = key_file_for(&dir.path().join("switchyard.db"));
        assert!(path.ends_with("switchyard.db.key"));

        let (first, created) = load_or_create_key_file(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let (second, created_again) = load_or_create_key_file(&path).unwrap();
        assert!(!created_again);
        assert_eq!(second.open(&first.seal("x")).unwrap(), "x");
    }
}
