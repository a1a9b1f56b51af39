//! Audience sources: where the engine reads who is in an audience.

use super::SyncError;
use super::providers::{client, http_failure, transport_failure};
use crate::config::AudienceSourceConfig;
use crate::domain::ids::ResourceId;
use crate::domain::sync::check_customer_id;
use crate::store::Db;
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
pub trait AudienceSource: Send + Sync {
    /// The audience's members now. An audience the source does not know is a permanent error.
    async fn members(&self, audience: &ResourceId) -> Result<BTreeSet<String>, SyncError>;
}

pub fn build(config: &AudienceSourceConfig, db: Db) -> anyhow::Result<Arc<dyn AudienceSource>> {
    Ok(match config {
        AudienceSourceConfig::Local => Arc::new(LocalSource { db }),
        AudienceSourceConfig::Http {
            base_url,
            auth_header,
            auth_value,
            page_size,
            timeout_secs,
        } => Arc::new(HttpSource {
            client: client(Duration::from_secs_f64(timeout_secs.unwrap_or(30.0)))?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            auth: auth_header.clone().zip(auth_value.clone()),
            page_size: page_size.unwrap_or(1000).max(1),
        }),
    })
}

/// The `audiences` tables that `tandem audiences import` fills.
pub struct LocalSource {
    db: Db,
}

#[async_trait]
impl AudienceSource for LocalSource {
    async fn members(&self, audience: &ResourceId) -> Result<BTreeSet<String>, SyncError> {
        match crate::store::audiences::members(&self.db, audience).await {
            Ok(Some(members)) => Ok(members),
            Ok(None) => Err(SyncError::permanent(format!(
                "audience {audience} is unknown to the local audience source; import it with `tandem audiences import --id {audience} --name NAME members.csv`, then activate the connection"
            ))),
            Err(err) => {
                tracing::error!(error = format!("{err:#}"), "reading audience members");
                Err(SyncError::retryable(
                    "reading the audience members failed",
                    None,
                ))
            }
        }
    }
}

/// A bank's customer-audience service:
/// `GET {base_url}/audiences/{id}/members?limit={page_size}[&start={next}]` answering
/// `{"items": ["customer-id", ...], "next": "opaque cursor"}` (`next` absent on the last page).
pub struct HttpSource {
    client: reqwest::Client,
    base_url: String,
    auth: Option<(String, String)>,
    page_size: u32,
}

#[derive(Deserialize)]
struct MembersPage {
    items: Vec<String>,
    #[serde(default)]
    next: Option<String>,
}

#[async_trait]
impl AudienceSource for HttpSource {
    async fn members(&self, audience: &ResourceId) -> Result<BTreeSet<String>, SyncError> {
        let what = "the customer-audience service";
        let url = format!("{}/audiences/{audience}/members", self.base_url);
        let mut members: BTreeSet<String> = BTreeSet::new();
        let mut start: Option<String> = None;
        loop {
            let mut page_url = reqwest::Url::parse(&url).map_err(|err| {
                SyncError::permanent(format!("audience_source.base_url is not a URL: {err}"))
            })?;
            page_url
                .query_pairs_mut()
                .append_pair("limit", &self.page_size.to_string());
            if let Some(cursor) = &start {
                page_url.query_pairs_mut().append_pair("start", cursor);
            }
            let mut request = self.client.get(page_url);
            if let Some((name, value)) = &self.auth {
                request = request.header(name.as_str(), value.as_str());
            }
            let res = request
                .send()
                .await
                .map_err(|err| transport_failure(what, err))?;
            if res.status() == reqwest::StatusCode::NOT_FOUND {
                return Err(SyncError::permanent(format!(
                    "audience {audience} is unknown to {what} (404)"
                )));
            }
            if !res.status().is_success() {
                return Err(http_failure(what, res, &[]).await);
            }
            let page: MembersPage = res.json().await.map_err(|err| {
                SyncError::retryable(
                    format!("{what} answered an unreadable page: {}", err.without_url()),
                    None,
                )
            })?;
            for id in page.items {
                check_customer_id(&id).map_err(|why| {
                    SyncError::permanent(format!("{what} sent an invalid customer id: {why}"))
                })?;
                members.insert(id);
            }
            match page.next {
                Some(next) if Some(&next) == start.as_ref() => {
                    return Err(SyncError::retryable(
                        format!("{what} repeated the paging cursor {next:?}"),
                        None,
                    ));
                }
                Some(next) => start = Some(next),
                None => return Ok(members),
            }
        }
    }
}
