//! `/invitations`: the Invitations API, its HAL representations, who may see and do what, and
//! the invitee's accept page.

pub mod api;
pub mod doc;
pub mod forwarded;
pub mod page;

use super::error::ApiError;
use super::link_base::LinkBase;
use crate::auth::Caller;
use crate::config::InvitationsConfig;
use crate::domain::attempts::{AttemptLimit, client_key};
use crate::domain::ids::ResourceId;
use crate::domain::invitation::{
    Invitation, InvitationState, Refusal, identification_binding, is_identification_digits,
};
use crate::domain::sealed::{SealError, SecretBox, secrets_match};
use crate::domain::time::Timestamp;
use crate::store::attempts::AttemptCounter;
use crate::store::entitlements::{Entitlement, Entitlements};
use crate::store::invitations::{Effect, InvitationRepository};
use crate::store::outbox::OutboxMessage;
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub const BASE: &str = "/invitations";
pub const COLLECTION: &str = "/invitations/invitations";
/// The accept page's path and query, up to the invitation's id.
const ACCEPT_PATH: &str = "/invitations/accept?invitationId=";

/// Everything the Invitations operations share.
pub struct InvitationsContext {
    pub repo: Arc<dyn InvitationRepository>,
    pub entitlements: Arc<dyn Entitlements>,
    pub secrets: SecretBox,
    pub settings: InvitationsConfig,
    /// The externally visible base URL, for the accept-page link (no trailing slash): the
    /// configured one, never a request's, since the link goes into email.
    pub public_url: String,
    /// The base of each response's other links.
    pub links: LinkBase,
    pub attempts: Arc<dyn AttemptCounter>,
}

/// What the caller may do with one invitation they can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The inviter: sees the secret, may act.
    Owner,
    /// Institution staff: see the secret, may act and complete.
    Staff,
    /// Another holder of the account or organization: sees it without the secret, may not act.
    Viewer,
}

impl Access {
    pub fn may_act(self) -> bool {
        matches!(self, Self::Owner | Self::Staff)
    }
}

/// The scopes of the Invitations API; `banking/full` covers all.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    Read,
    Write,
    Delete,
}

pub fn require_scope(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    let needed = match scope {
        Scope::Read => "banking/read",
        Scope::Write => "banking/write",
        Scope::Delete => "banking/delete",
    };
    if caller.has_scope(needed) || caller.has_scope("banking/full") {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "This operation needs the {needed} (or banking/full) scope"
        )))
    }
}

/// How a verification attempt ended.
#[derive(Debug)]
pub enum Verification {
    Accepted(Box<Invitation>),
    /// Wrong secret or data, or no such invitation: the caller is not told which.
    Mismatch,
    Refused(Refusal),
    TooManyAttempts(u64),
}

/// The optional identity data a verification may carry besides the secret.
#[derive(Debug, Default)]
pub struct Claimed<'a> {
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub identification: Option<&'a str>,
}

impl InvitationsContext {
    pub fn new(
        repo: Arc<dyn InvitationRepository>,
        entitlements: Arc<dyn Entitlements>,
        attempts: Arc<dyn AttemptCounter>,
        secrets: SecretBox,
        settings: InvitationsConfig,
        public_url: String,
        links: LinkBase,
    ) -> Self {
        Self {
            repo,
            entitlements,
            secrets,
            settings,
            public_url: public_url.trim_end_matches('/').to_owned(),
            links,
            attempts,
        }
    }

    fn attempt_limit(&self) -> AttemptLimit {
        AttemptLimit {
            max_attempts: self.settings.verify_max_attempts_per_ip,
            window_ms: (self.settings.verify_window_secs * 1000) as i64,
            block_ms: (self.settings.verify_block_secs * 1000) as i64,
        }
    }

