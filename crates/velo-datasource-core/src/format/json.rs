//! JSON Lines and JSON arrays of objects.
//!
//! Objects are decoded straight into positional values: keys are matched
//! against the schema (trying the expected position before hashing), values
//! are read without an intermediate `serde_json::Value` and then coerced to
//! the field's type. With an inferred schema, data wins: a key the sample
//! did not show adds a field, and a value that does not fit widens its field
//! to `ANY`; both make a new shared schema that later records reuse. With a
//! schema given by the user, either is a bad record naming the field.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{Decoder, Encoder, FormatOptions, Frame, Inferred, count_lines};
use crate::error::{Error, Result};
use crate::infer::SchemaInferrer;
use crate::record::StreamRecord;
use crate::schema::{DataType, FieldDefinition, Schema};
use crate::value::{FieldValue, Slot, TimestampText};

/// Values of one object in schema order, plus keys the schema lacks.
struct Decoded {
    values: Vec<FieldValue>,
    extra: Vec<(String, FieldValue)>,
}

struct ObjectSeed<'a> {
    schema: &'a Schema,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Decoded;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Decoded, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Decoded;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Decoded, A::Error> {
        let fields = self.schema.fields();
        // Filled without cloning a `Null` per slot (`vec![Null; n]` clones).
        let mut values = Vec::with_capacity(fields.len());
        values.resize_with(fields.len(), || FieldValue::Null);
        let mut extra = Vec::new();
        let mut expected = 0;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // Objects usually repeat the same key order: try that before hashing.
            let index = if fields
                .get(expected)
                .is_some_and(|f| same_bytes(f.name.as_bytes(), key.as_bytes()))
            {
                Some(expected)
            } else {
                self.schema.index_of(&key)
            };
            match index {
                Some(i) => {
                    map.next_value_seed(Slot(&mut values[i]))?;
                    expected = i + 1;
                }
                None => {
                    let value: FieldValue = map.next_value()?;
                    extra.push((key.into_owned(), value));
                }
            }
        }
        Ok(Decoded { values, extra })
    }
}

/// An object key, borrowed from the input unless it had escapes: serde's
/// own `Cow<str>` is always owned, so every key of every object was
/// allocated and freed (perf: a tenth of the reader's time in `free`).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// `a == b` for the short strings keys are, without a call to `memcmp`
/// (perf: the call was a fourteenth of decoding an object).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i + 8 <= a.len() {
        let x = u64::from_ne_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            return false;
        }
        i += 8;
    }
    a[i..].iter().zip(&b[i..]).all(|(x, y)| x == y)
}

/// Whether `v` is a non-null scalar of exactly `ty` (nothing to coerce or check).
fn scalar_of_type(v: &FieldValue, ty: &DataType) -> bool {
    matches!(
        (v, ty),
        (FieldValue::Boolean(_), DataType::Boolean)
            | (FieldValue::Integer(_), DataType::Integer)
            | (FieldValue::Float(_), DataType::Float)
            | (FieldValue::String(_), DataType::String)
    )
}

/// Shared by both JSON decoders: the schema and how strictly to hold it.
#[derive(Debug)]
struct ObjectDecoder {
    schema: Arc<Schema>,
    fixed: bool,
}

