//! [`StreamRecord`]: one record with its values, times and origin.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::columns::RowMeta;
use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::value::FieldValue;

/// Kafka-style record headers: ordered, repeatable, byte values.
pub type Headers = Vec<(String, Vec<u8>)>;

/// One record read from a source or written to a sink.
///
/// Values are stored by position against a shared `Arc<Schema>`: building a
/// record allocates no keys and hashes nothing, and all records of a source
/// share one schema. Look values up by name with [`StreamRecord::get`].
///
/// The records of a batch built from columns
/// ([`ColumnBatch::into_records`](crate::columns::ColumnBatch::into_records))
/// share one block of values, a row each: one allocation and one reference
/// count per record fewer than a vector each, and the block is freed with
/// the last of them. A record that is changed
/// ([`values_mut`](Self::values_mut), [`set`](Self::set)) gets its own copy
/// of its values first.
#[derive(Clone)]
pub struct StreamRecord {
    row: Row,
    /// When the record was read (processing time).
    pub timestamp: DateTime<Utc>,
    /// When the event happened, from the source's `event.time.*` config.
    pub event_time: Option<DateTime<Utc>>,
    /// Position within its partition: Kafka offset, file line number, row number.
    pub offset: i64,
    /// Partition (Kafka) or `0` for single-stream sources.
    pub partition: i32,
    /// Message key, if the source has one.
    pub key: Option<Vec<u8>>,
    /// Headers, if the source has them.
    pub headers: Headers,
}

/// A record's schema and values: its own, or its row of a block shared by
/// the records of one batch.
#[derive(Clone)]
enum Row {
    Owned {
        schema: Arc<Schema>,
        values: Vec<FieldValue>,
    },
    /// The `width` values from `start`.
    Shared { block: Arc<Block>, start: usize },
}

/// The values of a batch of records of one schema, row after row.
#[derive(Debug)]
pub(crate) struct Block {
    schema: Arc<Schema>,
    width: usize,
    values: Vec<FieldValue>,
    /// Whether any value owns heap memory ([`FieldValue::owns_heap`]).
    owns_heap: bool,
}

impl Block {
    /// `values` laid out as rows of `schema.len()` values; `owns_heap` must
    /// be `true` if any of them owns heap memory (a wrong `false` would leak
    /// it, never worse).
    pub(crate) fn new(schema: Arc<Schema>, values: Vec<FieldValue>, owns_heap: bool) -> Arc<Self> {
        let width = schema.len();
        debug_assert!(values.len().is_multiple_of(width.max(1)));
        debug_assert!(owns_heap || !values.iter().any(FieldValue::owns_heap));
        Arc::new(Block {
            schema,
            width,
            values,
            owns_heap,
        })
    }
}

impl Drop for Block {
    /// A block of plain values (numbers, times, short texts: most batches)
    /// is freed without a drop call per value, which owns nothing: dropping
    /// them one by one, a jump on each value's type, was about 9% of
    /// reading typed CSV records.
    fn drop(&mut self) {
        if !self.owns_heap {
            std::mem::take(&mut self.values)
                .into_iter()
                .for_each(std::mem::forget);
        }
    }
}

impl StreamRecord {
    /// A record of `values` in `schema` order.
    ///
    /// Fails when the number of values differs from the number of fields;
    /// types are checked by [`StreamRecord::validate`], not here, so that the
    /// hot path stays cheap.
    pub fn new(schema: Arc<Schema>, values: Vec<FieldValue>) -> Result<Self> {
        if values.len() != schema.len() {
            return Err(Error::Schema(format!(
                "record has {} values but the schema has {} fields",
                values.len(),
                schema.len()
            )));
        }
        Ok(Self::from_parts(schema, values))
    }

    /// A record without the length check, for readers that built `values` from `schema`.
    pub fn from_parts(schema: Arc<Schema>, values: Vec<FieldValue>) -> Self {
        Self::from_parts_at(schema, values, Utc::now())
    }

    /// [`from_parts`](Self::from_parts) with the processing time given: readers
    /// take the clock once per batch, not once per record.
    pub fn from_parts_at(
        schema: Arc<Schema>,
        values: Vec<FieldValue>,
        timestamp: DateTime<Utc>,
    ) -> Self {
        debug_assert_eq!(values.len(), schema.len());
        StreamRecord {
            row: Row::Owned { schema, values },
            timestamp,
            event_time: None,
            offset: 0,
            partition: 0,
            key: None,
            headers: Headers::new(),
        }
    }

