//! Seeds a tandem database for the load benchmark (`scripts/bench.sh`): audience connections,
//! customers' entitlements and invitations, written as the service writes them, and the id
//! lists the wrk scripts under `scripts/bench/` draw their requests from.
//!
//! `cargo run --release --example bench_seed -- --config FILE --data-dir DIR --out DIR`
//!
//! The database is the one the configuration names (SQLite in the data directory by default).
//! Every seeded invitation's shared secret is `--secret`, sealed with the configured
//! `invitations.secret_key` (or dev mode's generated key in the data directory), so the
//! verification benchmark can accept them. The data is generated from a fixed seed, so two runs
//! produce the same rows apart from the sealing nonces and the times relative to now.

use anyhow::{Context, bail};
use clap::Parser;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tandem::config::Config;
use tandem::domain::connection::ConnectionState;
use tandem::domain::invitation::{InvitationState, InvitationType, identification_binding};
use tandem::domain::sealed::SecretBox;
use tandem::domain::sync::Trigger;
use tandem::domain::time::Timestamp;
use tandem::store::sql::{Param, SqlBuilder};
use tandem::store::{Backend, Db};

#[derive(Parser)]
struct Args {
    /// The configuration file the benchmarked server uses.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: PathBuf,
    /// Where the id lists are written.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    connections: usize,
    #[arg(long, default_value_t = 1_000_000)]
    invitations: usize,
    /// Customers the invitations are spread over (each holds two accounts and an organization).
    #[arg(long, default_value_t = 10_000)]
    customers: usize,
    /// The shared secret of every seeded invitation.
    #[arg(long, default_value = "benchmark shared secret")]
    secret: String,
}

const DAY_MS: i64 = 86_400_000;
/// Organizations the customers' authorized-signer invitations are spread over.
const ORGANIZATIONS: usize = 1_000;
/// Staff users: they create connections and product promotion invitations.
const STAFF: usize = 10;
/// Rows per transaction: large, so that the bulk load is not bound by commits.
const ROWS_PER_TRANSACTION: usize = 50_000;

const FIRST_NAMES: &[&str] = &[
    "Ada", "Bruno", "Chloe", "Dmitri", "Elena", "Farah", "Gustavo", "Hana", "Ivan", "Julia",
    "Kwame", "Lucia", "Mateo", "Nadia", "Oscar", "Priya", "Quinn", "Rosa", "Samir", "Tomas",
];
const LAST_NAMES: &[&str] = &[
    "Alvarez", "Becker", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
    "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Silva", "Tanaka",
    "Weber",
];

/// SplitMix64: a small deterministic generator, so the data set is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent` / 100.
    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A UUID v7 for an instant in the past, as `ResourceId::generate` makes for the present: ids
/// sort by creation time as the service's own do.
fn id_at(millis: i64) -> String {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (millis / 1000) as u64,
        ((millis % 1000) * 1_000_000) as u32,
    );
    uuid::Uuid::new_v7(ts).to_string()
}

pub fn customer_id(n: usize) -> String {
    format!("cust-{n:06}")
}

/// Customers fall into four core customer groups, "1" to "4".
fn customer_group(n: usize) -> String {
    (n % 4 + 1).to_string()
}

pub fn customer_username(n: usize) -> String {
    format!("customer{n:06}")
}

fn staff_id(n: usize) -> String {
    format!("staff-{n:04}")
}

fn account_uri(n: usize) -> String {
    format!("/banking/accounts/acct-{n:06}")
}

fn organization_uri(n: usize) -> String {
    format!("/banking/organizations/org-{n:04}")
}