impl ObjectDecoder {
    fn decode(&mut self, bytes: &[u8]) -> std::result::Result<Vec<FieldValue>, String> {
        // UTF-8 is checked once for the whole object; from a `&str`,
        // serde_json does not check each key and string again (perf: a
        // call per string was a twentieth of decoding).
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("invalid JSON object: not UTF-8 at byte {}", e.valid_up_to()))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let decoded = ObjectSeed {
            schema: &self.schema,
        }
        .deserialize(&mut de)
        .and_then(|d| de.end().map(|()| d))
        .map_err(|e| format!("invalid JSON object: {e}"))?;
        let Decoded { mut values, extra } = decoded;
        if !extra.is_empty() {
            if self.fixed {
                return Err(format!("field `{}` is not in the schema", extra[0].0));
            }
            let mut fields = self.schema.fields().to_vec();
            for (k, v) in extra {
                let ty = v.data_type().map_or(DataType::Any, |t| match t {
                    DataType::Array(_) | DataType::Map(_) => DataType::Any,
                    t => t,
                });
                tracing::info!(field = %k, "JSON input has a new field; the schema grows");
                fields.push(FieldDefinition::optional(k, ty));
                values.push(v);
            }
            self.schema = Arc::new(Schema::new(fields));
        }
        let mut widened: Option<Vec<FieldDefinition>> = None;
        for (i, slot) in values.iter_mut().enumerate() {
            let field = &self.schema.fields()[i];
            // Most values already have their field's type: leave them where they are.
            if scalar_of_type(slot, &field.data_type) {
                continue;
            }
            let v = std::mem::replace(slot, FieldValue::Null);
            *slot = match v.coerce(&field.data_type) {
                Ok(v) => {
                    if v.is_null() && !field.nullable {
                        if self.fixed {
                            return Err(format!(
                                "field `{}` is null or missing but not nullable",
                                field.name
                            ));
                        }
                        widened.get_or_insert_with(|| self.schema.fields().to_vec())[i].nullable =
                            true;
                    }
                    v
                }
                Err(v) => {
                    if self.fixed {
                        return Err(format!(
                            "field `{}`: cannot read {} as {}",
                            field.name,
                            short(&v),
                            field.data_type
                        ));
                    }
                    // Widen to the narrowest type that holds both; ANY as a last resort.
                    let wider = match (&field.data_type, &v) {
                        (DataType::Integer, FieldValue::Float(_)) => DataType::Float,
                        _ => DataType::Any,
                    };
                    tracing::info!(field = %field.name, to = %wider, "JSON value does not fit the inferred type; the field widens");
                    let fields = widened.get_or_insert_with(|| self.schema.fields().to_vec());
                    fields[i].data_type = wider;
                    v
                }
            };
        }
        if let Some(fields) = widened {
            self.schema = Arc::new(Schema::new(fields));
        }
        Ok(values)
    }
}

fn short(v: &FieldValue) -> String {
    let mut s = v.to_json().to_string();
    if s.len() > 48 {
        let mut cut = 45;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Decodes one JSON object per line; blank lines are skipped.
#[derive(Debug)]
pub struct JsonLinesDecoder {
    inner: ObjectDecoder,
}

impl JsonLinesDecoder {
    /// A decoder into `schema`; `fixed` when the user gave it.
    pub fn new(schema: Arc<Schema>, fixed: bool) -> Self {
        JsonLinesDecoder {
            inner: ObjectDecoder { schema, fixed },
        }
    }
}

impl Decoder for JsonLinesDecoder {
    fn decode(&mut self, input: &[u8], eof: bool, max: usize, out: &mut Vec<Frame>) -> usize {
        let mut consumed = 0;
        let mut produced = 0;
        let mut frame_start = 0;
        // Line breaks since `frame_start`: one per line split off, so no
        // need to count them again.
        let mut lines = 0;
        while produced < max && consumed < input.len() {
            let rest = &input[consumed..];
            let (line, len, ended) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], i + 1, 1),
                None if eof => (rest, rest.len(), 0),
                None => break,
            };
            let (at, lines_before) = (consumed, lines);
            consumed += len;
            lines += ended;
            // A blank line is no record; its bytes count with the next one.
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let result = self.inner.decode(line);
            out.push(Frame {
                len: consumed - frame_start,
                lines,
                skipped_bytes: at - frame_start,
                skipped_lines: lines_before,
                result,
                schema: self.inner.schema.clone(),
            });
            frame_start = consumed;
            lines = 0;
            produced += 1;
        }
        consumed
    }

    fn schema(&self) -> Arc<Schema> {
        self.inner.schema.clone()
    }
}

/// Where a JSON array decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    BeforeOpen,
    InArray,
    Closed,
}