    /// The record of `values` with the metadata of a row of a
    /// [`ColumnBatch`](crate::columns::ColumnBatch), its `key` and `headers`.
    pub(crate) fn from_row(
        schema: Arc<Schema>,
        values: Vec<FieldValue>,
        meta: &RowMeta,
        key: Option<Vec<u8>>,
        headers: Headers,
    ) -> Self {
        debug_assert_eq!(values.len(), schema.len());
        Self::with_meta(Row::Owned { schema, values }, meta, key, headers)
    }

    /// Row `row` of `block` with its metadata, `key` and `headers`.
    pub(crate) fn from_block(
        block: Arc<Block>,
        row: usize,
        meta: &RowMeta,
        key: Option<Vec<u8>>,
        headers: Headers,
    ) -> Self {
        let start = row * block.width;
        debug_assert!(start + block.width <= block.values.len());
        Self::with_meta(Row::Shared { block, start }, meta, key, headers)
    }

    fn with_meta(row: Row, meta: &RowMeta, key: Option<Vec<u8>>, headers: Headers) -> Self {
        StreamRecord {
            row,
            timestamp: meta.timestamp,
            event_time: meta.event_time,
            offset: meta.offset,
            partition: meta.partition,
            key,
            headers,
        }
    }

    /// The schema the values follow.
    pub fn schema(&self) -> &Arc<Schema> {
        match &self.row {
            Row::Owned { schema, .. } => schema,
            Row::Shared { block, .. } => &block.schema,
        }
    }

    /// The values in schema order.
    pub fn values(&self) -> &[FieldValue] {
        match &self.row {
            Row::Owned { values, .. } => values,
            Row::Shared { block, start } => &block.values[*start..*start + block.width],
        }
    }

    /// The values in schema order, mutable (the schema is fixed).
    pub fn values_mut(&mut self) -> &mut [FieldValue] {
        if let Row::Shared { block, .. } = &self.row {
            self.row = Row::Owned {
                schema: block.schema.clone(),
                values: self.values().to_vec(),
            };
        }
        match &mut self.row {
            Row::Owned { values, .. } => values,
            Row::Shared { .. } => unreachable!("a shared row was copied out just above"),
        }
    }

    /// The schema and values, giving up the record.
    pub fn into_parts(self) -> (Arc<Schema>, Vec<FieldValue>) {
        match self.row {
            Row::Owned { schema, values } => (schema, values),
            Row::Shared { ref block, .. } => (block.schema.clone(), self.values().to_vec()),
        }
    }

    /// Each value in schema order, given up: moved out of the record's own
    /// vector, or cloned from its row of a shared block (with no vector
    /// copied out first, as [`into_parts`](Self::into_parts) must).
    pub(crate) fn for_each_value(self, f: impl FnMut(FieldValue)) {
        match self.row {
            Row::Owned { values, .. } => values.into_iter().for_each(f),
            Row::Shared { block, start } => block.values[start..start + block.width]
                .iter()
                .cloned()
                .for_each(f),
        }
    }

    /// The value of the field called `name`.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.schema().index_of(name).map(|i| &self.values()[i])
    }

    /// The value at field position `index`.
    pub fn value(&self, index: usize) -> Option<&FieldValue> {
        self.values().get(index)
    }

    /// `(name, value)` pairs in schema order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.schema().names().zip(self.values().iter())
    }

    /// Replaces the value of the field called `name`; fails if there is no such field.
    pub fn set(&mut self, name: &str, value: FieldValue) -> Result<()> {
        let i = self
            .schema()
            .index_of(name)
            .ok_or_else(|| Error::Schema(format!("no field `{name}` in the record's schema")))?;
        self.values_mut()[i] = value;
        Ok(())
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The record's values as a JSON object in schema order.
    pub fn to_json_object(&self) -> serde_json::Map<String, serde_json::Value> {
        self.fields()
            .map(|(k, v)| (k.to_owned(), v.to_json()))
            .collect()
    }

    /// Checks every value against its field's type and nullability.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in self.schema().fields().iter().zip(self.values()) {
            if value.is_null() && !field.nullable {
                return Err(Error::Schema(format!(
                    "field `{}` is not nullable but is null",
                    field.name
                )));
            }
            if !value.conforms_to(&field.data_type) {
                return Err(Error::Schema(format!(
                    "field `{}` is {} but holds {:?}",
                    field.name, field.data_type, value
                )));
            }
        }
        Ok(())
    }
}

