//! Schema inference from sampled rows, shared by the CSV and JSON readers.
//!
//! Each column starts as "could be anything" and loses candidate types as
//! cells disagree; the narrowest survivor wins, in the order Boolean, Integer,
//! Float, Date, Timestamp, String. Cells equal to a null token are nulls and
//! only make the column nullable.

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::schema::{DataType, FieldDefinition, Schema};
use crate::value::{DateCache, parse_timestamp_with, trim};

/// Cells read as null when no `null_values` are configured.
pub const DEFAULT_NULL_TOKENS: &[&str] = &["", "NA", "N/A", "null", "NULL"];

/// How cells are sampled and what counts as null.
#[derive(Debug, Clone)]
pub struct InferenceOptions {
    /// Cells (exact match) that mean null.
    pub null_tokens: Vec<String>,
    /// How many rows a reader should sample before calling [`SchemaInferrer::finish`].
    pub sample_rows: usize,
}

impl Default for InferenceOptions {
    fn default() -> Self {
        InferenceOptions {
            null_tokens: DEFAULT_NULL_TOKENS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            sample_rows: 1000,
        }
    }
}

impl InferenceOptions {
    /// Whether `cell` is one of the null tokens.
    pub fn is_null(&self, cell: &str) -> bool {
        self.null_tokens.iter().any(|t| t == cell)
    }
}

/// The cells read as null, matched by length and first byte before the
/// whole token: nearly every cell is told apart by two bit tests.
#[derive(Debug, Clone)]
pub(crate) struct NullTokens {
    /// The tokens other than the empty one.
    tokens: Vec<String>,
    empty: bool,
    /// Bit `n` is set if a token is `n` bytes long (63: 63 or more).
    lengths: u64,
    /// Bit `b % 64` of word `b / 64` is set if a token starts with byte `b`.
    firsts: [u64; 4],
    /// Whether a token reads as an integer (such as `0` or `-1`): integer
    /// cells must then be tested for nulls before they are parsed.
    pub(crate) integer: bool,
    /// Whether a token could read as a short decimal (only digits, signs
    /// and points, such as `0.0`): the same for float cells.
    pub(crate) decimal: bool,
}

impl NullTokens {
    pub(crate) fn new(tokens: &[String]) -> Self {
        let mut n = NullTokens {
            tokens: Vec::new(),
            empty: false,
            lengths: 0,
            firsts: [0; 4],
            integer: false,
            decimal: false,
        };
        for t in tokens {
            let Some(&first) = t.as_bytes().first() else {
                n.empty = true;
                continue;
            };
            n.lengths |= 1 << t.len().min(63);
            n.firsts[usize::from(first / 64)] |= 1 << (first % 64);
            n.integer |= trim(t).parse::<i64>().is_ok();
            n.decimal |= t.bytes().all(|b| b.is_ascii_digit() || b"+-.".contains(&b));
            n.tokens.push(t.clone());
        }
        n
    }

    /// Whether `cell` is one of the tokens.
    #[inline]
    pub(crate) fn matches(&self, cell: &str) -> bool {
        let Some(&first) = cell.as_bytes().first() else {
            return self.empty;
        };
        self.lengths & (1 << cell.len().min(63)) != 0
            && self.firsts[usize::from(first / 64)] & (1 << (first % 64)) != 0
            && self.tokens.iter().any(|t| t == cell)
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    boolean: bool,
    integer: bool,
    float: bool,
    date: bool,
    timestamp: bool,
    /// For JSON: a non-scalar was seen.
    nested: Option<DataType>,
    non_null: u64,
    nullable: bool,
    /// The last date its timestamps named (they mostly share one).
    dates: DateCache,
}

impl Column {
    fn new(name: String, nullable: bool) -> Self {
        Column {
            name,
            boolean: true,
            integer: true,
            float: true,
            date: true,
            timestamp: true,
            nested: None,
            non_null: 0,
            nullable,
            dates: DateCache::default(),
        }
    }

    fn observe_text(&mut self, cell: &str) {
        self.non_null += 1;
        let t = trim(cell);
        if self.boolean {
            self.boolean = t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("false");
        }
        let integer = self.integer && looks_like_integer(t) && t.parse::<i64>().is_ok();
        self.integer = integer;
        // Every integer cell reads as a float too: only the others are parsed.
        if self.float && !integer {
            self.float = looks_like_number(t) && t.parse::<f64>().is_ok();
        }
        if self.date {
            self.date = t.len() == 10 && chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok();
        }
        if self.timestamp {
            self.timestamp = parse_timestamp_with(t, &self.dates).is_some();
        }
    }

