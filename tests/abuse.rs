//! Hostile clients: fuzzed JSON bodies, oversized bodies, slow clients and malformed headers.
//! None of them may get a 5xx or take the service down; each gets a 4xx in its API's error
//! format (or a success when the input happens to be valid).

mod common;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderValue, Request};
use common::{Backend, TestApp, json};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

const CONNECTIONS: &str = "/bankingAdmin/customerAudienceConnections";
const INVITATIONS: &str = "/invitations/invitations";
const VERIFICATIONS: &str = "/invitations/verifications";
const SECRET: &str = "obsolete obese octopus";

/// Generated inputs per request body and kind (JSON values, mutations, bytes). Bounded so the
/// suite stays fast; `TANDEM_ABUSE_CASES` raises it for a longer local run.
fn cases() -> usize {
    std::env::var("TANDEM_ABUSE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn connection_body() -> Value {
    json!({
        "audience": { "id": "590c0c441f3241de9526", "name": "New Customers Ages 35-49" },
        "provider": { "name": "file", "resourceId": "9TJNmXu5IA2222CL9S51HBUsxDY" }
    })
}

fn invitation_body() -> Value {
    json!({
        "_profile": "https://production.api.apiture.com/schemas/invitations/createInvitation/v2.2.0/profile.json",
        "sharedSecret": SECRET,
        "type": "joint",
        "accountUri": "https://api.bank.example/accounts/account/7443d485",
        "inviterFullName": "Alice Inviter",
        "emailAddress": "max@example.com",
        "firstName": "Max",
        "lastName": "Peck",
        "identification": "3333",
        "attributes": { "applicationAttributes": { "productCode": "DD12M_LA" } }
    })
}

// ---- Generated inputs -----------------------------------------------------------------------

/// Property names of the request bodies, so generated objects often hit real fields.
const KNOWN_KEYS: &[&str] = &[
    "audience",
    "provider",
    "id",
    "name",
    "resourceId",
    "connectedResourceId",
    "_profile",
    "_links",
    "_embedded",
    "sharedSecret",
    "type",
    "accountUri",
    "organizationUri",
    "inviterFullName",
    "emailAddress",
    "firstName",
    "lastName",
    "identification",
    "role",
    "attributes",
    "invitationId",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,24}".prop_map(Value::String),
        (1usize..5000).prop_map(|n| Value::String("x".repeat(n))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((json_key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(KNOWN_KEYS).prop_map(str::to_owned),
        "\\PC{0,12}",
    ]
}

/// Every path to a value inside `value` (object keys and array indexes).
fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (key, child) in children {
        prefix.push(key);
        out.push(prefix.clone());
        paths(child, prefix, out);
        prefix.pop();
    }
}

fn at_path<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| match v {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A valid body with one change: a value replaced, a property removed, or one added.
fn mutated(template: Value) -> impl Strategy<Value = Value> {
    let mut all = Vec::new();
    paths(&template, &mut Vec::new(), &mut all);
    (
        proptest::sample::select(all),
        0..3u8,
        any_json(),
        json_key(),
    )
        .prop_map(move |(path, action, replacement, key)| {
            let mut body = template.clone();
            match action {
                0 => {
                    if let Some(slot) = at_path(&mut body, &path) {
                        *slot = replacement;
                    }
                }
                1 => {
                    let (last, parent) = path.split_last().expect("paths are not empty");
                    if let Some(Value::Object(map)) = at_path(&mut body, parent) {
                        map.remove(last);
                    }
                }
                _ => {
                    if let Some(Value::Object(map)) = at_path(&mut body, &path[..path.len() - 1]) {
                        map.insert(key, replacement);
                    }
                }
            }
            body
        })
}

/// Raw bytes: random ones, and a valid body cut short or with a byte flipped.
fn any_bytes(template: &Value) -> impl Strategy<Value = Vec<u8>> + use<> {
    let text = template.to_string().into_bytes();
    let len = text.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (0..len).prop_map({
            let text = text.clone();
            move |cut| text[..cut].to_vec()
        }),
        (0..len, any::<u8>()).prop_map(move |(at, byte)| {
            let mut bytes = text.clone();
            bytes[at] = byte;
            bytes
        }),
    ]
}

fn generate<S: Strategy>(strategy: S, count: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::default();
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("generating an input")
                .current()
        })
        .collect()
}

