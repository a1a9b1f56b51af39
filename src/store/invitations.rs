//! Invitations in SQL, and their emails in the outbox in the same transaction.

use super::db::RowsById;
use super::outbox::{OutboxMessage, enqueue};
use super::record::{Count, FromRecord, Record};
use super::sql::{DerivedColumns, Param, Repeated, SqlBuilder, params};
use super::{Backend, Db, StoreError, Tx};
use crate::domain::filter::{Condition, Filter, Op, SortKey};
use crate::domain::ids::ResourceId;
use crate::domain::invitation::{Invitation, InvitationState, InvitationType};
use crate::domain::time::Timestamp;
use anyhow::Context;
use async_trait::async_trait;
use std::cell::RefCell;
use std::sync::Arc;

/// The fields of `filter` and `sortBy` (the seed's getInvitations), over the columns of the
/// invitations table (`state` is the state as of now, see `EffectiveState`).
pub const FIELDS: &[crate::domain::filter::FieldSpec] = {
    use crate::domain::filter::FieldSpec;
    const TEXT: &[Op] = &[Op::Eq, Op::Contains, Op::Search];
    const ENUM: &[Op] = &[Op::Eq, Op::Ne, Op::In];
    &[
        FieldSpec {
            name: "state",
            column: EFFECTIVE_STATE,
            ops: ENUM,
            sortable: true,
        },
        FieldSpec {
            name: "type",
            column: "type",
            ops: ENUM,
            sortable: true,
        },
        FieldSpec {
            name: "emailAddress",
            column: "email_address",
            ops: TEXT,
            sortable: false,
        },
        FieldSpec {
            name: "accountUri",
            column: "account_uri",
            ops: TEXT,
            sortable: false,
        },
        FieldSpec {
            name: "organizationUri",
            column: "organization_uri",
            ops: TEXT,
            sortable: false,
        },
        FieldSpec {
            name: "createdBy",
            column: "created_by",
            ops: TEXT,
            sortable: false,
        },
        FieldSpec {
            name: "customerId",
            column: "customer_id",
            ops: TEXT,
            sortable: false,
        },
    ]
};

/// Who may see which invitations.
#[derive(Debug, Clone)]
pub enum Visibility {
    /// Staff see every invitation.
    All,
    /// A customer sees their own invitations and those on the accounts or organizations they
    /// are entitled to.
    Customer {
        customer_id: String,
        resources: Vec<String>,
    },
}

/// A list request: subset parameters, search, sort and the page.
#[derive(Debug, Clone)]
pub struct InvitationQuery {
    pub visibility: Visibility,
    pub states: Vec<InvitationState>,
    pub types: Vec<InvitationType>,
    /// Compared case-insensitively.
    pub email_addresses: Vec<String>,
    pub account_uris: Vec<String>,
    pub organization_uris: Vec<String>,
    /// `q`: a case-insensitive substring of the names, the email address or the inviter's name.
    pub search: Option<String>,
    /// The `filter` expression, over the columns of `FIELDS`.
    pub filter: Option<Filter>,
    /// `sortBy`; creation order breaks ties and is the default.
    pub sort: Vec<SortKey>,
    pub start: i64,
    pub limit: i64,
}

/// The most values a list's own conditions (its subset parameters, `q` and `filter`) may bind.
/// Each is bound once per statement, however many of the customer's reaches repeat it (see
/// `Shared`), and each reach's index walk tests it: a customer holding 16 accounts had 33
/// reaches, and four lists binding 680 values in each made another customer's plain list take
/// 2.1 s instead of 3.5 ms. The caps on `in()` and on a subset parameter's alternatives
/// (`MAX_ALTERNATIVES`) keep the subset parameters and `q` under it on their own (at most 3 + 3
/// x 100 + 4 values and the time of the request): only a filter can pass it.
pub const MAX_BOUND_VALUES: usize = 400;

/// Why a list was not read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The request's conditions bind more than `MAX_BOUND_VALUES` values; `parameter` is the
    /// query parameter whose values go past it.
    #[error(
        "{parameter}: the list's conditions bind {values} values, more than the \
         {MAX_BOUND_VALUES} a list takes"
    )]
    TooManyValues {
        parameter: &'static str,
        values: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a change to one invitation writes.
#[derive(Debug)]
pub enum Effect {
    /// Nothing (a refusal, a failed precondition, or an idempotent repeat).
    None,
    Save,
    /// Save and queue this email in the same transaction.
    SaveAndSend(OutboxMessage),
    /// Delete the row, in the transaction that checked it (so a condition such as `If-Match`
    /// holds for the row deleted, not for an earlier read).
    Delete,
}

/// The caps a new invitation is counted against, in the transaction that stores it, so that
/// creates at the same moment cannot pass them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateCaps {
    /// The most invitations the inviter may create in any 24 hours; None: no cap (staff).
    pub per_customer_per_day: Option<i64>,
    /// The most open invitations (sent, not expired) on the account or organization the
    /// invitation names; None: no cap.
    pub open_per_resource: Option<i64>,
}

/// Which cap a create would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapReached {
    /// The inviter's creates in the last 24 hours; a place frees in `retry_after_ms`.
    CustomerDaily { limit: i64, retry_after_ms: i64 },
    /// Open invitations on the account or organization.
    OpenOnResource { limit: i64 },
}

/// The window of `CreateCaps::per_customer_per_day`: a rolling 24 hours.
pub const CREATE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// A change applied to the invitation as it is when locked; returns what to write.
pub type Change<'a> = &'a mut (dyn FnMut(&mut Invitation) -> Effect + Send);

#[async_trait]
pub trait InvitationRepository: Send + Sync {
    /// Stores a new invitation and queues its email in one transaction, unless it would pass one
    /// of `caps` (then nothing is written).
    async fn insert(
        &self,
        invitation: &Invitation,
        email: &OutboxMessage,
        caps: &CreateCaps,
    ) -> Result<Result<(), CapReached>, StoreError>;
    /// The invitation as of now (expiry derived), if it exists.
    async fn get(&self, id: &ResourceId) -> Result<Option<Invitation>, StoreError>;
    /// One page of the matching invitations (as of now) and the number of all matches, when it
    /// is known cheaply (see `COUNT_LIMIT`). Refused, before anything runs, when the request's
    /// conditions bind more than `MAX_BOUND_VALUES` values.
    async fn list(
        &self,
        query: &InvitationQuery,
    ) -> Result<(Vec<Invitation>, Option<i64>), ListError>;
    /// Applies `change` atomically to the locked row; the invitation afterwards, or None when
    /// there is none.
    async fn modify(
        &self,
        id: &ResourceId,
        change: Change<'_>,
    ) -> Result<Option<Invitation>, StoreError>;
    /// Persists the expiry of every `sent` invitation past its time; returns how many.
    async fn sweep_expired(&self, now: Timestamp) -> Result<u64, StoreError>;
    /// Forgets the creates that no longer count against a daily cap.
    async fn prune_creations(&self, now: Timestamp) -> Result<u64, StoreError>;
}

