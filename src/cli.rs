//! The `tandem` command line.

use crate::app::{Application, dev_credential_headers};
use crate::auth::dev::TokenRequest;
use crate::config::{Config, Mode};
use crate::http::invitations::doc::InvitationsApi;
use crate::http::openapi::AdminApi;
use crate::store::Db;
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use utoipa::OpenApi;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Customer Audience Connections and Invitations APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Configuration file (TOML). Without one, tandem runs in dev mode.
    #[arg(long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, dev keys, dev mail).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Print an `API-Key` header and a bearer token a dev-mode server with this data dir accepts.
    DevCredentials {
        #[command(flatten)]
        common: Common,
        /// An administrative (staff) token instead of a customer token.
        #[arg(long)]
        admin: bool,
        /// The token subject (user id).
        #[arg(long)]
        sub: Option<String>,
        /// The user's login name.
        #[arg(long)]
        username: Option<String>,
        /// Space-separated scopes.
        #[arg(long, default_value = "banking/full")]
        scope: String,
        /// The core customer group, put in the claim `auth.customer_group_claim` names.
        #[arg(long)]
        customer_group: Option<String>,
        /// Lifetime of the token in seconds.
        #[arg(long, default_value_t = 8 * 3600)]
        ttl: i64,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Print a generated OpenAPI document.
    Openapi {
        #[arg(value_enum, default_value = "admin")]
        api: ApiName,
    },
    /// Check the configuration and print the effective settings (secrets excluded).
    CheckConfig {
        #[command(flatten)]
        common: Common,
    },
    /// Print the SHA-256 digest to configure for an API key (read from standard input).
    HashApiKey,
    /// Show the email waiting for delivery and the email given up: attempts, last error.
    MailQueue {
        #[command(flatten)]
        common: Common,
        /// How many of the oldest queued messages, and of the latest failed ones, to list.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Queue every failed message again (after fixing the cause), as if new.
        #[arg(long)]
        retry_failed: bool,
    },
    /// Manage the local entitlements table (who holds which accounts and organizations).
    Entitlements {
        #[command(subcommand)]
        action: EntitlementsAction,
    },
    /// Manage the local audience source.
    Audiences {
        #[command(subcommand)]
        command: AudiencesCommand,
    },
}

