//! Rendering outbox messages into emails, from the template files under `templates/mail/`.
//!
//! Each kind has, per language, a subject, a plain-text body and an HTML body. Templates see only
//! the fields parsed from the payload here, never the payload itself, so an extra key (a shared
//! secret, say) can never reach an email. HTML templates escape every value (minijinja's
//! auto-escaping for `.html` names).

use minijinja::{AutoEscape, Environment, UndefinedBehavior, context};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The three parts of a rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no template for email kind {0:?}")]
    UnknownKind(String),
    #[error("invalid {kind} payload: {reason}")]
    InvalidPayload { kind: &'static str, reason: String },
    #[error("rendering template {name}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
}

/// The languages templates exist in; anything else falls back to English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    En,
    Es,
}

impl Locale {
    /// The language of a BCP 47 tag such as `es`, `es-MX` or `en_US` (case-insensitive).
    pub fn negotiate(tag: &str) -> Self {
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("es") {
            Locale::Es
        } else {
            Locale::En
        }
    }

    fn code(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Es => "es",
        }
    }

    /// A date and time as readers of this language expect it, in UTC.
    fn format_instant(self, at: OffsetDateTime) -> String {
        const EN: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        const ES: [&str; 12] = [
            "enero",
            "febrero",
            "marzo",
            "abril",
            "mayo",
            "junio",
            "julio",
            "agosto",
            "septiembre",
            "octubre",
            "noviembre",
            "diciembre",
        ];
        let at = at.to_offset(time::UtcOffset::UTC);
        let month = usize::from(u8::from(at.month())) - 1;
        let (day, year, hour, minute) = (at.day(), at.year(), at.hour(), at.minute());
        match self {
            Locale::En => format!("{} {day}, {year} at {hour:02}:{minute:02} UTC", EN[month]),
            Locale::Es => {
                format!(
                    "{day} de {} de {year} a las {hour:02}:{minute:02} UTC",
                    ES[month]
                )
            }
        }
    }
}

/// The `invitation` payload the Invitations API enqueues. Unknown keys are ignored on purpose.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvitationPayload {
    invitation_id: String,
    accept_url: String,
    inviter_full_name: String,
    // The invitee's names are optional in the seed's createInvitation.
    #[serde(default)]
    invitee_first_name: Option<String>,
    #[serde(default)]
    invitee_last_name: Option<String>,
    invitation_type: InvitationType,
    expires_at: String,
}

/// The names the invitation gives, or none (the greeting then names no one).
fn invitee_name(first: Option<String>, last: Option<String>) -> Option<String> {
    let name = [first, last]
        .into_iter()
        .flatten()
        .filter(|n| !n.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!name.is_empty()).then_some(name)
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
enum InvitationType {
    Joint,
    AuthorizedSigner,
    ProductPromotion,
}

impl InvitationType {
    fn as_str(self) -> &'static str {
        match self {
            InvitationType::Joint => "joint",
            InvitationType::AuthorizedSigner => "authorizedSigner",
            InvitationType::ProductPromotion => "productPromotion",
        }
    }
}

