//! Start-up: configuration in, a running service out. Tests build the same `Application` on a
//! random port.

use crate::auth::dev::{DevCredentials, TokenRequest};
use crate::auth::jwt::{LocalKeyVerifier, OidcVerifier};
use crate::auth::{Authenticator, TokenVerifier, hash_api_key};
use crate::config::{Config, Mode};
use crate::http::{AppState, link_base::LinkBase, rate_limit::RateLimiter, router};
use crate::store::Db;
use crate::store::connections::SqlConnections;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    mail: crate::mail::DeliveryWorker,
    pub db: Db,
    pub address: SocketAddr,
    invitations: Arc<crate::http::invitations::InvitationsContext>,
    /// The audience sync engine, started by `run_until` (None when `sync.enabled` is false).
    sync_engine: Option<Arc<crate::sync::SyncEngine>>,
    /// The OIDC issuer's keys, refreshed by `run_until` (None in dev mode without OIDC).
    oidc: Option<Arc<OidcVerifier>>,
    /// How long a client may take to send a request head (`http.header_read_timeout_secs`).
    header_read_timeout: Duration,
}

/// Installs the process-wide TLS crypto provider used by outgoing HTTPS (OIDC, providers).
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .user_agent(concat!("tandem/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if config.mode == Mode::Dev || config.database.url.is_none() {
            crate::private_files::create_dir(&config.data_dir).with_context(|| {
                format!("creating the data directory {}", config.data_dir.display())
            })?;
        }
        let db = Db::connect(
            &config.database_url(),
            config.database.max_connections,
            config.database.sqlite_synchronous,
        )
        .await?
        .with_row_caches(config.database.row_cache_entries)?;
        db.migrate().await?;
        let (auth, oidc) = authenticator(&config).await?;
        let providers = Arc::new(config.effective_providers());
        let mail = crate::mail::worker(&config, db.clone())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let address = listener.local_addr()?;
        let invitations = Arc::new(invitations_context(&config, &db, address)?);
        let sync = crate::sync::SyncHandle::new(db.clone(), &config.sync);
        let sync_engine = if config.sync.enabled {
            Some(Arc::new(crate::sync::SyncEngine::new(
                &config,
                db.clone(),
                &sync,
            )?))
        } else {
            None
        };
        let header_read_timeout = Duration::from_secs(config.http.header_read_timeout_secs);
        let state = AppState {
            sync,
            limiter: Arc::new(RateLimiter::new(
                config.rate_limit.per_second,
                config.rate_limit.burst,
            )),
            connections: Arc::new(SqlConnections::new(db.clone())),
            auth: Arc::new(auth),
            providers,
            invitations: invitations.clone(),
            config: Arc::new(config.clone()),
            mail: mail.waker(),
        };
        Ok(Self {
            listener,
            router: router(state),
            mail,
            db,
            address,
            invitations,
            sync_engine,
            oidc,
            header_read_timeout,
        })
    }

    /// The service's router, for driving requests in-process (tests). It shares this
    /// application's state; requests through it need no listener.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Wakes the email delivery worker (for code outside request handlers that enqueues email).
    pub fn mail_waker(&self) -> crate::mail::MailWaker {
        self.mail.waker()
    }

    /// Serves until the shutdown future completes, then drains in-flight requests and stops the
    /// background workers.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mail = self.mail.spawn();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(
            self.invitations
                .clone()
                .sweep_until_stopped(stopped.clone()),
        );
        let key_refresher = self
            .oidc
            .map(|oidc| tokio::spawn(oidc.refresh_until_stopped(stopped.clone())));
        let engine = self
            .sync_engine
            .map(|engine| tokio::spawn(engine.run(stopped)));
        crate::http::serve::serve(
            self.listener,
            self.router,
            self.header_read_timeout,
            shutdown,
        )
        .await;
        // Let work in flight (sync runs, a sweep) record its outcome before the pool closes.
        let _ = stop.send(true);
        if let Some(engine) = engine {
            let _ = engine.await;
        }
        let _ = sweeper.await;
        if let Some(key_refresher) = key_refresher {
            let _ = key_refresher.await;
        }
        mail.stop().await;
        self.db.close().await;
        Ok(())
    }
}