// ---- Driving the router in-process ------------------------------------------------------------

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

/// One request through the service's router (no sockets), with the dev credentials.
async fn send_in_process(
    app: &TestApp,
    method: Method,
    path: &str,
    bytes: Vec<u8>,
    authorized: bool,
) -> Answer {
    send_typed_in_process(app, method, path, "application/json", bytes, authorized).await
}

async fn send_typed_in_process(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: &str,
    bytes: Vec<u8>,
    authorized: bool,
) -> Answer {
    let mut req = Request::builder()
        .method(method.as_str())
        .uri(path)
        .header("content-type", content_type);
    if authorized {
        let admin = app.admin();
        req = req
            .header("api-key", admin.api_key)
            .header("authorization", admin.authorization);
    }
    let router = app
        .router
        .clone()
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let res = router
        .oneshot(req.body(Body::from(bytes)).unwrap())
        .await
        .expect("the router never fails");
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("a response body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
    }
}

/// Asserts the status is one of `allowed` and an error is in the path's error format.
fn check_answer(path: &str, input: &dyn std::fmt::Debug, answer: &Answer, allowed: &[u16]) {
    let status = answer.status.as_u16();
    assert!(
        allowed.contains(&status),
        "{path}: status {status} for {input:?}: {}",
        answer.body
    );
    if status >= 400 {
        assert_error_format(path, status, &answer.content_type, &answer.body);
    }
}

fn assert_error_format(path: &str, status: u16, content_type: &str, body: &Value) {
    if path.starts_with("/invitations") {
        assert_eq!(content_type, "application/hal+json", "{path}: {body}");
        assert_eq!(body["_error"]["statusCode"], status, "{path}: {body}");
        assert!(body["_error"]["type"].is_string(), "{path}: {body}");
        assert!(body["_error"]["message"].is_string(), "{path}: {body}");
    } else {
        assert_eq!(content_type, "application/problem+json", "{path}: {body}");
        assert_eq!(body["status"], status, "{path}: {body}");
        assert!(body["type"].is_string(), "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
}

/// Sends generated JSON values, mutations of `template` and raw bytes to one operation.
async fn fuzz_body(
    app: &TestApp,
    method: Method,
    path: &str,
    template: Value,
    authorized: bool,
    allowed: &[u16],
) {
    let n = cases();
    let valid = send_in_process(
        app,
        method.clone(),
        path,
        template.to_string().into_bytes(),
        authorized,
    )
    .await;
    assert!(
        valid.status.is_success(),
        "{path}: the template body is valid: {}",
        valid.body
    );
    let values = generate(any_json(), n)
        .into_iter()
        .chain(generate(mutated(template.clone()), n));
    for value in values {
        let answer = send_in_process(
            app,
            method.clone(),
            path,
            value.to_string().into_bytes(),
            authorized,
        )
        .await;
        check_answer(path, &value, &answer, allowed);
    }
    let mut byte_inputs = generate(any_bytes(&template), n);
    // Nesting far deeper than the JSON parser's recursion limit.
    byte_inputs.push(vec![b'['; 60_000]);
    byte_inputs.push("{\"audience\":".repeat(5000).into_bytes());
    for bytes in byte_inputs {
        let shown = String::from_utf8_lossy(&bytes)
            .chars()
            .take(200)
            .collect::<String>();
        let answer = send_in_process(app, method.clone(), path, bytes, authorized).await;
        check_answer(path, &shown, &answer, allowed);
    }
}

async fn every_json_body_survives_fuzzing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.invitations.verify_max_attempts_per_ip = 1_000_000;
    })
    .await;
    // 201 valid, 400 invalid, 409 a second connection to the same audience, 422 unknown provider.
    fuzz_body(
        &app,
        Method::POST,
        CONNECTIONS,
        connection_body(),
        true,
        &[201, 400, 409, 422],
    )
    .await;
    // Staff may invite to any account; 409 is jointOwnersDisabled and the like.
    fuzz_body(
        &app,
        Method::POST,
        INVITATIONS,
        invitation_body(),
        true,
        &[201, 400, 409],
    )
    .await;

    let created = send_in_process(
        &app,
        Method::POST,
        INVITATIONS,
        invitation_body().to_string().into_bytes(),
        true,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["_id"].as_str().expect("an id").to_owned();
    fuzz_body(
        &app,
        Method::PATCH,
        &format!("{INVITATIONS}/{id}"),
        json!({ "sharedSecret": SECRET }),
        true,
        &[200, 400, 409],
    )
    .await;
    // The fuzzed PATCHes changed the secret: set it back (which also unlocks).
    let reset = send_in_process(
        &app,
        Method::PATCH,
        &format!("{INVITATIONS}/{id}"),
        json!({ "sharedSecret": SECRET }).to_string().into_bytes(),
        true,
    )
    .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    // Wrong secrets lock the invitation (409) and a correct one accepts it, after which further
    // verifications are 409 too.
    fuzz_body(
        &app,
        Method::POST,
        VERIFICATIONS,
        json!({ "invitationId": id, "sharedSecret": SECRET, "firstName": "Max", "lastName": "Peck", "identification": "3333" }),
        false,
        &[200, 400, 409],
    )
    .await;
}

