//! Invitations: states, types, the rules for new invitations and for each action.

use super::{ValidationError, check_text, etag, ids::ResourceId, time::Timestamp};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvitationState {
    Sent,
    Accepted,
    Completed,
    Revoked,
    Expired,
}

impl InvitationState {
    pub const ALL: [InvitationState; 5] = [
        Self::Sent,
        Self::Accepted,
        Self::Completed,
        Self::Revoked,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Accepted => "accepted",
            Self::Completed => "completed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

impl fmt::Display for InvitationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvitationType {
    Joint,
    AuthorizedSigner,
    ProductPromotion,
}

impl InvitationType {
    pub const ALL: [InvitationType; 3] =
        [Self::Joint, Self::AuthorizedSigner, Self::ProductPromotion];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joint => "joint",
            Self::AuthorizedSigner => "authorizedSigner",
            Self::ProductPromotion => "productPromotion",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The request field naming the resource an invitation of this type is about: its holders
    /// see the invitation, and the inviter must be entitled to it. A product promotion is the
    /// institution's own and names none.
    pub fn resource_field(self) -> Option<&'static str> {
        match self {
            Self::Joint => Some("accountUri"),
            Self::AuthorizedSigner => Some("organizationUri"),
            Self::ProductPromotion => None,
        }
    }

    /// Of an account and an organization URI, the one this type names.
    fn resource_of<'a>(
        self,
        account_uri: Option<&'a str>,
        organization_uri: Option<&'a str>,
    ) -> Option<&'a str> {
        match self {
            Self::Joint => account_uri,
            Self::AuthorizedSigner => organization_uri,
            Self::ProductPromotion => None,
        }
    }
}

/// One invitation as stored. `sealed_secret` is the AEAD-sealed shared secret, never the text;
/// `sealed_identification` the sealed government id digits (plain digits on invitations created
/// before they were sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct Invitation {
    pub id: ResourceId,
    pub kind: InvitationType,
    pub state: InvitationState,
    pub email_address: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub sealed_identification: Option<String>,
    pub account_uri: Option<String>,
    pub organization_uri: Option<String>,
    pub role: Option<String>,
    pub inviter_full_name: String,
    pub sealed_secret: String,
    pub attributes: Option<serde_json::Value>,
    pub verification_count: i64,
    pub failed_verifications: i64,
    pub send_count: i64,
    /// The inviter's username.
    pub created_by: String,
    /// The inviter's customer id (the token subject's user id): the owner.
    pub customer_id: String,
    /// The inviter's core customer group, from their token, when it names one.
    pub customer_group: Option<String>,
    pub revision: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Why an action is refused in the invitation's current state (409s, each with the seed's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotRevokable(InvitationState),
    NotCompletable(InvitationState),
    NotResendable(InvitationState),
    ResendLimitReached(i64),
    NotUpdatable(InvitationState),
    Expired,
    Revoked,
    NotVerifiable(InvitationState),
    Locked,
}

/// Whether an accepted action changed anything (an idempotent repeat does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

impl Invitation {
    /// The invitation as it is at `now`: a `sent` invitation past its expiry is `expired`, with
    /// the revision and update time the sweeper gives it, so the entity tag does not change when
    /// the sweeper persists it.
    pub fn as_of(mut self, now: Timestamp) -> Self {
        if self.state == InvitationState::Sent && self.expires_at <= now {
            self.state = InvitationState::Expired;
            self.revision += 1;
            self.updated_at = self.expires_at.max(self.updated_at);
        }
        self
    }

    pub fn etag(&self) -> String {
        etag::for_revision(self.revision)
    }

    /// The account or organization whose holders may see the invitation: only the URI its type
    /// names, whatever else a row may carry.
    pub fn resource_uri(&self) -> Option<&str> {
        self.kind.resource_of(
            self.account_uri.as_deref(),
            self.organization_uri.as_deref(),
        )
    }

    /// Too many wrong secrets since the secret was last set.
    pub fn is_locked(&self, max_failures: i64) -> bool {
        self.failed_verifications >= max_failures
    }

    fn touch(&mut self, now: Timestamp) {
        self.revision += 1;
        self.updated_at = now.max(self.updated_at);
    }

