//! Identifiers: table names from config, quoting, and slot names.
//!
//! Values always travel as bind parameters. Identifiers cannot, so every
//! table, column and publication name that reaches SQL text passes through
//! [`quote`], and slot names (which `START_REPLICATION` takes unquoted) are
//! checked by [`validate_slot_name`].

use std::fmt;

use velo_datasource_core::{Error, Result};

/// A table, schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    /// Schema (default `public`).
    pub schema: String,
    /// Table.
    pub name: String,
}

impl TableName {
    /// Parses `orders`, `sales.orders`, or quoted parts such as
    /// `"My Schema"."Odd.Name"`. Unquoted parts are used as written (not
    /// folded to lower case), matching how they appear in the catalog.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid_value("table", text, reason);
        let mut parts = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err(bad("unterminated quoted name")),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    part.push(c);
                    chars.next();
                }
            }
            if part.is_empty() {
                return Err(bad("empty name (expected `table` or `schema.table`)"));
            }
            parts.push(part);
            match chars.next() {
                Some('.') => continue,
                None => break,
                Some(c) => return Err(bad(&format!("unexpected `{c}` after a quoted name"))),
            }
        }
        match <[String; 2]>::try_from(parts) {
            Ok([schema, name]) => Ok(TableName { schema, name }),
            Err(parts) if parts.len() == 1 => Ok(TableName {
                schema: "public".into(),
                name: parts.into_iter().next().unwrap_or_default(),
            }),
            Err(_) => Err(bad("too many dots (expected `table` or `schema.table`)")),
        }
    }

    /// `"schema"."name"`, safe to put into SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an identifier for SQL text: `a"b` becomes `"a""b"`.
pub fn quote(identifier: &str) -> String {
    let mut out = String::with_capacity(identifier.len() + 2);
    out.push('"');
    for c in identifier.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Replication slot names: lower-case letters, digits and underscores, at
/// most 63 bytes (PostgreSQL's own rule).
pub(crate) fn validate_slot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_value(
            "slot",
            name,
            "replication slot names use only a-z, 0-9 and _, at most 63 characters",
        ))
    }
}

/// Publication names go into `START_REPLICATION` as a comma-separated list.
pub(crate) fn validate_publication_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.contains([',', '\'', '"', '\0'])
        && !name.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_value(
            "publication",
            name,
            "publication names must be 1-63 characters without commas, quotes or spaces",
        ))
    }
}

/// `velo_cdc_<tables>`, made a valid slot and publication name: other
/// characters become `_`, and a hash keeps long or mangled names distinct.
pub(crate) fn default_name(tables: &[TableName]) -> String {
    let joined = tables
        .iter()
        .map(|t| {
            if t.schema == "public" {
                t.name.clone()
            } else {
                format!("{}_{}", t.schema, t.name)
            }
        })
        .collect::<Vec<_>>()
        .join("_");
    let mut name: String = format!("velo_cdc_{joined}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact = name == format!("velo_cdc_{joined}") && name.len() <= 63;
    if !exact {
        name.truncate(54);
        let hash = tables.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, t| {
            format!("{}.{}", t.schema, t.name)
                .bytes()
                .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
        });
        name.push_str(&format!("_{:08x}", hash as u32));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_quotes_table_names() {
        let t = TableName::parse("orders").unwrap();
        assert_eq!((t.schema.as_str(), t.name.as_str()), ("public", "orders"));
        assert_eq!(t.quoted(), r#""public"."orders""#);
        let t = TableName::parse(r#""My Schema"."a.""b""#).unwrap();
        assert_eq!((t.schema.as_str(), t.name.as_str()), ("My Schema", "a.\"b"));
        let evil = r#"x"; DROP TABLE y; --"#;
        let t = TableName::parse(&format!("\"{}\"", evil.replace('"', "\"\""))).unwrap();
        assert_eq!(t.name, evil);
        assert_eq!(t.quoted(), r#""public"."x""; DROP TABLE y; --""#);
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("").is_err());
        assert!(TableName::parse("\"open").is_err());
    }

    #[test]
    fn slot_names() {
        assert!(validate_slot_name("velo_cdc_orders").is_ok());
        for bad in ["", "Orders", "a-b", "a;b", &"x".repeat(64)] {
            assert!(validate_slot_name(bad).is_err(), "{bad}");
        }
        assert!(validate_publication_name("p,q").is_err());
        assert!(validate_publication_name("Pub_1").is_ok());
    }

    #[test]
    fn default_names_are_valid_and_distinct() {
        let plain = default_name(&[TableName::parse("orders").unwrap()]);
        assert_eq!(plain, "velo_cdc_orders");
        let odd = default_name(&[TableName::parse(r#""x""; DROP TABLE y; --""#).unwrap()]);
        let odd2 = default_name(&[TableName::parse(r#""x""; DROP TABLE z; --""#).unwrap()]);
        assert_ne!(odd, odd2);
        for name in [
            &plain,
            &odd,
            &default_name(&[TableName::parse(&"T".repeat(80)).unwrap()]),
        ] {
            validate_slot_name(name).unwrap();
        }
    }
}
