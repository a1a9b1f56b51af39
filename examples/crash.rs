//! Crash safety check: drives creates and actions against a real `tandem serve` process, kills
//! it with SIGKILL at random moments, restarts it on the same data, and then checks that every
//! write the service acknowledged with a 2xx is still there and that no queued email was lost.
//!
//! `cargo run --release --example crash -- [--backend sqlite|postgres] [--kills 20]`
//! (`scripts/crash.sh` builds the binary and runs both backends).
//!
//! What counts:
//! - An acknowledged write is one that received a 2xx. Its effect must survive every later
//!   kill: the resource exists (unless an acknowledged delete, or a delete whose answer was
//!   lost, removed it), its revision is at least the acknowledged one, and at the same revision
//!   it is in the acknowledged state. An acknowledged delete must stay deleted.
//! - A request whose answer was lost to a kill has an unknown outcome: it may or may not have
//!   been applied. Such requests are counted but never expected either way.
//! - Every acknowledged invitation create or resend must have its outbox row; every outbox
//!   row must match the invitation's send count (the row and the change commit together);
//!   after the mail worker drains, every row must be delivered as a `.eml` file. Delivery is
//!   at least once: a kill between writing the file and recording it sends it again.

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem::domain::connection::AudienceRef;
use tandem::store::Db;
use tokio::process::{Child, Command};

const CONNECTIONS: &str = "/bankingAdmin/customerAudienceConnections";
const INVITATIONS: &str = "/invitations/invitations";
const ACCOUNT: &str = "https://api.bank.example/accounts/account/crash-0001";
const CUSTOMER: &str = "customer-crash";
/// Audiences imported before the run: connections to them sync to `active`; later creates use
/// audiences the source does not know, which the sync engine fails. Both are state changes the
/// service makes on its own while the driver writes.
const IMPORTED_AUDIENCES: usize = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
}

#[derive(Parser)]
#[command(
    about = "Kill tandem with SIGKILL at random moments and check nothing acknowledged is lost"
)]
struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendArg,
    /// How many times the running server is killed (besides one kill during the first start-up).
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Random delay between a (re)start and the next kill, in milliseconds.
    #[arg(long, default_value_t = 50)]
    min_delay_ms: u64,
    #[arg(long, default_value_t = 500)]
    max_delay_ms: u64,
    /// The server binary (built with `cargo build --release`).
    #[arg(long, default_value = "target/release/tandem")]
    binary: PathBuf,
    /// A PostgreSQL database this run may create and drop its own database on.
    #[arg(
        long,
        env = "TANDEM_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_admin_url: String,
    /// Keep the data directory (and PostgreSQL database) even when nothing was lost.
    #[arg(long)]
    keep: bool,
    /// Check the checker: before verifying, roll one acknowledged invitation back behind the
    /// service's back and delete one of its outbox messages; the run then passes only if both
    /// are reported lost.
    #[arg(long)]
    sabotage: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

// ---- The server process -------------------------------------------------------------------

struct Server {
    binary: PathBuf,
    config: PathBuf,
    data_dir: PathBuf,
    addr: SocketAddr,
    log: PathBuf,
    client: Client,
    child: Option<Child>,
}