on_both_backends!(
    every_json_body_survives_fuzzing,
    generated_filters_never_answer_5xx
);

/// The invitee's accept page takes a form and answers HTML pages, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_form_survives_fuzzing() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.invitations.verify_max_attempts_per_ip = 1_000_000;
    })
    .await;
    let fields = prop_oneof![
        Just("invitationId".to_owned()),
        Just("sharedSecret".to_owned()),
        "\\PC{0,8}"
    ];
    let forms = generate(
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec((fields, "\\PC{0,40}"), 0..4).prop_map(|pairs| {
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
                    .into_bytes()
            }),
        ],
        cases() * 2,
    );
    for form in forms {
        let answer = send_typed_in_process(
            &app,
            Method::POST,
            "/invitations/accept",
            "application/x-www-form-urlencoded",
            form.clone(),
            false,
        )
        .await;
        let status = answer.status.as_u16();
        assert!(
            [400, 409].contains(&status),
            "status {status} for {:?}",
            String::from_utf8_lossy(&form)
        );
        assert!(
            answer.content_type.starts_with("text/html"),
            "{}",
            answer.content_type
        );
    }
}

/// Query strings reach the filter and sort parsers; generated ones never get a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_and_sort_queries_survive_fuzzing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let texts = generate(
        prop_oneof![
            "\\PC{0,60}",
            "(and|or|not|eq|in|ne|contains|search|state|type|emailAddress|[(),|\" ]){0,30}",
        ],
        cases() * 2,
    );
    // Deeper than the nesting limit, within the length limit.
    let deep = "not(".repeat(100) + "eq(state,sent)" + &")".repeat(100);
    let admin = app.admin();
    for text in texts.iter().chain([&deep]) {
        for param in ["filter", "sortBy"] {
            let url =
                reqwest::Url::parse_with_params(&app.url(INVITATIONS), &[(param, text.as_str())])
                    .unwrap();
            let res = app
                .client
                .get(url)
                .header("api-key", &admin.api_key)
                .header("authorization", &admin.authorization)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            assert!(
                status == 200 || status == 400,
                "{param}={text:?}: status {status}"
            );
            if status == 400 {
                let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
                let body = json(res).await;
                assert_error_format(INVITATIONS, 400, &content_type, &body);
                // Syntax errors point into the text; other 400s are about values (an unknown
                // state, say).
                if body["_error"]["type"] == "invalidQuery" {
                    let position = body["_error"]["attributes"]["position"]
                        .as_u64()
                        .expect("a position");
                    assert!(
                        position >= 1 && position as usize <= text.chars().count() + 1,
                        "{param}={text:?}: position {position}"
                    );
                }
            }
        }
    }
}