    /// The client address: the TCP peer, or, when configured to trust the proxy in front, the
    /// `X-Forwarded-For` entry that proxy added (the peer when that entry is no address).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let forwarded = self
            .settings
            .trust_forwarded_for
            .then(|| forwarded::proxy_added_address(headers))
            .flatten();
        forwarded.unwrap_or_else(|| peer.ip().to_canonical())
    }

    /// The invitee's verification: counts the attempt against the client address, then
    /// compares the secret (and any identity data) against the locked invitation, accepting
    /// it at most once.
    pub async fn verify(
        &self,
        ip: IpAddr,
        invitation_id: &str,
        secret: &str,
        claimed: &Claimed<'_>,
    ) -> Result<Verification, ApiError> {
        let counted = self
            .attempts
            .try_attempt(
                &client_key(ip),
                self.attempt_limit(),
                Timestamp::now().millis(),
            )
            .await?;
        if let Err(retry_after) = counted {
            return Ok(Verification::TooManyAttempts(retry_after));
        }
        let Ok(id) = ResourceId::parse("invitationId", invitation_id) else {
            return Ok(Verification::Mismatch);
        };
        let max_failures = self.settings.max_failed_verifications;
        let mut outcome = Verification::Mismatch;
        let mut broken_seal = false;
        let changed = self
            .repo
            .modify(&id, &mut |inv: &mut Invitation| {
                if let Err(refusal) = inv.check_verifiable(max_failures) {
                    outcome = Verification::Refused(refusal);
                    return Effect::None;
                }
                let (Ok(expected), Ok(identification)) = (
                    self.secrets.open(inv.id.as_str(), &inv.sealed_secret),
                    self.open_identification(inv),
                ) else {
                    broken_seal = true;
                    return Effect::None;
                };
                let matched = secrets_match(secret, &expected)
                    && claimed.matches(inv, identification.as_deref());
                inv.record_verification(Timestamp::now(), matched);
                outcome = if matched {
                    Verification::Accepted(Box::new(inv.clone()))
                } else {
                    Verification::Mismatch
                };
                Effect::Save
            })
            .await?;
        if broken_seal {
            return Err(ApiError::internal(anyhow::anyhow!(
                "the shared secret or identification of invitation {id} does not open with the \
                 configured key"
            )));
        }
        if changed.is_none() {
            return Ok(Verification::Mismatch);
        }
        Ok(outcome)
    }

    /// What the caller may do with `inv`; None means they may not see it (404).
    pub async fn access(
        &self,
        caller: &Caller,
        inv: &Invitation,
    ) -> Result<Option<Access>, ApiError> {
        if caller.admin || inv.customer_id == caller.user.id {
            return Ok(access_given(caller, inv, &[]));
        }
        let held = self.held_by(&caller.user.id).await?;
        Ok(access_given(caller, inv, &held))
    }

    /// The accounts and organizations a customer holds, whatever their role (any holder may see
    /// the invitations on them). An entitlements source that fails makes the request fail with
    /// 503: answering without it could show or allow too much.
    pub async fn held_by(&self, customer_id: &str) -> Result<Vec<String>, ApiError> {
        self.entitlements_of(customer_id)
            .await
            .map(|held| held.into_iter().map(|e| e.resource_uri).collect())
    }

    /// A customer's entitlements, with their roles (503 when the source fails, as `held_by`).
    pub async fn entitlements_of(&self, customer_id: &str) -> Result<Vec<Entitlement>, ApiError> {
        self.entitlements
            .of_customer(customer_id)
            .await
            .map_err(entitlements_unavailable)
    }

    /// The invitation's government id digits, opened (or as stored, when plain).
    pub fn open_identification(&self, inv: &Invitation) -> Result<Option<String>, SealError> {
        inv.sealed_identification
            .as_deref()
            .map(|stored| {
                if is_identification_digits(stored) {
                    Ok(stored.to_owned())
                } else {
                    self.secrets
                        .open(&identification_binding(inv.id.as_str()), stored)
                }
            })
            .transpose()
    }

    /// Seals government id digits for the invitation `id`.
    pub fn seal_identification(&self, id: &ResourceId, digits: &str) -> String {
        self.secrets
            .seal(&identification_binding(id.as_str()), digits)
    }

    pub async fn joint_owners_disabled(&self, account_uri: &str) -> Result<bool, ApiError> {
        self.entitlements
            .joint_owners_disabled(account_uri)
            .await
            .map_err(entitlements_unavailable)
    }

    /// The invitation if the caller may see it, else 404 (whether or not it exists).
    pub async fn visible(
        &self,
        caller: &Caller,
        id: &ResourceId,
    ) -> Result<(Invitation, Access), ApiError> {
        let inv = self.repo.get(id).await?.ok_or_else(|| not_found(id))?;
        match self.access(caller, &inv).await? {
            Some(access) => Ok((inv, access)),
            None => Err(not_found(id)),
        }
    }

    pub fn accept_url(&self, id: &ResourceId) -> String {
        api::Href(&self.public_url, ACCEPT_PATH, id.as_str()).text()
    }

    /// The invitation email for the outbox; it never carries the shared secret.
    pub fn email(&self, inv: &Invitation, locale: &str) -> OutboxMessage {
        OutboxMessage {
            kind: "invitation".to_owned(),
            recipient: inv.email_address.clone(),
            locale: locale.to_owned(),
            payload: json!({
                "invitationId": inv.id.as_str(),
                "acceptUrl": self.accept_url(&inv.id),
                "inviterFullName": inv.inviter_full_name,
                "inviteeFirstName": inv.first_name,
                "inviteeLastName": inv.last_name,
                "invitationType": inv.kind.as_str(),
                "expiresAt": inv.expires_at.to_rfc3339(),
            }),
        }
    }

    pub fn is_locked(&self, inv: &Invitation) -> bool {
        inv.is_locked(self.settings.max_failed_verifications)
    }

    /// The background sweeper: every `sweep_interval_secs`, persists expired invitations and
    /// forgets creates past the daily cap's window and finished per-address attempt windows,
    /// until `stop` turns true. Running it on
    /// several instances at once is harmless: each statement is idempotent.
    pub async fn sweep_until_stopped(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks =
            tokio::time::interval(Duration::from_secs(self.settings.sweep_interval_secs));
        loop {
            tokio::select! {
                _ = ticks.tick() => self.sweep().await,
                _ = stop.changed() => return,
            }
        }
    }

    async fn sweep(&self) {
        let now = Timestamp::now();
        match self.repo.sweep_expired(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "invitations expired"),
            Err(err) => tracing::warn!(error = format!("{err:#}"), "expiring invitations failed"),
        }
        if let Err(err) = self.repo.prune_creations(now).await {
            tracing::warn!(
                error = format!("{err:#}"),
                "pruning counted invitation creates failed"
            );
        }
        let window = self.attempt_limit().window_ms;
        if let Err(err) = self.attempts.prune(now.millis() - window).await {
            tracing::warn!(
                error = format!("{err:#}"),
                "pruning verification attempts failed"
            );
        }
    }
}

