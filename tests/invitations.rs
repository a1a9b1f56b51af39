//! The Invitations API over HTTP, on SQLite and PostgreSQL.

mod common;

use common::{Backend, Headers, TestApp, customer_token, json};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;
use tandem::store::entitlements::{Entitlement, TableEntitlements};

const COLLECTION: &str = "/invitations/invitations";
const ACCOUNT: &str = "https://api.bank.example/accounts/account/7443d485";
const CLOSED_ACCOUNT: &str = "https://api.bank.example/accounts/account/no-joint";
const ORG: &str = "https://api.bank.example/organizations/organization/acme";
const SECRET: &str = "obsolete obese octopus";

/// Alice holds ACCOUNT and ORG, Bob is a joint owner of ACCOUNT, Carol holds nothing.
const ALICE: &str = "customer-alice";
const BOB: &str = "customer-bob";
const CAROL: &str = "customer-carol";

async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut tandem::config::Config)) -> TestApp {
    let app = TestApp::spawn_with(backend, adjust).await;
    let row = |customer: &str, uri: &str, disabled: bool| Entitlement {
        customer_id: customer.into(),
        resource_uri: uri.into(),
        role: "owner".into(),
        joint_owners_disabled: disabled,
    };
    TableEntitlements::new(app.db.clone())
        .replace_all(&[
            row(ALICE, ACCOUNT, false),
            row(ALICE, ORG, false),
            row(ALICE, CLOSED_ACCOUNT, true),
            row(BOB, ACCOUNT, false),
        ])
        .await
        .unwrap();
    app
}

fn joint(email: &str) -> Value {
    json!({
        "_profile": "https://production.api.apiture.com/schemas/invitations/createInvitation/v2.2.0/profile.json",
        "sharedSecret": SECRET,
        "type": "joint",
        "accountUri": ACCOUNT,
        "inviterFullName": "Alice Inviter",
        "emailAddress": email,
        "firstName": "Max",
        "lastName": "Peck",
        "identification": "3333",
        "attributes": { "applicationAttributes": { "productCode": "DD12M_LA" } }
    })
}

async fn create_as(app: &TestApp, who: &Headers, body: &Value) -> (Value, String) {
    let res = app
        .with(who, Method::POST, COLLECTION)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    (json(res).await, etag)
}

async fn create(app: &TestApp, email: &str) -> (Value, String) {
    create_as(app, &app.customer(ALICE), &joint(email)).await
}

fn id_of(body: &Value) -> String {
    body["_id"].as_str().unwrap().to_owned()
}

/// The ids of a list page's items, in order.
fn item_ids(page: &Value) -> Vec<String> {
    page["_embedded"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect()
}

/// Asserts a HAL `errorResponse` with the status and `_error.type`.
async fn assert_error(res: Response, status: u16, type_name: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    assert_eq!(res.headers()["content-type"], "application/hal+json");
    let body = json(res).await;
    assert_eq!(body["_error"]["type"], type_name, "{body}");
    assert_eq!(body["_error"]["statusCode"], status, "{body}");
    for field in ["_id", "message", "occurredAt"] {
        assert!(body["_error"][field].is_string(), "lacks {field}: {body}");
    }
    body
}

async fn verify(app: &TestApp, id: &str, secret: &str, from: &str) -> Response {
    app.client
        .post(app.url("/invitations/verifications"))
        .header("X-Forwarded-For", from)
        .json(&json!({ "invitationId": id, "sharedSecret": secret }))
        .send()
        .await
        .unwrap()
}

async fn outbox(app: &TestApp) -> Vec<(String, String, Value)> {
    sqlx::query("SELECT recipient, locale, payload FROM email_outbox ORDER BY created_at, id")
        .fetch_all(&app.db.read)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<String, _>("recipient"),
                r.get::<String, _>("locale"),
                serde_json::from_str(&r.get::<String, _>("payload")).unwrap(),
            )
        })
        .collect()
}

async fn set_expiry(app: &TestApp, id: &str, millis: i64) {
    sqlx::query("UPDATE invitations SET expires_at = $1 WHERE id = $2")
        .bind(millis)
        .bind(id)
        .execute(&app.db.write)
        .await
        .unwrap();
}

/// `a=1&b=2`, URL-encoded.
fn encoded(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://localhost/", pairs)
        .unwrap()
        .query()
        .unwrap_or("")
        .to_owned()
}

/// The collection with these query parameters.
fn listing(pairs: &[(&str, &str)]) -> String {
    format!("{COLLECTION}?{}", encoded(pairs))
}

fn trusting_proxies(config: &mut tandem::config::Config) {
    config.invitations.trust_forwarded_for = true;
}

// ---- create ---------------------------------------------------------------------------

