//! Bearer token verification over HTTP: production tokens verified with the keys an OIDC issuer
//! publishes (a fake issuer on 127.0.0.1), and the claim checks dev mode shares with it.

mod common;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header::CACHE_CONTROL};
use axum::response::IntoResponse;
use axum::{Json, Router, routing::get};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Backend, TestApp};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem::config::{ApiKeyConfig, Config, Mode, OidcConfig};

const API_KEY: &str = "production-client-key";
const BASE: &str = "/bankingAdmin/customerAudienceConnections";

/// A 2048-bit RSA key for these tests only: PKCS#1 DER, base64.
const RSA_PRIVATE_DER_BASE64: &str = concat!(
    "MIIEowIBAAKCAQEAodmc6tJ2HVtMKzDzzYepX2FL+xNU+KbLWqk7elNDN9s6cN8KH3tU4prDFS83Q0CxKK1WvQBA",
    "s+HyO4t9OlyAxfoLB5Hr4fNOY1TWKxQR4dnM65sP0P4UZwpQXv9sM2HL1cqgmD9HLwhy4OAc4/yuTtjMAb+j0e2E",
    "pb937IUYXd6gHeB88Ra5ZHxoN0SDQ+46kBrJxqbRFJAHtI78wi7/zZR7Lj08d0YV2/TCpN5nDImNey6pwbRP5pHB",
    "cgJUFqDxyX9xWIQcC/iDgmlPUyBVwKQW0uUaC5Ehym0uVhb0nUuPwPvp3wVtsrnxjAUJZSFoKJj7y7n/hdWBYNPp",
    "RQkSaQIDAQABAoIBACCxw6nI5XzFKFQSQbG7TZrbnfxkWZYYJXyVMpNhlfLG2Z2a5KHa6VkUP8O8A7sVaqQnrd2k",
    "my1rP2JJaXzcWlQD0G4RS1fbrTJSHShbF8iqlWNjsbR7WvY8pmMmUD5p60Hu+nV+1NuappAoHZXtgW2ijEVvJ8Hc",
    "q97KmIhiE3vEjo8CB0PezXRUlTQgD1Gm1RKJy0Qb/FGKu0MKL/EAZ2HPNyxAnFYi9z9v43qAUCtAWCJSn8Tj31AZ",
    "k5rMcfFHIjKnl4v8y9SHkGfgwCwFaYLQgd1QLhTt0x1ordvvszm5b25Wxn5fiqQFjnXmrGeApAgWSeEAzBcazQdZ",
    "N30Y7s0CgYEAzoc5eISsdZF79HYdo4G6t3hIBlyr1vugFdWkv1RybTD8d9mJ/v0DOh5CUYisCJEf6LqHyXd0Bcq7",
    "yGRoBt5Gt3Y2CBTfisq9s58d4/LkRhQ5DnHSxHWgyi5DRMBNtFiiTjS1VRaJ/Z5OGN9qHsNDI8xGld2xP2+2yBSy",
    "gFkR9D0CgYEAyJ6fWr8g6G3pQHGx9S9XlglMf9yHZ6bRZ9FDkYIDvtOsgYQl6aanScfz6NLps5asSVjq3SXBGt+W",
    "km2ng5FZrplZco3gXwKyAzICJSST60bNB7I5Wps+bgHy7AiqyXs99y+23txokICNCfriXwO2pP5mXUy/w+SUjWOy",
    "oV2e/Z0CgYEAkIt74amZuj80bggs/j7Rm48HecxqSHCbvixkvbQw0dMzH/6U4m3aUFbVO5NYNDa+CnhiiNKd1V/q",
    "xXnghM4U2FpXvpg9TDpRQuHeXaeltJZ6yG1Jgk6BVn/CfN/Kgqp2Dh49u2um8GZXankTIKyw1OEnlcQvRaK+XpJ9",
    "y+6K7lECgYAD3DF6wIS0lDDRwZ5H9nI7+8/SAf9E+ku7MKaZLSQ/TrlaAJ3uIfvECqnhx/UhNHv6KVDTkn9lsfmm",
    "tZ9sg6ZzGpZDAwHXMikUsKij6FFETKdzR3WdDbGk0jrHWd9XYxytHejp3tnQNfkAwSgL5flksVRs5SYnccV99vYf",
    "7ro5bQKBgB8mFw9A2ES1MZb0w7aL7jdPfoujXV8SiBbRgOtoOs7tPqgDxw8qGK1F9aproM5RXOpNbw+BRDM0d0Z2",
    "BaJjPUPY0HHLUvxcOr/FCBBlOKxIGfPdHrkSmdEmQOAHHd7Tt9AAtv4arELMg04MTA9t3qQSVZfe73If1VAR1o1d",
    "i56f",
);
/// The key's public modulus, base64url as a JWK carries it (the exponent is 65537, `AQAB`).
const RSA_MODULUS: &str = concat!(
    "odmc6tJ2HVtMKzDzzYepX2FL-xNU-KbLWqk7elNDN9s6cN8KH3tU4prDFS83Q0CxKK1WvQBAs-HyO4t9OlyAxfoL",
    "B5Hr4fNOY1TWKxQR4dnM65sP0P4UZwpQXv9sM2HL1cqgmD9HLwhy4OAc4_yuTtjMAb-j0e2Epb937IUYXd6gHeB8",
    "8Ra5ZHxoN0SDQ-46kBrJxqbRFJAHtI78wi7_zZR7Lj08d0YV2_TCpN5nDImNey6pwbRP5pHBcgJUFqDxyX9xWIQc",
    "C_iDgmlPUyBVwKQW0uUaC5Ehym0uVhb0nUuPwPvp3wVtsrnxjAUJZSFoKJj7y7n_hdWBYNPpRQkSaQ",
);

