//! Typed configuration: one TOML file plus `TANDEM_...` environment overrides.
//!
//! With no file at all tandem runs in dev mode (see README "Configuration").

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Safe on a laptop: loopback only, keys generated into the data directory.
    Dev,
    /// Requires real credentials configuration (OIDC issuer, hashed API keys).
    Production,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The externally visible base URL: the start of every link in responses and emails
    /// (without it, responses link to the request's own origin and emails to the listening
    /// address).
    pub public_url: Option<String>,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub http: HttpConfig,
    pub institution: InstitutionConfig,
    /// Audience connection providers by the name clients use (`provider.name`). Without any,
    /// dev mode offers one `file` provider named `file`.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Outgoing email (see `EmailConfig`).
    pub email: EmailConfig,
    pub invitations: InvitationsConfig,
    /// The audience synchronization engine.
    pub sync: SyncConfig,
    /// Where audience membership comes from.
    pub audience_source: AudienceSourceConfig,
}

/// One configured provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// Membership snapshots written to a directory (default `<data_dir>/audiences/<name>`).
    File {
        directory: Option<PathBuf>,
        #[serde(flatten)]
        schedule: ProviderSchedule,
    },
    /// HMAC-signed JSON membership changes POSTed to a URL.
    Webhook {
        url: String,
        secret: String,
        #[serde(flatten)]
        schedule: ProviderSchedule,
    },
    /// Pendo segments: `base_url` is the regional API host, e.g. `https://app.pendo.io`.
    Pendo {
        base_url: String,
        integration_key: String,
        #[serde(flatten)]
        schedule: ProviderSchedule,
    },
}

impl ProviderConfig {
    /// Blanks credentials, for printing.
    pub fn redact_secrets(&mut self) {
        match self {
            ProviderConfig::File { .. } => {}
            ProviderConfig::Webhook { secret, .. } => *secret = "***".into(),
            ProviderConfig::Pendo {
                integration_key, ..
            } => *integration_key = "***".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; defaults to a SQLite file in the data directory.
    pub url: Option<String>,
    /// PostgreSQL: the store's connections (sqlx's pool for migrations and operator reads
    /// keeps up to 4 more). SQLite: sqlx's pool for operator reads (the store's own readers
    /// follow the cores).
    pub max_connections: u32,
    /// SQLite only: `normal` (default) makes a commit survive the process being killed;
    /// `full` also survives power loss, at one disk flush per commit.
    pub sqlite_synchronous: SqliteSynchronous,
    /// SQLite only: connections and invitations kept in memory for reads by id, per table
    /// (0 turns the caches off). Any write to a table empties its cache.
    pub row_cache_entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    #[default]
    Normal,
    Full,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Client API keys, stored as SHA-256 hex digests (`tandem hash-api-key` prints one).
    pub api_keys: Vec<ApiKeyConfig>,
    /// Production bearer tokens: the issuer's OIDC discovery document gives the JWKS.
    pub oidc: Option<OidcConfig>,
    /// The token claim that marks administrative (staff) tokens, and the value it must hold.
    /// A string claim is split on spaces (like `scope`); an array claim must contain the value.
    pub admin_claim: String,
    pub admin_value: String,
    /// The token claim that holds the caller's core customer group, kept on the invitations
    /// they create as `customerGroup` (a string, or an integer given as its digits). Empty: none.
    pub customer_group_claim: String,
    /// Production only: accept an `http://` OIDC discovery URL, whose answer (the issuer's
    /// signing keys) anyone on the path could replace. Refused unless set.
    pub allow_insecure_oidc_http: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The client's name: rate limits and logs use it.
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// e.g. `https://auth.example.com/.well-known/openid-configuration`
    pub discovery_url: String,
    /// Expected `aud` of access tokens.
    pub audience: String,
    /// How often the issuer's keys (JWKS) are fetched again when its response gives no
    /// `Cache-Control: max-age`; with one, that max-age (1 minute to 24 hours) applies.
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
}

fn default_jwks_refresh_secs() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per second each client (API key and token subject) may sustain; 0 disables.
    pub per_second: f64,
    /// How many requests a client may make at once above the sustained rate.
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: usize,
    /// A request that takes longer is answered 503 and abandoned.
    pub request_timeout_secs: u64,
    /// A client that has not sent a request's complete head (request line and headers) this
    /// long after starting it, or after its previous request, is disconnected without an answer.
    pub header_read_timeout_secs: u64,
    /// A request body that has not fully arrived this long after its head is answered 408.
    pub body_read_timeout_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstitutionConfig {
    pub enabled_features: EnabledFeatures,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct EnabledFeatures {
    /// The seed's `enabledFeatures.customerAudienceConnections`: off answers 403 everywhere.
    pub customer_audience_connections: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Dev,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("tandem-data"),
            public_url: None,
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            http: HttpConfig::default(),
            institution: InstitutionConfig::default(),
            providers: BTreeMap::new(),
            email: EmailConfig::default(),
            invitations: InvitationsConfig::default(),
            sync: SyncConfig::default(),
            audience_source: AudienceSourceConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            sqlite_synchronous: SqliteSynchronous::Normal,
            row_cache_entries: 32_768,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            oidc: None,
            admin_claim: "scope".to_owned(),
            admin_value: "admin".to_owned(),
            customer_group_claim: "customer_group".to_owned(),
            allow_insecure_oidc_http: false,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 100.0,
            burst: 200,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
        }
    }
}

impl Default for EnabledFeatures {
    fn default() -> Self {
        Self {
            customer_audience_connections: true,
        }
    }
}

// ---- Audience synchronization ---------------------------------------------------------

/// How often a provider's connections sync and how long one call to it may take.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ProviderSchedule {
    /// Seconds between the syncs of an active connection (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<f64>,
    /// Seconds one call to the provider may take before it counts as a retryable failure
    /// (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

impl ProviderConfig {
    pub fn schedule(&self) -> &ProviderSchedule {
        match self {
            ProviderConfig::File { schedule, .. }
            | ProviderConfig::Webhook { schedule, .. }
            | ProviderConfig::Pendo { schedule, .. } => schedule,
        }
    }

    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.schedule().interval_secs.unwrap_or(900.0))
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.schedule().timeout_secs.unwrap_or(30.0))
    }
}