impl Server {
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--addr")
            .arg(self.addr.to_string())
            .stdout(log.try_clone().context("sharing the log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `/health` answers, failing if the process exits first.
    async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let url = format!("{}/health", self.base());
        loop {
            let child = self.child.as_mut().context("the server is not running")?;
            if let Some(status) = child.try_wait().context("checking the server process")? {
                bail!(
                    "the server exited ({status}) before answering /health; see {}",
                    self.log.display()
                );
            }
            if let Ok(res) = self.client.get(&url).send().await
                && res.status() == StatusCode::OK
            {
                return Ok(started.elapsed());
            }
            ensure!(
                started.elapsed() < within,
                "the server did not answer /health within {within:?}; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, as in a power cut of the process (not of the machine).
    async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("sending SIGKILL")?;
            child.wait().await.context("reaping the killed server")?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the graceful shutdown to finish.
    async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("the server is not running")?;
        let pid = child.id().context("the server has already exited")?;
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await
            .context("running kill -TERM")?;
        ensure!(sent.success(), "kill -TERM {pid} failed: {sent}");
        tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .context("the server did not stop within 60 s of SIGTERM")?
            .context("waiting for the server to stop")
    }
}

// ---- What was acknowledged ----------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum WriteKind {
    ConnectionCreate,
    ConnectionActivate,
    ConnectionDeactivate,
    ConnectionDelete,
    InvitationCreate,
    InvitationResend,
    InvitationRevoke,
}

impl WriteKind {
    fn label(self) -> &'static str {
        match self {
            WriteKind::ConnectionCreate => "connection create",
            WriteKind::ConnectionActivate => "connection activate",
            WriteKind::ConnectionDeactivate => "connection deactivate",
            WriteKind::ConnectionDelete => "connection delete",
            WriteKind::InvitationCreate => "invitation create",
            WriteKind::InvitationResend => "invitation resend",
            WriteKind::InvitationRevoke => "invitation revoke",
        }
    }

    fn is_invitation(self) -> bool {
        matches!(
            self,
            WriteKind::InvitationCreate | WriteKind::InvitationResend | WriteKind::InvitationRevoke
        )
    }

    /// Writes that queue an invitation email in their transaction.
    fn sends_email(self) -> bool {
        matches!(
            self,
            WriteKind::InvitationCreate | WriteKind::InvitationResend
        )
    }
}

/// One 2xx answer: the resource, and the revision and state it reported (none for a delete).
#[derive(Debug, Clone)]
struct Ack {
    kind: WriteKind,
    id: String,
    revision: i64,
    state: Option<String>,
}

#[derive(Default)]
struct Ledger {
    acks: Vec<Ack>,
    connection_ids: Vec<String>,
    invitation_ids: Vec<String>,
    /// Connections a delete was sent for (answered or not): they may be gone.
    delete_sent: std::collections::HashSet<String>,
    /// Requests whose answer was lost (cut by a kill), by kind.
    unknown: BTreeMap<WriteKind, u64>,
    /// Writes that found no server to connect to (while it restarted): never applied.
    not_sent: u64,
    /// Expected refusals (409, 412, 404 after a concurrent delete), by kind and status.
    refused: BTreeMap<(WriteKind, u16), u64>,
    /// Answers no client should get (5xx, 400, ...): each is a failure of the run.
    unexpected: Vec<String>,
}

struct Driver {
    base: String,
    client: Client,
    admin: Vec<(String, String)>,
    customer: Vec<(String, String)>,
    ledger: Mutex<Ledger>,
    next_audience: AtomicUsize,
    next_invitee: AtomicUsize,
    stop: AtomicBool,
}

enum Answer {
    /// No connection: the server is down and the request was never sent.
    NotSent,
    /// The response was lost: the write may or may not have happened.
    Lost,
    Got(StatusCode, Option<i64>, Value),
}

fn revision_of(etag: Option<&str>) -> Option<i64> {
    etag?
        .trim_matches('"')
        .strip_prefix('r')
        .and_then(|r| r.parse().ok())
}

impl Driver {
    fn request(&self, who: &[(String, String)], method: Method, path: &str) -> RequestBuilder {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in who {
            req = req.header(name, value);
        }
        req
    }

    async fn send(&self, req: RequestBuilder) -> Answer {
        let res = match req.send().await {
            Ok(res) => res,
            Err(err) => {
                // While the server restarts every request fails at once: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return if err.is_connect() {
                    Answer::NotSent
                } else {
                    Answer::Lost
                };
            }
        };
        let status = res.status();
        let revision = revision_of(
            res.headers()
                .get("etag")
                .and_then(|value| value.to_str().ok()),
        );
        // A body cut short by a kill is a lost answer too: the client never saw it complete.
        match res.bytes().await {
            Ok(bytes) => Answer::Got(
                status,
                revision,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ),
            Err(_) => Answer::Lost,
        }
    }

