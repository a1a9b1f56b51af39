//! The audience synchronization engine: it claims due connections (leases shared through the
//! database, so several instances cooperate), reads the audience's membership from the source,
//! pushes the difference to the provider, and records the run.

pub mod providers;
pub mod source;

use crate::config::{Config, SyncConfig};
use crate::domain::ids::ResourceId;
use crate::domain::sync::RunVerdict;
use crate::domain::sync::{MemberDiff, backoff_millis};
use crate::domain::time::Timestamp;
use crate::store::Db;
use crate::store::sync::{ClaimedSync, FinishedRun, SqlSync, SyncRepository};
use providers::{Provider, SyncOutcome, SyncRequest};
use source::AudienceSource;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recovery {
    /// The connection fails at once.
    Permanent,
    /// Retry with back-off, no sooner than `after` (a `Retry-After`) when given.
    Retryable { after: Option<Duration> },
}

/// Why a call to a provider or an audience source failed.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncError {
    pub message: String,
    pub recovery: Recovery,
}

impl SyncError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            recovery: Recovery::Permanent,
        }
    }

    pub fn retryable(message: impl Into<String>, after: Option<Duration>) -> Self {
        Self {
            message: message.into(),
            recovery: Recovery::Retryable { after },
        }
    }
}

/// What the request handlers need of the engine: its history store and a way to wake it.
#[derive(Clone)]
pub struct SyncHandle {
    pub repo: Arc<dyn SyncRepository>,
    pub wake: Arc<Notify>,
}