    /// Revoke: only from `sent`; a repeat on a revoked invitation changes nothing.
    pub fn revoke(&mut self, now: Timestamp) -> Result<Changed, Refusal> {
        match self.state {
            InvitationState::Sent => {
                self.state = InvitationState::Revoked;
                self.touch(now);
                Ok(Changed::Yes)
            }
            InvitationState::Revoked => Ok(Changed::No),
            other => Err(Refusal::NotRevokable(other)),
        }
    }

    /// Complete: only from `accepted`; a repeat on a completed invitation changes nothing.
    pub fn complete(&mut self, now: Timestamp) -> Result<Changed, Refusal> {
        match self.state {
            InvitationState::Accepted => {
                self.state = InvitationState::Completed;
                self.touch(now);
                Ok(Changed::Yes)
            }
            InvitationState::Completed => Ok(Changed::No),
            other => Err(Refusal::NotCompletable(other)),
        }
    }

    /// How many more times the email may be re-sent under `limit` resends.
    pub fn resends_left(&self, limit: i64) -> i64 {
        (limit - (self.send_count - 1)).max(0)
    }

    /// Resend: only `sent`, at most `limit` times after the first email.
    pub fn resend(&mut self, now: Timestamp, limit: i64) -> Result<(), Refusal> {
        if self.state != InvitationState::Sent {
            return Err(Refusal::NotResendable(self.state));
        }
        if self.resends_left(limit) == 0 {
            return Err(Refusal::ResendLimitReached(limit));
        }
        self.send_count += 1;
        self.touch(now);
        Ok(())
    }

    /// A new shared secret (already sealed), only while `sent`; it also lifts a lock.
    pub fn replace_secret(&mut self, now: Timestamp, sealed: String) -> Result<(), Refusal> {
        if self.state != InvitationState::Sent {
            return Err(Refusal::NotUpdatable(self.state));
        }
        self.sealed_secret = sealed;
        self.failed_verifications = 0;
        self.touch(now);
        Ok(())
    }

    /// Whether a verification attempt may be compared at all.
    pub fn check_verifiable(&self, max_failures: i64) -> Result<(), Refusal> {
        match self.state {
            InvitationState::Sent if self.is_locked(max_failures) => Err(Refusal::Locked),
            InvitationState::Sent => Ok(()),
            InvitationState::Expired => Err(Refusal::Expired),
            InvitationState::Revoked => Err(Refusal::Revoked),
            other => Err(Refusal::NotVerifiable(other)),
        }
    }

    /// Records a verification attempt after `check_verifiable` passed.
    pub fn record_verification(&mut self, now: Timestamp, matched: bool) {
        self.verification_count += 1;
        if matched {
            self.state = InvitationState::Accepted;
        } else {
            self.failed_verifications += 1;
        }
        self.touch(now);
    }
}

/// The validated content of a create request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvitation {
    pub kind: InvitationType,
    pub email_address: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub identification: Option<String>,
    pub account_uri: Option<String>,
    pub organization_uri: Option<String>,
    pub role: Option<String>,
    pub inviter_full_name: String,
    pub shared_secret: SharedSecret,
    pub attributes: Option<serde_json::Value>,
}

/// A shared secret of 8 to 256 characters (the seed's `minLength: 8`; the maximum is tandem's).
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(String);

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(***)")
    }
}

