//! Who is calling: the client's API key and the user's bearer token.

pub mod dev;
pub mod jwt;

use crate::config::AuthConfig;
use crate::domain::{ids::ResourceId, user::UserRef};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

pub use jwt::{Claims, TokenVerifier};

/// An authenticated request's caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client application, named by its API key's configuration.
    pub client: String,
    /// The token's `sub`.
    pub subject: String,
    pub user: UserRef,
    pub scopes: Vec<String>,
    /// Staff: the token carries the configured administrative claim.
    pub admin: bool,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the API-Key header is missing")]
    MissingApiKey,
    #[error("the API key is not valid")]
    UnknownApiKey,
    #[error("the Authorization header must carry a bearer token")]
    MissingToken,
    #[error("the bearer token is not valid: {0}")]
    InvalidToken(String),
}

pub struct Authenticator {
    /// SHA-256 of each accepted API key -> the client's name.
    api_keys: HashMap<[u8; 32], String>,
    verifier: Arc<dyn TokenVerifier>,
    admin_claim: String,
    admin_value: String,
}

pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Authenticator {
    pub fn new(
        config: &AuthConfig,
        extra_keys: &[(String, [u8; 32])],
        verifier: Arc<dyn TokenVerifier>,
    ) -> Self {
        let mut api_keys = HashMap::new();
        for key in &config.api_keys {
            let mut digest = [0u8; 32];
            // Config::check has validated the hex.
            if hex::decode_to_slice(&key.sha256, &mut digest).is_ok() {
                api_keys.insert(digest, key.name.clone());
            }
        }
        for (name, digest) in extra_keys {
            api_keys.insert(*digest, name.clone());
        }
        Self {
            api_keys,
            verifier,
            admin_claim: config.admin_claim.clone(),
            admin_value: config.admin_value.clone(),
        }
    }

    /// Checks the `API-Key` header value and the `Authorization` header value.
    pub async fn authenticate(
        &self,
        api_key: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let client = self.client_for(api_key)?;
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        let claims = self.verifier.verify(token).await?;
        Ok(self.caller_from(client, &claims))
    }

    /// The client name for an API key (the hash lookup is not timing-sensitive: an attacker
    /// cannot choose the digest's bytes).
    pub fn client_for(&self, api_key: Option<&str>) -> Result<String, AuthError> {
        let key = api_key
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::MissingApiKey)?;
        self.api_keys
            .get(&hash_api_key(key))
            .cloned()
            .ok_or(AuthError::UnknownApiKey)
    }

    fn caller_from(&self, client: String, claims: &Claims) -> Caller {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let subject = text("sub").unwrap_or_default();
        let scopes: Vec<String> = text("scope")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let admin = match claims.get(&self.admin_claim) {
            Some(Value::String(s)) => s.split_whitespace().any(|v| v == self.admin_value),
            Some(Value::Array(items)) => {
                items.iter().any(|v| v.as_str() == Some(&self.admin_value))
            }
            Some(Value::Bool(b)) => *b && self.admin_value == "true",
            _ => false,
        };
        let user = UserRef {
            id: user_id_for(&subject),
            username: text("preferred_username").unwrap_or_else(|| subject.clone()),
            first_name: text("given_name").unwrap_or_default(),
            last_name: text("family_name").unwrap_or_default(),
        };
        Caller {
            client,
            subject,
            user,
            scopes,
            admin,
        }
    }
}

/// The `userAccountReference.id` for a token subject: the subject itself when it fits the
/// seeds' id pattern, otherwise a stable digest of it (e.g. for `auth0|...` subjects).
pub fn user_id_for(subject: &str) -> String {
    if ResourceId::is_valid(subject) {
        subject.to_owned()
    } else {
        format!(
            "sub-{}",
            &hex::encode(Sha256::digest(subject.as_bytes()))[..40]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_subjects_become_valid_stable_ids() {
        assert_eq!(user_id_for("22707c1196c6f1c6938e"), "22707c1196c6f1c6938e");
        let id = user_id_for("auth0|5f7c8ec7c33c6c004bbafe82");
        assert!(ResourceId::is_valid(&id), "{id}");
        assert_eq!(id, user_id_for("auth0|5f7c8ec7c33c6c004bbafe82"));
    }
}
