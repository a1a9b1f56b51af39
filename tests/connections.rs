//! The Customer Audience Connections API over HTTP, on SQLite and PostgreSQL.

mod common;

use common::{Backend, TestApp, assert_problem, json};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const BASE: &str = "/bankingAdmin/customerAudienceConnections";

fn new_connection(audience: &str, provider: &str) -> Value {
    json!({
        "audience": { "id": audience, "name": "New Customers Ages 35-49" },
        "provider": { "name": provider }
    })
}

async fn create(app: &TestApp, audience: &str) -> (Value, String) {
    let res = app
        .as_admin(Method::POST, BASE)
        .json(&new_connection(audience, "file"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    (json(res).await, etag)
}

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

async fn create_answers_201_with_location_etag_and_pending_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .as_admin(Method::POST, BASE)
        .json(&json!({
            "audience": { "id": "590c0c441f3241de9526", "name": "New Customers Ages 35-49" },
            "provider": { "name": "file", "resourceId": "9TJNmXu5IA2222CL9S51HBUsxDY" }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    let body = json(res).await;
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("{BASE}/{id}"));
    assert_eq!(body["state"], "pending");
    assert_eq!(
        body["audience"],
        json!({ "id": "590c0c441f3241de9526", "name": "New Customers Ages 35-49" })
    );
    assert_eq!(body["provider"]["name"], "file");
    assert_eq!(
        body["provider"]["connectedResourceId"],
        "9TJNmXu5IA2222CL9S51HBUsxDY"
    );
    assert_eq!(
        body["provider"]["resourceId"],
        "9TJNmXu5IA2222CL9S51HBUsxDY"
    );
    let andy = json!({ "id": "22707c1196c6f1c6938e", "username": "MetricMagician", "firstName": "Andy", "lastName": "Analytics" });
    assert_eq!(body["createdBy"], andy);
    assert_eq!(body["updatedBy"], andy);
    assert!(is_timestamp(&body["createdAt"]), "{}", body["createdAt"]);
    assert_eq!(body["createdAt"], body["updatedAt"]);
    assert!(body.get("lastSyncedAt").is_none(), "never synced yet");

    // What was acknowledged is what is stored.
    let res = app.as_admin(Method::GET, &location).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(json(res).await, body);
}

/// The wire shapes, pinned: any change to a representation shows up as a snapshot diff.
/// `createdBy`/`updatedBy` keep to the seed's `userAccountReference`: a username of 5 to 20
/// characters and names of at most 56, whatever the staff member's token carries.
async fn usernames_outside_the_seeds_lengths_are_fitted_in_responses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (username, shown, audience) in [
        ("ab", "ab___", "short-username-audience"),
        (
            "a-very-long-staff-username-28",
            "a-very-long-staff-u…",
            "long-username-audience",
        ),
    ] {
        let staff = app.headers(&tandem::auth::dev::TokenRequest {
            username: username.into(),
            last_name: "L".repeat(60),
            ..common::admin_token()
        });
        let res = app
            .with(&staff, Method::POST, BASE)
            .json(&new_connection(audience, "file"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let created = json(res).await;
        let path = format!("{BASE}/{}", created["id"].as_str().unwrap());
        let read = app.get_json(&staff, &path).await;
        for body in [&created, &read] {
            for who in ["createdBy", "updatedBy"] {
                assert_eq!(body[who]["username"], shown, "{who}: {body}");
                let last_name = body[who]["lastName"].as_str().unwrap();
                assert_eq!(last_name.chars().count(), 56, "{who}: {body}");
                assert!(last_name.ends_with('…'));
            }
        }
    }
}

async fn representations_match_their_snapshots(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (created, _) = create(&app, "590c0c441f3241de9526").await;
    let redactions = |v: &Value| {
        let mut v = v.clone();
        for field in ["id", "createdAt", "updatedAt"] {
            if v.get(field).is_some() {
                v[field] = json!(format!("[{field}]"));
            }
        }
        if let Some(instance) = v.get("instance").and_then(Value::as_str) {
            v["instance"] = json!(instance.split('#').next().unwrap().to_owned() + "#[id]");
        }
        if v.get("occurredAt").is_some() {
            v["occurredAt"] = json!("[occurredAt]");
        }
        v
    };
    insta::assert_json_snapshot!("connection", redactions(&created));
    let res = app
        .as_admin(Method::POST, BASE)
        .json(&new_connection("590c0c441f3241de9526", "file"))
        .send()
        .await
        .unwrap();
    insta::assert_json_snapshot!("conflict_problem", redactions(&json(res).await));
}

async fn create_rejects_malformed_bodies_with_400_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "{\"audience\":".into(), ""),
        ("unknown property", json!({"audience": {"id": "audience-1"}, "provider": {"name": "file"}, "colour": 1}).to_string(), "colour"),
        ("unknown nested property", json!({"audience": {"id": "audience-1", "size": 3}, "provider": {"name": "file"}}).to_string(), "size"),
        ("bad audience id", json!({"audience": {"id": "no spaces"}, "provider": {"name": "file"}}).to_string(), "audience.id"),
        ("short audience id", json!({"audience": {"id": "abc"}, "provider": {"name": "file"}}).to_string(), "audience.id"),
        ("long audience name", json!({"audience": {"id": "audience-1", "name": "n".repeat(101)}, "provider": {"name": "file"}}).to_string(), "audience.name"),
        ("missing provider name", json!({"audience": {"id": "audience-1"}, "provider": {}}).to_string(), "name"),
        ("long provider name", json!({"audience": {"id": "audience-1"}, "provider": {"name": "p".repeat(81)}}).to_string(), "provider.name"),
        ("missing audience", json!({"provider": {"name": "file"}}).to_string(), "audience"),
        ("wrong type", json!({"audience": {"id": 42}, "provider": {"name": "file"}}).to_string(), "audience.id"),
        ("empty resource id", json!({"audience": {"id": "audience-1"}, "provider": {"name": "file", "resourceId": ""}}).to_string(), "provider.resourceId"),
    ];
    for (case, body, field) in cases {
        let res = app
            .as_admin(Method::POST, BASE)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{case}");
        let problem = json(res).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{case}: {problem}"
        );
    }
    let list = app.get_json(&app.admin(), BASE).await;
    assert_eq!(list["items"], json!([]), "nothing stored");
}

