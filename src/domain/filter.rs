//! The `filter` and `sortBy` query languages (DESIGN.md): parsed into a small tree, checked
//! against the fields a collection allows, and compiled elsewhere to bound SQL parameters.
//!
//! ```text
//! filter := and(filter, ...) | or(filter, ...) | not(filter)
//!         | eq(field, value) | ne(field, value) | in(field, value|value|...)
//!         | contains(field, value) | search(field, value)
//! value  := bare characters up to , ) or |  |  "double-quoted, with \" and \\ escapes"
//! sortBy := key(,key)*    key := field | -field
//! ```
//!
//! Every value becomes a bound parameter of each statement a list runs, so a filter's size is
//! capped: its length, its nesting, its number of comparisons and the values of one `in()`.

use std::fmt;

/// Comparison functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
    Contains,
    Search,
}

impl Op {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "in" => Self::In,
            "contains" => Self::Contains,
            "search" => Self::Search,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::In => "in",
            Self::Contains => "contains",
            Self::Search => "search",
        }
    }
}

/// A field clients may name, the column it maps to, and what they may do with it.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub column: &'static str,
    pub ops: &'static [Op],
    pub sortable: bool,
}

/// One comparison. `values` has one element except for `in`, which has at least one and at
/// most `MAX_ALTERNATIVES`, all different.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub op: Op,
    pub column: &'static str,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Condition(Condition),
}

/// Where and why the text could not be understood. `position` counts characters from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for SyntaxError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: &'static str,
    pub descending: bool,
}

/// Deeper nesting is refused, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 32;
/// Longer filter texts are refused outright.
pub const MAX_LEN: usize = 4096;
/// The most comparisons one filter holds: each is written into every index walk of a
/// customer's list, so a filter of many short ones would make a long statement.
pub const MAX_COMPARISONS: usize = 100;
/// The most different values one `in()` takes (repeats count once). The subset parameters of
/// the lists take as many `|` alternatives.
pub const MAX_ALTERNATIVES: usize = 100;

pub fn parse_filter(text: &str, fields: &[FieldSpec]) -> Result<Filter, SyntaxError> {
    let mut parser = Parser::new(text, fields)?;
    parser.skip_space();
    let filter = parser.call(0)?;
    parser.skip_space();
    if let Some(c) = parser.peek() {
        return Err(parser.error_here(format!("unexpected {c:?} after the end of the filter")));
    }
    Ok(filter)
}

