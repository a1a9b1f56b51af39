//! Who is calling: the client's API key and the user's bearer token.

pub mod dev;
pub mod jwt;

use crate::config::AuthConfig;
use crate::domain::{ids::ResourceId, user::UserRef};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// The core customer group the token's configured claim names, if any.
    pub customer_group: Option<String>,
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
    customer_group_claim: String,
    verified: VerifiedTokens,
}

/// Who a verified token names, apart from the calling client.
#[derive(Debug, Clone)]
struct TokenIdentity {
    subject: String,
    user: UserRef,
    scopes: Vec<String>,
    admin: bool,
    customer_group: Option<String>,
}

/// Tokens that passed verification, so that a client's repeated calls skip the signature check
/// and claim parsing (an RSA or ECDSA check costs far more than the request it guards). An
/// entry lives until the token's `exp` or `TOKEN_CACHE_TTL_MS`, whichever comes first, and only
/// while the verifier's keys are those it was verified with: a key the issuer withdraws stops
/// being honoured as soon as the verifier's next JWKS fetch finds it gone (see `OidcVerifier`).
struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, VerifiedToken>>,
}

struct VerifiedToken {
    identity: TokenIdentity,
    valid_until_ms: i64,
    /// The verifier's `keys_version` when the token was verified.
    keys_version: u64,
}

const TOKEN_CACHE_TTL_MS: i64 = 60_000;
/// Past this many entries, expired ones are dropped (and all of them, if none has expired).
const TOKEN_CACHE_CAPACITY: usize = 10_000;

impl VerifiedTokens {
    fn get(&self, token: &str, now_ms: i64, keys_version: u64) -> Option<TokenIdentity> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(token)?;
        (now_ms < entry.valid_until_ms && entry.keys_version == keys_version)
            .then(|| entry.identity.clone())
    }

    fn insert(
        &self,
        token: &str,
        identity: TokenIdentity,
        claims: &Claims,
        now_ms: i64,
        keys_version: u64,
    ) {
        let Some(exp_ms) = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| exp.checked_mul(1000))
        else {
            return;
        };
        let valid_until_ms = exp_ms.min(now_ms + TOKEN_CACHE_TTL_MS);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= TOKEN_CACHE_CAPACITY {
            entries.retain(|_, entry| now_ms < entry.valid_until_ms);
            if entries.len() >= TOKEN_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            VerifiedToken {
                identity,
                valid_until_ms,
                keys_version,
            },
        );
    }
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
            customer_group_claim: config.customer_group_claim.clone(),
            verified: VerifiedTokens {
                entries: Mutex::new(HashMap::new()),
            },
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
        let now_ms = crate::domain::time::Timestamp::now().millis();
        // Read before verifying: a key change during verification then misses next time.
        let keys_version = self.verifier.keys_version();
        let identity = match self.verified.get(token, now_ms, keys_version) {
            Some(identity) => identity,
            None => {
                let claims = self.verifier.verify(token).await?;
                let identity = self.identity_from(&claims)?;
                self.verified
                    .insert(token, identity.clone(), &claims, now_ms, keys_version);
                identity
            }
        };
        Ok(Caller {
            client,
            subject: identity.subject,
            user: identity.user,
            scopes: identity.scopes,
            admin: identity.admin,
            customer_group: identity.customer_group,
        })
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

    fn identity_from(&self, claims: &Claims) -> Result<TokenIdentity, AuthError> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        // A subject names someone: an empty one (or one that is not a string) names nobody.
        let subject = text("sub")
            .filter(|sub| !sub.is_empty())
            .ok_or_else(|| AuthError::InvalidToken("the token's sub is empty".into()))?;
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
        let customer_group = match self.customer_group_claim.as_str() {
            "" => None,
            claim => customer_group(claims.get(claim)),
        };
        Ok(TokenIdentity {
            subject,
            user,
            scopes,
            admin,
            customer_group,
        })
    }
}