macro_rules! columns {
    () => {
        "id, type, state, email_address, first_name, last_name, identification, account_uri, \
         organization_uri, role, inviter_full_name, sealed_secret, attributes, \
         verification_count, failed_verifications, send_count, created_by, customer_id, \
         customer_group, revision, created_at, updated_at, expires_at"
    };
}

pub struct SqlInvitations {
    db: Db,
    by_id: RowsById<Invitation>,
}

impl SqlInvitations {
    pub fn new(db: Db) -> Self {
        let by_id = db.rows_by_id(
            "invitations",
            concat!("SELECT ", columns!(), " FROM invitations"),
            |row: &Invitation| row.id.as_str(),
        );
        Self { db, by_id }
    }
}

impl FromRecord for Invitation {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        let kind: String = row.column("type")?;
        let state: String = row.column("state")?;
        let attributes: Option<String> = row.column("attributes")?;
        Ok(Invitation {
            id: ResourceId::from_trusted(row.column("id")?),
            kind: InvitationType::parse(&kind)
                .with_context(|| format!("stored invitation type {kind:?} is unknown"))?,
            state: InvitationState::parse(&state)
                .with_context(|| format!("stored invitation state {state:?} is unknown"))?,
            email_address: row.column("email_address")?,
            first_name: row.column("first_name")?,
            last_name: row.column("last_name")?,
            sealed_identification: row.column("identification")?,
            account_uri: row.column("account_uri")?,
            organization_uri: row.column("organization_uri")?,
            role: row.column("role")?,
            inviter_full_name: row.column("inviter_full_name")?,
            sealed_secret: row.column("sealed_secret")?,
            attributes: attributes
                .map(|a| serde_json::from_str(&a))
                .transpose()
                .context("stored invitation attributes are not JSON")?,
            verification_count: row.column("verification_count")?,
            failed_verifications: row.column("failed_verifications")?,
            send_count: row.column("send_count")?,
            created_by: row.column("created_by")?,
            customer_id: row.column("customer_id")?,
            customer_group: row.column("customer_group")?,
            revision: row.column("revision")?,
            created_at: Timestamp::from_millis(row.column("created_at")?),
            updated_at: Timestamp::from_millis(row.column("updated_at")?),
            expires_at: Timestamp::from_millis(row.column("expires_at")?),
        })
    }
}

fn texts<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Param> {
    values
        .into_iter()
        .map(|v| Param::Text(v.to_owned()))
        .collect()
}

/// The largest count a list reports: above it the count is left out, which the seed allows
/// ("may be omitted if the count is not computable efficiently").
pub const COUNT_LIMIT: i64 = 1000;

/// The number of all matches when a page shows it: a page that is not full is the last one,
/// unless it is empty past the end.
fn count_from_page(start: i64, limit: i64, items: usize) -> Option<i64> {
    let items = i64::try_from(items).ok()?;
    (items < limit && (items > 0 || start == 0)).then(|| start.saturating_add(items))
}

/// `'sent', 'expired'`: state names are the domain's own, written as literals so that the
/// planner weighs each one by its share even in a generic plan.
fn state_literals<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(|s| format!("'{s}'")).collect();
    quoted.join(", ")
}

/// What `FIELDS` calls `state`: an invitation's state as of now.
const EFFECTIVE_STATE: &str = "effective_state";

/// An invitation's state as of `now` over the stored columns: a `sent` invitation past its
/// expiry is `expired` until the sweeper stores that.
struct EffectiveState {
    now: Timestamp,
    conditions: StateConditions,
    /// `now`'s placeholder: one per statement, however many conditions and keys use it.
    now_placeholder: RefCell<Repeated>,
}

/// How a list's conditions on the state as of now are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StateConditions {
    /// Staff lists: plain conditions on `state` and `expires_at`, which the state indexes serve
    /// and whose share of the rows the planners can estimate (the `CASE` expression got
    /// PostgreSQL's default 0.5% guess, and sequential scans where 40% of the table matched).
    ByStateIndex,
    /// Customer lists must start from the few invitations the customer may see: offered the
    /// state index, SQLite walked all 400k `sent` invitations in creation order instead (5
    /// lists/s). On SQLite they are the same plain conditions on `+state` and `+expires_at`,
    /// which its planner never takes for an index's constraints but still reads from the
    /// customer's index entries: 3% fewer instructions per customer list than the expression.
    PastIndexes,
    /// On PostgreSQL, which has no unary `+` for text, they are on the `CASE` expression, which
    /// no index serves.
    OnExpression,
}

impl StateConditions {
    fn for_list(query: &InvitationQuery, backend: Backend) -> Self {
        match (&query.visibility, backend) {
            (Visibility::All, _) => StateConditions::ByStateIndex,
            (Visibility::Customer { .. }, Backend::Sqlite) => StateConditions::PastIndexes,
            (Visibility::Customer { .. }, Backend::Postgres) => StateConditions::OnExpression,
        }
    }
}

impl EffectiveState {
    /// For one statement of a list.
    fn for_list(query: &InvitationQuery, backend: Backend, now: Timestamp) -> Self {
        Self {
            now,
            conditions: StateConditions::for_list(query, backend),
            now_placeholder: RefCell::default(),
        }
    }

    fn push_now(&self, q: &mut SqlBuilder) {
        q.push_repeated(&mut self.now_placeholder.borrow_mut(), |q| {
            q.bind(Param::Int(self.now.millis()));
        });
    }

    /// Appends the condition that the state as of now is one of `states`.
    fn push_one_of(&self, q: &mut SqlBuilder, states: &[InvitationState]) {
        if states.is_empty() {
            q.push("(1 = 0)");
            return;
        }
        if self.conditions == StateConditions::OnExpression {
            q.push("(");
            self.push_expression(q, EFFECTIVE_STATE);
            q.push(" IN (")
                .push(&state_literals(states.iter().map(|s| s.as_str())))
                .push("))");
            return;
        }
        let sent = states.contains(&InvitationState::Sent);
        let expired = states.contains(&InvitationState::Expired);
        let mut stored: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        if expired {
            stored.push(InvitationState::Sent.as_str());
        }
        stored.sort_unstable();
        stored.dedup();
        let (state, expires_at) = match self.conditions {
            StateConditions::PastIndexes => ("+state", "+expires_at"),
            _ => ("state", "expires_at"),
        };
        q.push("(")
            .push(state)
            .push(" IN (")
            .push(&state_literals(stored))
            .push(")");
        if sent != expired {
            q.push(" AND (")
                .push(state)
                .push(" <> 'sent' OR ")
                .push(expires_at)
                .push(if sent { " > " } else { " <= " });
            self.push_now(q);
            q.push(")");
        }
        q.push(")");
    }
}

