//! Building SQL whose shape depends on the request (filters) with every value bound as a
//! parameter: text is never spliced into the statement.

use crate::domain::filter::{Condition, Filter, Op, SortKey};
use sqlx::{AssertSqlSafe, Database, Encode, Type, query::Query};

/// A bound value. NULLs carry their column's type, which PostgreSQL needs to accept them.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
    NullText,
    NullInt,
}

impl From<&str> for Param {
    fn from(text: &str) -> Self {
        Param::Text(text.to_owned())
    }
}

impl From<String> for Param {
    fn from(text: String) -> Self {
        Param::Text(text)
    }
}

impl From<&String> for Param {
    fn from(text: &String) -> Self {
        Param::Text(text.clone())
    }
}

impl From<i64> for Param {
    fn from(int: i64) -> Self {
        Param::Int(int)
    }
}

impl From<Option<&str>> for Param {
    fn from(text: Option<&str>) -> Self {
        text.map_or(Param::NullText, Param::from)
    }
}

impl From<Option<String>> for Param {
    fn from(text: Option<String>) -> Self {
        text.map_or(Param::NullText, Param::Text)
    }
}

impl From<Option<i64>> for Param {
    fn from(int: Option<i64>) -> Self {
        int.map_or(Param::NullInt, Param::Int)
    }
}

/// `vec![Param::from(a), Param::from(b), ...]`: the values of a statement's `$1`, `$2`, ...
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::store::sql::Param::from($value)),*]
    };
}
pub(crate) use params;

/// A piece of SQL that one statement writes in several places (the same conditions in each part
/// of a union, say): its values are bound where it first appears, and every later appearance
/// names the same placeholders (`$n` may appear any number of times on both backends). The
/// statement's parameters then do not grow with the number of places. Belongs to one statement.
#[derive(Debug, Default)]
pub struct Repeated(Option<String>);

