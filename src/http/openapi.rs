//! The OpenAPI documents, generated from the handlers and wire types.

use super::admin;
use super::error::ProblemBody;
use super::sync_runs;
use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, Parameter, ParameterStyle};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, OpenIdConnect, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Banking Admin Customer Audience Connections",
        version = "0.7.0",
        description = "Connect customer audiences with resources at other providers and keep them in sync. Served by tandem."
    ),
    paths(admin::list, admin::create, admin::get, admin::delete, admin::activate, admin::deactivate, admin::fail, sync_runs::list),
    components(schemas(ProblemBody)),
    modifiers(&AdminConventions),
    tags(
        (name = "Customer Audience Connections", description = "Customer Audience Connections"),
        (name = "Customer Audience Connection Actions", description = "Actions on Customer Audience Connections"),
    )
)]
pub struct AdminApi;

/// The error statuses each admin operation can answer, all as `problemResponse`.
const ADMIN_ERRORS: &[(&str, &[u16])] = &[
    (
        "listCustomerAudienceConnections",
        &[400, 401, 403, 422, 429],
    ),
    (
        "createCustomerAudienceConnection",
        &[400, 401, 403, 409, 413, 415, 422, 429],
    ),
    (
        "getCustomerAudienceConnection",
        &[400, 401, 403, 404, 422, 429],
    ),
    (
        "deleteCustomerAudienceConnection",
        &[400, 401, 403, 404, 429],
    ),
    (
        "activateCustomerAudienceConnection",
        &[400, 401, 403, 404, 409, 412, 422, 429],
    ),
    (
        "deactivateCustomerAudienceConnection",
        &[400, 401, 403, 404, 409, 412, 422, 429],
    ),
    (
        "failCustomerAudienceConnection",
        &[400, 401, 403, 404, 409, 412, 422, 429],
    ),
    (
        "listCustomerAudienceConnectionSyncRuns",
        &[400, 401, 403, 404, 429],
    ),
];

fn status_description(status: u16) -> &'static str {
    match status {
        400 => {
            "Bad Request. The request body, request headers, and/or query parameters are not well-formed."
        }
        401 => {
            "Unauthorized. The operation requires authentication but no authentication or insufficient authentication was given."
        }
        403 => {
            "Forbidden. The authenticated caller is not authorized to perform the requested operation."
        }
        404 => {
            "Not Found. There is no such customer audience connection resource at the specified {customerAudienceConnectionId}."
        }
        409 => "Conflict. The request conflicts with the state of the application.",
        412 => {
            "Precondition Failed. One or more conditions given in the request header fields evaluated to false when tested on the server."
        }
        413 => "Payload Too Large. The request body exceeds the configured limit.",
        415 => "Unsupported Media Type. The request body must be application/json.",
        422 => {
            "Unprocessable Entity. The request body and/or query parameters were well formed but otherwise invalid."
        }
        429 => {
            "Too Many Requests. The client has sent too many requests in a given amount of time."
        }
        _ => "Server Problem.",
    }
}

pub(crate) fn operations(doc: &mut OpenApiDoc) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .filter_map(Option::as_mut)
    })
}

// ---- Constraints the derive macros cannot state ----------------------------------------
//
// The documents must describe exactly what the handlers accept, so that a client (or a
// generator such as schemathesis) can tell a valid request from an invalid one. The patterns
// below are ECMA-262 regular expressions, written so that Python's `re` reads them the same.

/// Characters `domain::check_text` refuses: the Unicode `Cc` category except tab.
pub(crate) const CONTROL_CHARS: &str = r"\u0000-\u0008\u000a-\u001f\u007f-\u009f";
/// The characters Rust's `char::is_whitespace` (and so `str::trim`) treats as white space.
pub(crate) const WHITE_SPACE: &str =
    r"\t\n\u000b\u000c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// Text without control characters (tab allowed), as `domain::check_text` requires.
pub(crate) fn text_pattern() -> String {
    format!("^[^{CONTROL_CHARS}]*$")
}

/// An `If-Match` / `If-None-Match` value as `domain::etag::Condition::parse` accepts it: `*`,
/// or a comma-separated list of `"tag"`, `W/"tag"` or a bare tag, tags being printable ASCII
/// without quotes, commas or spaces (a bare tag cannot start with `W/`).
pub(crate) const ENTITY_TAG_PATTERN: &str = concat!(
    r#"^ *(\*|W/"[!#-+\--~]+"|"[!#-+\--~]+"|[!#-+\--VX-~][!#-+\--~]*|W([!#-+\--.0-~][!#-+\--~]*)?) *"#,
    r#"(, *(\*|W/"[!#-+\--~]+"|"[!#-+\--~]+"|[!#-+\--VX-~][!#-+\--~]*|W([!#-+\--.0-~][!#-+\--~]*)?) *)*$"#
);

/// The seeds' resource id (`domain::ids::ResourceId`).
pub(crate) const RESOURCE_ID_PATTERN: &str = r"^[-_:.~$a-zA-Z0-9]{6,48}$";

