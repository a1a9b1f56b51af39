//! Providers: where a connection's audience is kept. `file` writes membership snapshots to a
//! directory, `webhook` POSTs signed membership changes, `pendo` maintains a Pendo segment.

use super::SyncError;
use crate::config::ProviderConfig;
use crate::domain::connection::Connection;
use crate::domain::ids::ResourceId;
use crate::domain::sync::{MemberDiff, parse_retry_after};
use crate::domain::time::Timestamp;
use anyhow::Context;
use async_trait::async_trait;
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One run's work for a provider.
pub struct SyncRequest<'a> {
    pub run_id: &'a ResourceId,
    pub connection: &'a Connection,
    /// The provider resource, once created or linked; None on the first run.
    pub resource_id: Option<&'a str>,
    /// The audience's whole membership now.
    pub members: &'a BTreeSet<String>,
    /// The changes since the last membership the provider accepted.
    pub diff: &'a MemberDiff,
}

/// What a provider did: the changes it applied (possibly part of the diff when it failed
/// midway), the resource it created, and the error that stopped it.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub resource_id: Option<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub error: Option<SyncError>,
}

impl SyncOutcome {
    pub(crate) fn failed(error: SyncError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }

    fn all(resource_id: Option<String>, diff: &MemberDiff) -> Self {
        Self {
            resource_id,
            added: diff.added.clone(),
            removed: diff.removed.clone(),
            error: None,
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// Creates the resource when `resource_id` is None, then applies the diff.
    async fn sync(&self, request: SyncRequest<'_>) -> SyncOutcome;
}

pub fn build(
    name: &str,
    config: &ProviderConfig,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn Provider>> {
    Ok(match config {
        ProviderConfig::File { directory, .. } => Arc::new(FileProvider {
            directory: directory
                .clone()
                .unwrap_or_else(|| data_dir.join("audiences").join(name)),
        }),
        ProviderConfig::Webhook { url, secret, .. } => Arc::new(WebhookProvider {
            client: client(config.timeout())?,
            url: url.clone(),
            secret: secret.clone(),
        }),
        ProviderConfig::Pendo {
            base_url,
            integration_key,
            ..
        } => Arc::new(PendoProvider {
            client: client(config.timeout())?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            integration_key: integration_key.clone(),
        }),
    })
}

/// An HTTP client whose every request gives up after `timeout`.
pub(crate) fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    crate::app::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("tandem/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the provider HTTP client")
}

/// Classifies a failed HTTP exchange: timeouts, connection errors, 408, 429 and 5xx (and the
/// statuses in `also_retryable`) are worth retrying; other answers are permanent.
pub(crate) async fn http_failure(
    what: &str,
    response: reqwest::Response,
    also_retryable: &[StatusCode],
) -> SyncError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Timestamp::now().millis()))
        .map(Duration::from_millis);
    let body = response.text().await.unwrap_or_default();
    let snippet: String = body.chars().take(200).collect();
    let message = format!("{what} answered {status}: {snippet}");
    let message = message.trim_end_matches([' ', ':']).to_owned();
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
        || also_retryable.contains(&status)
    {
        SyncError::retryable(message, retry_after)
    } else {
        SyncError::permanent(message)
    }
}

/// A request that got no answer: retryable (timeouts, refused or reset connections).
pub(crate) fn transport_failure(what: &str, err: reqwest::Error) -> SyncError {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not be reached"
    } else {
        "failed"
    };
    // Without the URL: it may carry credentials.
    SyncError::retryable(format!("{what} {kind}: {}", err.without_url()), None)
}

// ---- file ------------------------------------------------------------------------------

/// Writes `<directory>/<resource>.json` with the whole membership on every run; the resource
/// is the connection id unless a file name was linked.
pub struct FileProvider {
    directory: PathBuf,
}

