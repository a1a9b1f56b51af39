//! Fake provider and audience-source servers for the sync tests: small axum servers on
//! 127.0.0.1:0 that check every request's shape, key header and signature, record what they
//! saw, and answer scripted failures.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PENDO_KEY: &str = "pendo-test-integration-key";
pub const WEBHOOK_SECRET: &str = "webhook-test-secret";
pub const SOURCE_TOKEN: &str = "Bearer source-test-token";

/// A failure a fake answers instead of doing its work.
#[derive(Debug, Clone)]
pub enum Scripted {
    Status(u16, Option<u64>),
    /// Answer only after this long (longer than the provider timeout: a timeout).
    Delay(Duration),
    /// Do the work, but slowly.
    Slow(Duration),
}

#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub body: Value,
    pub headers: HeaderMap,
}

#[derive(Default)]
pub struct FakeState {
    /// Pendo: segments by id. Webhook: the receiver's copy per connection id.
    pub sets: BTreeMap<String, BTreeSet<String>>,
    pub calls: Vec<Call>,
    /// Shape violations: every test asserts there are none.
    pub problems: Vec<String>,
    pub script: VecDeque<Scripted>,
    next_id: u32,
}

#[derive(Clone)]
pub struct Fake {
    pub url: String,
    pub state: Arc<Mutex<FakeState>>,
}