/// A schema written as JSON. Panics on a schema utoipa cannot hold, and (in debug builds) on
/// one it would not write back unchanged, so no keyword is silently dropped.
pub(crate) fn json_schema(value: Value) -> RefOr<Schema> {
    let schema: Schema = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("not a schema utoipa can hold ({e}): {value}"));
    debug_assert_eq!(
        serde_json::to_value(&schema).expect("a schema serializes"),
        value,
        "utoipa changed the schema"
    );
    RefOr::T(schema)
}

/// OpenAPI links from a response of `from` to the operations that act on the resource it
/// returned: `parameter` of each target takes `value` (a runtime expression such as
/// `$response.body#/id`). Clients and stateful testers follow them from a create to its
/// resource.
pub(crate) fn link_to(
    doc: &mut OpenApiDoc,
    from: &str,
    status: &str,
    targets: &[&str],
    parameter: &str,
    value: &str,
) {
    for target in targets {
        let link = utoipa::openapi::link::LinkBuilder::new()
            .operation_id(*target)
            .parameter(parameter, value)
            .build();
        add_link(doc, from, status, target, link);
    }
}

/// An OpenAPI link from a response of `from` to `target`, whose request body is `body` (an
/// object whose string members are runtime expressions).
pub(crate) fn link_body_to(
    doc: &mut OpenApiDoc,
    from: &str,
    status: &str,
    target: &str,
    body: serde_json::Value,
) {
    let link = utoipa::openapi::link::LinkBuilder::new()
        .operation_id(target)
        .request_body(Some(body))
        .build();
    add_link(doc, from, status, target, link);
}

fn add_link(
    doc: &mut OpenApiDoc,
    from: &str,
    status: &str,
    target: &str,
    link: utoipa::openapi::link::Link,
) {
    let response = operation(doc, from)
        .responses
        .responses
        .get_mut(status)
        .unwrap_or_else(|| panic!("{from} has no {status} response"));
    let RefOr::T(response) = response else {
        panic!("{from} {status} is a reference");
    };
    response.links.insert(target.to_owned(), link.into());
}

/// The operation with this id; panics when there is none, since the caller names its own.
pub(crate) fn operation<'a>(doc: &'a mut OpenApiDoc, id: &str) -> &'a mut Operation {
    operations(doc)
        .find(|op| op.operation_id.as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no operation {id}"))
}

/// A parameter written in place (the documents use no parameter references).
fn inline(p: &mut RefOr<Parameter>) -> Option<&mut Parameter> {
    match p {
        RefOr::T(p) => Some(p),
        RefOr::Ref(_) => None,
    }
}

/// One parameter of one operation.
pub(crate) fn parameter<'a>(doc: &'a mut OpenApiDoc, op: &str, name: &str) -> &'a mut Parameter {
    operation(doc, op)
        .parameters
        .iter_mut()
        .flatten()
        .filter_map(inline)
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{op} has no parameter {name}"))
}

/// Replaces a parameter's schema.
pub(crate) fn set_parameter_schema(doc: &mut OpenApiDoc, op: &str, name: &str, schema: Value) {
    parameter(doc, op, name).schema = Some(json_schema(schema));
}

/// Replaces one property's schema in a component object schema.
pub(crate) fn set_property(doc: &mut OpenApiDoc, component: &str, property: &str, schema: Value) {
    let components = doc
        .components
        .as_mut()
        .expect("the document has components");
    match components.schemas.get_mut(component) {
        Some(RefOr::T(Schema::Object(object))) => {
            object
                .properties
                .insert(property.to_owned(), json_schema(schema));
        }
        _ => panic!("no object schema {component}"),
    }
}

/// Every `If-Match` and `If-None-Match` parameter gets the entity tag syntax.
pub(crate) fn constrain_conditional_headers(doc: &mut OpenApiDoc) {
    for op in operations(doc) {
        for p in op.parameters.iter_mut().flatten().filter_map(inline) {
            if p.name == "If-Match" || p.name == "If-None-Match" {
                p.schema = Some(json_schema(json!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 512,
                    "pattern": ENTITY_TAG_PATTERN,
                })));
            }
        }
    }
}

/// A pipe-delimited array query parameter (`?state=active|failed`), as the seeds write it.
pub(crate) fn pipe_delimited(doc: &mut OpenApiDoc, op: &str, name: &str, items: Value) {
    let p = parameter(doc, op, name);
    p.style = Some(ParameterStyle::PipeDelimited);
    p.explode = Some(false);
    p.schema = Some(json_schema(items));
}

/// How one API documents its errors: the statuses each operation answers, and their body.
pub(crate) struct ErrorResponses {
    pub statuses: &'static [(&'static str, &'static [u16])],
    pub media_type: &'static str,
    pub schema: &'static str,
    pub describe: fn(u16) -> &'static str,
}