/// What the caller may do with `inv`, given the resources they hold.
pub fn access_given(caller: &Caller, inv: &Invitation, held: &[String]) -> Option<Access> {
    if caller.admin {
        return Some(Access::Staff);
    }
    if inv.customer_id == caller.user.id {
        return Some(Access::Owner);
    }
    // Only the URI the invitation's type names: another one on the row was never checked
    // against the inviter's entitlements.
    inv.resource_uri()
        .is_some_and(|uri| held.iter().any(|h| h == uri))
        .then_some(Access::Viewer)
}

impl Claimed<'_> {
    /// Identity data given with a verification must match where the invitation has it (names
    /// ignoring case and surrounding spaces); `identification` is the invitation's, opened.
    fn matches(&self, inv: &Invitation, identification: Option<&str>) -> bool {
        let same = |given: Option<&str>, known: Option<&str>| match (given, known) {
            (Some(g), Some(k)) => g.trim().to_lowercase() == k.trim().to_lowercase(),
            _ => true,
        };
        same(self.first_name, inv.first_name.as_deref())
            && same(self.last_name, inv.last_name.as_deref())
            && same(self.identification, identification)
    }
}

fn entitlements_unavailable(err: crate::store::StoreError) -> ApiError {
    tracing::error!(error = format!("{err:#}"), "entitlements lookup failed");
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "entitlementsUnavailable",
        "Service Unavailable",
        "Account entitlements cannot be checked right now; retry later",
    );
    e.retry_after_secs = Some(30);
    e
}

