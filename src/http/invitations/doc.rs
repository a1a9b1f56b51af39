//! The Invitations API's OpenAPI document, generated from the handlers and wire types.

use super::api;
use crate::http::error::HalErrorBody;
use crate::http::openapi::{
    CONTROL_CHARS, ErrorResponses, RESOURCE_ID_PATTERN, WHITE_SPACE, add_shared_conventions,
    constrain_conditional_headers, json_schema, link_body_to, link_to, operation, operations,
    set_parameter_schema, set_property, text_pattern,
};
use serde_json::{Value, json};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{AuthorizationCode, Flow, OAuth2, Scopes, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
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
        hal_media_type(doc);
        // deleteInvitation honours If-Match (412 is listed) like the other changes.
        operation(doc, "deleteInvitation")
            .parameters
            .get_or_insert_with(Vec::new)
            .push(
                ParameterBuilder::new()
                    .name("If-Match")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "When passed, must match the current entity tag, else 412",
                    ))
                    .build()
                    .into(),
            );
        constrain_conditional_headers(doc);
        let by_path = ["getInvitation", "patchInvitation", "deleteInvitation"];
        link_to(
            doc,
            "createInvitation",
            "201",
            &by_path,
            "invitationId",
            "$response.body#/_id",
        );
        let by_query = ["revokeInvitation", "sendInvitation", "completeInvitation"];
        link_to(
            doc,
            "createInvitation",
            "201",
            &by_query,
            "invitation",
            "$response.body#/_id",
        );
        // The invitee's side: a create's answer holds the id and the shared secret that
        // verify the invitation, and a verification's answer the id that staff complete.
        link_body_to(
            doc,
            "createInvitation",
            "201",
            "verifyInvitation",
            json!({"invitationId": "$response.body#/_id", "sharedSecret": "$response.body#/sharedSecret"}),
        );
        link_to(
            doc,
            "verifyInvitation",
            "200",
            &["completeInvitation"],
            "invitation",
            "$response.body#/invitationId",
        );
        constrain_inputs(doc);
    }
}

/// Successful answers are HAL (`application/hal+json`), except the OpenAPI document itself.
fn hal_media_type(doc: &mut OpenApiDoc) {
    for op in operations(doc) {
        if op.operation_id.as_deref() == Some("getApiDoc") {
            continue;
        }
        for response in op.responses.responses.values_mut() {
            if let RefOr::T(response) = response
                && let Some(content) = response.content.shift_remove("application/json")
            {
                response
                    .content
                    .insert("application/hal+json".to_owned(), content);
            }
        }
    }
}

/// The invitation types (`invitationType`).
const TYPES: [&str; 3] = ["joint", "authorizedSigner", "productPromotion"];
/// The invitation states (`invitationState`).
const STATES: [&str; 5] = ["sent", "accepted", "completed", "revoked", "expired"];

/// A bare address of ASCII dot-atoms, which the mailer's parser (and so `parse_email`) always
/// accepts: a local part of at most 63 characters without `|` (the list's separator), a domain
/// of at most 163, so at most 227 in all (`parse_email` allows 254 and some addresses this
/// leaves out).
const BARE_ADDRESS: &str = concat!(
    "[A-Za-z0-9!#$%&'*+/=?^_`{}~-]{1,15}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{}~-]{1,15}){0,3}",
    "@[A-Za-z0-9]([A-Za-z0-9-]{0,38}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,38}[A-Za-z0-9])?){1,3}"
);

/// `a|b|c` alternatives of `item` (a regular expression without anchors).
fn alternatives(item: &str) -> String {
    format!("^({item})(\\|({item}))*$")
}