impl SharedSecret {
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        check_text(field, value, 8, 256)?;
        if value.trim().chars().count() < 8 {
            return Err(ValidationError::new(
                field,
                "must have at least 8 characters besides spaces",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A bare email address, as the mailer parses it at delivery (lettre's `Address`: no display
/// name, no angle brackets, no empty or dotted-out parts), so that nothing accepted here fails
/// to parse when it is sent. Besides: one `@`, a domain name with a dot (no IP literal), no
/// spaces, at most 254 characters. Whether the mailbox exists is the mail server's business.
pub fn parse_email(field: &str, value: &str) -> Result<String, ValidationError> {
    check_text(field, value, 3, 254)?;
    // The local part is a dot-atom (no quoted strings or comments, which the mailer would
    // rewrite), so the address delivered to is exactly the address stored.
    let is_atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    let valid = match value.split_once('@') {
        Some((local, domain)) => {
            local.chars().all(is_atext)
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('[')
                && !value.chars().any(char::is_whitespace)
                && value.parse::<lettre::Address>().is_ok()
        }
        None => false,
    };
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ValidationError::new(field, "is not an email address"))
    }
}

/// An account or organization URI: 1 to 2048 printable characters without spaces.
pub fn parse_resource_uri(field: &str, value: &str) -> Result<String, ValidationError> {
    check_text(field, value, 1, 2048)?;
    if value.chars().any(char::is_whitespace) {
        return Err(ValidationError::new(field, "must not contain spaces"));
    }
    Ok(value.to_owned())
}

/// The raw fields of a create request, before validation.
#[derive(Debug, Default)]
pub struct NewInvitationInput<'a> {
    pub kind: &'a str,
    pub email_address: &'a str,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub identification: Option<&'a str>,
    pub account_uri: Option<&'a str>,
    pub organization_uri: Option<&'a str>,
    pub role: Option<&'a str>,
    /// The request's `inviterFullName`, used only when `inviter_name_from_token` is None.
    pub inviter_full_name: &'a str,
    /// The inviter's name as their token gives it (see `inviter_name_from_token`).
    pub inviter_name_from_token: Option<&'a str>,
    pub shared_secret: &'a str,
    pub attributes: Option<serde_json::Value>,
}

fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    value
        .map(|v| check_text(field, v, 1, max).map(|()| v.to_owned()))
        .transpose()
}

impl NewInvitation {
    /// Checks the fields and the type rules: `joint` needs `accountUri`, `authorizedSigner` needs
    /// `organizationUri`, neither type takes the other's URI and a product promotion takes
    /// neither, and `role` belongs to `authorizedSigner` only. The inviter's name is the token's
    /// when it has one; otherwise the request's, which must read as a name.
    pub fn parse(input: NewInvitationInput<'_>) -> Result<Self, ValidationError> {
        let kind = InvitationType::parse(input.kind).ok_or_else(|| {
            ValidationError::new(
                "type",
                "must be joint, authorizedSigner or productPromotion",
            )
        })?;
        let identification = input
            .identification
            .map(|v| {
                if is_identification_digits(v) {
                    Ok(v.to_owned())
                } else {
                    Err(ValidationError::new(
                        "identification",
                        "must be the last 4 digits of the government id",
                    ))
                }
            })
            .transpose()?;
        let account_uri = input
            .account_uri
            .map(|v| parse_resource_uri("accountUri", v))
            .transpose()?;
        let organization_uri = input
            .organization_uri
            .map(|v| parse_resource_uri("organizationUri", v))
            .transpose()?;
        match kind {
            InvitationType::Joint if account_uri.is_none() => {
                return Err(ValidationError::new(
                    "accountUri",
                    "is required for a joint invitation",
                ));
            }
            InvitationType::AuthorizedSigner if organization_uri.is_none() => {
                return Err(ValidationError::new(
                    "organizationUri",
                    "is required for an authorizedSigner invitation",
                ));
            }
            _ => {}
        }
        let named = kind.resource_field();
        for (field, given) in [
            ("accountUri", account_uri.is_some()),
            ("organizationUri", organization_uri.is_some()),
        ] {
            if given && named != Some(field) {
                return Err(ValidationError::new(
                    field,
                    format!("does not apply to a {} invitation", kind.as_str()),
                ));
            }
        }
        if kind != InvitationType::AuthorizedSigner && input.role.is_some() {
            return Err(ValidationError::new(
                "role",
                "applies to authorizedSigner invitations only",
            ));
        }
        let inviter_full_name = match input.inviter_name_from_token {
            Some(name) => name.to_owned(),
            None => parse_inviter_full_name("inviterFullName", input.inviter_full_name)?,
        };
        if let Some(attributes) = &input.attributes
            && !attributes.is_object()
        {
            return Err(ValidationError::new("attributes", "must be an object"));
        }
        Ok(Self {
            kind,
            email_address: parse_email("emailAddress", input.email_address)?,
            first_name: optional_text("firstName", input.first_name, 100)?,
            last_name: optional_text("lastName", input.last_name, 100)?,
            identification,
            account_uri,
            organization_uri,
            role: optional_text("role", input.role, 100)?,
            inviter_full_name,
            shared_secret: SharedSecret::parse("sharedSecret", input.shared_secret)?,
            attributes: input.attributes,
        })
    }