impl DerivedColumns for EffectiveState {
    fn push_condition(&self, q: &mut SqlBuilder, c: &Condition) -> bool {
        if c.column != EFFECTIVE_STATE {
            return false;
        }
        // Every invitation has exactly one of the five states, so each comparison is the set
        // of state names it accepts.
        let accepts = |state: &str| match c.op {
            Op::Eq | Op::In => c.values.iter().any(|v| v == state),
            Op::Ne => c.values[0] != state,
            Op::Contains => state.contains(&c.values[0].to_lowercase()),
            Op::Search => state.starts_with(&c.values[0].to_lowercase()),
        };
        let states: Vec<InvitationState> = InvitationState::ALL
            .into_iter()
            .filter(|s| accepts(s.as_str()))
            .collect();
        self.push_one_of(q, &states);
        true
    }

    fn push_expression(&self, q: &mut SqlBuilder, column: &str) -> bool {
        if column != EFFECTIVE_STATE {
            return false;
        }
        q.push("CASE WHEN state = 'sent' AND expires_at <= ");
        self.push_now(q);
        q.push(" THEN 'expired' ELSE state END");
        true
    }
}

/// Up to this many resources held, a customer's list reads each one's invitations on its own
/// (two reaches each, as an account or as an organization); beyond, it reads them together.
const SPLIT_RESOURCES: usize = 16;

/// One way a list reaches the invitations it may show: all of them (staff), or one of the ways
/// a customer sees theirs.
enum Reach<'a> {
    All,
    /// The customer's own invitations.
    Own(&'a str),
    /// Those of one type on the accounts or organizations the customer holds, by the column
    /// that type names.
    On {
        kind: InvitationType,
        column: &'static str,
        resources: &'a [String],
        /// Which of the customer's groups of resources these are: each group is reached as
        /// accounts and as organizations.
        group: usize,
    },
}

/// The column of the URI an invitation's type names (`InvitationType::resource_field`): the
/// only one its visibility follows.
fn resource_column(kind: InvitationType) -> Option<&'static str> {
    match kind.resource_field()? {
        "accountUri" => Some("account_uri"),
        "organizationUri" => Some("organization_uri"),
        other => unreachable!("no column for the resource field {other}"),
    }
}