/// Adds what every operation of an API shares: the API key plus the API's token scheme as the
/// security requirement, and the error responses (with a `5XX` for server problems).
pub(crate) fn add_shared_conventions(
    doc: &mut OpenApiDoc,
    token_scheme: &str,
    errors: &ErrorResponses,
) {
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("API-Key"))),
        );
    doc.security = Some(vec![
        SecurityRequirement::new("apiKey", Vec::<String>::new())
            .add(token_scheme, Vec::<String>::new()),
    ]);
    for op in operations(doc) {
        let id = op.operation_id.clone().unwrap_or_default();
        let statuses = errors
            .statuses
            .iter()
            .find(|(name, _)| *name == id)
            .map(|(_, s)| *s)
            .unwrap_or(&[]);
        for status in statuses.iter().copied().chain([500]) {
            let response = ResponseBuilder::new()
                .description((errors.describe)(status))
                .content(
                    errors.media_type,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(errors.schema)))
                        .build(),
                )
                .build();
            let key = if status == 500 {
                "5XX".to_owned()
            } else {
                status.to_string()
            };
            op.responses.responses.insert(key, response.into());
        }
    }
}

/// Adds what every admin operation shares: error responses and security requirements.
struct AdminConventions;

impl Modify for AdminConventions {
    fn modify(&self, doc: &mut OpenApiDoc) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "adminAccessToken",
                SecurityScheme::OpenIdConnect(OpenIdConnect::new(
                    "/.well-known/openid-configuration",
                )),
            );
        add_shared_conventions(
            doc,
            "adminAccessToken",
            &ErrorResponses {
                statuses: ADMIN_ERRORS,
                media_type: "application/problem+json",
                schema: "problemResponse",
                describe: status_description,
            },
        );
        // The seed lists a `4XX` on every operation for client problems without a status of
        // their own (e.g. 405 `methodNotAllowed`); tandem answers those with a problem too.
        let client_problem = ResponseBuilder::new()
            .description(
                "Client Request Problem. The client request had a problem not listed under another specific 400-level HTTP response code. View the detail in the problem response for additional details.",
            )
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("problemResponse")))
                    .build(),
            )
            .build();
        for op in operations(doc) {
            op.responses
                .responses
                .insert("4XX".to_owned(), client_problem.clone().into());
        }
        constrain_conditional_headers(doc);
        constrain_admin_inputs(doc);
        let one_connection = [
            "getCustomerAudienceConnection",
            "activateCustomerAudienceConnection",
            "deactivateCustomerAudienceConnection",
            "failCustomerAudienceConnection",
            "listCustomerAudienceConnectionSyncRuns",
            "deleteCustomerAudienceConnection",
        ];
        link_to(
            doc,
            "createCustomerAudienceConnection",
            "201",
            &one_connection,
            "customerAudienceConnectionId",
            "$response.body#/id",
        );
    }
}

/// What the admin handlers check beyond the derived schemas.
fn constrain_admin_inputs(doc: &mut OpenApiDoc) {
    // The seed's `state` filter: a pipe-delimited array of unique state names.
    pipe_delimited(
        doc,
        "listCustomerAudienceConnections",
        "state",
        json!({
            "type": "array",
            "items": {"type": "string", "enum": ["active", "inactive", "pending", "failed"]},
            "maxItems": 4,
            "minItems": 1,
            "uniqueItems": true,
        }),
    );
    let text = text_pattern();
    for (component, property, min, max) in [
        ("newCustomerAudienceConnectionProvider", "name", 1, 80),
        (
            "newCustomerAudienceConnectionProvider",
            "resourceId",
            1,
            256,
        ),
        (
            "newCustomerAudienceConnectionProvider",
            "connectedResourceId",
            1,
            256,
        ),
    ] {
        let mut schema =
            json!({"type": "string", "minLength": min, "maxLength": max, "pattern": text});
        if property != "name" {
            schema["type"] = json!(["string", "null"]);
        }
        if property == "connectedResourceId" {
            // Read-only in the seed; tandem also takes it as a synonym of `resourceId` (400
            // when the two differ), which clients written from the schema never send.
            schema["readOnly"] = json!(true);
        }
        set_property(doc, component, property, schema);
    }
    set_property(
        doc,
        "customerAudienceReference",
        "name",
        json!({"type": ["string", "null"], "maxLength": 100, "pattern": text}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_operation_is_documented_with_its_errors() {
        let doc = serde_json::to_value(AdminApi::openapi()).unwrap();
        let mut seen = Vec::new();
        for (_, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_owned();
                let (_, statuses) = ADMIN_ERRORS.iter().find(|(n, _)| *n == id).expect("listed");
                for s in *statuses {
                    assert!(
                        op["responses"].get(s.to_string()).is_some(),
                        "{id} lacks {s}"
                    );
                }
                seen.push(id);
            }
        }
        assert_eq!(seen.len(), ADMIN_ERRORS.len());
        assert!(doc["components"]["schemas"]["customerAudienceConnection"].is_object());
        assert!(doc["components"]["schemas"]["problemResponse"].is_object());
    }
}