#[derive(Debug, Clone, Default)]
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

    /// A statement whose placeholders (`$1`, `$2`, ...) are already in `sql`.
    pub fn fixed(sql: &str, params: Vec<Param>) -> Self {
        Self {
            sql: sql.to_owned(),
            params,
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

    /// Appends what `build` appends the first time `piece` is pushed, and the same text, with the
    /// same placeholders, every later time (without running `build`).
    pub fn push_repeated(
        &mut self,
        piece: &mut Repeated,
        build: impl FnOnce(&mut Self),
    ) -> &mut Self {
        match &piece.0 {
            Some(text) => self.sql.push_str(text),
            None => {
                let from = self.sql.len();
                build(self);
                piece.0 = Some(self.sql[from..].to_owned());
            }
        }
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

    /// Appends a parsed `filter` as a parenthesized condition. Columns come from the collection's
    /// `FieldSpec` table, values are bound.
    pub fn push_filter(&mut self, filter: &Filter) -> &mut Self {
        self.push_filter_over(filter, &StoredColumns)
    }

    /// `push_filter` where some columns are worked out from others by `derived`.
    pub fn push_filter_over(&mut self, filter: &Filter, derived: &dyn DerivedColumns) -> &mut Self {
        match filter {
            Filter::And(parts) | Filter::Or(parts) => {
                let joiner = if matches!(filter, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.sql.push('(');
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        self.sql.push_str(joiner);
                    }
                    self.push_filter_over(part, derived);
                }
                self.sql.push(')');
            }
            Filter::Not(inner) => {
                self.sql.push_str("(NOT ");
                self.push_filter_over(inner, derived);
                self.sql.push(')');
            }
            Filter::Condition(c) if derived.push_condition(self, c) => {}
            Filter::Condition(c) => {
                let text = |v: &String| Param::Text(v.clone());
                match c.op {
                    Op::Eq => self
                        .push(&format!("({} = ", c.column))
                        .bind(text(&c.values[0]))
                        .push(")"),
                    Op::Ne => self
                        .push(&format!("({0} IS NULL OR {0} <> ", c.column))
                        .bind(text(&c.values[0]))
                        .push(")"),
                    Op::In => self
                        .push(&format!("({} IN ", c.column))
                        .bind_list(c.values.iter().map(text))
                        .push(")"),
                    Op::Contains => {
                        let pattern = format!("%{}%", escape_like(&c.values[0].to_lowercase()));
                        self.push(&format!("(LOWER({}) LIKE ", c.column))
                            .bind(Param::Text(pattern))
                            .push(" ESCAPE '\\')")
                    }
                    Op::Search => {
                        // A word starts the text or follows a separator: one pattern, bound
                        // once, after each separator's constant pattern.
                        let word = format!("{}%", escape_like(&c.values[0].to_lowercase()));
                        let mut pattern = Repeated::default();
                        self.sql.push('(');
                        for (i, separator) in ["", "% ", "%.", "%@", "%-", "%\\_", "%/", "%:"]
                            .iter()
                            .enumerate()
                        {
                            if i > 0 {
                                self.sql.push_str(" OR ");
                            }
                            self.push(&format!("LOWER({}) LIKE ", c.column));
                            if !separator.is_empty() {
                                self.push(&format!("('{separator}' || "));
                            }
                            self.push_repeated(&mut pattern, |q| {
                                q.bind(Param::Text(word.clone()));
                            });
                            if !separator.is_empty() {
                                self.sql.push(')');
                            }
                            self.push(" ESCAPE '\\'");
                        }
                        self.push(")")
                    }
                };
            }
        }
        self
    }

    /// Appends ` ORDER BY` with the keys (nothing for none). Callers add a unique tie-breaker key
    /// so that pages are stable.
    pub fn push_order_by(&mut self, keys: &[SortKey]) -> &mut Self {
        self.push_order_by_over(keys, &StoredColumns)
    }

    /// `push_order_by` where some columns are worked out from others by `derived`.
    pub fn push_order_by_over(
        &mut self,
        keys: &[SortKey],
        derived: &dyn DerivedColumns,
    ) -> &mut Self {
        for (i, key) in keys.iter().enumerate() {
            self.sql.push_str(if i == 0 { " ORDER BY " } else { ", " });
            if !derived.push_expression(self, key.column) {
                self.sql.push_str(key.column);
            }
            self.sql
                .push_str(if key.descending { " DESC" } else { " ASC" });
        }
        self
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn build<DB: Database>(self) -> Query<'static, DB, DB::Arguments>
    where
        String: Encode<'static, DB> + Type<DB>,
        i64: Encode<'static, DB> + Type<DB>,
        Option<String>: Encode<'static, DB> + Type<DB>,
        Option<i64>: Encode<'static, DB> + Type<DB>,
    {
        let mut query = sqlx::query(AssertSqlSafe(self.sql));
        for param in self.params {
            query = match param {
                Param::Text(s) => query.bind(s),
                Param::Int(i) => query.bind(i),
                Param::NullText => query.bind(None::<String>),
                Param::NullInt => query.bind(None::<i64>),
            };
        }
        query
    }
}

/// Columns a collection works out from its stored ones (an invitation's state as of now), so
/// that conditions on them reach the database as conditions on stored columns, which its
/// planner can estimate and its indexes serve.
pub trait DerivedColumns {
    /// Appends `condition` if its column is derived; false leaves it to the caller.
    fn push_condition(&self, q: &mut SqlBuilder, condition: &Condition) -> bool;
    /// Appends the expression `column` stands for if it is derived; false leaves it to the caller.
    fn push_expression(&self, q: &mut SqlBuilder, column: &str) -> bool;
}

/// Every column is stored as such.
struct StoredColumns;

impl DerivedColumns for StoredColumns {
    fn push_condition(&self, _: &mut SqlBuilder, _: &Condition) -> bool {
        false
    }

    fn push_expression(&self, _: &mut SqlBuilder, _: &str) -> bool {
        false
    }
}

/// Escapes LIKE's wildcards so that user text matches literally (with `ESCAPE '\'`).
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::filter::{FieldSpec, parse_filter, parse_sort};

    const FIELDS: &[FieldSpec] = &[
        FieldSpec {
            name: "state",
            column: "state",
            ops: &[Op::Eq, Op::Ne, Op::In],
            sortable: true,
        },
        FieldSpec {
            name: "email",
            column: "email",
            ops: &[Op::Contains, Op::Search],
            sortable: false,
        },
    ];

    #[test]
    fn filters_compile_to_placeholders_only() {
        let f = parse_filter(
            r#"and(in(state,sent|"x'); DROP TABLE t; --"),not(contains(email,"50%_off")))"#,
            FIELDS,
        )
        .unwrap();
        let mut b = SqlBuilder::new("SELECT 1 FROM t WHERE ");
        b.push_filter(&f)
            .push_order_by(&parse_sort("-state", FIELDS).unwrap());
        assert_eq!(
            b.sql(),
            "SELECT 1 FROM t WHERE ((state IN ($1, $2)) AND (NOT (LOWER(email) LIKE $3 ESCAPE '\\'))) ORDER BY state DESC"
        );
        assert_eq!(b.params[1], Param::Text("x'); DROP TABLE t; --".into()));
        assert_eq!(b.params[2], Param::Text("%50\\%\\_off%".into()));
    }

    #[test]
    fn a_repeated_piece_binds_its_values_once() {
        let mut b = SqlBuilder::new("SELECT 1 FROM t WHERE a = ");
        b.bind(Param::Int(1));
        let mut piece = Repeated::default();
        for column in ["b", "c"] {
            b.push(&format!(" AND {column} IN "))
                .push_repeated(&mut piece, |q| {
                    q.bind_list([Param::Int(2), Param::Int(3)]);
                });
        }
        b.push(" AND d = ").bind(Param::Int(4));
        assert_eq!(
            b.sql(),
            "SELECT 1 FROM t WHERE a = $1 AND b IN ($2, $3) AND c IN ($2, $3) AND d = $4"
        );
        assert_eq!(b.params.len(), 4);
    }

    #[test]
    fn a_word_searched_for_is_bound_once() {
        let mut b = SqlBuilder::new("");
        b.push_filter(&parse_filter("search(email,\"Max_\")", FIELDS).unwrap());
        let like = |separator: &str| format!("LOWER(email) LIKE ('{separator}' || $1) ESCAPE '\\'");
        assert_eq!(
            b.sql(),
            format!(
                "(LOWER(email) LIKE $1 ESCAPE '\\' OR {} OR {} OR {} OR {} OR {} OR {} OR {})",
                like("% "),
                like("%."),
                like("%@"),
                like("%-"),
                like("%\\_"),
                like("%/"),
                like("%:")
            )
        );
        assert_eq!(b.params, [Param::Text("max\\_%".into())]);
    }

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
