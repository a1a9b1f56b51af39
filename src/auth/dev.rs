//! Dev-mode credentials: an API key and a token signing key generated into the data directory,
//! so that `tandem serve` and `tandem dev-credentials` agree without any configuration.

use super::jwt::{Claims, DEV_AUDIENCE, DEV_ISSUER, sign_dev_token};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use std::path::{Path, PathBuf};

pub struct DevCredentials {
    pub api_key: String,
    pub signing_key: Vec<u8>,
}

/// What a dev token should say about its holder.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub subject: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub scope: String,
    /// Added as `admin_claim = admin_value` (see `[auth]`), marking staff.
    pub admin: Option<(String, String)>,
    /// Added as `customer_group_claim = group` (see `[auth]`).
    pub customer_group: Option<(String, String)>,
    pub ttl_secs: i64,
}

fn dev_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dev")
}

impl DevCredentials {
    /// Reads the credentials, generating them on first use.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = dev_dir(data_dir);
        crate::private_files::create_dir(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let api_key = read_or_generate(&dir.join("api-key"), || {
            format!("tandem-dev-{}", random_token(24))
        })?;
        let signing_key = read_or_generate(&dir.join("signing-key"), || random_token(32))?;
        let signing_key = URL_SAFE_NO_PAD
            .decode(signing_key.trim())
            .context("the dev signing key file is corrupt; delete it to generate a new one")?;
        if signing_key.len() < 32 {
            bail!("the dev signing key is too short; delete it to generate a new one");
        }
        Ok(Self {
            api_key: api_key.trim().to_owned(),
            signing_key,
        })
    }

    pub fn token(&self, request: &TokenRequest) -> anyhow::Result<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims: Claims = json!({
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "sub": request.subject,
            "iat": now,
            "exp": now + request.ttl_secs,
            "scope": request.scope,
            "preferred_username": request.username,
            "given_name": request.first_name,
            "family_name": request.last_name,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        if let Some((claim, value)) = &request.admin {
            let merged = match claims.get(claim).and_then(|v| v.as_str()) {
                Some(existing) if !existing.is_empty() => format!("{existing} {value}"),
                _ => value.clone(),
            };
            claims.insert(claim.clone(), json!(merged));
        }
        if let Some((claim, group)) = &request.customer_group {
            claims.insert(claim.clone(), json!(group));
        }
        sign_dev_token(&self.signing_key, &claims)
    }
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Reads the file, or generates its value on first use. Readers never see a partial value: it
/// is written aside and put in place whole (see `write_private_once`), and when two processes
/// generate at once (`tandem serve` and `tandem dev-credentials`) both use the one that won.
pub(crate) fn read_or_generate(
    path: &Path,
    generate: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let value = generate();
            if write_private_once(path, &value)? {
                Ok(value)
            } else {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            }
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a file only its owner can read, unless it already exists (then returns false).
///
/// The contents go to a temporary file beside it, reach the disk, and are then hard-linked to
/// `path`, which fails if `path` exists. A kill at any moment leaves either no file or the
/// complete one (plus perhaps a stray temporary file), never an empty or truncated key that
/// would keep the service from starting, or a key lost after data was sealed with it.
fn write_private_once(path: &Path, contents: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let written = crate::private_files::options()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| {
            crate::private_files::restrict(&file)?;
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
        .with_context(|| format!("writing {}", temporary.display()));
    let linked = written.and_then(|()| {
        std::fs::hard_link(&temporary, path)
            .map(|()| true)
            .or_else(|err| match err.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(false),
                _ => Err(err),
            })
            .with_context(|| format!("creating {}", path.display()))
    });
    let _ = std::fs::remove_file(&temporary);
    let created = linked?;
    #[cfg(unix)]
    if created && let Some(dir) = path.parent() {
        // The new directory entry must reach the disk too, or a power cut could lose the key.
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::{LocalKeyVerifier, TokenVerifier};

    #[tokio::test]
    async fn credentials_persist_and_sign_verifiable_tokens() {
        let dir = std::env::temp_dir().join(format!("tandem-dev-{}", uuid::Uuid::new_v4()));
        let first = DevCredentials::load_or_create(&dir).unwrap();
        let again = DevCredentials::load_or_create(&dir).unwrap();
        assert_eq!(first.api_key, again.api_key);
        assert_eq!(first.signing_key, again.signing_key);
        let token = first
            .token(&TokenRequest {
                subject: "admin-0001".into(),
                username: "devadmin".into(),
                first_name: "Dev".into(),
                last_name: "Admin".into(),
                scope: "banking/full".into(),
                admin: Some(("scope".into(), "admin".into())),
                customer_group: Some(("customer_group".into(), "2".into())),
                ttl_secs: 60,
            })
            .unwrap();
        let claims = LocalKeyVerifier::new(&again.signing_key)
            .verify(&token)
            .await
            .unwrap();
        assert_eq!(claims["scope"], "banking/full admin");
        assert_eq!(claims["customer_group"], "2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("dev/api-key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// `tandem serve` and `tandem dev-credentials` may both generate on first use, and a
    /// process may be killed while writing: every reader must get the one complete value.
    #[test]
    fn concurrent_first_uses_agree_on_one_complete_value() {
        let dir = std::env::temp_dir().join(format!("tandem-dev-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for round in 0..20 {
            let path = dir.join(format!("key-{round}"));
            let values: Vec<String> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|writer| {
                        let path = &path;
                        scope.spawn(move || {
                            read_or_generate(path, || format!("{writer}{}", "k".repeat(64 * 1024)))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().unwrap())
                    .collect()
            });
            assert_eq!(values[0].len(), 1 + 64 * 1024, "a complete value");
            assert!(values.iter().all(|v| *v == values[0]), "one value for all");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), values[0]);
        }
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 20, "no temporary files left behind: {names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
