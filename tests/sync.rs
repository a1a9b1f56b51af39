//! Audience synchronization: the engine against a fake Pendo, a fake webhook receiver, a fake
//! customer-audience service and the file provider, on SQLite and PostgreSQL.

mod common;
mod sync_fakes;

use common::{Backend, TestApp, assert_problem, json, several_instances};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};
use sync_fakes::{Fake, PENDO_KEY, SOURCE_TOKEN, Scripted, WEBHOOK_SECRET};
use tandem::config::{AudienceSourceConfig, Config, ProviderConfig, ProviderSchedule};
use tandem::domain::connection::AudienceRef;

const BASE: &str = "/bankingAdmin/customerAudienceConnections";
const AUDIENCE: &str = "590c0c441f3241de9526";

/// Small timings so that retries and intervals elapse within a test.
fn fast(config: &mut Config) {
    config.sync.enabled = true;
    config.sync.poll_interval_secs = 0.05;
    config.sync.backoff_base_secs = 0.05;
    config.sync.backoff_cap_secs = 0.2;
    config.sync.max_consecutive_failures = 5;
}

/// Provider and source calls that should succeed get a timeout no busy CI machine reaches; a test of
/// the timeout sets its own and scripts a call that hangs far beyond it.
const CALL_TIMEOUT_SECS: f64 = 5.0;

fn schedule(interval_secs: f64) -> ProviderSchedule {
    ProviderSchedule {
        interval_secs: Some(interval_secs),
        timeout_secs: Some(CALL_TIMEOUT_SECS),
    }
}

fn with_pendo(config: &mut Config, fake: &Fake, key: &str, interval_secs: f64) {
    fast(config);
    config.providers.insert(
        "pendo".into(),
        ProviderConfig::Pendo {
            base_url: format!("{}/", fake.url),
            integration_key: key.into(),
            schedule: schedule(interval_secs),
        },
    );
}

fn members(prefix: &str, range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("{prefix}{i:05}")).collect()
}

async fn import(app: &TestApp, audience: &str, members: &BTreeSet<String>) {
    tandem::store::audiences::import(
        &app.db,
        &AudienceRef::parse(audience, Some("New Customers")).unwrap(),
        members,
    )
    .await
    .unwrap();
}

