//! The OpenAPI documents, generated from the handlers and wire types.

use super::admin;
use super::error::ProblemBody;
use super::sync_runs;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, OpenIdConnect, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, ResponseBuilder};
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
    }
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
