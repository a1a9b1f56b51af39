//! Bearer token verification: a local HMAC key in dev mode, the issuer's JWKS in production.

use super::AuthError;
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation, decode,
    decode_header, encode,
};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, watch};

pub type Claims = serde_json::Map<String, serde_json::Value>;

pub const DEV_ISSUER: &str = "tandem-dev";
pub const DEV_AUDIENCE: &str = "tandem";

#[async_trait]
pub trait TokenVerifier: Send + Sync {
    async fn verify(&self, token: &str) -> Result<Claims, AuthError>;

    /// Changes whenever the keys tokens are verified with change, so that a token verified
    /// with a key since withdrawn is not taken from a cache of verified tokens.
    fn keys_version(&self) -> u64 {
        0
    }
}

fn invalid(err: impl std::fmt::Display) -> AuthError {
    AuthError::InvalidToken(err.to_string())
}

/// Clock skew tolerated between the issuer and tandem, on `exp` and `nbf` alike.
const CLOCK_SKEW_LEEWAY_SECS: u64 = 60;

/// The claim checks every token gets, whoever signed it: `exp`, `sub`, `iss` and `aud` present,
/// the issuer and audience expected, and the token inside its validity period (`nbf` when it
/// has one, `exp`), give or take the leeway.
fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = CLOCK_SKEW_LEEWAY_SECS;
    validation
}

/// Dev mode: HS256 tokens signed with a key generated into the data directory.
pub struct LocalKeyVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl LocalKeyVerifier {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256, DEV_ISSUER, DEV_AUDIENCE),
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

/// Production: tokens signed by the OIDC issuer, verified with the keys it publishes (its JWKS).
///
/// The key set is fetched again on a schedule (`refresh_until_stopped`) and when a token names
/// an unknown key id (at most once a minute), and each fetch replaces it whole, so that a key
/// the issuer withdraws stops being trusted at the next fetch.
pub struct OidcVerifier {
    http: reqwest::Client,
    issuer: String,
    audience: String,
    jwks_uri: String,
    /// How long a fetched key set is used when the issuer's response gives no max-age.
    default_refresh: Duration,
    /// When the scheduled refresh first fetches again after start-up.
    first_refresh: Duration,
    keys: RwLock<JwkSet>,
    /// Bumped whenever a fetch brings a key set unlike the one held.
    keys_version: AtomicU64,
    /// When a token with an unknown key id last made tandem fetch the key set.
    last_unknown_key_fetch: Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Tokens naming made-up key ids must not make tandem hammer the issuer.
const UNKNOWN_KEY_FETCH_SPACING: Duration = Duration::from_secs(60);

/// The issuer's `Cache-Control: max-age` on its JWKS is honoured within these bounds: a key set
/// is fetched again no sooner than a minute (whatever the issuer says, e.g. `no-cache`) and no
/// later than a day (so a withdrawn key is dropped within a day even if the issuer asks for
/// longer caching).
const MAX_AGE_FLOOR: Duration = Duration::from_secs(60);
const MAX_AGE_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

impl OidcVerifier {
    /// Reads the discovery document and fetches the key set; either failing stops start-up.
    /// `default_refresh` is how often the key set is fetched again when the issuer's response
    /// gives no `Cache-Control: max-age`.
    pub async fn discover(
        http: reqwest::Client,
        discovery_url: &str,
        audience: &str,
        default_refresh: Duration,
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
        let fetched = fetch_jwks(&http, &discovery.jwks_uri).await?;
        Ok(Arc::new(Self {
            http,
            issuer: discovery.issuer,
            audience: audience.to_owned(),
            jwks_uri: discovery.jwks_uri,
            default_refresh,
            first_refresh: refresh_interval(fetched.max_age, default_refresh),
            keys: RwLock::new(fetched.keys),
            keys_version: AtomicU64::new(0),
            last_unknown_key_fetch: Mutex::new(None),
        }))
    }