    fn observe_json(&mut self, value: &Json) {
        match value {
            Json::Null => self.nullable = true,
            Json::Bool(_) => self.only(|c| c.boolean = true),
            Json::Number(n) if n.is_i64() => self.only(|c| {
                c.integer = true;
                c.float = true;
            }),
            Json::Number(_) => self.only(|c| c.float = true),
            Json::String(s) => {
                // JSON strings stay strings unless every one is a date or timestamp.
                let (date, timestamp) = (self.date, self.timestamp);
                self.only(|c| {
                    c.date = date;
                    c.timestamp = timestamp;
                });
                self.observe_text_kinds(s);
            }
            Json::Array(_) | Json::Object(_) => {
                let t = if value.is_array() {
                    DataType::Array(Box::new(DataType::Any))
                } else {
                    DataType::Map(Box::new(DataType::Any))
                };
                self.nested = match &self.nested {
                    None if self.non_null == 0 => Some(t),
                    Some(prev) if *prev == t => Some(t),
                    _ => Some(DataType::Any),
                };
                self.only(|_| {});
            }
        }
        if !value.is_null() && !value.is_array() && !value.is_object() && self.nested.is_some() {
            self.nested = Some(DataType::Any);
        }
    }

    fn observe_text_kinds(&mut self, s: &str) {
        if self.date {
            self.date = s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
        }
        if self.timestamp {
            self.timestamp = parse_timestamp_with(s, &self.dates).is_some();
        }
    }

    /// Keeps only the candidates `keep` re-enables among those still alive.
    fn only(&mut self, keep: impl FnOnce(&mut Column)) {
        let before = (
            self.boolean,
            self.integer,
            self.float,
            self.date,
            self.timestamp,
        );
        self.boolean = false;
        self.integer = false;
        self.float = false;
        self.date = false;
        self.timestamp = false;
        keep(self);
        self.boolean &= before.0;
        self.integer &= before.1;
        self.float &= before.2;
        self.date &= before.3;
        self.timestamp &= before.4;
        self.non_null += 1;
    }

    fn finish(self) -> FieldDefinition {
        let data_type = if self.non_null == 0 {
            DataType::String
        } else if let Some(nested) = self.nested {
            nested
        } else if self.boolean {
            DataType::Boolean
        } else if self.integer {
            DataType::Integer
        } else if self.float {
            DataType::Float
        } else if self.date {
            DataType::Date
        } else if self.timestamp {
            DataType::Timestamp
        } else {
            DataType::String
        };
        FieldDefinition::new(self.name, data_type, self.nullable || self.non_null == 0)
    }
}

/// `-?[0-9]+` without a leading zero, so that codes like `02134` stay strings.
fn looks_like_integer(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'))
}

/// Plain decimal or scientific notation; `inf`/`NaN` words are not sampled as numbers.
fn looks_like_number(t: &str) -> bool {
    let body = t.strip_prefix('-').unwrap_or(t);
    !body.is_empty()
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && !(body.len() > 1 && body.starts_with('0') && body.as_bytes()[1].is_ascii_digit())
}

/// Accumulates sampled rows and produces a [`Schema`].
///
/// ```
/// use velo_datasource_core::{infer::{InferenceOptions, SchemaInferrer}, DataType};
/// let mut inf = SchemaInferrer::new(["id", "price", "at"], InferenceOptions::default());
/// inf.observe_text_row(["1", "9.5", "2024-01-15T10:30:00Z"]);
/// inf.observe_text_row(["2", "NA", "2024-01-15T10:31:00Z"]);
/// let schema = inf.finish();
/// assert_eq!(schema.fields()[0].data_type, DataType::Integer);
/// assert_eq!(schema.fields()[1].data_type, DataType::Float);
/// assert!(schema.fields()[1].nullable);
/// assert_eq!(schema.fields()[2].data_type, DataType::Timestamp);
/// ```
#[derive(Debug, Clone)]
pub struct SchemaInferrer {
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    rows: u64,
    options: InferenceOptions,
    /// The options' null tokens, told apart from most cells in two bit tests.
    nulls: NullTokens,
}

impl SchemaInferrer {
    /// An inferrer for columns named `names` (CSV headers); JSON adds columns as keys appear.
    pub fn new<I, S>(names: I, options: InferenceOptions) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut inferrer = SchemaInferrer {
            columns: Vec::new(),
            index: HashMap::new(),
            rows: 0,
            nulls: NullTokens::new(&options.null_tokens),
            options,
        };
        for name in names {
            inferrer.column(name.into());
        }
        inferrer
    }

    fn column(&mut self, name: String) -> usize {
        if let Some(&i) = self.index.get(&name) {
            return i;
        }
        let i = self.columns.len();
        // A column first seen after row 0 was absent from earlier rows.
        self.columns.push(Column::new(name.clone(), self.rows > 0));
        self.index.insert(name, i);
        i
    }

    /// Rows observed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether enough rows were sampled.
    pub fn is_done(&self) -> bool {
        self.rows >= self.options.sample_rows as u64
    }