/// The longest customer group kept; a longer claim is ignored, like one of another type.
const CUSTOMER_GROUP_MAX_CHARS: usize = 100;

/// A customer group claim's value: a string (trimmed; not empty, not over
/// `CUSTOMER_GROUP_MAX_CHARS` characters, no control characters) or an integer as its digits.
/// Anything else names no group: the claim belongs to the identity provider, and a value tandem
/// cannot show as the seed's string is left out rather than refused.
fn customer_group(claim: Option<&Value>) -> Option<String> {
    match claim? {
        Value::String(text) => {
            let text = text.trim();
            // `check_text` lets tabs through, for free text; a group is a name.
            let fits =
                crate::domain::check_text("customerGroup", text, 1, CUSTOMER_GROUP_MAX_CHARS)
                    .is_ok()
                    && !text.contains('\t');
            fits.then(|| text.to_owned())
        }
        Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
        _ => None,
    }
}

/// What `user_id_for` puts before a subject's digest. Subjects that begin with it are digested
/// too, so no token can name a digest as its subject and become that digest's user.
const DIGEST_ID_PREFIX: &str = "sub-";

/// The `userAccountReference.id` for a token subject: the subject itself when it fits the
/// seeds' id pattern, otherwise (e.g. for `auth0|...` subjects, or ones that look like a
/// digest id) `DIGEST_ID_PREFIX` and a stable digest of it.
pub fn user_id_for(subject: &str) -> String {
    if ResourceId::is_valid(subject) && !subject.starts_with(DIGEST_ID_PREFIX) {
        subject.to_owned()
    } else {
        format!(
            "{DIGEST_ID_PREFIX}{}",
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
        // Naming that id as the subject does not make a token that user.
        let forged = user_id_for(&id);
        assert_ne!(forged, id);
        assert!(ResourceId::is_valid(&forged), "{forged}");
    }

    #[tokio::test]
    async fn tokens_without_a_subject_are_refused() {
        for claims in [
            serde_json::json!({"sub": ""}),
            serde_json::json!({"sub": 42}),
            serde_json::json!({}),
        ] {
            let (auth, _) = authenticator_with(claims.clone());
            let refused = auth.authenticate(Some("key"), Some("Bearer t1")).await;
            assert_eq!(
                refused.unwrap_err(),
                AuthError::InvalidToken("the token's sub is empty".into()),
                "{claims}"
            );
        }
    }

    /// Answers with fixed claims and counts how often it was asked.
    struct CountingVerifier {
        claims: Claims,
        calls: std::sync::atomic::AtomicUsize,
        keys_version: std::sync::atomic::AtomicU64,
    }

    #[async_trait::async_trait]
    impl TokenVerifier for CountingVerifier {
        async fn verify(&self, _token: &str) -> Result<Claims, AuthError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.claims.clone())
        }

        fn keys_version(&self) -> u64 {
            self.keys_version.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn authenticator_with(claims: serde_json::Value) -> (Authenticator, Arc<CountingVerifier>) {
        configured_authenticator_with(&AuthConfig::default(), claims)
    }

    fn configured_authenticator_with(
        config: &AuthConfig,
        claims: serde_json::Value,
    ) -> (Authenticator, Arc<CountingVerifier>) {
        let verifier = Arc::new(CountingVerifier {
            claims: claims.as_object().cloned().unwrap_or_default(),
            calls: Default::default(),
            keys_version: Default::default(),
        });
        let keys = [("client".to_owned(), hash_api_key("key"))];
        let auth = Authenticator::new(config, &keys, verifier.clone());
        (auth, verifier)
    }

    fn calls(verifier: &CountingVerifier) -> usize {
        verifier.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_verified_token_is_not_verified_again_until_it_expires() {
        let exp = crate::domain::time::Timestamp::now().millis() / 1000 + 3600;
        let (auth, verifier) = authenticator_with(serde_json::json!({
            "sub": "user-000001", "scope": "banking/read admin", "exp": exp,
        }));
        for _ in 0..3 {
            let caller = auth
                .authenticate(Some("key"), Some("Bearer t1"))
                .await
                .unwrap();
            assert_eq!(caller.client, "client");
            assert_eq!(caller.subject, "user-000001");
            assert!(caller.admin && caller.has_scope("banking/read"));
        }
        assert_eq!(calls(&verifier), 1);
        // Another token is verified on its own.
        auth.authenticate(Some("key"), Some("Bearer t2"))
            .await
            .unwrap();
        assert_eq!(calls(&verifier), 2);
        // The API key is still checked on every call.
        let refused = auth.authenticate(Some("other"), Some("Bearer t1")).await;
        assert_eq!(refused.unwrap_err(), AuthError::UnknownApiKey);
    }

    #[tokio::test]
    async fn cached_tokens_are_verified_again_once_the_keys_change() {
        let exp = crate::domain::time::Timestamp::now().millis() / 1000 + 3600;
        let (auth, verifier) = authenticator_with(serde_json::json!({
            "sub": "user-000001", "exp": exp,
        }));
        let call = || auth.authenticate(Some("key"), Some("Bearer t1"));
        call().await.unwrap();
        call().await.unwrap();
        assert_eq!(calls(&verifier), 1);
        verifier
            .keys_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        call().await.unwrap();
        assert_eq!(calls(&verifier), 2, "verified with the new keys");
        call().await.unwrap();
        assert_eq!(calls(&verifier), 2, "and cached again");
    }

    #[tokio::test]
    async fn expired_or_expiryless_tokens_are_verified_every_time() {
        let past = crate::domain::time::Timestamp::now().millis() / 1000 - 10;
        for claims in [
            serde_json::json!({"sub": "user-000001", "exp": past}),
            serde_json::json!({"sub": "user-000001"}),
        ] {
            let (auth, verifier) = authenticator_with(claims);
            auth.authenticate(Some("key"), Some("Bearer t1"))
                .await
                .unwrap();
            auth.authenticate(Some("key"), Some("Bearer t1"))
                .await
                .unwrap();
            assert_eq!(calls(&verifier), 2);
        }
    }

    #[test]
    fn a_customer_group_is_a_short_string_or_an_integer() {
        use serde_json::json;
        let group = |value: Value| customer_group(Some(&value));
        assert_eq!(group(json!("2")), Some("2".to_owned()));
        assert_eq!(
            group(json!("  retail east ")),
            Some("retail east".to_owned())
        );
        assert_eq!(group(json!(2)), Some("2".to_owned()));
        assert_eq!(group(json!(u64::MAX)), Some(u64::MAX.to_string()));
        assert_eq!(group(json!("é".repeat(100))), Some("é".repeat(100)));
        for ignored in [
            json!(""),
            json!("   "),
            json!("x".repeat(101)),
            json!("a\nb"),
            json!("a\tb"),
            json!(2.5),
            json!(true),
            json!(["2"]),
            json!({"id": "2"}),
            Value::Null,
        ] {
            assert_eq!(group(ignored.clone()), None, "{ignored}");
        }
        assert_eq!(customer_group(None), None);
    }

    #[tokio::test]
    async fn the_configured_claim_names_the_callers_customer_group() {
        let claims = serde_json::json!({
            "sub": "user-000001", "customer_group": "2", "division": 7,
        });
        for (claim, expected) in [
            (
                AuthConfig::default().customer_group_claim.as_str(),
                Some("2"),
            ),
            ("division", Some("7")),
            ("absent", None),
            ("", None),
        ] {
            let config = AuthConfig {
                customer_group_claim: claim.to_owned(),
                ..AuthConfig::default()
            };
            let (auth, _) = configured_authenticator_with(&config, claims.clone());
            let caller = auth
                .authenticate(Some("key"), Some("Bearer t1"))
                .await
                .unwrap();
            assert_eq!(
                caller.customer_group.as_deref(),
                expected,
                "claim {claim:?}"
            );
        }
    }
}