impl<'a> Reach<'a> {
    fn of(visibility: &'a Visibility) -> Vec<Reach<'a>> {
        match visibility {
            Visibility::All => vec![Reach::All],
            Visibility::Customer {
                customer_id,
                resources,
            } => {
                let mut reaches = vec![Reach::Own(customer_id)];
                if resources.is_empty() {
                    return reaches;
                }
                // One reach per resource walks each one's invitations in listing order; a
                // reach over several reads all their matches and sorts them.
                let groups: Vec<&[String]> = if resources.len() <= SPLIT_RESOURCES {
                    resources.chunks(1).collect()
                } else {
                    vec![resources]
                };
                for kind in InvitationType::ALL {
                    let Some(column) = resource_column(kind) else {
                        continue;
                    };
                    for (group, resources) in groups.iter().enumerate() {
                        reaches.push(Reach::On {
                            kind,
                            column,
                            resources,
                            group,
                        });
                    }
                }
                reaches
            }
        }
    }
}

/// What the reaches of one statement have in common, written once and repeated by its
/// placeholders (`Repeated`), so that the statement's parameters do not grow with the number of
/// reaches: a customer holding 16 accounts has 33.
#[derive(Default)]
struct Shared {
    /// The request's conditions (`push_conditions`).
    conditions: Repeated,
    /// Each group of resources (`Reach::On::group`), reached as accounts and as organizations.
    resources: Vec<Repeated>,
    /// Each reach's order and share of the page (`push_union_of_keys`).
    tail: Repeated,
}

impl Shared {
    fn resources(&mut self, group: usize) -> &mut Repeated {
        if self.resources.len() <= group {
            self.resources.resize_with(group + 1, Repeated::default);
        }
        &mut self.resources[group]
    }
}

/// `FROM` the invitations, then the ones `reach` reaches and the request's conditions.
fn push_matching(
    q: &mut SqlBuilder,
    query: &InvitationQuery,
    state: &EffectiveState,
    reach: &Reach,
    shared: &mut Shared,
) {
    q.push(" FROM invitations WHERE ");
    match reach {
        Reach::All => q.push("1 = 1"),
        Reach::Own(customer_id) => q
            .push("customer_id = ")
            .bind(Param::Text((*customer_id).to_owned())),
        // The type as a literal: it is the domain's own name, and the account and organization
        // indexes carry it, so the walk decides it in the index.
        Reach::On {
            kind,
            column,
            resources,
            group,
        } => q
            .push("type = '")
            .push(kind.as_str())
            .push("' AND ")
            .push(column)
            .push(" IN ")
            .push_repeated(shared.resources(*group), |q| {
                q.bind_list(texts(resources.iter().map(String::as_str)));
            }),
    };
    q.push_repeated(&mut shared.conditions, |q| {
        push_conditions(q, query, state);
    });
}

/// ` AND` each of the request's conditions. Returns, after each query parameter that has
/// conditions, the number of values bound so far (`now` is bound with the first condition on
/// the state, if any).
fn push_conditions(
    q: &mut SqlBuilder,
    query: &InvitationQuery,
    state: &EffectiveState,
) -> Vec<(&'static str, usize)> {
    let before = q.params().len();
    let mut bound = Vec::new();
    let mut done = |q: &SqlBuilder, parameter| bound.push((parameter, q.params().len() - before));
    if !query.states.is_empty() {
        q.push(" AND ");
        state.push_one_of(q, &query.states);
        done(q, "state");
    }
    if !query.types.is_empty() {
        q.push(" AND type IN ")
            .bind_list(texts(query.types.iter().map(|t| t.as_str())));
        done(q, "type");
    }
    if !query.email_addresses.is_empty() {
        let lowered: Vec<String> = query
            .email_addresses
            .iter()
            .map(|e| e.to_lowercase())
            .collect();
        q.push(" AND LOWER(email_address) IN ")
            .bind_list(texts(lowered.iter().map(String::as_str)));
        done(q, "emailAddress");
    }
    if !query.account_uris.is_empty() {
        q.push(" AND account_uri IN ")
            .bind_list(texts(query.account_uris.iter().map(String::as_str)));
        done(q, "accountUri");
    }
    if !query.organization_uris.is_empty() {
        q.push(" AND organization_uri IN ")
            .bind_list(texts(query.organization_uris.iter().map(String::as_str)));
        done(q, "organizationUri");
    }
    if let Some(search) = &query.search {
        let contains = |column| {
            Filter::Condition(Condition {
                op: Op::Contains,
                column,
                values: vec![search.clone()],
            })
        };
        q.push(" AND ").push_filter(&Filter::Or(vec![
            contains("first_name"),
            contains("last_name"),
            contains("email_address"),
            contains("inviter_full_name"),
        ]));
        done(q, "q");
    }
    if let Some(filter) = &query.filter {
        q.push(" AND ").push_filter_over(filter, state);
        done(q, "filter");
    }
    bound
}

/// Refuses a list whose conditions bind more than `MAX_BOUND_VALUES` values, naming the query
/// parameter that goes past it. They are written here as in each of the list's statements.
fn check_bound_values(
    query: &InvitationQuery,
    backend: Backend,
    now: Timestamp,
) -> Result<(), ListError> {
    let state = EffectiveState::for_list(query, backend, now);
    let bound = push_conditions(&mut SqlBuilder::new(""), query, &state);
    let values = bound.last().map_or(0, |&(_, values)| values);
    match bound.iter().find(|&&(_, values)| values > MAX_BOUND_VALUES) {
        Some(&(parameter, _)) => Err(ListError::TooManyValues { parameter, values }),
        None => Ok(()),
    }
}

/// The page of a list, in its order.
///
/// A customer's list is the union of what each of their reaches holds, and each reach has an
/// index in listing order: the page is the first `start + limit` keys of each reach, merged,
/// and the rows of those keys. A condition `customer_id = ? OR account_uri IN (...)` instead
/// read every invitation the customer may see and sorted them: a customer with 70,000
/// invitations got 15-50 lists a second.
///
/// On SQLite, a customer's page in creation order instead merges the reaches' walks as it
/// reads them and reads only the page's rows (`merges_in_order`): 13% fewer instructions for
/// the benchmark's customer list (100 of 182 matches over seven reaches) and 11% fewer once
/// the customer has 60,000 invitations of their own.
///
/// `from_index` (staff lists): pick the page's ids first, then read those rows. A staff list's
/// conditions and order are all columns of `invitations_state_created`, so its ids come from
/// that index alone, which PostgreSQL prefers by far over walking `invitations_created` and
/// reading every row to test its state. Read as whole rows, the two cost the same to its
/// planner, which assumes the state is spread evenly through creation order. It is not (older
/// invitations are completed or expired, newer ones sent): after the benchmark's writes
/// PostgreSQL switched to the creation-order walk, which read 527,000 rows before the first 100
/// sent ones (400 ms, 13 staff lists/s; 0.6 ms this way).
fn page_query(
    query: &InvitationQuery,
    backend: Backend,
    now: Timestamp,
    from_index: bool,
) -> SqlBuilder {
    let state = &EffectiveState::for_list(query, backend, now);
    let mut shared = Shared::default();
    let order = |q: &mut SqlBuilder| {
        if query.sort.is_empty() {
            q.push(" ORDER BY created_at, id");
        } else {
            q.push_order_by_over(&query.sort, state)
                .push(", created_at, id");
        }
    };
    let bounds = |q: &mut SqlBuilder| {
        q.push(" LIMIT ")
            .bind(Param::Int(query.limit))
            .push(" OFFSET ")
            .bind(Param::Int(query.start));
    };
    let mut page = SqlBuilder::new(concat!("SELECT ", columns!()));
    let reaches = Reach::of(&query.visibility);
    if let [reach] = reaches.as_slice() {
        if from_index {
            page.push(" FROM invitations WHERE id IN (SELECT id");
        }
        push_matching(&mut page, query, state, reach, &mut shared);
        order(&mut page);
        bounds(&mut page);
        if from_index {
            page.push(")");
            order(&mut page);
        }
        return page;
    }
    if merges_in_order(query, &reaches, backend) {
        page.push(" FROM (");
        push_merged_walks(&mut page, query, state, &reaches, &mut shared);
        bounds(&mut page);
        // The join reads each row in the page's order, which SQLite then needs no sort for.
        page.push(
            ") AS page CROSS JOIN invitations ON invitations.id = page.i \
             ORDER BY page.c, page.i",
        );
        return page;
    }
    let key = row_key(backend);
    page.push(" FROM invitations WHERE ")
        .push(key)
        .push(" IN (");
    push_union_of_keys(
        &mut page,
        query,
        state,
        &reaches,
        &mut shared,
        key,
        &order,
        query.start.saturating_add(query.limit),
    );
    page.push(")");
    order(&mut page);
    bounds(&mut page);
    page
}

/// What identifies a row most cheaply: SQLite's indexes lead to the rowid, PostgreSQL's to
/// the row through the primary key.
fn row_key(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "rowid",
        Backend::Postgres => "id",
    }
}

/// Whether a customer's page in creation order can come from `push_merged_walks`. SQLite
/// merges a `UNION` with an `ORDER BY` by stepping through its parts side by side, each in the
/// order of one customer's, account's or organization's index entries, and stops once it has
/// the page: nothing is sorted. PostgreSQL 15 gathers every part's matches, removes repeats and
/// sorts them all first; a reach over several resources would be sorted on either.
fn merges_in_order(query: &InvitationQuery, reaches: &[Reach], backend: Backend) -> bool {
    backend == Backend::Sqlite
        && query.sort.is_empty()
        && reaches.iter().all(|reach| match reach {
            Reach::All => false,
            Reach::Own(_) => true,
            Reach::On { resources, .. } => resources.len() == 1,
        })
}

/// `SELECT created_at AS c, id AS i ... UNION SELECT ... ORDER BY c, i`: the matches of every
/// reach, each once, in creation order.
fn push_merged_walks(
    q: &mut SqlBuilder,
    query: &InvitationQuery,
    state: &EffectiveState,
    reaches: &[Reach],
    shared: &mut Shared,
) {
    for (n, reach) in reaches.iter().enumerate() {
        if n > 0 {
            q.push(" UNION ");
        }
        q.push("SELECT created_at AS c, id AS i");
        push_matching(q, query, state, reach, shared);
    }
    q.push(" ORDER BY c, i");
}