    /// The resource whose holders may see the invitation and must entitle the inviter.
    pub fn resource_uri(&self) -> Option<&str> {
        self.kind.resource_of(
            self.account_uri.as_deref(),
            self.organization_uri.as_deref(),
        )
    }
}

/// The longest inviter name, from a request or a token.
const INVITER_NAME_MAX_CHARS: usize = 200;

/// The inviter's full name from their token's `given_name` and `family_name`, when it has a
/// usable one (either part may be empty). A name tandem cannot show (too long, control
/// characters) counts as none: the identity provider owns it, as it owns the customer group.
pub fn inviter_name_from_token(given_name: &str, family_name: &str) -> Option<String> {
    let name = [given_name.trim(), family_name.trim()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    check_text("inviterFullName", &name, 1, INVITER_NAME_MAX_CHARS)
        .is_ok()
        .then_some(name)
}

/// The fewest digits, in one run of digits and phone separators, that read as a phone number.
const PHONE_DIGITS: usize = 7;

/// An inviter name a request gives, which starts the subject of an email the bank sends: 1 to
/// 200 characters with no `@`, nothing that reads as a web address (`://`, `www.`, or a dot
/// between letters or digits as in `bank-login.example`) and no run of 7 or more digits, which
/// may be spaced or split by `+ - . ( ) /` (a phone number).
pub fn parse_inviter_full_name(field: &str, value: &str) -> Result<String, ValidationError> {
    check_text(field, value, 1, INVITER_NAME_MAX_CHARS)?;
    if value.contains('@') {
        return Err(ValidationError::new(field, "must not contain @"));
    }
    let lower = value.to_lowercase();
    let chars: Vec<char> = value.chars().collect();
    let dotted_host = chars
        .windows(3)
        .any(|w| w[1] == '.' && w[0].is_alphanumeric() && w[2].is_alphanumeric());
    if lower.contains("://") || lower.contains("www.") || dotted_host {
        return Err(ValidationError::new(
            field,
            "must be a name, not a web address",
        ));
    }
    let mut digits_in_run = 0;
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits_in_run += 1;
            if digits_in_run >= PHONE_DIGITS {
                return Err(ValidationError::new(
                    field,
                    "must be a name, not a phone number",
                ));
            }
        } else if !matches!(c, ' ' | '+' | '-' | '.' | '(' | ')' | '/') {
            digits_in_run = 0;
        }
    }
    Ok(value.to_owned())
}

/// The associated data that binds a sealed `identification` to its invitation. It differs from
/// the shared secret's (the id alone), so neither sealed value opens in the other's place: `#`
/// is never part of an id.
pub fn identification_binding(invitation_id: &str) -> String {
    format!("{invitation_id}#identification")
}

/// Four ASCII digits: what a request's `identification` must be, and how invitations created
/// before it was sealed store it (a sealed value is longer and starts with a version prefix).
pub fn is_identification_digits(value: &str) -> bool {
    value.len() == 4 && value.bytes().all(|b| b.is_ascii_digit())
}