    /// Fetches the key set again whenever the last one's lifetime is over (its max-age, or the
    /// configured interval), until `stop` turns true. A fetch in flight is abandoned then: it
    /// has nothing to finish, and a slow issuer must not hold up shutdown.
    pub async fn refresh_until_stopped(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut wait = self.first_refresh;
        loop {
            let next_refresh = async {
                tokio::time::sleep(wait).await;
                self.refresh().await
            };
            tokio::select! {
                next_wait = next_refresh => wait = next_wait,
                _ = stop.changed() => return,
            }
        }
    }

    /// Fetches the key set and puts it in place of the one held, whole: keys the issuer no
    /// longer publishes go. When the fetch fails the held set stays in use. Returns how long
    /// until the next scheduled fetch.
    async fn refresh(&self) -> Duration {
        match fetch_jwks(&self.http, &self.jwks_uri).await {
            Ok(fetched) => {
                let mut keys = self.keys.write().await;
                if *keys != fetched.keys {
                    *keys = fetched.keys;
                    self.keys_version.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(keys = keys.keys.len(), "the issuer's signing keys changed");
                }
                refresh_interval(fetched.max_age, self.default_refresh)
            }
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "refreshing the JWKS failed; the keys fetched before stay in use"
                );
                self.default_refresh
            }
        }
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, AuthError> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        if let Some(jwk) = find(&*self.keys.read().await) {
            return Ok(jwk);
        }
        // The issuer may have just started signing with a key it published after our last
        // fetch.
        {
            let mut last = self
                .last_unknown_key_fetch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KEY_FETCH_SPACING) {
                return Err(invalid("unknown signing key"));
            }
            *last = Some(Instant::now());
        }
        self.refresh().await;
        find(&*self.keys.read().await).ok_or_else(|| invalid("unknown signing key"))
    }
}

/// How long until a key set is fetched again: its max-age within `MAX_AGE_FLOOR` and
/// `MAX_AGE_CEILING`, or `default` when the issuer gave none.
fn refresh_interval(max_age: Option<Duration>, default: Duration) -> Duration {
    max_age.map_or(default, |age| age.clamp(MAX_AGE_FLOOR, MAX_AGE_CEILING))
}

/// The max-age a `Cache-Control` header value gives; `no-cache` and `no-store` count as 0.
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age")
            && let Ok(secs) = value.trim_matches('"').parse::<u64>()
        {
            max_age = Some(Duration::from_secs(secs));
        }
    }
    max_age
}

struct FetchedKeys {
    keys: JwkSet,
    max_age: Option<Duration>,
}

async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> anyhow::Result<FetchedKeys> {
    let response = http
        .get(uri)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("fetching the JWKS {uri}"))?;
    let max_age = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .and_then(max_age);
    let keys = response
        .json()
        .await
        .with_context(|| format!("reading the JWKS {uri}"))?;
    Ok(FetchedKeys { keys, max_age })
}

/// Whether `jwk` may verify a token signed with `alg`: it must be a signing key (`use` absent
/// or `sig`), of the key type `alg` needs (and the curve, for elliptic curves), and of `alg`
/// itself when the key declares an algorithm. The signature check alone would let, e.g., a
/// PS256 token through on a key published for RS256 only.
fn check_key_fits(jwk: &Jwk, alg: Algorithm) -> Result<(), AuthError> {
    let kid = jwk.common.key_id.as_deref().unwrap_or("(no kid)");
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err(invalid(format!(
            "the key {kid} is not a signing key (use {usage:?})"
        )));
    }
    if let Some(declared) = jwk.common.key_algorithm
        && declared != KeyAlgorithm::from(alg)
    {
        return Err(invalid(format!(
            "the token's alg {alg:?} is not the alg {declared} of the key {kid}"
        )));
    }
    let fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => alg.family() == AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
        }
        // Symmetric keys (`oct`) are never taken from a published set, nor unknown types.
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(invalid(format!(
            "the token's alg {alg:?} does not fit the type of the key {kid}"
        )))
    }
}