/// A linked file name must stay inside the directory.
fn safe_file_name(name: &str) -> bool {
    !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[async_trait]
impl Provider for FileProvider {
    async fn sync(&self, request: SyncRequest<'_>) -> SyncOutcome {
        let resource = match request.resource_id {
            Some(linked) if !safe_file_name(linked) => {
                return SyncOutcome::failed(SyncError::permanent(format!(
                    "{linked:?} is not a usable file name (letters, digits, '-', '_', '.')"
                )));
            }
            Some(linked) => linked.to_owned(),
            None => format!("{}.json", request.connection.id),
        };
        let snapshot = json!({
            "connectionId": request.connection.id.as_str(),
            "audienceId": request.connection.audience.id.as_str(),
            "audienceName": request.connection.audience.name,
            "runId": request.run_id.as_str(),
            "syncedAt": Timestamp::now(),
            "members": request.members,
        });
        let directory = self.directory.clone();
        let file = resource.clone();
        let written = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::create_dir_all(&directory)
                .with_context(|| format!("creating {}", directory.display()))?;
            // Write aside, then rename: readers never see half a snapshot.
            let partial = directory.join(format!(".{file}.partial"));
            std::fs::write(&partial, serde_json::to_vec_pretty(&snapshot)?)
                .with_context(|| format!("writing {}", partial.display()))?;
            std::fs::rename(&partial, directory.join(&file))
                .with_context(|| format!("renaming {}", partial.display()))?;
            Ok(())
        })
        .await;
        match written {
            Ok(Ok(())) => SyncOutcome::all(
                request.resource_id.is_none().then_some(resource),
                request.diff,
            ),
            Ok(Err(err)) => SyncOutcome::failed(SyncError::retryable(format!("{err:#}"), None)),
            Err(err) => SyncOutcome::failed(SyncError::retryable(
                format!("writing the snapshot: {err}"),
                None,
            )),
        }
    }
}

// ---- webhook ---------------------------------------------------------------------------

/// POSTs `{connectionId, audienceId, audienceName, resourceId, runId, added, removed}` signed
/// with HMAC-SHA256 (see README "Webhook signature").
pub struct WebhookProvider {
    client: reqwest::Client,
    url: String,
    secret: String,
}

/// `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"` under the shared secret.
pub fn webhook_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Provider for WebhookProvider {
    async fn sync(&self, request: SyncRequest<'_>) -> SyncOutcome {
        let resource = request
            .resource_id
            .map_or_else(|| request.connection.id.to_string(), str::to_owned);
        if request.diff.is_empty() && request.resource_id.is_some() {
            return SyncOutcome::all(None, request.diff);
        }
        let body = json!({
            "connectionId": request.connection.id.as_str(),
            "audienceId": request.connection.audience.id.as_str(),
            "audienceName": request.connection.audience.name,
            "resourceId": resource,
            "runId": request.run_id.as_str(),
            "added": request.diff.added,
            "removed": request.diff.removed,
        })
        .to_string();
        let timestamp = (Timestamp::now().millis() / 1000).to_string();
        let signature = webhook_signature(self.secret.as_bytes(), &timestamp, body.as_bytes());
        let sent = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Tandem-Timestamp", &timestamp)
            .header("X-Tandem-Signature", signature)
            .header("Idempotency-Key", request.run_id.as_str())
            .body(body)
            .send()
            .await;
        let created = request.resource_id.is_none().then_some(resource);
        match sent {
            Ok(res) if res.status().is_success() => SyncOutcome::all(created, request.diff),
            Ok(res) => SyncOutcome::failed(http_failure("the webhook", res, &[]).await),
            Err(err) => SyncOutcome::failed(transport_failure("the webhook", err)),
        }
    }
}

// ---- pendo -----------------------------------------------------------------------------

/// Pendo accepts at most this many visitors per call.
pub const PENDO_BATCH: usize = 1000;

/// A Pendo segment per connection: created with `POST /api/v1/segment/upload` (with the first
/// batch of visitors), changed with `PATCH /api/v1/segment/{id}/visitor`.
pub struct PendoProvider {
    client: reqwest::Client,
    base_url: String,
    integration_key: String,
}