    /// Observes one row of text cells in column order; missing cells are nulls.
    pub fn observe_text_row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut seen = 0;
        for (i, cell) in cells.into_iter().enumerate() {
            if i >= self.columns.len() {
                break;
            }
            seen = i + 1;
            let cell = cell.as_ref();
            if self.nulls.matches(cell) {
                self.columns[i].nullable = true;
            } else {
                self.columns[i].observe_text(cell);
            }
        }
        for col in &mut self.columns[seen..] {
            col.nullable = true;
        }
        self.rows += 1;
    }

    /// Observes one JSON object; absent keys are nulls, new keys become new columns.
    ///
    /// `serde_json::Map` keeps keys sorted; to keep a file's column order use
    /// [`observe_json_fields`](Self::observe_json_fields) with the entries as written.
    pub fn observe_json_object(&mut self, object: &serde_json::Map<String, Json>) {
        self.observe_json_fields(object.iter().map(|(k, v)| (k.as_str(), v)));
    }

    /// Observes one JSON object given as its `(key, value)` entries in order.
    pub fn observe_json_fields<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a str, &'a Json)>,
    ) {
        let mut present = vec![false; self.columns.len()];
        for (key, value) in fields {
            let i = self.column(key.to_owned());
            if i >= present.len() {
                present.resize(i + 1, false);
            }
            present[i] = true;
            self.columns[i].observe_json(value);
        }
        for (i, col) in self.columns.iter_mut().enumerate() {
            if !present.get(i).copied().unwrap_or(false) {
                col.nullable = true;
            }
        }
        self.rows += 1;
    }

    /// The inferred schema.
    pub fn finish(self) -> Schema {
        Schema::new(self.columns.into_iter().map(Column::finish).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer_text(rows: &[&[&str]]) -> Vec<(DataType, bool)> {
        let mut inf = SchemaInferrer::new(["a"], InferenceOptions::default());
        for r in rows {
            inf.observe_text_row(r.iter().copied());
        }
        inf.finish()
            .fields()
            .iter()
            .map(|f| (f.data_type.clone(), f.nullable))
            .collect()
    }

    #[test]
    fn widening() {
        assert_eq!(infer_text(&[&["1"], &["2"]]), [(DataType::Integer, false)]);
        assert_eq!(infer_text(&[&["1"], &["2.5"]]), [(DataType::Float, false)]);
        assert_eq!(infer_text(&[&["1"], &["x"]]), [(DataType::String, false)]);
        assert_eq!(
            infer_text(&[&["true"], &["FALSE"]]),
            [(DataType::Boolean, false)]
        );
        assert_eq!(infer_text(&[&["2024-01-01"]]), [(DataType::Date, false)]);
        assert_eq!(
            infer_text(&[&["2024-01-01T00:00:00Z"], &["2024-01-01 10:00:00"]]),
            [(DataType::Timestamp, false)]
        );
    }

    #[test]
    fn nulls_and_codes() {
        assert_eq!(
            infer_text(&[&["1"], &["NA"], &[""]]),
            [(DataType::Integer, true)]
        );
        assert_eq!(infer_text(&[&["null"]]), [(DataType::String, true)]);
        // Leading zeros are identifiers, not numbers.
        assert_eq!(infer_text(&[&["02134"]]), [(DataType::String, false)]);
        assert_eq!(infer_text(&[&["0.5"], &["0"]]), [(DataType::Float, false)]);
        assert_eq!(infer_text(&[&["inf"]]), [(DataType::String, false)]);
        // A short row leaves the missing cell null.
        assert_eq!(infer_text(&[&["1"], &[]]), [(DataType::Integer, true)]);
    }

    #[test]
    fn custom_null_tokens() {
        let opts = InferenceOptions {
            null_tokens: vec!["-".into()],
            ..Default::default()
        };
        let mut inf = SchemaInferrer::new(["a"], opts);
        inf.observe_text_row(["-"]);
        inf.observe_text_row(["3"]);
        inf.observe_text_row([""]);
        // "" is not a null token here, so it is a string.
        assert_eq!(inf.finish().fields()[0].data_type, DataType::String);
    }

    #[test]
    fn json_objects() {
        let mut inf = SchemaInferrer::new(Vec::<String>::new(), InferenceOptions::default());
        for line in [
            r#"{"id":1,"px":10,"at":"2024-01-15T10:30:00Z","tags":["a"],"s":"12"}"#,
            r#"{"id":2,"px":10.5,"at":"2024-01-15T10:31:00Z","tags":[],"extra":true,"s":"x"}"#,
        ] {
            let v: Json = serde_json::from_str(line).unwrap();
            inf.observe_json_object(v.as_object().unwrap());
        }
        let s = inf.finish();
        let t = |n: &str| s.field(n).unwrap().clone();
        assert_eq!(t("id").data_type, DataType::Integer);
        assert!(!t("id").nullable);
        assert_eq!(t("px").data_type, DataType::Float);
        assert_eq!(t("at").data_type, DataType::Timestamp);
        assert_eq!(
            t("tags").data_type,
            DataType::Array(Box::new(DataType::Any))
        );
        assert_eq!(t("s").data_type, DataType::String);
        assert_eq!(t("extra").data_type, DataType::Boolean);
        assert!(t("extra").nullable);
    }
}
