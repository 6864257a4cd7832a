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

/// Seals and opens secrets with one AES-256-GCM key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
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
        let encoded = encoded.trim();
        let bytes = hex::decode(encoded)
            .ok()
            .or_else(|| STANDARD.decode(encoded).ok())
            .filter(|b| b.len() == 32)
            .ok_or(SecretError::BadKey)?;
        let fingerprint_key = Sha256::new()
            .chain_update(b"switchyard fingerprint v1")
            .chain_update(&bytes)
            .finalize();
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            fingerprint: <Hmac<Sha256> as Mac>::new_from_slice(&fingerprint_key)
                .expect("HMAC takes keys of any length"),
        })
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

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix(VERSION)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|raw| raw.len() > NONCE_LEN)
            .ok_or(SecretError::Malformed)?;
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plaintext).map_err(|_| SecretError::Malformed)
    }
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