    fn record(&self, kind: WriteKind, answer: Answer, expected: StatusCode, id_field: &str) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        match answer {
            Answer::NotSent => ledger.not_sent += 1,
            Answer::Lost => *ledger.unknown.entry(kind).or_default() += 1,
            Answer::Got(status, revision, body) if status == expected => {
                let id = body[id_field].as_str().map(str::to_owned);
                // A delete's 204 carries no entity tag; it has no revision to compare.
                let revision = match kind {
                    WriteKind::ConnectionDelete => Some(0),
                    _ => revision,
                };
                let (Some(id), Some(revision)) = (id, revision) else {
                    ledger.unexpected.push(format!(
                        "{}: {status} without an id or entity tag: {body}",
                        kind.label()
                    ));
                    return;
                };
                let state = body["state"].as_str().map(str::to_owned);
                match kind {
                    WriteKind::ConnectionCreate => ledger.connection_ids.push(id.clone()),
                    WriteKind::InvitationCreate => ledger.invitation_ids.push(id.clone()),
                    _ => {}
                }
                ledger.acks.push(Ack {
                    kind,
                    id,
                    revision,
                    state,
                });
            }
            Answer::Got(status, _, body) => {
                let refusal = matches!(
                    status,
                    StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND
                );
                if refusal {
                    *ledger.refused.entry((kind, status.as_u16())).or_default() += 1;
                } else {
                    ledger
                        .unexpected
                        .push(format!("{}: {status} {body}", kind.label()));
                }
            }
        }
    }

    fn pick(&self, invitations: bool) -> Option<String> {
        let ledger = self.ledger.lock().expect("ledger lock");
        let ids = if invitations {
            &ledger.invitation_ids
        } else {
            &ledger.connection_ids
        };
        if ids.is_empty() {
            return None;
        }
        Some(ids[rand::random_range(0..ids.len())].clone())
    }

    /// The current entity tag, or None when the resource is gone or the server is down.
    async fn current_etag(&self, who: &[(String, String)], path: &str) -> Option<String> {
        let Ok(res) = self.request(who, Method::GET, path).send().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return None;
        };
        if res.status() != StatusCode::OK {
            return None;
        }
        res.headers().get("etag")?.to_str().ok().map(str::to_owned)
    }

    async fn create_connection(&self) {
        let n = self.next_audience.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "audience": { "id": audience_id(n), "name": format!("Crash audience {n}") },
            "provider": { "name": "file" }
        });
        let req = self
            .request(&self.admin, Method::POST, CONNECTIONS)
            .json(&body);
        let answer = self.send(req).await;
        self.record(
            WriteKind::ConnectionCreate,
            answer,
            StatusCode::CREATED,
            "id",
        );
    }

    async fn connection_action(&self, kind: WriteKind) {
        let Some(id) = self.pick(false) else { return };
        let path = format!("{CONNECTIONS}/{id}");
        let Some(etag) = self.current_etag(&self.admin, &path).await else {
            return;
        };
        let (method, target, expected) = match kind {
            WriteKind::ConnectionActivate => (Method::POST, "/active", StatusCode::OK),
            WriteKind::ConnectionDeactivate => (Method::POST, "/inactive", StatusCode::OK),
            _ => (Method::DELETE, "", StatusCode::NO_CONTENT),
        };
        if kind == WriteKind::ConnectionDelete {
            // Recorded before sending: once sent, the connection may be gone even if the answer
            // never arrives.
            self.ledger
                .lock()
                .expect("ledger lock")
                .delete_sent
                .insert(id.clone());
        }
        let req = self
            .request(&self.admin, method, &format!("{path}{target}"))
            .header("If-Match", etag);
        let answer = match self.send(req).await {
            // A delete answers 204 without a body: the ledger needs the id it acknowledged.
            Answer::Got(status, revision, _) if kind == WriteKind::ConnectionDelete => {
                Answer::Got(status, revision, json!({ "id": id }))
            }
            answer => answer,
        };
        self.record(kind, answer, expected, "id");
    }

    async fn create_invitation(&self) {
        let n = self.next_invitee.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "sharedSecret": "obsolete obese octopus",
            "type": "joint",
            "accountUri": ACCOUNT,
            "inviterFullName": "Casey Customer",
            "emailAddress": format!("invitee{n}@example.com"),
            "firstName": "Max",
            "lastName": "Peck",
        });
        let req = self
            .request(&self.customer, Method::POST, INVITATIONS)
            .json(&body);
        let answer = self.send(req).await;
        self.record(
            WriteKind::InvitationCreate,
            answer,
            StatusCode::CREATED,
            "_id",
        );
    }

    async fn invitation_action(&self, kind: WriteKind) {
        let Some(id) = self.pick(true) else { return };
        let Some(etag) = self
            .current_etag(&self.customer, &format!("{INVITATIONS}/{id}"))
            .await
        else {
            return;
        };
        let action = if kind == WriteKind::InvitationResend {
            "sent"
        } else {
            "revoked"
        };
        let req = self
            .request(
                &self.customer,
                Method::POST,
                &format!("/invitations/{action}?invitation={id}"),
            )
            .header("If-Match", etag);
        let answer = self.send(req).await;
        self.record(kind, answer, StatusCode::OK, "_id");
    }

    /// One client: random writes until told to stop. Creates dominate, so that resources for
    /// the actions keep coming.
    async fn client_loop(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            let roll: u32 = rand::random_range(0..100);
            match roll {
                0..25 => self.create_connection().await,
                25..40 => self.connection_action(WriteKind::ConnectionActivate).await,
                40..52 => {
                    self.connection_action(WriteKind::ConnectionDeactivate)
                        .await
                }
                52..57 => self.connection_action(WriteKind::ConnectionDelete).await,
                57..82 => self.create_invitation().await,
                82..94 => self.invitation_action(WriteKind::InvitationResend).await,
                _ => self.invitation_action(WriteKind::InvitationRevoke).await,
            }
            tokio::task::yield_now().await;
        }
    }
}