/// `[sync]`: the engine that keeps provider resources in sync with audiences.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Run the engine in this instance (all instances of a deployment may).
    pub enabled: bool,
    /// How often an idle engine looks for due connections (new and activated ones wake it).
    pub poll_interval_secs: f64,
    /// How many connections one instance syncs at the same time.
    pub concurrency: usize,
    /// After this many consecutive failed runs the connection becomes `failed`.
    pub max_consecutive_failures: u32,
    /// How long a claimed connection stays reserved for an instance (renewed while its run is
    /// alive); an instance that dies mid-run loses it after this and another takes over.
    pub lease_secs: f64,
    /// Retry delay after the first failure; it doubles per failure (with jitter) up to the cap.
    pub backoff_base_secs: f64,
    pub backoff_cap_secs: f64,
    /// Runs kept in each connection's history; older ones are deleted.
    pub keep_runs: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_secs: 5.0,
            concurrency: 8,
            max_consecutive_failures: 5,
            lease_secs: 600.0,
            backoff_base_secs: 10.0,
            backoff_cap_secs: 1800.0,
            keep_runs: 1000,
        }
    }
}

impl SyncConfig {
    fn check(&self, providers: &BTreeMap<String, ProviderConfig>) -> anyhow::Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{name} must be a positive number of seconds"
                ))
            }
        };
        positive("sync.poll_interval_secs", self.poll_interval_secs)?;
        positive("sync.lease_secs", self.lease_secs)?;
        positive("sync.backoff_base_secs", self.backoff_base_secs)?;
        positive("sync.backoff_cap_secs", self.backoff_cap_secs)?;
        if self.concurrency == 0 || self.max_consecutive_failures == 0 || self.keep_runs == 0 {
            bail!(
                "sync.concurrency, sync.max_consecutive_failures and sync.keep_runs must be at least 1"
            );
        }
        for (name, provider) in providers {
            let url = match provider {
                ProviderConfig::File { .. } => None,
                ProviderConfig::Webhook { url, .. } => Some(url),
                ProviderConfig::Pendo { base_url, .. } => Some(base_url),
            };
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                bail!("providers.{name}: {url:?} is not an http(s) URL");
            }
            let s = provider.schedule();
            positive(
                &format!("providers.{name}.interval_secs"),
                s.interval_secs.unwrap_or(1.0),
            )?;
            positive(
                &format!("providers.{name}.timeout_secs"),
                s.timeout_secs.unwrap_or(1.0),
            )?;
        }
        Ok(())
    }
}

