//! The Invitations API's OpenAPI document, generated from the handlers and wire types.

use super::api;
use crate::http::error::HalErrorBody;
use crate::http::openapi::{ErrorResponses, add_shared_conventions};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{AuthorizationCode, Flow, OAuth2, Scopes, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub const API_VERSION: &str = "0.7.1";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Invitations",
        version = "0.7.1",
        description = "Invite people by email to become joint owners of accounts or authorized signers of business organizations. Served by tandem."
    ),
    paths(
        api::get_api, api::get_api_doc, api::get_labels, api::list, api::create, api::get_one,
        api::delete, api::patch, api::revoke, api::send, api::complete, api::verify
    ),
    components(schemas(HalErrorBody, api::Link)),
    modifiers(&InvitationConventions),
    tags(
        (name = "API", description = "The Invitations API"),
        (name = "Invitation", description = "Invitations"),
        (name = "Invitation Actions", description = "Actions on invitations"),
        (name = "Verification", description = "Invitation verifications"),
    )
)]
pub struct InvitationsApi;

pub fn document() -> OpenApiDoc {
    InvitationsApi::openapi()
}

/// The error statuses of each operation, all as `errorResponse` (the seed's, plus the
/// authentication and limit answers every authenticated operation can give).
const ERRORS: &[(&str, &[u16])] = &[
    ("getApi", &[401, 403, 429]),
    ("getApiDoc", &[401, 403, 429]),
    ("getLabels", &[401, 403, 429]),
    ("getInvitations", &[400, 401, 403, 422, 429]),
    ("createInvitation", &[400, 401, 403, 409, 413, 415, 429]),
    ("getInvitation", &[400, 401, 403, 404, 429]),
    ("deleteInvitation", &[400, 401, 403, 404, 412, 429]),
    (
        "patchInvitation",
        &[400, 401, 403, 404, 409, 412, 413, 415, 429],
    ),
    (
        "revokeInvitation",
        &[400, 401, 403, 404, 409, 412, 422, 429],
    ),
    ("sendInvitation", &[400, 401, 403, 404, 409, 412, 422, 429]),
    (
        "completeInvitation",
        &[400, 401, 403, 404, 409, 412, 422, 429],
    ),
    ("verifyInvitation", &[400, 409, 413, 415, 429]),
];

fn description(status: u16) -> &'static str {
    match status {
        400 => {
            "Bad Request. The request body or one or more of the query parameters was not well formed. The _error field in the response will contain details about the request error."
        }
        401 => "Unauthorized. The API key or the access token is missing or not valid.",
        403 => "Forbidden. The caller lacks the scope or the role this operation needs.",
        404 => {
            "Not Found. There is no such invitation resource at the specified {invitationId}. The _error field in the response will contain details about the request error."
        }
        409 => {
            "Conflict. The request is not allowed in the invitation's current state; the _error type says why (jointOwnersDisabled, verificationInvitationExpired, verificationInvitationNotRevokable, verificationInvitationRevoked, ...)."
        }
        412 => "Precondition Failed. The If-Match value does not match the current entity tag.",
        413 => "Payload Too Large.",
        415 => "Unsupported Media Type. The request body must be JSON.",
        422 => {
            "Unprocessable Entity. One or more of the query parameters was well formed but otherwise invalid."
        }
        429 => "Too Many Requests. Retry after the number of seconds in the Retry-After header.",
        _ => "Server Problem.",
    }
}

struct InvitationConventions;

impl Modify for InvitationConventions {
    fn modify(&self, doc: &mut OpenApiDoc) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "accessToken",
                SecurityScheme::OAuth2(OAuth2::new([Flow::AuthorizationCode(
                    AuthorizationCode::new(
                        "/auth/oauth2/authorize",
                        "/auth/oauth2/token",
                        Scopes::from_iter([
                            ("banking/read", "Read access to invitations"),
                            ("banking/write", "Write (update) access to invitations"),
                            ("banking/delete", "Delete access to invitations"),
                            ("banking/full", "Full access to invitations"),
                        ]),
                    ),
                )])),
            );
        add_shared_conventions(
            doc,
            "accessToken",
            &ErrorResponses {
                statuses: ERRORS,
                media_type: "application/hal+json",
                schema: "errorResponse",
                describe: description,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_documented_with_its_errors() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut seen = Vec::new();
        for (_, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_owned();
                let (_, statuses) = ERRORS.iter().find(|(n, _)| *n == id).expect("listed");
                for s in *statuses {
                    assert!(
                        op["responses"].get(s.to_string()).is_some(),
                        "{id} lacks {s}"
                    );
                }
                seen.push(id);
            }
        }
        assert_eq!(seen.len(), ERRORS.len());
        for schema in [
            "invitation",
            "createInvitation",
            "verification",
            "invitations",
            "errorResponse",
        ] {
            assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
        }
        assert_eq!(
            doc["paths"]["/invitations/verifications"]["post"]["security"],
            serde_json::json!([{}])
        );
    }
}