fn audience_id(n: usize) -> String {
    format!("crash-audience-{n:06}")
}

// ---- Set-up --------------------------------------------------------------------------------

fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free local port")?;
    listener.local_addr().context("reading the free port")
}

fn config_toml(database_url: Option<&str>) -> String {
    // Short leases so that what a killed instance had claimed (an email being sent, a sync run)
    // is taken over within seconds instead of the production defaults' minutes.
    let database = database_url
        .map(|url| format!("[database]\nurl = \"{url}\"\n\n"))
        .unwrap_or_default();
    format!(
        "mode = \"dev\"\n\n{database}[rate_limit]\nper_second = 0.0\n\n\
         [email]\npoll_interval_ms = 200\nlease_secs = 6\nretry_min_ms = 200\nretry_max_ms = 2000\n\n\
         [sync]\npoll_interval_secs = 0.5\nlease_secs = 6.0\nbackoff_base_secs = 1.0\n"
    )
}

/// Runs a `tandem` subcommand to completion and returns its standard output.
async fn tandem(binary: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running tandem {}", args.join(" ")))?;
    let mut input = child.stdin.take().context("tandem's standard input")?;
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await?;
    }
    drop(input);
    let output = child.wait_with_output().await?;
    ensure!(
        output.status.success(),
        "tandem {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The two header lines `tandem dev-credentials` prints, as (name, value) pairs.
fn headers(printed: &str) -> anyhow::Result<Vec<(String, String)>> {
    printed
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once(": ")
                .with_context(|| format!("not a header line: {line}"))?;
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

struct Postgres {
    admin_url: String,
    name: String,
}

impl Postgres {
    fn url(&self) -> anyhow::Result<String> {
        let (server, _) = self
            .admin_url
            .rsplit_once('/')
            .context("the PostgreSQL URL has no database name")?;
        Ok(format!("{server}/{}", self.name))
    }

    async fn execute(&self, sql: String) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .with_context(|| format!("connecting to {}", self.admin_url))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .with_context(|| sql)?;
        Ok(())
    }
}

// ---- The run -------------------------------------------------------------------------------

async fn run(args: Args) -> anyhow::Result<bool> {
    ensure!(
        args.min_delay_ms <= args.max_delay_ms,
        "--min-delay-ms must not exceed --max-delay-ms"
    );
    let binary = std::fs::canonicalize(&args.binary).with_context(|| {
        format!(
            "{} not found; build it with cargo build --release",
            args.binary.display()
        )
    })?;
    let backend_name = match args.backend {
        BackendArg::Sqlite => "sqlite",
        BackendArg::Postgres => "postgres",
    };
    let work = std::env::temp_dir().join(format!(
        "tandem-crash-{backend_name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let data_dir = work.join("data");
    let postgres = match args.backend {
        BackendArg::Sqlite => None,
        BackendArg::Postgres => {
            let pg = Postgres {
                admin_url: args.postgres_admin_url.clone(),
                name: format!("tandem_crash_{}", std::process::id()),
            };
            pg.execute(format!("CREATE DATABASE {}", pg.name)).await?;
            Some(pg)
        }
    };
    let database_url = postgres.as_ref().map(Postgres::url).transpose()?;
    let config = work.join("crash.toml");
    std::fs::write(&config, config_toml(database_url.as_deref()))
        .with_context(|| format!("writing {}", config.display()))?;

    let outcome = drive(&args, &binary, &work, &data_dir, &config, database_url).await;
    let keep = args.keep || !matches!(outcome, Ok(true));
    if keep {
        eprintln!("kept {} for inspection", work.display());
        if let Some(pg) = &postgres {
            eprintln!("kept PostgreSQL database {}", pg.name);
        }
    } else {
        let _ = std::fs::remove_dir_all(&work);
        if let Some(pg) = &postgres {
            pg.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name))
                .await?;
        }
    }
    outcome
}

async fn drive(
    args: &Args,
    binary: &Path,
    work: &Path,
    data_dir: &Path,
    config: &Path,
    database_url: Option<String>,
) -> anyhow::Result<bool> {
    let common = [
        "--config",
        config.to_str().context("a non-UTF-8 path")?,
        "--data-dir",
        data_dir.to_str().context("a non-UTF-8 path")?,
    ];
    let client = tandem::app::http_client()?;
    let mut server = Server {
        binary: binary.to_owned(),
        config: config.to_owned(),
        data_dir: data_dir.to_owned(),
        addr: free_local_addr()?,
        log: work.join("server.log"),
        client: client.clone(),
        child: None,
    };

    // The first start-up is killed early, possibly in the middle of migrating the new
    // database or generating the dev keys: the next start must recover from that.
    server.start()?;
    let first_kill = Duration::from_millis(rand::random_range(0..120));
    tokio::time::sleep(first_kill).await;
    server.kill().await?;

    // Seeding (entitlements through the CLI, audiences through the store) opens and migrates
    // the same database, which must work after the interrupted start.
    let entitlements = work.join("entitlements.csv");
    std::fs::write(
        &entitlements,
        format!("customerId,resourceUri,role\n{CUSTOMER},{ACCOUNT},owner\n"),
    )?;
    let mut import = common.to_vec();
    import.push(entitlements.to_str().context("a non-UTF-8 path")?);
    tandem(
        binary,
        &[&["entitlements", "import"], &import[..]].concat(),
        None,
    )
    .await?;
    let url = database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("tandem.sqlite3").display()
        )
    });
    let db = Db::connect(&url, 2, tandem::config::SqliteSynchronous::default()).await?;
    db.migrate().await?;
    for n in 0..IMPORTED_AUDIENCES {
        let audience = AudienceRef::parse(&audience_id(n), Some(&format!("Crash audience {n}")))
            .context("an audience id")?;
        let members = (0..3).map(|m| format!("crash-member-{n}-{m}")).collect();
        tandem::store::audiences::import(&db, &audience, &members)
            .await
            .context("importing an audience")?;
    }
    let admin = headers(
        &tandem(
            binary,
            &[&["dev-credentials"], &common[..], &["--admin"]].concat(),
            None,
        )
        .await?,
    )?;
    let customer = headers(
        &tandem(
            binary,
            &[&["dev-credentials"], &common[..], &["--sub", CUSTOMER]].concat(),
            None,
        )
        .await?,
    )?;

    server.start()?;
    let mut restart_times = vec![server.wait_healthy(Duration::from_secs(60)).await?];

    let driver = Arc::new(Driver {
        base: server.base(),
        client,
        admin,
        customer,
        ledger: Mutex::new(Ledger::default()),
        next_audience: AtomicUsize::new(0),
        next_invitee: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(driver.clone().client_loop()))
        .collect();

    let started = Instant::now();
    for _ in 0..args.kills {
        let delay = rand::random_range(args.min_delay_ms..=args.max_delay_ms);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill().await?;
        server.start()?;
        restart_times.push(server.wait_healthy(Duration::from_secs(60)).await?);
    }
    // A last stretch without kills, so that the final state includes writes made after the
    // last recovery.
    tokio::time::sleep(Duration::from_millis(500)).await;
    driver.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.context("a client task panicked")?;
    }
    let driving = started.elapsed();

    let ledger = std::mem::take(&mut *driver.ledger.lock().expect("ledger lock"));
    if args.sabotage {
        sabotage(&db, &ledger).await?;
    }
    let writes = verify_writes(&driver, &ledger).await?;
    let outbox = verify_outbox(&db, &ledger, data_dir).await?;
    let mail_queue = tandem(binary, &[&["mail-queue"], &common[..]].concat(), None).await?;
    db.close().await;
    let stopped = server.terminate().await?;

    let lost = writes.lost.len() as u64;
    let clean = outbox.undelivered == 0 && ledger.unexpected.is_empty() && stopped.success();
    let ok = if args.sabotage {
        clean && lost > 0 && outbox.lost > 0 && !outbox.mismatched.is_empty()
    } else {
        clean && lost == 0 && outbox.lost == 0 && outbox.mismatched.is_empty()
    };
    print_summary(&Summary {
        backend: match args.backend {
            BackendArg::Sqlite => "sqlite",
            BackendArg::Postgres => "postgres",
        },
        kills: args.kills,
        first_kill,
        driving,
        restart_times: &restart_times,
        ledger: &ledger,
        writes: &writes,
        outbox: &outbox,
        mail_queue: mail_queue.lines().next().unwrap_or(""),
        stopped,
        sabotage: args.sabotage,
        ok,
    });
    Ok(ok)
}