/// `[audience_source]`: where the engine reads audience membership.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AudienceSourceConfig {
    /// The local table that `tandem audiences import` fills.
    #[default]
    Local,
    /// A bank's customer-audience service: `GET {base_url}/audiences/{id}/members?limit=&start=`.
    Http {
        base_url: String,
        /// A header sent with every request, e.g. `Authorization` ...
        #[serde(default)]
        auth_header: Option<String>,
        /// ... and its value, e.g. `Bearer …` (a secret: never printed).
        #[serde(default)]
        auth_value: Option<String>,
        /// Members asked for per page (default 1000).
        #[serde(default)]
        page_size: Option<u32>,
        /// Seconds one page may take (default 30).
        #[serde(default)]
        timeout_secs: Option<f64>,
    },
}

impl AudienceSourceConfig {
    fn check(&self) -> anyhow::Result<()> {
        if let AudienceSourceConfig::Http {
            base_url,
            auth_header,
            auth_value,
            ..
        } = self
        {
            if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
                bail!("audience_source.base_url {base_url:?} is not an http(s) URL");
            }
            if auth_header.is_some() != auth_value.is_some() {
                bail!("audience_source: set both auth_header and auth_value, or neither");
            }
        }
        Ok(())
    }

    /// Blanks credentials, for printing.
    pub fn redact_secrets(&mut self) {
        if let AudienceSourceConfig::Http { auth_value, .. } = self
            && auth_value.is_some()
        {
            *auth_value = Some("***".into());
        }
    }
}

/// The settings that environment variables can override: `TANDEM_` + the path in upper case
/// with `.` as `_`, e.g. `TANDEM_DATABASE_URL` for `database.url`.
pub const ENV_OVERRIDES: &[(&str, ValueKind)] = &[
    ("mode", ValueKind::Text),
    ("listen", ValueKind::Text),
    ("data_dir", ValueKind::Text),
    ("public_url", ValueKind::Text),
    ("database.url", ValueKind::Text),
    ("database.max_connections", ValueKind::Integer),
    ("database.sqlite_synchronous", ValueKind::Text),
    ("database.row_cache_entries", ValueKind::Integer),
    ("auth.admin_claim", ValueKind::Text),
    ("auth.admin_value", ValueKind::Text),
    ("auth.customer_group_claim", ValueKind::Text),
    ("rate_limit.per_second", ValueKind::Float),
    ("rate_limit.burst", ValueKind::Integer),
    ("http.body_limit_bytes", ValueKind::Integer),
    ("http.request_timeout_secs", ValueKind::Integer),
    ("http.header_read_timeout_secs", ValueKind::Integer),
    ("http.body_read_timeout_secs", ValueKind::Integer),
    (
        "institution.enabled_features.customerAudienceConnections",
        ValueKind::Bool,
    ),
    ("email.from", ValueKind::Text),
    ("email.smtp.host", ValueKind::Text),
    ("email.smtp.port", ValueKind::Integer),
    ("email.smtp.tls", ValueKind::Text),
    ("email.smtp.username", ValueKind::Text),
    ("email.smtp.password", ValueKind::Text),
    ("invitations.secret_key", ValueKind::Text),
    ("invitations.expiry_days", ValueKind::Integer),
    ("invitations.resend_limit", ValueKind::Integer),
    ("invitations.trust_forwarded_for", ValueKind::Bool),
    // Audience synchronization.
    ("sync.enabled", ValueKind::Bool),
    ("sync.poll_interval_secs", ValueKind::Float),
    ("sync.concurrency", ValueKind::Integer),
    ("sync.max_consecutive_failures", ValueKind::Integer),
];

#[derive(Debug, Clone, Copy)]
pub enum ValueKind {
    Text,
    Integer,
    Float,
    Bool,
}

pub fn env_name(path: &str) -> String {
    let mut name = String::from("TANDEM_");
    for c in path.chars() {
        match c {
            '.' => name.push('_'),
            c if c.is_ascii_uppercase() => {
                name.push('_');
                name.push(c);
            }
            c => name.push(c.to_ascii_uppercase()),
        }
    }
    name
}