pub fn parse_sort(text: &str, fields: &[FieldSpec]) -> Result<Vec<SortKey>, SyntaxError> {
    let mut keys = Vec::new();
    let mut position = 1;
    for raw in text.split(',') {
        let trimmed = raw.trim();
        let key_position = position + (raw.chars().count() - raw.trim_start().chars().count());
        let (descending, name) = match trimmed.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        let field = fields
            .iter()
            .find(|f| f.name == name && f.sortable)
            .ok_or_else(|| SyntaxError {
                position: key_position,
                message: format!(
                    "cannot sort by {name:?}; sortable fields: {}",
                    fields
                        .iter()
                        .filter(|f| f.sortable)
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        if keys.iter().any(|k: &SortKey| k.column == field.column) {
            return Err(SyntaxError {
                position: key_position,
                message: format!("{name:?} appears twice"),
            });
        }
        keys.push(SortKey {
            column: field.column,
            descending,
        });
        position += raw.chars().count() + 1;
    }
    Ok(keys)
}

struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    fields: &'a [FieldSpec],
    comparisons: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &str, fields: &'a [FieldSpec]) -> Result<Self, SyntaxError> {
        if text.len() > MAX_LEN {
            return Err(SyntaxError {
                position: 1,
                message: format!("the filter is longer than {MAX_LEN} bytes"),
            });
        }
        Ok(Self {
            chars: text.chars().collect(),
            at: 0,
            fields,
            comparisons: 0,
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn error_at(&self, index: usize, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            position: index + 1,
            message: message.into(),
        }
    }

    fn error_here(&self, message: impl Into<String>) -> SyntaxError {
        self.error_at(self.at, message)
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), SyntaxError> {
        self.skip_space();
        match self.peek() {
            Some(c) if c == wanted => {
                self.at += 1;
                Ok(())
            }
            Some(c) => Err(self.error_here(format!("expected {wanted:?} but found {c:?}"))),
            None => Err(self.error_here(format!("expected {wanted:?} but the filter ended"))),
        }
    }

    fn identifier(&mut self) -> (usize, String) {
        self.skip_space();
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.at += 1;
        }
        (start, self.chars[start..self.at].iter().collect())
    }

    fn call(&mut self, depth: usize) -> Result<Filter, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error_here(format!("filters nest at most {MAX_DEPTH} levels deep")));
        }
        let (start, name) = self.identifier();
        if name.is_empty() {
            return Err(match self.peek() {
                Some(c) => {
                    self.error_here(format!("expected a function such as eq( but found {c:?}"))
                }
                None => self.error_here("expected a function such as eq( but the filter ended"),
            });
        }
        self.expect('(')?;
        let filter = match name.as_str() {
            "and" | "or" => {
                let mut parts = vec![self.call(depth + 1)?];
                loop {
                    self.skip_space();
                    if self.peek() == Some(',') {
                        self.at += 1;
                        parts.push(self.call(depth + 1)?);
                    } else {
                        break;
                    }
                }
                if name == "and" {
                    Filter::And(parts)
                } else {
                    Filter::Or(parts)
                }
            }
            "not" => Filter::Not(Box::new(self.call(depth + 1)?)),
            _ => {
                let op = Op::parse(&name).ok_or_else(|| {
                    self.error_at(
                        start,
                        format!("unknown function {name:?}; use and, or, not, eq, ne, in, contains or search"),
                    )
                })?;
                self.comparisons += 1;
                if self.comparisons > MAX_COMPARISONS {
                    return Err(self.error_at(
                        start,
                        format!("a filter holds at most {MAX_COMPARISONS} comparisons"),
                    ));
                }
                Filter::Condition(self.condition(op)?)
            }
        };
        self.expect(')')?;
        Ok(filter)
    }

    fn condition(&mut self, op: Op) -> Result<Condition, SyntaxError> {
        let (start, name) = self.identifier();
        let field = self.fields.iter().find(|f| f.name == name).ok_or_else(|| {
            self.error_at(
                start,
                format!(
                    "cannot filter on {name:?}; fields: {}",
                    self.fields
                        .iter()
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !field.ops.contains(&op) {
            return Err(self.error_at(
                start,
                format!(
                    "{} cannot be used with {name}; allowed: {}",
                    op.name(),
                    field
                        .ops
                        .iter()
                        .map(|o| o.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        self.expect(',')?;
        let mut values = vec![self.value()?];
        while self.peek() == Some('|') {
            if op != Op::In {
                return Err(self.error_here(format!(
                    "only in() takes several |-separated values, not {}()",
                    op.name()
                )));
            }
            self.at += 1;
            self.skip_space();
            let start = self.at;
            let value = self.value()?;
            if values.contains(&value) {
                continue;
            }
            if values.len() == MAX_ALTERNATIVES {
                return Err(self.error_at(
                    start,
                    format!("in() takes at most {MAX_ALTERNATIVES} different values"),
                ));
            }
            values.push(value);
        }
        Ok(Condition {
            op,
            column: field.column,
            values,
        })
    }

    fn value(&mut self) -> Result<String, SyntaxError> {
        self.skip_space();
        let start = self.at;
        if self.peek() == Some('"') {
            self.at += 1;
            let mut value = String::new();
            loop {
                match self.peek() {
                    None => return Err(self.error_at(start, "this quoted value is never closed")),
                    Some('"') => {
                        self.at += 1;
                        break;
                    }
                    Some('\\') => {
                        self.at += 1;
                        match self.peek() {
                            Some(c @ ('"' | '\\')) => value.push(c),
                            _ => {
                                return Err(
                                    self.error_here("only \\\" and \\\\ may follow a backslash")
                                );
                            }
                        }
                        self.at += 1;
                    }
                    Some(c) => {
                        value.push(c);
                        self.at += 1;
                    }
                }
            }
            self.skip_space();
            return Ok(value);
        }
        while self
            .peek()
            .is_some_and(|c| !matches!(c, ',' | ')' | '|' | '(' | '"'))
        {
            self.at += 1;
        }
        let value: String = self.chars[start..self.at]
            .iter()
            .collect::<String>()
            .trim_end()
            .to_owned();
        if value.is_empty() {
            return Err(self.error_at(start, "expected a value"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIELDS: &[FieldSpec] = &[
        FieldSpec {
            name: "state",
            column: "state",
            ops: &[Op::Eq, Op::Ne, Op::In],
            sortable: true,
        },
        FieldSpec {
            name: "type",
            column: "invitation_type",
            ops: &[Op::Eq, Op::Ne, Op::In],
            sortable: true,
        },
        FieldSpec {
            name: "emailAddress",
            column: "email_address",
            ops: &[Op::Eq, Op::Contains, Op::Search],
            sortable: false,
        },
    ];

    fn cond(op: Op, column: &'static str, values: &[&str]) -> Filter {
        Filter::Condition(Condition {
            op,
            column,
            values: values.iter().map(|v| v.to_string()).collect(),
        })
    }

    #[test]
    fn the_design_examples() {
        assert_eq!(
            parse_filter("eq(state,sent)", FIELDS).unwrap(),
            cond(Op::Eq, "state", &["sent"])
        );
        assert_eq!(
            parse_filter(
                r#"and(in(state,sent|accepted),contains(emailAddress,"@example.com"))"#,
                FIELDS
            )
            .unwrap(),
            Filter::And(vec![
                cond(Op::In, "state", &["sent", "accepted"]),
                cond(Op::Contains, "email_address", &["@example.com"]),
            ])
        );
        assert_eq!(
            parse_sort("type,-state", FIELDS).unwrap(),
            vec![
                SortKey {
                    column: "invitation_type",
                    descending: false
                },
                SortKey {
                    column: "state",
                    descending: true
                }
            ]
        );
    }

    #[test]
    fn spaces_nesting_and_quotes() {
        assert_eq!(
            parse_filter(
                r#" or( not(eq(type, joint)) , eq( emailAddress , "a \"b\" \\ c,)|" ) ) "#,
                FIELDS
            )
            .unwrap(),
            Filter::Or(vec![
                Filter::Not(Box::new(cond(Op::Eq, "invitation_type", &["joint"]))),
                cond(Op::Eq, "email_address", &["a \"b\" \\ c,)|"]),
            ])
        );
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("eq(colour,red)", 4, "cannot filter on \"colour\""),
            (
                "contains(state,se)",
                10,
                "contains cannot be used with state",
            ),
            ("eq(state,sent", 14, "expected ')'"),
            ("lt(state,sent)", 1, "unknown function"),
            ("eq(state,sent) x", 16, "unexpected"),
            ("eq(emailAddress,a|b)", 18, "only in()"),
            (r#"eq(emailAddress,"abc)"#, 17, "never closed"),
            ("eq(state,)", 10, "expected a value"),
            ("", 1, "expected a function"),
            ("and()", 5, "expected a function"),
        ];
        for (text, position, message) in cases {
            let err = parse_filter(text, FIELDS).unwrap_err();
            assert_eq!(err.position, position, "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
        }
        let err = parse_sort("type,-colour", FIELDS).unwrap_err();
        assert_eq!(err.position, 6, "{err}");
        assert!(parse_sort("emailAddress", FIELDS).is_err(), "not sortable");
        assert!(parse_sort("type,type", FIELDS).is_err());
        assert!(parse_sort("", FIELDS).is_err());
    }

    #[test]
    fn hostile_input_is_refused_not_crashed_on() {
        let deep = "not(".repeat(100) + "eq(state,sent)" + &")".repeat(100);
        assert!(
            parse_filter(&deep, FIELDS)
                .unwrap_err()
                .message
                .contains("nest")
        );
        assert!(parse_filter(&"a".repeat(MAX_LEN + 1), FIELDS).is_err());
    }

    #[test]
    fn in_lists_and_comparisons_are_capped_and_repeats_count_once() {
        let values = |n: usize| (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>();
        let full = format!("in(type,{})", values(MAX_ALTERNATIVES).join("|"));
        match parse_filter(&full, FIELDS).unwrap() {
            Filter::Condition(c) => assert_eq!(c.values, values(MAX_ALTERNATIVES)),
            other => panic!("{other:?}"),
        }
        // The first value too many is where the error points, spaces before it left out.
        let over = format!(
            "in(type,{}| v{MAX_ALTERNATIVES})",
            values(MAX_ALTERNATIVES).join("|")
        );
        let err = parse_filter(&over, FIELDS).unwrap_err();
        assert_eq!(err.position, over.rfind('v').unwrap() + 1, "{err}");
        assert!(
            err.message.contains("at most 100 different values"),
            "{err}"
        );
        // Repeats are dropped, in the order first written, however many there are.
        let repeated = format!("in(type,b|a{})", "|b| a".repeat(MAX_LEN / 6));
        assert_eq!(
            parse_filter(&repeated, FIELDS).unwrap(),
            cond(Op::In, "invitation_type", &["b", "a"])
        );
        let comparisons = |n: usize| {
            let each = vec!["eq(state,sent)"; n];
            format!("or({})", each.join(","))
        };
        assert!(parse_filter(&comparisons(MAX_COMPARISONS), FIELDS).is_ok());
        let over = comparisons(MAX_COMPARISONS + 1);
        let err = parse_filter(&over, FIELDS).unwrap_err();
        assert_eq!(err.position, over.rfind("eq(").unwrap() + 1, "{err}");
        assert!(err.message.contains("at most 100 comparisons"), "{err}");
    }

    fn quote(v: &str) -> String {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }

    #[test]
    fn nesting_stops_at_the_limit_for_every_combinator() {
        for (open, close) in [("not(", ")"), ("and(", ")"), ("or(", ",eq(state,sent))")] {
            let nested =
                |levels: usize| open.repeat(levels) + "eq(state,sent)" + &close.repeat(levels);
            assert!(
                parse_filter(&nested(MAX_DEPTH), FIELDS).is_ok(),
                "{open} x {MAX_DEPTH}"
            );
            let err = parse_filter(&nested(MAX_DEPTH + 1), FIELDS).unwrap_err();
            assert!(err.message.contains("nest"), "{open}: {err}");
        }
        // As deep as the length limit allows: refused at the depth limit, long before the
        // stack could be at risk (the parser recurses once per level).
        let levels = MAX_LEN / "not(".len();
        let text = "not(".repeat(levels);
        assert_eq!(text.len(), MAX_LEN);
        let err = parse_filter(&text, FIELDS).unwrap_err();
        assert_eq!(err.position, MAX_DEPTH * 4 + 5, "{err}");
        // Unbalanced openings alone, and a flood of closers, are syntax errors.
        assert!(parse_filter(&"(".repeat(MAX_LEN), FIELDS).is_err());
        assert!(parse_filter(&")".repeat(MAX_LEN), FIELDS).is_err());
        assert!(parse_sort(&",".repeat(MAX_LEN), FIELDS).is_err());
    }

    /// Characters that make up filters, so that generated text gets past the first token.
    fn filterish_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("and(".to_owned()),
                Just("or(".to_owned()),
                Just("not(".to_owned()),
                Just("eq(".to_owned()),
                Just("in(".to_owned()),
                Just("contains(".to_owned()),
                Just("state".to_owned()),
                Just("emailAddress".to_owned()),
                Just(",".to_owned()),
                Just(")".to_owned()),
                Just("|".to_owned()),
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just(" ".to_owned()),
                "\\PC{1,3}",
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A field of `FIELDS` and a comparison it allows.
    fn condition() -> impl Strategy<Value = Filter> {
        let value = prop_oneof!["[a-zA-Z0-9@._-]{1,10}", "\\PC{0,10}"];
        (0..FIELDS.len(), proptest::collection::vec(value, 1..4)).prop_flat_map(
            |(field, values)| {
                let spec = FIELDS[field];
                (0..spec.ops.len()).prop_map(move |op| {
                    let op = spec.ops[op];
                    let values = if op == Op::In {
                        distinct(&values)
                    } else {
                        values[..1].to_vec()
                    };
                    Filter::Condition(Condition {
                        op,
                        column: spec.column,
                        values,
                    })
                })
            },
        )
    }

    /// `values` without repeats, in the order first written (as `in()` keeps them).
    fn distinct(values: &[String]) -> Vec<String> {
        let mut kept: Vec<String> = Vec::new();
        for value in values {
            if !kept.contains(value) {
                kept.push(value.clone());
            }
        }
        kept
    }

    fn filter_tree() -> impl Strategy<Value = Filter> {
        condition().prop_recursive(6, 40, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..4).prop_map(Filter::And),
                proptest::collection::vec(inner.clone(), 1..4).prop_map(Filter::Or),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
    }

    /// Writes a filter back as text; `space` goes around every token.
    fn render(filter: &Filter, space: &str) -> String {
        let call = |name: &str, args: Vec<String>| {
            format!(
                "{name}({space}{}{space})",
                args.join(&format!("{space},{space}"))
            )
        };
        match filter {
            Filter::And(parts) => call("and", parts.iter().map(|p| render(p, space)).collect()),
            Filter::Or(parts) => call("or", parts.iter().map(|p| render(p, space)).collect()),
            Filter::Not(inner) => call("not", vec![render(inner, space)]),
            Filter::Condition(c) => {
                let field = FIELDS.iter().find(|f| f.column == c.column).unwrap().name;
                let values: Vec<String> = c.values.iter().map(|v| quote(v)).collect();
                call(c.op.name(), vec![field.to_owned(), values.join("|")])
            }
        }
    }

    fn depth(filter: &Filter) -> usize {
        match filter {
            Filter::And(parts) | Filter::Or(parts) => {
                1 + parts.iter().map(depth).max().unwrap_or(0)
            }
            Filter::Not(inner) => 1 + depth(inner),
            Filter::Condition(_) => 0,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_filter(&text, FIELDS);
            let _ = parse_sort(&text, FIELDS);
        }

        #[test]
        fn error_positions_are_within_the_input(text in prop_oneof![filterish_text(), "\\PC{0,80}"]) {
            let chars = text.chars().count();
            if let Err(err) = parse_filter(&text, FIELDS) {
                // One past the last character means "the text ended here".
                prop_assert!((1..=chars + 1).contains(&err.position), "{text:?}: {err}");
                prop_assert!(!err.message.is_empty());
            }
            if let Err(err) = parse_sort(&text, FIELDS) {
                prop_assert!((1..=chars + 1).contains(&err.position), "{text:?}: {err}");
            }
        }

        #[test]
        fn generated_filters_round_trip(filter in filter_tree(), space in "[ \t]{0,2}") {
            prop_assume!(depth(&filter) <= MAX_DEPTH);
            let text = render(&filter, &space);
            prop_assert_eq!(parse_filter(&text, FIELDS).unwrap(), filter, "{}", text);
        }

        #[test]
        fn generated_sort_keys_round_trip(
            keys in proptest::sample::subsequence(vec![("state", "state"), ("type", "invitation_type")], 1..=2)
                .prop_shuffle(),
            signs in proptest::collection::vec(prop_oneof![Just(""), Just("-"), Just("+")], 2),
            space in "[ ]{0,2}",
        ) {
            let text = keys
                .iter()
                .zip(&signs)
                .map(|((name, _), sign)| format!("{space}{sign}{name}{space}"))
                .collect::<Vec<_>>()
                .join(",");
            let expected: Vec<SortKey> = keys
                .iter()
                .zip(&signs)
                .map(|((_, column), sign)| SortKey { column, descending: *sign == "-" })
                .collect();
            prop_assert_eq!(parse_sort(&text, FIELDS).unwrap(), expected, "{}", text);
        }

        #[test]
        fn quoted_values_round_trip(value in "\\PC{0,40}") {
            let text = format!("eq(emailAddress,{})", quote(&value));
            prop_assert_eq!(parse_filter(&text, FIELDS).unwrap(), cond(Op::Eq, "email_address", &[&value]));
        }

        #[test]
        fn in_lists_keep_every_different_value(values in proptest::collection::vec("[a-zA-Z0-9@._-]{1,12}", 1..8)) {
            let text = format!("in(state,{})", values.join("|"));
            let kept = distinct(&values);
            let expected: Vec<&str> = kept.iter().map(String::as_str).collect();
            prop_assert_eq!(parse_filter(&text, FIELDS).unwrap(), cond(Op::In, "state", &expected));
        }
    }
}
