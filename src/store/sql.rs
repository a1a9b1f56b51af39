//! Building SQL whose shape depends on the request (filters) with every value bound as a
//! parameter: text is never spliced into the statement.

use sqlx::any::AnyArguments;
use sqlx::{Any, AssertSqlSafe, query::Query};

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
}

#[derive(Debug, Default)]
pub struct SqlBuilder {
    sql: String,
    params: Vec<Param>,
}

impl SqlBuilder {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            params: Vec::new(),
        }
    }

    /// Appends fixed SQL text (never user input).
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: Param) -> &mut Self {
        self.params.push(value);
        self.sql.push_str(&format!("${}", self.params.len()));
        self
    }

    /// Appends `(p1, p2, ...)` for a non-empty list.
    pub fn bind_list(&mut self, values: impl IntoIterator<Item = Param>) -> &mut Self {
        self.sql.push('(');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(value);
        }
        self.sql.push(')');
        self
    }

    #[cfg(test)]
    pub fn sql(&self) -> &str {
        &self.sql
    }

    pub fn build(self) -> Query<'static, Any, AnyArguments> {
        let mut query = sqlx::query(AssertSqlSafe(self.sql));
        for param in self.params {
            query = match param {
                Param::Text(s) => query.bind(s),
                Param::Int(i) => query.bind(i),
            };
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_in_order() {
        let mut b = SqlBuilder::new("SELECT 1 FROM t WHERE a = ");
        b.bind(Param::Text("x".into()))
            .push(" AND b IN ")
            .bind_list([Param::Int(1), Param::Int(2)]);
        assert_eq!(b.sql(), "SELECT 1 FROM t WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(b.params.len(), 3);
    }
}