/// The response language: `es` when the weighted `Accept-Language` prefers Spanish over
/// English, else `en`.
pub fn negotiate_locale(accept_language: Option<&str>) -> &'static str {
    let Some(header) = accept_language else {
        return "en";
    };
    let mut best: Option<(f32, &'static str)> = None;
    for part in header.split(',') {
        let mut pieces = part.split(';');
        let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = pieces
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let locale = match primary {
            "es" => "es",
            "en" => "en",
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, locale));
        }
    }
    best.map_or("en", |(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input<'a>() -> NewInvitationInput<'a> {
        NewInvitationInput {
            kind: "joint",
            email_address: "Max.Peck@nasa.example.com",
            account_uri: Some("https://api.example.com/accounts/account/7443d485"),
            inviter_full_name: "Maxine Peck",
            shared_secret: "obsolete obese octopus",
            ..Default::default()
        }
    }

    fn invitation() -> Invitation {
        let new = NewInvitation::parse(input()).unwrap();
        Invitation {
            id: ResourceId::generate(),
            kind: new.kind,
            state: InvitationState::Sent,
            email_address: new.email_address,
            first_name: None,
            last_name: None,
            sealed_identification: None,
            account_uri: new.account_uri,
            organization_uri: None,
            role: None,
            inviter_full_name: new.inviter_full_name,
            sealed_secret: "sealed".into(),
            attributes: None,
            verification_count: 0,
            failed_verifications: 0,
            send_count: 1,
            created_by: "maxinepeck123".into(),
            customer_id: "customer-1".into(),
            customer_group: None,
            revision: 1,
            created_at: Timestamp::from_millis(1000),
            updated_at: Timestamp::from_millis(1000),
            expires_at: Timestamp::from_millis(10_000),
        }
    }

    #[test]
    fn type_rules() {
        assert!(NewInvitation::parse(input()).is_ok());
        let e = NewInvitation::parse(NewInvitationInput {
            account_uri: None,
            ..input()
        })
        .unwrap_err();
        assert_eq!(e.field, "accountUri");
        let e = NewInvitation::parse(NewInvitationInput {
            kind: "authorizedSigner",
            ..input()
        })
        .unwrap_err();
        assert_eq!(e.field, "organizationUri");
        let e = NewInvitation::parse(NewInvitationInput {
            role: Some("signer"),
            ..input()
        })
        .unwrap_err();
        assert_eq!(e.field, "role");
        let e = NewInvitation::parse(NewInvitationInput {
            kind: "cousin",
            ..input()
        })
        .unwrap_err();
        assert_eq!(e.field, "type");
        let promo = NewInvitation::parse(NewInvitationInput {
            kind: "productPromotion",
            account_uri: None,
            ..input()
        })
        .unwrap();
        assert_eq!(promo.resource_uri(), None);
    }

    #[test]
    fn only_the_uri_the_type_names_is_taken() {
        let parse = |kind, account: Option<&'static str>, organization: Option<&'static str>| {
            NewInvitation::parse(NewInvitationInput {
                kind,
                account_uri: account,
                organization_uri: organization,
                ..input()
            })
            .map_err(|e| e.field)
        };
        let (account, org) = (
            Some("https://bank.example/a/1"),
            Some("https://bank.example/o/1"),
        );
        assert_eq!(parse("joint", account, org), Err("organizationUri".into()));
        assert_eq!(
            parse("authorizedSigner", account, org),
            Err("accountUri".into())
        );
        assert_eq!(
            parse("productPromotion", account, None),
            Err("accountUri".into())
        );
        assert_eq!(
            parse("productPromotion", None, org),
            Err("organizationUri".into())
        );
        assert!(parse("joint", account, None).is_ok());
        assert!(parse("authorizedSigner", None, org).is_ok());
        assert!(parse("productPromotion", None, None).is_ok());
        // A stored row carrying both (planted before this rule) is seen through its type's URI.
        let mut inv = invitation();
        inv.kind = InvitationType::AuthorizedSigner;
        inv.organization_uri = Some("org".into());
        assert_eq!(inv.resource_uri(), Some("org"));
        inv.kind = InvitationType::ProductPromotion;
        assert_eq!(inv.resource_uri(), None);
    }

    #[test]
    fn the_tokens_name_wins_and_a_requests_name_must_read_as_a_name() {
        let named = |token: Option<&'static str>, body: &'static str| {
            NewInvitation::parse(NewInvitationInput {
                inviter_full_name: body,
                inviter_name_from_token: token,
                ..input()
            })
            .map(|n| n.inviter_full_name)
            .map_err(|e| e.field)
        };
        assert_eq!(
            named(Some("Casey Customer"), "Visit http://x.example"),
            Ok("Casey Customer".to_owned())
        );
        assert_eq!(named(None, "Maxine Peck"), Ok("Maxine Peck".to_owned()));
        assert_eq!(
            named(None, "Call http://x.example"),
            Err("inviterFullName".into())
        );
        assert_eq!(
            inviter_name_from_token(" Maxine ", ""),
            Some("Maxine".to_owned())
        );
        assert_eq!(
            inviter_name_from_token("Maxine", "Peck"),
            Some("Maxine Peck".to_owned())
        );
        assert_eq!(inviter_name_from_token("", "  "), None);
        assert_eq!(inviter_name_from_token("Max\nBcc: x", "Peck"), None);
        for accepted in [
            "Maxine Peck",
            "Dr. J. R. Smith Jr.",
            "José Núñez-O'Neil",
            "Henry Ford 2nd",
            "Agent 007",
        ] {
            assert!(
                parse_inviter_full_name("inviterFullName", accepted).is_ok(),
                "{accepted}"
            );
        }
        for (refused, why) in [
            ("max@example.com", "@"),
            ("Win at https://prize.example", "web address"),
            ("Visit www.prize", "web address"),
            ("bank-login.example", "web address"),
            ("Call 555-123-4567", "phone"),
            ("Call (555) 123 4567", "phone"),
            ("+1 555 1234567", "phone"),
            ("Max 5551234", "phone"),
            ("", "at least"),
        ] {
            let err = parse_inviter_full_name("inviterFullName", refused).unwrap_err();
            assert_eq!(err.field, "inviterFullName");
            assert!(err.message.contains(why), "{refused}: {}", err.message);
        }
    }

    #[test]
    fn field_checks_name_the_field() {
        for (case, field) in [
            (
                NewInvitationInput {
                    shared_secret: "short",
                    ..input()
                },
                "sharedSecret",
            ),
            (
                NewInvitationInput {
                    shared_secret: "   a    ",
                    ..input()
                },
                "sharedSecret",
            ),
            (
                NewInvitationInput {
                    email_address: "no-at-sign",
                    ..input()
                },
                "emailAddress",
            ),
            (
                NewInvitationInput {
                    identification: Some("12345"),
                    ..input()
                },
                "identification",
            ),
            (
                NewInvitationInput {
                    inviter_full_name: "",
                    ..input()
                },
                "inviterFullName",
            ),
            (
                NewInvitationInput {
                    attributes: Some(serde_json::json!([1])),
                    ..input()
                },
                "attributes",
            ),
        ] {
            assert_eq!(NewInvitation::parse(case).unwrap_err().field, field);
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = SharedSecret::parse("s", "obsolete obese octopus").unwrap();
        assert!(!format!("{s:?}").contains("octopus"));
    }

    #[test]
    fn expiry_is_derived_with_the_sweepers_revision() {
        let inv = invitation();
        let before = inv.clone().as_of(Timestamp::from_millis(9_999));
        assert_eq!(before.state, InvitationState::Sent);
        let after = inv.as_of(Timestamp::from_millis(10_000));
        assert_eq!(after.state, InvitationState::Expired);
        assert_eq!(after.revision, 2);
        assert_eq!(after.updated_at, Timestamp::from_millis(10_000));
    }

    #[test]
    fn revoke_and_complete_follow_the_state_machine() {
        let now = Timestamp::from_millis(2000);
        let mut inv = invitation();
        assert_eq!(inv.revoke(now), Ok(Changed::Yes));
        assert_eq!(inv.revision, 2);
        assert_eq!(inv.revoke(now), Ok(Changed::No));
        assert_eq!(inv.revision, 2);
        assert_eq!(
            inv.complete(now),
            Err(Refusal::NotCompletable(InvitationState::Revoked))
        );
        let mut inv = invitation();
        inv.record_verification(now, true);
        assert_eq!(inv.state, InvitationState::Accepted);
        assert_eq!(
            inv.revoke(now),
            Err(Refusal::NotRevokable(InvitationState::Accepted))
        );
        assert_eq!(inv.complete(now), Ok(Changed::Yes));
        assert_eq!(inv.complete(now), Ok(Changed::No));
    }

    #[test]
    fn resend_limit() {
        let now = Timestamp::from_millis(2000);
        let mut inv = invitation();
        assert_eq!(inv.resends_left(2), 2);
        inv.resend(now, 2).unwrap();
        inv.resend(now, 2).unwrap();
        assert_eq!(inv.resend(now, 2), Err(Refusal::ResendLimitReached(2)));
        assert_eq!(inv.send_count, 3);
    }

    #[test]
    fn wrong_secrets_lock_until_the_secret_changes() {
        let now = Timestamp::from_millis(2000);
        let mut inv = invitation();
        for _ in 0..3 {
            inv.check_verifiable(3).unwrap();
            inv.record_verification(now, false);
        }
        assert_eq!(inv.check_verifiable(3), Err(Refusal::Locked));
        assert_eq!(inv.verification_count, 3);
        inv.replace_secret(now, "new".into()).unwrap();
        assert!(inv.check_verifiable(3).is_ok());
        inv.state = InvitationState::Revoked;
        assert_eq!(inv.check_verifiable(3), Err(Refusal::Revoked));
        assert_eq!(
            inv.replace_secret(now, "x".into()),
            Err(Refusal::NotUpdatable(InvitationState::Revoked))
        );
    }

    #[test]
    fn locale_negotiation() {
        assert_eq!(negotiate_locale(None), "en");
        assert_eq!(negotiate_locale(Some("es-MX,es;q=0.9")), "es");
        assert_eq!(negotiate_locale(Some("fr, en;q=0.5, es;q=0.8")), "es");
        assert_eq!(negotiate_locale(Some("fr")), "en");
        assert_eq!(negotiate_locale(Some("es;q=0")), "en");
    }

    #[test]
    fn email_addresses_are_bare_addresses_the_mailer_can_parse() {
        for good in [
            "ana@example.com",
            "ana.nunez+invite@mail.example.co.uk",
            "o'neil@example.org",
            "x@sub-domain.example",
        ] {
            assert_eq!(parse_email("emailAddress", good).as_deref(), Ok(good));
        }
        for bad in [
            "a\"b@x.com",
            "a@example..com",
            ".a@x.com",
            "a.@x.com",
            "a..b@x.com",
            "Evil<evil@example.org>",
            "Evil <evil@example.org>",
            "<evil@example.org>",
            "a@-x.com",
            "a@x.com.",
            "a@[127.0.0.1]",
            "a@localhost",
            "a b@x.com",
            "a@b@x.com",
            "@x.com",
            "a@",
        ] {
            let err = parse_email("emailAddress", bad).unwrap_err();
            assert_eq!(err.field, "emailAddress", "{bad}");
        }
    }

    proptest! {
        /// Whatever a request's name holds, an accepted one carries no address, no link and no
        /// phone number into the email.
        #[test]
        fn an_accepted_inviter_name_carries_no_contact_details(s in "[ a-zA-Z0-9@:/.+()-]{0,40}") {
            if let Ok(name) = parse_inviter_full_name("inviterFullName", &s) {
                prop_assert!(!name.contains('@'));
                prop_assert!(!name.contains("://"));
                let longest_run = name
                    .split(|c: char| !(c.is_ascii_digit() || " +-.()/".contains(c)))
                    .map(|run| run.chars().filter(char::is_ascii_digit).count())
                    .max()
                    .unwrap_or(0);
                prop_assert!(longest_run < PHONE_DIGITS, "{name}");
            }
        }

        #[test]
        fn email_parser_never_panics_and_rejects_spaces(s in "\\PC{0,80}") {
            if let Ok(e) = parse_email("emailAddress", &s) {
                prop_assert!(!e.contains(' '));
                prop_assert!(e.contains('@'));
            }
        }

        /// Whatever is accepted at create builds a message at delivery, to that bare address.
        #[test]
        fn accepted_addresses_build_a_message(
            local in "[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~\"<>()\\[\\]-]{1,20}",
            domain in "[a-zA-Z0-9.-]{1,20}",
        ) {
            let address = format!("{local}@{domain}");
            if let Ok(accepted) = parse_email("emailAddress", &address) {
                let from: lettre::message::Mailbox = "Bank <no-reply@bank.example>".parse().unwrap();
                let rendered = crate::mail::templates::RenderedEmail {
                    subject: "s".into(),
                    text: "t".into(),
                    html: "h".into(),
                };
                let message = crate::mail::message::build("id", &from, &accepted, rendered);
                prop_assert!(message.is_ok(), "{accepted}: {:?}", message.err());
                let to = message.unwrap().envelope().to().to_vec();
                prop_assert_eq!(to.len(), 1);
                prop_assert_eq!(to[0].to_string(), accepted);
            }
        }
    }
}
