//! Customer audience connections: the state machine and the rules for new connections.

use super::{ValidationError, check_text, ids::ResourceId, time::Timestamp, user::UserRef};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Pending,
    Active,
    Inactive,
    Failed,
}

impl ConnectionState {
    pub const ALL: [ConnectionState; 4] =
        [Self::Active, Self::Inactive, Self::Pending, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The states from which an explicit change to `self` is allowed (DESIGN.md):
    /// `pending -> active | inactive | failed`, `active -> inactive | failed`,
    /// `inactive -> active`, `failed -> active | inactive`.
    pub fn allowed_sources(self) -> &'static [ConnectionState] {
        use ConnectionState::*;
        match self {
            Active => &[Pending, Inactive, Failed],
            Inactive => &[Pending, Active, Failed],
            Failed => &[Pending, Active],
            Pending => &[],
        }
    }

    pub fn can_become(self, target: ConnectionState) -> bool {
        target.allowed_sources().contains(&self)
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action request against the current state amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The state changes.
    Changed,
    /// Already in the target state: nothing changes (the actions are idempotent).
    Unchanged,
    /// The state machine forbids it (409).
    Forbidden,
}

pub fn plan_transition(current: ConnectionState, target: ConnectionState) -> TransitionOutcome {
    if current == target {
        TransitionOutcome::Unchanged
    } else if current.can_become(target) {
        TransitionOutcome::Changed
    } else {
        TransitionOutcome::Forbidden
    }
}

/// What an action (`/active`, `/inactive`, `/failed`) does to a connection, given the request's
/// optional `If-Match`: the precondition is checked first, then the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionDecision {
    Apply,
    AlreadyThere,
    PreconditionFailed,
    Forbidden,
}

pub fn decide_action(
    current: &Connection,
    target: ConnectionState,
    if_match: Option<&super::etag::Condition>,
) -> ActionDecision {
    if let Some(condition) = if_match
        && !condition.matches_strongly(&current.etag())
    {
        return ActionDecision::PreconditionFailed;
    }
    match plan_transition(current.state, target) {
        TransitionOutcome::Changed => ActionDecision::Apply,
        TransitionOutcome::Unchanged => ActionDecision::AlreadyThere,
        TransitionOutcome::Forbidden => ActionDecision::Forbidden,
    }
}

/// A provider name as configured by the institution (the seeds' `text`, at most 80 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderName(String);

impl ProviderName {
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        check_text(field, value, 1, 80)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The seeds' `externalResourceId`: 1..=256 characters of text.
pub fn parse_external_resource_id(field: &str, value: &str) -> Result<String, ValidationError> {
    check_text(field, value, 1, 256)?;
    Ok(value.to_owned())
}

/// `customerAudienceReference`: an audience id and optional name (at most 100 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceRef {
    pub id: ResourceId,
    pub name: Option<String>,
}

impl AudienceRef {
    pub fn parse(id: &str, name: Option<&str>) -> Result<Self, ValidationError> {
        let id = ResourceId::parse("id", id)?;
        if let Some(name) = name {
            check_text("name", name, 0, 100)?;
        }
        Ok(Self {
            id,
            name: name.map(str::to_owned),
        })
    }
}

/// A validated request to connect an audience to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConnection {
    pub audience: AudienceRef,
    pub provider: ProviderName,
    /// Link this existing provider resource instead of having the provider create one.
    pub link_resource_id: Option<String>,
}

/// A stored connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: ResourceId,
    pub audience: AudienceRef,
    pub provider: ProviderName,
    pub connected_resource_id: Option<String>,
    pub state: ConnectionState,
    /// Why the connection is `failed`, when it is.
    pub state_reason: Option<String>,
    pub revision: i64,
    pub created_at: Timestamp,
    pub created_by: UserRef,
    pub updated_at: Timestamp,
    pub updated_by: UserRef,
    pub last_synced_at: Option<Timestamp>,
}

impl Connection {
    pub fn etag(&self) -> String {
        super::etag::for_revision(self.revision)
    }
}

