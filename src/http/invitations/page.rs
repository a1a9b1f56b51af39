//! The invitee's accept page (`apiture:acceptInvitationUserExperience`): a plain HTML form, no
//! JavaScript, in English or Spanish, that runs the same verification as verifyInvitation.

use super::{Claimed, Verification};
use crate::domain::invitation::{Refusal, negotiate_locale};
use crate::html::escape;
use crate::http::AppState;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::net::SocketAddr;

struct Texts {
    title: &'static str,
    intro: &'static str,
    secret_label: &'static str,
    secret_hint: &'static str,
    submit: &'static str,
    accepted: &'static str,
    mismatch: &'static str,
    expired: &'static str,
    revoked: &'static str,
    locked: &'static str,
    not_open: &'static str,
    too_many: &'static str,
    missing: &'static str,
}

const EN: Texts = Texts {
    title: "Accept your invitation",
    intro: "Enter the shared secret your inviter gave you (in person or by phone, never by email).",
    secret_label: "Shared secret",
    secret_hint: "At least 8 characters.",
    submit: "Accept invitation",
    accepted: "Thank you: your invitation is accepted. Your financial institution will contact you to complete the process.",
    mismatch: "That shared secret does not match. Check it with your inviter and try again.",
    expired: "This invitation has expired. Ask your inviter to send a new one.",
    revoked: "This invitation was revoked by your inviter. Check that you are following the latest invitation email, or contact your inviter.",
    locked: "This invitation is locked after too many wrong secrets. Ask your inviter to set a new shared secret.",
    not_open: "This invitation has already been accepted.",
    too_many: "Too many attempts from your connection. Please wait a while and try again.",
    missing: "This link is incomplete: it does not name an invitation. Open the link from your invitation email again.",
};

const ES: Texts = Texts {
    title: "Acepte su invitación",
    intro: "Escriba el secreto compartido que le dio quien le invitó (en persona o por teléfono, nunca por correo).",
    secret_label: "Secreto compartido",
    secret_hint: "Al menos 8 caracteres.",
    submit: "Aceptar la invitación",
    accepted: "Gracias: su invitación está aceptada. Su institución financiera se comunicará con usted para completar el proceso.",
    mismatch: "Ese secreto compartido no coincide. Confírmelo con quien le invitó e inténtelo de nuevo.",
    expired: "Esta invitación venció. Pida a quien le invitó que le envíe una nueva.",
    revoked: "Quien le invitó revocó esta invitación. Verifique que está usando el correo de invitación más reciente o comuníquese con quien le invitó.",
    locked: "Esta invitación está bloqueada por demasiados intentos fallidos. Pida a quien le invitó que defina un nuevo secreto compartido.",
    not_open: "Esta invitación ya fue aceptada.",
    too_many: "Demasiados intentos desde su conexión. Espere un momento e inténtelo de nuevo.",
    missing: "Este enlace está incompleto: no indica ninguna invitación. Abra de nuevo el enlace de su correo de invitación.",
};

fn texts(locale: &str) -> &'static Texts {
    if locale == "es" { &ES } else { &EN }
}

fn locale_of(headers: &HeaderMap) -> &'static str {
    negotiate_locale(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// A whole page: `message` is a status paragraph (announced to screen readers), `form` the
/// form for `invitation_id` when another attempt makes sense.
fn page(
    status: StatusCode,
    locale: &str,
    message: Option<(&str, bool)>,
    form_for: Option<&str>,
) -> Response {
    let t = texts(locale);
    let mut body = format!(
        "<!DOCTYPE html>\n<html lang=\"{locale}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>body{{font-family:system-ui,sans-serif;max-width:34rem;\
         margin:2rem auto;padding:0 1rem;line-height:1.5}}label{{display:block;font-weight:600}}\
         input{{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box}}\
         button{{font-size:1rem;padding:.5rem 1rem;margin-top:1rem}}\
         .ok{{color:#0a5c2b}}.error{{color:#a4000f}}</style>\n</head>\n<body>\n<main>\n\
         <h1>{title}</h1>\n",
        title = escape(t.title),
    );
    if let Some((text, ok)) = message {
        let (class, role) = if ok {
            ("ok", "status")
        } else {
            ("error", "alert")
        };
        body.push_str(&format!(
            "<p id=\"result\" class=\"{class}\" role=\"{role}\">{}</p>\n",
            escape(text)
        ));
    }
    if let Some(id) = form_for {
        body.push_str(&format!(
            "<p>{intro}</p>\n<form method=\"post\" action=\"/invitations/accept\">\n\
             <input type=\"hidden\" name=\"invitationId\" value=\"{id}\">\n\
             <label for=\"sharedSecret\">{label}</label>\n\
             <input id=\"sharedSecret\" name=\"sharedSecret\" type=\"password\" required \
             minlength=\"8\" maxlength=\"256\" autocomplete=\"off\" aria-describedby=\"hint\">\n\
             <p id=\"hint\">{hint}</p>\n<button type=\"submit\">{submit}</button>\n</form>\n",
            intro = escape(t.intro),
            id = escape(id),
            label = escape(t.secret_label),
            hint = escape(t.secret_hint),
            submit = escape(t.submit),
        ));
    }
    body.push_str("</main>\n</body>\n</html>\n");
    let mut res = (status, body).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    if let Ok(lang) = HeaderValue::from_str(locale) {
        headers.insert(header::CONTENT_LANGUAGE, lang);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    res
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    invitation_id: Option<String>,
}

/// `GET /invitations/accept?invitationId=...`: the form.
pub async fn show(headers: HeaderMap, Query(query): Query<PageQuery>) -> Response {
    let locale = locale_of(&headers);
    match query.invitation_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => page(StatusCode::OK, locale, None, Some(id)),
        None => page(
            StatusCode::BAD_REQUEST,
            locale,
            Some((texts(locale).missing, false)),
            None,
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageForm {
    invitation_id: String,
    shared_secret: String,
}

/// `POST /invitations/accept`: verifies and shows the result.
pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<PageForm>, FormRejection>,
) -> Response {
    let locale = locale_of(&headers);
    let t = texts(locale);
    let Ok(Form(form)) = form else {
        return page(
            StatusCode::BAD_REQUEST,
            locale,
            Some((t.missing, false)),
            None,
        );
    };
    let ctx = &state.invitations;
    let ip = ctx.client_ip(peer, &headers);
    let id = form.invitation_id.as_str();
    let outcome = ctx
        .verify(ip, id, &form.shared_secret, &Claimed::default())
        .await;
    match outcome {
        Ok(Verification::Accepted(_)) => {
            page(StatusCode::OK, locale, Some((t.accepted, true)), None)
        }
        Ok(Verification::Mismatch) => page(
            StatusCode::BAD_REQUEST,
            locale,
            Some((t.mismatch, false)),
            Some(id),
        ),
        Ok(Verification::Refused(refusal)) => {
            let text = match refusal {
                Refusal::Expired => t.expired,
                Refusal::Revoked => t.revoked,
                Refusal::Locked => t.locked,
                _ => t.not_open,
            };
            page(StatusCode::CONFLICT, locale, Some((text, false)), None)
        }
        Ok(Verification::TooManyAttempts(secs)) => {
            let mut res = page(
                StatusCode::TOO_MANY_REQUESTS,
                locale,
                Some((t.too_many, false)),
                None,
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            res
        }
        Err(err) => err.into_response(),
    }
}