#[derive(Subcommand)]
enum EntitlementsAction {
    /// Replace the table with a CSV file: `customerId,resourceUri,role[,jointOwnersDisabled]`.
    Import {
        #[command(flatten)]
        common: Common,
        /// The CSV file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AudiencesCommand {
    /// Replace an audience's members with those in a file: one customer id per line (blank
    /// lines and lines starting with `#` are skipped).
    Import {
        #[command(flatten)]
        common: Common,
        /// The audience id (as in connections' `audience.id`).
        #[arg(long)]
        id: String,
        /// The audience name.
        #[arg(long)]
        name: Option<String>,
        /// The member file; `-` reads standard input.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ApiName {
    Admin,
    Invitations,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(common: &Common, addr: Option<SocketAddr>) -> anyhow::Result<Config> {
    let mut config = Config::load(common.config.as_deref(), |name| std::env::var(name).ok())?;
    if let Some(dir) = &common.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(addr) = addr {
        config.listen = addr;
    }
    config.check()?;
    Ok(config)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { common, addr } => serve(load(&common, addr)?).await,
        Command::DevCredentials {
            common,
            admin,
            sub,
            username,
            scope,
            customer_group,
            ttl,
        } => {
            let config = load(&common, None)?;
            anyhow::ensure!(
                config.mode == Mode::Dev,
                "dev-credentials works only with a dev-mode configuration"
            );
            let request = token_request(&config, admin, sub, username, scope, customer_group, ttl);
            let (api_key, authorization) = dev_credential_headers(&config, &request)?;
            println!("{api_key}\n{authorization}");
            Ok(())
        }
        Command::Migrate { common } => {
            open_database(&load(&common, None)?).await?.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Openapi { api } => {
            let doc = match api {
                ApiName::Admin => AdminApi::openapi(),
                ApiName::Invitations => InvitationsApi::openapi(),
            };
            println!("{}", doc.to_pretty_json()?);
            Ok(())
        }
        Command::CheckConfig { common } => {
            let mut config = load(&common, None)?;
            if let Some(url) = &config.database.url {
                config.database.url = Some(crate::store::db::redact(url));
            }
            for provider in config.providers.values_mut() {
                provider.redact_secrets();
            }
            config.email.redact_secrets();
            if config.invitations.secret_key.is_some() {
                config.invitations.secret_key = Some("***".into());
            }
            config.audience_source.redact_secrets();
            println!(
                "# configuration is valid ({:?} mode)\n{}",
                config.mode,
                toml::to_string_pretty(&config)?
            );
            Ok(())
        }
        Command::Entitlements {
            action: EntitlementsAction::Import { common, file },
        } => import_entitlements(&load(&common, None)?, &file).await,
        Command::Audiences {
            command:
                AudiencesCommand::Import {
                    common,
                    id,
                    name,
                    file,
                },
        } => import_audience(&load(&common, None)?, &id, name.as_deref(), &file).await,
        Command::HashApiKey => {
            let mut key = String::new();
            std::io::stdin()
                .read_line(&mut key)
                .context("reading the API key")?;
            println!("{}", hex::encode(crate::auth::hash_api_key(key.trim())));
            Ok(())
        }
        Command::MailQueue {
            common,
            limit,
            retry_failed,
        } => {
            let config = load(&common, None)?;
            let db = Db::connect(
                &config.database_url(),
                2,
                config.database.sqlite_synchronous,
            )
            .await?;
            let report = async {
                if retry_failed {
                    let queued = crate::store::outbox::retry_failed(&db)
                        .await
                        .context("queueing the failed email again")?;
                    println!("{queued} failed email(s) queued again");
                }
                crate::store::outbox::queued(&db, limit)
                    .await
                    .context("reading the email outbox")
            }
            .await;
            db.close().await;
            print!("{}", crate::mail::queue_report(&report?));
            Ok(())
        }
    }
}

fn token_request(
    config: &Config,
    admin: bool,
    sub: Option<String>,
    username: Option<String>,
    scope: String,
    customer_group: Option<String>,
    ttl: i64,
) -> TokenRequest {
    let (default_sub, default_username, first, last) = if admin {
        ("admin-0001", "devadmin", "Dana", "Admin")
    } else {
        ("customer-0001", "customer1", "Casey", "Customer")
    };
    TokenRequest {
        subject: sub.unwrap_or_else(|| default_sub.to_owned()),
        username: username.unwrap_or_else(|| default_username.to_owned()),
        first_name: first.to_owned(),
        last_name: last.to_owned(),
        scope,
        admin: admin.then(|| {
            (
                config.auth.admin_claim.clone(),
                config.auth.admin_value.clone(),
            )
        }),
        customer_group: customer_group
            .map(|group| (config.auth.customer_group_claim.clone(), group)),
        ttl_secs: ttl,
    }
}

/// Opens the configured database (creating the data directory for SQLite) and migrates it.
async fn open_database(config: &Config) -> anyhow::Result<Db> {
    if config.database.url.is_none() {
        crate::private_files::create_dir(&config.data_dir).with_context(|| {
            format!("creating the data directory {}", config.data_dir.display())
        })?;
    }
    let db = Db::connect(
        &config.database_url(),
        2,
        config.database.sqlite_synchronous,
    )
    .await?;
    db.migrate().await?;
    Ok(db)
}

/// Replaces the local entitlements table with the file's rows, all or nothing.
async fn import_entitlements(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let rows = crate::store::entitlements::parse_csv(&text)
        .with_context(|| format!("parsing {}", file.display()))?;
    let db = open_database(config).await?;
    crate::store::entitlements::TableEntitlements::new(db.clone())
        .replace_all(&rows)
        .await
        .context("storing the entitlements")?;
    db.close().await;
    eprintln!("imported {} entitlements", rows.len());
    Ok(())
}

async fn import_audience(
    config: &Config,
    id: &str,
    name: Option<&str>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let audience = crate::domain::connection::AudienceRef::parse(id, name)
        .context("invalid audience (--id, --name)")?;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let members = crate::domain::sync::parse_member_list(&text)
        .with_context(|| format!("{} is not a member list", file.display()))?;
    let db = open_database(config).await?;
    crate::store::audiences::import(&db, &audience, &members)
        .await
        .context("storing the audience")?;
    db.close().await;
    eprintln!(
        "audience {} now has {} members; its connections pick them up at their next sync",
        audience.id,
        members.len()
    );
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let dev = config.mode == Mode::Dev;
    let app = Application::build(config.clone()).await?;
    let base = format!("http://{}", app.address);
    tracing::info!(address = %app.address, mode = ?config.mode, "tandem is listening");
    if dev {
        let request = token_request(
            &config,
            true,
            None,
            None,
            "banking/full".to_owned(),
            None,
            24 * 3600,
        );
        let (api_key, authorization) = dev_credential_headers(&config, &request)?;
        println!(
            "tandem is running in dev mode at {base} (data in {dir})\n\nTry it (an admin token valid for 24 hours):\n\n  curl -H '{api_key}' -H '{authorization}' {base}/bankingAdmin/customerAudienceConnections\n\nMore credentials: tandem dev-credentials --data-dir {dir} [--admin]\n",
            dir = config.data_dir.display()
        );
    }
    app.run_until(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