impl Config {
    /// Reads the file (if any), applies environment overrides, and checks the result.
    /// Without a file the mode defaults to dev; with one, to production.
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading configuration file {}", path.display()))?;
                let mut table: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("parsing configuration file {}", path.display()))?;
                table
                    .entry("mode")
                    .or_insert_with(|| toml::Value::String("production".into()));
                table
            }
            None => toml::Table::new(),
        };
        for (path, kind) in ENV_OVERRIDES {
            let name = env_name(path);
            if let Some(raw) = env(&name) {
                let value = parse_env_value(&raw, *kind)
                    .with_context(|| format!("environment variable {name}={raw:?}"))?;
                set_path(&mut table, path, value);
            }
        }
        let config: Config =
            Config::deserialize(toml::Value::Table(table)).context("invalid configuration")?;
        config.check()?;
        Ok(config)
    }

    /// Consistency rules that a type alone cannot express.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.mode {
            Mode::Dev => {
                if !self.listen.ip().is_loopback() {
                    bail!(
                        "dev mode listens on loopback only, but listen = {}; set mode = \"production\" with real credentials to listen elsewhere",
                        self.listen
                    );
                }
            }
            Mode::Production => {
                if self.auth.oidc.is_none() {
                    bail!("production mode needs [auth.oidc] (discovery_url, audience)");
                }
                if self.auth.api_keys.is_empty() {
                    bail!("production mode needs at least one [[auth.api_keys]] entry");
                }
                if self.email.smtp.is_none() {
                    bail!("production mode needs an [email.smtp] relay (host, port, tls)");
                }
                self.refuse_insecure_transports()?;
            }
        }
        if let Some(oidc) = &self.auth.oidc
            && oidc.jwks_refresh_secs == 0
        {
            bail!("auth.oidc.jwks_refresh_secs must be at least 1");
        }
        for key in &self.auth.api_keys {
            if key.sha256.len() != 64 || hex::decode(&key.sha256).is_err() {
                bail!("auth.api_keys {:?}: sha256 must be 64 hex digits", key.name);
            }
        }
        if self.rate_limit.per_second < 0.0 {
            bail!("rate_limit.per_second must not be negative");
        }
        // The accept page's links and its form's same-origin check are built on it.
        if let Some(url) = &self.public_url
            && crate::http::invitations::page::WebOrigin::of_url(url).is_none()
        {
            bail!("public_url must be an absolute http:// or https:// URL, not {url:?}");
        }
        for (name, secs) in [
            ("http.request_timeout_secs", self.http.request_timeout_secs),
            (
                "http.header_read_timeout_secs",
                self.http.header_read_timeout_secs,
            ),
            (
                "http.body_read_timeout_secs",
                self.http.body_read_timeout_secs,
            ),
        ] {
            if secs == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            bail!("database.url must start with sqlite: or postgres://");
        }
        self.email.check()?;
        self.invitations.check(self.mode)?;
        self.sync.check(&self.providers)?;
        self.audience_source.check()?;
        Ok(())
    }

    /// Production: no plain-text connection for token keys or email unless the setting that
    /// allows it is set explicitly.
    fn refuse_insecure_transports(&self) -> anyhow::Result<()> {
        if let Some(oidc) = &self.auth.oidc
            && !oidc.discovery_url.starts_with("https://")
            && !self.auth.allow_insecure_oidc_http
        {
            bail!(
                "auth.oidc.discovery_url {:?} is not https: in production the issuer's signing keys \
                 must come over TLS (set auth.allow_insecure_oidc_http = true to accept it anyway)",
                oidc.discovery_url
            );
        }
        if let Some(smtp) = &self.email.smtp
            && smtp.tls == SmtpTls::None
            && !self.email.allow_insecure_smtp
        {
            bail!(
                "email.smtp.tls = \"none\" sends invitations and the relay password unencrypted: \
                 in production use \"starttls\" or \"tls\" (or set email.allow_insecure_smtp = true \
                 for a relay on the same host)"
            );
        }
        Ok(())
    }

    /// The providers in effect: the configured ones, or dev mode's single `file` provider.
    pub fn effective_providers(&self) -> BTreeMap<String, ProviderConfig> {
        if self.providers.is_empty() && self.mode == Mode::Dev {
            BTreeMap::from([(
                "file".to_owned(),
                ProviderConfig::File {
                    directory: None,
                    schedule: ProviderSchedule::default(),
                },
            )])
        } else {
            self.providers.clone()
        }
    }

    pub fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("tandem.sqlite3").display()
            )
        })
    }
}

// ---- Invitations ------------------------------------------------------------------------

