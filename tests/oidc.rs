//! Production authentication: bearer tokens verified with the keys an OIDC issuer publishes.

mod common;

use axum::{Json, Router, routing::get};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, TestApp};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tandem::config::{ApiKeyConfig, Mode, OidcConfig};

const API_KEY: &str = "production-client-key";
const BASE: &str = "/bankingAdmin/customerAudienceConnections";

/// A fake issuer: its discovery document and a JWKS with one Ed25519 key, `kid = "k1"`.
async fn start_issuer(key: &SigningKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "k1",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
    }]});
    let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route("/jwks", get(move || async move { Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
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

fn token(key: &SigningKey, kid: &str, claims: Value) -> String {
    let der = key.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

fn claims(issuer: &str, audience: &str, exp_offset: i64) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "iss": issuer, "aud": audience, "sub": "staff-000042", "exp": now + exp_offset,
        "scope": "admin", "preferred_username": "opsadmin", "given_name": "Olive", "family_name": "Ops",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_configured_issuer_are_accepted_and_others_refused() {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let issuer = start_issuer(&key).await;
    let discovery_url = format!("{issuer}/.well-known/openid-configuration");
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.mode = Mode::Production;
        c.email.smtp = Some(unused_relay());
        c.invitations.secret_key = Some(tandem::domain::sealed::SecretBox::generate_key());
        c.auth.oidc = Some(OidcConfig {
            discovery_url,
            audience: "tandem".into(),
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
    })
    .await;
    let call = |api_key: &str, token: String| {
        app.client
            .get(app.url(BASE))
            .header("API-Key", api_key)
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };

    let good = token(&key, "k1", claims(&issuer, "tandem", 300));
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
                token(&key, "k1", claims(&issuer, "someone-else", 300)),
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
            call(API_KEY, token(&key, "k1", claims(&issuer, "tandem", -600))),
        ),
        (
            "signed by another key",
            call(
                API_KEY,
                token(&other_key, "k1", claims(&issuer, "tandem", 300)),
            ),
        ),
        (
            "unknown key id",
            call(API_KEY, token(&key, "k2", claims(&issuer, "tandem", 300))),
        ),
        (
            "a symmetric token",
            call(
                API_KEY,
                encode(
                    &Header::new(Algorithm::HS256),
                    &claims(&issuer, "tandem", 300),
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
    });
    let err = tandem::app::Application::build(config.clone())
        .await
        .err()
        .expect("start-up fails");
    assert!(format!("{err:#}").contains("OIDC discovery"), "{err:#}");
    let _ = std::fs::remove_dir_all(config.data_dir);
}