/// A column value; `Null` is written as the SQL literal.
enum Value {
    Text(String),
    Int(i64),
    Null,
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Inserts `rows` into `table` with multi-row INSERTs, `ROWS_PER_TRANSACTION` per transaction.
async fn bulk_insert(
    db: &Db,
    table: &str,
    columns: &[&str],
    rows: impl IntoIterator<Item = Vec<Value>>,
) -> anyhow::Result<usize> {
    // SQLite resolves each `$N` by a linear search of the statement's parameters, so the cost
    // of a statement grows with the square of its parameters: keep them near a thousand there.
    // PostgreSQL (65535 at most) gains from fewer round trips.
    let max_parameters = match db.backend {
        Backend::Sqlite => 1_000,
        Backend::Postgres => 20_000,
    };
    let per_statement = (max_parameters / columns.len()).max(1);
    let head = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut rows = rows.into_iter().peekable();
    let mut total = 0;
    while rows.peek().is_some() {
        let mut tx = db.write.begin().await?;
        let mut in_transaction = 0;
        while in_transaction < ROWS_PER_TRANSACTION && rows.peek().is_some() {
            let mut q = SqlBuilder::new(&head);
            let mut in_statement = 0;
            while in_statement < per_statement
                && in_transaction < ROWS_PER_TRANSACTION
                && let Some(row) = rows.next()
            {
                if row.len() != columns.len() {
                    bail!(
                        "{table}: a row has {} values for {} columns",
                        row.len(),
                        columns.len()
                    );
                }
                q.push(if in_statement == 0 { "(" } else { ", (" });
                for (i, value) in row.into_iter().enumerate() {
                    if i > 0 {
                        q.push(", ");
                    }
                    match value {
                        Value::Text(s) => q.bind(Param::Text(s)),
                        Value::Int(n) => q.bind(Param::Int(n)),
                        Value::Null => q.push("NULL"),
                    };
                }
                q.push(")");
                in_statement += 1;
                in_transaction += 1;
            }
            q.build()
                .execute(&mut *tx)
                .await
                .with_context(|| format!("inserting into {table}"))?;
        }
        tx.commit().await?;
        total += in_transaction;
    }
    Ok(total)
}

/// The key the server seals secrets with: the configured one, else dev mode's generated key.
fn secret_box(config: &Config) -> anyhow::Result<SecretBox> {
    let text = match &config.invitations.secret_key {
        Some(key) => key.clone(),
        None => {
            let path = config.data_dir.join("dev").join("invitation-secret-key");
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {} (set invitations.secret_key, or start the dev server once so it \
                     generates the key)",
                    path.display()
                )
            })?
        }
    };
    SecretBox::from_base64(&text).context("the invitation secret key")
}