/// `[invitations]`: expiry, resend and verification limits, the secret key, entitlements.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvitationsConfig {
    /// Base64 of 32 random bytes that seal shared secrets at rest (required in production;
    /// dev mode generates one into `<data_dir>/dev/invitation-secret-key`).
    pub secret_key: Option<String>,
    /// Days from creation until a `sent` invitation expires.
    pub expiry_days: i64,
    /// How many times an invitation's email may be re-sent after the first.
    pub resend_limit: i64,
    /// Wrong secrets after which an invitation locks (until the inviter sets a new secret).
    pub max_failed_verifications: i64,
    /// Verification attempts one client address may make per window before it is blocked.
    pub verify_max_attempts_per_ip: u32,
    pub verify_window_secs: u64,
    /// How long a blocked address gets 429.
    pub verify_block_secs: u64,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a proxy only).
    pub trust_forwarded_for: bool,
    /// How often the sweeper persists expired invitations.
    pub sweep_interval_secs: u64,
    /// Entitlements from a bank's HTTP service instead of the local table.
    pub entitlements_url: Option<String>,
    /// Entitlement roles on an account that may invite joint owners to it (any role may see
    /// the account's invitations). Compared ignoring ASCII case.
    pub account_inviter_roles: Vec<String>,
    /// Entitlement roles on an organization that may invite authorized signers to it.
    pub organization_inviter_roles: Vec<String>,
    /// The most invitations one customer may create in any 24 hours (staff are not capped);
    /// 0 turns the cap off.
    pub daily_invitations_per_customer: i64,
    /// The most open (sent, not expired) invitations on one account or organization; 0 turns
    /// the cap off.
    pub open_invitations_per_resource: i64,
}

impl Default for InvitationsConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            expiry_days: 30,
            resend_limit: 3,
            max_failed_verifications: 5,
            verify_max_attempts_per_ip: 10,
            verify_window_secs: 300,
            verify_block_secs: 900,
            trust_forwarded_for: false,
            sweep_interval_secs: 60,
            entitlements_url: None,
            account_inviter_roles: ["owner", "jointOwner", "joint"].map(String::from).to_vec(),
            organization_inviter_roles: ["owner", "admin", "signer"].map(String::from).to_vec(),
            daily_invitations_per_customer: 20,
            open_invitations_per_resource: 5,
        }
    }
}

impl InvitationsConfig {
    pub fn check(&self, mode: Mode) -> anyhow::Result<()> {
        match &self.secret_key {
            Some(key) => {
                crate::domain::sealed::SecretBox::from_base64(key)
                    .context("invitations.secret_key")?;
            }
            None if mode == Mode::Production => {
                bail!("production mode needs invitations.secret_key (base64 of 32 random bytes)")
            }
            None => {}
        }
        if self.expiry_days < 1 {
            bail!("invitations.expiry_days must be at least 1");
        }
        if self.resend_limit < 0 || self.max_failed_verifications < 1 {
            bail!("invitations.resend_limit must be >= 0 and max_failed_verifications >= 1");
        }
        if self.verify_max_attempts_per_ip < 1 || self.verify_window_secs < 1 {
            bail!("invitations.verify_max_attempts_per_ip and verify_window_secs must be >= 1");
        }
        if self.sweep_interval_secs < 1 {
            bail!("invitations.sweep_interval_secs must be at least 1");
        }
        if self.daily_invitations_per_customer < 0 || self.open_invitations_per_resource < 0 {
            bail!(
                "invitations.daily_invitations_per_customer and open_invitations_per_resource \
                 must not be negative (0 turns a cap off)"
            );
        }
        Ok(())
    }
}

fn parse_env_value(raw: &str, kind: ValueKind) -> anyhow::Result<toml::Value> {
    Ok(match kind {
        ValueKind::Text => toml::Value::String(raw.to_owned()),
        ValueKind::Integer => {
            toml::Value::Integer(raw.trim().parse().context("expected an integer")?)
        }
        ValueKind::Float => toml::Value::Float(raw.trim().parse().context("expected a number")?),
        ValueKind::Bool => {
            toml::Value::Boolean(raw.trim().parse().context("expected true or false")?)
        }
    })
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("just made a table");
    }
}

// ---- Email -------------------------------------------------------------------------------------

