//! Entitlements from a bank's HTTP service (a fake one here), and the CSV import command.

mod common;

use axum::extract::Query;
use axum::routing::get;
use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;

const ACCOUNT: &str = "https://api.bank.example/accounts/account/1";
const CLOSED: &str = "https://api.bank.example/accounts/account/2";

/// Answers like the documented service: items by `customerId` or by `resourceUri`.
async fn fake_entitlements(Query(q): Query<HashMap<String, String>>) -> axum::Json<Value> {
    let all = [
        ("customer-alice", ACCOUNT, false),
        ("customer-alice", CLOSED, true),
        ("customer-bob", ACCOUNT, false),
    ];
    let items: Vec<Value> = all
        .iter()
        .filter(|(c, r, _)| {
            q.get("customerId").is_some_and(|v| v == c) || q.get("resourceUri").is_some_and(|v| v == r)
        })
        .map(|(c, r, d)| json!({"customerId": c, "resourceUri": r, "role": "owner", "jointOwnersDisabled": d}))
        .collect();
    axum::Json(json!({ "items": items }))
}

fn invitation(account: &str) -> Value {
    json!({"sharedSecret": "obsolete obese octopus", "type": "joint", "accountUri": account,
           "inviterFullName": "Alice", "emailAddress": "max@example.com"})
}

async fn the_http_source_decides_who_may_invite_and_see(backend: Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/entitlements", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route("/entitlements", get(fake_entitlements)),
        )
        .await
        .unwrap()
    });
    let app = TestApp::spawn_with(backend, |c| c.invitations.entitlements_url = Some(url)).await;
    let post = |who: &str, account: &str| {
        app.with(&app.customer(who), Method::POST, "/invitations/invitations")
            .json(&invitation(account))
            .send()
    };
    assert_eq!(post("customer-alice", ACCOUNT).await.unwrap().status(), 201);
    assert_eq!(post("customer-alice", CLOSED).await.unwrap().status(), 409);
    assert_eq!(post("customer-carol", ACCOUNT).await.unwrap().status(), 403);
    let bobs = app
        .get_json(&app.customer("customer-bob"), "/invitations/invitations")
        .await;
    assert_eq!(bobs["count"], 1, "the joint owner sees it");
    let carols = app
        .get_json(&app.customer("customer-carol"), "/invitations/invitations")
        .await;
    assert_eq!(carols["count"], 0);
}

async fn an_unreachable_source_fails_closed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.invitations.entitlements_url = Some("http://127.0.0.1:9/entitlements".into())
    })
    .await;
    let res = app
        .with(
            &app.customer("customer-alice"),
            Method::POST,
            "/invitations/invitations",
        )
        .json(&invitation(ACCOUNT))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "30");
    let listed = app
        .with(
            &app.customer("customer-alice"),
            Method::GET,
            "/invitations/invitations",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.status(),
        503,
        "never a list that ignores entitlements"
    );
}

on_both_backends!(
    the_http_source_decides_who_may_invite_and_see,
    an_unreachable_source_fails_closed
);

#[test]
fn the_import_command_replaces_the_table_from_csv() {
    let dir = std::env::temp_dir().join(format!("tandem-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("entitlements.csv");
    std::fs::write(
        &file,
        format!("customerId,resourceUri,role,jointOwnersDisabled\ncustomer-alice,{ACCOUNT},owner,false\ncustomer-alice,\"{CLOSED}\",owner,true\n"),
    )
    .unwrap();
    let run = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["entitlements", "import", "--data-dir"])
            .arg(&dir)
            .arg(path)
            .env_remove("TANDEM_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 2 entitlements"));
    std::fs::write(&file, "customerId,resourceUri,role\ncustomer-alice\n").unwrap();
    let out = run(&file);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
