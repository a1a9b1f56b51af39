//! The schema's migrations, embedded in the binary.
//!
//! Listed here rather than found by `sqlx::migrate!`: that macro needs sqlx's `macros` feature,
//! which compiles a second sqlx, with both drivers and SQLite's C source, for the compiler to
//! run. A test checks that this list is the `migrations` directory as sqlx itself reads it.

use anyhow::Context;
use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

macro_rules! embedded {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../../migrations/", $file)))),*]
    };
}

/// (file name, contents): a new migration is a new file in `migrations/` and a line here.
const FILES: &[(&str, &str)] = embedded![
    "0001_audience_connections.sql",
    "0002_email_outbox.sql",
    "0003_audience_sync.sql",
    "0004_invitations.sql",
    "0005_connection_state_listing.sql",
    "0006_invitation_state_order.sql",
    "0007_invitation_visibility_covering.sql",
    "0008_invitation_visibility_order.sql",
    "0009_invitation_customer_group.sql",
    "0010_email_outbox_unsent.sql",
    "0011_email_outbox_failed.sql",
    "0012_invitation_type_resource_and_caps.sql",
];

pub fn migrator() -> anyhow::Result<Migrator> {
    let migrations = FILES
        .iter()
        .map(|&(file, sql)| migration(file, sql))
        .collect::<anyhow::Result<_>>()?;
    Ok(Migrator::with_migrations(migrations))
}

/// A migration as sqlx reads `<version>_<description>.sql`: underscores in the description
/// read as spaces, and the checksum (which a migrated database keeps) is of the whole file.
fn migration(file: &str, sql: &'static str) -> anyhow::Result<Migration> {
    let (version, description) = file
        .strip_suffix(".sql")
        .and_then(|stem| stem.split_once('_'))
        .with_context(|| {
            format!("migration file {file} is not named <version>_<description>.sql")
        })?;
    let version = version
        .parse()
        .with_context(|| format!("migration file {file} does not start with a version number"))?;
    Ok(Migration::new(
        version,
        Cow::Owned(description.replace('_', " ")),
        MigrationType::Simple,
        SqlStr::from_static(sql),
        sql.starts_with("-- no-transaction"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn the_embedded_migrations_are_the_directory_as_sqlx_reads_it() {
        let directory = Migrator::new(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations"
        )))
        .await
        .unwrap();
        let embedded = migrator().unwrap();
        let fields = |m: &Migration| {
            (
                m.version,
                m.description.to_string(),
                m.migration_type,
                m.sql.as_str().to_owned(),
                m.checksum.to_vec(),
                m.no_tx,
            )
        };
        let from_directory: Vec<_> = directory.iter().map(fields).collect();
        let from_binary: Vec<_> = embedded.iter().map(fields).collect();
        assert_eq!(
            from_binary.len(),
            from_directory.len(),
            "a migration is missing from FILES"
        );
        assert_eq!(from_binary, from_directory);
    }
}