/// `[email]`: who messages come from, how the delivery worker paces itself, and the SMTP relay.
/// Without `[email.smtp]` messages are written as `.eml` files under `<data_dir>/mail/`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The `From` mailbox, e.g. `"Example Bank <no-reply@bank.example>"`.
    pub from: String,
    /// How often the worker looks for due messages when nothing wakes it sooner.
    pub poll_interval_ms: u64,
    /// How many messages one instance claims at a time.
    pub batch_size: u32,
    /// How long a claim lasts: a crashed instance's messages are taken over after this.
    pub lease_secs: u64,
    /// First retry delay after a failure; it doubles per attempt (with jitter) up to `retry_max_ms`.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// Delivered messages (names, addresses, links) are deleted after this many days; 0 keeps
    /// them forever.
    pub retain_sent_days: u32,
    /// Failed attempts after which a message is given up (a dead letter, kept for operators).
    pub max_attempts: u32,
    /// Failed attempts after which a message the relay refused for good (an SMTP 5xx reply), or
    /// one that cannot be rendered or addressed, is given up.
    pub max_refused_attempts: u32,
    /// Production only: accept `smtp.tls = "none"` (a relay on the same host). Refused unless set.
    pub allow_insecure_smtp: bool,
    pub smtp: Option<SmtpConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Defaults by TLS mode: 587 (`starttls`), 465 (`tls`), 25 (`none`).
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Connecting and each SMTP command.
    #[serde(default = "default_smtp_timeout_secs")]
    pub timeout_secs: u64,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

fn default_smtp_timeout_secs() -> u64 {
    30
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            from: "tandem <no-reply@localhost>".to_owned(),
            poll_interval_ms: 5_000,
            batch_size: 20,
            lease_secs: 300,
            retry_min_ms: 10_000,
            retry_max_ms: 3_600_000,
            retain_sent_days: 30,
            max_attempts: 100,
            max_refused_attempts: 3,
            allow_insecure_smtp: false,
            smtp: None,
        }
    }
}

impl SmtpConfig {
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

impl EmailConfig {
    fn check(&self) -> anyhow::Result<()> {
        self.from
            .parse::<lettre::message::Mailbox>()
            .with_context(|| format!("email.from {:?} is not a mailbox", self.from))?;
        if self.poll_interval_ms == 0 || self.batch_size == 0 || self.lease_secs == 0 {
            bail!("email.poll_interval_ms, email.batch_size and email.lease_secs must be positive");
        }
        if self.retry_min_ms == 0 || self.retry_min_ms > self.retry_max_ms {
            bail!("email.retry_min_ms must be positive and at most email.retry_max_ms");
        }
        if self.max_refused_attempts == 0 || self.max_refused_attempts > self.max_attempts {
            bail!("email.max_refused_attempts must be positive and at most email.max_attempts");
        }
        if let Some(smtp) = &self.smtp {
            if smtp.host.trim().is_empty() {
                bail!("email.smtp.host must not be empty");
            }
            if smtp.username.is_some() != smtp.password.is_some() {
                bail!("email.smtp.username and email.smtp.password go together");
            }
            // The claim must outlive a send, or a slow relay would let another instance send too.
            if self.lease_secs < smtp.timeout_secs.saturating_mul(4) {
                bail!("email.lease_secs must be at least 4 times email.smtp.timeout_secs");
            }
        }
        Ok(())
    }

    /// Blanks the SMTP password, for printing.
    pub fn redact_secrets(&mut self) {
        if let Some(password) = self.smtp.as_mut().and_then(|s| s.password.as_mut()) {
            *password = "***".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn no_file_means_dev_mode_on_loopback_with_sqlite() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.mode, Mode::Dev);
        assert!(c.listen.ip().is_loopback());
        assert!(c.database_url().starts_with("sqlite://"));
        assert!(matches!(
            c.effective_providers()["file"],
            ProviderConfig::File { .. }
        ));
    }