/// Damages the data the way a durability bug would: the invitation with the most acknowledged
/// emails loses its revision history and one of its queued messages.
async fn sabotage(db: &Db, ledger: &Ledger) -> anyhow::Result<()> {
    let mut sends: HashMap<&str, u64> = HashMap::new();
    for ack in ledger.acks.iter().filter(|a| a.kind.sends_email()) {
        *sends.entry(ack.id.as_str()).or_default() += 1;
    }
    let (victim, _) = sends
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .context("no acknowledged invitation to sabotage")?;
    sqlx::query("UPDATE invitations SET revision = 0 WHERE id = $1")
        .bind(victim)
        .execute(&db.write)
        .await
        .context("sabotaging an invitation")?;
    let rows = outbox_rows(db).await?;
    let (message, _, _) = rows
        .iter()
        .find(|(_, invitation, _)| invitation == victim)
        .context("the sabotaged invitation has no outbox message")?;
    sqlx::query("DELETE FROM email_outbox WHERE id = $1")
        .bind(message)
        .execute(&db.write)
        .await
        .context("sabotaging the outbox")?;
    println!("sabotaged invitation {victim} and its outbox message {message}");
    Ok(())
}

// ---- Verification --------------------------------------------------------------------------

#[derive(Default)]
struct WriteCheck {
    acknowledged: BTreeMap<WriteKind, u64>,
    found: BTreeMap<WriteKind, u64>,
    /// Found only in that a delete sent later (answered or not) removed the resource.
    superseded: u64,
    lost: Vec<String>,
}