/// A fake issuer: its discovery document and a JWKS the test replaces, makes fail or hang,
/// and counts the fetches of.
struct FakeIssuer {
    base: String,
    jwks: Arc<Mutex<Served>>,
    fetches: Arc<AtomicUsize>,
}

/// What the fake issuer's `/jwks` does.
#[derive(Clone)]
enum Served {
    Keys(Value),
    /// Answers 503.
    Failing,
    /// Never answers.
    Hanging,
}

impl FakeIssuer {
    /// Serves `jwks`, with `Cache-Control: <cache_control>` when given.
    async fn start(jwks: Value, cache_control: Option<&'static str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
        let served = Arc::new(Mutex::new(Served::Keys(jwks)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (jwks, count) = (served.clone(), fetches.clone());
        let serve_jwks = move || {
            count.fetch_add(1, Ordering::SeqCst);
            let current = jwks.lock().unwrap().clone();
            async move {
                let current = match current {
                    Served::Keys(jwks) => jwks,
                    Served::Failing => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    Served::Hanging => std::future::pending().await,
                };
                let mut headers = HeaderMap::new();
                if let Some(value) = cache_control {
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
                }
                (headers, Json(current)).into_response()
            }
        };
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(serve_jwks));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            jwks: served,
            fetches,
        }
    }

    fn serve(&self, served: Served) {
        *self.jwks.lock().unwrap() = served;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn ed25519_jwk(key: &SigningKey, kid: &str) -> Value {
    json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
    })
}

/// The test RSA key's JWK, with `extra` members (`alg`, `use`) added.
fn rsa_jwk(kid: &str, extra: Value) -> Value {
    let mut jwk = json!({"kty": "RSA", "kid": kid, "n": RSA_MODULUS, "e": "AQAB"});
    for (name, value) in extra.as_object().unwrap() {
        jwk[name] = value.clone();
    }
    jwk
}

/// Production needs a relay; these tests send no email.
fn unused_relay() -> tandem::config::SmtpConfig {
    tandem::config::SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(9),
        tls: tandem::config::SmtpTls::None,
        username: None,
        password: None,
        timeout_secs: 5,
    }
}

/// The service in production mode, trusting `issuer` and refreshing its JWKS every
/// `jwks_refresh_secs` (unless the issuer's `Cache-Control` says otherwise).
async fn production_app(issuer: &FakeIssuer, jwks_refresh_secs: u64) -> TestApp {
    TestApp::spawn_with(
        Backend::Sqlite,
        production_settings(issuer, jwks_refresh_secs),
    )
    .await
}

fn production_settings(issuer: &FakeIssuer, jwks_refresh_secs: u64) -> impl FnOnce(&mut Config) {
    let discovery_url = format!("{}/.well-known/openid-configuration", issuer.base);
    move |c| {
        c.mode = Mode::Production;
        c.email.smtp = Some(unused_relay());
        c.invitations.secret_key = Some(tandem::domain::sealed::SecretBox::generate_key());
        c.auth.oidc = Some(OidcConfig {
            discovery_url,
            audience: "tandem".into(),
            jwks_refresh_secs,
        });
        c.providers.insert(
            "file".into(),
            tandem::config::ProviderConfig::File {
                directory: None,
                schedule: Default::default(),
            },
        );
        c.auth.api_keys = vec![ApiKeyConfig {
            name: "web".into(),
            sha256: hex::encode(tandem::auth::hash_api_key(API_KEY)),
        }];
    }
}