/// `SELECT k FROM (...) UNION SELECT k FROM (...)`: the keys of the first `each` matches of
/// every reach, in `order`. The first `n` of the union, in that order, are among them for any
/// `n <= each`.
#[allow(clippy::too_many_arguments)]
fn push_union_of_keys(
    q: &mut SqlBuilder,
    query: &InvitationQuery,
    state: &EffectiveState,
    reaches: &[Reach],
    shared: &mut Shared,
    key: &str,
    order: &dyn Fn(&mut SqlBuilder),
    each: i64,
) {
    for (n, reach) in reaches.iter().enumerate() {
        if n > 0 {
            q.push(" UNION ");
        }
        q.push("SELECT k FROM (SELECT ").push(key).push(" AS k");
        push_matching(q, query, state, reach, shared);
        q.push_repeated(&mut shared.tail, |q| {
            order(q);
            q.push(" LIMIT ").bind(Param::Int(each));
        })
        .push(&format!(") AS reach{n}"));
    }
}

/// The number of matches, counted up to `COUNT_LIMIT + 1`. In creation order, which the
/// indexes hold: unordered, PostgreSQL counts with a sequential scan, which pays for every row
/// before the first matches, and invitations of one state lie together in the table (older ones
/// completed or expired, newer ones sent). On a table seeded that way, 8 concurrent staff lists
/// stalled together for 350 ms every 3 s.
fn count_query(query: &InvitationQuery, backend: Backend, now: Timestamp) -> SqlBuilder {
    let state = &EffectiveState::for_list(query, backend, now);
    let mut shared = Shared::default();
    let by_creation = |q: &mut SqlBuilder| {
        q.push(" ORDER BY created_at, id");
    };
    let mut count = SqlBuilder::new("SELECT COUNT(*) AS n FROM (");
    let reaches = Reach::of(&query.visibility);
    if let [reach] = reaches.as_slice() {
        count.push("SELECT 1");
        push_matching(&mut count, query, state, reach, &mut shared);
        by_creation(&mut count);
        count.push(" LIMIT ").bind(Param::Int(COUNT_LIMIT + 1));
    } else {
        // Beyond the limit when one reach is; otherwise every reach gave all its matches.
        push_union_of_keys(
            &mut count,
            query,
            state,
            &reaches,
            &mut shared,
            row_key(backend),
            &by_creation,
            COUNT_LIMIT + 1,
        );
    }
    count.push(") capped");
    count
}

/// The two statements of a list as of `now`: its page, and its count. At most
/// COUNT_LIMIT + 1 matches are counted, so a broad filter over a large table costs no more than
/// a narrow one.
fn list_statements(
    query: &InvitationQuery,
    backend: Backend,
    now: Timestamp,
) -> (SqlBuilder, SqlBuilder) {
    let from_index = backend == Backend::Postgres
        && StateConditions::for_list(query, backend) == StateConditions::ByStateIndex;
    (
        page_query(query, backend, now, from_index),
        count_query(query, backend, now),
    )
}

#[async_trait]
impl InvitationRepository for SqlInvitations {
    async fn insert(
        &self,
        i: &Invitation,
        email: &OutboxMessage,
        caps: &CreateCaps,
    ) -> Result<Result<(), CapReached>, StoreError> {
        let mut tx = self.db.begin().await?;
        if let Err(reached) = check_caps(&mut tx, self.db.backend, i, caps).await? {
            return Ok(Err(reached));
        }
        tx.execute(SqlBuilder::fixed(
            concat!(
                "INSERT INTO invitations (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19, $20, $21, $22, $23)"
            ),
            params![
                i.id.as_str(),
                i.kind.as_str(),
                i.state.as_str(),
                &i.email_address,
                i.first_name.as_deref(),
                i.last_name.as_deref(),
                i.sealed_identification.as_deref(),
                i.account_uri.as_deref(),
                i.organization_uri.as_deref(),
                i.role.as_deref(),
                &i.inviter_full_name,
                &i.sealed_secret,
                i.attributes.as_ref().map(|a| a.to_string()),
                i.verification_count,
                i.failed_verifications,
                i.send_count,
                &i.created_by,
                &i.customer_id,
                i.customer_group.as_deref(),
                i.revision,
                i.created_at.millis(),
                i.updated_at.millis(),
                i.expires_at.millis(),
            ],
        ))
        .await?;
        tx.execute(SqlBuilder::fixed(
            "INSERT INTO invitation_creations (customer_id, created_at) VALUES ($1, $2)",
            params![&i.customer_id, i.created_at.millis()],
        ))
        .await?;
        enqueue(&mut tx, email).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn get(&self, id: &ResourceId) -> Result<Option<Invitation>, StoreError> {
        let invitation = self.by_id.get(id.as_str()).await?;
        // The cache holds the row as stored; expiry is worked out at each read (on a copy only
        // when the cache shares the row).
        Ok(invitation.map(|shared| {
            Arc::try_unwrap(shared)
                .unwrap_or_else(|shared| Invitation::clone(&shared))
                .as_of(Timestamp::now())
        }))
    }

    async fn list(
        &self,
        query: &InvitationQuery,
    ) -> Result<(Vec<Invitation>, Option<i64>), ListError> {
        let now = Timestamp::now();
        check_bound_values(query, self.db.backend, now)?;
        let (page, count) = list_statements(query, self.db.backend, now);
        // When the page is not full it tells the count itself: SQLite then skips the count,
        // and PostgreSQL's answer (run beside the page) goes unused.
        let (items, counted) = self
            .db
            .list_and_count::<Invitation, Count>(page, count, {
                let (start, limit) = (query.start, query.limit);
                move |items| count_from_page(start, limit, items).is_none()
            })
            .await;
        let items: Vec<Invitation> = items?.into_iter().map(|i| i.as_of(now)).collect();
        if let Some(total) = count_from_page(query.start, query.limit, items.len()) {
            return Ok((items, Some(total)));
        }
        let Some(Count(total)) = counted?.pop() else {
            return Err(StoreError::from(anyhow::anyhow!("a count query returned no row")).into());
        };
        Ok((items, (total <= COUNT_LIMIT).then_some(total)))
    }

    async fn modify(
        &self,
        id: &ResourceId,
        change: Change<'_>,
    ) -> Result<Option<Invitation>, StoreError> {
        let mut tx = self.db.begin().await?;
        let select = match self.db.backend {
            Backend::Postgres => concat!(
                "SELECT ",
                columns!(),
                " FROM invitations WHERE id = $1 FOR UPDATE"
            ),
            // SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE).
            Backend::Sqlite => concat!("SELECT ", columns!(), " FROM invitations WHERE id = $1"),
        };
        let Some(stored) = tx
            .fetch_optional::<Invitation>(SqlBuilder::fixed(select, params![id.as_str()]))
            .await?
        else {
            return Ok(None);
        };
        let mut invitation = stored.as_of(Timestamp::now());
        let email = match change(&mut invitation) {
            Effect::None => return Ok(Some(invitation)),
            Effect::Delete => {
                tx.execute(SqlBuilder::fixed(
                    "DELETE FROM invitations WHERE id = $1",
                    params![id.as_str()],
                ))
                .await?;
                tx.commit().await?;
                return Ok(Some(invitation));
            }
            Effect::Save => None,
            Effect::SaveAndSend(message) => Some(message),
        };
        tx.execute(SqlBuilder::fixed(
            "UPDATE invitations SET state = $2, sealed_secret = $3, verification_count = $4, \
             failed_verifications = $5, send_count = $6, revision = $7, updated_at = $8 \
             WHERE id = $1",
            params![
                invitation.id.as_str(),
                invitation.state.as_str(),
                &invitation.sealed_secret,
                invitation.verification_count,
                invitation.failed_verifications,
                invitation.send_count,
                invitation.revision,
                invitation.updated_at.millis(),
            ],
        ))
        .await?;
        if let Some(message) = email {
            enqueue(&mut tx, &message).await?;
        }
        tx.commit().await?;
        Ok(Some(invitation))
    }

    async fn sweep_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        // The same revision and update time `Invitation::as_of` derives, so tags stay stable.
        self.db
            .execute(SqlBuilder::fixed(
                "UPDATE invitations SET state = 'expired', revision = revision + 1, \
                 updated_at = CASE WHEN expires_at > updated_at THEN expires_at ELSE updated_at END \
                 WHERE state = 'sent' AND expires_at <= $1",
                params![now.millis()],
            ))
            .await
    }