/// Decodes the objects of one top-level JSON array.
#[derive(Debug)]
pub struct JsonArrayDecoder {
    inner: ObjectDecoder,
    state: ArrayState,
}

impl JsonArrayDecoder {
    /// A decoder into `schema`; `resumed` when input starts inside the array.
    pub fn new(schema: Arc<Schema>, fixed: bool, resumed: bool) -> Self {
        JsonArrayDecoder {
            inner: ObjectDecoder { schema, fixed },
            state: if resumed {
                ArrayState::InArray
            } else {
                ArrayState::BeforeOpen
            },
        }
    }
}

/// Length of the JSON value at the start of `input` (which starts with a
/// non-space byte), or `None` if `input` ends inside it. Strings, escapes
/// and nesting are followed; content is not validated here.
fn value_len(input: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in input.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' if depth == 0 => return Some(i),
            b if depth == 0 && b.is_ascii_whitespace() => return Some(i),
            _ => {}
        }
    }
    None
}

impl Decoder for JsonArrayDecoder {
    fn decode(&mut self, input: &[u8], eof: bool, max: usize, out: &mut Vec<Frame>) -> usize {
        let mut pos = 0;
        let mut produced = 0;
        // Separators (space, commas, the brackets) are consumed with the record
        // that follows them, so positions land just after a complete element.
        let mut pending = 0;
        // The state as of `pending`: input after it is handed back, so is the state.
        let mut committed = self.state;
        loop {
            while pos < input.len() && input[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos >= input.len() || produced >= max {
                break;
            }
            match (self.state, input[pos]) {
                (ArrayState::BeforeOpen, b'[') => {
                    self.state = ArrayState::InArray;
                    pos += 1;
                }
                (ArrayState::InArray, b',') => pos += 1,
                (ArrayState::InArray, b']') => {
                    self.state = ArrayState::Closed;
                    pos += 1;
                    pending = pos;
                    committed = self.state;
                }
                (ArrayState::InArray, _) => {
                    let len = match value_len(&input[pos..]) {
                        Some(len) => len,
                        None if eof => input.len() - pos,
                        None => break,
                    };
                    let (start, at) = (pending, pos);
                    let bytes = &input[pos..pos + len];
                    pos += len;
                    pending = pos;
                    committed = self.state;
                    out.push(Frame {
                        len: pos - start,
                        lines: count_lines(&input[start..pos]),
                        skipped_bytes: at - start,
                        skipped_lines: count_lines(&input[start..at]),
                        result: self.inner.decode(bytes),
                        schema: self.inner.schema.clone(),
                    });
                    produced += 1;
                }
                (state, b) => {
                    // Not an array, or text after its end: one bad frame for the rest.
                    let (start, at) = (pending, pos);
                    pos = input.len();
                    pending = pos;
                    let what = if state == ArrayState::Closed {
                        "text after the closing `]`"
                    } else {
                        "input that does not start with `[`"
                    };
                    out.push(Frame {
                        len: pos - start,
                        lines: count_lines(&input[start..]),
                        skipped_bytes: at - start,
                        skipped_lines: count_lines(&input[start..at]),
                        result: Err(format!("{what} (found `{}`)", b as char)),
                        schema: self.inner.schema.clone(),
                    });
                    break;
                }
            }
        }
        if self.state == ArrayState::Closed && committed == ArrayState::Closed {
            // Trailing whitespace after `]` belongs to no record but is consumed.
            return pos;
        }
        if eof && self.state == ArrayState::InArray && pos >= input.len() && pending < input.len() {
            // Input ended without `]`: report it once as a bad frame.
            out.push(Frame {
                len: input.len() - pending,
                lines: count_lines(&input[pending..]),
                skipped_bytes: 0,
                skipped_lines: 0,
                result: Err("the JSON array is not closed with `]`".into()),
                schema: self.inner.schema.clone(),
            });
            return input.len();
        }
        self.state = committed;
        pending
    }

    fn schema(&self) -> Arc<Schema> {
        self.inner.schema.clone()
    }
}

/// A JSON object's entries in the order written (`serde_json::Map` sorts them).
struct OrderedObject(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedObject, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(OrderedObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The schema of the first `sample_rows` of `objects` (or the given one),
/// and whether there were that many.
fn sample_schema<'a>(
    options: &FormatOptions,
    objects: impl Iterator<Item = &'a [u8]>,
) -> (Arc<Schema>, bool) {
    if let Some(given) = &options.schema {
        return (given.clone(), true);
    }
    let mut inferrer = SchemaInferrer::new(Vec::<String>::new(), options.inference());
    for bytes in objects {
        if inferrer.is_done() {
            break;
        }
        if let Ok(OrderedObject(fields)) = serde_json::from_slice::<OrderedObject>(bytes) {
            inferrer.observe_json_fields(fields.iter().map(|(k, v)| (k.as_str(), v)));
        }
    }
    let done = inferrer.is_done();
    (Arc::new(inferrer.finish()), done)
}

pub(super) fn infer_lines(options: &FormatOptions, sample: &[u8], eof: bool) -> Result<Inferred> {
    // Without the end of the input, the text after the last line break
    // may be part of a line.
    let whole = match sample.iter().rposition(|b| *b == b'\n') {
        _ if eof => sample,
        Some(last) => &sample[..last],
        None => &[],
    };
    let (schema, done) = sample_schema(
        options,
        whole
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace)),
    );
    Ok(Inferred {
        schema,
        header_len: 0,
        needs_more: !eof && !done,
    })
}