/// A few short values for a comparison.
fn short_values() -> impl Strategy<Value = Vec<String>> {
    let short = prop_oneof![
        Just("sent".to_owned()),
        Just("joint".to_owned()),
        "[a-z0-9@.]{1,4}",
        "\\PC{0,6}".prop_map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))),
    ];
    proptest::collection::vec(short, 1..4)
}

/// Many values for a comparison, around and far beyond the cap on `in()`: copies of one (up to
/// as many as the length limit allows) or different ones.
fn many_values() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        prop_oneof![1usize..2040, 1900usize..2040].prop_map(|n| vec!["x".to_owned(); n]),
        (1usize..450).prop_map(|n| (0..n).map(|i| format!("v{i}")).collect()),
    ]
}

/// Filters of the grammar's shape over the list's fields (and one it does not have): nested
/// ones, single comparisons with many values, and flat ones with about as many comparisons as
/// the cap.
fn filter_expression() -> impl Strategy<Value = String> {
    let field = proptest::sample::select(vec![
        "state",
        "type",
        "emailAddress",
        "accountUri",
        "organizationUri",
        "createdBy",
        "customerId",
        "colour",
    ]);
    let op = proptest::sample::select(vec!["eq", "ne", "in", "contains", "search"]);
    let comparison = move |values: BoxedStrategy<Vec<String>>| {
        (op.clone(), field.clone(), values)
            .prop_map(|(op, field, values)| format!("{op}({field},{})", values.join("|")))
    };
    let nested = comparison(short_values().boxed()).prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..6)
                .prop_map(|parts| format!("and({})", parts.join(","))),
            proptest::collection::vec(inner.clone(), 1..6)
                .prop_map(|parts| format!("or({})", parts.join(","))),
            inner.prop_map(|part| format!("not({part})")),
        ]
    });
    // in() on a stored column binds its values; on the state it is a set of state names.
    let single = (
        prop_oneof![4 => Just("type"), 1 => Just("state")],
        many_values(),
        any::<bool>(),
    )
        .prop_map(|(field, values, negated)| {
            let part = format!("in({field},{})", values.join("|"));
            if negated {
                format!("not({part})")
            } else {
                part
            }
        });
    let flat = (
        prop_oneof![Just("and"), Just("or")],
        proptest::collection::vec(comparison(short_values().boxed()), 90..110),
    )
        .prop_map(|(joiner, parts)| format!("{joiner}({})", parts.join(",")));
    prop_oneof![2 => nested, 2 => single, 1 => flat]
}

/// `|`-separated alternatives of a subset parameter: valid values, as many as the filter's.
fn subset_parameter() -> impl Strategy<Value = (&'static str, String)> {
    let value = |parameter: &'static str, i: usize| match parameter {
        "emailAddress" => format!("v{i}@example.com"),
        "accountUri" | "organizationUri" => {
            format!("https://api.bank.example/accounts/account/v{i}")
        }
        "state" => ["sent", "accepted", "expired"][i % 3].to_owned(),
        _ => ["joint", "authorizedSigner"][i % 2].to_owned(),
    };
    (
        proptest::sample::select(vec![
            "emailAddress",
            "accountUri",
            "organizationUri",
            "state",
            "type",
        ]),
        prop_oneof![1usize..5, 1usize..300],
        any::<bool>(),
    )
        .prop_map(move |(parameter, n, repeated)| {
            let values: Vec<String> = (0..n)
                .map(|i| value(parameter, if repeated { 0 } else { i }))
                .collect();
            (parameter, values.join("|"))
        })
}