async fn create_rejects_other_media_types_and_oversized_bodies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .as_admin(Method::POST, BASE)
        .header("content-type", "text/plain")
        .body(new_connection("audience-1", "file").to_string())
        .send()
        .await
        .unwrap();
    assert_problem(res, 415, "unsupportedMediaType").await;
    let huge = json!({"audience": {"id": "audience-1", "name": "x".repeat(100_000)}, "provider": {"name": "file"}});
    let res = app
        .as_admin(Method::POST, BASE)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_problem(res, 413, "payloadTooLarge").await;
}

async fn create_with_an_unconfigured_provider_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .as_admin(Method::POST, BASE)
        .json(&new_connection("audience-1", "pendo"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(res, 422, "unknownProvider").await;
    assert_eq!(problem["attributes"]["field"], "provider.name");
}

async fn activating_a_connection_whose_provider_is_no_longer_configured_is_422(backend: Backend) {
    use tandem::store::connections::{ConnectionRepository, SqlConnections};
    let app = TestApp::spawn(backend).await;
    let (created, _) = create(&app, "audience-1").await;
    // A connection made while a provider named "retired" was configured.
    let store = SqlConnections::new(app.db.clone());
    let mut retired = store
        .get(
            &tandem::domain::ids::ResourceId::parse("id", created["id"].as_str().unwrap()).unwrap(),
        )
        .await
        .unwrap()
        .unwrap()
        .as_ref()
        .clone();
    retired.id = tandem::domain::ids::ResourceId::generate();
    retired.provider = tandem::domain::connection::ProviderName::parse("name", "retired").unwrap();
    store.insert(&retired).await.unwrap();
    let res = app
        .as_admin(Method::POST, &format!("{BASE}/{}/active", retired.id))
        .send()
        .await
        .unwrap();
    assert_problem(res, 422, "unknownProvider").await;
    // Deactivating it is still possible.
    let res = app
        .as_admin(Method::POST, &format!("{BASE}/{}/inactive", retired.id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn a_second_connection_for_the_same_audience_and_provider_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    create(&app, "audience-1").await;
    let res = app
        .as_admin(Method::POST, BASE)
        .json(&new_connection("audience-1", "file"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 409, "connectionExists").await;
    // Another audience is fine.
    create(&app, "audience-2").await;
}

async fn credentials_are_required_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin();
    let url = app.url(BASE);
    let cases = [
        ("nothing", app.client.get(&url)),
        (
            "no API key",
            app.client
                .get(&url)
                .header("Authorization", &admin.authorization),
        ),
        (
            "wrong API key",
            app.client
                .get(&url)
                .header("API-Key", "nope")
                .header("Authorization", &admin.authorization),
        ),
        (
            "no token",
            app.client.get(&url).header("API-Key", &admin.api_key),
        ),
        (
            "garbage token",
            app.client
                .get(&url)
                .header("API-Key", &admin.api_key)
                .header("Authorization", "Bearer abc.def.ghi"),
        ),
        (
            "basic auth",
            app.client
                .get(&url)
                .header("API-Key", &admin.api_key)
                .header("Authorization", "Basic dXNlcjpwYXNz"),
        ),
    ];
    for (case, request) in cases {
        let res = request.send().await.unwrap();
        assert_eq!(res.headers()["www-authenticate"], "Bearer", "{case}");
        assert_problem(res, 401, "unauthorized").await;
    }
    // An expired token.
    let mut expired = common::admin_token();
    expired.ttl_secs = -3600;
    let res = app
        .with(&app.headers(&expired), Method::GET, BASE)
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "unauthorized").await;
    // Every operation checks.
    for (method, path) in [
        (Method::POST, BASE.to_owned()),
        (Method::GET, format!("{BASE}/abcdef-123")),
        (Method::DELETE, format!("{BASE}/abcdef-123")),
        (Method::POST, format!("{BASE}/abcdef-123/active")),
        (Method::POST, format!("{BASE}/abcdef-123/inactive")),
        (Method::POST, format!("{BASE}/abcdef-123/failed")),
    ] {
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

async fn customer_tokens_are_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (created, _) = create(&app, "audience-1").await;
    let id = created["id"].as_str().unwrap();
    let customer = app.customer("customer-0001");
    for (method, path) in [
        (Method::GET, BASE.to_owned()),
        (Method::POST, BASE.to_owned()),
        (Method::GET, format!("{BASE}/{id}")),
        (Method::DELETE, format!("{BASE}/{id}")),
        (Method::POST, format!("{BASE}/{id}/active")),
        (Method::POST, format!("{BASE}/{id}/inactive")),
        (Method::POST, format!("{BASE}/{id}/failed")),
    ] {
        let res = app
            .with(&customer, method.clone(), &path)
            .json(&new_connection("audience-9", "file"))
            .send()
            .await
            .unwrap();
        assert_problem(res, 403, "forbidden").await;
    }
    let after = app.get_json(&app.admin(), &format!("{BASE}/{id}")).await;
    assert_eq!(after, created, "nothing changed");
}

async fn the_institution_feature_switch_off_is_403(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.institution.enabled_features.customer_audience_connections = false
    })
    .await;
    for (method, path) in [
        (Method::GET, BASE.to_owned()),
        (Method::POST, BASE.to_owned()),
        (Method::GET, format!("{BASE}/abcdef-123")),
        (Method::DELETE, format!("{BASE}/abcdef-123")),
        (Method::POST, format!("{BASE}/abcdef-123/active")),
    ] {
        let res = app
            .as_admin(method, &path)
            .json(&new_connection("audience-9", "file"))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(res, 403, "featureDisabled").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("enabledFeatures.customerAudienceConnections")
        );
    }
}

