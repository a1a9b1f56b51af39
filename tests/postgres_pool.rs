//! The store's own PostgreSQL connections (`store::postgres`): a connection goes back to the
//! pool without a round trip, so these check that what the round trip used to settle is still
//! settled: a dropped transaction is rolled back, and a connection that died or was abandoned
//! mid-statement is not handed out again. Reads by id, which go out gathered in shared
//! statements, survive a lost connection the same way.

mod common;

use common::{Backend, TestApp};
use std::time::{Duration, Instant};
use tandem::config::SqliteSynchronous;
use tandem::store::Db;
use tandem::store::record::{Count, FromRecord, Record};
use tandem::store::sql::{Param, SqlBuilder};

/// A `Db` on the test app's database with at most `connections` store connections.
async fn connect(app: &TestApp, connections: u32) -> Db {
    let url = app
        .config
        .database
        .url
        .as_deref()
        .expect("a PostgreSQL URL");
    Db::connect(url, connections, SqliteSynchronous::Full)
        .await
        .unwrap()
}

/// A `Db` with one store connection on the test app's database, so that every statement
/// below runs on the same connection unless it was replaced.
async fn single_connection(app: &TestApp) -> Db {
    connect(app, 1).await
}

async fn create_probe_table(db: &Db) {
    db.execute(SqlBuilder::new("CREATE TABLE probe (id TEXT PRIMARY KEY)"))
        .await
        .unwrap();
}

/// The probe table holding `ids`, committed.
async fn probes_with(db: &Db, ids: &[&str]) {
    create_probe_table(db).await;
    let mut tx = db.begin().await.unwrap();
    for id in ids {
        insert_probe(&mut tx, id).await;
    }
    tx.commit().await.unwrap();
}

/// The number a `SELECT ... AS n` query answers.
async fn number(db: &Db, sql: &str) -> Result<i64, tandem::store::StoreError> {
    let Count(n) = db
        .fetch_optional(SqlBuilder::new(sql))
        .await?
        .expect("one row");
    Ok(n)
}

async fn backend_pid(db: &Db) -> Result<i64, tandem::store::StoreError> {
    number(db, "SELECT pg_backend_pid()::bigint AS n").await
}

/// Drops `statement` after 100 ms, as a request whose client hung up; it must still be running.
async fn abandon<T>(statement: impl std::future::Future<Output = T>) {
    let abandoned = tokio::time::timeout(Duration::from_millis(100), statement).await;
    assert!(abandoned.is_err(), "the statement outlasts the timeout");
}

async fn insert_probe(tx: &mut tandem::store::Tx, id: &str) {
    tx.execute(SqlBuilder::fixed(
        "INSERT INTO probe (id) VALUES ($1)",
        vec![Param::Text(id.into())],
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_is_rolled_back_before_its_connection_serves_again() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = single_connection(&app).await;
    create_probe_table(&db).await;
    let pid = backend_pid(&db).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    insert_probe(&mut tx, "never committed").await;
    drop(tx);
    let rows = number(&db, "SELECT COUNT(*) AS n FROM probe")
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(backend_pid(&db).await.unwrap(), pid, "the same connection");
    let mut tx = db.begin().await.unwrap();
    insert_probe(&mut tx, "committed").await;
    tx.commit().await.unwrap();
    let rows = number(&db, "SELECT COUNT(*) AS n FROM probe")
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

async fn terminate(app: &TestApp, pid: i64) {
    sqlx::query("SELECT pg_terminate_backend($1::int)")
        .bind(pid)
        .execute(&app.db.write)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_transactions_survive_connections_the_server_ended() {
    // As after a server restart: the idle connection is dead. A read, and a transaction's
    // BEGIN, find that out and run again on a new connection instead of failing.
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = single_connection(&app).await;
    let pid = backend_pid(&db).await.unwrap();
    terminate(&app, pid).await;
    let replacement = backend_pid(&db).await.expect("read on a new connection");
    assert_ne!(replacement, pid);
    terminate(&app, replacement).await;
    let mut tx = db.begin().await.expect("a transaction on a new connection");
    let Count(n) = tx
        .fetch_optional(SqlBuilder::new("SELECT 1::bigint AS n"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    tx.commit().await.unwrap();
    assert_ne!(backend_pid(&db).await.unwrap(), replacement);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_abandoned_mid_statement_is_not_handed_out_again() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = single_connection(&app).await;
    let pid = backend_pid(&db).await.unwrap();
    abandon(db.execute(SqlBuilder::new("SELECT pg_sleep(5)"))).await;
    let started = Instant::now();
    let next = backend_pid(&db).await.unwrap();
    assert_ne!(next, pid);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the next statement did not wait for the abandoned one: {:?}",
        started.elapsed()
    );
}

/// A request dropped midway must not cost its read's connection: the read finishes in its own
/// task and the connection serves the next statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_caller_went_away_finishes_and_keeps_its_connection() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = single_connection(&app).await;
    let pid = backend_pid(&db).await.unwrap();
    abandon(number(
        &db,
        "SELECT pg_backend_pid()::bigint AS n FROM pg_sleep(0.5)",
    ))
    .await;
    assert_eq!(backend_pid(&db).await.unwrap(), pid);
    // A list (page and count side by side) too.
    let sleeping = || SqlBuilder::new("SELECT pg_sleep(0.5)::text AS id");
    abandon(db.list_and_count::<Probe, Probe>(sleeping(), sleeping(), |_| true)).await;
    assert_eq!(backend_pid(&db).await.unwrap(), pid);
}

struct Probe {
    id: String,
}

impl FromRecord for Probe {
    fn from_record(row: &impl Record) -> Result<Self, tandem::store::StoreError> {
        Ok(Probe {
            id: row.column("id")?,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathered_reads_by_id_survive_a_connection_the_server_ended() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = single_connection(&app).await;
    probes_with(&db, &["a", "b"]).await;
    let probes = db.rows_by_id("probe", "SELECT id FROM probe", |p: &Probe| &p.id);
    let found = |row: Option<std::sync::Arc<Probe>>| row.map(|p| p.id.clone());
    assert_eq!(found(probes.get("a").await.unwrap()), Some("a".into()));
    terminate(&app, backend_pid(&db).await.unwrap()).await;
    let (a, b, c) = tokio::join!(probes.get("a"), probes.get("b"), probes.get("c"));
    assert_eq!(found(a.unwrap()), Some("a".into()));
    assert_eq!(found(b.unwrap()), Some("b".into()));
    assert_eq!(found(c.unwrap()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathered_reads_by_id_do_not_wait_long_behind_a_slow_statement() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = connect(&app, 4).await;
    probes_with(&db, &["a", "slow"]).await;
    // Reading "slow" takes two seconds, as on a connection that stopped answering.
    let probes = std::sync::Arc::new(db.rows_by_id(
        "probe",
        "SELECT id, pg_sleep(CASE WHEN id = 'slow' THEN 2 ELSE 0 END) AS pause FROM probe",
        |p: &Probe| &p.id,
    ));
    let slow = tokio::spawn({
        let probes = std::sync::Arc::clone(&probes);
        async move { probes.get("slow").await.unwrap().map(|p| p.id.clone()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let a = probes.get("a").await.unwrap().map(|p| p.id.clone());
    let waited = started.elapsed();
    assert_eq!(a, Some("a".into()));
    assert!(
        waited < Duration::from_millis(1000),
        "a lookup waited {waited:?} behind a slow statement"
    );
    assert!(!slow.is_finished(), "the slow statement answered early");
    assert_eq!(slow.await.unwrap(), Some("slow".into()));
}
