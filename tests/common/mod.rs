//! Test harness: each test starts the real service on a random port with a fresh database
//! (a SQLite file in a temp dir, or a new PostgreSQL database), and drives it over HTTP.
#![allow(dead_code)]

use reqwest::{Client, RequestBuilder, Response};
use std::path::PathBuf;
use tandem::app::{Application, dev_credential_headers};
use tandem::auth::dev::TokenRequest;
use tandem::config::{Config, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed `async fn name(backend: Backend)` on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TANDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub config: Config,
    pub db: tandem::store::Db,
    /// The running service's router, to drive requests in-process (`tower::ServiceExt`).
    pub router: axum::Router,
    data_dir: PathBuf,
    pg_database: Option<String>,
}

pub struct Headers {
    pub api_key: String,
    pub authorization: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = std::env::temp_dir().join(format!("tandem-test-{}", uuid::Uuid::new_v4()));
        let mut config = Config {
            mode: Mode::Dev,
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.clone(),
            ..Config::default()
        };
        config.rate_limit.per_second = 0.0;
        // The audience sync engine changes connections in the background; tests of the API
        // alone keep it off, the sync tests switch it on.
        config.sync.enabled = false;
        // Tests create many invitations per customer and account; the caps' tests set theirs.
        config.invitations.daily_invitations_per_customer = 0;
        config.invitations.open_invitations_per_resource = 0;
        let mut pg_database = None;
        if backend == Backend::Postgres {
            let name = format!("tandem_test_{}", uuid::Uuid::new_v4().simple());
            create_postgres_database(&name).await;
            let admin = postgres_admin_url();
            let base = &admin[..admin.rfind('/').expect("URL has a database")];
            config.database.url = Some(format!("{base}/{name}"));
            pg_database = Some(name);
        }
        adjust(&mut config);
        let app = Application::build(config.clone())
            .await
            .expect("the service starts");
        let base = format!("http://{}", app.address);
        let db = app.db.clone();
        let router = app.router();
        tokio::spawn(app.run_until(std::future::pending()));
        Self {
            base,
            client: tandem::app::http_client().expect("an HTTP client"),
            config,
            db,
            router,
            data_dir,
            pg_database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn headers(&self, request: &TokenRequest) -> Headers {
        let (api_key, authorization) = dev_credential_headers(&self.config, request).unwrap();
        Headers {
            api_key: api_key.trim_start_matches("API-Key: ").to_owned(),
            authorization: authorization
                .trim_start_matches("Authorization: ")
                .to_owned(),
        }
    }

    pub fn admin(&self) -> Headers {
        self.headers(&admin_token())
    }

    pub fn customer(&self, subject: &str) -> Headers {
        self.headers(&customer_token(subject))
    }

    /// A request with admin credentials.
    pub fn as_admin(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.with(&self.admin(), method, path)
    }

    pub fn with(&self, headers: &Headers, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("API-Key", &headers.api_key)
            .header("Authorization", &headers.authorization)
    }

    /// GETs `path` as `headers` and reads the JSON body, failing unless the status is 2xx.
    pub async fn get_json(&self, headers: &Headers, path: &str) -> serde_json::Value {
        let res = self
            .with(headers, reqwest::Method::GET, path)
            .send()
            .await
            .expect("the request is sent");
        let status = res.status();
        let body = json(res).await;
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body
    }
}

/// For tests that start more instances on the app's database: on SQLite, instances that share
/// a database run without row caches (each cache is right only for the database's one writer).
pub fn several_instances(config: &mut Config) {
    config.database.row_cache_entries = 0;
}

pub fn admin_token() -> TokenRequest {
    TokenRequest {
        subject: "22707c1196c6f1c6938e".into(),
        username: "MetricMagician".into(),
        first_name: "Andy".into(),
        last_name: "Analytics".into(),
        scope: "banking/full".into(),
        admin: Some(("scope".into(), "admin".into())),
        customer_group: None,
        ttl_secs: 3600,
    }
}

pub fn customer_token(subject: &str) -> TokenRequest {
    TokenRequest {
        subject: subject.into(),
        username: format!("user-{subject}"),
        first_name: "Casey".into(),
        last_name: "Customer".into(),
        scope: "banking/full".into(),
        admin: None,
        customer_group: None,
        ttl_secs: 3600,
    }
}

async fn create_postgres_database(name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("PostgreSQL is reachable at TANDEM_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("creating the test database");
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some(name) = self.pg_database.take() {
            // Drop runs outside async context: use a private runtime on a plain thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
                        .await
                        .ok()?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await
                    .ok()
                })
            })
            .join();
        }
    }
}

/// Reads a response body as JSON, failing with the body text when it is not JSON.
pub async fn json(res: Response) -> serde_json::Value {
    let text = res.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts a problem+json error response with the given status and type name.
pub async fn assert_problem(res: Response, status: u16, type_name: &str) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let content_type = res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body = json(res).await;
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["type"],
        format!("/errors/{type_name}/v1.0.0"),
        "{body}"
    );
    for field in ["id", "title", "detail", "instance", "occurredAt"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
    body
}