async fn list_filters_by_audience_and_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = create(&app, "audience-1").await;
    let (b, _) = create(&app, "audience-2").await;
    let (c, _) = create(&app, "audience-3").await;
    let b_id = b["id"].as_str().unwrap();
    let c_id = c["id"].as_str().unwrap();
    assert_eq!(
        app.as_admin(Method::POST, &format!("{BASE}/{b_id}/active"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.as_admin(Method::POST, &format!("{BASE}/{c_id}/failed"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let ids = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = app.get_json(&app.admin(), BASE).await;
    assert_eq!(
        ids(all),
        vec![a["id"].as_str().unwrap(), b_id, c_id],
        "oldest first"
    );
    let one = app
        .get_json(&app.admin(), &format!("{BASE}?audience=audience-2"))
        .await;
    assert_eq!(ids(one), vec![b_id]);
    let some = app
        .get_json(&app.admin(), &format!("{BASE}?state=active|failed"))
        .await;
    assert_eq!(ids(some), vec![b_id, c_id]);
    let none = app
        .get_json(
            &app.admin(),
            &format!("{BASE}?state=inactive&audience=audience-1"),
        )
        .await;
    assert_eq!(ids(none), Vec::<String>::new());
    let item = &app
        .get_json(&app.admin(), &format!("{BASE}?state=pending"))
        .await["items"][0];
    assert_eq!(item, &a, "items carry the full representation");
}

async fn list_rejects_malformed_filters_with_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for query in [
        "state=done",
        "state=active|active",
        "state=",
        "state=active|inactive|pending|failed|active",
        "audience=abc",
        "audience=has%20space",
        "limit=0",
        "limit=1001",
        "limit=many",
        "start=garbage",
        "colour=blue",
    ] {
        let res = app
            .as_admin(Method::GET, &format!("{BASE}?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
}

async fn list_pages_with_a_next_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        create(&app, &format!("audience-{i}")).await;
    }
    let mut seen = Vec::new();
    let mut path = format!("{BASE}?limit=2");
    loop {
        let res = app.as_admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let next = res
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let body = json(res).await;
        for item in body["items"].as_array().unwrap() {
            seen.push(item["audience"]["id"].as_str().unwrap().to_owned());
        }
        match next {
            Some(link) => {
                assert!(link.ends_with("rel=\"next\""), "{link}");
                path = link[1..link.find('>').unwrap()].to_owned();
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..5).map(|i| format!("audience-{i}")).collect::<Vec<_>>()
    );
}

async fn get_supports_if_none_match_and_answers_404_and_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (created, etag) = create(&app, "audience-1").await;
    let path = format!("{BASE}/{}", created["id"].as_str().unwrap());
    let res = app
        .as_admin(Method::GET, &path)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert!(res.text().await.unwrap().is_empty());
    let res = app
        .as_admin(Method::GET, &path)
        .header("If-None-Match", "\"r999\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .as_admin(Method::GET, &path)
        .header("If-None-Match", "\"not valid\"")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalidValue").await;

    let res = app
        .as_admin(Method::GET, &format!("{BASE}/no-such-connection"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "notFound").await;
    let res = app
        .as_admin(Method::GET, &format!("{BASE}/abc"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(res, 400, "invalidValue").await;
    assert_eq!(
        problem["attributes"]["field"],
        "customerAudienceConnectionId"
    );
}

async fn delete_answers_204_then_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (created, _) = create(&app, "audience-1").await;
    let path = format!("{BASE}/{}", created["id"].as_str().unwrap());
    let res = app.as_admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.as_admin(Method::GET, &path).send().await.unwrap(),
        404,
        "notFound",
    )
    .await;
    assert_problem(
        app.as_admin(Method::DELETE, &path).send().await.unwrap(),
        404,
        "notFound",
    )
    .await;
    assert_problem(
        app.as_admin(Method::DELETE, &format!("{BASE}/bad"))
            .send()
            .await
            .unwrap(),
        400,
        "invalidValue",
    )
    .await;
    // The audience can be connected again.
    create(&app, "audience-1").await;
}

async fn actions_follow_the_state_machine(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (created, etag) = create(&app, "audience-1").await;
    let path = format!("{BASE}/{}", created["id"].as_str().unwrap());
    let act = |action: &'static str| {
        app.as_admin(Method::POST, &format!("{path}/{action}"))
            .send()
    };

    // pending -> active, with the updater recorded and a new etag.
    let res = act("active").await.unwrap();
    assert_eq!(res.status(), 200);
    let new_etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let body = json(res).await;
    assert_eq!(body["state"], "active");
    assert!(body["updatedAt"].as_str() >= created["updatedAt"].as_str());

    // Idempotent: the same state again changes nothing, not even the etag.
    let res = act("active").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), new_etag);
    assert_eq!(json(res).await, body);

    assert_eq!(
        json(act("inactive").await.unwrap()).await["state"],
        "inactive"
    );
    // inactive -> failed is not allowed.
    let problem = assert_problem(act("failed").await.unwrap(), 409, "invalidStateTransition").await;
    assert_eq!(problem["attributes"]["state"], "inactive");
    assert_eq!(json(act("active").await.unwrap()).await["state"], "active");
    assert_eq!(json(act("failed").await.unwrap()).await["state"], "failed");
    assert_eq!(
        json(act("inactive").await.unwrap()).await["state"],
        "inactive"
    );

    for action in ["active", "inactive", "failed"] {
        let res = app
            .as_admin(Method::POST, &format!("{BASE}/no-such-thing/{action}"))
            .send()
            .await
            .unwrap();
        assert_problem(res, 404, "notFound").await;
        let res = app
            .as_admin(Method::POST, &format!("{BASE}/x/{action}"))
            .send()
            .await
            .unwrap();
        assert_problem(res, 400, "invalidValue").await;
    }
}

async fn actions_honour_if_match(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (created, etag) = create(&app, "audience-1").await;
    let path = format!("{BASE}/{}", created["id"].as_str().unwrap());
    let res = app
        .as_admin(Method::POST, &format!("{path}/active"))
        .header("If-Match", "\"r999\"")
        .send()
        .await
        .unwrap();
    assert_problem(res, 412, "preconditionFailed").await;
    let unchanged = app.get_json(&app.admin(), &path).await;
    assert_eq!(unchanged, created, "a failed precondition changes nothing");

    let res = app
        .as_admin(Method::POST, &format!("{path}/active"))
        .header("If-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The old tag is stale now, even for the idempotent case.
    let res = app
        .as_admin(Method::POST, &format!("{path}/active"))
        .header("If-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_problem(res, 412, "preconditionFailed").await;
    let res = app
        .as_admin(Method::POST, &format!("{path}/inactive"))
        .header("If-Match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .as_admin(Method::POST, &format!("{path}/inactive"))
        .header("If-Match", "bad tag")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalidValue").await;
}

async fn fifty_concurrent_creates_give_one_201_and_49_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let request = app
            .with(&admin, Method::POST, BASE)
            .json(&new_connection("audience-race", "file"));
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
    }
    let mut created = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((created, conflicts), (1, 49));
    let list = app
        .get_json(&app.admin(), &format!("{BASE}?audience=audience-race"))
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn twenty_concurrent_actions_with_one_if_match_give_one_success(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (created, etag) = create(&app, "audience-1").await;
    let path = format!("{BASE}/{}/active", created["id"].as_str().unwrap());
    let admin = app.admin();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let request = app
            .with(&admin, Method::POST, &path)
            .header("If-Match", &etag);
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
    }
    let mut ok = 0;
    let mut failed_precondition = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PRECONDITION_FAILED => failed_precondition += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, failed_precondition), (1, 19));
}

async fn clients_over_their_rate_get_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        // One token per 10 s: the burst stays spent however slowly a busy machine sends.
        c.rate_limit.per_second = 0.1;
        c.rate_limit.burst = 3;
    })
    .await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(
            app.as_admin(Method::GET, BASE)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let res = app.as_admin(Method::GET, BASE).send().await.unwrap();
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The refill since the first request shortens the wait for the next token.
    let refilled = started.elapsed().as_secs();
    assert!(
        (10 - refilled.min(9)..=10).contains(&retry_after),
        "{retry_after} after {refilled} s"
    );
    assert_problem(res, 429, "tooManyRequests").await;
    // Another user of the same client has an allowance of their own.
    let other = app.headers(&tandem::auth::dev::TokenRequest {
        subject: "another-admin".into(),
        ..common::admin_token()
    });
    assert_eq!(
        app.with(&other, Method::GET, BASE)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn server_errors_do_not_leak_internals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    sqlx::raw_sql("DROP TABLE audience_connections")
        .execute(&app.db.write)
        .await
        .unwrap();
    let res = app.as_admin(Method::GET, BASE).send().await.unwrap();
    let problem = assert_problem(res, 500, "internalError").await;
    let text = problem.to_string().to_lowercase();
    for leak in ["audience_connections", "sql", "table", "relation"] {
        assert!(!text.contains(leak), "{leak} leaked: {problem}");
    }
}

async fn unknown_paths_and_methods_are_problems_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_problem(
        app.as_admin(Method::GET, "/bankingAdmin/nothing-here")
            .send()
            .await
            .unwrap(),
        404,
        "notFound",
    )
    .await;
    let res = app.as_admin(Method::PUT, BASE).send().await.unwrap();
    assert!(res.headers().contains_key("allow"));
    assert_problem(res, 405, "methodNotAllowed").await;
}