fn write_ids(out: &Path, name: &str, ids: &[String]) -> anyhow::Result<()> {
    let path = out.join(name);
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for id in ids {
        writeln!(file, "{id}")?;
    }
    file.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Connections: 60% active, 30% inactive, 5% failed, 5% pending, one audience each, all with
/// the `file` provider, created by staff over the last year. Returns the id lists by state.
async fn seed_connections(
    db: &Db,
    rng: &mut Rng,
    count: usize,
    now: i64,
) -> anyhow::Result<Vec<(ConnectionState, String)>> {
    let mut created: Vec<i64> = (0..count)
        .map(|_| now - 365 * DAY_MS + rng.below(364 * DAY_MS as u64) as i64)
        .collect();
    created.sort_unstable();
    let mut seeded = Vec::with_capacity(count);
    let mut rows = Vec::with_capacity(count);
    for (n, created_at) in created.into_iter().enumerate() {
        let roll = rng.below(100);
        let state = match roll {
            0..60 => ConnectionState::Active,
            60..90 => ConnectionState::Inactive,
            90..95 => ConnectionState::Failed,
            _ => ConnectionState::Pending,
        };
        let id = id_at(created_at);
        let creator = staff_id(1 + rng.below(STAFF as u64) as usize);
        let updater = staff_id(1 + rng.below(STAFF as u64) as usize);
        let audience = format!("aud-{n:06}");
        let synced = state != ConnectionState::Pending;
        let updated_at = if synced {
            created_at + rng.below((now - created_at) as u64).max(1) as i64
        } else {
            created_at
        };
        let last_synced_at = match state {
            ConnectionState::Active => Some(now - rng.below(900_000) as i64),
            ConnectionState::Inactive | ConnectionState::Failed => Some(updated_at),
            ConnectionState::Pending => None,
        };
        // The engine's schedule as a sync leaves it: active ones at their next interval,
        // pending ones due at once (the engine picks them up when it runs).
        let (next_sync_at, trigger, failures) = match state {
            ConnectionState::Active => (
                last_synced_at.unwrap_or(now) + 900_000,
                Trigger::Scheduled,
                0,
            ),
            ConnectionState::Failed => (updated_at, Trigger::Retry, 5),
            ConnectionState::Inactive => (updated_at, Trigger::Scheduled, 0),
            ConnectionState::Pending => (created_at, Trigger::Created, 0),
        };
        let user = |id: &str| -> [Value; 4] {
            let n: usize = id[6..].parse().unwrap_or(1);
            [
                id.into(),
                format!("admin{n:02}").into(),
                FIRST_NAMES[n % FIRST_NAMES.len()].into(),
                LAST_NAMES[n % LAST_NAMES.len()].into(),
            ]
        };
        let mut row: Vec<Value> = vec![
            id.clone().into(),
            audience.clone().into(),
            Some(format!("Audience {n}")).into(),
            "file".into(),
            synced.then(|| format!("file-{audience}")).into(),
            state.as_str().into(),
            (state == ConnectionState::Failed)
                .then_some("The provider refused the audience 5 times in a row")
                .into(),
            (1 + rng.below(6) as i64).into(),
            created_at.into(),
        ];
        row.extend(user(&creator));
        row.push(updated_at.into());
        row.extend(user(&updater));
        row.push(last_synced_at.into());
        row.push(next_sync_at.into());
        row.push(trigger.as_str().into());
        row.push(failures.into());
        rows.push(row);
        seeded.push((state, id));
    }
    let columns = [
        "id",
        "audience_id",
        "audience_name",
        "provider_name",
        "connected_resource_id",
        "state",
        "state_reason",
        "revision",
        "created_at",
        "created_by_id",
        "created_by_username",
        "created_by_first_name",
        "created_by_last_name",
        "updated_at",
        "updated_by_id",
        "updated_by_username",
        "updated_by_first_name",
        "updated_by_last_name",
        "last_synced_at",
        "next_sync_at",
        "next_sync_trigger",
        "consecutive_failures",
    ];
    bulk_insert(db, "audience_connections", &columns, rows).await?;
    Ok(seeded)
}

/// The organization customer `n` signs for: one in 1000, each with several signers.
fn organization_of(n: usize) -> String {
    organization_uri((n - 1) % ORGANIZATIONS + 1)
}

/// What customer `n` holds: account `n` as owner, account `n + 1` as joint holder (so every
/// account has two holders), and their organization as signer.
fn entitlements_of(n: usize, customers: usize) -> [(String, &'static str); 3] {
    [
        (account_uri(n), "owner"),
        (account_uri(n % customers + 1), "joint"),
        (organization_of(n), "signer"),
    ]
}

async fn seed_entitlements(db: &Db, customers: usize) -> anyhow::Result<usize> {
    let rows = (1..=customers).flat_map(|n| {
        entitlements_of(n, customers).map(|(resource, role)| {
            vec![
                customer_id(n).into(),
                resource.into(),
                role.into(),
                0.into(),
            ]
        })
    });
    bulk_insert(
        db,
        "entitlements",
        &[
            "customer_id",
            "resource_uri",
            "role",
            "joint_owners_disabled",
        ],
        rows,
    )
    .await
}

/// One invitation's plan before it is written: who, what, when and in which state.
struct Planned {
    created_at: i64,
    state: InvitationState,
    owner: Option<usize>,
}

/// Invitations: 90% by customers (joint on their account, authorized signer on their
/// organization), 10% product promotions by staff; states about 40% sent (created within the
/// expiry period), 10% accepted, 25% completed, 10% revoked, 15% expired (as the sweeper left
/// them). Returns (id, state, owner customer) of each.
async fn seed_invitations(
    db: &Db,
    rng: &mut Rng,
    secrets: &SecretBox,
    args: &Args,
    expiry_days: i64,
    now: i64,
) -> anyhow::Result<Vec<(String, InvitationState, Option<usize>)>> {
    let (count, customers, secret) = (args.invitations, args.customers, &args.secret);
    let expiry = expiry_days * DAY_MS;
    let mut plans: Vec<Planned> = (0..count)
        .map(|_| {
            let state = match rng.below(100) {
                0..40 => InvitationState::Sent,
                40..50 => InvitationState::Accepted,
                50..75 => InvitationState::Completed,
                75..85 => InvitationState::Revoked,
                _ => InvitationState::Expired,
            };
            // Sent ones are younger than the expiry period (less a day, so none expires during
            // the benchmark); expired ones are older; the rest up to 180 days old.
            let age = match state {
                InvitationState::Sent => rng.below((expiry - DAY_MS) as u64) as i64,
                InvitationState::Expired => {
                    expiry + 1 + rng.below((180 * DAY_MS - expiry).max(1) as u64) as i64
                }
                _ => rng.below(180 * DAY_MS as u64) as i64,
            };
            let owner = (!rng.percent(10)).then(|| 1 + rng.below(customers as u64) as usize);
            Planned {
                created_at: now - age,
                state,
                owner,
            }
        })
        .collect();
    plans.sort_unstable_by_key(|p| p.created_at);
    let mut seeded = Vec::with_capacity(count);
    let mut rows = Vec::with_capacity(count);
    for plan in plans {
        let id = id_at(plan.created_at);
        let first = rng.pick(FIRST_NAMES);
        let last = rng.pick(LAST_NAMES);
        let group = plan.owner.map(customer_group);
        let (kind, account, organization, role, creator, owner_id, inviter) = match plan.owner {
            Some(n) => {
                let inviter = format!(
                    "{} {}",
                    FIRST_NAMES[n % FIRST_NAMES.len()],
                    LAST_NAMES[(n / FIRST_NAMES.len()) % LAST_NAMES.len()]
                );
                if rng.percent(65) {
                    (
                        InvitationType::Joint,
                        Some(account_uri(n)),
                        None,
                        Some("jointOwner"),
                        customer_username(n),
                        customer_id(n),
                        inviter,
                    )
                } else {
                    (
                        InvitationType::AuthorizedSigner,
                        None,
                        Some(organization_of(n)),
                        Some("signer"),
                        customer_username(n),
                        customer_id(n),
                        inviter,
                    )
                }
            }
            None => {
                let n = 1 + rng.below(STAFF as u64) as usize;
                (
                    InvitationType::ProductPromotion,
                    None,
                    None,
                    None,
                    format!("admin{n:02}"),
                    staff_id(n),
                    "Example Bank".to_owned(),
                )
            }
        };
        let (verifications, send_count) = match plan.state {
            InvitationState::Accepted | InvitationState::Completed => {
                (1 + rng.below(2) as i64, 1 + rng.below(2) as i64)
            }
            // Sent ones have every resend left, so each resend request is a real one.
            InvitationState::Sent => (0, 1),
            _ => (rng.below(2) as i64, 1 + rng.below(3) as i64),
        };
        let failed = match plan.state {
            InvitationState::Sent => 0,
            _ => (verifications - 1).max(0),
        };
        let updated_at = match plan.state {
            InvitationState::Sent => plan.created_at,
            InvitationState::Expired => plan.created_at + expiry,
            _ => plan.created_at + rng.below((now - plan.created_at).max(1) as u64) as i64,
        };
        let attributes = rng.percent(20).then(|| {
            format!(
                r#"{{"channel":"{}"}}"#,
                rng.pick(&["branch", "web", "mobile"])
            )
        });
        let email = format!(
            "{}.{}{}@example.com",
            first.to_lowercase(),
            last.to_lowercase(),
            rng.below(10_000)
        );
        let row: Vec<Value> = vec![
            id.clone().into(),
            kind.as_str().into(),
            plan.state.as_str().into(),
            email.into(),
            Some(first).into(),
            Some(last).into(),
            // Sealed, as the service stores it.
            rng.percent(50)
                .then(|| {
                    let digits = format!("{:04}", rng.below(10_000));
                    secrets.seal(&identification_binding(&id), &digits)
                })
                .into(),
            account.into(),
            organization.into(),
            role.into(),
            inviter.into(),
            secrets.seal(&id, secret).into(),
            attributes.into(),
            verifications.into(),
            failed.into(),
            send_count.into(),
            creator.into(),
            owner_id.into(),
            group.into(),
            // Revision: one for the create, one per resend and per state change.
            (send_count + verifications + i64::from(plan.state != InvitationState::Sent)).into(),
            plan.created_at.into(),
            updated_at.into(),
            (plan.created_at + expiry).into(),
        ];
        rows.push(row);
        seeded.push((id, plan.state, plan.owner));
    }
    let columns = [
        "id",
        "type",
        "state",
        "email_address",
        "first_name",
        "last_name",
        "identification",
        "account_uri",
        "organization_uri",
        "role",
        "inviter_full_name",
        "sealed_secret",
        "attributes",
        "verification_count",
        "failed_verifications",
        "send_count",
        "created_by",
        "customer_id",
        "customer_group",
        "revision",
        "created_at",
        "updated_at",
        "expires_at",
    ];
    bulk_insert(db, "invitations", &columns, rows).await?;
    Ok(seeded)
}

/// Splits `ids` into consecutive disjoint lists of the given sizes (shorter when ids run out).
fn slices(ids: &[String], sizes: &[usize]) -> Vec<Vec<String>> {
    let mut rest = ids;
    sizes
        .iter()
        .map(|&n| {
            let (head, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            head.to_vec()
        })
        .collect()
}

/// A spread-out sample of `ids` (every k-th), so reads touch the whole table.
fn sample(ids: &[String], n: usize) -> Vec<String> {
    let step = (ids.len() / n.max(1)).max(1);
    ids.iter().step_by(step).take(n).cloned().collect()
}

/// Shuffles with the seeded generator, so that write lists do not walk the table in order.
fn shuffled(mut ids: Vec<String>, rng: &mut Rng) -> Vec<String> {
    for i in (1..ids.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ids.swap(i, j);
    }
    ids
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = Config::load(args.config.as_deref(), |name| std::env::var(name).ok())?;
    config.data_dir = args.data_dir.clone();
    config.check()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let secrets = secret_box(&config)?;
    let db = Db::connect(
        &config.database_url(),
        2,
        config.database.sqlite_synchronous,
    )
    .await?;
    db.migrate().await?;
    if db.backend == Backend::Sqlite {
        // The writer is one pooled connection: a large page cache keeps the index updates of
        // the bulk load in memory instead of re-reading pages from the OS (2 MB by default).
        sqlx::query("PRAGMA cache_size = -524288")
            .execute(&db.write)
            .await?;
    }
    let existing: i64 = sqlx::Row::try_get(
        &sqlx::query("SELECT COUNT(*) AS n FROM invitations")
            .fetch_one(&db.read)
            .await?,
        "n",
    )?;
    if existing > 0 {
        bail!("the database already holds {existing} invitations; seed an empty one");
    }
    let now = Timestamp::now().millis();
    let mut rng = Rng(0x7a6e_6465_6d00_0001);

    let started = Instant::now();
    let connections = seed_connections(&db, &mut rng, args.connections, now).await?;
    eprintln!(
        "seeded {} audience connections in {:.1}s",
        connections.len(),
        started.elapsed().as_secs_f64()
    );
    let step = Instant::now();
    let entitlements = seed_entitlements(&db, args.customers).await?;
    eprintln!(
        "seeded {entitlements} entitlements in {:.1}s",
        step.elapsed().as_secs_f64()
    );
    let step = Instant::now();
    let invitations = seed_invitations(
        &db,
        &mut rng,
        &secrets,
        &args,
        config.invitations.expiry_days,
        now,
    )
    .await?;
    eprintln!(
        "seeded {} invitations in {:.1}s",
        invitations.len(),
        step.elapsed().as_secs_f64()
    );
    if db.backend == Backend::Postgres {
        // What autovacuum does shortly after a bulk load: statistics, without which the planner
        // would guess, and the visibility map, without which index-only scans visit the table.
        // Done here, it does not land in the middle of a measurement. Likewise the checkpoint
        // that writes out the load's pages: left to the server, it ran through the first
        // minutes of measurements.
        let step = Instant::now();
        sqlx::query("VACUUM ANALYZE").execute(&db.write).await?;
        sqlx::query("CHECKPOINT").execute(&db.write).await?;
        eprintln!(
            "vacuumed, analyzed and checkpointed in {:.1}s",
            step.elapsed().as_secs_f64()
        );
    }
    db.close().await;

    let by_state = |state: ConnectionState| -> Vec<String> {
        connections
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, id)| id.clone())
            .collect()
    };
    let all: Vec<String> = connections.iter().map(|(_, id)| id.clone()).collect();
    let active = shuffled(by_state(ConnectionState::Active), &mut rng);
    let inactive = shuffled(by_state(ConnectionState::Inactive), &mut rng);
    let active_slices = slices(&active, &[active.len() / 2, active.len() / 2]);
    write_ids(&args.out, "connections.txt", &sample(&all, 20_000))?;
    write_ids(&args.out, "connections-to-inactive.txt", &active_slices[0])?;
    write_ids(&args.out, "connections-to-failed.txt", &active_slices[1])?;
    write_ids(&args.out, "connections-to-active.txt", &inactive)?;

    let invitations_in = |state: InvitationState| -> Vec<String> {
        invitations
            .iter()
            .filter(|(_, s, _)| *s == state)
            .map(|(id, _, _)| id.clone())
            .collect()
    };
    let sent = shuffled(invitations_in(InvitationState::Sent), &mut rng);
    let quarter = sent.len() / 4;
    let sent_slices = slices(&sent, &[quarter, quarter, quarter]);
    write_ids(&args.out, "invitations-to-revoke.txt", &sent_slices[0])?;
    write_ids(&args.out, "invitations-to-resend.txt", &sent_slices[1])?;
    write_ids(&args.out, "invitations-to-verify.txt", &sent_slices[2])?;
    write_ids(
        &args.out,
        "invitations-to-complete.txt",
        &shuffled(invitations_in(InvitationState::Accepted), &mut rng),
    )?;
    // The get benchmark reads as customer 1: the invitations it owns.
    let owned: Vec<String> = invitations
        .iter()
        .filter(|(_, _, owner)| *owner == Some(1))
        .map(|(id, _, _)| id.clone())
        .collect();
    write_ids(&args.out, "invitations-of-customer-1.txt", &owned)?;
    // bench.sh binds these to the customer list's statements when it runs them in pgbench.
    let held = entitlements_of(1, args.customers).map(|(resource, _)| resource);
    write_ids(&args.out, "resources-of-customer-1.txt", &held)?;
    eprintln!(
        "wrote id lists to {} in {:.1}s overall",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