impl Fake {
    pub fn script(&self, steps: impl IntoIterator<Item = Scripted>) {
        self.state.lock().unwrap().script.extend(steps);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn set(&self, id: &str) -> BTreeSet<String> {
        self.state
            .lock()
            .unwrap()
            .sets
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn insert_set(&self, id: &str, members: &[&str]) {
        self.state.lock().unwrap().sets.insert(
            id.to_owned(),
            members.iter().map(|m| m.to_string()).collect(),
        );
    }

    pub fn assert_no_problems(&self) {
        let problems = self.state.lock().unwrap().problems.clone();
        assert!(
            problems.is_empty(),
            "requests broke the contract: {problems:#?}"
        );
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn start(handler: fn(Arc<Mutex<FakeState>>, Call) -> Response) -> Fake {
    let state = Arc::new(Mutex::new(FakeState::default()));
    let shared = state.clone();
    let router = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move {
                let value = if body.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&body)
                        .unwrap_or_else(|_| json!({ "unparsable": String::from_utf8_lossy(&body) }))
                };
                let call = Call {
                    at: Instant::now(),
                    method: method.to_string(),
                    path: uri.path().to_owned(),
                    body: value,
                    headers,
                };
                // The raw body matters to the webhook signature: keep it beside the JSON.
                let mut call = call;
                call.headers.insert(
                    "x-test-raw-body",
                    axum::http::HeaderValue::from_bytes(hex_encode(&body).as_bytes()).unwrap(),
                );
                let scripted = {
                    let mut s = state.lock().unwrap();
                    s.calls.push(call.clone());
                    s.script.pop_front()
                };
                match scripted {
                    Some(Scripted::Status(code, retry_after)) => {
                        let mut res = (
                            StatusCode::from_u16(code).unwrap(),
                            format!("scripted {code}"),
                        )
                            .into_response();
                        if let Some(secs) = retry_after {
                            res.headers_mut()
                                .insert("retry-after", secs.to_string().parse().unwrap());
                        }
                        return res;
                    }
                    Some(Scripted::Delay(d)) => {
                        tokio::time::sleep(d).await;
                        return StatusCode::GATEWAY_TIMEOUT.into_response();
                    }
                    Some(Scripted::Slow(d)) => tokio::time::sleep(d).await,
                    None => {}
                }
                handler(state, call)
            }
        },
    );
    Fake {
        url: serve(router).await,
        state,
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn raw_body(call: &Call) -> Vec<u8> {
    let hex = call.headers["x-test-raw-body"].to_str().unwrap();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn problem(state: &mut FakeState, what: String) -> Response {
    state.problems.push(what.clone());
    (StatusCode::BAD_REQUEST, what).into_response()
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn is_json(call: &Call) -> bool {
    call.headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

// ---- Pendo -----------------------------------------------------------------------------

/// Pendo's segment API as tandem uses it.
pub async fn pendo() -> Fake {
    start(pendo_handler).await
}

fn pendo_handler(state: Arc<Mutex<FakeState>>, call: Call) -> Response {
    let mut s = state.lock().unwrap();
    let key = call
        .headers
        .get("x-pendo-integration-key")
        .and_then(|v| v.to_str().ok());
    if key != Some(PENDO_KEY) {
        return (StatusCode::UNAUTHORIZED, "invalid integration key").into_response();
    }
    if !is_json(&call) {
        return problem(
            &mut s,
            format!("{} {} without JSON", call.method, call.path),
        );
    }
    if call.method == "POST" && call.path == "/api/v1/segment/upload" {
        let body = call.body.as_object();
        let name = body.and_then(|b| b.get("name")).and_then(Value::as_str);
        let visitors = body.and_then(|b| b.get("visitors")).and_then(string_list);
        let (Some(name), Some(visitors)) = (name, visitors) else {
            return problem(&mut s, format!("upload body {}", call.body));
        };
        if body.unwrap().len() != 2 || name.is_empty() || visitors.len() > 1000 {
            return problem(&mut s, format!("upload of {} visitors", visitors.len()));
        }
        s.next_id += 1;
        let id = format!("seg-{}", s.next_id);
        s.sets.insert(id.clone(), visitors.into_iter().collect());
        return (StatusCode::OK, axum::Json(json!({ "id": id }))).into_response();
    }
    let segment = call
        .path
        .strip_prefix("/api/v1/segment/")
        .and_then(|rest| rest.strip_suffix("/visitor"));
    if let (Some(segment), "PATCH") = (segment, call.method.as_str()) {
        let Some(ops) = call.body.get("patch").and_then(Value::as_array).cloned() else {
            return problem(&mut s, format!("patch body {}", call.body));
        };
        if !s.sets.contains_key(segment) {
            return (StatusCode::NOT_FOUND, "no such segment").into_response();
        }
        let mut total = 0;
        for op in &ops {
            let kind = op.get("op").and_then(Value::as_str);
            let values = op.get("value").and_then(string_list);
            let (Some(kind @ ("add" | "remove")), Some(values), Some("/visitors")) =
                (kind, values, op.get("path").and_then(Value::as_str))
            else {
                return problem(&mut s, format!("patch op {op}"));
            };
            total += values.len();
            let set = s.sets.get_mut(segment).unwrap();
            for v in values {
                if kind == "add" {
                    set.insert(v);
                } else {
                    set.remove(&v);
                }
            }
        }
        if total > 1000 || total == 0 {
            return problem(&mut s, format!("patch of {total} visitors"));
        }
        return (StatusCode::OK, axum::Json(json!({}))).into_response();
    }
    problem(&mut s, format!("unexpected {} {}", call.method, call.path))
}

// ---- Webhook receiver --------------------------------------------------------------------

/// A receiver that verifies the signature as README describes.
pub async fn webhook() -> Fake {
    start(webhook_handler).await
}

fn webhook_handler(state: Arc<Mutex<FakeState>>, call: Call) -> Response {
    let mut s = state.lock().unwrap();
    if call.method != "POST" || call.path != "/hooks/audiences" || !is_json(&call) {
        return problem(&mut s, format!("unexpected {} {}", call.method, call.path));
    }
    let header = |name: &str| {
        call.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(timestamp), Some(signature), Some(key)) = (
        header("x-tandem-timestamp"),
        header("x-tandem-signature"),
        header("idempotency-key"),
    ) else {
        return problem(&mut s, "missing signature headers".into());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if timestamp
        .parse::<i64>()
        .map_or(true, |t| (now - t).abs() > 300)
    {
        return problem(&mut s, format!("stale timestamp {timestamp}"));
    }
    let expected = tandem::sync::providers::webhook_signature(
        WEBHOOK_SECRET.as_bytes(),
        &timestamp,
        &raw_body(&call),
    );
    let given = signature.strip_prefix("v1=").unwrap_or("");
    let wanted = expected.strip_prefix("v1=").unwrap();
    use subtle::ConstantTimeEq;
    if !bool::from(given.as_bytes().ct_eq(wanted.as_bytes())) {
        return problem(&mut s, "bad signature".into());
    }
    let body = &call.body;
    let fields = ["connectionId", "audienceId", "runId", "added", "removed"];
    if fields.iter().any(|f| body.get(f).is_none()) || body["runId"] != key.as_str() {
        return problem(&mut s, format!("webhook body {body}"));
    }
    let (Some(added), Some(removed)) = (string_list(&body["added"]), string_list(&body["removed"]))
    else {
        return problem(&mut s, format!("webhook lists {body}"));
    };
    let set = s
        .sets
        .entry(body["connectionId"].as_str().unwrap().to_owned())
        .or_default();
    for a in added {
        set.insert(a);
    }
    for r in removed {
        set.remove(&r);
    }
    StatusCode::NO_CONTENT.into_response()
}

// ---- A bank's customer-audience service ---------------------------------------------------

/// Serves `GET /audiences/{id}/members?limit=&start=` from a fixed table, `start` being an
/// offset, and requires the configured authorization header.
pub async fn audience_service(
    audiences: HashMap<String, Vec<String>>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let audiences = Arc::new(audiences);
    let router = Router::new()
        .route(
            "/audiences/{id}/members",
            axum::routing::get(
                move |axum::extract::Path(id): axum::extract::Path<String>,
                      Query(q): Query<HashMap<String, String>>,
                      headers: HeaderMap,
                      State(()): State<()>| {
                    let audiences = audiences.clone();
                    let log = log.clone();
                    async move {
                        log.lock().unwrap().push(format!(
                            "{id}?limit={}&start={}",
                            q.get("limit").cloned().unwrap_or_default(),
                            q.get("start").cloned().unwrap_or_default()
                        ));
                        if headers.get("authorization").and_then(|v| v.to_str().ok())
                            != Some(SOURCE_TOKEN)
                        {
                            return StatusCode::UNAUTHORIZED.into_response();
                        }
                        let Some(members) = audiences.get(&id) else {
                            return StatusCode::NOT_FOUND.into_response();
                        };
                        let limit: usize =
                            q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
                        let start: usize = q.get("start").and_then(|l| l.parse().ok()).unwrap_or(0);
                        let end = (start + limit).min(members.len());
                        let mut page = json!({ "items": members[start..end] });
                        if end < members.len() {
                            page["next"] = json!(end.to_string());
                        }
                        axum::Json(page).into_response()
                    }
                },
            ),
        )
        .with_state(());
    (serve(router).await, seen)
}