#[async_trait]
impl TokenVerifier for OidcVerifier {
    async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = decode_header(token).map_err(invalid)?;
        if header.alg.family() == AlgorithmFamily::Hmac {
            return Err(invalid("symmetric algorithms are not accepted"));
        }
        let jwk = self.key_for(header.kid.as_deref()).await?;
        check_key_fits(&jwk, header.alg)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
        decode::<Claims>(
            token,
            &key,
            &validation(header.alg, &self.issuer, &self.audience),
        )
        .map(|data| data.claims)
        .map_err(|e| invalid(anyhow!(e)))
    }

    fn keys_version(&self) -> u64 {
        self.keys_version.load(Ordering::SeqCst)
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

    #[tokio::test]
    async fn tokens_are_refused_before_their_nbf_give_or_take_the_leeway() {
        let secret = [7u8; 32];
        let verifier = LocalKeyVerifier::new(&secret);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leeway = CLOCK_SKEW_LEEWAY_SECS as i64;
        for (nbf, accepted) in [
            (now - 10, true),
            (now + leeway - 10, true),
            (now + leeway + 10, false),
            (now + 3600, false),
        ] {
            let mut claims = claims(7200);
            claims.insert("nbf".into(), json!(nbf));
            let token = sign_dev_token(&secret, &claims).unwrap();
            let verified = verifier.verify(&token).await;
            assert_eq!(verified.is_ok(), accepted, "nbf now{:+}", nbf - now);
        }
    }

    #[test]
    fn the_refresh_interval_is_the_issuers_max_age_within_bounds() {
        let default = Duration::from_secs(600);
        let interval = |header: Option<&str>| refresh_interval(header.and_then(max_age), default);
        assert_eq!(interval(None), default);
        assert_eq!(interval(Some("public")), default);
        assert_eq!(interval(Some("max-age=oops")), default);
        assert_eq!(
            interval(Some("public, max-age=300, must-revalidate")),
            Duration::from_secs(300)
        );
        assert_eq!(interval(Some("Max-Age=\"900\"")), Duration::from_secs(900));
        for too_short in [
            "max-age=0",
            "max-age=5",
            "no-cache",
            "no-store, max-age=3600",
        ] {
            assert_eq!(interval(Some(too_short)), MAX_AGE_FLOOR, "{too_short}");
        }
        assert_eq!(interval(Some("max-age=31536000")), MAX_AGE_CEILING);
    }

    #[test]
    fn a_key_verifies_only_the_algorithm_and_type_it_is_for() {
        let jwk = |value: serde_json::Value| -> Jwk { serde_json::from_value(value).unwrap() };
        let rsa = |extra: serde_json::Value| {
            let mut key = json!({"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"});
            key.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            jwk(key)
        };
        let ec = |crv: &str| jwk(json!({"kty": "EC", "crv": crv, "x": "AA", "y": "AA"}));
        let okp = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}));
        let oct = jwk(json!({"kty": "oct", "k": "AA"}));
        let fits = |key: &Jwk, alg| check_key_fits(key, alg).is_ok();

        let any_rsa = rsa(json!({}));
        for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
            assert!(fits(&any_rsa, alg), "{alg:?}");
        }
        let rs256 = rsa(json!({"alg": "RS256", "use": "sig"}));
        assert!(fits(&rs256, Algorithm::RS256));
        assert!(!fits(&rs256, Algorithm::PS256));
        assert!(!fits(&rs256, Algorithm::RS384));
        assert!(!fits(&rsa(json!({"use": "enc"})), Algorithm::RS256));
        assert!(!fits(&rsa(json!({"use": "other"})), Algorithm::RS256));
        assert!(!fits(&rsa(json!({"alg": "RSA-OAEP"})), Algorithm::RS256));
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256] {
            assert!(!fits(&any_rsa, alg), "{alg:?} on RSA");
        }
        assert!(fits(&ec("P-256"), Algorithm::ES256));
        assert!(!fits(&ec("P-256"), Algorithm::ES384));
        assert!(fits(&ec("P-384"), Algorithm::ES384));
        assert!(!fits(&ec("P-384"), Algorithm::RS256));
        assert!(fits(&okp, Algorithm::EdDSA));
        assert!(!fits(&okp, Algorithm::ES256));
        assert!(!fits(&oct, Algorithm::HS256));
    }
}