impl SyncHandle {
    pub fn new(db: Db, config: &SyncConfig) -> Self {
        Self {
            repo: Arc::new(SqlSync::new(db, config.keep_runs)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Asks the engine to look for due work now (a new or activated connection).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

struct ConfiguredProvider {
    provider: Arc<dyn Provider>,
    interval: Duration,
}

pub struct SyncEngine {
    repo: Arc<dyn SyncRepository>,
    wake: Arc<Notify>,
    providers: BTreeMap<String, ConfiguredProvider>,
    source: Arc<dyn AudienceSource>,
    config: SyncConfig,
    /// This instance's lease owner id.
    owner: String,
}

impl SyncEngine {
    pub fn new(config: &Config, db: Db, handle: &SyncHandle) -> anyhow::Result<Self> {
        let mut providers = BTreeMap::new();
        for (name, provider_config) in config.effective_providers() {
            providers.insert(
                name.clone(),
                ConfiguredProvider {
                    provider: providers::build(&name, &provider_config, &config.data_dir)?,
                    interval: provider_config.interval(),
                },
            );
        }
        Ok(Self {
            repo: handle.repo.clone(),
            wake: handle.wake.clone(),
            providers,
            source: source::build(&config.audience_source, db)?,
            config: config.sync.clone(),
            owner: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// Works until `stop` turns true; runs in flight finish first.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let names: Vec<String> = self.providers.keys().cloned().collect();
        let poll = Duration::from_secs_f64(self.config.poll_interval_secs);
        tracing::info!(owner = %self.owner, providers = ?names, "audience sync engine started");
        let mut runs = JoinSet::new();
        while !*stop.borrow() {
            // Fill the free slots; a slow provider holds only its own slot.
            let free = self.config.concurrency.saturating_sub(runs.len());
            if free > 0 {
                let now = Timestamp::now();
                let lease_until = now.plus_millis(secs_to_millis(self.config.lease_secs));
                let claimed = self
                    .repo
                    .claim(&self.owner, &names, now, lease_until, free)
                    .await
                    .unwrap_or_else(|err| {
                        tracing::warn!(error = format!("{err:#}"), "claiming due syncs failed");
                        Vec::new()
                    });
                for claim in claimed {
                    runs.spawn(self.clone().run_one(claim));
                }
            }
            tokio::select! {
                Some(_) = runs.join_next(), if !runs.is_empty() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
        // Runs in flight record their outcome before the engine stops.
        while runs.join_next().await.is_some() {}
        tracing::info!(owner = %self.owner, "audience sync engine stopped");
    }

    async fn run_one(self: Arc<Self>, claim: ClaimedSync) {
        let started_at = Timestamp::now();
        let run_id = ResourceId::generate();
        let connection = &claim.connection;
        let Some(configured) = self.providers.get(connection.provider.as_str()) else {
            return; // the claim only takes configured providers
        };
        let work = async {
            let (members, diff) = self.plan(&claim).await?;
            let outcome = configured
                .provider
                .sync(SyncRequest {
                    run_id: &run_id,
                    connection,
                    resource_id: connection.connected_resource_id.as_deref(),
                    members: &members,
                    diff: &diff,
                })
                .await;
            Ok::<_, SyncError>((diff.len(), outcome))
        };
        let Some(result) = self.keeping_the_lease(connection, work).await else {
            tracing::info!(connection = %connection.id, run = %run_id, "connection deleted or lease lost: run abandoned");
            return;
        };
        let (due, outcome) = match result {
            Ok(done) => done,
            Err(err) => (0, SyncOutcome::failed(err)),
        };
        let finished_at = Timestamp::now();
        let verdict = self.verdict(
            &claim,
            configured.interval,
            outcome.error.as_ref(),
            finished_at,
        );
        let finished = FinishedRun {
            id: run_id.clone(),
            claim: claim.clone(),
            started_at,
            finished_at,
            failed: due.saturating_sub(outcome.added.len() + outcome.removed.len()) as u64,
            connected_resource_id: outcome.resource_id,
            added: outcome.added,
            removed: outcome.removed,
            error: outcome.error.map(|e| e.message),
            verdict,
        };
        match self.repo.finish(&self.owner, &finished).await {
            Ok(true) => {
                tracing::info!(
                    connection = %connection.id, run = %run_id, trigger = claim.trigger.as_str(),
                    added = finished.added.len(), removed = finished.removed.len(),
                    failed = finished.failed, ok = finished.error.is_none(), error = finished.error.as_deref(),
                    "audience sync run finished"
                );
                if let RunVerdict::Fail { reason } = &finished.verdict {
                    tracing::warn!(connection = %connection.id, reason, "sync gave up: the connection fails");
                }
            }
            Ok(false) => {
                tracing::info!(connection = %connection.id, run = %run_id, "connection deleted or lease lost during the run; nothing recorded");
            }
            Err(err) => {
                tracing::error!(connection = %connection.id, run = %run_id, error = format!("{err:#}"), "recording a sync run failed");
            }
        }
    }

    /// What a run's error (or its absence) means for the connection's schedule and state.
    fn verdict(
        &self,
        claim: &ClaimedSync,
        interval: Duration,
        error: Option<&SyncError>,
        now: Timestamp,
    ) -> RunVerdict {
        let Some(error) = error else {
            return RunVerdict::Synced {
                next_sync_at: now.plus_millis(duration_millis(interval)),
            };
        };
        let Recovery::Retryable { after } = error.recovery else {
            return RunVerdict::Fail {
                reason: error.message.clone(),
            };
        };
        let failures = claim.consecutive_failures.saturating_add(1);
        if failures >= self.config.max_consecutive_failures {
            return RunVerdict::Fail {
                reason: format!("{} ({failures} consecutive failures)", error.message),
            };
        }
        let delay = backoff_millis(
            failures,
            secs_to_millis(self.config.backoff_base_secs) as u64,
            secs_to_millis(self.config.backoff_cap_secs) as u64,
            rand::random::<f64>(),
            after.map(|d| duration_millis(d) as u64),
        );
        RunVerdict::Retry {
            next_sync_at: now.plus_millis(i64::try_from(delay).unwrap_or(i64::MAX)),
        }
    }

    /// Runs `work` while renewing the connection's lease, so that a long run is not taken over
    /// by another instance while it is alive. None when the lease is gone (the connection was
    /// deleted, or the lease expired and another instance took it): the work stops there.
    async fn keeping_the_lease<T>(
        &self,
        connection: &crate::domain::connection::Connection,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let lease_ms = secs_to_millis(self.config.lease_secs);
        // Often enough to keep the lease, and to notice a deletion within seconds.
        let period = (lease_ms / 3).clamp(1, LEASE_CHECK_MAX_MS);
        let mut renewals = tokio::time::interval(Duration::from_millis(period as u64));
        renewals.tick().await; // the first tick is immediate
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Some(done),
                _ = renewals.tick() => {
                    let until = Timestamp::now().plus_millis(lease_ms);
                    match self.repo.renew(&self.owner, &connection.id, until).await {
                        Ok(true) => {}
                        Ok(false) => return None,
                        Err(err) => {
                            tracing::warn!(connection = %connection.id, error = format!("{err:#}"), "renewing a sync lease failed");
                        }
                    }
                }
            }
        }
    }

    /// The audience's membership now and the changes the provider needs.
    async fn plan(
        &self,
        claim: &ClaimedSync,
    ) -> Result<(std::collections::BTreeSet<String>, MemberDiff), SyncError> {
        let members = self.source.members(&claim.connection.audience.id).await?;
        let pushed = self
            .repo
            .synced_members(&claim.connection.id)
            .await
            .map_err(|err| {
                tracing::error!(error = format!("{err:#}"), "reading the synced membership");
                SyncError::retryable("reading the synced membership failed", None)
            })?;
        let diff = MemberDiff::between(&pushed, &members);
        Ok((members, diff))
    }
}

/// The longest time between two lease renewals of a running sync.
const LEASE_CHECK_MAX_MS: i64 = 5_000;

fn secs_to_millis(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