pub(super) fn infer_array(options: &FormatOptions, sample: &[u8], eof: bool) -> Result<Inferred> {
    let mut objects = Vec::new();
    let mut pos = sample
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sample.len());
    if sample.get(pos) != Some(&b'[') && !(sample.is_empty() || pos == sample.len()) {
        return Err(Error::decode(
            "byte 0",
            "a JSON array file must start with `[`",
        ));
    }
    pos += 1;
    let mut closed = false;
    while pos < sample.len() && objects.len() < options.sample_rows {
        match sample[pos] {
            b if b.is_ascii_whitespace() || b == b',' => pos += 1,
            b']' => {
                closed = true;
                break;
            }
            _ => match value_len(&sample[pos..]) {
                Some(len) => {
                    objects.push(&sample[pos..pos + len]);
                    pos += len;
                }
                None => {
                    if eof {
                        objects.push(&sample[pos..]);
                    }
                    break;
                }
            },
        }
    }
    let (schema, done) = sample_schema(options, objects.into_iter());
    Ok(Inferred {
        schema,
        header_len: 0,
        needs_more: !eof && !closed && !done,
    })
}

/// Writes JSON Lines, or one JSON array.
#[derive(Debug)]
pub struct JsonEncoder {
    array: bool,
    first: bool,
    /// `"name":` of every field of the last schema written, escaped once,
    /// end to end, with where each one ends. Serde's map escaped every key
    /// of every record (its entries and the escaping of keys and values
    /// were a sixth of `velo pipe` CSV → JSON Lines). The schema is held,
    /// so a new schema at the same address cannot be taken for it.
    keys: Option<(Arc<Schema>, Vec<u8>, Vec<usize>)>,
}

impl JsonEncoder {
    /// The escaped keys of `schema`, built when it is not the last one's.
    fn keys(&mut self, schema: &Arc<Schema>) -> (&[u8], &[usize]) {
        if !matches!(&self.keys, Some((s, ..)) if Arc::ptr_eq(s, schema)) {
            let (mut text, mut ends) = (Vec::new(), Vec::with_capacity(schema.len()));
            for name in schema.names() {
                // Serializing a `&str` into a `Vec` cannot fail.
                let _ = serde_json::to_writer(&mut text, name);
                text.push(b':');
                ends.push(text.len());
            }
            self.keys = Some((schema.clone(), text, ends));
        }
        let (_, text, ends) = self.keys.as_ref().expect("set above");
        (text, ends)
    }
}