/// Parses the list operation's `state` filter: pipe-delimited, 1..=4 unique known states.
pub fn parse_state_filter(value: &str) -> Result<Vec<ConnectionState>, ValidationError> {
    let mut states = Vec::new();
    for name in value.split('|') {
        let state = ConnectionState::parse(name).ok_or_else(|| {
            ValidationError::new(
                "state",
                format!("{name:?} is not one of active, inactive, pending, failed"),
            )
        })?;
        if states.contains(&state) {
            return Err(ValidationError::new(
                "state",
                format!("{name:?} is repeated"),
            ));
        }
        states.push(state);
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::ConnectionState::*;
    use super::*;

    #[test]
    fn the_transition_table_of_the_design() {
        let allowed = [
            (Pending, Active),
            (Pending, Inactive),
            (Pending, Failed),
            (Active, Inactive),
            (Active, Failed),
            (Inactive, Active),
            (Failed, Active),
            (Failed, Inactive),
        ];
        for from in ConnectionState::ALL {
            for to in ConnectionState::ALL {
                let expected = if from == to {
                    TransitionOutcome::Unchanged
                } else if allowed.contains(&(from, to)) {
                    TransitionOutcome::Changed
                } else {
                    TransitionOutcome::Forbidden
                };
                assert_eq!(plan_transition(from, to), expected, "{from} -> {to}");
            }
        }
    }

    fn sample(state: ConnectionState, revision: i64) -> Connection {
        let user = UserRef {
            id: "admin-1".into(),
            username: "admin".into(),
            first_name: "A".into(),
            last_name: "B".into(),
        };
        Connection {
            id: ResourceId::generate(),
            audience: AudienceRef::parse("audience-1", None).unwrap(),
            provider: ProviderName::parse("name", "file").unwrap(),
            connected_resource_id: None,
            state,
            state_reason: None,
            revision,
            created_at: Timestamp::from_millis(0),
            created_by: user.clone(),
            updated_at: Timestamp::from_millis(0),
            updated_by: user,
            last_synced_at: None,
        }
    }

    #[test]
    fn actions_check_the_precondition_before_the_state_machine() {
        use super::super::etag::Condition;
        let c = sample(Active, 4);
        let stale = Condition::parse("If-Match", "\"r3\"").unwrap();
        let fresh = Condition::parse("If-Match", "\"r4\"").unwrap();
        assert_eq!(
            decide_action(&c, Pending, Some(&stale)),
            ActionDecision::PreconditionFailed
        );
        assert_eq!(
            decide_action(&c, Active, Some(&stale)),
            ActionDecision::PreconditionFailed
        );
        assert_eq!(
            decide_action(&c, Inactive, Some(&fresh)),
            ActionDecision::Apply
        );
        assert_eq!(
            decide_action(&c, Active, None),
            ActionDecision::AlreadyThere
        );
        assert_eq!(
            decide_action(&sample(Inactive, 1), Failed, None),
            ActionDecision::Forbidden
        );
    }

    #[test]
    fn state_names_round_trip() {
        for s in ConnectionState::ALL {
            assert_eq!(ConnectionState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ConnectionState::parse("Active"), None);
    }

    #[test]
    fn state_filter_rules() {
        assert_eq!(parse_state_filter("active").unwrap(), vec![Active]);
        assert_eq!(
            parse_state_filter("active|failed|pending|inactive")
                .unwrap()
                .len(),
            4
        );
        assert!(parse_state_filter("active|active").is_err());
        assert!(parse_state_filter("").is_err());
        assert!(parse_state_filter("active|").is_err());
        assert!(parse_state_filter("done").is_err());
    }

    #[test]
    fn audience_and_provider_constraints() {
        assert!(AudienceRef::parse("590c0c441f3241de9526", Some("New Customers")).is_ok());
        assert_eq!(AudienceRef::parse("bad id", None).unwrap_err().field, "id");
        assert_eq!(
            AudienceRef::parse("590c0c441f3241de9526", Some(&"x".repeat(101)))
                .unwrap_err()
                .field,
            "name"
        );
        assert!(ProviderName::parse("name", "pendo").is_ok());
        assert!(ProviderName::parse("name", "").is_err());
        assert!(ProviderName::parse("name", &"p".repeat(81)).is_err());
        assert!(parse_external_resource_id("resourceId", &"r".repeat(257)).is_err());
    }
}