/// The resource as it is now: None when it is gone (404).
async fn current(
    driver: &Driver,
    who: &[(String, String)],
    path: &str,
) -> anyhow::Result<Option<(i64, String)>> {
    let res = driver
        .request(who, Method::GET, path)
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    match res.status() {
        StatusCode::NOT_FOUND => Ok(None),
        StatusCode::OK => {
            let revision = revision_of(res.headers().get("etag").and_then(|v| v.to_str().ok()))
                .with_context(|| format!("GET {path} answered without an entity tag"))?;
            let body: Value = res.json().await.with_context(|| format!("GET {path}"))?;
            let state = body["state"]
                .as_str()
                .with_context(|| format!("GET {path} answered without a state: {body}"))?;
            Ok(Some((revision, state.to_owned())))
        }
        status => bail!("GET {path} answered {status}"),
    }
}

async fn verify_writes(driver: &Driver, ledger: &Ledger) -> anyhow::Result<WriteCheck> {
    let mut now = HashMap::new();
    for id in &ledger.connection_ids {
        let found = current(driver, &driver.admin, &format!("{CONNECTIONS}/{id}")).await?;
        now.insert(id.clone(), found);
    }
    for id in &ledger.invitation_ids {
        let found = current(driver, &driver.customer, &format!("{INVITATIONS}/{id}")).await?;
        now.insert(id.clone(), found);
    }
    let mut check = WriteCheck::default();
    for ack in &ledger.acks {
        *check.acknowledged.entry(ack.kind).or_default() += 1;
        let state_now = now.get(&ack.id).cloned().flatten();
        let found = match (ack.kind, &state_now) {
            (WriteKind::ConnectionDelete, None) => true,
            (WriteKind::ConnectionDelete, Some(_)) => false,
            (_, None) if !ack.kind.is_invitation() && ledger.delete_sent.contains(&ack.id) => {
                check.superseded += 1;
                true
            }
            (_, None) => false,
            (_, Some((revision, state))) => {
                *revision > ack.revision
                    || (*revision == ack.revision && Some(state) == ack.state.as_ref())
            }
        };
        if found {
            *check.found.entry(ack.kind).or_default() += 1;
        } else {
            check.lost.push(format!(
                "{} {} acknowledged at revision {} ({:?}), now {:?}",
                ack.kind.label(),
                ack.id,
                ack.revision,
                ack.state,
                state_now
            ));
        }
    }
    Ok(check)
}