impl PendoProvider {
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<reqwest::Response, SyncError> {
        let res = request
            .header("x-pendo-integration-key", &self.integration_key)
            .json(body)
            .send()
            .await
            .map_err(|err| transport_failure(what, err))?;
        if res.status().is_success() {
            Ok(res)
        } else {
            Err(http_failure(what, res, &[StatusCode::CONFLICT]).await)
        }
    }

    async fn create(&self, name: &str, visitors: &[String]) -> Result<String, SyncError> {
        let what = "Pendo (segment upload)";
        let res = self
            .call(
                self.client
                    .post(format!("{}/api/v1/segment/upload", self.base_url)),
                &json!({ "name": name, "visitors": visitors }),
                what,
            )
            .await?;
        let answer: serde_json::Value = res
            .json()
            .await
            .map_err(|err| transport_failure(what, err))?;
        answer
            .get("id")
            .or_else(|| answer.get("segmentId"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                SyncError::retryable(format!("{what} answered without a segment id"), None)
            })
    }

    async fn patch(&self, segment: &str, op: &str, visitors: &[String]) -> Result<(), SyncError> {
        let url = format!(
            "{}/api/v1/segment/{}/visitor",
            self.base_url,
            utf8_percent_segment(segment)
        );
        let body = json!({ "patch": [{ "op": op, "path": "/visitors", "value": visitors }] });
        self.call(self.client.patch(url), &body, "Pendo (segment visitors)")
            .await
            .map(drop)
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
fn utf8_percent_segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[async_trait]
impl Provider for PendoProvider {
    async fn sync(&self, request: SyncRequest<'_>) -> SyncOutcome {
        let mut outcome = SyncOutcome::default();
        let mut adds: &[String] = &request.diff.added;
        let segment = match request.resource_id {
            Some(id) => id.to_owned(),
            None => {
                let first = &adds[..adds.len().min(PENDO_BATCH)];
                let name = request
                    .connection
                    .audience
                    .name
                    .clone()
                    .unwrap_or_else(|| request.connection.audience.id.to_string());
                match self.create(&name, first).await {
                    Ok(id) => {
                        outcome.added.extend_from_slice(first);
                        adds = &adds[first.len()..];
                        outcome.resource_id = Some(id.clone());
                        id
                    }
                    Err(err) => return SyncOutcome::failed(err),
                }
            }
        };
        for batch in adds.chunks(PENDO_BATCH) {
            if let Err(err) = self.patch(&segment, "add", batch).await {
                outcome.error = Some(err);
                return outcome;
            }
            outcome.added.extend_from_slice(batch);
        }
        for batch in request.diff.removed.chunks(PENDO_BATCH) {
            if let Err(err) = self.patch(&segment, "remove", batch).await {
                outcome.error = Some(err);
                return outcome;
            }
            outcome.removed.extend_from_slice(batch);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: HMAC-SHA256("key", "The quick brown fox.jumps over the lazy dog")
        let sig = webhook_signature(b"key", "The quick brown fox", b"jumps over the lazy dog");
        assert_eq!(
            sig,
            "v1=7298ee2f6d3ff5ba40ec8e176b8062195f823018ad39fe74a8727a101007702a"
        );
    }

    #[test]
    fn linked_file_names_stay_in_the_directory() {
        assert!(safe_file_name("audience-1.json"));
        assert!(!safe_file_name("../etc/passwd"));
        assert!(!safe_file_name(".hidden"));
        assert!(!safe_file_name("a/b"));
    }

    #[test]
    fn segment_ids_are_escaped_in_paths() {
        assert_eq!(utf8_percent_segment("9TJN-mXu_5.~"), "9TJN-mXu_5.~");
        assert_eq!(utf8_percent_segment("a/b c"), "a%2Fb%20c");
    }
}