    #[test]
    fn environment_overrides_nested_settings() {
        let c = Config::load(
            None,
            env(&[
                ("TANDEM_DATABASE_URL", "postgres://localhost/tandem"),
                ("TANDEM_RATE_LIMIT_BURST", "7"),
                (
                    "TANDEM_INSTITUTION_ENABLED_FEATURES_CUSTOMER_AUDIENCE_CONNECTIONS",
                    "false",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.database_url(), "postgres://localhost/tandem");
        assert_eq!(c.rate_limit.burst, 7);
        assert_eq!(c.database.sqlite_synchronous, SqliteSynchronous::Normal);
        assert!(!c.institution.enabled_features.customer_audience_connections);
    }

    #[test]
    fn sqlite_synchronous_is_normal_or_full() {
        let full = env(&[("TANDEM_DATABASE_SQLITE_SYNCHRONOUS", "full")]);
        let c = Config::load(None, full).unwrap();
        assert_eq!(c.database.sqlite_synchronous, SqliteSynchronous::Full);
        let odd = env(&[("TANDEM_DATABASE_SQLITE_SYNCHRONOUS", "sometimes")]);
        let err = Config::load(None, odd).unwrap_err();
        assert!(format!("{err:#}").contains("sometimes"), "{err:#}");
    }

    #[test]
    fn invitation_settings_are_checked() {
        let err =
            Config::load(None, env(&[("TANDEM_INVITATIONS_SECRET_KEY", "c2hvcnQ=")])).unwrap_err();
        assert!(format!("{err:#}").contains("secret_key"), "{err:#}");
        let err = Config::load(None, env(&[("TANDEM_INVITATIONS_EXPIRY_DAYS", "0")])).unwrap_err();
        assert!(err.to_string().contains("expiry_days"), "{err}");
        let c = Config::load(None, env(&[("TANDEM_INVITATIONS_RESEND_LIMIT", "7")])).unwrap();
        assert_eq!(c.invitations.resend_limit, 7);
        assert_eq!(c.invitations.expiry_days, 30);
    }

    #[test]
    fn http_timeouts_have_defaults_overrides_and_a_floor() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.http.header_read_timeout_secs, 10);
        assert_eq!(c.http.body_read_timeout_secs, 10);
        let c = Config::load(
            None,
            env(&[
                ("TANDEM_HTTP_HEADER_READ_TIMEOUT_SECS", "3"),
                ("TANDEM_HTTP_BODY_READ_TIMEOUT_SECS", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.header_read_timeout_secs, 3);
        assert_eq!(c.http.body_read_timeout_secs, 4);
        let err =
            Config::load(None, env(&[("TANDEM_HTTP_HEADER_READ_TIMEOUT_SECS", "0")])).unwrap_err();
        assert!(
            err.to_string().contains("http.header_read_timeout_secs"),
            "{err}"
        );
    }

    #[test]
    fn env_names_follow_the_paths() {
        assert_eq!(env_name("database.url"), "TANDEM_DATABASE_URL");
        assert_eq!(
            env_name("institution.enabled_features.customerAudienceConnections"),
            "TANDEM_INSTITUTION_ENABLED_FEATURES_CUSTOMER_AUDIENCE_CONNECTIONS"
        );
    }

    #[test]
    fn bad_values_are_reported_with_their_variable() {
        let err = Config::load(None, env(&[("TANDEM_RATE_LIMIT_BURST", "lots")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("TANDEM_RATE_LIMIT_BURST"),
            "{err:#}"
        );
    }

    #[test]
    fn dev_mode_refuses_public_addresses() {
        let err = Config::load(None, env(&[("TANDEM_LISTEN", "0.0.0.0:8080")])).unwrap_err();
        assert!(err.to_string().contains("loopback"));
    }

    #[test]
    fn a_file_defaults_to_production_which_needs_credentials() {
        let dir = std::env::temp_dir().join(format!("tandem-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tandem.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("oidc"), "{err}");

        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\n[invitations]\nsecret_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n[auth.oidc]\ndiscovery_url = \"https://idp/.well-known/openid-configuration\"\naudience = \"tandem\"\n[[auth.api_keys]]\nname = \"web\"\nsha256 = \"".to_owned() + &"ab".repeat(32) + "\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("[email.smtp]"), "{err}");
        let c = Config::load(
            Some(&file),
            env(&[("TANDEM_EMAIL_SMTP_HOST", "smtp.bank.example")]),
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Production);
        assert_eq!(c.auth.oidc.as_ref().unwrap().jwks_refresh_secs, 600);
        let mut no_refresh = c.clone();
        no_refresh.auth.oidc.as_mut().unwrap().jwks_refresh_secs = 0;
        let err = no_refresh.check().unwrap_err();
        assert!(err.to_string().contains("jwks_refresh_secs"), "{err}");
        assert!(
            c.effective_providers().is_empty(),
            "production has only configured providers"
        );

        std::fs::write(
            &file,
            "mode = \"dev\"\n[providers.pendo]\nkind = \"pendo\"\nbase_url = \"https://app.pendo.io\"\nintegration_key = \"k\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert!(matches!(
            c.effective_providers()["pendo"],
            ProviderConfig::Pendo { .. }
        ));

        std::fs::write(&file, "colour = \"blue\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn production_needs_tls_for_token_keys_and_email_unless_allowed() {
        let mut c = Config {
            mode: Mode::Production,
            ..Config::default()
        };
        c.auth.oidc = Some(OidcConfig {
            discovery_url: "http://idp.internal/.well-known/openid-configuration".into(),
            audience: "tandem".into(),
            jwks_refresh_secs: default_jwks_refresh_secs(),
        });
        c.auth.api_keys = vec![ApiKeyConfig {
            name: "web".into(),
            sha256: "ab".repeat(32),
        }];
        c.invitations.secret_key = Some(crate::domain::sealed::SecretBox::generate_key());
        c.email.smtp = Some(SmtpConfig {
            host: "localhost".into(),
            port: None,
            tls: SmtpTls::None,
            username: None,
            password: None,
            timeout_secs: 30,
        });
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("auth.allow_insecure_oidc_http"), "{err}");
        c.auth.allow_insecure_oidc_http = true;
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("email.allow_insecure_smtp"), "{err}");
        c.email.allow_insecure_smtp = true;
        c.check().unwrap();
        // Dev mode needs neither.
        c.mode = Mode::Dev;
        c.auth.allow_insecure_oidc_http = false;
        c.email.allow_insecure_smtp = false;
        c.check().unwrap();
    }

    #[test]
    fn refused_attempts_are_bounded_by_all_attempts() {
        for (refused, all) in [(0, 10), (11, 10)] {
            let mut c = Config::default();
            c.email.max_refused_attempts = refused;
            c.email.max_attempts = all;
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains("email.max_refused_attempts"), "{err}");
        }
    }

    #[test]
    fn email_defaults_to_dev_files_and_validates_smtp() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.email.smtp.is_none());
        let c = Config::load(
            None,
            env(&[
                ("TANDEM_EMAIL_SMTP_HOST", "smtp.example.com"),
                ("TANDEM_EMAIL_SMTP_TLS", "tls"),
                ("TANDEM_EMAIL_FROM", "Bank <no-reply@bank.example>"),
            ]),
        )
        .unwrap();
        let smtp = c.email.smtp.as_ref().unwrap();
        assert_eq!((smtp.tls, smtp.effective_port()), (SmtpTls::Tls, 465));
        let err = Config::load(None, env(&[("TANDEM_EMAIL_FROM", "not a mailbox")])).unwrap_err();
        assert!(format!("{err:#}").contains("email.from"), "{err:#}");
        let err = Config::load(
            None,
            env(&[
                ("TANDEM_EMAIL_SMTP_HOST", "smtp.example.com"),
                ("TANDEM_EMAIL_SMTP_USERNAME", "mailer"),
            ]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("password"), "{err:#}");
        let mut c = Config::load(
            None,
            env(&[
                ("TANDEM_EMAIL_SMTP_HOST", "smtp.example.com"),
                ("TANDEM_EMAIL_SMTP_USERNAME", "mailer"),
                ("TANDEM_EMAIL_SMTP_PASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        c.email.redact_secrets();
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
    }

    #[test]
    fn sync_settings_and_provider_schedules_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("tandem-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tandem.toml");
        let base = "mode = \"dev\"\n[providers.pendo]\nkind = \"pendo\"\nbase_url = \"https://app.eu.pendo.io\"\nintegration_key = \"k\"\n";
        std::fs::write(
            &file,
            format!("{base}interval_secs = 60\ntimeout_secs = 2.5\n[sync]\nmax_consecutive_failures = 3\n[audience_source]\nkind = \"http\"\nbase_url = \"https://aud\"\nauth_header = \"Authorization\"\nauth_value = \"Bearer s\"\n"),
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[("TANDEM_SYNC_CONCURRENCY", "2")])).unwrap();
        let pendo = &c.effective_providers()["pendo"];
        assert_eq!(pendo.interval(), std::time::Duration::from_secs(60));
        assert_eq!(pendo.timeout(), std::time::Duration::from_millis(2500));
        assert_eq!(c.sync.max_consecutive_failures, 3);
        assert_eq!(c.sync.concurrency, 2);
        let mut source = c.audience_source.clone();
        source.redact_secrets();
        assert!(!toml::to_string(&source).unwrap().contains("Bearer s"));

        for bad in [
            format!("{base}colour = \"blue\"\n"),
            format!("{base}interval_secs = 0\n"),
            format!("{base}[sync]\nconcurrency = 0\n"),
            format!("{base}[sync]\nlease_secs = -1\n"),
            base.replace("https://app.eu.pendo.io", "app.pendo.io"),
            format!(
                "{base}[audience_source]\nkind = \"http\"\nbase_url = \"https://aud\"\nauth_header = \"Authorization\"\n"
            ),
        ] {
            std::fs::write(&file, &bad).unwrap();
            assert!(Config::load(Some(&file), env(&[])).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