pub fn not_found(id: &ResourceId) -> ApiError {
    ApiError::not_found(format!("There is no invitation {id}"))
}

/// The 409 (with the seed's error types and remediation) for an action the state forbids.
pub fn refusal_error(refusal: Refusal) -> ApiError {
    let state_attr = |s: InvitationState| json!({ "state": s.as_str() });
    match refusal {
        Refusal::NotRevokable(s) => ApiError::conflict(
            "verificationInvitationNotRevokable",
            "Not Revokable",
            format!("The invitation you are attempting to revoke is not in the sent state (it is {s})"),
        )
        .with_attributes(state_attr(s))
        .with_remediation("Only invitations in the sent state can be revoked. One cannot revoke an invitation after it has expired, been accepted, or is completed."),
        Refusal::NotCompletable(s) => ApiError::conflict(
            "invitationNotCompletable",
            "Not Completable",
            format!("Only an accepted invitation can be completed (this one is {s})"),
        )
        .with_attributes(state_attr(s))
        .with_remediation("Complete an invitation after the invitee has accepted it."),
        Refusal::NotResendable(s) => ApiError::conflict(
            "invitationNotResendable",
            "Not Resendable",
            format!("Only a sent invitation can be sent again (this one is {s})"),
        )
        .with_attributes(state_attr(s))
        .with_remediation("Create a new invitation instead."),
        Refusal::ResendLimitReached(limit) => ApiError::conflict(
            "invitationResendLimitReached",
            "Resend Limit Reached",
            format!("The invitation has already been re-sent {limit} times, the most allowed"),
        )
        .with_attributes(json!({ "resendLimit": limit }))
        .with_remediation("Revoke this invitation and create a new one, or contact the invitee another way."),
        Refusal::NotUpdatable(s) => ApiError::conflict(
            "invitationNotUpdatable",
            "Not Updatable",
            format!("The shared secret can only be changed while the invitation is sent (it is {s})"),
        )
        .with_attributes(state_attr(s))
        .with_remediation("Create a new invitation instead."),
        Refusal::Expired => ApiError::conflict(
            "verificationInvitationExpired",
            "Invitation Expired",
            "The invitation you are attempting to accept is expired.",
        )
        .with_remediation("Check to ensure that you are following the latest invitation email or contact your inviter."),
        Refusal::Revoked => ApiError::conflict(
            "verificationInvitationRevoked",
            "Invitation Revoked",
            "The invitation you are attempting to accept is revoked.",
        )
        .with_remediation("Check to ensure that you are following the latest invitation email or contact your inviter."),
        Refusal::NotVerifiable(s) => ApiError::conflict(
            "verificationInvitationNotSent",
            "Invitation Not Sent",
            format!("Only an invitation in the sent state can be verified (this one is {s})"),
        )
        .with_attributes(state_attr(s))
        .with_remediation("The invitation has already been accepted; nothing more is needed."),
        Refusal::Locked => ApiError::conflict(
            "verificationInvitationLocked",
            "Invitation Locked",
            "The invitation is locked after too many attempts with a wrong shared secret.",
        )
        .with_remediation("Ask your inviter to set a new shared secret."),
    }
}

/// The answer to a wrong secret (or unknown invitation): it does not say which datum was wrong.
pub fn mismatch_error() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "verificationFailed",
        "Verification Failed",
        "The invitation could not be verified with the data given",
    )
    .with_remediation("Check the shared secret with your inviter and try again.")
}
