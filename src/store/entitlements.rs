//! Which customers hold which accounts and organizations: a local table (filled from CSV by
//! `tandem entitlements import`) or a bank's HTTP service.

use super::record::{Count, FromRecord, Record};
use super::sql::{SqlBuilder, params};
use super::{Db, StoreError};
use anyhow::{Context, bail};
use async_trait::async_trait;
use serde::Deserialize;

/// One customer's standing on one account or organization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    #[serde(default)]
    pub customer_id: String,
    pub resource_uri: String,
    #[serde(default)]
    pub role: String,
    /// The account does not allow joint owners (createInvitation answers 409).
    #[serde(default)]
    pub joint_owners_disabled: bool,
}

#[async_trait]
pub trait Entitlements: Send + Sync {
    /// The accounts and organizations a customer is entitled to.
    async fn of_customer(&self, customer_id: &str) -> Result<Vec<Entitlement>, StoreError>;
    /// Whether the account refuses joint owners.
    async fn joint_owners_disabled(&self, resource_uri: &str) -> Result<bool, StoreError>;
}

pub struct TableEntitlements {
    db: Db,
}

impl TableEntitlements {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Replaces the whole table with `rows` in one transaction: the file is the truth.
    pub async fn replace_all(&self, rows: &[Entitlement]) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.execute(SqlBuilder::fixed("DELETE FROM entitlements", params![]))
            .await?;
        for e in rows {
            tx.execute(SqlBuilder::fixed(
                "INSERT INTO entitlements (customer_id, resource_uri, role, joint_owners_disabled) \
                 VALUES ($1, $2, $3, $4)",
                params![
                    &e.customer_id,
                    &e.resource_uri,
                    &e.role,
                    i64::from(e.joint_owners_disabled),
                ],
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl FromRecord for Entitlement {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        Ok(Entitlement {
            customer_id: row.column("customer_id")?,
            resource_uri: row.column("resource_uri")?,
            role: row.column("role")?,
            joint_owners_disabled: row.column::<i64>("joint_owners_disabled")? != 0,
        })
    }
}

#[async_trait]
impl Entitlements for TableEntitlements {
    async fn of_customer(&self, customer_id: &str) -> Result<Vec<Entitlement>, StoreError> {
        self.db
            .fetch_all(SqlBuilder::fixed(
                "SELECT customer_id, resource_uri, role, joint_owners_disabled FROM entitlements \
                 WHERE customer_id = $1 ORDER BY resource_uri",
                params![customer_id],
            ))
            .await
    }

    async fn joint_owners_disabled(&self, resource_uri: &str) -> Result<bool, StoreError> {
        let disabled: Option<Count> = self
            .db
            .fetch_optional(SqlBuilder::fixed(
                "SELECT COUNT(*) AS n FROM entitlements WHERE resource_uri = $1 \
                 AND joint_owners_disabled <> 0",
                params![resource_uri],
            ))
            .await?;
        Ok(disabled.is_some_and(|Count(n)| n > 0))
    }
}

/// A bank's entitlement service: `GET {url}?customerId=...` and `GET {url}?resourceUri=...`
/// answer `{"items": [{"customerId", "resourceUri", "role", "jointOwnersDisabled"}]}`.
pub struct HttpEntitlements {
    client: reqwest::Client,
    url: String,
}

#[derive(Deserialize)]
struct Items {
    items: Vec<Entitlement>,
}

impl HttpEntitlements {
    pub fn new(client: reqwest::Client, url: String) -> Self {
        Self { client, url }
    }

    async fn fetch(&self, key: &str, value: &str) -> Result<Vec<Entitlement>, StoreError> {
        let url = reqwest::Url::parse_with_params(&self.url, &[(key, value)])
            .with_context(|| format!("entitlements URL {:?}", self.url))?;
        let res = self
            .client
            .get(url)
            .send()
            .await
            .context("calling the entitlements service")?;
        let status = res.status();
        if !status.is_success() {
            return Err(anyhow::anyhow!("the entitlements service answered {status}").into());
        }
        let items: Items = res
            .json()
            .await
            .context("reading the entitlements service's answer")?;
        Ok(items.items)
    }
}

#[async_trait]
impl Entitlements for HttpEntitlements {
    async fn of_customer(&self, customer_id: &str) -> Result<Vec<Entitlement>, StoreError> {
        let mut items = self.fetch("customerId", customer_id).await?;
        for e in &mut items {
            customer_id.clone_into(&mut e.customer_id);
        }
        Ok(items)
    }

    async fn joint_owners_disabled(&self, resource_uri: &str) -> Result<bool, StoreError> {
        Ok(self
            .fetch("resourceUri", resource_uri)
            .await?
            .iter()
            .any(|e| e.joint_owners_disabled))
    }
}

/// Parses the import file: a header line `customerId,resourceUri,role[,jointOwnersDisabled]`,
/// then one entitlement per line. Fields may be double-quoted (`""` inside quotes is a quote);
/// `jointOwnersDisabled` is `true`/`false` (empty means false).
pub fn parse_csv(text: &str) -> anyhow::Result<Vec<Entitlement>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().context("the file is empty")?;
    let header = split_csv_line(header).context("line 1")?;
    let expected = ["customerId", "resourceUri", "role", "jointOwnersDisabled"];
    if header.len() < 3 || header.len() > 4 || header.iter().zip(expected).any(|(h, e)| h != e) {
        bail!("line 1: the header must be customerId,resourceUri,role[,jointOwnersDisabled]");
    }
    let mut rows = Vec::new();
    for (index, line) in lines {
        let n = index + 1;
        let fields = split_csv_line(line).with_context(|| format!("line {n}"))?;
        if fields.len() != header.len() {
            bail!(
                "line {n}: expected {} fields, found {}",
                header.len(),
                fields.len()
            );
        }
        let disabled = match fields.get(3).map(|s| s.trim()) {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                bail!("line {n}: jointOwnersDisabled must be true or false, not {other:?}")
            }
        };
        if fields[0].is_empty() || fields[1].is_empty() {
            bail!("line {n}: customerId and resourceUri must not be empty");
        }
        rows.push(Entitlement {
            customer_id: fields[0].clone(),
            resource_uri: fields[1].clone(),
            role: fields[2].clone(),
            joint_owners_disabled: disabled,
        });
    }
    Ok(rows)
}

fn split_csv_line(line: &str) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        bail!("a quoted field is not closed");
    }
    fields.push(field);
    Ok(fields.into_iter().map(|f| f.trim().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_format() {
        let rows = parse_csv(
            "customerId,resourceUri,role,jointOwnersDisabled\n\
             c-1,https://bank.example/accounts/1,owner,false\n\
             \n\
             c-2,\"https://bank.example/accounts/a,b\",owner,true\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].resource_uri, "https://bank.example/accounts/a,b");
        assert!(rows[1].joint_owners_disabled);
        assert!(!rows[0].joint_owners_disabled);
    }

    #[test]
    fn reports_the_line_of_an_error() {
        let err = parse_csv("customerId,resourceUri,role\nc-1,uri\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(parse_csv("who,what\n").is_err());
        assert!(parse_csv("customerId,resourceUri,role,jointOwnersDisabled\nc,u,r,maybe").is_err());
        assert!(parse_csv("customerId,resourceUri,role\n\"c,u,r").is_err());
    }

    proptest! {
        #[test]
        fn quoted_fields_round_trip(a in "[^\"\r\n]{1,20}", b in "[^\"\r\n]{1,20}") {
            let line = format!("\"{}\",\"{}\"", a.replace('"', "\"\""), b);
            let fields = split_csv_line(&line).unwrap();
            prop_assert_eq!(fields, vec![a.trim().to_owned(), b.trim().to_owned()]);
        }
    }
}