/// The document is served to staff, as every `/bankingAdmin` operation is (the Invitations
/// document likewise needs credentials).
async fn the_admin_openapi_document_is_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = "/bankingAdmin/apiDoc";
    let res = app.client.get(app.url(path)).send().await.unwrap();
    assert_problem(res, 401, "unauthorized").await;
    let res = app
        .with(&app.customer("customer-1"), Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "forbidden").await;
    let res = app
        .with(&app.admin(), Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc = json(res).await;
    assert_eq!(doc["info"]["version"], "0.7.0");
    let ops: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| {
            item.as_object()
                .unwrap()
                .values()
                .map(|op| op["operationId"].as_str().unwrap().to_owned())
        })
        .collect();
    for op in [
        "listCustomerAudienceConnections",
        "createCustomerAudienceConnection",
        "getCustomerAudienceConnection",
        "deleteCustomerAudienceConnection",
        "activateCustomerAudienceConnection",
        "deactivateCustomerAudienceConnection",
        "failCustomerAudienceConnection",
    ] {
        assert!(ops.contains(&op.to_owned()), "{op} missing from {ops:?}");
    }
}

on_both_backends!(
    create_answers_201_with_location_etag_and_pending_state,
    usernames_outside_the_seeds_lengths_are_fitted_in_responses,
    representations_match_their_snapshots,
    create_rejects_malformed_bodies_with_400_naming_the_field,
    create_rejects_other_media_types_and_oversized_bodies,
    create_with_an_unconfigured_provider_is_422,
    activating_a_connection_whose_provider_is_no_longer_configured_is_422,
    a_second_connection_for_the_same_audience_and_provider_is_409,
    credentials_are_required_401,
    customer_tokens_are_403,
    the_institution_feature_switch_off_is_403,
    list_filters_by_audience_and_state,
    list_rejects_malformed_filters_with_400,
    list_pages_with_a_next_link,
    get_supports_if_none_match_and_answers_404_and_400,
    delete_answers_204_then_404,
    actions_follow_the_state_machine,
    actions_honour_if_match,
    fifty_concurrent_creates_give_one_201_and_49_409,
    twenty_concurrent_actions_with_one_if_match_give_one_success,
    clients_over_their_rate_get_429_with_retry_after,
    server_errors_do_not_leak_internals,
    unknown_paths_and_methods_are_problems_too,
    the_admin_openapi_document_is_served,
    each_acknowledged_action_shows_in_the_next_read_despite_concurrent_reads,
    concurrent_reads_by_id_each_get_their_own_connection,
);

