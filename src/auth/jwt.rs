//! Bearer token verification: a local HMAC key in dev mode, the issuer's JWKS in production.

use super::AuthError;
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

pub type Claims = serde_json::Map<String, serde_json::Value>;

pub const DEV_ISSUER: &str = "tandem-dev";
pub const DEV_AUDIENCE: &str = "tandem";

#[async_trait]
pub trait TokenVerifier: Send + Sync {
    async fn verify(&self, token: &str) -> Result<Claims, AuthError>;
}

fn invalid(err: impl std::fmt::Display) -> AuthError {
    AuthError::InvalidToken(err.to_string())
}

/// Dev mode: HS256 tokens signed with a key generated into the data directory.
pub struct LocalKeyVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl LocalKeyVerifier {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[DEV_ISSUER]);
        validation.set_audience(&[DEV_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }
}

#[async_trait]
impl TokenVerifier for LocalKeyVerifier {
    async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(invalid)
    }
}

/// Signs a dev-mode token.
pub fn sign_dev_token(secret: &[u8], claims: &Claims) -> anyhow::Result<String> {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .context("signing the token")
}

/// Production: tokens signed by the OIDC issuer, verified with its published keys. Keys are
/// refreshed when a token names an unknown key id, at most once a minute.
pub struct OidcVerifier {
    http: reqwest::Client,
    issuer: String,
    audience: String,
    jwks_uri: String,
    keys: RwLock<(JwkSet, Instant)>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);

impl OidcVerifier {
    pub async fn discover(
        http: reqwest::Client,
        discovery_url: &str,
        audience: &str,
    ) -> anyhow::Result<Arc<Self>> {
        let discovery: Discovery = http
            .get(discovery_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("fetching the OIDC discovery document {discovery_url}"))?
            .json()
            .await
            .context("reading the OIDC discovery document")?;
        let keys = fetch_jwks(&http, &discovery.jwks_uri).await?;
        Ok(Arc::new(Self {
            http,
            issuer: discovery.issuer,
            audience: audience.to_owned(),
            jwks_uri: discovery.jwks_uri,
            keys: RwLock::new((keys, Instant::now())),
        }))
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<jsonwebtoken::jwk::Jwk, AuthError> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        {
            let keys = self.keys.read().await;
            if let Some(jwk) = find(&keys.0) {
                return Ok(jwk);
            }
            if keys.1.elapsed() < REFRESH_AT_MOST_EVERY {
                return Err(invalid("unknown signing key"));
            }
        }
        let mut keys = self.keys.write().await;
        if keys.1.elapsed() >= REFRESH_AT_MOST_EVERY {
            match fetch_jwks(&self.http, &self.jwks_uri).await {
                Ok(fresh) => *keys = (fresh, Instant::now()),
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "refreshing the JWKS failed");
                    keys.1 = Instant::now();
                }
            }
        }
        find(&keys.0).ok_or_else(|| invalid("unknown signing key"))
    }
}

async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> anyhow::Result<JwkSet> {
    http.get(uri)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("fetching the JWKS {uri}"))?
        .json()
        .await
        .context("reading the JWKS")
}

#[async_trait]
impl TokenVerifier for OidcVerifier {
    async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = decode_header(token).map_err(invalid)?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(invalid("symmetric algorithms are not accepted"));
        }
        let jwk = self.key_for(header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| invalid(anyhow!(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(exp_offset: i64) -> Claims {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({"sub": "user-1", "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "exp": now + exp_offset, "scope": "banking/read"})
            .as_object()
            .unwrap()
            .clone()
    }

    #[tokio::test]
    async fn local_tokens_round_trip() {
        let secret = [7u8; 32];
        let token = sign_dev_token(&secret, &claims(600)).unwrap();
        let verified = LocalKeyVerifier::new(&secret).verify(&token).await.unwrap();
        assert_eq!(verified["sub"], "user-1");
    }

    #[tokio::test]
    async fn expired_wrong_key_and_garbage_tokens_are_refused() {
        let secret = [7u8; 32];
        let verifier = LocalKeyVerifier::new(&secret);
        let expired = sign_dev_token(&secret, &claims(-3600)).unwrap();
        assert!(verifier.verify(&expired).await.is_err());
        let other = sign_dev_token(&[8u8; 32], &claims(600)).unwrap();
        assert!(verifier.verify(&other).await.is_err());
        assert!(verifier.verify("not.a.token").await.is_err());
        let mut wrong_audience = claims(600);
        wrong_audience.insert("aud".into(), json!("someone-else"));
        let token = sign_dev_token(&secret, &wrong_audience).unwrap();
        assert!(verifier.verify(&token).await.is_err());
    }
}