/// Every template file, compiled into the binary so a deployment cannot lose one.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "invitation.en.subject.txt",
        include_str!("../../templates/mail/invitation.en.subject.txt"),
    ),
    (
        "invitation.en.txt",
        include_str!("../../templates/mail/invitation.en.txt"),
    ),
    (
        "invitation.en.html",
        include_str!("../../templates/mail/invitation.en.html"),
    ),
    (
        "invitation.es.subject.txt",
        include_str!("../../templates/mail/invitation.es.subject.txt"),
    ),
    (
        "invitation.es.txt",
        include_str!("../../templates/mail/invitation.es.txt"),
    ),
    (
        "invitation.es.html",
        include_str!("../../templates/mail/invitation.es.html"),
    ),
];

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn load() -> anyhow::Result<Self> {
        let mut env = Environment::new();
        // A misspelt variable is an error, not an empty string in a customer's inbox.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_formatter(|out, state, value| match value.as_str() {
            Some(text) if *state.auto_escape() == AutoEscape::Html && !value.is_safe() => out
                .write_str(&crate::html::escape(text))
                .map_err(Into::into),
            _ => minijinja::escape_formatter(out, state, value),
        });
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| anyhow::anyhow!("compiling email template {name}: {e:#}"))?;
        }
        Ok(Self { env })
    }

    /// Renders an outbox message. Errors leave the message queued for a later attempt.
    pub fn render(
        &self,
        kind: &str,
        locale: &str,
        payload: &serde_json::Value,
    ) -> Result<RenderedEmail, RenderError> {
        let locale = Locale::negotiate(locale);
        match kind {
            "invitation" => self.render_invitation(locale, payload),
            other => Err(RenderError::UnknownKind(other.to_owned())),
        }
    }

    fn render_invitation(
        &self,
        locale: Locale,
        payload: &serde_json::Value,
    ) -> Result<RenderedEmail, RenderError> {
        let invalid = |reason: String| RenderError::InvalidPayload {
            kind: "invitation",
            reason,
        };
        let p = InvitationPayload::deserialize(payload).map_err(|e| invalid(e.to_string()))?;
        // The link is the one thing a reader clicks: only web links, never `javascript:` & co.
        if !(p.accept_url.starts_with("https://") || p.accept_url.starts_with("http://")) {
            return Err(invalid("acceptUrl must be an http(s) URL".into()));
        }
        let expires_at = OffsetDateTime::parse(&p.expires_at, &Rfc3339)
            .map_err(|e| invalid(format!("expiresAt is not RFC 3339: {e}")))?;
        let ctx = context! {
            invitation_id => p.invitation_id,
            accept_url => p.accept_url,
            inviter_full_name => p.inviter_full_name,
            invitee_name => invitee_name(p.invitee_first_name, p.invitee_last_name),
            invitation_type => p.invitation_type.as_str(),
            expires_at => locale.format_instant(expires_at),
        };
        let render = |part: &str| {
            let name = format!("invitation.{}.{part}", locale.code());
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&ctx))
                .map_err(|source| RenderError::Template { name, source })
        };
        Ok(RenderedEmail {
            subject: one_line(&render("subject.txt")?),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

/// A subject is one header line: control characters and runs of spaces become one space.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(kind: &str) -> serde_json::Value {
        json!({
            "invitationId": "0b0fa3d2-1a4b-4c5d-9e8f-001122334455",
            "acceptUrl": "https://bank.example/invitations/accept?invitationId=0b0fa3d2",
            "inviterFullName": "Max Pike",
            "inviteeFirstName": "Ana",
            "inviteeLastName": "Núñez",
            "invitationType": kind,
            "expiresAt": "2026-12-23T18:05:00.000Z",
        })
    }

    /// What a browser shows for the escapes minijinja writes.
    fn unescape(html: &str) -> String {
        html.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    fn render(locale: &str, payload: &serde_json::Value) -> RenderedEmail {
        Templates::load()
            .unwrap()
            .render("invitation", locale, payload)
            .unwrap()
    }

    #[test]
    fn invitations_without_names_greet_no_one() {
        for (locale, greeting) in [("en", "Hello,"), ("es", "Hola:")] {
            for absent in [json!(null), json!("  ")] {
                let mut p = payload("joint");
                p["inviteeFirstName"] = absent.clone();
                p["inviteeLastName"] = absent;
                let m = render(locale, &p);
                assert!(m.text.starts_with(greeting), "{}", m.text);
                assert!(m.html.contains(&format!("<p>{greeting}</p>")), "{}", m.html);
            }
            let mut p = payload("joint");
            p.as_object_mut().unwrap().remove("inviteeLastName");
            assert!(render(locale, &p).text.contains("Ana"));
        }
    }

    #[test]
    fn english_says_who_what_how_and_until_when() {
        let m = render("en", &payload("joint"));
        assert_eq!(
            m.subject,
            "Max Pike invited you to become a joint owner of their account"
        );
        for body in [&m.text, &unescape(&m.html)] {
            assert!(body.contains("Ana Núñez"), "{body}");
            assert!(body.contains("joint owner of their account"), "{body}");
            assert!(
                body.contains("https://bank.example/invitations/accept?invitationId=0b0fa3d2"),
                "{body}"
            );
            assert!(body.contains("December 23, 2026 at 18:05 UTC"), "{body}");
            assert!(body.contains("through another channel"), "{body}");
        }
        assert!(m.html.contains(
            r#"<a href="https://bank.example/invitations/accept?invitationId=0b0fa3d2""#
        ));
        let signer = render("en", &payload("authorizedSigner"));
        assert!(
            signer
                .subject
                .contains("authorized signer for their business")
        );
        let promo = render("en", &payload("productPromotion"));
        assert!(promo.subject.contains("try one of our products"));
    }

    #[test]
    fn spanish_is_chosen_by_language_and_region_tags() {
        for tag in ["es", "es-MX", "ES_es"] {
            let m = render(tag, &payload("authorizedSigner"));
            assert_eq!(
                m.subject,
                "Max Pike le invitó a ser firmante autorizado de su empresa"
            );
            assert!(m.text.contains("23 de diciembre de 2026 a las 18:05 UTC"));
            assert!(m.html.contains("Aceptar la invitación"));
            assert!(m.text.contains("por otro medio"));
        }
    }

    #[test]
    fn other_languages_fall_back_to_english() {
        for tag in ["fr", "", "de-DE"] {
            assert_eq!(
                render(tag, &payload("joint")),
                render("en", &payload("joint"))
            );
        }
    }

    #[test]
    fn html_escapes_names_and_text_keeps_them() {
        let mut p = payload("joint");
        p["inviterFullName"] = json!("<script>alert(\"x\")</script> & Co");
        p["acceptUrl"] = json!("https://bank.example/accept?a=1&b=\"><img>");
        let m = render("en", &p);
        assert!(!m.html.contains("<script>"), "{}", m.html);
        assert!(
            m.html
                .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co"),
            "{}",
            m.html
        );
        assert!(!m.html.contains("\"><img>"), "{}", m.html);
        assert!(m.text.contains("<script>alert(\"x\")</script> & Co"));
        assert!(m.subject.starts_with("<script>"));
    }

    #[test]
    fn extra_payload_keys_never_reach_the_email() {
        let mut p = payload("joint");
        p["sharedSecret"] = json!("correct-horse-battery-staple");
        p["secret"] = json!("correct-horse-battery-staple");
        let m = render("en", &p);
        for part in [&m.subject, &m.text, &m.html] {
            assert!(!part.contains("correct-horse"), "{part}");
        }
    }

    #[test]
    fn subjects_are_one_line() {
        let mut p = payload("joint");
        p["inviterFullName"] = json!("Max\r\nBcc: victim@example.com");
        let m = render("en", &p);
        assert!(!m.subject.contains(['\r', '\n']), "{}", m.subject);
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        let t = Templates::load().unwrap();
        assert!(matches!(
            t.render("newsletter", "en", &payload("joint")),
            Err(RenderError::UnknownKind(k)) if k == "newsletter"
        ));
        let mut p = payload("partner");
        assert!(matches!(
            t.render("invitation", "en", &p),
            Err(RenderError::InvalidPayload { .. })
        ));
        p = payload("joint");
        p["acceptUrl"] = json!("javascript:alert(1)");
        assert!(t.render("invitation", "en", &p).is_err());
        p = payload("joint");
        p["expiresAt"] = json!("next tuesday");
        assert!(t.render("invitation", "en", &p).is_err());
        p = payload("joint");
        p.as_object_mut().unwrap().remove("inviterFullName");
        let err = t.render("invitation", "en", &p).unwrap_err();
        assert!(err.to_string().contains("inviterFullName"), "{err}");
        assert!(
            t.render("invitation", "en", &json!("not an object"))
                .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_names_render_escaped_in_html_and_verbatim_in_text(
            // Any printable text that is not all white space (which greets no one).
            name in "\\PC{0,39}[\\p{L}\\p{N}\\p{P}\\p{S}]",
            secret in "[a-zA-Z0-9]{12,24}",
        ) {
            let mut p = payload("joint");
            p["inviteeFirstName"] = json!(name);
            p["sharedSecret"] = json!(secret);
            let m = render("en", &p);
            proptest::prop_assert!(m.text.contains(&name));
            proptest::prop_assert!(m.html.contains(&crate::html::escape(&name)));
            proptest::prop_assert_eq!(unescape(&crate::html::escape(&name)), name.clone());
            let escaped = crate::html::escape(&name);
            proptest::prop_assert!(!escaped.contains(['<', '>', '"', '\'']));
            for part in [&m.subject, &m.text, &m.html] {
                proptest::prop_assert!(!part.contains(&secret));
            }
        }
    }
}