fn token(key: &SigningKey, kid: &str, claims: Value) -> String {
    let der = key.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

/// A token signed with the test RSA key under `alg` (an RS* or PS* algorithm).
fn rsa_token(alg: Algorithm, kid: &str, claims: Value) -> String {
    let der = STANDARD.decode(RSA_PRIVATE_DER_BASE64).unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, &claims, &EncodingKey::from_rsa_der(&der)).unwrap()
}

/// Claims of a token unlike any other (its own `jti`), so that no test meets a token the
/// service has already verified.
fn claims(issuer: &str, audience: &str, exp_offset: i64) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "iss": issuer, "aud": audience, "sub": "staff-000042", "exp": now + exp_offset,
        "scope": "admin", "preferred_username": "opsadmin", "given_name": "Olive", "family_name": "Ops",
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

fn with_claim(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The status of listing connections with `token` and the production API key.
async fn status(app: &TestApp, token: &str) -> u16 {
    app.client
        .get(app.url(BASE))
        .header("API-Key", API_KEY)
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `status` of `token` every 100 ms until it is `expected`; false after `within`.
async fn status_becomes(app: &TestApp, token: &str, expected: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if status(app, token).await == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_configured_issuer_are_accepted_and_others_refused() {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let issuer = FakeIssuer::start(json!({"keys": [ed25519_jwk(&key, "k1")]}), None).await;
    let app = production_app(&issuer, 600).await;
    let issuer = issuer.base.as_str();
    let call = |api_key: &str, token: String| {
        app.client
            .get(app.url(BASE))
            .header("API-Key", api_key)
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };

    let good = token(&key, "k1", claims(issuer, "tandem", 300));
    assert_eq!(call(API_KEY, good.clone()).await.unwrap().status(), 200);

    // The token's claims become createdBy.
    let res = app
        .client
        .post(app.url(BASE))
        .header("API-Key", API_KEY)
        .header("Authorization", format!("Bearer {good}"))
        .json(&json!({"audience": {"id": "audience-1"}, "provider": {"name": "file"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(
        created["createdBy"],
        json!({"id": "staff-000042", "username": "opsadmin", "firstName": "Olive", "lastName": "Ops"})
    );

    let other_key = SigningKey::from_bytes(&[7u8; 32]);
    let refused = [
        (
            "the dev key's API key is unknown here",
            call("tandem-dev-key", good.clone()),
        ),
        (
            "wrong audience",
            call(
                API_KEY,
                token(&key, "k1", claims(issuer, "someone-else", 300)),
            ),
        ),
        (
            "wrong issuer",
            call(
                API_KEY,
                token(&key, "k1", claims("https://evil.example", "tandem", 300)),
            ),
        ),
        (
            "expired",
            call(API_KEY, token(&key, "k1", claims(issuer, "tandem", -600))),
        ),
        (
            "signed by another key",
            call(
                API_KEY,
                token(&other_key, "k1", claims(issuer, "tandem", 300)),
            ),
        ),
        (
            "unknown key id",
            call(API_KEY, token(&key, "k2", claims(issuer, "tandem", 300))),
        ),
        (
            "a symmetric token",
            call(
                API_KEY,
                encode(
                    &Header::new(Algorithm::HS256),
                    &claims(issuer, "tandem", 300),
                    &EncodingKey::from_secret(b"guess"),
                )
                .unwrap(),
            ),
        ),
    ];
    for (case, request) in refused {
        assert_eq!(request.await.unwrap().status(), 401, "{case}");
    }
}

/// The key set is fetched again on the configured schedule and replaced whole: a key the issuer
/// no longer publishes stops being trusted, even for tokens already verified with it, and a
/// failed fetch keeps the last good set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_issuer_withdraws_stops_being_trusted_at_the_next_refresh() {
    let old_key = SigningKey::from_bytes(&[42u8; 32]);
    let new_key = SigningKey::from_bytes(&[43u8; 32]);
    let issuer = FakeIssuer::start(json!({"keys": [ed25519_jwk(&old_key, "k1")]}), None).await;
    let app = production_app(&issuer, 1).await;
    let old_token = token(&old_key, "k1", claims(&issuer.base, "tandem", 300));
    assert_eq!(status(&app, &old_token).await, 200);

    // The issuer rotates: k1 withdrawn, k2 published.
    issuer.serve(Served::Keys(json!({"keys": [ed25519_jwk(&new_key, "k2")]})));
    assert!(
        status_becomes(&app, &old_token, 401, Duration::from_secs(10)).await,
        "a token signed with the withdrawn key k1 is still accepted 10 s after the issuer \
         stopped publishing it ({} JWKS fetches)",
        issuer.fetches()
    );
    let new_token = token(&new_key, "k2", claims(&issuer.base, "tandem", 300));
    assert_eq!(status(&app, &new_token).await, 200);

    // The issuer fails: two refreshes later, its last published set still holds.
    issuer.serve(Served::Failing);
    let failed_from = issuer.fetches();
    let deadline = Instant::now() + Duration::from_secs(10);
    while issuer.fetches() < failed_from + 2 {
        assert!(Instant::now() < deadline, "the JWKS is not fetched again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh_token = token(&new_key, "k2", claims(&issuer.base, "tandem", 300));
    assert_eq!(status(&app, &fresh_token).await, 200, "k2 still trusted");
    assert_eq!(status(&app, &old_token).await, 401, "k1 still withdrawn");
}

/// The issuer's `Cache-Control: max-age` sets when the key set is fetched again, in place of
/// the configured interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuers_max_age_sets_the_refresh_interval() {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let jwks = json!({"keys": [ed25519_jwk(&key, "k1")]});
    let issuer = FakeIssuer::start(jwks, Some("public, max-age=3600")).await;
    let _app = production_app(&issuer, 1).await;
    assert_eq!(issuer.fetches(), 1, "fetched at start-up");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(issuer.fetches(), 1, "not fetched again within the hour");
}

/// The key refresh stops with the service, even with a fetch in flight to an issuer that does
/// not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_key_refresh_does_not_hold_up_shutdown() {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let issuer = FakeIssuer::start(json!({"keys": [ed25519_jwk(&key, "k1")]}), None).await;
    let data_dir = std::env::temp_dir().join(format!("tandem-oidc-{}", uuid::Uuid::new_v4()));
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    production_settings(&issuer, 1)(&mut config);
    let app = tandem::app::Application::build(config).await.unwrap();
    issuer.serve(Served::Hanging);
    let (shut_down, shutdown) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = shutdown.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while issuer.fetches() < 2 {
        assert!(Instant::now() < deadline, "the JWKS is not fetched again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    shut_down.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the service stops within 5 s while a key fetch hangs")
        .unwrap()
        .unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(data_dir);
}

/// `nbf` is checked with the leeway `exp` has (60 s) for clock skew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_not_yet_valid_are_refused() {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let issuer = FakeIssuer::start(json!({"keys": [ed25519_jwk(&key, "k1")]}), None).await;
    let app = production_app(&issuer, 600).await;
    let not_before = |offset: i64| {
        let claims = claims(&issuer.base, "tandem", 3600);
        token(
            &key,
            "k1",
            with_claim(claims, "nbf", json!(now_secs() + offset)),
        )
    };
    assert_eq!(
        status(&app, &not_before(600)).await,
        401,
        "valid in 10 minutes"
    );
    assert_eq!(
        status(&app, &not_before(120)).await,
        401,
        "valid in 2 minutes"
    );
    assert_eq!(
        status(&app, &not_before(30)).await,
        200,
        "within the leeway"
    );
    assert_eq!(status(&app, &not_before(-30)).await, 200, "already valid");
}

/// Dev mode's tokens get the same `nbf` check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_not_yet_valid_are_refused() {
    use tandem::auth::dev::DevCredentials;
    use tandem::auth::jwt::{DEV_AUDIENCE, DEV_ISSUER, sign_dev_token};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let credentials = DevCredentials::load_or_create(&app.config.data_dir).unwrap();
    let not_before = |offset: i64| {
        let claims = json!({
            "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "staff-000042", "scope": "admin",
            "exp": now_secs() + 3600, "nbf": now_secs() + offset,
        });
        sign_dev_token(&credentials.signing_key, claims.as_object().unwrap()).unwrap()
    };
    let call = |token: String| {
        app.client
            .get(app.url(BASE))
            .header("API-Key", &credentials.api_key)
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    let res = call(not_before(600)).await.unwrap();
    common::assert_problem(res, 401, "unauthorized").await;
    assert_eq!(call(not_before(-30)).await.unwrap().status(), 200);
}

/// A key verifies only tokens of its own type (`kty`), of the algorithm it declares (`alg`),
/// and only if it is a signing key (`use` absent or `sig`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_must_fit_the_key_it_names() {
    let ed_key = SigningKey::from_bytes(&[42u8; 32]);
    let jwks = json!({"keys": [
        rsa_jwk("rs256", json!({"alg": "RS256", "use": "sig"})),
        rsa_jwk("any-rsa", json!({})),
        rsa_jwk("encryption", json!({"use": "enc"})),
        ed25519_jwk(&ed_key, "ed"),
    ]});
    let issuer = FakeIssuer::start(jwks, None).await;
    let app = production_app(&issuer, 600).await;
    let claims = || claims(&issuer.base, "tandem", 300);
    let accepted = [
        (
            "RS256 on the RS256 key",
            rsa_token(Algorithm::RS256, "rs256", claims()),
        ),
        (
            "PS256 on a key declaring no alg",
            rsa_token(Algorithm::PS256, "any-rsa", claims()),
        ),
        (
            "RS512 on a key declaring no alg",
            rsa_token(Algorithm::RS512, "any-rsa", claims()),
        ),
    ];
    for (case, token) in accepted {
        assert_eq!(status(&app, &token).await, 200, "{case}");
    }
    let refused = [
        (
            "PS256 on the RS256 key",
            rsa_token(Algorithm::PS256, "rs256", claims()),
        ),
        (
            "RS384 on the RS256 key",
            rsa_token(Algorithm::RS384, "rs256", claims()),
        ),
        (
            "RS256 on an encryption key",
            rsa_token(Algorithm::RS256, "encryption", claims()),
        ),
        (
            "RS256 on an Ed25519 key",
            rsa_token(Algorithm::RS256, "ed", claims()),
        ),
        ("EdDSA on an RSA key", token(&ed_key, "any-rsa", claims())),
    ];
    for (case, token) in refused {
        assert_eq!(status(&app, &token).await, 401, "{case}");
    }
}

/// A subject is someone: an empty one is refused, and the id a subject outside the id pattern
/// maps to cannot be taken by a token naming that id as its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_subjects_are_refused_and_mapped_ids_cannot_be_claimed() {
    use reqwest::Method;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let staff = |subject: &str| {
        let mut request = common::admin_token();
        request.subject = subject.to_owned();
        app.headers(&request)
    };
    let res = app
        .with(&staff(""), Method::GET, BASE)
        .send()
        .await
        .unwrap();
    common::assert_problem(res, 401, "unauthorized").await;

    let create = async |subject: &str, audience: &str| {
        let res = app
            .with(&staff(subject), Method::POST, BASE)
            .json(&json!({"audience": {"id": audience}, "provider": {"name": "file"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "create as {subject:?}");
        let created = common::json(res).await;
        created["createdBy"]["id"].as_str().unwrap().to_owned()
    };
    let mapped = create("auth0|5f7c8ec7c33c6c004bbafe82", "audience-1").await;
    assert!(mapped.starts_with("sub-"), "{mapped}");
    let forger = create(&mapped, "audience-2").await;
    assert_ne!(
        forger, mapped,
        "a token whose sub is {mapped} became that user"
    );
    let plain = create("staff-000042", "audience-3").await;
    assert_eq!(
        plain, "staff-000042",
        "ids in the pattern are kept as they are"
    );
}

#[tokio::test]
async fn production_refuses_to_start_when_the_issuer_is_unreachable() {
    let mut config = tandem::config::Config {
        mode: Mode::Production,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: std::env::temp_dir().join(format!("tandem-oidc-{}", uuid::Uuid::new_v4())),
        ..Default::default()
    };
    config.auth.oidc = Some(OidcConfig {
        discovery_url: "http://127.0.0.1:9/.well-known/openid-configuration".into(),
        audience: "tandem".into(),
        jwks_refresh_secs: 600,
    });
    let err = tandem::app::Application::build(config.clone())
        .await
        .err()
        .expect("start-up fails");
    assert!(format!("{err:#}").contains("OIDC discovery"), "{err:#}");
    let _ = std::fs::remove_dir_all(config.data_dir);
}
