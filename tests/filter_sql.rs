//! The filter language's SQL means the same on SQLite and PostgreSQL.

mod common;

use common::{Backend, TestApp};
use sqlx::Row;
use tandem::domain::filter::{FieldSpec, Op, parse_filter, parse_sort};
use tandem::store::sql::SqlBuilder;

const FIELDS: &[FieldSpec] = &[
    FieldSpec {
        name: "state",
        column: "state",
        ops: &[Op::Eq, Op::Ne, Op::In],
        sortable: true,
    },
    FieldSpec {
        name: "emailAddress",
        column: "email",
        ops: &[Op::Eq, Op::Contains, Op::Search],
        sortable: true,
    },
];

const ROWS: &[(&str, &str, Option<&str>)] = &[
    ("a", "sent", Some("Max.Peck@NASA.example.com")),
    ("b", "accepted", Some("maxine@example.com")),
    ("c", "revoked", Some("fifty%_off@example.org")),
    ("d", "sent", None),
];

async fn ids(app: &TestApp, filter: &str, sort: &str) -> Vec<String> {
    let mut q = SqlBuilder::new("SELECT id FROM filter_probe WHERE ");
    q.push_filter(&parse_filter(filter, FIELDS).unwrap());
    let mut keys = parse_sort(sort, FIELDS).unwrap();
    keys.push(tandem::domain::filter::SortKey {
        column: "id",
        descending: false,
    });
    q.push_order_by(&keys);
    q.build()
        .fetch_all(&app.db.read)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("id"))
        .collect()
}

async fn filters_select_the_same_rows_on_both_backends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    sqlx::raw_sql(
        "CREATE TABLE filter_probe (id TEXT PRIMARY KEY, state TEXT NOT NULL, email TEXT)",
    )
    .execute(&app.db.write)
    .await
    .unwrap();
    for (id, state, email) in ROWS {
        sqlx::query("INSERT INTO filter_probe (id, state, email) VALUES ($1, $2, $3)")
            .bind(*id)
            .bind(*state)
            .bind(*email)
            .execute(&app.db.write)
            .await
            .unwrap();
    }
    let cases: &[(&str, &str, &[&str])] = &[
        ("eq(state,sent)", "state", &["a", "d"]),
        ("ne(state,sent)", "-state", &["c", "b"]),
        ("in(state,accepted|revoked)", "state", &["b", "c"]),
        ("contains(emailAddress,NASA)", "state", &["a"]),
        ("contains(emailAddress,\"%_\")", "state", &["c"]),
        ("contains(emailAddress,\"_\")", "state", &["c"]),
        ("search(emailAddress,peck)", "state", &["a"]),
        ("search(emailAddress,max)", "state", &["b", "a"]),
        ("search(emailAddress,ine)", "state", &[]),
        ("search(emailAddress,off)", "state", &["c"]),
        (
            "or(eq(state,revoked),not(in(state,sent|revoked)))",
            "state",
            &["b", "c"],
        ),
        (
            "and(eq(state,sent),eq(emailAddress,\"maxine@example.com\"))",
            "state",
            &[],
        ),
        ("eq(state,\"sent' OR '1'='1\")", "state", &[]),
    ];
    for (filter, sort, expected) in cases {
        assert_eq!(
            ids(&app, filter, sort).await,
            expected.to_vec(),
            "{filter} sorted by {sort}"
        );
    }
}

on_both_backends!(filters_select_the_same_rows_on_both_backends);
