//! Schemas: the names and types of a record's fields, shared by all records of a source.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The type of a field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DataType {
    /// `true` / `false`.
    Boolean,
    /// 64-bit signed integer.
    Integer,
    /// 64-bit float.
    Float,
    /// Exact decimal number (up to 28 significant digits).
    Decimal,
    /// UTF-8 text.
    String,
    /// Raw bytes (base64 in JSON).
    Bytes,
    /// Calendar date without time zone.
    Date,
    /// Instant in UTC.
    Timestamp,
    /// List of values of one type.
    Array(Box<DataType>),
    /// String-keyed map of values of one type.
    Map(Box<DataType>),
    /// Nested record with named fields.
    Struct(Vec<FieldDefinition>),
    /// Any value: schemaless JSON whose type varies between records.
    Any,
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Boolean => f.write_str("BOOLEAN"),
            DataType::Integer => f.write_str("INTEGER"),
            DataType::Float => f.write_str("FLOAT"),
            DataType::Decimal => f.write_str("DECIMAL"),
            DataType::String => f.write_str("STRING"),
            DataType::Bytes => f.write_str("BYTES"),
            DataType::Date => f.write_str("DATE"),
            DataType::Timestamp => f.write_str("TIMESTAMP"),
            DataType::Array(inner) => write!(f, "ARRAY<{inner}>"),
            DataType::Map(inner) => write!(f, "MAP<STRING, {inner}>"),
            DataType::Struct(fields) => {
                f.write_str("STRUCT<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} {}", field.name, field.data_type)?;
                }
                f.write_str(">")
            }
            DataType::Any => f.write_str("ANY"),
        }
    }
}

/// One field of a [`Schema`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldDefinition {
    /// Field name, unique within its schema.
    pub name: String,
    /// Field type.
    pub data_type: DataType,
    /// Whether the field may be `Null`.
    pub nullable: bool,
    /// Free-form description, e.g. the source column's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl FieldDefinition {
    /// A field with explicit nullability.
    pub fn new(name: impl Into<String>, data_type: DataType, nullable: bool) -> Self {
        FieldDefinition {
            name: name.into(),
            data_type,
            nullable,
            description: None,
        }
    }

    /// A field that may be null.
    pub fn optional(name: impl Into<String>, data_type: DataType) -> Self {
        Self::new(name, data_type, true)
    }

    /// A field that is never null.
    pub fn required(name: impl Into<String>, data_type: DataType) -> Self {
        Self::new(name, data_type, false)
    }

    /// The same field with a description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// The ordered fields of a record, with a name index built once.
///
/// Records hold their values by position and share one `Arc<Schema>`, so a
/// lookup by name costs one hash here rather than one per record field.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "SchemaRepr", into = "SchemaRepr")]
pub struct Schema {
    fields: Vec<FieldDefinition>,
    index: HashMap<String, usize>,
}

#[derive(Serialize, Deserialize)]
struct SchemaRepr {
    fields: Vec<FieldDefinition>,
}

impl From<SchemaRepr> for Schema {
    fn from(r: SchemaRepr) -> Self {
        Schema::new(r.fields)
    }
}

impl From<Schema> for SchemaRepr {
    fn from(s: Schema) -> Self {
        SchemaRepr { fields: s.fields }
    }
}

impl Schema {
    /// A schema of `fields`; when a name repeats, lookups find its first field.
    pub fn new(fields: Vec<FieldDefinition>) -> Self {
        let mut index = HashMap::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            index.entry(f.name.clone()).or_insert(i);
        }
        Schema { fields, index }
    }

    /// A schema of `fields`, rejecting repeated names.
    pub fn try_new(fields: Vec<FieldDefinition>) -> Result<Self> {
        let schema = Self::new(fields);
        if schema.index.len() != schema.fields.len() {
            let mut seen = std::collections::HashSet::new();
            let dup = schema
                .fields
                .iter()
                .find(|f| !seen.insert(f.name.as_str()))
                .map(|f| f.name.clone())
                .unwrap_or_default();
            return Err(Error::Schema(format!("field `{dup}` appears twice")));
        }
        Ok(schema)
    }

    /// A schema with no fields.
    pub fn empty() -> Self {
        Self::new(Vec::new())
    }

    /// The fields in order.
    pub fn fields(&self) -> &[FieldDefinition] {
        &self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the schema has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Position of the field called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDefinition> {
        self.index_of(name).map(|i| &self.fields[i])
    }

    /// Field names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

impl Eq for Schema {}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("fields", &self.fields)
            .finish()
    }
}

impl fmt::Display for Schema {
    /// A two-column table of names and types, as `velo schema` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.names().map(str::len).max().unwrap_or(0).max(5);
        writeln!(f, "{:<width$}  {:<12}  NULLABLE", "FIELD", "TYPE")?;
        for field in &self.fields {
            writeln!(
                f,
                "{:<width$}  {:<12}  {}",
                field.name,
                field.data_type.to_string(),
                if field.nullable { "yes" } else { "no" }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_name() {
        let s = Schema::new(vec![
            FieldDefinition::required("id", DataType::Integer),
            FieldDefinition::optional("name", DataType::String),
        ]);
        assert_eq!(s.index_of("name"), Some(1));
        assert_eq!(s.field("id").map(|f| f.nullable), Some(false));
        assert!(s.field("nope").is_none());
    }

    #[test]
    fn duplicates_rejected_by_try_new() {
        let err = Schema::try_new(vec![
            FieldDefinition::required("a", DataType::Integer),
            FieldDefinition::required("a", DataType::String),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("`a`"));
    }

    #[test]
    fn serde_round_trip_rebuilds_index() {
        let s = Schema::new(vec![FieldDefinition::optional(
            "tags",
            DataType::Array(Box::new(DataType::String)),
        )]);
        let json = serde_json::to_string(&s).unwrap();
        let back: Schema = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.index_of("tags"), Some(0));
        assert_eq!(s.fields()[0].data_type.to_string(), "ARRAY<STRING>");
    }
}