/// A customer holding 16 accounts has the most index walks in one list statement (33), each
/// with the request's conditions. No filter and no subset parameters make it answer 5xx: values
/// beyond the caps or the statement's budget are a 400.
async fn generated_filters_never_answer_5xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    const CUSTOMER: &str = "customer-many-accounts";
    let held: Vec<tandem::store::entitlements::Entitlement> = (0..16)
        .map(|n| tandem::store::entitlements::Entitlement {
            customer_id: CUSTOMER.into(),
            resource_uri: format!("https://api.bank.example/accounts/account/many-{n:02}"),
            role: "owner".into(),
            joint_owners_disabled: false,
        })
        .collect();
    tandem::store::entitlements::TableEntitlements::new(app.db.clone())
        .replace_all(&held)
        .await
        .unwrap();
    let customer = app.customer(CUSTOMER);
    let requests = generate(
        (
            filter_expression(),
            proptest::option::of(subset_parameter()),
        ),
        cases(),
    );
    let (mut answered, mut refused) = (0, 0);
    for (filter, subset) in &requests {
        let mut pairs = vec![("filter", filter.as_str())];
        if let Some((parameter, value)) = subset {
            pairs.push((parameter, value.as_str()));
        }
        let url = reqwest::Url::parse_with_params(&app.url(INVITATIONS), &pairs).unwrap();
        let res = app
            .client
            .get(url)
            .header("api-key", &customer.api_key)
            .header("authorization", &customer.authorization)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let body = json(res).await;
        assert!(
            status == 200 || status == 400,
            "{pairs:?}: status {status}: {body}"
        );
        if status == 200 {
            answered += 1;
        } else {
            refused += 1;
            assert_error_format(INVITATIONS, 400, &content_type, &body);
            assert!(
                body["_error"]["attributes"]["field"].is_string(),
                "{pairs:?}: {body}"
            );
        }
    }
    assert!(
        answered > 0 && refused > 0,
        "{answered} answered, {refused} refused: the generator misses either side"
    );
}

// ---- Raw connections --------------------------------------------------------------------------

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Sends `request` as is and reads until the server closes the connection (at most `limit`).
async fn raw_exchange(app: &TestApp, request: &[u8], limit: Duration) -> (String, Duration) {
    let mut stream = TcpStream::connect(address(app)).await.unwrap();
    let started = Instant::now();
    // The server may answer and close before it has read everything (e.g. a 413).
    let _ = stream.write_all(request).await;
    let text = read_until_closed(&mut stream, limit).await;
    (text, started.elapsed())
}