/// What the handlers and `domain::invitation` check beyond the derived schemas.
fn constrain_inputs(doc: &mut OpenApiDoc) {
    let id =
        json!({"type": "string", "minLength": 6, "maxLength": 48, "pattern": RESOURCE_ID_PATTERN});
    for op in ["getInvitation", "deleteInvitation", "patchInvitation"] {
        set_parameter_schema(doc, op, "invitationId", id.clone());
    }
    for op in ["revokeInvitation", "sendInvitation", "completeInvitation"] {
        set_parameter_schema(doc, op, "invitation", id.clone());
    }
    set_property(doc, "verification", "invitationId", id);

    // One list value: no white space, control characters or `|` (the separator).
    let token = format!("[^{CONTROL_CHARS}{WHITE_SPACE}|]");
    let list = "getInvitations";
    set_parameter_schema(
        doc,
        list,
        "state",
        json!({"type": "string", "pattern": alternatives(&STATES.join("|"))}),
    );
    set_parameter_schema(
        doc,
        list,
        "type",
        json!({"type": "string", "pattern": alternatives(&TYPES.join("|"))}),
    );
    set_parameter_schema(
        doc,
        list,
        "emailAddress",
        // Addresses `parse_email` accepts, as the create body documents them.
        json!({"type": "string", "pattern": alternatives(BARE_ADDRESS)}),
    );
    for name in ["accountUri", "organizationUri"] {
        set_parameter_schema(
            doc,
            list,
            name,
            json!({"type": "string", "pattern": alternatives(&format!("{token}+"))}),
        );
    }
    // Two sort keys at most (a key appears once), each `type` or `state` with an optional sign.
    let space = format!("[{WHITE_SPACE}]*");
    let key = |name: &str| format!("{space}[-+]?{name}{space}");
    set_parameter_schema(
        doc,
        list,
        "sortBy",
        json!({"type": "string", "pattern": format!(
            "^({}(,{})?|{}(,{})?)$", key("type"), key("state"), key("state"), key("type")
        )}),
    );
    set_parameter_schema(
        doc,
        list,
        "filter",
        json!({"type": "string", "format": "invitation-filter", "maxLength": 4096}),
    );
    set_parameter_schema(
        doc,
        list,
        "q",
        json!({"type": "string", "maxLength": 200, "pattern": text_pattern()}),
    );

    constrain_create(doc);
    let secret = secret_schema();
    set_property(doc, "invitationPatch", "sharedSecret", secret);
}

/// 8 to 256 characters without control characters, at least 8 of them besides leading and
/// trailing white space (`domain::invitation::SharedSecret`).
fn secret_schema() -> Value {
    // White space `str::trim` removes that is not a control character (those are refused).
    let space = r"[\t \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
    let visible = format!("[^{CONTROL_CHARS}{WHITE_SPACE}]");
    json!({
        "type": "string",
        "minLength": 8,
        "maxLength": 256,
        "pattern": format!("^{space}*{visible}[^{CONTROL_CHARS}]{{6,}}{visible}{space}*$"),
    })
}

/// `createInvitation`: one variant per type, since the type decides which of `accountUri`,
/// `organizationUri` and `role` are required or allowed.
fn constrain_create(doc: &mut OpenApiDoc) {
    let components = doc
        .components
        .as_mut()
        .expect("the document has components");
    let Some(RefOr::T(base)) = components.schemas.get("createInvitation") else {
        panic!("no createInvitation schema");
    };
    let mut base = serde_json::to_value(base).expect("a schema serializes");
    let text = text_pattern();
    let uri = format!("^[^{CONTROL_CHARS}{WHITE_SPACE}]+$");
    let properties = &mut base["properties"];
    properties["sharedSecret"] = secret_schema();
    properties["emailAddress"] = json!({
        "type": "string",
        "minLength": 3,
        "maxLength": 254,
        "pattern": format!("^{BARE_ADDRESS}$"),
    });
    // Used when the caller's token has no name; then it must read as a name
    // (`domain::invitation::parse_inviter_full_name`): the pattern says what it can of that.
    properties["inviterFullName"] = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": format!("^[^@{CONTROL_CHARS}]*$"),
        "description": "The inviter's name as the invitation email shows it. A customer's name is taken from their token's `given_name` and `family_name` when it has them, and this value is then ignored; otherwise it must be a name: no `@`, web address or phone number.",
    });
    for name in ["firstName", "lastName"] {
        properties[name] =
            json!({"type": ["string", "null"], "minLength": 1, "maxLength": 100, "pattern": text});
    }
    for name in ["accountUri", "organizationUri"] {
        properties[name] =
            json!({"type": ["string", "null"], "minLength": 1, "maxLength": 2048, "pattern": uri});
    }
    let variant = |kind: &str, required: Option<&str>, role: bool| {
        let mut v = base.clone();
        v["properties"]["type"] = json!({"type": "string", "enum": [kind]});
        // Only the URI the type names (`InvitationType::resource_field`) is taken.
        for name in ["accountUri", "organizationUri"] {
            if Some(name) != required {
                v["properties"][name] = json!({"type": "null"});
            }
        }
        if let Some(field) = required {
            v["properties"][field] =
                json!({"type": "string", "minLength": 1, "maxLength": 2048, "pattern": uri});
            v["required"]
                .as_array_mut()
                .expect("required is a list")
                .push(json!(field));
        }
        v["properties"]["role"] = if role {
            json!({"type": ["string", "null"], "minLength": 1, "maxLength": 100, "pattern": text})
        } else {
            json!({"type": "null"})
        };
        v.as_object_mut().expect("an object").remove("description");
        v
    };
    let schema = json!({
        "oneOf": [
            variant("joint", Some("accountUri"), false),
            variant("authorizedSigner", Some("organizationUri"), true),
            variant("productPromotion", None, false),
        ],
        "description": base["description"].clone(),
    });
    components
        .schemas
        .insert("createInvitation".to_owned(), json_schema(schema));
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
