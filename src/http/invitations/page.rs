//! The invitee's accept page (`apiture:acceptInvitationUserExperience`): a plain HTML form, no
//! JavaScript, in English or Spanish, that runs the same verification as verifyInvitation.
//! The form is served only when it is posted from the page itself (not from another site).

use super::{Claimed, Verification};
use crate::domain::invitation::{Refusal, negotiate_locale};
use crate::html::escape;
use crate::http::AppState;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
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
    cross_site: &'static str,
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
    cross_site: "This form can only be sent from the invitation page itself. Open the link from your invitation email again.",
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
    cross_site: "Este formulario solo se puede enviar desde la propia página de la invitación. Abra de nuevo el enlace de su correo de invitación.",
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
    add_security_headers(res.headers_mut());
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(lang) = HeaderValue::from_str(locale) {
        headers.insert(header::CONTENT_LANGUAGE, lang);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    res
}

/// The headers of every answer of the page, whatever the outcome. `Referrer-Policy:
/// same-origin` rather than `no-referrer`: under `no-referrer` browsers send `Origin: null`
/// with the page's own form, which the cross-site check must refuse; `same-origin` still
/// sends nothing (not the invitation id in the address) anywhere else.
fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}

/// A web origin as browsers compare them: scheme, host (any case) and port (the scheme's
/// default when not written).
#[derive(Debug, PartialEq, Eq)]
pub struct WebOrigin {
    scheme: String,
    host: String,
    port: u16,
}

impl WebOrigin {
    /// The origin of an absolute `http` or `https` URL (an `Origin` value, a `Referer`, the
    /// configured `public_url`); None for anything else (`null` included).
    pub fn of_url(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = default_port(&scheme)?;
        let authority = uri.authority()?;
        Some(Self {
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
            scheme,
        })
    }

    /// Whether this origin names `host` (a `Host` header), whatever its scheme: without
    /// `public_url` the service does not know the scheme its clients use (a proxy in front may
    /// end TLS).
    fn names_host(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<Authority>() else {
            return false;
        };
        let port = authority
            .port_u16()
            .or_else(|| default_port(&self.scheme))
            .unwrap_or_default();
        authority.host().eq_ignore_ascii_case(&self.host) && port == self.port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Whether a form was posted from another site. `Sec-Fetch-Site`, which no page can forge,
/// refuses `cross-site` and `same-site` (a sibling host is another party too). Then `Origin`,
/// or without it `Referer`, must be the service's origin: `public_url`'s when configured, else
/// the request's `Host`. A request with none of these headers is served: older clients send
/// none, while every current browser sends `Origin` with a form from another site.
fn is_cross_site(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let site = headers
        .get("sec-fetch-site")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if site.eq_ignore_ascii_case(b"cross-site") || site.eq_ignore_ascii_case(b"same-site") {
        return true;
    }
    let Some(source) = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
    else {
        return false;
    };
    let Some(origin) = source.to_str().ok().and_then(WebOrigin::of_url) else {
        return true;
    };
    match public_url {
        Some(url) => WebOrigin::of_url(url).is_none_or(|service| service != origin),
        None => !headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .is_some_and(|host| origin.names_host(host)),
    }
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
    if is_cross_site(&headers, state.config.public_url.as_deref()) {
        return page(
            StatusCode::FORBIDDEN,
            locale,
            Some((t.cross_site, false)),
            None,
        );
    }
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
        Err(err) => {
            let mut res = err.into_response();
            add_security_headers(res.headers_mut());
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Option<WebOrigin> {
        WebOrigin::of_url(url)
    }

    #[test]
    fn origins_compare_as_browsers_compare_them() {
        assert_eq!(
            origin("https://Bank.Example"),
            origin("https://bank.example:443/invitations/accept?invitationId=x")
        );
        assert_eq!(origin("http://[::1]:8080"), origin("http://[::1]:8080/"));
        assert_ne!(
            origin("http://bank.example"),
            origin("https://bank.example")
        );
        assert_ne!(
            origin("https://bank.example"),
            origin("https://bank.example:8443")
        );
        for not_an_origin in [
            "null",
            "",
            "bank.example",
            "/invitations/accept",
            "ftp://bank.example",
        ] {
            assert_eq!(origin(not_an_origin), None, "{not_an_origin:?}");
        }
    }

    #[test]
    fn without_public_url_the_origin_must_name_the_host() {
        let page = origin("http://127.0.0.1:8080/invitations/accept").unwrap();
        assert!(page.names_host("127.0.0.1:8080"));
        assert!(!page.names_host("127.0.0.1:8081"));
        assert!(!page.names_host("127.0.0.1"), "port 80 is not 8080");
        let behind_tls = origin("https://bank.example").unwrap();
        assert!(behind_tls.names_host("Bank.Example"));
        assert!(behind_tls.names_host("bank.example:443"));
        assert!(!behind_tls.names_host("bank.example.attacker.example"));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_form_from_another_site_is_recognised() {
        let public = Some("https://bank.example");
        for (pairs, public_url, cross) in [
            (&[][..], public, false),
            (&[("origin", "https://bank.example")], public, false),
            (
                &[("referer", "https://bank.example/invitations/accept")],
                public,
                false,
            ),
            (&[("sec-fetch-site", "same-origin")], public, false),
            (&[("sec-fetch-site", "none")], public, false),
            (&[("origin", "https://attacker.example")], public, true),
            (&[("origin", "null")], public, true),
            (&[("referer", "https://attacker.example/")], public, true),
            (&[("sec-fetch-site", "cross-site")], public, true),
            (&[("sec-fetch-site", "Same-Site")], public, true),
            (
                &[
                    ("origin", "https://attacker.example"),
                    ("referer", "https://bank.example/"),
                ],
                public,
                true,
            ),
            (
                &[
                    ("origin", "http://127.0.0.1:8080"),
                    ("host", "127.0.0.1:8080"),
                ],
                None,
                false,
            ),
            (
                &[
                    ("origin", "http://127.0.0.1:8080"),
                    ("host", "127.0.0.1:9090"),
                ],
                None,
                true,
            ),
            (&[("origin", "http://127.0.0.1:8080")], None, true),
        ] {
            assert_eq!(
                is_cross_site(&headers(pairs), public_url),
                cross,
                "{pairs:?} {public_url:?}"
            );
        }
    }

    #[test]
    fn public_url_must_be_an_http_url() {
        use crate::config::Config;
        for (url, ok) in [
            ("https://bank.example/", true),
            ("http://127.0.0.1:8080", true),
            ("bank.example", false),
            ("ftp://bank.example", false),
        ] {
            let config = Config {
                public_url: Some(url.to_owned()),
                ..Config::default()
            };
            let checked = config.check();
            assert_eq!(checked.is_ok(), ok, "{url}: {checked:?}");
        }
    }
}