#[derive(Default)]
struct OutboxCheck {
    /// Acknowledged creates and resends: each queued one message.
    expected: u64,
    /// Of those, how many have their message in the outbox.
    found: u64,
    lost: u64,
    /// Invitations whose outbox rows do not match their send count (a write applied without
    /// its message, or the reverse), including writes whose answer was lost.
    mismatched: Vec<String>,
    rows: u64,
    sent_rows: u64,
    eml_files: u64,
    undelivered: u64,
    duplicates: u64,
    partial_files: u64,
    drain_time: Duration,
}

async fn outbox_rows(db: &Db) -> anyhow::Result<Vec<(String, String, bool)>> {
    sqlx::query("SELECT id, payload, sent_at FROM email_outbox")
        .fetch_all(&db.read)
        .await
        .context("reading the email outbox")?
        .iter()
        .map(|row| {
            let payload: Value = serde_json::from_str(&row.try_get::<String, _>("payload")?)?;
            let invitation = payload["invitationId"]
                .as_str()
                .context("an outbox payload without invitationId")?
                .to_owned();
            Ok((
                row.try_get("id")?,
                invitation,
                row.try_get::<Option<i64>, _>("sent_at")?.is_some(),
            ))
        })
        .collect()
}

async fn verify_outbox(db: &Db, ledger: &Ledger, data_dir: &Path) -> anyhow::Result<OutboxCheck> {
    let mut check = OutboxCheck::default();
    let rows = outbox_rows(db).await?;
    let mut per_invitation: HashMap<&str, u64> = HashMap::new();
    for (_, invitation, _) in &rows {
        *per_invitation.entry(invitation.as_str()).or_default() += 1;
    }
    let mut acked_sends: HashMap<&str, u64> = HashMap::new();
    for ack in ledger.acks.iter().filter(|a| a.kind.sends_email()) {
        *acked_sends.entry(ack.id.as_str()).or_default() += 1;
    }
    for (invitation, expected) in &acked_sends {
        let queued = per_invitation.get(invitation).copied().unwrap_or(0);
        check.expected += expected;
        check.found += queued.min(*expected);
        check.lost += expected.saturating_sub(queued);
    }
    let send_counts = sqlx::query("SELECT id, send_count FROM invitations")
        .fetch_all(&db.read)
        .await
        .context("reading the invitations' send counts")?;
    for row in &send_counts {
        let id: String = row.try_get("id")?;
        let sends: i64 = row.try_get("send_count")?;
        let queued = per_invitation.get(id.as_str()).copied().unwrap_or(0);
        if queued != sends as u64 {
            check.mismatched.push(format!(
                "invitation {id}: send_count {sends}, outbox rows {queued}"
            ));
        }
    }

    // Let the worker deliver everything, including what killed instances had claimed (their
    // leases run out first).
    let started = Instant::now();
    let rows = loop {
        let rows = outbox_rows(db).await?;
        if rows.iter().all(|(_, _, sent)| *sent) {
            break rows;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{} of {} outbox messages still undelivered after 120 s",
            rows.iter().filter(|(_, _, sent)| !sent).count(),
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check.drain_time = started.elapsed();
    check.rows = rows.len() as u64;
    check.sent_rows = rows.iter().filter(|(_, _, sent)| *sent).count() as u64;

    // `<time>-<outbox id>.eml`: the time has no '-', the id does.
    let mut files: HashMap<String, u64> = HashMap::new();
    let mail_dir = data_dir.join("mail");
    for entry in
        std::fs::read_dir(&mail_dir).with_context(|| format!("listing {}", mail_dir.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".eml.partial") {
            check.partial_files += 1;
        } else if let Some(stem) = name.strip_suffix(".eml") {
            let (_, id) = stem
                .split_once('-')
                .with_context(|| format!("unexpected mail file name {name}"))?;
            *files.entry(id.to_owned()).or_default() += 1;
            check.eml_files += 1;
        }
    }
    for (id, _, _) in &rows {
        match files.get(id).copied().unwrap_or(0) {
            0 => check.undelivered += 1,
            n => check.duplicates += n - 1,
        }
    }
    Ok(check)
}

// ---- Report --------------------------------------------------------------------------------

struct Summary<'a> {
    backend: &'a str,
    kills: u32,
    first_kill: Duration,
    driving: Duration,
    restart_times: &'a [Duration],
    ledger: &'a Ledger,
    writes: &'a WriteCheck,
    outbox: &'a OutboxCheck,
    mail_queue: &'a str,
    stopped: std::process::ExitStatus,
    sabotage: bool,
    ok: bool,
}

fn print_summary(s: &Summary) {
    let total = |map: &BTreeMap<WriteKind, u64>| map.values().sum::<u64>();
    let acknowledged = total(&s.writes.acknowledged);
    let found = total(&s.writes.found);
    let unknown = total(&s.ledger.unknown);
    let refused: u64 = s.ledger.refused.values().sum();
    let slowest = s.restart_times.iter().max().copied().unwrap_or_default();
    println!("crash-safety summary ({} backend)", s.backend);
    println!("  {:<34} {:>8}", "kills (SIGKILL, while serving)", s.kills);
    println!(
        "  {:<34} {:>6}ms",
        "first start-up killed after",
        s.first_kill.as_millis()
    );
    println!("  {:<34} {:>7.1}s", "driving time", s.driving.as_secs_f64());
    println!(
        "  {:<34} {:>6}ms",
        "slowest restart to /health",
        slowest.as_millis()
    );
    println!("  {:<34} {:>8}", "writes acknowledged (2xx)", acknowledged);
    for (kind, n) in &s.writes.acknowledged {
        let f = s.writes.found.get(kind).copied().unwrap_or(0);
        println!("    {:<32} {:>8}  found {f}", kind.label(), n);
    }
    println!("  {:<34} {:>8}", "writes found", found);
    println!(
        "  {:<34} {:>8}",
        "  of which removed by a later delete", s.writes.superseded
    );
    println!("  {:<34} {:>8}", "lost", acknowledged.saturating_sub(found));
    println!("  {:<34} {:>8}", "outcome unknown (answer lost)", unknown);
    println!(
        "  {:<34} {:>8}",
        "not sent (server down)", s.ledger.not_sent
    );
    println!("  {:<34} {:>8}", "refused (404/409/412)", refused);
    println!(
        "  {:<34} {:>8}",
        "unexpected answers",
        s.ledger.unexpected.len()
    );
    println!(
        "  {:<34} {:>8}",
        "outbox messages expected", s.outbox.expected
    );
    println!("  {:<34} {:>8}", "outbox messages found", s.outbox.found);
    println!("  {:<34} {:>8}", "outbox messages lost", s.outbox.lost);
    println!(
        "  {:<34} {:>8}",
        "outbox rows != send_count",
        s.outbox.mismatched.len()
    );
    println!(
        "  {:<34} {:>8}",
        "outbox rows (incl. unknown outcomes)", s.outbox.rows
    );
    println!(
        "  {:<34} {:>8}",
        "rows delivered (sent_at)", s.outbox.sent_rows
    );
    println!("  {:<34} {:>8}", ".eml files", s.outbox.eml_files);
    println!(
        "  {:<34} {:>8}",
        "rows without .eml file", s.outbox.undelivered
    );
    println!(
        "  {:<34} {:>8}",
        "duplicate .eml (at least once)", s.outbox.duplicates
    );
    println!(
        "  {:<34} {:>8}",
        ".eml.partial left by kills", s.outbox.partial_files
    );
    println!(
        "  {:<34} {:>7.1}s",
        "mail drain after driving",
        s.outbox.drain_time.as_secs_f64()
    );
    println!("  {:<34} {}", "tandem mail-queue", s.mail_queue);
    println!("  {:<34} {}", "final SIGTERM shutdown", s.stopped);
    for line in s.writes.lost.iter().take(20) {
        println!("  LOST: {line}");
    }
    for line in s.outbox.mismatched.iter().take(20) {
        println!("  OUTBOX MISMATCH: {line}");
    }
    for line in s.ledger.unexpected.iter().take(20) {
        println!("  UNEXPECTED: {line}");
    }
    let result = match (s.ok, s.sabotage) {
        (true, false) => "PASS",
        (false, false) => "FAIL",
        (true, true) => "PASS (the sabotaged invitation and message were reported lost)",
        (false, true) => "FAIL (the checker missed the sabotage)",
    };
    println!("  result: {result}");
}