/// Shared or not, a record compares by its schema, values and metadata.
impl PartialEq for StreamRecord {
    fn eq(&self, other: &Self) -> bool {
        self.schema() == other.schema()
            && self.values() == other.values()
            && self.timestamp == other.timestamp
            && self.event_time == other.event_time
            && self.offset == other.offset
            && self.partition == other.partition
            && self.key == other.key
            && self.headers == other.headers
    }
}

/// Shared or not, a record prints as its schema, values and metadata.
impl std::fmt::Debug for StreamRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRecord")
            .field("schema", self.schema())
            .field("values", &self.values())
            .field("timestamp", &self.timestamp)
            .field("event_time", &self.event_time)
            .field("offset", &self.offset)
            .field("partition", &self.partition)
            .field("key", &self.key)
            .field("headers", &self.headers)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{DataType, FieldDefinition};

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            FieldDefinition::required("id", DataType::Integer),
            FieldDefinition::optional("name", DataType::String),
        ]))
    }

    #[test]
    fn lookup_and_set() {
        let mut r = StreamRecord::new(schema(), vec![1.into(), "a".into()]).unwrap();
        assert_eq!(r.get("name"), Some(&FieldValue::from("a")));
        r.set("name", FieldValue::Null).unwrap();
        assert!(r.get("name").unwrap().is_null());
        assert!(r.set("nope", FieldValue::Null).is_err());
        assert_eq!(
            serde_json::Value::Object(r.to_json_object()).to_string(),
            r#"{"id":1,"name":null}"#
        );
    }

    /// Whether the records' block says its values own memory, for
    /// records that share one.
    fn block_owns_heap(records: &[StreamRecord]) -> Option<bool> {
        match &records.first()?.row {
            Row::Shared { block, .. } => Some(block.owns_heap),
            Row::Owned { .. } => None,
        }
    }

    #[test]
    fn a_block_of_plain_values_is_told_apart_from_one_that_owns_memory() {
        use crate::columns::ColumnBatch;
        let shared = |names: &[&str]| {
            let records = names
                .iter()
                .enumerate()
                .map(|(i, n)| StreamRecord::new(schema(), vec![(i as i64).into(), (*n).into()]))
                .collect::<Result<Vec<_>>>()
                .unwrap();
            let copy = records.clone();
            let out = ColumnBatch::from_records(records)
                .pop()
                .unwrap()
                .into_records();
            assert_eq!(out, copy);
            out
        };
        // Inline texts (up to 24 bytes) own nothing.
        assert_eq!(
            block_owns_heap(&shared(&["a", "twenty-four bytes, exact"])),
            Some(false)
        );
        let long = "more than twenty-four bytes";
        assert_eq!(block_owns_heap(&shared(&["a", long])), Some(true));
        // A column of values of other types: by each value.
        let mixed = |v: FieldValue| {
            let r = StreamRecord::new(schema(), vec![v, FieldValue::Null]).unwrap();
            ColumnBatch::from_records(vec![r.clone(), r])
                .pop()
                .unwrap()
                .into_records()
        };
        assert_eq!(block_owns_heap(&mixed(FieldValue::Float(1.5))), Some(false));
        assert_eq!(
            block_owns_heap(&mixed(FieldValue::Bytes(vec![1]))),
            Some(true)
        );
        assert_eq!(
            block_owns_heap(&mixed(FieldValue::Array(vec![long.into()]))),
            Some(true)
        );
    }

    #[test]
    fn length_and_type_checks() {
        assert!(StreamRecord::new(schema(), vec![1.into()]).is_err());
        let r = StreamRecord::new(schema(), vec!["x".into(), FieldValue::Null]).unwrap();
        assert!(r.validate().unwrap_err().to_string().contains("`id`"));
        let r = StreamRecord::new(schema(), vec![FieldValue::Null, FieldValue::Null]).unwrap();
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("not nullable")
        );
    }
}