async fn create_answers_201_with_location_etag_links_and_queues_the_email(backend: Backend) {
    let app = spawn(backend).await;
    let res = app
        .with(&app.customer(ALICE), Method::POST, COLLECTION)
        .header("Accept-Language", "es-MX, en;q=0.5")
        .json(&joint("Max.Peck@nasa.example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["content-type"], "application/hal+json");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let body = json(res).await;
    let id = id_of(&body);
    assert_eq!(location, format!("{COLLECTION}/{id}"));
    assert_eq!(etag, "\"r1\"");
    assert_eq!(body["state"], "sent");
    assert_eq!(body["type"], "joint");
    assert_eq!(body["sharedSecret"], SECRET, "the inviter sees the secret");
    assert_eq!(body["verificationCount"], 0);
    assert_eq!(body["createdBy"], format!("user-{ALICE}"));
    assert_eq!(body["customerId"], ALICE);
    assert_eq!(
        body["attributes"]["applicationAttributes"]["productCode"],
        "DD12M_LA"
    );
    assert_eq!(
        body["_profile"],
        "https://production.api.apiture.com/schemas/invitations/invitation/v1.2.0/profile.json"
    );
    let links = body["_links"].as_object().unwrap();
    let mut rels: Vec<&str> = links.keys().map(String::as_str).collect();
    rels.sort();
    assert_eq!(
        rels,
        [
            "apiture:acceptInvitationUserExperience",
            "apiture:revoke",
            "apiture:send",
            "self"
        ]
    );
    let accept = format!("{}/invitations/accept?invitationId={id}", app.base);
    assert_eq!(
        body["_links"]["apiture:acceptInvitationUserExperience"]["href"],
        accept
    );
    assert_eq!(
        body["_links"]["apiture:revoke"]["href"],
        app.url(&format!("/invitations/revoked?invitation={id}"))
    );
    let created = time::OffsetDateTime::parse(
        body["createdAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        body["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created, time::Duration::days(30));

    let mail = outbox(&app).await;
    assert_eq!(mail.len(), 1);
    let (recipient, locale, payload) = &mail[0];
    assert_eq!(recipient, "Max.Peck@nasa.example.com");
    assert_eq!(locale, "es");
    assert_eq!(
        payload,
        &json!({
            "invitationId": id,
            "acceptUrl": accept,
            // The name Alice's token gives, not the request's "Alice Inviter".
            "inviterFullName": "Casey Customer",
            "inviteeFirstName": "Max",
            "inviteeLastName": "Peck",
            "invitationType": "joint",
            "expiresAt": body["expiresAt"],
        })
    );
    assert!(
        !payload.to_string().contains("octopus"),
        "the email never carries the secret"
    );

    // Stored sealed, not as text.
    let stored: String = sqlx::query("SELECT sealed_secret FROM invitations WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.db.read)
        .await
        .unwrap()
        .get("sealed_secret");
    assert!(!stored.contains("octopus"));
}

async fn create_rejects_bad_bodies_with_400_naming_the_field_and_stores_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let alice = app.customer(ALICE);
    let with = |field: &str, value: Value| {
        let mut body = joint("max@example.com");
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = joint("max@example.com");
        body.as_object_mut().unwrap().remove(field);
        body
    };
    // Schema breaks (types, unknown or missing properties) are badRequest; values that break
    // a constraint are invalidValue. Both name the field.
    let cases = [
        (
            with("sharedSecret", json!("short")),
            "sharedSecret",
            "invalidValue",
        ),
        (
            with("emailAddress", json!("not-an-address")),
            "emailAddress",
            "invalidValue",
        ),
        (with("type", json!("cousin")), "type", "invalidValue"),
        (
            with("identification", json!("12345")),
            "identification",
            "invalidValue",
        ),
        (without("accountUri"), "accountUri", "invalidValue"),
        (with("colour", json!("blue")), "colour", "badRequest"),
        (without("sharedSecret"), "sharedSecret", "badRequest"),
        (without("inviterFullName"), "inviterFullName", "badRequest"),
        (
            with("sharedSecret", json!(42)),
            "sharedSecret",
            "badRequest",
        ),
    ];
    for (body, field, type_name) in cases {
        let res = app
            .with(&alice, Method::POST, COLLECTION)
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = assert_error(res, 400, type_name).await;
        assert!(
            err["_error"]["message"].as_str().unwrap().contains(field),
            "{field}: {err}"
        );
    }
    let res = app
        .with(&alice, Method::POST, COLLECTION)
        .header("content-type", "text/plain")
        .body(joint("max@example.com").to_string())
        .send()
        .await
        .unwrap();
    assert_error(res, 415, "unsupportedMediaType").await;
    assert!(outbox(&app).await.is_empty());
    let list = app.get_json(&alice, COLLECTION).await;
    assert_eq!(list["count"], 0);
}

async fn create_enforces_entitlements_types_and_joint_owner_rules(backend: Backend) {
    let app = spawn(backend).await;
    // Carol holds no account.
    let res = app
        .with(&app.customer(CAROL), Method::POST, COLLECTION)
        .json(&joint("max@example.com"))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "notEntitled").await;
    // Joint owners disabled on the account.
    let mut body = joint("max@example.com");
    body["accountUri"] = json!(CLOSED_ACCOUNT);
    let res = app
        .with(&app.customer(ALICE), Method::POST, COLLECTION)
        .json(&body)
        .send()
        .await
        .unwrap();
    let err = assert_error(res, 409, "jointOwnersDisabled").await;
    assert_eq!(
        err["_error"]["remediation"],
        "Contact your financial institution."
    );
    // Even staff cannot add joint owners there.
    let res = app
        .with(&app.admin(), Method::POST, COLLECTION)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "jointOwnersDisabled").await;
    // Product promotions are the institution's.
    let promo = json!({"sharedSecret": SECRET, "type": "productPromotion", "inviterFullName": "Bank", "emailAddress": "max@example.com"});
    let res = app
        .with(&app.customer(ALICE), Method::POST, COLLECTION)
        .json(&promo)
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
    let (created, _) = create_as(&app, &app.admin(), &promo).await;
    assert_eq!(created["type"], "productPromotion");
    // Authorized signers need the organization.
    let signer = json!({"sharedSecret": SECRET, "type": "authorizedSigner", "organizationUri": ORG, "role": "signer", "inviterFullName": "Alice", "emailAddress": "sig@example.com"});
    let (created, _) = create_as(&app, &app.customer(ALICE), &signer).await;
    assert_eq!(created["role"], "signer");
    assert_eq!(outbox(&app).await.len(), 2);
}

async fn scopes_and_credentials_are_required(backend: Backend) {
    let app = spawn(backend).await;
    let res = app.client.get(app.url(COLLECTION)).send().await.unwrap();
    assert_error(res, 401, "unauthorized").await;
    let reader = app.headers(&tandem::auth::dev::TokenRequest {
        scope: "banking/read".into(),
        ..customer_token(ALICE)
    });
    let res = app
        .with(&reader, Method::POST, COLLECTION)
        .json(&joint("max@example.com"))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let res = app
        .with(&reader, Method::GET, &format!("{COLLECTION}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .with(&reader, Method::DELETE, &format!("{COLLECTION}/{id}"))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
    let writer = app.headers(&tandem::auth::dev::TokenRequest {
        scope: "banking/write".into(),
        ..customer_token(ALICE)
    });
    let res = app
        .with(&writer, Method::GET, COLLECTION)
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
    let res = app
        .with(
            &writer,
            Method::POST,
            &format!("/invitations/revoked?invitation={id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// The representation with the volatile parts (id, base URL, times, error ids) replaced.
fn redacted(app: &TestApp, id: &str, value: &Value) -> Value {
    let text = value
        .to_string()
        .replace(id, "[id]")
        .replace(&app.base, "[base]");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    for field in ["createdAt", "updatedAt", "expiresAt"] {
        if v.get(field).is_some() {
            v[field] = json!(format!("[{field}]"));
        }
    }
    if let Some(error) = v.get_mut("_error") {
        error["_id"] = json!("[errorId]");
        error["occurredAt"] = json!("[occurredAt]");
    }
    v
}

async fn representations_match_their_snapshots(backend: Backend) {
    let app = spawn(backend).await;
    let (created, _) = create(&app, "Max.Peck@nasa.example.com").await;
    let id = id_of(&created);
    insta::assert_json_snapshot!("invitation", redacted(&app, &id, &created));
    let seen_by_bob = app
        .get_json(&app.customer(BOB), &format!("{COLLECTION}/{id}"))
        .await;
    insta::assert_json_snapshot!(
        "invitation_seen_by_joint_owner",
        redacted(&app, &id, &seen_by_bob)
    );
    assert_eq!(verify(&app, &id, SECRET, "127.0.0.1").await.status(), 200);
    let res = app
        .with(
            &app.customer(ALICE),
            Method::POST,
            &format!("/invitations/revoked?invitation={id}"),
        )
        .send()
        .await
        .unwrap();
    insta::assert_json_snapshot!("not_revokable_error", redacted(&app, &id, &json(res).await));
}

/// `customerGroup` is the inviter's, read from their token's `customer_group` claim (the
/// default `auth.customer_group_claim`) when they create the invitation; other readers see the
/// same value, and an invitation whose inviter's token named no group has none.
async fn the_inviters_customer_group_comes_from_their_token(backend: Backend) {
    let app = spawn(backend).await;
    let grouped = app.headers(&tandem::auth::dev::TokenRequest {
        customer_group: Some(("customer_group".into(), "2".into())),
        ..customer_token(ALICE)
    });
    let (created, _) = create_as(&app, &grouped, &joint("max@example.com")).await;
    assert_eq!(created["customerGroup"], "2");
    let id = id_of(&created);
    // Bob holds the account: he reads Alice's group, not his own (he has none).
    let path = format!("{COLLECTION}/{id}");
    assert_eq!(
        app.get_json(&app.customer(BOB), &path).await["customerGroup"],
        "2"
    );
    assert_eq!(
        app.get_json(&app.admin(), &path).await["customerGroup"],
        "2"
    );

    // Without the claim (and later, with another group) the field is left out or unchanged.
    let (ungrouped, _) = create(&app, "tom@example.com").await;
    assert!(ungrouped.get("customerGroup").is_none(), "{ungrouped}");
    let regrouped = app.headers(&tandem::auth::dev::TokenRequest {
        customer_group: Some(("customer_group".into(), "7".into())),
        ..customer_token(ALICE)
    });
    assert_eq!(app.get_json(&regrouped, &path).await["customerGroup"], "2");

    let page = app.get_json(&app.admin(), COLLECTION).await;
    let groups: Vec<(String, Option<&str>)> = page["_embedded"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                id_of(item),
                item.get("customerGroup").and_then(Value::as_str),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [(id, Some("2")), (id_of(&ungrouped), None)],
        "in the order they were created"
    );
}

/// The action links are a promise: for every state and every viewer (the inviter, a joint
/// owner, staff), a representation carries `apiture:revoke`, `apiture:send` or
/// `apiture:complete` exactly when that viewer's POST of the action now changes the invitation
/// (a repeat of a revoke or a complete answers 200 but changes nothing, and is not offered), and
/// the link leads there. Each action is tried on a fresh invitation in the state under test.
async fn action_links_appear_exactly_when_following_them_changes_the_invitation(backend: Backend) {
    // Eighteen invitations are accepted from one address.
    let app = spawn_with(backend, |c| c.invitations.verify_max_attempts_per_ip = 100).await;
    let viewers = [
        ("inviter", app.customer(ALICE)),
        ("joint owner", app.customer(BOB)),
        ("staff", app.admin()),
    ];
    let actions = [
        ("apiture:revoke", "/invitations/revoked"),
        ("apiture:send", "/invitations/sent"),
        ("apiture:complete", "/invitations/completed"),
    ];
    let post = |who: &Headers, action: &str, id: &str| {
        app.with(who, Method::POST, &format!("{action}?invitation={id}"))
            .send()
    };
    let mut offered = Vec::new();
    for state in ["sent", "accepted", "completed", "revoked", "expired"] {
        for (viewer, headers) in &viewers {
            for (rel, action) in actions {
                let (created, _) = create(&app, "max@example.com").await;
                let id = id_of(&created);
                if state == "expired" {
                    set_expiry(&app, &id, 1).await;
                }
                if matches!(state, "accepted" | "completed") {
                    assert_eq!(verify(&app, &id, SECRET, "10.0.0.1").await.status(), 200);
                }
                let last_step = match state {
                    "completed" => Some((app.admin(), "/invitations/completed")),
                    "revoked" => Some((app.customer(ALICE), "/invitations/revoked")),
                    _ => None,
                };
                if let Some((who, to)) = last_step {
                    assert_eq!(post(&who, to, &id).await.unwrap().status(), 200, "{state}");
                }
                let res = app
                    .with(headers, Method::GET, &format!("{COLLECTION}/{id}"))
                    .send()
                    .await
                    .unwrap();
                let etag = res.headers()["etag"].clone();
                let view = json(res).await;
                assert_eq!(view["state"], state);
                let link = view["_links"].get(rel);
                if let Some(link) = link {
                    assert_eq!(link["href"], app.url(&format!("{action}?invitation={id}")));
                    offered.push(format!("{state} {viewer} {rel}"));
                }
                let res = post(headers, action, &id).await.unwrap();
                let status = res.status();
                let changed = status == StatusCode::OK && res.headers().get("etag") != Some(&etag);
                assert_eq!(
                    changed,
                    link.is_some(),
                    "{state}, {viewer}: {rel} {} but POST answered {status}: {}",
                    if link.is_some() {
                        "offered"
                    } else {
                        "not offered"
                    },
                    res.text().await.unwrap()
                );
            }
        }
    }
    assert_eq!(
        offered,
        [
            "sent inviter apiture:revoke",
            "sent inviter apiture:send",
            "sent staff apiture:revoke",
            "sent staff apiture:send",
            "accepted staff apiture:complete",
        ]
    );
}

// ---- read -----------------------------------------------------------------------------

async fn get_answers_etag_and_304_and_hides_the_secret_from_other_joint_owners(backend: Backend) {
    let app = spawn(backend).await;
    let (created, etag) = create(&app, "max@example.com").await;
    let path = format!("{COLLECTION}/{}", id_of(&created));
    let res = app
        .with(&app.customer(ALICE), Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(json(res).await, created);
    let res = app
        .with(&app.customer(ALICE), Method::GET, &path)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    // Bob holds the account: he sees it, without the secret or actions.
    let res = app
        .with(&app.customer(BOB), Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = json(res).await;
    assert!(seen.get("sharedSecret").is_none(), "{seen}");
    assert!(seen["_links"].get("apiture:revoke").is_none());
    assert!(seen["_links"].get("apiture:send").is_none());
    assert_eq!(seen["emailAddress"], "max@example.com");
    // Staff see everything.
    let staff = app.get_json(&app.admin(), &path).await;
    assert_eq!(staff["sharedSecret"], SECRET);
    // Unknown and malformed ids.
    let res = app
        .with(
            &app.customer(ALICE),
            Method::GET,
            &format!("{COLLECTION}/no-such-invitation"),
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "notFound").await;
    let res = app
        .with(
            &app.customer(ALICE),
            Method::GET,
            &format!("{COLLECTION}/bad%20id"),
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalidValue").await;
}

async fn another_customer_can_neither_read_change_nor_act_on_an_invitation(backend: Backend) {
    let app = spawn(backend).await;
    let (created, etag) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let carol = app.customer(CAROL);
    let path = format!("{COLLECTION}/{id}");
    let attempts = [
        app.with(&carol, Method::GET, &path),
        app.with(&carol, Method::DELETE, &path),
        app.with(&carol, Method::PATCH, &path)
            .json(&json!({"sharedSecret": "a brand new secret"})),
        app.with(
            &carol,
            Method::POST,
            &format!("/invitations/revoked?invitation={id}"),
        ),
        app.with(
            &carol,
            Method::POST,
            &format!("/invitations/sent?invitation={id}"),
        ),
        app.with(&carol, Method::GET, &path)
            .header("If-None-Match", &etag),
    ];
    for attempt in attempts {
        assert_error(attempt.send().await.unwrap(), 404, "notFound").await;
    }
    let res = app
        .with(
            &carol,
            Method::POST,
            &format!("/invitations/completed?invitation={id}"),
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
    let list = app.get_json(&carol, COLLECTION).await;
    assert_eq!(list["count"], 0);
    assert_eq!(list["_embedded"]["items"], json!([]));
    let list = app
        .get_json(
            &carol,
            &format!("{COLLECTION}?filter=eq(customerId,{ALICE})"),
        )
        .await;
    assert_eq!(list["count"], 0, "a filter cannot widen visibility");
    // A joint owner who may see it still may not change it.
    let bob = app.customer(BOB);
    for attempt in [
        app.with(&bob, Method::DELETE, &path),
        app.with(
            &bob,
            Method::POST,
            &format!("/invitations/revoked?invitation={id}"),
        ),
        app.with(&bob, Method::PATCH, &path)
            .json(&json!({"sharedSecret": "a brand new secret"})),
    ] {
        assert_error(attempt.send().await.unwrap(), 403, "forbidden").await;
    }
    // Nothing changed.
    let res = app
        .with(&app.customer(ALICE), Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(outbox(&app).await.len(), 1);
}

async fn list_pages_with_count_and_hal_links(backend: Backend) {
    let app = spawn(backend).await;
    for i in 0..5 {
        create(&app, &format!("invitee{i}@example.com")).await;
    }
    let alice = app.customer(ALICE);
    let res = app
        .with(
            &alice,
            Method::GET,
            &format!("{COLLECTION}?limit=2&start=2&state=sent"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/hal+json");
    let page = json(res).await;
    assert_eq!(page["count"], 5);
    assert_eq!(page["start"], 2);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["name"], "invitations");
    let items = page["_embedded"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["emailAddress"], "invitee2@example.com");
    // The path of a link, which starts with the service's own address.
    let href = |rel: &str| {
        let href = page["_links"][rel]["href"].as_str().unwrap_or("");
        href.strip_prefix(&app.base)
            .unwrap_or_else(|| panic!("{rel} {href} is not under {}", app.base))
            .to_owned()
    };
    assert_eq!(
        href("self"),
        "/invitations/invitations?state=sent&start=2&limit=2"
    );
    assert_eq!(
        href("first"),
        "/invitations/invitations?state=sent&start=0&limit=2"
    );
    assert_eq!(
        href("prev"),
        "/invitations/invitations?state=sent&start=0&limit=2"
    );
    assert_eq!(
        href("next"),
        "/invitations/invitations?state=sent&start=4&limit=2"
    );
    assert_eq!(
        href("last"),
        "/invitations/invitations?state=sent&start=4&limit=2"
    );
    assert_eq!(href("collection"), "/invitations/invitations");
    let last = app.get_json(&alice, &href("next")).await;
    assert_eq!(last["_embedded"]["items"].as_array().unwrap().len(), 1);
    assert!(last["_links"].get("next").is_none());
    // Bob sees the invitations on his account too, without secrets.
    let bobs = app.get_json(&app.customer(BOB), COLLECTION).await;
    assert_eq!(bobs["count"], 5);
    assert!(bobs["_embedded"]["items"][0].get("sharedSecret").is_none());
    for bad in [
        "limit=0",
        "limit=1001",
        "start=-1",
        "state=lost",
        "type=cousin",
        "colour=blue",
        "limit=ten",
    ] {
        let res = app
            .with(&alice, Method::GET, &format!("{COLLECTION}?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
}

/// A customer's list merges their own invitations with those on each account and organization
/// they hold (read one by one up to 16 resources, together beyond; on SQLite, pages in creation
/// order merge those walks as they read them): every page, order and count must be what
/// filtering the staff list by hand gives.
async fn customer_lists_show_exactly_what_they_may_see_in_every_page_and_order(backend: Backend) {
    const DAVE: &str = "customer-dave";
    let app = spawn(backend).await;
    let daves: Vec<String> = (0..17)
        .map(|n| format!("https://api.bank.example/accounts/account/dave-{n:02}"))
        .collect();
    let row = |customer: &str, uri: &str| Entitlement {
        customer_id: customer.into(),
        resource_uri: uri.into(),
        role: "owner".into(),
        joint_owners_disabled: false,
    };
    let mut held = vec![row(ALICE, ACCOUNT), row(ALICE, ORG), row(BOB, ACCOUNT)];
    held.extend(daves.iter().map(|uri| row(DAVE, uri)));
    held.push(row(ALICE, &daves[3]));
    TableEntitlements::new(app.db.clone())
        .replace_all(&held)
        .await
        .unwrap();
    let on = |account: &str, email: &str| {
        let mut body = joint(email);
        body["accountUri"] = json!(account);
        body
    };
    let signer = |email: &str| json!({"sharedSecret": SECRET, "type": "authorizedSigner", "organizationUri": ORG, "inviterFullName": "Alice", "emailAddress": email});
    let (alice, bob, dave) = (app.customer(ALICE), app.customer(BOB), app.customer(DAVE));
    let mut revoke = Vec::new();
    for n in 0..4 {
        let (a, _) = create_as(&app, &alice, &on(ACCOUNT, &format!("a{n}@x.example"))).await;
        create_as(&app, &alice, &signer(&format!("s{n}@x.example"))).await;
        let (b, _) = create_as(&app, &bob, &on(ACCOUNT, &format!("b{n}@x.example"))).await;
        create_as(
            &app,
            &dave,
            &on(&daves[n * 4 % 17], &format!("d{n}@x.example")),
        )
        .await;
        if n % 2 == 0 {
            revoke.extend([id_of(&a), id_of(&b)]);
        }
    }
    create_as(&app, &dave, &on(&daves[3], "shared@x.example")).await;
    for id in &revoke {
        let res = app
            .as_admin(
                Method::POST,
                &format!("/invitations/revoked?invitation={id}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let everything = app
        .get_json(&app.admin(), &format!("{COLLECTION}?limit=1000"))
        .await;
    let everything = everything["_embedded"]["items"].as_array().unwrap().clone();
    assert_eq!(everything.len(), 17);
    let text = |item: &Value, field: &str| item[field].as_str().unwrap_or("").to_owned();
    let cases: [(&str, &Headers, Vec<&str>); 3] = [
        (ALICE, &alice, vec![ACCOUNT, ORG, &daves[3]]),
        (BOB, &bob, vec![ACCOUNT]),
        (DAVE, &dave, daves.iter().map(String::as_str).collect()),
    ];
    for (customer, headers, resources) in cases {
        let visible: Vec<&Value> = everything
            .iter()
            .filter(|item| {
                text(item, "customerId") == customer
                    || resources.contains(&text(item, "accountUri").as_str())
                    || resources.contains(&text(item, "organizationUri").as_str())
            })
            .collect();
        let sent: Vec<&Value> = visible
            .iter()
            .copied()
            .filter(|item| item["state"] == "sent")
            .collect();
        // Stable: ties stay in creation order, as the API breaks them.
        let mut by_state = visible.clone();
        by_state.sort_by_key(|item| std::cmp::Reverse(text(item, "state")));
        for (query, expected) in [
            ("", &visible),
            ("&filter=eq(state,sent)", &sent),
            ("&sortBy=-state", &by_state),
        ] {
            let expected: Vec<String> = expected.iter().map(|item| text(item, "_id")).collect();
            for limit in 1..=4 {
                let mut seen = Vec::new();
                let mut start = 0;
                while start <= expected.len() {
                    let page = app
                        .get_json(
                            headers,
                            &format!("{COLLECTION}?start={start}&limit={limit}{query}"),
                        )
                        .await;
                    assert_eq!(
                        page["count"],
                        expected.len(),
                        "{customer} {query} start={start} limit={limit}"
                    );
                    seen.extend(item_ids(&page));
                    start += limit;
                }
                assert_eq!(seen, expected, "{customer} {query} limit={limit}");
            }
        }
    }
}

async fn list_leaves_out_a_count_beyond_the_limit(backend: Backend) {
    let key = tandem::domain::sealed::SecretBox::generate_key();
    let secrets = tandem::domain::sealed::SecretBox::from_base64(&key).unwrap();
    let app = spawn_with(backend, |c| c.invitations.secret_key = Some(key)).await;
    let (first, _) = create(&app, "invitee@example.com").await;
    // 1000 more of Alice's invitations, written directly: 1001 match, one past the limit.
    let mut tx = app.db.write.begin().await.unwrap();
    for i in 1..=1000_i64 {
        let id = format!("copy-{i:04}");
        sqlx::query(
            "INSERT INTO invitations (id, type, state, email_address, account_uri, \
             inviter_full_name, sealed_secret, created_by, customer_id, revision, created_at, \
             updated_at, expires_at) \
             SELECT $2, type, state, email_address, account_uri, inviter_full_name, $3, \
             created_by, customer_id, revision, created_at + $4, updated_at, expires_at \
             FROM invitations WHERE id = $1",
        )
        .bind(id_of(&first))
        .bind(&id)
        .bind(secrets.seal(&id, SECRET))
        .bind(i)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(tandem::store::invitations::COUNT_LIMIT, 1000);
    for caller in [app.customer(ALICE), app.admin()] {
        let page = |query: &'static str| {
            let request = app.with(&caller, Method::GET, &format!("{COLLECTION}?{query}"));
            async move { json(request.send().await.unwrap()).await }
        };
        let full = page("state=sent&limit=10").await;
        assert_eq!(
            full["_embedded"]["items"].as_array().map(Vec::len),
            Some(10),
            "{full}"
        );
        assert!(full.get("count").is_none(), "{full}");
        assert!(full["_links"].get("last").is_none());
        assert_eq!(
            full["_links"]["next"]["href"],
            app.url("/invitations/invitations?state=sent&start=10&limit=10")
        );
        // A page that is not full is the last one: its count is known without counting.
        let end = page("state=sent&start=995&limit=10").await;
        assert_eq!(end["_embedded"]["items"].as_array().unwrap().len(), 6);
        assert_eq!(end["count"], 1001);
        assert!(end["_links"].get("next").is_none());
        assert_eq!(
            end["_links"]["last"]["href"],
            app.url("/invitations/invitations?state=sent&start=1000&limit=10")
        );
        let past = page("state=sent&start=2000&limit=10").await;
        assert!(past.get("count").is_none(), "{past}");
        assert!(past["_links"].get("next").is_none());
        let narrow = page("state=sent&filter=eq(emailAddress,nobody@example.com)&limit=10").await;
        assert_eq!(narrow["count"], 0);
    }
}

async fn list_answers_an_empty_page_for_the_largest_start(backend: Backend) {
    let app = spawn(backend).await;
    create(&app, "invitee@example.com").await;
    let res = app
        .with(
            &app.customer(ALICE),
            Method::GET,
            &format!("{COLLECTION}?start={}&limit=1", i64::MAX),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = json(res).await;
    assert_eq!(page["count"], 1);
    assert_eq!(page["start"], i64::MAX);
    assert_eq!(page["_embedded"]["items"], json!([]));
    assert!(page["_links"].get("next").is_none());
    assert_eq!(
        page["_links"]["last"]["href"],
        app.url("/invitations/invitations?start=0&limit=1")
    );
}

async fn list_checks_every_parameter_even_when_nothing_can_be_pending(backend: Backend) {
    let app = spawn(backend).await;
    let alice = app.customer(ALICE);
    // `state=sent` with `pendingInvitations=true` selects nothing, but a bad parameter beside
    // them is still a 400 naming it.
    for (bad, field) in [
        ("type=cousin", "type"),
        ("organizationUri=a%7C", "organizationUri"),
        ("emailAddress=nobody", "emailAddress"),
        ("filter=eq(", "filter"),
    ] {
        let res = app
            .with(
                &alice,
                Method::GET,
                &format!("{COLLECTION}?state=sent&pendingInvitations=true&{bad}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(
            json(res).await["_error"]["attributes"]["field"],
            field,
            "{bad}"
        );
    }
    let res = app
        .with(
            &alice,
            Method::GET,
            &format!("{COLLECTION}?state=sent&pendingInvitations=true"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["count"], 0);
}

async fn list_filters_sorts_and_searches(backend: Backend) {
    let app = spawn(backend).await;
    let alice = app.customer(ALICE);
    let (a, _) = create(&app, "ann@alpha.example").await;
    create(&app, "ben@beta.example").await;
    let signer = json!({"sharedSecret": SECRET, "type": "authorizedSigner", "organizationUri": ORG, "inviterFullName": "Alice", "emailAddress": "sig@alpha.example", "firstName": "Signe"});
    create_as(&app, &alice, &signer).await;
    let revoke = app
        .with(
            &alice,
            Method::POST,
            &format!("/invitations/revoked?invitation={}", id_of(&a)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let emails = |page: &Value| -> Vec<String> {
        page["_embedded"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["emailAddress"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = |query: &str| {
        let req = app.with(&alice, Method::GET, &listing(&[("filter", query)]));
        async move { json(req.send().await.unwrap()).await }
    };
    assert_eq!(
        emails(&get("eq(state,revoked)").await),
        ["ann@alpha.example"]
    );
    assert_eq!(
        emails(&get("ne(state,revoked)").await),
        ["ben@beta.example", "sig@alpha.example"]
    );
    assert_eq!(
        emails(&get("in(type,authorizedSigner|productPromotion)").await),
        ["sig@alpha.example"]
    );
    assert_eq!(
        emails(&get("and(contains(emailAddress,\"@ALPHA\"),eq(state,sent))").await),
        ["sig@alpha.example"]
    );
    assert_eq!(
        emails(&get("or(eq(emailAddress,ben@beta.example),search(emailAddress,sig))").await),
        ["ben@beta.example", "sig@alpha.example"]
    );
    assert_eq!(
        emails(&get(&format!("eq(accountUri,\"{ACCOUNT}\")")).await).len(),
        2
    );
    assert_eq!(
        emails(&get(&format!("eq(createdBy,user-{ALICE})")).await).len(),
        3
    );
    let bad = app
        .with(
            &alice,
            Method::GET,
            &listing(&[("filter", "eq(state,sent")]),
        )
        .send()
        .await
        .unwrap();
    let err = assert_error(bad, 400, "invalidQuery").await;
    assert!(
        err["_error"]["attributes"]["position"].as_u64().unwrap() > 0,
        "{err}"
    );
    let bad = app
        .with(
            &alice,
            Method::GET,
            &listing(&[("filter", "contains(state,se)")]),
        )
        .send()
        .await
        .unwrap();
    let err = assert_error(bad, 400, "invalidQuery").await;
    assert!(
        err["_error"]["message"]
            .as_str()
            .unwrap()
            .contains("position"),
        "{err}"
    );
    let sorted = app
        .get_json(&alice, &listing(&[("sortBy", "type,-state")]))
        .await;
    assert_eq!(
        emails(&sorted),
        ["sig@alpha.example", "ben@beta.example", "ann@alpha.example"]
    );
    let bad = app
        .with(&alice, Method::GET, &listing(&[("sortBy", "emailAddress")]))
        .send()
        .await
        .unwrap();
    assert_error(bad, 400, "invalidQuery").await;
    // q: names, email and inviter; subset parameters with alternatives.
    let found = app.get_json(&alice, &listing(&[("q", "SIGNE")])).await;
    assert_eq!(emails(&found), ["sig@alpha.example"]);
    let found = app.get_json(&alice, &listing(&[("q", "100%")])).await;
    assert_eq!(found["count"], 0, "wildcards are literal");
    let found = app
        .get_json(
            &alice,
            &listing(&[
                ("emailAddress", "BEN@beta.example|sig@alpha.example"),
                ("state", "sent"),
            ]),
        )
        .await;
    assert_eq!(emails(&found), ["ben@beta.example", "sig@alpha.example"]);
    let found = app
        .get_json(&alice, &listing(&[("organizationUri", ORG)]))
        .await;
    assert_eq!(emails(&found), ["sig@alpha.example"]);
    let found = app
        .get_json(
            &alice,
            &listing(&[("type", "joint"), ("accountUri", ACCOUNT)]),
        )
        .await;
    assert_eq!(found["count"], 2);
    let pending = app
        .get_json(&alice, &listing(&[("pendingInvitations", "true")]))
        .await;
    assert_eq!(pending["count"], 0);
}

/// Frank holds 16 accounts, the most a customer's list reads one by one: his list is the union
/// of 33 index walks (his own invitations, and each account's as an account and as an
/// organization), each with the request's conditions.
const FRANK: &str = "customer-frank";

async fn spawn_with_franks_accounts(backend: Backend) -> (TestApp, Vec<String>) {
    let app = spawn(backend).await;
    let accounts: Vec<String> = (0..16)
        .map(|n| format!("https://api.bank.example/accounts/account/frank-{n:02}"))
        .collect();
    let row = |customer: &str, uri: &str| Entitlement {
        customer_id: customer.into(),
        resource_uri: uri.into(),
        role: "owner".into(),
        joint_owners_disabled: false,
    };
    let mut held: Vec<Entitlement> = accounts.iter().map(|uri| row(FRANK, uri)).collect();
    held.push(row(ALICE, ACCOUNT));
    TableEntitlements::new(app.db.clone())
        .replace_all(&held)
        .await
        .unwrap();
    (app, accounts)
}

/// `count` different values, `prefix` and three digits each.
fn distinct(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n:03}")).collect()
}

async fn list_refuses_values_over_the_caps_with_400_naming_the_parameter(backend: Backend) {
    let (app, accounts) = spawn_with_franks_accounts(backend).await;
    let frank = app.customer(FRANK);
    let mut body = joint("first@erin.example");
    body["accountUri"] = json!(accounts[0]);
    let (first, _) = create_as(&app, &frank, &body).await;
    let get = |pairs: &[(&str, &str)]| app.with(&frank, Method::GET, &listing(pairs)).send();

    // in(): at most 100 different values; the error points at the first one too many.
    let over_in = format!("in(type,{})", distinct("v", 101).join("|"));
    let res = get(&[("filter", &over_in)]).await.unwrap();
    let err = assert_error(res, 400, "invalidQuery").await;
    assert_eq!(err["_error"]["attributes"]["field"], "filter", "{err}");
    assert_eq!(
        err["_error"]["attributes"]["position"],
        over_in.find("v100").unwrap() + 1,
        "{err}"
    );
    // At most 100 comparisons in one filter.
    let comparisons = |n: usize| {
        let each: Vec<String> = (0..n).map(|i| format!("eq(type,v{i})")).collect();
        format!("or({})", each.join(","))
    };
    let res = get(&[("filter", &comparisons(101))]).await.unwrap();
    let err = assert_error(res, 400, "invalidQuery").await;
    assert_eq!(err["_error"]["attributes"]["field"], "filter", "{err}");
    let res = get(&[("filter", &comparisons(100))]).await.unwrap();
    assert_eq!(res.status(), 200);
    // Within every cap, five in()s of 100 values bind 500 values, over the statement's budget
    // of 400.
    let in_100 = format!("in(type,{})", distinct("v", 100).join("|"));
    let over_budget = format!("or({})", [in_100.as_str(); 5].join(","));
    let res = get(&[("filter", &over_budget)]).await.unwrap();
    let err = assert_error(res, 400, "invalidQuery").await;
    assert_eq!(err["_error"]["attributes"]["field"], "filter", "{err}");
    assert!(
        err["_error"]["message"].as_str().unwrap().contains("400"),
        "{err}"
    );
    // Subset parameters: at most 100 different alternatives each.
    let emails = distinct("e", 101)
        .iter()
        .map(|e| format!("{e}@erin.example"))
        .collect::<Vec<_>>()
        .join("|");
    let uris = distinct("https://api.bank.example/accounts/account/x", 101).join("|");
    for (parameter, value) in [
        ("emailAddress", &emails),
        ("accountUri", &uris),
        ("organizationUri", &uris),
    ] {
        let res = get(&[(parameter, value)]).await.unwrap();
        let err = assert_error(res, 400, "invalidQuery").await;
        assert_eq!(err["_error"]["attributes"]["field"], parameter, "{err}");
    }
    // Repeated values count once: 2000 copies of one value in in(), 500 of one alternative.
    let copies = format!("in(type,joint{})", "|x".repeat(2000));
    let copied_email = vec!["FIRST@erin.example"; 500].join("|");
    for pairs in [
        [("filter", copies.as_str()), ("state", "sent|sent|sent")],
        [
            ("emailAddress", copied_email.as_str()),
            ("type", "joint|joint"),
        ],
    ] {
        let page = app.get_json(&frank, &listing(&pairs)).await;
        assert_eq!(item_ids(&page), [id_of(&first)], "{:?}", pairs[1]);
    }
}

async fn a_large_filter_within_the_caps_lists_exactly_the_matches(backend: Backend) {
    let (app, accounts) = spawn_with_franks_accounts(backend).await;
    let frank = app.customer(FRANK);
    let mut ids = Vec::new();
    for n in 0..6 {
        let mut body = joint(&format!("a{n}@erin.example"));
        body["accountUri"] = json!(accounts[n * 5 % 16]);
        ids.push(id_of(&create_as(&app, &frank, &body).await.0));
    }
    // Alice's invitation with a matching address, on an account Frank does not hold.
    create(&app, "a0@erin.example").await;
    let revoke = app
        .with(
            &frank,
            Method::POST,
            &format!("/invitations/revoked?invitation={}", ids[2]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    // 300 type values, four comparisons on the address and a state: 305 values in the filter,
    // 80 more in `emailAddress`, under the budget of 400.
    let types = |prefix: &str| {
        let mut values = distinct(prefix, 99);
        values.push("joint".into());
        format!("in(type,{})", values.join("|"))
    };
    let filter = format!(
        "and(or({},{},{}),not(eq(state,revoked)),or(eq(emailAddress,a0@erin.example),\
         eq(emailAddress,a2@erin.example),contains(emailAddress,\"A4@\"),search(emailAddress,a5)))",
        types("p"),
        types("q"),
        types("r")
    );
    let mut emails: Vec<String> = (0..6).map(|n| format!("a{n}@erin.example")).collect();
    emails.extend(
        distinct("other", 74)
            .iter()
            .map(|e| format!("{e}@erin.example")),
    );
    assert_eq!(emails.len(), 80);
    let emails = emails.join("|");
    for limit in ["1", "100"] {
        let mut seen = Vec::new();
        let mut start = 0;
        loop {
            let start_text = start.to_string();
            let page = app
                .get_json(
                    &frank,
                    &listing(&[
                        ("filter", &filter),
                        ("emailAddress", &emails),
                        ("start", &start_text),
                        ("limit", limit),
                    ]),
                )
                .await;
            assert_eq!(page["count"], 3, "limit {limit}: {page}");
            let items = item_ids(&page);
            if items.is_empty() {
                break;
            }
            start += items.len();
            seen.extend(items);
        }
        assert_eq!(
            seen,
            [ids[0].clone(), ids[4].clone(), ids[5].clone()],
            "limit {limit}"
        );
    }
}

// ---- actions --------------------------------------------------------------------------

async fn revoke_is_idempotent_honours_if_match_and_refuses_other_states(backend: Backend) {
    let app = spawn(backend).await;
    let alice = app.customer(ALICE);
    let (created, etag) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let revoke = format!("/invitations/revoked?invitation={id}");
    let res = app
        .with(&alice, Method::POST, &revoke)
        .header("If-Match", "\"r9\"")
        .send()
        .await
        .unwrap();
    assert_error(res, 412, "preconditionFailed").await;
    let res = app
        .with(&alice, Method::POST, &revoke)
        .header("If-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let new_tag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_tag, etag);
    let body = json(res).await;
    assert_eq!(body["state"], "revoked");
    assert_eq!(
        body["_links"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["self"]
    );
    let res = app
        .with(&alice, Method::POST, &revoke)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["etag"].to_str().unwrap(),
        new_tag,
        "no change"
    );
    // Accepted invitations cannot be revoked.
    let (other, _) = create(&app, "other@example.com").await;
    assert_eq!(
        verify(&app, &id_of(&other), SECRET, "10.0.0.1")
            .await
            .status(),
        200
    );
    let res = app
        .with(
            &alice,
            Method::POST,
            &format!("/invitations/revoked?invitation={}", id_of(&other)),
        )
        .send()
        .await
        .unwrap();
    let err = assert_error(res, 409, "verificationInvitationNotRevokable").await;
    assert!(
        err["_error"]["remediation"]
            .as_str()
            .unwrap()
            .contains("sent state")
    );
    let res = app
        .with(&alice, Method::POST, "/invitations/revoked")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "badRequest").await;
    let res = app
        .with(
            &alice,
            Method::POST,
            "/invitations/revoked?invitation=no-such-invitation",
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "notFound").await;
}

async fn resend_queues_a_new_email_up_to_the_limit(backend: Backend) {
    let app = spawn_with(backend, |c| c.invitations.resend_limit = 2).await;
    let alice = app.customer(ALICE);
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let send = format!("/invitations/sent?invitation={id}");
    let res = app
        .with(&alice, Method::POST, &send)
        .header("Accept-Language", "es")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(json(res).await["_links"].get("apiture:send").is_some());
    let res = app.with(&alice, Method::POST, &send).send().await.unwrap();
    assert!(
        json(res).await["_links"].get("apiture:send").is_none(),
        "no resends left"
    );
    let res = app.with(&alice, Method::POST, &send).send().await.unwrap();
    assert_error(res, 409, "invitationResendLimitReached").await;
    let mail = outbox(&app).await;
    assert_eq!(
        mail.iter().map(|(_, l, _)| l.as_str()).collect::<Vec<_>>(),
        ["en", "es", "en"]
    );
    assert!(
        mail.iter()
            .all(|(to, _, p)| to == "max@example.com" && p["invitationId"] == id.as_str())
    );
    let (other, _) = create(&app, "o@example.com").await;
    app.with(
        &alice,
        Method::POST,
        &format!("/invitations/revoked?invitation={}", id_of(&other)),
    )
    .send()
    .await
    .unwrap();
    let res = app
        .with(
            &alice,
            Method::POST,
            &format!("/invitations/sent?invitation={}", id_of(&other)),
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "invitationNotResendable").await;
    assert_eq!(
        outbox(&app).await.len(),
        4,
        "a refused resend sends nothing"
    );
}

async fn complete_is_for_staff_from_accepted_only(backend: Backend) {
    let app = spawn(backend).await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let complete = format!("/invitations/completed?invitation={id}");
    let res = app
        .with(&app.customer(ALICE), Method::POST, &complete)
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
    let res = app
        .with(&app.admin(), Method::POST, &complete)
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "invitationNotCompletable").await;
    assert_eq!(verify(&app, &id, SECRET, "10.0.0.1").await.status(), 200);
    let staff_view = app
        .get_json(&app.admin(), &format!("{COLLECTION}/{id}"))
        .await;
    assert_eq!(
        staff_view["_links"]["apiture:complete"]["href"],
        app.url(&complete)
    );
    let pending = app
        .get_json(
            &app.customer(ALICE),
            &format!("{COLLECTION}?pendingInvitations=true"),
        )
        .await;
    assert_eq!(pending["count"], 1);
    let res = app
        .with(&app.admin(), Method::POST, &complete)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["state"], "completed");
    let res = app
        .with(&app.admin(), Method::POST, &complete)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "idempotent");
}

async fn delete_answers_204_then_404(backend: Backend) {
    let app = spawn(backend).await;
    let (created, etag) = create(&app, "max@example.com").await;
    let path = format!("{COLLECTION}/{}", id_of(&created));
    let alice = app.customer(ALICE);
    let res = app
        .with(&alice, Method::DELETE, &path)
        .header("If-Match", "\"r7\"")
        .send()
        .await
        .unwrap();
    assert_error(res, 412, "preconditionFailed").await;
    let res = app
        .with(&alice, Method::DELETE, &path)
        .header("If-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app.with(&alice, Method::GET, &path).send().await.unwrap();
    assert_error(res, 404, "notFound").await;
    let res = app
        .with(&alice, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "notFound").await;
}

/// `If-Match` on a delete holds for the row deleted: a delete on a tag that a concurrent change
/// has just made old is refused, so a change and a delete made on the same tag never both land.
async fn a_delete_on_an_old_tag_never_follows_a_concurrent_change(backend: Backend) {
    let app = spawn(backend).await;
    let alice = app.customer(ALICE);
    for round in 0..40 {
        let (created, etag) = create(&app, &format!("race{round}@example.com")).await;
        let path = format!("{COLLECTION}/{}", id_of(&created));
        let patch = app
            .with(&alice, Method::PATCH, &path)
            .header("If-Match", &etag)
            .json(&json!({"sharedSecret": "purple parrot pie"}))
            .send();
        let delete = app
            .with(&alice, Method::DELETE, &path)
            .header("If-Match", &etag)
            .send();
        let (patched, deleted) = tokio::join!(patch, delete);
        let (patched, deleted) = (patched.unwrap().status(), deleted.unwrap().status());
        match (patched.as_u16(), deleted.as_u16()) {
            (200, 412) | (404, 204) => {}
            other => panic!("round {round}: PATCH and DELETE on one tag answered {other:?}"),
        }
    }
    // The tag of an invitation whose expiry is derived on read deletes it too.
    let (created, _) = create(&app, "expired@example.com").await;
    let id = id_of(&created);
    set_expiry(&app, &id, 1).await;
    let path = format!("{COLLECTION}/{id}");
    let res = app.with(&alice, Method::GET, &path).send().await.unwrap();
    let expired_tag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(json(res).await["state"], "expired");
    let res = app
        .with(&alice, Method::DELETE, &path)
        .header("If-Match", &expired_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

async fn patch_changes_the_secret_while_sent(backend: Backend) {
    let app = spawn_with(backend, trusting_proxies).await;
    let alice = app.customer(ALICE);
    let (created, etag) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let path = format!("{COLLECTION}/{id}");
    let new_secret = json!({"sharedSecret": "purple parrot pie"});
    let res = app
        .with(&alice, Method::PATCH, &path)
        .header("If-Match", "\"r5\"")
        .json(&new_secret)
        .send()
        .await
        .unwrap();
    assert_error(res, 412, "preconditionFailed").await;
    let res = app
        .with(&alice, Method::PATCH, &path)
        .json(&json!({"sharedSecret": "short"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalidValue").await;
    // HAL members must have their documented types even though they are otherwise ignored.
    for body in [
        json!({"sharedSecret": "purple parrot pie", "_profile": {}}),
        json!({"sharedSecret": "purple parrot pie", "_links": "self"}),
    ] {
        let res = app
            .with(&alice, Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let res = app
        .with(&alice, Method::PATCH, &path)
        .header("If-Match", &etag)
        .json(&new_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["sharedSecret"], "purple parrot pie");
    assert_eq!(
        verify(&app, &id, SECRET, "10.0.0.1").await.status(),
        400,
        "the old secret no longer works"
    );
    assert_eq!(
        verify(&app, &id, "purple parrot pie", "10.0.0.1")
            .await
            .status(),
        200
    );
    let res = app
        .with(&alice, Method::PATCH, &path)
        .json(&new_secret)
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "invitationNotUpdatable").await;
}

// ---- links --------------------------------------------------------------------------

/// Every `href` in a HAL body, with its relation.
fn hrefs(body: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![("", body)];
    while let Some((key, value)) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(href)) = map.get("href") {
                    found.push((key.to_owned(), href.clone()));
                }
                stack.extend(map.iter().map(|(k, v)| (k.as_str(), v)));
            }
            Value::Array(items) => stack.extend(items.iter().map(|v| (key, v))),
            _ => {}
        }
    }
    found
}

/// Sends requests of every response kind of the API (root, labels, list pages, create, get as
/// inviter, joint owner and staff, each action, verification, and HAL errors) through `send`,
/// and asserts that each `href` is an absolute URI under `base`. The accept page's link goes
/// into email and so always starts with the configured (or listening) address instead.
async fn assert_every_href_is_absolute_under(
    app: &TestApp,
    base: &str,
    send: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) {
    let (alice, bob, staff) = (app.customer(ALICE), app.customer(BOB), app.admin());
    let mut bodies: Vec<(String, Value)> = Vec::new();
    let mut call =
        async |who: Option<&Headers>, method: Method, path: &str, body: Option<Value>| {
            let request = match who {
                Some(who) => app.with(who, method.clone(), path),
                None => app.client.request(method.clone(), app.url(path)),
            };
            let request = match &body {
                Some(body) => request.json(body),
                None => request,
            };
            let res = send(request).send().await.unwrap();
            let status = res.status();
            let json = json(res).await;
            bodies.push((format!("{method} {path} -> {status}"), json.clone()));
            json
        };
    let created = call(
        Some(&alice),
        Method::POST,
        COLLECTION,
        Some(joint("a@example.com")),
    )
    .await;
    let id = id_of(&created);
    let other = id_of(
        &call(
            Some(&alice),
            Method::POST,
            COLLECTION,
            Some(joint("b@example.com")),
        )
        .await,
    );
    call(
        Some(&alice),
        Method::POST,
        COLLECTION,
        Some(joint("c@example.com")),
    )
    .await;
    let one = format!("{COLLECTION}/{id}");
    call(Some(&alice), Method::GET, "/invitations/", None).await;
    call(Some(&alice), Method::GET, "/invitations/labels", None).await;
    call(
        Some(&alice),
        Method::GET,
        &listing(&[("start", "1"), ("limit", "1")]),
        None,
    )
    .await;
    call(
        Some(&staff),
        Method::GET,
        &listing(&[("filter", "eq(state,sent)")]),
        None,
    )
    .await;
    call(Some(&alice), Method::GET, &one, None).await;
    call(Some(&bob), Method::GET, &one, None).await;
    call(Some(&staff), Method::GET, &one, None).await;
    call(
        Some(&alice),
        Method::PATCH,
        &one,
        Some(json!({"sharedSecret": SECRET})),
    )
    .await;
    call(
        Some(&alice),
        Method::POST,
        &format!("/invitations/sent?invitation={id}"),
        None,
    )
    .await;
    call(
        Some(&alice),
        Method::POST,
        &format!("/invitations/revoked?invitation={other}"),
        None,
    )
    .await;
    let accept = json!({"invitationId": id, "sharedSecret": SECRET});
    call(
        None,
        Method::POST,
        "/invitations/verifications",
        Some(accept),
    )
    .await;
    call(Some(&staff), Method::GET, &one, None).await;
    call(
        Some(&staff),
        Method::POST,
        &format!("/invitations/completed?invitation={id}"),
        None,
    )
    .await;
    // Errors: 400, 401, 403, 404, 409.
    call(
        Some(&alice),
        Method::GET,
        &listing(&[("filter", "eq(nope,1)")]),
        None,
    )
    .await;
    call(None, Method::GET, COLLECTION, None).await;
    call(
        Some(&bob),
        Method::POST,
        &format!("/invitations/revoked?invitation={id}"),
        None,
    )
    .await;
    call(
        Some(&alice),
        Method::GET,
        &format!("{COLLECTION}/0b0fa3d2-missing"),
        None,
    )
    .await;
    call(
        Some(&alice),
        Method::POST,
        &format!("/invitations/revoked?invitation={id}"),
        None,
    )
    .await;
    let mut relations = std::collections::BTreeSet::new();
    for (request, body) in &bodies {
        let found = hrefs(body);
        assert!(!found.is_empty(), "{request}: no links in {body}");
        for (rel, href) in found {
            let url = reqwest::Url::parse(&href)
                .unwrap_or_else(|e| panic!("{request}: {rel} {href:?} is not absolute: {e}"));
            assert!(url.has_host(), "{request}: {rel} {href}");
            let expected = if rel == "apiture:acceptInvitationUserExperience" {
                app.config.public_url.as_deref().unwrap_or(&app.base)
            } else {
                base
            };
            assert!(
                href.starts_with(expected.trim_end_matches('/')),
                "{request}: {rel} {href} is not under {expected}"
            );
            relations.insert(rel);
        }
    }
    for rel in [
        "self",
        "first",
        "prev",
        "next",
        "last",
        "collection",
        "describedby",
        "apiture:invitations",
        "apiture:revoke",
        "apiture:send",
        "apiture:complete",
        "apiture:invitation",
        "apiture:acceptInvitationUserExperience",
    ] {
        assert!(
            relations.contains(rel),
            "no {rel} link was checked: {relations:?}"
        );
    }
}

/// The seed types `link.href` as an absolute URI: hrefs start with `public_url` when it is
/// configured, else with the request's own origin (the proxy's, when it is trusted).
async fn every_href_is_an_absolute_uri(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.public_url = Some("https://bank.example/".into())
    })
    .await;
    assert_every_href_is_absolute_under(&app, "https://bank.example/", |r| {
        r.header("X-Forwarded-Host", "evil.example")
    })
    .await;
    let app = spawn_with(backend, trusting_proxies).await;
    assert_every_href_is_absolute_under(&app, "https://api.bank.example/", |r| {
        r.header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "api.bank.example")
    })
    .await;
    let app = spawn(backend).await;
    let base = app.base.clone();
    assert_every_href_is_absolute_under(&app, &base, |r| {
        r.header("X-Forwarded-Host", "evil.example")
    })
    .await;
}

// ---- verification ---------------------------------------------------------------------

async fn verify_counts_attempts_and_accepts_once(backend: Backend) {
    let app = spawn_with(backend, trusting_proxies).await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let res = verify(&app, &id, "wrong wrong wrong", "10.0.0.1").await;
    let err = assert_error(res, 400, "verificationFailed").await;
    assert!(
        !err.to_string().contains("sharedSecret"),
        "does not say what was wrong"
    );
    let res = verify(&app, "no-such-invitation", SECRET, "10.0.0.1").await;
    assert_error(res, 400, "verificationFailed").await;
    let res = app
        .client
        .post(app.url("/invitations/verifications"))
        .json(&json!({"invitationId": id}))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "badRequest").await;
    // Two correct verifications at once: exactly one accepts.
    let (a, b) = tokio::join!(
        verify(&app, &id, SECRET, "10.0.0.2"),
        verify(&app, &id, SECRET, "10.0.0.3")
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let view = app
        .get_json(&app.customer(ALICE), &format!("{COLLECTION}/{id}"))
        .await;
    assert_eq!(view["state"], "accepted");
    assert_eq!(
        view["verificationCount"], 2,
        "one wrong, one right; the refused one never compared"
    );
    assert!(
        view["_links"]
            .get("apiture:acceptInvitationUserExperience")
            .is_none()
    );
    let res = verify(&app, &id, SECRET, "10.0.0.4").await;
    assert_error(res, 409, "verificationInvitationNotSent").await;
}

async fn verify_refuses_revoked_expired_and_locked_invitations(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.invitations.trust_forwarded_for = true;
        c.invitations.max_failed_verifications = 3;
    })
    .await;
    let alice = app.customer(ALICE);
    let (revoked, _) = create(&app, "r@example.com").await;
    app.with(
        &alice,
        Method::POST,
        &format!("/invitations/revoked?invitation={}", id_of(&revoked)),
    )
    .send()
    .await
    .unwrap();
    let err = assert_error(
        verify(&app, &id_of(&revoked), SECRET, "10.0.0.1").await,
        409,
        "verificationInvitationRevoked",
    )
    .await;
    assert!(
        err["_error"]["remediation"]
            .as_str()
            .unwrap()
            .contains("latest invitation email")
    );

    let (expired, etag) = create(&app, "e@example.com").await;
    let id = id_of(&expired);
    set_expiry(&app, &id, 1_000).await;
    assert_error(
        verify(&app, &id, SECRET, "10.0.0.1").await,
        409,
        "verificationInvitationExpired",
    )
    .await;
    let res = app
        .with(&alice, Method::GET, &format!("{COLLECTION}/{id}"))
        .send()
        .await
        .unwrap();
    let derived_tag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(derived_tag, etag);
    let view = json(res).await;
    assert_eq!(view["state"], "expired", "derived on read");
    assert_eq!(view["_links"].as_object().unwrap().len(), 1);
    let res = app
        .with(
            &alice,
            Method::POST,
            &format!("/invitations/revoked?invitation={id}"),
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "verificationInvitationNotRevokable").await;
    let listed = app
        .get_json(&alice, &format!("{COLLECTION}?state=expired"))
        .await;
    assert_eq!(listed["count"], 1);
    // The filter language sees the derived state too, for customers and for staff, whose
    // lists are also confined by the stored state (served by the state indexes).
    let (fresh, _) = create(&app, "fresh@example.com").await;
    for (who, caller) in [("customer", &alice), ("staff", &app.admin())] {
        for (filter, expected) in [
            ("eq(state,expired)", vec![id.clone()]),
            ("eq(state,sent)", vec![id_of(&fresh)]),
            ("ne(state,sent)", vec![id.clone()]),
            ("ne(state,expired)", vec![id_of(&fresh)]),
            ("in(state,expired|sent)", vec![id.clone(), id_of(&fresh)]),
            (
                "and(in(state,expired|revoked),eq(state,expired))",
                vec![id.clone()],
            ),
            ("eq(state,lost)", vec![]),
        ] {
            let page = app
                .get_json(
                    caller,
                    &format!("{COLLECTION}?filter={filter}&state=sent|expired"),
                )
                .await;
            let found = item_ids(&page);
            assert_eq!(found, expected, "{who}: {filter}");
            assert_eq!(page["count"], expected.len(), "{who}: {filter}");
        }
        // Sorting sees it as well: the stored `sent` sorts as `expired`, before `sent`.
        for (sort, expected) in [
            ("state", [id.clone(), id_of(&fresh)]),
            ("-state", [id_of(&fresh), id.clone()]),
        ] {
            let page = app
                .get_json(
                    caller,
                    &format!("{COLLECTION}?sortBy={sort}&state=sent|expired"),
                )
                .await;
            let found = item_ids(&page);
            assert_eq!(found, expected, "{who}: sortBy={sort}");
        }
    }

    let (locked, _) = create(&app, "l@example.com").await;
    let id = id_of(&locked);
    for _ in 0..3 {
        assert_eq!(
            verify(&app, &id, "not the secret", "10.0.0.5")
                .await
                .status(),
            400
        );
    }
    assert_error(
        verify(&app, &id, SECRET, "10.0.0.6").await,
        409,
        "verificationInvitationLocked",
    )
    .await;
    let view = app.get_json(&alice, &format!("{COLLECTION}/{id}")).await;
    assert_eq!(view["verificationCount"], 3);
    assert_eq!(view["state"], "sent");
    // A new secret lifts the lock.
    let res = app
        .with(&alice, Method::PATCH, &format!("{COLLECTION}/{id}"))
        .json(&json!({"sharedSecret": "a fresh new secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        verify(&app, &id, "a fresh new secret", "10.0.0.6")
            .await
            .status(),
        200
    );
}

async fn a_thousand_wrong_secrets_from_one_address_get_429_and_never_accept(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.invitations.trust_forwarded_for = true;
        c.invitations.verify_max_attempts_per_ip = 4;
        c.invitations.max_failed_verifications = 5;
    })
    .await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let mut statuses = std::collections::BTreeMap::new();
    let mut retry_after = None;
    for i in 0..1000 {
        let res = verify(&app, &id, &format!("guess number {i}"), "203.0.113.7").await;
        if res.status() == 429 {
            retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        }
        *statuses.entry(res.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(400, 4), (429, 996)].into_iter().collect());
    assert!(retry_after.unwrap() > 0);
    // Even the right secret from the blocked address is refused.
    assert_eq!(verify(&app, &id, SECRET, "203.0.113.7").await.status(), 429);
    let view = app
        .get_json(&app.customer(ALICE), &format!("{COLLECTION}/{id}"))
        .await;
    assert_eq!(view["state"], "sent", "never accepted");
    assert_eq!(
        view["verificationCount"], 4,
        "blocked attempts never reach the invitation"
    );
    // The block is in the database: another instance's counter refuses the address too.
    use tandem::store::attempts::{AttemptCounter, SqlAttempts};
    let limit = tandem::domain::attempts::AttemptLimit {
        max_attempts: 4,
        window_ms: 300_000,
        block_ms: 900_000,
    };
    let now = tandem::domain::time::Timestamp::now().millis();
    let other_instance = SqlAttempts::new(app.db.clone());
    assert!(
        other_instance
            .try_attempt("203.0.113.7", limit, now)
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        other_instance
            .try_attempt("198.51.100.99", limit, now)
            .await
            .unwrap()
            .is_ok()
    );
    // Another address, with the invitation still under its lock threshold, succeeds.
    let res = verify(&app, &id, SECRET, "198.51.100.20").await;
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert_eq!(body["invitationId"], id.as_str());
}

/// Twenty verifications at once from one new address, against an allowance of three: exactly
/// three are counted and reach the invitation, the other seventeen get 429 (the count is one
/// atomic statement, not a read and a write that concurrent requests interleave).
async fn parallel_attempts_from_a_new_address_are_counted_exactly(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.invitations.trust_forwarded_for = true;
        c.invitations.verify_max_attempts_per_ip = 3;
        c.invitations.max_failed_verifications = 1000;
    })
    .await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    for round in 0..3 {
        let address = format!("203.0.113.{}", 60 + round);
        let guesses: Vec<String> = (0..20).map(|i| format!("guess {round}.{i}")).collect();
        let attempts = guesses
            .iter()
            .map(|guess| verify(&app, &id, guess, &address));
        let mut statuses = std::collections::BTreeMap::new();
        for res in futures_util::future::join_all(attempts).await {
            *statuses.entry(res.status().as_u16()).or_insert(0) += 1;
        }
        assert_eq!(
            statuses,
            [(400, 3), (429, 17)].into_iter().collect(),
            "20 parallel attempts from {address}"
        );
    }
    let view = app
        .get_json(&app.customer(ALICE), &format!("{COLLECTION}/{id}"))
        .await;
    assert_eq!(view["verificationCount"], 9, "three per address reached it");
}

/// The database's counting rule is the domain's: the same verdicts, attempt by attempt, through
/// windows that end, blocks that start and end, and attempts while blocked.
async fn the_stored_count_follows_the_attempt_rule(backend: Backend) {
    use tandem::domain::attempts::{AttemptLimit, Attempts};
    use tandem::store::attempts::{AttemptCounter, SqlAttempts};
    let app = spawn(backend).await;
    let counter = SqlAttempts::new(app.db.clone());
    let limit = AttemptLimit {
        max_attempts: 3,
        window_ms: 60_000,
        block_ms: 300_000,
    };
    // Steps chosen to land before, on and after the ends of windows and blocks.
    let steps = [0, 1, 999, 20_000, 59_999, 60_000, 120_001, 299_999, 300_000];
    let mut model = Attempts::default();
    let mut now = 1_700_000_000_000_i64;
    let mut seed = 0x2545_f491_u64;
    for attempt in 0..300 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        now += steps[(seed >> 33) as usize % steps.len()];
        let expected = model.try_attempt(limit, now);
        let stored = counter
            .try_attempt("198.51.100.77", limit, now)
            .await
            .unwrap();
        assert_eq!(stored, expected, "attempt {attempt} at {now}");
    }
}

/// Every attempt's key in the per-address table, in order.
async fn attempt_keys(app: &TestApp) -> Vec<String> {
    sqlx::query("SELECT client FROM verification_attempts ORDER BY client")
        .fetch_all(&app.db.read)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("client"))
        .collect()
}

/// With `trust_forwarded_for`, the address is the last entry of the last `X-Forwarded-For`
/// line (the one the proxy added), with any port or brackets taken off; when that entry is
/// not an address, the TCP peer, never an earlier entry the client may have written itself.
async fn the_forwarded_address_is_the_entry_the_proxy_added(backend: Backend) {
    let app = spawn_with(backend, trusting_proxies).await;
    let peer = "127.0.0.1";
    let cases: &[(&[&str], &str)] = &[
        (&["198.51.100.1, 203.0.113.9"], "203.0.113.9"),
        (&["198.51.100.1, 203.0.113.9:4711"], "203.0.113.9"),
        (&["198.51.100.1, [2001:db8::1]"], "2001:db8::/64"),
        (
            &["198.51.100.1, [2001:db8:0:1::7]:443"],
            "2001:db8:0:1::/64",
        ),
        (
            &["198.51.100.1,2001:db8:aa:bb:cc:dd:ee:ff"],
            "2001:db8:aa:bb::/64",
        ),
        (&["198.51.100.1, ::ffff:203.0.113.11"], "203.0.113.11"),
        (&["198.51.100.1, unknown"], peer),
        (&["198.51.100.1, _hidden"], peer),
        (&["198.51.100.1,"], peer),
        (&["198.51.100.1, 203.0.113.9:http"], peer),
        (&["198.51.100.1", "203.0.113.10"], "203.0.113.10"),
        (&["198.51.100.1", "203.0.113.10, unknown"], peer),
    ];
    for (lines, key) in cases {
        sqlx::query("DELETE FROM verification_attempts")
            .execute(&app.db.write)
            .await
            .unwrap();
        let mut request = app
            .client
            .post(app.url("/invitations/verifications"))
            .json(&json!({ "invitationId": "no-such-invitation", "sharedSecret": SECRET }));
        for line in *lines {
            request = request.header("X-Forwarded-For", *line);
        }
        assert_eq!(request.send().await.unwrap().status(), 400, "{lines:?}");
        assert_eq!(
            attempt_keys(&app).await,
            [*key],
            "X-Forwarded-For: {lines:?}"
        );
    }
}

/// One subscriber usually holds a whole IPv6 /64: addresses in it share one allowance, and an
/// IPv4-mapped IPv6 address shares its IPv4 address's.
async fn addresses_in_one_ipv6_64_share_an_allowance(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.invitations.trust_forwarded_for = true;
        c.invitations.verify_max_attempts_per_ip = 1;
    })
    .await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    for (from, status) in [
        ("2001:db8:1:2::1", 400),
        ("2001:db8:1:2:ffff:ffff:ffff:9", 429),
        ("2001:db8:1:3::1", 400),
        ("::ffff:198.51.100.7", 400),
        ("198.51.100.7", 429),
    ] {
        let res = verify(&app, &id, "not the secret", from).await;
        assert_eq!(res.status().as_u16(), status, "from {from}");
    }
}

// ---- expiry sweeper -------------------------------------------------------------------

async fn the_sweeper_persists_expiry_without_changing_the_entity_tag(backend: Backend) {
    let app = spawn_with(backend, |c| c.invitations.sweep_interval_secs = 1).await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    set_expiry(&app, &id, 5_000).await;
    let path = format!("{COLLECTION}/{id}");
    let before = app
        .with(&app.customer(ALICE), Method::GET, &path)
        .send()
        .await
        .unwrap();
    let tag = before.headers()["etag"].to_str().unwrap().to_owned();
    let mut stored = String::new();
    // A sweep every second; a busy machine may take several.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        stored = sqlx::query("SELECT state FROM invitations WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db.read)
            .await
            .unwrap()
            .get("state");
        if stored == "expired" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stored, "expired");
    let after = app
        .with(&app.customer(ALICE), Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(after.headers()["etag"].to_str().unwrap(), tag);
    let res = app
        .with(&app.customer(ALICE), Method::GET, &path)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
}

// ---- root, labels, document, accept page ----------------------------------------------

async fn root_labels_and_api_document(backend: Backend) {
    let app = spawn(backend).await;
    let alice = app.customer(ALICE);
    let root = app.get_json(&alice, "/invitations/").await;
    assert_eq!(
        root["_links"]["apiture:invitations"]["href"],
        app.url(COLLECTION)
    );
    assert_eq!(root["apiVersion"], "0.7.1");
    let res = app
        .with(&alice, Method::GET, "/invitations/labels")
        .header("Accept-Language", "es-ES,es;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-language"], "es");
    let labels = json(res).await;
    assert_eq!(
        labels["groups"]["invitationState"]["sent"]["label"],
        "Enviada"
    );
    assert_eq!(
        labels["groups"]["invitationState"]["sent"]["variants"]["en"]["label"],
        "Sent"
    );
    assert_eq!(
        labels["groups"]["invitationType"]["authorizedSigner"]["label"],
        "Firmante autorizado"
    );
    let labels = app.get_json(&alice, "/invitations/labels").await;
    assert_eq!(
        labels["groups"]["invitationType"]["joint"]["label"],
        "Joint Owner"
    );
    assert_eq!(
        labels["groups"]["invitationState"]
            .as_object()
            .unwrap()
            .len(),
        5
    );
    let doc = app.get_json(&alice, "/invitations/apiDoc").await;
    assert_eq!(doc["info"]["title"], "Invitations");
    assert!(doc["paths"]["/invitations/invitations/{invitationId}"]["patch"].is_object());
    let res = app
        .client
        .get(app.url("/invitations/apiDoc"))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "unauthorized").await;
}

async fn the_accept_page_verifies_through_a_plain_form(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.invitations.trust_forwarded_for = true;
        c.invitations.max_failed_verifications = 2;
    })
    .await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let link = created["_links"]["apiture:acceptInvitationUserExperience"]["href"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .client
        .get(&link)
        .header("Accept-Language", "es")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_page_headers(&res);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("<html lang=\"es\">"), "{html}");
    assert!(html.contains("<label for=\"sharedSecret\">"), "{html}");
    assert!(
        html.contains(&format!("name=\"invitationId\" value=\"{id}\"")),
        "{html}"
    );
    assert!(!html.contains("<script"));
    // Everything from the request is escaped.
    let res = app
        .client
        .get(app.url("/invitations/accept?invitationId=%22%3E%3Cscript%3Ex"))
        .send()
        .await
        .unwrap();
    assert_page_headers(&res);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("&quot;&gt;&lt;script&gt;x") && !html.contains("<script>"),
        "{html}"
    );
    let res = app
        .client
        .post(app.url("/invitations/accept"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("invitationId=x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_page_headers(&res);
    assert!(
        res.text().await.unwrap().contains("incomplete"),
        "an HTML page, too"
    );
    let res = app
        .client
        .get(app.url("/invitations/accept"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_page_headers(&res);
    assert!(res.text().await.unwrap().contains("incomplete"));

    let post = |secret: &str, id: &str, from: &str| {
        app.client
            .post(app.url("/invitations/accept"))
            .header("X-Forwarded-For", from)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encoded(&[("invitationId", id), ("sharedSecret", secret)]))
            .send()
    };
    let res = post("wrong secret here", &id, "10.0.0.1").await.unwrap();
    assert_eq!(res.status(), 400);
    assert_page_headers(&res);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("role=\"alert\"") && html.contains("does not match"),
        "{html}"
    );
    assert!(html.contains("<form"), "another try is offered");
    let res = post(SECRET, &id, "10.0.0.1").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_page_headers(&res);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("your invitation is accepted")
    );
    let res = post(SECRET, &id, "10.0.0.1").await.unwrap();
    assert_eq!(res.status(), 409);
    assert_page_headers(&res);
    assert!(res.text().await.unwrap().contains("already been accepted"));

    let alice = app.customer(ALICE);
    let (revoked, _) = create(&app, "r@example.com").await;
    app.with(
        &alice,
        Method::POST,
        &format!("/invitations/revoked?invitation={}", id_of(&revoked)),
    )
    .send()
    .await
    .unwrap();
    let res = post(SECRET, &id_of(&revoked), "10.0.0.2").await.unwrap();
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("revoked"));
    let (expired, _) = create(&app, "e@example.com").await;
    set_expiry(&app, &id_of(&expired), 1).await;
    let res = post(SECRET, &id_of(&expired), "10.0.0.2").await.unwrap();
    assert!(res.text().await.unwrap().contains("expired"));
    let (locked, _) = create(&app, "l@example.com").await;
    for _ in 0..2 {
        post("wrong secret here", &id_of(&locked), "10.0.0.3")
            .await
            .unwrap();
    }
    let res = post(SECRET, &id_of(&locked), "10.0.0.3").await.unwrap();
    assert!(res.text().await.unwrap().contains("locked"));
    for _ in 0..10 {
        post("wrong secret here", "some-invitation", "10.0.0.9")
            .await
            .unwrap();
    }
    let res = post(SECRET, &id_of(&locked), "10.0.0.9").await.unwrap();
    assert_eq!(res.status(), 429);
    assert_page_headers(&res);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.text().await.unwrap().contains("Too many attempts"));
}

/// The headers every answer of the accept page carries, whatever the outcome.
fn assert_page_headers(res: &Response) {
    let headers = res.headers();
    let context = format!("{} {headers:?}", res.status());
    assert_eq!(headers["x-content-type-options"], "nosniff", "{context}");
    assert_eq!(headers["cache-control"], "no-store", "{context}");
    // Not `no-referrer`: under it browsers send `Origin: null` with the page's own form.
    assert_eq!(headers["referrer-policy"], "same-origin", "{context}");
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(directive), "{directive}: {context}");
    }
}

/// POSTs the accept form for `id` with the right secret and the given extra headers.
async fn post_accept_form(app: &TestApp, id: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = app
        .client
        .post(app.url("/invitations/accept"))
        .header("X-Forwarded-For", "203.0.113.40")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encoded(&[("invitationId", id), ("sharedSecret", SECRET)]));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// A form posted from another site (cross-site request forgery, or a page that collects
/// secrets and replays them) gets 403 and counts nothing: neither against the invitation nor
/// against the address. The page's own form, and clients that send neither `Origin` nor
/// `Referer`, are served.
async fn the_accept_page_refuses_cross_site_posts_and_counts_nothing(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.invitations.trust_forwarded_for = true;
        c.invitations.verify_max_attempts_per_ip = 1;
    })
    .await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let service = app.base.as_str();
    let page_url = format!("{service}/invitations/accept?invitationId={id}");
    let other_port = service.rsplit_once(':').unwrap().0.to_owned() + ":1";
    let refused: &[&[(&str, &str)]] = &[
        &[("Origin", "https://attacker.example")],
        &[("Origin", "null")],
        &[("Origin", &other_port)],
        &[("Origin", "not an origin")],
        &[("Referer", "https://attacker.example/claim-your-prize")],
        &[
            ("Origin", "https://attacker.example"),
            ("Referer", &page_url),
        ],
        &[("Sec-Fetch-Site", "cross-site")],
        &[("Sec-Fetch-Site", "same-site")],
        &[("Origin", service), ("Sec-Fetch-Site", "cross-site")],
    ];
    for headers in refused {
        let res = post_accept_form(&app, &id, headers).await;
        assert_eq!(res.status(), 403, "{headers:?}");
        assert_page_headers(&res);
        let html = res.text().await.unwrap();
        assert!(
            html.contains("role=\"alert\"") && html.contains("from the invitation page"),
            "{headers:?}: {html}"
        );
        assert!(!html.contains("<form"), "{html}");
    }
    assert!(attempt_keys(&app).await.is_empty(), "no attempt counted");
    let view = app
        .get_json(&app.customer(ALICE), &format!("{COLLECTION}/{id}"))
        .await;
    assert_eq!(view["verificationCount"], 0);
    assert_eq!(view["state"], "sent");
    // The page's own form: same origin (a port-less Host would match a port-less origin too).
    let res = post_accept_form(
        &app,
        &id,
        &[
            ("Origin", service),
            ("Referer", &page_url),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200, "the address's one attempt accepts");
    assert_page_headers(&res);
}

/// With `public_url` configured (the service behind a proxy), the form must come from that
/// origin: scheme, host and port, the port defaulting by scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_page_compares_origins_with_the_public_url() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.public_url = Some("https://bank.example/".to_owned());
        c.invitations.trust_forwarded_for = true;
        c.invitations.verify_max_attempts_per_ip = 100;
    })
    .await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    let service = app.base.as_str();
    for (headers, status) in [
        (vec![("Origin", service)], 403),
        (vec![("Origin", "http://bank.example")], 403),
        (vec![("Origin", "https://bank.example:8443")], 403),
        (
            vec![("Referer", "https://bank.example.attacker.example/")],
            403,
        ),
        (vec![("Origin", "https://BANK.example:443")], 200),
    ] {
        let res = post_accept_form(&app, &id, &headers).await;
        assert_eq!(res.status(), status, "{headers:?}");
    }
    let (created, _) = create(&app, "max2@example.com").await;
    let page = "https://bank.example/invitations/accept?invitationId=x";
    let res = post_accept_form(&app, &id_of(&created), &[("Referer", page)]).await;
    assert_eq!(res.status(), 200, "a Referer from the page itself");
}

/// The seed makes the invitee's names optional; the email then greets no one, and is sent.
async fn an_invitation_without_names_is_emailed(backend: Backend) {
    let app = spawn_with(backend, |c| c.email.poll_interval_ms = 25).await;
    let mut body = joint("nameless@example.com");
    let fields = body.as_object_mut().unwrap();
    fields.remove("firstName");
    fields.remove("lastName");
    let (created, _) = create_as(&app, &app.customer(ALICE), &body).await;
    let id = id_of(&created);
    let dir = app.config.data_dir.join("mail");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let email = loop {
        let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .find(|text| text.contains("To: nameless@example.com"))
        });
        if let Some(email) = found {
            break email;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no email for {id} in {:?}",
            std::fs::read_dir(&dir).map(|d| d.count())
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(email.contains("Hello,"), "{email}");
}

/// Clients that hang up mid-request never leave a transaction open behind them: the handler
/// runs to completion, so no connection sits "idle in transaction" holding row locks.
async fn abandoned_requests_leave_no_transaction_open(backend: Backend) {
    let app = spawn(backend).await;
    let alice = app.customer(ALICE);
    let mut abandoned = Vec::new();
    for i in 0..60u64 {
        let request = app
            .with(&alice, Method::POST, COLLECTION)
            .json(&joint(&format!("gone{i}@example.com")))
            .send();
        // Give up on the answer somewhere between before the handler starts and after it ends.
        let wait = std::time::Duration::from_micros((i % 12) * 500);
        abandoned.push(tokio::time::timeout(wait, request));
    }
    for request in abandoned {
        let _ = request.await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    if app.db.backend == tandem::store::Backend::Postgres {
        let open: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&app.db.read)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
        assert_eq!(open, 0, "connections left inside a transaction");
    }
    // Writes go on at once: nothing holds a lock or the SQLite writer.
    let started = std::time::Instant::now();
    create(&app, "after@example.com").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

// ---- who may create, what the email says, how many -------------------------------------

/// Another organization, held only by Erin (as a signer).
const ORG_B: &str = "https://api.bank.example/organizations/organization/globex";
const ERIN: &str = "customer-erin";

async fn hold(app: &TestApp, rows: &[(&str, &str, &str)]) {
    let rows: Vec<Entitlement> = rows
        .iter()
        .map(|(customer, uri, role)| Entitlement {
            customer_id: (*customer).into(),
            resource_uri: (*uri).into(),
            role: (*role).into(),
            joint_owners_disabled: false,
        })
        .collect();
    TableEntitlements::new(app.db.clone())
        .replace_all(&rows)
        .await
        .unwrap();
}

fn signer_on(organization: &str, email: &str) -> Value {
    json!({"sharedSecret": SECRET, "type": "authorizedSigner", "organizationUri": organization,
           "role": "signer", "inviterFullName": "Erin", "emailAddress": email})
}

async fn post(app: &TestApp, who: &Headers, body: &Value) -> Response {
    app.with(who, Method::POST, COLLECTION)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Every id a caller's list holds, read in both the merged (creation order) and the sorted
/// ways a customer list is built, with the count.
async fn listed_ids(app: &TestApp, who: &Headers) -> Vec<String> {
    let merged = app.get_json(who, COLLECTION).await;
    let sorted = app.get_json(who, &listing(&[("sortBy", "-state")])).await;
    let ids = item_ids(&merged);
    let mut sorted_ids = item_ids(&sorted);
    sorted_ids.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted_ids, expected);
    assert_eq!(merged["count"], ids.len(), "{merged}");
    ids
}

/// An invitation takes only the URI its type names (400 naming the other), and holders see an
/// invitation only through that URI: a row that still carries another one (planted before the
/// rule) shows neither in that URI's holders' lists nor to their GET.
async fn an_invitation_is_seen_only_through_the_uri_its_type_names(backend: Backend) {
    let app = spawn(backend).await;
    hold(
        &app,
        &[
            (ALICE, ACCOUNT, "owner"),
            (ALICE, ORG, "owner"),
            (BOB, ACCOUNT, "joint"),
            (ERIN, ORG_B, "signer"),
        ],
    )
    .await;
    let erin = app.customer(ERIN);
    let mut planted = signer_on(ORG_B, "planted@example.com");
    planted["accountUri"] = json!(ACCOUNT);
    let err = assert_error(post(&app, &erin, &planted).await, 400, "invalidValue").await;
    assert!(
        err["_error"]["message"]
            .as_str()
            .unwrap()
            .contains("accountUri"),
        "{err}"
    );
    let mut joint_with_org = joint("max@example.com");
    joint_with_org["organizationUri"] = json!(ORG);
    let err = assert_error(
        post(&app, &app.customer(ALICE), &joint_with_org).await,
        400,
        "invalidValue",
    )
    .await;
    assert!(
        err["_error"]["message"]
            .as_str()
            .unwrap()
            .contains("organizationUri"),
        "{err}"
    );
    let promo = json!({"sharedSecret": SECRET, "type": "productPromotion", "accountUri": ACCOUNT,
                       "inviterFullName": "Example Bank", "emailAddress": "max@example.com"});
    assert_error(post(&app, &app.admin(), &promo).await, 400, "invalidValue").await;
    assert!(outbox(&app).await.is_empty());

    // A row as the old rule let it be stored: Erin's signer invitation carrying Alice's account.
    let (created, _) = create_as(&app, &erin, &signer_on(ORG_B, "planted@example.com")).await;
    let id = id_of(&created);
    sqlx::query("UPDATE invitations SET account_uri = $1 WHERE id = $2")
        .bind(ACCOUNT)
        .bind(&id)
        .execute(&app.db.write)
        .await
        .unwrap();
    let (alices_own, _) = create(&app, "own@example.com").await;
    for (who, name) in [(app.customer(ALICE), ALICE), (app.customer(BOB), BOB)] {
        assert_eq!(listed_ids(&app, &who).await, [id_of(&alices_own)], "{name}");
        let res = app
            .with(&who, Method::GET, &format!("{COLLECTION}/{id}"))
            .send()
            .await
            .unwrap();
        assert_error(res, 404, "notFound").await;
    }
    assert_eq!(listed_ids(&app, &erin).await, [id]);
}

/// Any role on an account or organization lets its holder see the invitations on it; only the
/// configured roles may invite (`owner`, `jointOwner`, `joint` on accounts; `owner`, `admin`,
/// `signer` on organizations; ignoring case).
async fn only_inviting_roles_may_invite_and_every_holder_sees(backend: Backend) {
    const VIC: &str = "customer-vic";
    let app = spawn(backend).await;
    hold(
        &app,
        &[
            (ALICE, ACCOUNT, "owner"),
            (BOB, ACCOUNT, "JointOwner"),
            (VIC, ACCOUNT, "viewer"),
            (VIC, ORG, "signer"),
            (ERIN, ORG, "viewer"),
        ],
    )
    .await;
    let vic = app.customer(VIC);
    let err = assert_error(
        post(&app, &vic, &joint("max@example.com")).await,
        403,
        "notEntitled",
    )
    .await;
    assert_eq!(err["_error"]["attributes"]["field"], "accountUri", "{err}");
    assert!(
        err["_error"]["message"]
            .as_str()
            .unwrap()
            .contains("viewer"),
        "{err}"
    );
    let err = assert_error(
        post(&app, &app.customer(ERIN), &signer_on(ORG, "s@example.com")).await,
        403,
        "notEntitled",
    )
    .await;
    assert_eq!(err["_error"]["attributes"]["field"], "organizationUri");
    let (alices, _) = create(&app, "max@example.com").await;
    create_as(&app, &app.customer(BOB), &joint("bob@example.com")).await;
    create_as(&app, &vic, &signer_on(ORG, "s@example.com")).await;
    // Vic, a viewer of the account, sees both invitations on it (without their secrets).
    let page = app.get_json(&vic, &listing(&[("type", "joint")])).await;
    assert_eq!(page["count"], 2, "{page}");
    let seen = app
        .get_json(&vic, &format!("{COLLECTION}/{}", id_of(&alices)))
        .await;
    assert!(seen.get("sharedSecret").is_none(), "{seen}");
    assert_eq!(outbox(&app).await.len(), 3);
}

/// A customer's name in the bank's email is the one their token gives; only without one is the
/// request's value used, and then it must read as a name. Staff write as the institution.
async fn the_inviters_name_comes_from_the_token_or_must_read_as_a_name(backend: Backend) {
    let app = spawn(backend).await;
    let mut spam = joint("max@example.com");
    spam["inviterFullName"] = json!("You won! Claim at http://prize.example or call 555-123-4567");
    let (created, _) = create_as(&app, &app.customer(ALICE), &spam).await;
    assert_eq!(created["inviterFullName"], "Casey Customer");
    let nameless = app.headers(&tandem::auth::dev::TokenRequest {
        first_name: String::new(),
        last_name: String::new(),
        ..customer_token(ALICE)
    });
    for refused in [
        "Claim at http://prize.example",
        "prize.example",
        "write to max@example.com",
        "Call (555) 123-4567",
    ] {
        let mut body = joint("tom@example.com");
        body["inviterFullName"] = json!(refused);
        let err = assert_error(post(&app, &nameless, &body).await, 400, "invalidValue").await;
        assert!(
            err["_error"]["message"]
                .as_str()
                .unwrap()
                .contains("inviterFullName"),
            "{refused}: {err}"
        );
    }
    let (named_by_body, _) = create_as(&app, &nameless, &joint("tom@example.com")).await;
    assert_eq!(named_by_body["inviterFullName"], "Alice Inviter");
    let promo = json!({"sharedSecret": SECRET, "type": "productPromotion",
                       "inviterFullName": "Example Bank", "emailAddress": "ann@example.com"});
    create_as(&app, &app.admin(), &promo).await;
    let names: Vec<Value> = outbox(&app)
        .await
        .into_iter()
        .map(|(_, _, payload)| payload["inviterFullName"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("Casey Customer"),
            json!("Alice Inviter"),
            json!("Example Bank")
        ]
    );
}

/// At most `daily_invitations_per_customer` creates by one customer in 24 hours (429 with
/// Retry-After; deleting does not give a place back; staff are not capped) and
/// `open_invitations_per_resource` open invitations on one account or organization (409, for
/// everyone; a revoke frees a place).
async fn creates_are_capped_per_customer_per_day_and_open_per_account(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.invitations.daily_invitations_per_customer = 4;
        c.invitations.open_invitations_per_resource = 2;
    })
    .await;
    hold(
        &app,
        &[
            (ALICE, ACCOUNT, "owner"),
            (ALICE, ORG, "owner"),
            (BOB, ACCOUNT, "joint"),
            (BOB, ORG_B, "signer"),
        ],
    )
    .await;
    let alice = app.customer(ALICE);
    let (first, _) = create(&app, "a1@example.com").await;
    create(&app, "a2@example.com").await;
    for who in [&alice, &app.customer(BOB), &app.admin()] {
        let err = assert_error(
            post(&app, who, &joint("a3@example.com")).await,
            409,
            "tooManyOpenInvitations",
        )
        .await;
        assert_eq!(err["_error"]["attributes"]["field"], "accountUri", "{err}");
        assert_eq!(err["_error"]["attributes"]["limit"], 2, "{err}");
    }
    let res = app
        .with(
            &alice,
            Method::POST,
            &format!("/invitations/revoked?invitation={}", id_of(&first)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    create(&app, "a3@example.com").await;
    let (signer, _) = create_as(&app, &alice, &signer_on(ORG, "s1@example.com")).await;
    // Four today: the fifth is refused, also after deleting one.
    for attempt in 0..2 {
        let res = post(&app, &alice, &signer_on(ORG, "s2@example.com")).await;
        let retry_after: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((86_000..=86_400).contains(&retry_after), "{retry_after}");
        let err = assert_error(res, 429, "invitationLimitReached").await;
        assert_eq!(err["_error"]["attributes"]["limit"], 4, "{err}");
        if attempt == 0 {
            let res = app
                .with(
                    &alice,
                    Method::DELETE,
                    &format!("{COLLECTION}/{}", id_of(&signer)),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
        }
    }
    // Bob's own allowance is untouched; staff have none.
    create_as(&app, &app.customer(BOB), &signer_on(ORG_B, "b@example.com")).await;
    let promo = json!({"sharedSecret": SECRET, "type": "productPromotion",
                       "inviterFullName": "Example Bank", "emailAddress": "ann@example.com"});
    for _ in 0..6 {
        create_as(&app, &app.admin(), &promo).await;
    }
    assert_eq!(
        outbox(&app).await.len(),
        4 + 1 + 6,
        "refused creates queue no email"
    );
}

/// Creates at the same moment are counted one after the other: twenty at once on one account
/// open exactly the cap's number, and a customer's creates across many accounts stop exactly
/// at the daily cap.
async fn parallel_creates_cannot_pass_the_caps(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.invitations.daily_invitations_per_customer = 5;
        c.invitations.open_invitations_per_resource = 3;
    })
    .await;
    let accounts: Vec<String> = (0..20)
        .map(|n| format!("https://api.bank.example/accounts/account/many-{n:02}"))
        .collect();
    let mut rows: Vec<(&str, &str, &str)> = accounts
        .iter()
        .map(|a| (ALICE, a.as_str(), "owner"))
        .collect();
    rows.push((BOB, &accounts[0], "joint"));
    hold(&app, &rows).await;
    let (alice, bob) = (app.customer(ALICE), app.customer(BOB));
    let on = |account: &str, n: usize| {
        let mut body = joint(&format!("p{n}@example.com"));
        body["accountUri"] = json!(account);
        body
    };
    let statuses = |requests: Vec<reqwest::RequestBuilder>| async move {
        let mut statuses: Vec<u16> =
            futures_util::future::join_all(requests.into_iter().map(|r| r.send()))
                .await
                .into_iter()
                .map(|res| res.unwrap().status().as_u16())
                .collect();
        statuses.sort_unstable();
        statuses
    };
    let same_account = (0..20)
        .map(|n| {
            let who = if n % 2 == 0 { &alice } else { &bob };
            app.with(who, Method::POST, COLLECTION)
                .json(&on(&accounts[0], n))
        })
        .collect();
    let first = statuses(same_account).await;
    assert_eq!(first.iter().filter(|&&s| s == 201).count(), 3, "{first:?}");
    assert!(first.iter().all(|&s| s == 201 || s == 409), "{first:?}");
    let alices_so_far = app
        .get_json(
            &app.admin(),
            &listing(&[("filter", &format!("eq(customerId,{ALICE})"))]),
        )
        .await["count"]
        .as_u64()
        .unwrap() as usize;
    let many_accounts = accounts[1..]
        .iter()
        .enumerate()
        .map(|(n, account)| {
            app.with(&alice, Method::POST, COLLECTION)
                .json(&on(account, 100 + n))
        })
        .collect();
    let second = statuses(many_accounts).await;
    let created = second.iter().filter(|&&s| s == 201).count();
    assert_eq!(alices_so_far + created, 5, "{first:?} {second:?}");
    assert!(second.iter().all(|&s| s == 201 || s == 429), "{second:?}");
    let stored: i64 = sqlx::query("SELECT COUNT(*) AS n FROM invitations")
        .fetch_one(&app.db.read)
        .await
        .unwrap()
        .get("n");
    assert_eq!(stored, 3 + created as i64);
}

/// `identification` is sealed at rest, bound to its invitation apart from the shared secret;
/// the inviter and staff still read the digits, verification compares them after opening, and
/// digits stored in plain text before still work.
async fn identification_is_sealed_at_rest_and_still_verifies(backend: Backend) {
    let app = spawn_with(backend, trusting_proxies).await;
    let (created, _) = create(&app, "max@example.com").await;
    let id = id_of(&created);
    assert_eq!(created["identification"], "3333");
    let stored = |id: String| {
        let read = app.db.read.clone();
        async move {
            sqlx::query("SELECT identification, sealed_secret FROM invitations WHERE id = $1")
                .bind(id)
                .fetch_one(&read)
                .await
                .unwrap()
        }
    };
    let row = stored(id.clone()).await;
    let sealed: String = row.get("identification");
    assert!(
        !sealed.contains("3333") && sealed.starts_with("v2."),
        "{sealed}"
    );
    let path = format!("{COLLECTION}/{id}");
    assert_eq!(
        app.get_json(&app.customer(ALICE), &path).await["identification"],
        "3333"
    );
    assert_eq!(
        app.get_json(&app.admin(), &path).await["identification"],
        "3333"
    );
    let seen = app.get_json(&app.customer(BOB), &path).await;
    assert!(seen.get("identification").is_none(), "{seen}");
    let claim = |id: &str, digits: &str| {
        app.client
            .post(app.url("/invitations/verifications"))
            .header("X-Forwarded-For", "10.0.0.1")
            .json(&json!({ "invitationId": id, "sharedSecret": SECRET, "identification": digits }))
            .send()
    };
    assert_error(claim(&id, "1234").await.unwrap(), 400, "verificationFailed").await;
    assert_eq!(claim(&id, "3333").await.unwrap().status(), 200);

    // Plain digits, as stored before sealing.
    let (legacy, _) = create(&app, "tom@example.com").await;
    let legacy = id_of(&legacy);
    sqlx::query("UPDATE invitations SET identification = '4444' WHERE id = $1")
        .bind(&legacy)
        .execute(&app.db.write)
        .await
        .unwrap();
    let path = format!("{COLLECTION}/{legacy}");
    assert_eq!(
        app.get_json(&app.customer(ALICE), &path).await["identification"],
        "4444"
    );
    assert_eq!(claim(&legacy, "4444").await.unwrap().status(), 200);

    // The shared secret's sealed value does not open as the identification.
    let (swapped, _) = create(&app, "ann@example.com").await;
    let swapped = id_of(&swapped);
    let secret: String = stored(swapped.clone()).await.get("sealed_secret");
    sqlx::query("UPDATE invitations SET identification = $1 WHERE id = $2")
        .bind(&secret)
        .bind(&swapped)
        .execute(&app.db.write)
        .await
        .unwrap();
    let res = app
        .with(
            &app.customer(ALICE),
            Method::GET,
            &format!("{COLLECTION}/{swapped}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(claim(&swapped, "3333").await.unwrap().status(), 500);
}

on_both_backends!(
    abandoned_requests_leave_no_transaction_open,
    an_invitation_without_names_is_emailed,
    create_answers_201_with_location_etag_links_and_queues_the_email,
    create_rejects_bad_bodies_with_400_naming_the_field_and_stores_nothing,
    create_enforces_entitlements_types_and_joint_owner_rules,
    scopes_and_credentials_are_required,
    representations_match_their_snapshots,
    the_inviters_customer_group_comes_from_their_token,
    action_links_appear_exactly_when_following_them_changes_the_invitation,
    get_answers_etag_and_304_and_hides_the_secret_from_other_joint_owners,
    another_customer_can_neither_read_change_nor_act_on_an_invitation,
    list_pages_with_count_and_hal_links,
    list_answers_an_empty_page_for_the_largest_start,
    customer_lists_show_exactly_what_they_may_see_in_every_page_and_order,
    list_leaves_out_a_count_beyond_the_limit,
    list_checks_every_parameter_even_when_nothing_can_be_pending,
    list_filters_sorts_and_searches,
    list_refuses_values_over_the_caps_with_400_naming_the_parameter,
    a_large_filter_within_the_caps_lists_exactly_the_matches,
    revoke_is_idempotent_honours_if_match_and_refuses_other_states,
    resend_queues_a_new_email_up_to_the_limit,
    complete_is_for_staff_from_accepted_only,
    delete_answers_204_then_404,
    a_delete_on_an_old_tag_never_follows_a_concurrent_change,
    patch_changes_the_secret_while_sent,
    verify_counts_attempts_and_accepts_once,
    verify_refuses_revoked_expired_and_locked_invitations,
    a_thousand_wrong_secrets_from_one_address_get_429_and_never_accept,
    parallel_attempts_from_a_new_address_are_counted_exactly,
    the_stored_count_follows_the_attempt_rule,
    the_forwarded_address_is_the_entry_the_proxy_added,
    addresses_in_one_ipv6_64_share_an_allowance,
    the_sweeper_persists_expiry_without_changing_the_entity_tag,
    root_labels_and_api_document,
    the_accept_page_verifies_through_a_plain_form,
    every_href_is_an_absolute_uri,
    an_invitation_is_seen_only_through_the_uri_its_type_names,
    only_inviting_roles_may_invite_and_every_holder_sees,
    the_inviters_name_comes_from_the_token_or_must_read_as_a_name,
    creates_are_capped_per_customer_per_day_and_open_per_account,
    parallel_creates_cannot_pass_the_caps,
    identification_is_sealed_at_rest_and_still_verifies,
    the_accept_page_refuses_cross_site_posts_and_counts_nothing,
);