    async fn prune_creations(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.db
            .execute(SqlBuilder::fixed(
                "DELETE FROM invitation_creations WHERE created_at <= $1",
                params![now.millis() - CREATE_WINDOW_MS],
            ))
            .await
    }
}

/// The creates in the window, and the oldest of them.
struct Creations {
    count: i64,
    oldest: Option<i64>,
}

impl FromRecord for Creations {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        Ok(Self {
            count: row.column("n")?,
            oldest: row.column("oldest")?,
        })
    }
}

/// Counts `invitation` against `caps` inside the transaction that would store it. On
/// PostgreSQL, a transaction-scoped advisory lock on the inviter and one on the resource make
/// concurrent creates of the same inviter or on the same resource count one after the other
/// (always in that order, so two creates cannot wait for each other); on SQLite the write
/// transaction already holds the database's one write lock.
async fn check_caps(
    tx: &mut Tx,
    backend: Backend,
    invitation: &Invitation,
    caps: &CreateCaps,
) -> Result<Result<(), CapReached>, StoreError> {
    let resource = invitation
        .resource_uri()
        .zip(resource_column(invitation.kind));
    if backend == Backend::Postgres {
        let mut keys = Vec::new();
        if caps.per_customer_per_day.is_some() {
            keys.push(format!(
                "invitations of customer {}",
                invitation.customer_id
            ));
        }
        if let Some((uri, _)) = resource.filter(|_| caps.open_per_resource.is_some()) {
            keys.push(format!("invitations on {uri}"));
        }
        for key in keys {
            tx.execute(SqlBuilder::fixed(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                params![key],
            ))
            .await?;
        }
    }
    // Each count reads at most its cap's number of rows: a create costs the same whatever the
    // inviter or the account has done before.
    let now = invitation.created_at.millis();
    if let Some(limit) = caps.per_customer_per_day {
        let window_start = now - CREATE_WINDOW_MS;
        let created: Option<Creations> = tx
            .fetch_optional(SqlBuilder::fixed(
                "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM (SELECT created_at \
                 FROM invitation_creations WHERE customer_id = $1 AND created_at > $2 \
                 ORDER BY created_at LIMIT $3) AS counted",
                params![&invitation.customer_id, window_start, limit],
            ))
            .await?;
        if let Some(Creations { count, oldest }) = created
            && count >= limit
        {
            let frees_at = oldest.unwrap_or(now) + CREATE_WINDOW_MS;
            return Ok(Err(CapReached::CustomerDaily {
                limit,
                retry_after_ms: (frees_at - now).max(0),
            }));
        }
    }
    if let Some(((uri, column), limit)) = resource.zip(caps.open_per_resource) {
        let mut open =
            SqlBuilder::new("SELECT COUNT(*) AS n FROM (SELECT id FROM invitations WHERE type = '");
        open.push(invitation.kind.as_str())
            .push("' AND ")
            .push(column)
            .push(" = ")
            .bind(Param::Text(uri.to_owned()))
            .push(" AND state = 'sent' AND expires_at > ")
            .bind(Param::Int(now))
            .push(" LIMIT ")
            .bind(Param::Int(limit))
            .push(") AS counted");
        let Some(Count(count)) = tx.fetch_optional(open).await? else {
            return Err(anyhow::anyhow!("a count query returned no row").into());
        };
        if count >= limit {
            return Ok(Err(CapReached::OpenOnResource { limit }));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(
        visibility: Visibility,
        states: Vec<InvitationState>,
        filter: Option<&str>,
    ) -> InvitationQuery {
        InvitationQuery {
            visibility,
            states,
            types: vec![],
            email_addresses: vec![],
            account_uris: vec![],
            organization_uris: vec![],
            search: None,
            filter: filter.map(|f| crate::domain::filter::parse_filter(f, FIELDS).unwrap()),
            sort: vec![],
            start: 0,
            limit: 10,
        }
    }

    #[test]
    fn a_page_that_is_not_full_tells_the_count() {
        assert_eq!(count_from_page(0, 10, 0), Some(0));
        assert_eq!(count_from_page(20, 10, 3), Some(23));
        assert_eq!(
            count_from_page(0, 10, 10),
            None,
            "a full page may have more after it"
        );
        assert_eq!(
            count_from_page(50, 10, 0),
            None,
            "past the end: unknown how far"
        );
    }

    fn staff_lists() -> EffectiveState {
        EffectiveState::for_list(
            &query(Visibility::All, vec![], None),
            Backend::Postgres,
            Timestamp::from_millis(5),
        )
    }

    #[test]
    fn the_state_as_of_now_is_written_over_the_stored_columns() {
        let sql = |filter: &str| {
            let mut b = SqlBuilder::new("");
            b.push_filter_over(
                &crate::domain::filter::parse_filter(filter, FIELDS).unwrap(),
                &staff_lists(),
            );
            b.sql().to_owned()
        };
        assert_eq!(
            sql("eq(state,sent)"),
            "(state IN ('sent') AND (state <> 'sent' OR expires_at > $1))"
        );
        assert_eq!(
            sql("eq(state,expired)"),
            "(state IN ('expired', 'sent') AND (state <> 'sent' OR expires_at <= $1))"
        );
        assert_eq!(
            sql("in(state,sent|expired)"),
            "(state IN ('expired', 'sent'))"
        );
        assert_eq!(
            sql("ne(state,accepted)"),
            "(state IN ('completed', 'expired', 'revoked', 'sent'))"
        );
        assert_eq!(sql("eq(state,accepted)"), "(state IN ('accepted'))");
        assert_eq!(sql("eq(state,lost)"), "(1 = 0)");
        assert_eq!(sql("in(state,lost|Sent)"), "(1 = 0)");
        assert_eq!(
            sql("and(eq(type,joint),not(eq(state,completed)))"),
            "((type = $1) AND (NOT (state IN ('completed'))))"
        );
    }

    #[test]
    fn every_comparison_on_the_state_is_the_set_of_names_it_accepts() {
        let sql = |op, value: &str| {
            let mut b = SqlBuilder::new("");
            let condition = Condition {
                op,
                column: EFFECTIVE_STATE,
                values: vec![value.to_owned()],
            };
            assert!(staff_lists().push_condition(&mut b, &condition));
            b.sql().to_owned()
        };
        assert_eq!(
            sql(Op::Contains, "TED"),
            "(state IN ('accepted', 'completed'))"
        );
        assert_eq!(sql(Op::Search, "re"), "(state IN ('revoked'))");
        assert_eq!(sql(Op::Search, "x"), "(1 = 0)");
    }

    #[test]
    fn a_page_picked_from_the_index_is_read_in_the_same_order() {
        let staff = query(Visibility::All, vec![], Some("eq(state,sent)"));
        let sql = |from_index| {
            page_query(
                &staff,
                Backend::Postgres,
                Timestamp::from_millis(5),
                from_index,
            )
            .sql()
            .replace(columns!(), "*")
        };
        assert_eq!(
            sql(true),
            "SELECT * FROM invitations WHERE id IN (SELECT id FROM invitations WHERE 1 = 1 AND \
             (state IN ('sent') AND (state <> 'sent' OR expires_at > $1)) ORDER BY created_at, \
             id LIMIT $2 OFFSET $3) ORDER BY created_at, id"
        );
        assert_eq!(
            sql(false),
            "SELECT * FROM invitations WHERE 1 = 1 AND (state IN ('sent') AND (state <> 'sent' \
             OR expires_at > $1)) ORDER BY created_at, id LIMIT $2 OFFSET $3"
        );
    }

    #[test]
    fn sorting_by_state_sorts_by_the_state_as_of_now() {
        let mut b = SqlBuilder::new("");
        b.push_order_by_over(
            &crate::domain::filter::parse_sort("-state,type", FIELDS).unwrap(),
            &staff_lists(),
        );
        assert_eq!(
            b.sql(),
            " ORDER BY CASE WHEN state = 'sent' AND expires_at <= $1 THEN 'expired' ELSE state END DESC, type ASC"
        );
    }

    #[test]
    fn customers_are_confined_to_their_own_and_entitled_invitations() {
        let customer = query(
            Visibility::Customer {
                customer_id: "c-000001".into(),
                resources: vec!["acct-1".into()],
            },
            vec![InvitationState::Sent],
            Some("ne(state,completed)"),
        );
        let now = Timestamp::from_millis(5);
        let sql = |backend| {
            (
                page_query(&customer, backend, now, false)
                    .sql()
                    .replace(columns!(), "*"),
                count_query(&customer, backend, now).sql().to_owned(),
            )
        };
        // SQLite: the reaches' walks merged in creation order. The state conditions are on
        // `+state`, so that the planner starts from the customer's invitations rather than from
        // the state index. Every walk names the same placeholders for the request's conditions
        // (`now` is $2), and the resource's walks as an account and as an organization the same
        // one for it.
        let (page, count) = sql(Backend::Sqlite);
        let walk = |reach: &str| {
            format!(
                "SELECT created_at AS c, id AS i FROM invitations WHERE {reach} AND (+state IN \
                 ('sent') AND (+state <> 'sent' OR +expires_at > $2)) AND (+state IN \
                 ('accepted', 'expired', 'revoked', 'sent'))"
            )
        };
        assert_eq!(
            page,
            format!(
                "SELECT * FROM ({} UNION {} UNION {} ORDER BY c, i LIMIT $4 OFFSET $5) AS page \
                 CROSS JOIN invitations ON invitations.id = page.i ORDER BY page.c, page.i",
                walk("customer_id = $1"),
                walk("type = 'joint' AND account_uri IN ($3)"),
                walk("type = 'authorizedSigner' AND organization_uri IN ($3)"),
            )
        );
        assert!(
            count.starts_with(
                "SELECT COUNT(*) AS n FROM (SELECT k FROM (SELECT rowid AS k FROM invitations \
                 WHERE customer_id = $1 AND (+state IN ('sent')"
            ),
            "{count}"
        );
        // PostgreSQL: the union of each reach's first matches, on the `CASE` expression.
        let (page, count) = sql(Backend::Postgres);
        // Each reach's share of the page (start + limit) is $3 in every reach.
        let conditions = "AND (CASE WHEN state = 'sent' AND expires_at <= $2 THEN 'expired' ELSE \
             state END IN ('sent')) AND (CASE WHEN state = 'sent' AND expires_at <= $2 THEN \
             'expired' ELSE state END IN ('sent', 'accepted', 'revoked', 'expired')) ORDER BY \
             created_at, id LIMIT $3";
        assert_eq!(
            page,
            format!(
                "SELECT * FROM invitations WHERE id IN (\
                 SELECT k FROM (SELECT id AS k FROM invitations WHERE customer_id = $1 {conditions}) AS reach0 \
                 UNION SELECT k FROM (SELECT id AS k FROM invitations WHERE type = 'joint' AND account_uri IN ($4) {conditions}) AS reach1 \
                 UNION SELECT k FROM (SELECT id AS k FROM invitations WHERE type = 'authorizedSigner' AND organization_uri IN ($4) {conditions}) AS reach2) \
                 ORDER BY created_at, id LIMIT $5 OFFSET $6"
            )
        );
        assert!(
            count.starts_with(
                "SELECT COUNT(*) AS n FROM (SELECT k FROM (SELECT id AS k FROM invitations WHERE \
                 customer_id = $1 AND (CASE"
            ),
            "{count}"
        );
        assert!(count.ends_with(") AS reach2) capped"), "{count}");
    }

    /// `count` different values, for `in()` lists and subset parameters.
    fn distinct(prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|n| format!("{prefix}{n}")).collect()
    }

    #[test]
    fn a_statement_binds_each_value_once_however_many_resources_are_held() {
        let types = distinct("t", crate::domain::filter::MAX_ALTERNATIVES).join("|");
        let filter = format!("and(in(type,{types}),search(emailAddress,max),eq(state,sent))");
        let now = Timestamp::from_millis(5);
        // 16 resources are read one by one (33 reaches), 40 together (3 reaches).
        for held in [1, 16, 40] {
            let customer = query(
                Visibility::Customer {
                    customer_id: "c-000001".into(),
                    resources: distinct("/banking/accounts/acct-", held),
                },
                vec![],
                Some(&filter),
            );
            // The customer, each resource, 100 types, the word searched for and `now`.
            let values = 1 + held + 100 + 1 + 1;
            for backend in [Backend::Sqlite, Backend::Postgres] {
                let (page, count) = list_statements(&customer, backend, now);
                // The page's limit and offset, and each reach's share of it unless SQLite
                // merges the reaches' walks.
                let merged = backend == Backend::Sqlite && held <= SPLIT_RESOURCES;
                let page_bounds = if merged { 2 } else { 3 };
                assert_eq!(
                    page.params().len(),
                    values + page_bounds,
                    "{backend:?}, {held} held"
                );
                // The count's cap.
                assert_eq!(count.params().len(), values + 1, "{backend:?}, {held} held");
                for statement in [&page, &count] {
                    let last = format!("${}", statement.params().len());
                    assert!(statement.sql().contains(&last), "{backend:?}, {held} held");
                }
            }
        }
    }

    #[test]
    fn only_a_filter_can_bind_more_values_than_a_list_takes() {
        use crate::domain::filter::MAX_ALTERNATIVES;
        let now = Timestamp::from_millis(5);
        // Every subset parameter at its cap, and `q`.
        let mut largest = query(
            Visibility::Customer {
                customer_id: "c-000001".into(),
                resources: distinct("/banking/accounts/acct-", 500),
            },
            InvitationState::ALL.to_vec(),
            None,
        );
        largest.types = InvitationType::ALL.to_vec();
        largest.email_addresses = distinct("e@", MAX_ALTERNATIVES);
        largest.account_uris = distinct("/a/", MAX_ALTERNATIVES);
        largest.organization_uris = distinct("/o/", MAX_ALTERNATIVES);
        largest.search = Some("max".into());
        for backend in [Backend::Sqlite, Backend::Postgres] {
            assert!(check_bound_values(&largest, backend, now).is_ok());
        }
        let in_lists = |n: usize| {
            let in_list = format!("in(type,{})", distinct("t", MAX_ALTERNATIVES).join("|"));
            let filter = format!("or({})", vec![in_list.as_str(); n].join(","));
            query(Visibility::All, vec![], Some(&filter))
        };
        let refused = |list: &InvitationQuery| match check_bound_values(list, Backend::Sqlite, now)
        {
            Ok(()) => None,
            Err(ListError::TooManyValues { parameter, values }) => Some((parameter, values)),
            Err(ListError::Store(err)) => panic!("{err}"),
        };
        assert_eq!(
            refused(&in_lists(4)),
            None,
            "exactly as many as a list takes"
        );
        // The filter is named although the address came first: it goes past the budget.
        let mut over = in_lists(4);
        over.email_addresses = vec!["e@example.com".into()];
        assert_eq!(refused(&over), Some(("filter", 401)));
        let err = check_bound_values(&in_lists(5), Backend::Postgres, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "filter: the list's conditions bind 500 values, more than the 400 a list takes"
        );
    }

    /// scripts/bench.sh runs PostgreSQL alone (pgbench) on the statements of the lists it
    /// measures, to show what the database itself allows at that load. Those files must be
    /// what a list sends: customer 1's or a staff member's `eq(state,sent)`, first page of 100,
    /// each parameter a pgbench variable.
    #[test]
    fn the_benchmarks_pgbench_lists_are_the_statements_a_list_sends() {
        let resources = [
            "/banking/accounts/acct-000001",
            "/banking/accounts/acct-000002",
            "/banking/organizations/org-0001",
        ];
        let now = Timestamp::from_millis(5);
        let variable = |param: &Param| match param {
            Param::Int(5) => "now".to_owned(),
            Param::Int(0) => "start".to_owned(),
            // The page's size, and each reach's share of it (start + limit).
            Param::Int(100) => "limit".to_owned(),
            Param::Int(n) if *n == COUNT_LIMIT + 1 => "count_cap".to_owned(),
            Param::Text(text) if text == "cust-000001" => "customer".to_owned(),
            Param::Text(text) => match resources.iter().position(|r| r == text) {
                Some(n) => format!("resource{}", n + 1),
                None => panic!("no pgbench variable for {text}"),
            },
            other => panic!("no pgbench variable for {other:?}"),
        };
        let pgbench = |visibility| {
            let mut list = query(visibility, vec![], Some("eq(state,sent)"));
            list.limit = 100;
            let (page, count) = list_statements(&list, Backend::Postgres, now);
            [page, count]
                .iter()
                .map(|statement| {
                    // From the last parameter down, so that $1 does not take the start of $12.
                    let mut sql = statement.sql().to_owned();
                    for (n, param) in statement.params().iter().enumerate().rev() {
                        sql = sql.replace(&format!("${}", n + 1), &format!(":{}", variable(param)));
                    }
                    sql + ";\n"
                })
                .collect::<String>()
        };
        assert_eq!(
            pgbench(Visibility::All),
            include_str!("../../scripts/bench/pgbench/list-invitations-staff.sql")
        );
        assert_eq!(
            pgbench(Visibility::Customer {
                customer_id: "cust-000001".into(),
                resources: resources.map(String::from).to_vec(),
            }),
            include_str!("../../scripts/bench/pgbench/list-invitations-customer.sql")
        );
    }
}