/// One value as `FieldValue`'s `Serialize` writes it; nulls, booleans,
/// integers, timestamps and text with nothing to escape straight into
/// `out`. (serde_json escapes a string byte by byte, and a timestamp went
/// through a UTF-8 check and that escaping: together about a tenth of
/// `velo pipe` CSV → JSON Lines, by callgrind.)
fn write_value(value: &FieldValue, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match value {
        FieldValue::Null => out.extend_from_slice(b"null"),
        FieldValue::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        FieldValue::Integer(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        // RFC 3339 text has nothing to escape.
        FieldValue::Timestamp(t) => quoted(TimestampText::new(t).as_bytes(), out),
        FieldValue::String(s) if !needs_escape(s.as_bytes()) => quoted(s.as_bytes(), out),
        other => serde_json::to_writer(&mut *out, other)?,
    }
    Ok(())
}

/// `text` in double quotes.
fn quoted(text: &[u8], out: &mut Vec<u8>) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// Whether JSON needs any byte of `text` escaped: exactly the bytes
/// serde_json escapes (control characters, `"` and `\`).
fn needs_escape(text: &[u8]) -> bool {
    text.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

impl JsonEncoder {
    /// One object per line.
    pub fn lines() -> Self {
        JsonEncoder {
            array: false,
            first: true,
            keys: None,
        }
    }

    /// One array of objects, one per line.
    pub fn array() -> Self {
        JsonEncoder {
            array: true,
            first: true,
            keys: None,
        }
    }
}

impl Encoder for JsonEncoder {
    fn begin(&mut self, _schema: &Schema, out: &mut Vec<u8>) -> Result<()> {
        self.first = true;
        if self.array {
            out.push(b'[');
        }
        Ok(())
    }

    fn encode(&mut self, record: &StreamRecord, out: &mut Vec<u8>) -> Result<()> {
        if self.array {
            out.extend_from_slice(if self.first { b"\n" } else { b",\n" });
        }
        self.first = false;
        let (keys, ends) = self.keys(record.schema());
        out.push(b'{');
        let mut start = 0;
        for (value, &end) in record.values().iter().zip(ends) {
            if start > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&keys[start..end]);
            start = end;
            write_value(value, out).map_err(|e| Error::Encode {
                target: "JSON".into(),
                message: e.to_string(),
            })?;
        }
        out.push(b'}');
        if !self.array {
            out.push(b'\n');
        }
        Ok(())
    }

    fn continue_after(&mut self, records: u64) {
        self.first = records == 0;
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.array {
            out.extend_from_slice(b"\n]\n");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The object as serde writes a map of the record's fields: what
    /// `JsonEncoder` writes, byte for byte.
    struct RecordObject<'a>(&'a StreamRecord);

    impl serde::Serialize for RecordObject<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(Some(self.0.values().len()))?;
            for (k, v) in self.0.fields() {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }

    use crate::config::FileFormat;

    fn opts(format: FileFormat) -> FormatOptions {
        FormatOptions::new(format)
    }

    #[test]
    fn a_short_sample_asks_for_more_until_it_has_its_rows() {
        let mut o = opts(FileFormat::JsonLines);
        o.sample_rows = 2;
        let lines = |s: &[u8], eof| infer_lines(&o, s, eof).unwrap();
        // The second object is cut: one row, and its text is not read.
        let cut = lines(b"{\"a\":1}\n{\"a\":1.", false);
        assert!(cut.needs_more);
        assert_eq!(cut.schema.fields()[0].data_type, DataType::Integer);
        assert!(!lines(b"{\"a\":1}\n{\"a\":1.", true).needs_more);
        assert!(!lines(b"{\"a\":1}\n{\"a\":1.5}\n{", false).needs_more);
        let mut o = opts(FileFormat::JsonArray);
        o.sample_rows = 2;
        let array = |s: &[u8], eof| infer_array(&o, s, eof).unwrap();
        assert!(array(b"[{\"a\":1},{\"a\"", false).needs_more);
        assert!(!array(b"[{\"a\":1}]", false).needs_more, "the array ended");
        assert!(!array(b"[{\"a\":1},{\"a\":2},", false).needs_more);
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = FieldValue> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(FieldValue::Null),
            any::<bool>().prop_map(FieldValue::Boolean),
            any::<i64>().prop_map(FieldValue::Integer),
            any::<f64>().prop_map(FieldValue::Float),
            "[a-z\"\\\\\n\u{1}\u{e9}\u{1f600} ]{0,30}".prop_map(|s| FieldValue::String(s.into())),
            // Short text, mostly with nothing to escape: the encoder's own path.
            "[a-z\\\\\u{1f}\u{7f}\u{e9} ]{0,6}".prop_map(|s| FieldValue::String(s.into())),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(FieldValue::Bytes),
            (-50_000_000_000i64..300_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| {
                FieldValue::Timestamp(chrono::DateTime::from_timestamp(s, n).unwrap())
            }),
            (-100_000i64..100_000, 0u32..6).prop_map(|(m, scale)| {
                FieldValue::Decimal(rust_decimal::Decimal::new(m, scale))
            }),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(FieldValue::Array),
                proptest::collection::btree_map("[a-z\"]{1,4}", inner, 0..3)
                    .prop_map(FieldValue::Map),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn encoder_writes_what_serde_writes(
            rows in proptest::collection::vec(proptest::collection::vec(any_value(), 3), 1..6),
            array in proptest::bool::ANY,
        ) {
            // Two schemas, the second after the first rows: the escaped keys are rebuilt.
            let first = Arc::new(Schema::new(
                ["id", "na\"me", "\u{e9}"].iter().map(|n| FieldDefinition::optional(*n, DataType::Any)).collect(),
            ));
            let second = Arc::new(Schema::new(
                ["a", "b\\", "c"].iter().map(|n| FieldDefinition::optional(*n, DataType::Any)).collect(),
            ));
            let mut enc = if array { JsonEncoder::array() } else { JsonEncoder::lines() };
            let (mut ours, mut objects) = (Vec::new(), Vec::new());
            for (i, values) in rows.into_iter().enumerate() {
                let schema = if i < 2 { &first } else { &second };
                let record = StreamRecord::from_parts(schema.clone(), values);
                enc.encode(&record, &mut ours).unwrap();
                objects.push(serde_json::to_string(&RecordObject(&record)).unwrap());
            }
            let expected = if array {
                format!("\n{}", objects.join(",\n"))
            } else {
                objects.iter().map(|o| format!("{o}\n")).collect()
            };
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), expected);
        }
    }

    fn run(dec: &mut dyn Decoder, data: &[u8], chunk: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut buf = Vec::new();
        let mut fed = 0;
        loop {
            let end = (fed + chunk).min(data.len());
            buf.extend_from_slice(&data[fed..end]);
            fed = end;
            let eof = fed == data.len();
            let used = dec.decode(&buf, eof, usize::MAX, &mut frames);
            buf.drain(..used);
            if eof {
                assert!(
                    buf.iter().all(u8::is_ascii_whitespace),
                    "left: {:?}",
                    String::from_utf8_lossy(&buf)
                );
                break;
            }
        }
        frames
    }

    const LINES: &[u8] = b"{\"id\":1,\"px\":10,\"at\":\"2024-01-15T10:30:00Z\"}\n\n{\"at\":\"2024-01-15T10:31:00Z\",\"px\":10.5,\"id\":2}\n{\"id\":3,\"px\":null,\"at\":\"2024-01-15T10:32:00Z\",\"new\":true}";

    #[test]
    fn lines_typed_any_chunking() {
        for chunk in [1, 5, 4096] {
            let whole = infer_lines(&opts(FileFormat::JsonLines), LINES, true).unwrap();
            assert_eq!(
                whole.schema.names().collect::<Vec<_>>(),
                ["id", "px", "at", "new"]
            );
            assert_eq!(whole.schema.field("px").unwrap().data_type, DataType::Float);
            // Infer from the first line only, so that decoding must grow the schema.
            let first_line = &LINES[..LINES.iter().position(|b| *b == b'\n').unwrap() + 1];
            let inf = infer_lines(&opts(FileFormat::JsonLines), first_line, false).unwrap();
            assert_eq!(inf.schema.field("px").unwrap().data_type, DataType::Integer);
            let mut dec = JsonLinesDecoder::new(inf.schema.clone(), false);
            let frames = run(&mut dec, LINES, chunk);
            assert_eq!(frames.len(), 3);
            let r1 = frames[1].result.clone().unwrap();
            assert_eq!(r1[0], FieldValue::Integer(2));
            // 10.5 does not fit the INTEGER inferred from line 1: the field widens to FLOAT.
            assert_eq!(r1[1], FieldValue::Float(10.5));
            assert_eq!(
                frames[1].schema.field("px").unwrap().data_type,
                DataType::Float
            );
            assert_eq!(
                frames[2].schema.field("px").unwrap().data_type,
                DataType::Float
            );
            assert!(matches!(r1[2], FieldValue::Timestamp(_)));
            // The new key grew the schema for the last record only.
            assert_eq!(frames[1].schema.len(), 3);
            assert_eq!(frames[2].schema.len(), 4);
            assert_eq!(
                frames[2].result.clone().unwrap()[3],
                FieldValue::Boolean(true)
            );
            if chunk >= LINES.len() {
                // In one call every byte belongs to a frame (blank lines to the next one).
                assert_eq!(frames.iter().map(|f| f.len).sum::<usize>(), LINES.len());
                // The blank line's break counts with the record after it; the last has none.
                assert_eq!(
                    frames.iter().map(|f| f.lines).collect::<Vec<_>>(),
                    [1, 2, 0]
                );
            }
        }
    }

    #[test]
    fn keys_match_by_every_byte_and_bad_utf8_is_located() {
        for (a, b, same) in [
            ("quantity", "quantity", true),
            ("quantity_x", "quantity_y", false),
            ("quantitx", "quantity", false),
            ("timestamp_utc", "timestamp_utc", true),
            ("a", "ab", false),
            ("", "", true),
        ] {
            assert_eq!(same_bytes(a.as_bytes(), b.as_bytes()), same, "{a} {b}");
        }
        let schema = Arc::new(crate::format::parse_schema_spec("s:string").unwrap());
        let mut dec = JsonLinesDecoder::new(schema, true);
        let frames = run(&mut dec, b"{\"s\":\"ok\"}\n{\"s\":\"b\xffd\"}\n", 4096);
        assert_eq!(frames[0].result, Ok(vec!["ok".into()]));
        // A key with an escape cannot be borrowed from the input; it still matches.
        let escaped = run(&mut dec, b"{\"\\u0073\":\"esc\"}\n", 4096);
        assert_eq!(escaped[0].result, Ok(vec!["esc".into()]));
        assert_eq!(
            frames[1].result.as_ref().unwrap_err(),
            "invalid JSON object: not UTF-8 at byte 7"
        );
    }

    #[test]
    fn values_that_do_not_fit_widen_or_fail() {
        let schema = Arc::new(crate::format::parse_schema_spec("id:integer,s:string?").unwrap());
        let mut loose = JsonLinesDecoder::new(schema.clone(), false);
        let frames = run(&mut loose, b"{\"id\":\"x\"}\n{\"id\":2}\n", 4096);
        assert_eq!(frames[0].result.clone().unwrap()[0], FieldValue::from("x"));
        assert_eq!(frames[0].schema.fields()[0].data_type, DataType::Any);
        let mut strict = JsonLinesDecoder::new(schema, true);
        let frames = run(
            &mut strict,
            b"{\"id\":\"x\"}\n{\"id\":2,\"zz\":1}\n{\"s\":\"a\"}\nnot json\n[1]\n",
            4096,
        );
        let errs: Vec<_> = frames
            .iter()
            .map(|f| f.result.clone().unwrap_err())
            .collect();
        assert_eq!(errs[0], "field `id`: cannot read \"x\" as INTEGER");
        assert_eq!(errs[1], "field `zz` is not in the schema");
        assert!(errs[2].contains("not nullable"));
        assert!(errs[3].starts_with("invalid JSON object"));
        assert!(errs[4].starts_with("invalid JSON object"));
    }

    #[test]
    fn array_any_chunking_and_resume() {
        let data = b" [\n {\"a\": 1, \"s\": \"x,]}\\\"\"},\n {\"a\": 2, \"s\": null} ,{\"a\":3,\"s\":\"z\"}\n]\n";
        for chunk in [1, 2, 9, 4096] {
            let inf = infer_array(&opts(FileFormat::JsonArray), data, true).unwrap();
            let mut dec = JsonArrayDecoder::new(inf.schema.clone(), false, false);
            let frames = run(&mut dec, data, chunk);
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            assert_eq!(
                frames[0].result.clone().unwrap()[1],
                FieldValue::from("x,]}\"")
            );
            // Resume after the first element.
            let offset = frames[0].len;
            let mut resumed = JsonArrayDecoder::new(inf.schema.clone(), false, true);
            let rest = run(&mut resumed, &data[offset..], chunk);
            assert_eq!(rest.len(), 2);
            assert_eq!(rest[1].result.clone().unwrap()[0], FieldValue::Integer(3));
        }
    }

    #[test]
    fn array_errors() {
        let s = Arc::new(Schema::empty());
        let mut dec = JsonArrayDecoder::new(s.clone(), false, false);
        let frames = run(&mut dec, b"{\"a\":1}", 4096);
        assert!(
            frames[0]
                .result
                .clone()
                .unwrap_err()
                .contains("does not start with `[`")
        );
        let mut dec = JsonArrayDecoder::new(s, false, false);
        let frames = run(&mut dec, b"[{\"a\":1},{\"a\":", 4096);
        assert!(frames.last().unwrap().result.is_err());
    }

    #[test]
    fn encoders_round_trip() {
        let inf = infer_lines(&opts(FileFormat::JsonLines), LINES, true).unwrap();
        let mut dec = JsonLinesDecoder::new(inf.schema.clone(), false);
        let frames = run(&mut dec, LINES, 4096);
        for mut enc in [JsonEncoder::lines(), JsonEncoder::array()] {
            let mut out = Vec::new();
            enc.begin(&inf.schema, &mut out).unwrap();
            for f in &frames {
                enc.encode(
                    &StreamRecord::new(f.schema.clone(), f.result.clone().unwrap()).unwrap(),
                    &mut out,
                )
                .unwrap();
            }
            enc.finish(&mut out).unwrap();
            let back: Vec<Frame> = if enc.array {
                let i = infer_array(&opts(FileFormat::JsonArray), &out, true).unwrap();
                run(
                    &mut JsonArrayDecoder::new(i.schema, false, false),
                    &out,
                    4096,
                )
            } else {
                let i = infer_lines(&opts(FileFormat::JsonLines), &out, true).unwrap();
                run(&mut JsonLinesDecoder::new(i.schema, false), &out, 4096)
            };
            // Every record carries the same values by name.
            for (a, b) in frames.iter().zip(&back) {
                let ra = StreamRecord::new(a.schema.clone(), a.result.clone().unwrap()).unwrap();
                let rb = StreamRecord::new(b.schema.clone(), b.result.clone().unwrap()).unwrap();
                for (k, v) in ra.fields() {
                    assert_eq!(rb.get(k).unwrap_or(&FieldValue::Null), v, "field {k}");
                }
            }
        }
    }
}