async fn create(app: &TestApp, provider: &Value) -> String {
    let res = app
        .as_admin(Method::POST, BASE)
        .json(&json!({"audience": {"id": AUDIENCE, "name": "New Customers"}, "provider": provider}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    json(res).await["id"].as_str().unwrap().to_owned()
}

async fn connection(app: &TestApp, id: &str) -> Value {
    app.get_json(&app.admin(), &format!("{BASE}/{id}")).await
}

async fn runs(app: &TestApp, id: &str) -> Value {
    let res = app
        .as_admin(Method::GET, &format!("{BASE}/{id}/syncRuns"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    json(res).await
}

/// Polls `check` until it yields a value, failing after `secs`.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn in_state(app: &TestApp, id: &str, state: &str) -> Value {
    eventually(&format!("state {state}"), 20, || async {
        let c = connection(app, id).await;
        (c["state"] == state).then_some(c)
    })
    .await
}

async fn with_runs(app: &TestApp, id: &str, count: usize) -> Value {
    eventually(&format!("{count} runs"), 20, || async {
        let r = runs(app, id).await;
        (r["items"].as_array().unwrap().len() >= count).then_some(r)
    })
    .await
}

fn triggers(runs: &Value) -> Vec<String> {
    runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trigger"].as_str().unwrap().to_owned())
        .collect()
}

// ---- Pendo -------------------------------------------------------------------------------

async fn pendo_segment_is_created_then_kept_in_sync_in_batches_of_1000(backend: Backend) {
    let fake = sync_fakes::pendo().await;
    let app = TestApp::spawn_with(backend, |c| with_pendo(c, &fake, PENDO_KEY, 1.0)).await;
    let first = members("cust-", 0..2500);
    import(&app, AUDIENCE, &first).await;
    let id = create(&app, &json!({"name": "pendo"})).await;

    let c = in_state(&app, &id, "active").await;
    let segment = c["provider"]["connectedResourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(c["provider"]["resourceId"], segment.as_str());
    assert!(c["lastSyncedAt"].is_string());
    assert_eq!(fake.set(&segment), first);
    let calls = fake.calls();
    assert_eq!(calls[0].path, "/api/v1/segment/upload");
    assert_eq!(calls[0].body["name"], "New Customers");
    assert_eq!(calls[0].body["visitors"].as_array().unwrap().len(), 1000);
    let patches: Vec<usize> = calls[1..]
        .iter()
        .map(|c| c.body["patch"][0]["value"].as_array().unwrap().len())
        .collect();
    assert_eq!(patches, vec![1000, 500]);
    let r = runs(&app, &id).await;
    assert_eq!(r["items"][0]["trigger"], "created");
    assert_eq!(r["items"][0]["added"], 2500);
    assert_eq!(r["items"][0]["removed"], 0);
    assert_eq!(r["items"][0]["failed"], 0);
    assert!(r["items"][0].get("error").is_none());
    assert_eq!(r["consecutiveFailures"], 0);
    assert_eq!(r["lastSuccessfulSyncAt"], c["lastSyncedAt"]);
    assert!(r["nextSyncAt"].is_string());

    // Members leave and join: the next scheduled run sends only the difference.
    let second: BTreeSet<String> = members("cust-", 1200..2500)
        .into_iter()
        .chain(members("new-", 0..3))
        .collect();
    // Runs before the import have nothing to send, so every call from here on is the change.
    let before = fake.calls().len();
    import(&app, AUDIENCE, &second).await;
    let r = eventually("a scheduled run with the changes", 20, || async {
        let r = runs(&app, &id).await;
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|run| run["removed"] == 1200)
            .then_some(r)
    })
    .await;
    assert_eq!(fake.set(&segment), second);
    let changes: Vec<(String, usize)> = fake.calls()[before..]
        .iter()
        .map(|c| {
            let op = &c.body["patch"][0];
            (
                op["op"].as_str().unwrap().to_owned(),
                op["value"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("add".into(), 3),
            ("remove".into(), 1000),
            ("remove".into(), 200)
        ]
    );
    let run = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["removed"] == 1200)
        .unwrap();
    assert_eq!(run["trigger"], "scheduled");
    assert_eq!(run["added"], 3);
    let after = connection(&app, &id).await;
    assert!(after["lastSyncedAt"].as_str() > c["lastSyncedAt"].as_str());
    fake.assert_no_problems();
}

async fn pendo_links_an_existing_segment(backend: Backend) {
    let fake = sync_fakes::pendo().await;
    fake.insert_set("seg-existing", &["someone-else"]);
    let app = TestApp::spawn_with(backend, |c| with_pendo(c, &fake, PENDO_KEY, 3600.0)).await;
    import(&app, AUDIENCE, &members("c-", 0..3)).await;
    let id = create(
        &app,
        &json!({"name": "pendo", "resourceId": "seg-existing"}),
    )
    .await;
    let c = in_state(&app, &id, "active").await;
    assert_eq!(c["provider"]["connectedResourceId"], "seg-existing");
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.path != "/api/v1/segment/upload")
    );
    let expected: BTreeSet<String> = members("c-", 0..3)
        .into_iter()
        .chain(["someone-else".to_owned()])
        .collect();
    assert_eq!(fake.set("seg-existing"), expected);
    fake.assert_no_problems();
}

async fn pendo_429_is_retried_no_sooner_than_retry_after(backend: Backend) {
    let fake = sync_fakes::pendo().await;
    fake.script([Scripted::Status(429, Some(1))]);
    let app = TestApp::spawn_with(backend, |c| with_pendo(c, &fake, PENDO_KEY, 3600.0)).await;
    import(&app, AUDIENCE, &members("c-", 0..5)).await;
    let id = create(&app, &json!({"name": "pendo"})).await;
    in_state(&app, &id, "active").await;
    let calls = fake.calls();
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    let r = runs(&app, &id).await;
    assert_eq!(triggers(&r), vec!["retry", "created"]);
    assert!(
        r["items"][1]["error"].as_str().unwrap().contains("429"),
        "{r}"
    );
    assert_eq!(r["items"][1]["failed"], 5);
    assert_eq!(r["items"][0]["added"], 5);
    assert_eq!(r["consecutiveFailures"], 0);
    fake.assert_no_problems();
}

async fn pendo_500s_and_timeouts_back_off_then_recover(backend: Backend) {
    const TIMEOUT_SECS: f64 = 2.5;
    let fake = sync_fakes::pendo().await;
    let app = TestApp::spawn_with(backend, |c| {
        with_pendo(c, &fake, PENDO_KEY, 3600.0);
        // Short enough to keep the test quick, long enough for the calls that must succeed
        // (batches of 1000 visitors) on a loaded machine.
        if let Some(ProviderConfig::Pendo { schedule, .. }) = c.providers.get_mut("pendo") {
            schedule.timeout_secs = Some(TIMEOUT_SECS);
        }
    })
    .await;
    import(&app, AUDIENCE, &members("c-", 0..1500)).await;
    let id = create(&app, &json!({"name": "pendo"})).await;
    in_state(&app, &id, "active").await;
    let segment = connection(&app, &id).await["provider"]["connectedResourceId"]
        .as_str()
        .unwrap()
        .to_owned();

    // A 500, then a call that hangs far beyond the timeout, then success.
    import(&app, AUDIENCE, &members("c-", 0..2700)).await;
    fake.script([
        Scripted::Status(500, None),
        Scripted::Delay(Duration::from_secs(60)),
    ]);
    let res = app
        .as_admin(Method::POST, &format!("{BASE}/{id}/inactive"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.as_admin(Method::POST, &format!("{BASE}/{id}/active"))
        .send()
        .await
        .unwrap();
    let r = with_runs(&app, &id, 4).await;
    assert_eq!(triggers(&r), vec!["retry", "retry", "activated", "created"]);
    assert!(
        r["items"][2]["error"].as_str().unwrap().contains("500"),
        "{r}"
    );
    assert!(
        r["items"][1]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{r}"
    );
    assert_eq!(r["items"][0]["added"], 1200);
    assert_eq!(r["consecutiveFailures"], 0);
    assert_eq!(fake.set(&segment), members("c-", 0..2700));
    assert_eq!(connection(&app, &id).await["state"], "active");
    fake.assert_no_problems();
}

async fn pendo_401_fails_the_connection_at_once_and_activation_retries(backend: Backend) {
    let fake = sync_fakes::pendo().await;
    let app = TestApp::spawn_with(backend, |c| with_pendo(c, &fake, "wrong-key", 3600.0)).await;
    import(&app, AUDIENCE, &members("c-", 0..5)).await;
    let id = create(&app, &json!({"name": "pendo"})).await;
    let c = in_state(&app, &id, "failed").await;
    assert!(c.get("lastSyncedAt").is_none());
    assert_eq!(
        c["updatedBy"]["username"], "MetricMagician",
        "the engine is no admin"
    );
    let r = runs(&app, &id).await;
    assert_eq!(triggers(&r), vec!["created"]);
    assert!(r["failureReason"].as_str().unwrap().contains("401"), "{r}");
    assert!(r.get("nextSyncAt").is_none());
    assert_eq!(fake.calls().len(), 1, "a permanent error is not retried");
    assert!(fake.calls()[0].headers["x-pendo-integration-key"] == "wrong-key");

    let res = app
        .as_admin(Method::POST, &format!("{BASE}/{id}/active"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["state"], "active");
    let r = with_runs(&app, &id, 2).await;
    assert_eq!(triggers(&r), vec!["activated", "created"]);
    in_state(&app, &id, "failed").await;
}

async fn too_many_retryable_failures_fail_the_connection(backend: Backend) {
    let fake = sync_fakes::pendo().await;
    fake.script((0..3).map(|_| Scripted::Status(503, None)));
    let app = TestApp::spawn_with(backend, |c| {
        with_pendo(c, &fake, PENDO_KEY, 3600.0);
        c.sync.max_consecutive_failures = 3;
    })
    .await;
    import(&app, AUDIENCE, &members("c-", 0..2)).await;
    let id = create(&app, &json!({"name": "pendo"})).await;
    in_state(&app, &id, "failed").await;
    let r = runs(&app, &id).await;
    assert_eq!(triggers(&r), vec!["retry", "retry", "created"]);
    assert_eq!(r["consecutiveFailures"], 3);
    let reason = r["failureReason"].as_str().unwrap();
    assert!(
        reason.contains("503") && reason.contains("3 consecutive failures"),
        "{reason}"
    );
    fake.assert_no_problems();
}

async fn inactive_connections_are_not_synced_and_deleted_ones_leave_nothing(backend: Backend) {
    let fake = sync_fakes::pendo().await;
    let app = TestApp::spawn_with(backend, |c| with_pendo(c, &fake, PENDO_KEY, 0.3)).await;
    import(&app, AUDIENCE, &members("c-", 0..5)).await;
    let id = create(&app, &json!({"name": "pendo"})).await;
    in_state(&app, &id, "active").await;
    app.as_admin(Method::POST, &format!("{BASE}/{id}/inactive"))
        .send()
        .await
        .unwrap();
    // A run claimed before the deactivation may still finish; wait until it has (its lease
    // is released), however long a busy machine takes. No new run can be claimed after.
    eventually("the run in flight to finish", 20, || async {
        let owner: Option<String> = sqlx::Row::get(
            &sqlx::query("SELECT lease_owner FROM audience_connections WHERE id = $1")
                .bind(&id)
                .fetch_one(&app.db.read)
                .await
                .unwrap(),
            "lease_owner",
        );
        owner.is_none().then_some(())
    })
    .await;
    let (calls, count) = (
        fake.calls().len(),
        runs(&app, &id).await["items"].as_array().unwrap().len(),
    );
    import(&app, AUDIENCE, &members("c-", 0..9)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fake.calls().len(),
        calls,
        "no provider calls while inactive"
    );
    let r = runs(&app, &id).await;
    assert_eq!(r["items"].as_array().unwrap().len(), count);
    assert!(r.get("nextSyncAt").is_none());

    let res = app
        .as_admin(Method::DELETE, &format!("{BASE}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .as_admin(Method::GET, &format!("{BASE}/{id}/syncRuns"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "notFound").await;
    for table in ["audience_sync_runs", "audience_synced_members"] {
        let left: i64 = sqlx::Row::get(
            &sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE connection_id = $1"
            )))
            .bind(&id)
            .fetch_one(&app.db.read)
            .await
            .unwrap(),
            "n",
        );
        assert_eq!(left, 0, "{table}");
    }
}

async fn deleting_a_connection_stops_its_run_in_flight(backend: Backend) {
    let fake = sync_fakes::pendo().await;
    // Five calls of half a second each: upload and four batches of 1000.
    fake.script((0..5).map(|_| Scripted::Slow(Duration::from_millis(500))));
    let app = TestApp::spawn_with(backend, |c| {
        with_pendo(c, &fake, PENDO_KEY, 3600.0);
        c.sync.lease_secs = 0.6;
    })
    .await;
    import(&app, AUDIENCE, &members("c-", 0..5000)).await;
    let id = create(&app, &json!({"name": "pendo"})).await;
    eventually("the first Pendo call", 20, || async {
        (!fake.calls().is_empty()).then_some(())
    })
    .await;
    let res = app
        .as_admin(Method::DELETE, &format!("{BASE}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        fake.calls().len() <= 2,
        "the run stopped: {} calls",
        fake.calls().len()
    );
    let left: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM audience_sync_runs")
            .fetch_one(&app.db.read)
            .await
            .unwrap(),
        "n",
    );
    assert_eq!(left, 0, "nothing recorded for a deleted connection");
    let res = app
        .as_admin(Method::GET, &format!("{BASE}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "not resurrected");
}

// ---- Webhook -----------------------------------------------------------------------------

async fn webhook_receives_signed_membership_changes(backend: Backend) {
    let fake = sync_fakes::webhook().await;
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.providers.insert(
            "hooks".into(),
            ProviderConfig::Webhook {
                url: format!("{}/hooks/audiences", fake.url),
                secret: WEBHOOK_SECRET.into(),
                schedule: schedule(0.5),
            },
        );
    })
    .await;
    import(&app, AUDIENCE, &members("c-", 0..4)).await;
    fake.script([Scripted::Status(502, None)]);
    let id = create(&app, &json!({"name": "hooks"})).await;
    let c = in_state(&app, &id, "active").await;
    assert_eq!(c["provider"]["connectedResourceId"], id.as_str());
    assert_eq!(fake.set(&id), members("c-", 0..4));

    import(&app, AUDIENCE, &members("c-", 2..6)).await;
    eventually("the changes delivered", 20, || async {
        (fake.set(&id) == members("c-", 2..6)).then_some(())
    })
    .await;
    let calls = fake.calls();
    let last = calls.last().unwrap();
    assert_eq!(last.body["added"], json!(["c-00004", "c-00005"]));
    assert_eq!(last.body["removed"], json!(["c-00000", "c-00001"]));
    assert_eq!(last.body["audienceId"], AUDIENCE);
    // The failed delivery and its retry are different runs with different keys.
    assert_ne!(
        calls[0].headers["idempotency-key"],
        calls[1].headers["idempotency-key"]
    );
    // The receiver applies the changes before tandem records the run: wait for the record.
    let key = last.headers["idempotency-key"].to_str().unwrap().to_owned();
    let run = eventually("the delivered run recorded", 20, || async {
        let r = runs(&app, &id).await;
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|run| run["id"] == key.as_str())
            .cloned()
    })
    .await;
    assert_eq!(
        (run["added"].clone(), run["removed"].clone()),
        (json!(2), json!(2))
    );
    fake.assert_no_problems();
}

// ---- File provider and the local source --------------------------------------------------

async fn dev_mode_file_provider_goes_pending_to_active_and_writes_the_snapshot(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    // The CLI fills the local source, against the same database.
    let csv = app.config.data_dir.join("members.csv");
    std::fs::write(&csv, "# id\ncust-1\ncust-2\n\ncust-3\ncust-2\n").unwrap();
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
    cli.args([
        "audiences",
        "import",
        "--id",
        AUDIENCE,
        "--name",
        "New Customers",
        "--data-dir",
    ])
    .arg(&app.config.data_dir)
    .arg(&csv);
    if let Some(url) = &app.config.database.url {
        cli.env("TANDEM_DATABASE_URL", url);
    }
    let out = cli.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 members"));

    let id = create(&app, &json!({"name": "file"})).await;
    let c = in_state(&app, &id, "active").await;
    assert_eq!(c["provider"]["connectedResourceId"], format!("{id}.json"));
    let file = app
        .config
        .data_dir
        .join("audiences/file")
        .join(format!("{id}.json"));
    let snapshot: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(snapshot["members"], json!(["cust-1", "cust-2", "cust-3"]));
    assert_eq!(snapshot["audienceId"], AUDIENCE);
    assert_eq!(snapshot["connectionId"], id.as_str());
    let r = runs(&app, &id).await;
    assert_eq!(r["items"][0]["added"], 3);

    // A malformed list is refused with its line, and changes nothing.
    std::fs::write(&csv, "cust-1\ncust-2,Smith\n").unwrap();
    let out = cli.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}

async fn an_unknown_audience_fails_with_a_reason_and_activation_recovers(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let id = create(&app, &json!({"name": "file"})).await;
    in_state(&app, &id, "failed").await;
    let r = runs(&app, &id).await;
    assert!(
        r["failureReason"]
            .as_str()
            .unwrap()
            .contains("tandem audiences import"),
        "{r}"
    );
    import(&app, AUDIENCE, &members("c-", 0..2)).await;
    app.as_admin(Method::POST, &format!("{BASE}/{id}/active"))
        .send()
        .await
        .unwrap();
    let r = with_runs(&app, &id, 2).await;
    assert_eq!(triggers(&r), vec!["activated", "created"]);
    let c = in_state(&app, &id, "active").await;
    assert!(c["lastSyncedAt"].is_string());
}

async fn the_http_audience_source_pages_with_its_auth_header(backend: Backend) {
    let all: Vec<String> = members("h-", 0..25).into_iter().collect();
    let (url, seen) =
        sync_fakes::audience_service(HashMap::from([(AUDIENCE.to_owned(), all.clone())])).await;
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.audience_source = AudienceSourceConfig::Http {
            base_url: url.clone(),
            auth_header: Some("Authorization".into()),
            auth_value: Some(SOURCE_TOKEN.into()),
            page_size: Some(10),
            timeout_secs: Some(CALL_TIMEOUT_SECS),
        };
    })
    .await;
    let id = create(&app, &json!({"name": "file"})).await;
    in_state(&app, &id, "active").await;
    let file = app
        .config
        .data_dir
        .join("audiences/file")
        .join(format!("{id}.json"));
    let snapshot: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(snapshot["members"], json!(all));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            format!("{AUDIENCE}?limit=10&start="),
            format!("{AUDIENCE}?limit=10&start=10"),
            format!("{AUDIENCE}?limit=10&start=20"),
        ]
    );

    // An audience the service does not know fails the connection with that reason.
    let res = app
        .as_admin(Method::POST, BASE)
        .json(&json!({"audience": {"id": "unknown-audience"}, "provider": {"name": "file"}}))
        .send()
        .await
        .unwrap();
    let other = json(res).await["id"].as_str().unwrap().to_owned();
    in_state(&app, &other, "failed").await;
    let reason = runs(&app, &other).await["failureReason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("unknown to the customer-audience service"),
        "{reason}"
    );
}