/// Dev mode's generated API key, named `dev`, beside the configured ones.
type ExtraApiKeys = Vec<(String, [u8; 32])>;

/// The authenticator, and the OIDC verifier whose keys `run_until` keeps fresh (if any).
async fn authenticator(
    config: &Config,
) -> anyhow::Result<(Authenticator, Option<Arc<OidcVerifier>>)> {
    let (verifier, dev_keys, oidc): (Arc<dyn TokenVerifier>, ExtraApiKeys, _) =
        match (&config.auth.oidc, config.mode) {
            (Some(oidc), _) => {
                let verifier = OidcVerifier::discover(
                    http_client()?,
                    &oidc.discovery_url,
                    &oidc.audience,
                    Duration::from_secs(oidc.jwks_refresh_secs),
                )
                .await?;
                (verifier.clone(), Vec::new(), Some(verifier))
            }
            (None, Mode::Dev) => {
                let creds = DevCredentials::load_or_create(&config.data_dir)?;
                (
                    Arc::new(LocalKeyVerifier::new(&creds.signing_key)),
                    vec![("dev".to_owned(), hash_api_key(&creds.api_key))],
                    None,
                )
            }
            (None, Mode::Production) => anyhow::bail!("production mode needs [auth.oidc]"),
        };
    Ok((Authenticator::new(&config.auth, &dev_keys, verifier), oidc))
}

/// The two header lines `tandem dev-credentials` prints and the start-up banner uses.
pub fn dev_credential_headers(
    config: &Config,
    request: &TokenRequest,
) -> anyhow::Result<(String, String)> {
    let creds = DevCredentials::load_or_create(&config.data_dir)?;
    Ok((
        format!("API-Key: {}", creds.api_key),
        format!("Authorization: Bearer {}", creds.token(request)?),
    ))
}

// ---- Invitations ----------------------------------------------------------------------

/// The Invitations operations' shared context: storage, entitlements (the local table, or the
/// configured HTTP service), the secret key (dev mode generates one) and the public base URL.
fn invitations_context(
    config: &Config,
    db: &Db,
    address: SocketAddr,
) -> anyhow::Result<crate::http::invitations::InvitationsContext> {
    use crate::domain::sealed::SecretBox;
    use crate::store::entitlements::{Entitlements, HttpEntitlements, TableEntitlements};
    let settings = config.invitations.clone();
    let key = match (&settings.secret_key, config.mode) {
        (Some(key), _) => key.clone(),
        (None, Mode::Dev) => {
            let dir = config.data_dir.join("dev");
            crate::private_files::create_dir(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            crate::auth::dev::read_or_generate(
                &dir.join("invitation-secret-key"),
                SecretBox::generate_key,
            )?
        }
        (None, Mode::Production) => anyhow::bail!("production mode needs invitations.secret_key"),
    };
    let secrets = SecretBox::from_base64(&key).context("invitations.secret_key")?;
    let entitlements: Arc<dyn Entitlements> = match &settings.entitlements_url {
        Some(url) => Arc::new(HttpEntitlements::new(http_client()?, url.clone())),
        None => Arc::new(TableEntitlements::new(db.clone())),
    };
    let listening = format!("http://{address}");
    let links = LinkBase::new(
        config.public_url.as_deref(),
        settings.trust_forwarded_for,
        &listening,
    );
    let public_url = config.public_url.clone().unwrap_or(listening);
    Ok(crate::http::invitations::InvitationsContext::new(
        Arc::new(crate::store::invitations::SqlInvitations::new(db.clone())),
        entitlements,
        Arc::new(crate::store::attempts::SqlAttempts::new(db.clone())),
        secrets,
        settings,
        public_url,
        links,
    ))
}