// ---- Reads by id: cached on SQLite, gathered into shared statements on PostgreSQL -----------

/// On SQLite reads by id come from memory once read; on PostgreSQL the reads that arrive
/// together go out in one statement. Either way each acknowledged action must show in the next
/// read, while other clients keep reading (refilling the cache, filling the statements).
async fn each_acknowledged_action_shows_in_the_next_read_despite_concurrent_reads(
    backend: Backend,
) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let (created, _) = create(&app, "cache-race").await;
    let path = format!("{BASE}/{}", created["id"].as_str().unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (app, path, stop) = (app.clone(), path.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    app.get_json(&app.admin(), &path).await;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for round in 0..100 {
        let target = if round % 2 == 0 { "active" } else { "inactive" };
        let res = app
            .as_admin(Method::POST, &format!("{path}/{target}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        let res = app.as_admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(
            res.headers()["etag"].to_str().unwrap(),
            etag,
            "round {round}"
        );
        assert_eq!(json(res).await["state"], target, "round {round}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
}

/// Reads that arrive together, of rows that exist (some several times over) and of ones that
/// do not, each get their own answer.
async fn concurrent_reads_by_id_each_get_their_own_connection(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for n in 0..24 {
        let (created, _) = create(&app, &format!("gathered-{n}")).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let missing: Vec<String> = (0..8).map(|n| format!("missing-{n:03}")).collect();
    let wanted: Vec<&String> = ids.iter().cycle().take(96).chain(&missing).collect();
    let answers = futures_util::future::join_all(
        wanted
            .iter()
            .map(|id| app.as_admin(Method::GET, &format!("{BASE}/{id}")).send()),
    )
    .await;
    for (id, res) in wanted.iter().zip(answers) {
        let res = res.unwrap();
        if id.starts_with("missing-") {
            assert_problem(res, 404, "notFound").await;
        } else {
            assert_eq!(res.status(), 200, "{id}");
            let body = json(res).await;
            assert_eq!(body["id"], id.as_str());
            let n = ids.iter().position(|known| known == *id).unwrap();
            assert_eq!(body["audience"]["id"], format!("gathered-{n}"));
        }
    }
}

/// A row deleted through the API is gone for reads by id at once, cache or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_deleted_connection_is_not_served_from_memory() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (created, _) = create(&app, "cache-delete").await;
    let path = format!("{BASE}/{}", created["id"].as_str().unwrap());
    app.get_json(&app.admin(), &path).await;
    let res = app.as_admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res = app.as_admin(Method::GET, &path).send().await.unwrap();
    assert_problem(res, 404, "notFound").await;
}

/// The caches are right only for a database's one writer: a second instance on the same SQLite
/// database is refused while the first caches, whichever of the two has caches on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_beside_a_caching_one_on_sqlite_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut without_caches = app.config.clone();
    without_caches.database.row_cache_entries = 0;
    for config in [app.config.clone(), without_caches.clone()] {
        let err = match tandem::app::Application::build(config).await {
            Ok(_) => panic!("a second instance started beside a caching one"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains("another tandem instance"), "{err}");
        assert!(err.contains("row_cache_entries = 0"), "{err}");
    }
    // Instances that all run without caches share the database, as before.
    let shared = TestApp::spawn_with(Backend::Sqlite, common::several_instances).await;
    let mut second = shared.config.clone();
    common::several_instances(&mut second);
    assert!(tandem::app::Application::build(second).await.is_ok());
}