async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server kept the connection open for {limit:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

fn response_body(response: &str) -> Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

fn response_header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split_once("\r\n\r\n").map(|(h, _)| h)?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

// ---- Oversized bodies ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_in_each_apis_format() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let limit = app.config.http.body_limit_bytes;
    let oversized = format!("{{\"x\":\"{}\"}}", "a".repeat(limit));
    for path in [CONNECTIONS, INVITATIONS, VERIFICATIONS] {
        // Declared by Content-Length: refused before the body is read.
        let res = app
            .as_admin(Method::POST, path)
            .header("content-type", "application/json")
            .body(oversized.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let body = json(res).await;
        assert_error_format(path, 413, &content_type, &body);

        // Chunked, with no Content-Length: refused once the body grows past the limit.
        let headers = app.admin();
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nAPI-Key: {}\r\nAuthorization: {}\r\n\r\n",
            headers.api_key, headers.authorization
        )
        .into_bytes();
        let chunk = "a".repeat(4096);
        for _ in 0..(limit / chunk.len() + 2) {
            request.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let (response, _) = raw_exchange(&app, &request, Duration::from_secs(10)).await;
        assert!(
            status_line(&response).starts_with("HTTP/1.1 413"),
            "{path}: {response}"
        );
        let content_type = response_header(&response, "content-type").unwrap_or("");
        assert_error_format(path, 413, content_type, &response_body(&response));
    }
}

// ---- Slow clients ----------------------------------------------------------------------------

async fn spawn_impatient() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |config| {
        config.http.header_read_timeout_secs = 1;
        config.http.body_read_timeout_secs = 1;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_head_is_disconnected_while_others_are_served() {
    let app = spawn_impatient().await;
    let mut stalled = Vec::new();
    for partial in [
        &b""[..],
        b"GET /hea",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
    ] {
        for _ in 0..10 {
            let mut stream = TcpStream::connect(address(&app)).await.unwrap();
            stream.write_all(partial).await.unwrap();
            stalled.push(stream);
        }
    }
    let started = Instant::now();
    // The service answers others while those connections hang.
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for mut stream in stalled {
        // Closed without an answer within the timeout (plus scheduling slack).
        let received = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(received, "", "no answer to a request that never arrived");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_trickling_body_gets_408() {
    let app = spawn_impatient().await;
    let headers = app.admin();
    for path in [VERIFICATIONS, CONNECTIONS] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nAPI-Key: {}\r\nAuthorization: {}\r\n\r\n{{\"invitation",
            headers.api_key, headers.authorization
        );
        let (response, elapsed) =
            raw_exchange(&app, head.as_bytes(), Duration::from_secs(10)).await;
        assert!(
            status_line(&response).starts_with("HTTP/1.1 408"),
            "{path}: {response}"
        );
        let content_type = response_header(&response, "content-type").unwrap_or("");
        let body = response_body(&response);
        assert_error_format(path, 408, content_type, &body);
        assert!(
            elapsed < Duration::from_secs(8),
            "{path}: after {elapsed:?}"
        );
    }

    // A byte every 200 ms keeps the connection busy but never finishes in time: the deadline
    // counts from the head, not from the last byte.
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(
            format!("POST {VERIFICATIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut response = String::new();
    for _ in 0..40 {
        if stream.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                response.push_str(&String::from_utf8_lossy(&buf[..n]));
                break;
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    assert!(
        status_line(&response).starts_with("HTTP/1.1 408"),
        "trickle: {response:?} after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_stalled_clients() {
    let data_dir = std::env::temp_dir().join(format!("tandem-test-{}", uuid::Uuid::new_v4()));
    let mut config = tandem::config::Config {
        mode: tandem::config::Mode::Dev,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.clone(),
        ..Default::default()
    };
    config.sync.enabled = false;
    config.http.header_read_timeout_secs = 2;
    config.http.body_read_timeout_secs = 2;
    let app = tandem::app::Application::build(config).await.unwrap();
    let address = app.address;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let mut stalled_head = TcpStream::connect(address).await.unwrap();
    stalled_head.write_all(b"GET /health HT").await.unwrap();
    let mut stalled_body = TcpStream::connect(address).await.unwrap();
    stalled_body
        .write_all(
            format!("POST {VERIFICATIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{{")
                .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops within the timeouts")
        .unwrap()
        .expect("a clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // The request in flight was still answered before the server went away.
    let answered = read_until_closed(&mut stalled_body, Duration::from_secs(1)).await;
    assert!(
        status_line(&answered).starts_with("HTTP/1.1 408"),
        "{answered:?}"
    );
    assert!(
        TcpStream::connect(address).await.is_err(),
        "no longer listening"
    );
    let _ = std::fs::remove_dir_all(data_dir);
}

// ---- Malformed headers -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_headers_get_400_in_each_apis_format() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let created = app
        .as_admin(Method::POST, INVITATIONS)
        .json(&invitation_body())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let invitation = json(created).await["_id"].as_str().unwrap().to_owned();
    let invitation_path = format!("{INVITATIONS}/{invitation}");
    let not_text = HeaderValue::from_bytes(b"\xff\xfe garbage \x80").unwrap();

    // (path, method, header, value, expected status, expected error type)
    let admin_type = |name: &str| format!("/errors/{name}/v1.0.0");
    let cases: Vec<(String, Method, &str, HeaderValue, u16, String)> = vec![
        (
            CONNECTIONS.into(),
            Method::GET,
            "authorization",
            not_text.clone(),
            400,
            admin_type("badRequest"),
        ),
        (
            CONNECTIONS.into(),
            Method::GET,
            "api-key",
            not_text.clone(),
            400,
            admin_type("badRequest"),
        ),
        (
            invitation_path.clone(),
            Method::GET,
            "authorization",
            not_text.clone(),
            400,
            "badRequest".into(),
        ),
        (
            invitation_path.clone(),
            Method::GET,
            "api-key",
            not_text.clone(),
            400,
            "badRequest".into(),
        ),
        // Text, but not a valid token: the credential is wrong, not malformed.
        (
            CONNECTIONS.into(),
            Method::GET,
            "authorization",
            HeaderValue::from_static("Bearer !!!"),
            401,
            admin_type("unauthorized"),
        ),
        (
            invitation_path.clone(),
            Method::GET,
            "authorization",
            HeaderValue::from_static("Basic Zm9vOmJhcg=="),
            401,
            "unauthorized".into(),
        ),
        (
            invitation_path.clone(),
            Method::GET,
            "if-none-match",
            not_text.clone(),
            400,
            "badRequest".into(),
        ),
        (
            invitation_path.clone(),
            Method::GET,
            "if-none-match",
            HeaderValue::from_static("r1, \"unterminated"),
            400,
            "invalidValue".into(),
        ),
        (
            invitation_path.clone(),
            Method::DELETE,
            "if-match",
            not_text.clone(),
            400,
            "badRequest".into(),
        ),
        (
            invitation_path.clone(),
            Method::DELETE,
            "if-match",
            HeaderValue::from_static("no quotes"),
            400,
            "invalidValue".into(),
        ),
        (
            format!("/invitations/revoked?invitation={invitation}"),
            Method::POST,
            "if-match",
            HeaderValue::from_static("W/"),
            400,
            "invalidValue".into(),
        ),
    ];
    let admin = app.admin();
    for (path, method, name, value, status, error_type) in cases {
        // The valid credentials, except the header under test.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("api-key", admin.api_key.parse().unwrap());
        headers.insert("authorization", admin.authorization.parse().unwrap());
        headers.insert(name, value.clone());
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .headers(headers)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status().as_u16(),
            status,
            "{method} {path} {name}: {value:?}"
        );
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let body = json(res).await;
        assert_error_format(&path, status, &content_type, &body);
        let actual_type = if path.starts_with("/invitations") {
            &body["_error"]["type"]
        } else {
            &body["type"]
        };
        assert_eq!(actual_type, &json!(error_type), "{path} {name}: {body}");
    }

    // Content-Type that is not JSON, or not text at all: 415 in the API's format.
    for content_type in [
        not_text.clone(),
        HeaderValue::from_static("text/plain"),
        HeaderValue::from_static(";;;"),
    ] {
        for path in [CONNECTIONS, INVITATIONS] {
            let res = app
                .as_admin(Method::POST, path)
                .header("content-type", content_type.clone())
                .body(connection_body().to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type:?}"
            );
            let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
            assert_error_format(path, 415, &ct, &json(res).await);
        }
    }

    // Accept-Language that cannot be understood is ignored: the default language.
    for value in [not_text.clone(), HeaderValue::from_static(";q=,,*;q=abc,-")] {
        let res = app
            .as_admin(Method::GET, "/invitations/labels")
            .header("accept-language", value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-language"], "en");
    }

    // An X-Request-Id that is not text is not echoed into the problem id.
    let res = app
        .client
        .get(app.url(CONNECTIONS))
        .header("x-request-id", not_text.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body = json(res).await;
    assert!(body["id"].as_str().unwrap().is_ascii(), "{body}");
}

/// What hyper refuses before the router sees the request: a bare 400 (431 for an oversized
/// head), and the connection is closed. No API error body is possible there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_requests_are_refused_by_the_http_layer() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let post = |extra: &str| {
        format!(
            "POST {VERIFICATIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}\r\n{{}}"
        )
    };
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "Content-Length not a number".into(),
            post("Content-Length: abc\r\n").into_bytes(),
            "400",
        ),
        (
            "two Content-Lengths".into(),
            post("Content-Length: 2\r\nContent-Length: 3\r\n").into_bytes(),
            "400",
        ),
        (
            "negative Content-Length".into(),
            post("Content-Length: -2\r\n").into_bytes(),
            "400",
        ),
        (
            "Content-Length overflowing".into(),
            post("Content-Length: 99999999999999999999999\r\n").into_bytes(),
            "400",
        ),
        (
            "control character in a value".into(),
            b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "space in a header name".into(),
            b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "not HTTP".into(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "bad request line".into(),
            b"GET  /health  HTTP/1.1 extra\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "unknown transfer coding".into(),
            post("Transfer-Encoding: gzip\r\n").into_bytes(),
            "400",
        ),
        (
            "too many headers".into(),
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            "431",
        ),
    ];
    for (what, request, status) in cases {
        let (response, _) = raw_exchange(&app, &request, Duration::from_secs(10)).await;
        assert!(
            status_line(&response).starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {response:?}"
        );
    }
    // The service is unharmed.
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
