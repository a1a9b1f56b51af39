//! Sealing shared secrets at rest with AES-256-GCM, and comparing them in constant time.
//!
//! Secrets sealed before `v2.` values were ChaCha20-Poly1305 under the configured key itself;
//! they still open. AES-GCM took over because staff lists open a secret per item, and on a
//! message this short ChaCha20-Poly1305's vectorized setup cost about 2 us where AES-GCM on the
//! CPU's AES instructions costs a fraction of that.

use aes_gcm::Aes256Gcm;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const NONCE_LEN: usize = 12;

/// Marks a value sealed with AES-256-GCM (not a base64 character, so never the start of an
/// older value).
const V2: &str = "v2.";

/// The key that seals and opens shared secrets. The record id is bound as associated data, so a
/// sealed value copied onto another record does not open.
pub struct SecretBox {
    /// Under a key derived from the configured one, so that no key serves two algorithms.
    cipher: Aes256Gcm,
    /// Opens values sealed before `v2.`.
    legacy: ChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the secret key must be 32 bytes of base64")]
    BadKey,
    #[error("a sealed secret could not be opened (wrong key or corrupted value)")]
    Corrupt,
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> Self {
        let derived: [u8; 32] = Sha256::new()
            .chain_update(b"tandem shared secrets v2 AES-256-GCM")
            .chain_update(key)
            .finalize()
            .into();
        Self {
            cipher: Aes256Gcm::new(&derived.into()),
            legacy: ChaCha20Poly1305::new(&(*key).into()),
        }
    }

    /// A key from its base64 text (the configuration's `[invitations] secret_key`).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Self::new(&key))
    }

    /// A fresh random key as base64, for dev mode.
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        STANDARD.encode(key)
    }

    pub fn seal(&self, record_id: &str, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: record_id.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short message cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{V2}{}", STANDARD.encode(out))
    }

    pub fn open(&self, record_id: &str, sealed: &str) -> Result<String, SealError> {
        let v2 = sealed.strip_prefix(V2);
        let bytes = STANDARD
            .decode(v2.unwrap_or(sealed))
            .map_err(|_| SealError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Corrupt)?;
        let payload = Payload {
            msg: ciphertext,
            aad: record_id.as_bytes(),
        };
        let plain = if v2.is_some() {
            self.cipher.decrypt(&Nonce::from(nonce), payload)
        } else {
            self.legacy.decrypt(&Nonce::from(nonce), payload)
        }
        .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| SealError::Corrupt)
    }
}

/// Compares two secrets in time that depends on neither's content nor length (both are hashed
/// to a fixed size first).
pub fn secrets_match(a: &str, b: &str) -> bool {
    let a = Sha256::digest(a.as_bytes());
    let b = Sha256::digest(b.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_the_record() {
        let sb = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        let sealed = sb.seal("inv-000001", "obsolete obese octopus");
        assert!(!sealed.contains("octopus"));
        assert_ne!(
            sealed,
            sb.seal("inv-000001", "obsolete obese octopus"),
            "fresh nonce"
        );
        assert_eq!(
            sb.open("inv-000001", &sealed).unwrap(),
            "obsolete obese octopus"
        );
        assert!(sb.open("inv-000002", &sealed).is_err(), "bound to the id");
        let other = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        assert!(
            other.open("inv-000001", &sealed).is_err(),
            "bound to the key"
        );
        assert!(sb.open("inv-000001", "bm9wZQ==").is_err());
    }

    #[test]
    fn secrets_sealed_before_aes_gcm_still_open() {
        let key = SecretBox::generate_key();
        let sb = SecretBox::from_base64(&key).unwrap();
        // How values were sealed before `v2.`: ChaCha20-Poly1305 under the configured key.
        let nonce = [7u8; NONCE_LEN];
        let ciphertext = sb
            .legacy
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: b"obsolete obese octopus",
                    aad: b"inv-000001",
                },
            )
            .unwrap();
        let legacy = STANDARD.encode([nonce.as_slice(), &ciphertext].concat());
        assert_eq!(
            sb.open("inv-000001", &legacy).unwrap(),
            "obsolete obese octopus"
        );
        assert!(sb.open("inv-000002", &legacy).is_err(), "bound to the id");
        // A new seal is AES-GCM, which the legacy cipher does not open.
        let sealed = sb.seal("inv-000001", "obsolete obese octopus");
        assert!(sealed.starts_with(V2), "{sealed}");
        let bytes = STANDARD.decode(&sealed[V2.len()..]).unwrap();
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap();
        assert!(
            sb.legacy
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: b"inv-000001"
                    }
                )
                .is_err()
        );
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(SecretBox::from_base64("c2hvcnQ=").is_err());
        assert!(SecretBox::from_base64("not base64!").is_err());
    }

    #[test]
    fn comparison() {
        assert!(secrets_match(
            "obsolete obese octopus",
            "obsolete obese octopus"
        ));
        assert!(!secrets_match(
            "obsolete obese octopus",
            "obsolete obese octopu"
        ));
    }
}