// ---- The history operation ---------------------------------------------------------------

async fn sync_runs_follow_the_admin_rules_and_page_newest_first(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.sync.keep_runs = 5;
        c.providers.insert(
            "file".into(),
            ProviderConfig::File {
                directory: None,
                schedule: schedule(0.2),
            },
        );
    })
    .await;
    import(&app, AUDIENCE, &members("c-", 0..2)).await;
    let id = create(&app, &json!({"name": "file"})).await;
    let all = with_runs(&app, &id, 4).await;
    // The history is trimmed to the newest `keep_runs`.
    let kept = eventually("a trimmed history", 20, || async {
        let r = runs(&app, &id).await;
        let n = r["items"].as_array().unwrap().len();
        (n == 5 && r["items"][4]["trigger"] == "scheduled").then_some(n)
    })
    .await;
    assert_eq!(kept, 5);
    let started: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["startedAt"].as_str().unwrap())
        .collect();
    assert!(
        started.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {started:?}"
    );

    let path = format!("{BASE}/{id}/syncRuns?limit=2");
    let res = app.as_admin(Method::GET, &path).send().await.unwrap();
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    let page = json(res).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    assert!(link.ends_with("rel=\"next\""), "{link}");
    let page2 = app.get_json(&app.admin(), &next).await;
    assert!(page2["items"][0]["startedAt"].as_str() <= page["items"][1]["startedAt"].as_str());
    assert_ne!(page2["items"][0]["id"], page["items"][1]["id"]);

    for (query, status) in [
        ("?limit=0", 400),
        ("?colour=blue", 400),
        ("?start=nope", 400),
    ] {
        let res = app
            .as_admin(Method::GET, &format!("{BASE}/{id}/syncRuns{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{query}");
    }
    let res = app
        .as_admin(Method::GET, &format!("{BASE}/no-such-connection/syncRuns"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "notFound").await;
    let res = app
        .as_admin(Method::GET, &format!("{BASE}/bad id/syncRuns"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalidValue").await;
    let res = app
        .with(
            &app.customer("customer-0001"),
            Method::GET,
            &format!("{BASE}/{id}/syncRuns"),
        )
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "forbidden").await;
    let doc = app.get_json(&app.admin(), "/bankingAdmin/apiDoc").await;
    let op = &doc["paths"]["/bankingAdmin/customerAudienceConnections/{customerAudienceConnectionId}/syncRuns"]
        ["get"];
    assert_eq!(op["operationId"], "listCustomerAudienceConnectionSyncRuns");
    assert!(op["responses"]["404"].is_object());
}

/// A run is recorded together with the connection's failure count; a reader must never see
/// the one without the other (it did when the two were read separately).
async fn sync_runs_and_their_status_are_read_from_one_snapshot(backend: Backend) {
    const ROUNDS: i64 = 60;
    let app = TestApp::spawn(backend).await;
    import(&app, AUDIENCE, &members("c-", 0..2)).await;
    let id = create(&app, &json!({"name": "file"})).await;
    let db = app.db.clone();
    let connection_id = id.clone();
    let writer = tokio::spawn(async move {
        for n in 1..=ROUNDS {
            // What the engine's `finish` does for a failed run, in one transaction.
            let mut tx = db.write.begin().await.unwrap();
            sqlx::query(
                "INSERT INTO audience_sync_runs (id, connection_id, run_trigger, started_at, \
                 finished_at, added, removed, failed, error, instance) \
                 VALUES ($1, $2, 'retry', $3, $3, 0, 0, 0, 'scripted failure', 'test')",
            )
            .bind(format!("run-{n:04}"))
            .bind(&connection_id)
            .bind(now_millis() + n)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query("UPDATE audience_connections SET consecutive_failures = $1 WHERE id = $2")
                .bind(n)
                .bind(&connection_id)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let res = app
            .as_admin(Method::GET, &format!("{BASE}/{id}/syncRuns?limit=1000"))
            .send()
            .await
            .unwrap();
        let r = json(res).await;
        let count = r["items"].as_array().unwrap().len();
        assert_eq!(r["consecutiveFailures"], count, "read {reads}");
        reads += 1;
        if done {
            assert_eq!(count as i64, ROUNDS);
            break;
        }
    }
    writer.await.unwrap();
}

on_both_backends!(
    sync_runs_and_their_status_are_read_from_one_snapshot,
    pendo_segment_is_created_then_kept_in_sync_in_batches_of_1000,
    pendo_links_an_existing_segment,
    pendo_429_is_retried_no_sooner_than_retry_after,
    pendo_500s_and_timeouts_back_off_then_recover,
    pendo_401_fails_the_connection_at_once_and_activation_retries,
    too_many_retryable_failures_fail_the_connection,
    inactive_connections_are_not_synced_and_deleted_ones_leave_nothing,
    deleting_a_connection_stops_its_run_in_flight,
    webhook_receives_signed_membership_changes,
    dev_mode_file_provider_goes_pending_to_active_and_writes_the_snapshot,
    an_unknown_audience_fails_with_a_reason_and_activation_recovers,
    the_http_audience_source_pages_with_its_auth_header,
    sync_runs_follow_the_admin_rules_and_page_newest_first,
    a_crashed_instances_lease_is_taken_over_when_it_expires,
);

// ---- Several instances -------------------------------------------------------------------

/// Starts another instance of the service on the test's database.
async fn another_instance(config: &Config) {
    let app = tandem::app::Application::build(config.clone())
        .await
        .unwrap();
    tokio::spawn(app.run_until(std::future::pending()));
}

fn now_millis() -> i64 {
    tandem::domain::time::Timestamp::now().millis()
}

async fn a_crashed_instances_lease_is_taken_over_when_it_expires(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        several_instances(c);
        c.sync.enabled = false;
    })
    .await;
    import(&app, AUDIENCE, &members("c-", 0..2)).await;
    let id = create(&app, &json!({"name": "file"})).await;
    // An instance claimed it and died: its lease runs for another 1.5 s.
    let expiry = now_millis() + 1500;
    sqlx::query("UPDATE audience_connections SET lease_owner = 'crashed', lease_expires_at = $1 WHERE id = $2")
        .bind(expiry)
        .bind(&id)
        .execute(&app.db.write)
        .await
        .unwrap();
    let mut config = app.config.clone();
    config.sync.enabled = true;
    another_instance(&config).await;
    in_state(&app, &id, "active").await;
    let r = runs(&app, &id).await;
    assert_eq!(triggers(&r), vec!["created"]);
    let started = r["items"][0]["startedAt"].as_str().unwrap().to_owned();
    let expiry_text = tandem::domain::time::Timestamp::from_millis(expiry).to_rfc3339();
    assert!(
        started >= expiry_text,
        "ran at {started}, before the lease expired at {expiry_text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_keeps_its_lease_against_other_instances_on_postgres() {
    let fake = sync_fakes::pendo().await;
    // The first call outlives the lease more than twice; the lease is renewed meanwhile.
    fake.script([Scripted::Delay(Duration::from_millis(3000))]);
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        with_pendo(c, &fake, PENDO_KEY, 3600.0);
        c.sync.lease_secs = 1.2;
        c.providers.insert(
            "pendo".into(),
            ProviderConfig::Pendo {
                base_url: fake.url.clone(),
                integration_key: PENDO_KEY.into(),
                schedule: ProviderSchedule {
                    interval_secs: Some(3600.0),
                    timeout_secs: Some(5.0),
                },
            },
        );
    })
    .await;
    another_instance(&app.config).await;
    another_instance(&app.config).await;
    import(&app, AUDIENCE, &members("c-", 0..2)).await;
    let id = create(&app, &json!({"name": "pendo"})).await;
    in_state(&app, &id, "active").await;
    let calls = fake.calls();
    assert!(
        calls[1].at - calls[0].at >= Duration::from_millis(2950),
        "nobody else called while the first run was alive"
    );
    assert_eq!(triggers(&runs(&app, &id).await), vec!["retry", "created"]);
    fake.assert_no_problems();
}

/// Runs per connection, from the database.
async fn run_counts(app: &TestApp) -> HashMap<String, i64> {
    let rows = sqlx::query(
        "SELECT connection_id, COUNT(*) AS n FROM audience_sync_runs GROUP BY connection_id",
    )
    .fetch_all(&app.db.read)
    .await
    .unwrap();
    rows.iter()
        .map(|r| (sqlx::Row::get(r, "connection_id"), sqlx::Row::get(r, "n")))
        .collect()
}

async fn until_every_connection_has(
    app: &TestApp,
    ids: &[String],
    runs: i64,
) -> HashMap<String, i64> {
    eventually(&format!("{runs} runs per connection"), 60, || async {
        let counts = run_counts(app).await;
        ids.iter()
            .all(|id| counts.get(id).copied().unwrap_or(0) >= runs)
            .then_some(counts)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_on_one_postgres_sync_each_due_connection_exactly_once_per_interval() {
    // Long enough that a busy machine finishes a round of 200 runs well inside one interval.
    const INTERVAL_MS: i64 = 8000;
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        fast(c);
        // Creating 200 connections can take longer than an interval under load: the engines
        // start only once all exist, so no scheduled run can precede the check below.
        c.sync.enabled = false;
        c.sync.concurrency = 16;
        c.providers.insert(
            "file".into(),
            ProviderConfig::File {
                directory: None,
                schedule: schedule(INTERVAL_MS as f64 / 1000.0),
            },
        );
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..200 {
        let audience = format!("audience-{i:04}");
        import(&app, &audience, &members(&format!("a{i}-"), 0..3)).await;
        let res = app
            .as_admin(Method::POST, BASE)
            .json(&json!({"audience": {"id": audience}, "provider": {"name": "file"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        ids.push(json(res).await["id"].as_str().unwrap().to_owned());
    }
    let mut config = app.config.clone();
    config.sync.enabled = true;
    for _ in 0..3 {
        another_instance(&config).await;
    }
    let counts = until_every_connection_has(&app, &ids, 1).await;
    assert!(
        ids.iter().all(|id| counts[id] == 1),
        "each new connection connected once"
    );

    // Make all 200 due at the same instant, for all three instances at once.
    let due = now_millis() + 500;
    sqlx::query("UPDATE audience_connections SET next_sync_at = $1")
        .bind(due)
        .execute(&app.db.write)
        .await
        .unwrap();
    until_every_connection_has(&app, &ids, 2).await;
    // Well inside the next interval: nobody ran anything twice.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let counts = run_counts(&app).await;
    assert!(
        ids.iter().all(|id| counts[id] == 2),
        "exactly one run each: {counts:?}"
    );

    // One interval later, exactly one more each.
    until_every_connection_has(&app, &ids, 3).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let counts = run_counts(&app).await;
    assert!(
        ids.iter().all(|id| counts[id] == 3),
        "exactly one more run each: {counts:?}"
    );
    let rows = sqlx::query(
        "SELECT connection_id, started_at, finished_at FROM audience_sync_runs WHERE run_trigger = 'scheduled' ORDER BY connection_id, started_at",
    )
    .fetch_all(&app.db.read)
    .await
    .unwrap();
    let mut previous: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        let id: String = sqlx::Row::get(row, "connection_id");
        let started: i64 = sqlx::Row::get(row, "started_at");
        let finished: i64 = sqlx::Row::get(row, "finished_at");
        assert!(started >= due, "not before it was due");
        if let Some(prev_finished) = previous.insert(id, finished) {
            assert!(started - prev_finished >= INTERVAL_MS, "an interval apart");
        }
    }
    assert_eq!(rows.len(), 400);
    let instances: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(DISTINCT instance) AS n FROM audience_sync_runs")
            .fetch_one(&app.db.read)
            .await
            .unwrap(),
        "n",
    );
    assert_eq!(instances, 3, "all three instances took their share");
}
