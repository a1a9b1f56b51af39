//! Sending built messages: over SMTP in production, as `.eml` files in dev mode.

use crate::config::{SmtpConfig, SmtpTls};
use anyhow::Context;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Delivers one message. `id` is the outbox id, stable across retries.
#[async_trait::async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, id: &str, message: &Message) -> anyhow::Result<()>;
}

/// SMTP through a relay (lettre). One connection per message: simple, and nothing to go stale
/// during a relay outage.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    relay: String,
}

impl SmtpMailer {
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Self> {
        crate::app::install_crypto_provider();
        let builder = match config.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &config.host,
            )),
        }
        .with_context(|| format!("setting up TLS for the SMTP relay {}", config.host))?;
        let mut builder = builder
            .port(config.effective_port())
            .timeout(Some(Duration::from_secs(config.timeout_secs)));
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            relay: format!("{}:{}", config.host, config.effective_port()),
        })
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, _id: &str, message: &Message) -> anyhow::Result<()> {
        self.transport
            .send_raw(message.envelope(), &message.formatted())
            .await
            .with_context(|| format!("sending through the SMTP relay {}", self.relay))?;
        Ok(())
    }
}

/// Dev mode: each message becomes `<dir>/<UTC time>-<outbox id>.eml`, which sorts by time and
/// opens in any mail client.
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

const FILE_TIME: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
);

#[async_trait::async_trait]
impl Mailer for FileMailer {
    async fn send(&self, id: &str, message: &Message) -> anyhow::Result<()> {
        let stamp = time::OffsetDateTime::now_utc()
            .format(FILE_TIME)
            .context("formatting the file time")?;
        let dir = self.dir.clone();
        let name = format!("{stamp}-{id}.eml");
        let formatted = message.formatted();
        tokio::task::spawn_blocking(move || write_eml(&dir, &name, &formatted))
            .await
            .context("the task writing the message ended abnormally")?
    }
}

/// Writes `<dir>/<name>`, readable by the owner only (it holds an invitee's name, address and
/// link). Written aside and renamed, so a reader never sees half a message.
fn write_eml(dir: &Path, name: &str, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    crate::private_files::create_dir(dir)
        .with_context(|| format!("creating the mail directory {}", dir.display()))?;
    let path = dir.join(name);
    let partial = path.with_extension("eml.partial");
    crate::private_files::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .and_then(|mut file| {
            crate::private_files::restrict(&file)?;
            file.write_all(contents)
        })
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tls_mode_sets_up_with_the_system_trust_store() {
        for tls in [SmtpTls::Starttls, SmtpTls::Tls, SmtpTls::None] {
            let config = SmtpConfig {
                host: "smtp.bank.example".into(),
                port: None,
                tls,
                username: Some("tandem".into()),
                password: Some("hunter2".into()),
                timeout_secs: 5,
            };
            let mailer = SmtpMailer::new(&config).unwrap();
            assert_eq!(
                mailer.relay,
                format!("smtp.bank.example:{}", config.effective_port())
            );
        }
    }
}
