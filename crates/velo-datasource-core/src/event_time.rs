//! Event time: which field holds it and how to read it.
//!
//! Configured with `event.time.field` and `event.time.format` (the guide's
//! table: `iso8601`, `rfc3339`, `unix`, `unix_ms`, or a chrono pattern such as
//! `%Y-%m-%d %H:%M:%S`). Without a format, timestamp values are taken as they
//! are, integers as epoch milliseconds and strings as ISO 8601.
//!
//! A record whose field cannot be read gets no event time, and that is never
//! silent: [`EventTimeExtractor`] counts it, logs the first and then one in N,
//! and reports it through the `velo_event_time_errors_total` counter.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::columns::ColumnBatch;
use crate::error::{Error, Result};
use crate::record::StreamRecord;
use crate::schema::Schema;
use crate::value::{FieldValue, parse_timestamp};

/// How an event-time field is written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimestampFormat {
    /// `2024-01-15T10:30:00Z`; offsets, fractions and zone-less (UTC) forms too.
    Iso8601,
    /// `2024-01-15T10:30:00+00:00`, strictly.
    Rfc3339,
    /// Seconds since the epoch, `1705318200` (fractions allowed).
    Unix,
    /// Milliseconds since the epoch, `1705318200000`.
    UnixMs,
    /// A chrono pattern, `%Y-%m-%d %H:%M:%S`; without a zone it is UTC.
    Pattern(String),
}

impl FromStr for TimestampFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "iso8601" | "iso_8601" | "iso-8601" => TimestampFormat::Iso8601,
            "rfc3339" | "rfc_3339" | "rfc-3339" => TimestampFormat::Rfc3339,
            "unix" | "epoch" | "unix_s" | "epoch_seconds" => TimestampFormat::Unix,
            "unix_ms" | "epoch_ms" | "epoch_millis" => TimestampFormat::UnixMs,
            _ if s.contains('%') => {
                if StrftimeItems::new(s).any(|i| matches!(i, Item::Error)) {
                    return Err(Error::invalid_value(
                        "event.time.format",
                        s,
                        "not a valid chrono pattern",
                    ));
                }
                TimestampFormat::Pattern(s.to_owned())
            }
            _ => {
                return Err(Error::invalid_value(
                    "event.time.format",
                    s,
                    "expected iso8601, rfc3339, unix, unix_ms or a chrono pattern like %Y-%m-%d %H:%M:%S",
                ));
            }
        })
    }
}

impl fmt::Display for TimestampFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimestampFormat::Iso8601 => f.write_str("iso8601"),
            TimestampFormat::Rfc3339 => f.write_str("rfc3339"),
            TimestampFormat::Unix => f.write_str("unix"),
            TimestampFormat::UnixMs => f.write_str("unix_ms"),
            TimestampFormat::Pattern(p) => f.write_str(p),
        }
    }
}

/// Where a source's event time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTimeConfig {
    /// Field holding the timestamp.
    pub field_name: String,
    /// How it is written; `None` takes values as they are (see the module docs).
    pub format: Option<TimestampFormat>,
}

impl EventTimeConfig {
    /// An event-time config for `field_name`.
    pub fn new(field_name: impl Into<String>, format: Option<TimestampFormat>) -> Self {
        EventTimeConfig {
            field_name: field_name.into(),
            format,
        }
    }

    /// Reads `event.time.field` and `event.time.format` from properties.
    ///
    /// `Ok(None)` when no field is set; an error for a format without a field
    /// or a format that is not in the guide's table.
    pub fn from_properties<'a, I>(props: I) -> Result<Option<Self>>
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        let mut field = None;
        let mut format = None;
        for (k, v) in props {
            match k.as_str() {
                "event.time.field" => field = Some(v.clone()),
                "event.time.format" => format = Some(v.parse::<TimestampFormat>()?),
                _ => {}
            }
        }
        match (field, format) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Error::MissingConfigKey {
                key: "event.time.field".into(),
                reason: "event.time.format is set, so the field it applies to must be named".into(),
            }),
            (Some(f), _) if f.trim().is_empty() => Err(Error::invalid_value(
                "event.time.field",
                f,
                "must name a field",
            )),
            (Some(field_name), format) => Ok(Some(EventTimeConfig { field_name, format })),
        }
    }
}

/// Why an event time could not be read from a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event time field `{field}`: {reason}")]
pub struct EventTimeError {
    /// The configured field.
    pub field: String,
    /// What was wrong.
    pub reason: String,
}

/// Reads the event time of `record` by `config`.
pub fn extract_event_time(
    record: &StreamRecord,
    config: &EventTimeConfig,
) -> std::result::Result<DateTime<Utc>, EventTimeError> {
    match record.get(&config.field_name) {
        Some(value) => {
            parse_event_time(value, config.format.as_ref()).map_err(|reason| EventTimeError {
                field: config.field_name.clone(),
                reason,
            })
        }
        None => Err(EventTimeError {
            field: config.field_name.clone(),
            reason: "no such field in the record".into(),
        }),
    }
}

/// Reads one value as an event time.
pub fn parse_event_time(
    value: &FieldValue,
    format: Option<&TimestampFormat>,
) -> std::result::Result<DateTime<Utc>, String> {
    use TimestampFormat as F;
    let bad = |what: &dyn fmt::Display| {
        let f = format.map_or("no format".to_owned(), |f| format!("format {f}"));
        format!("cannot read {what} with {f}")
    };
    match (value, format) {
        (FieldValue::Null, _) => Err("value is null".into()),
        (FieldValue::Timestamp(t), _) => Ok(*t),
        (FieldValue::Date(d), _) => Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()),
        (FieldValue::Integer(i), None | Some(F::UnixMs)) => {
            DateTime::from_timestamp_millis(*i).ok_or_else(|| bad(i))
        }
        (FieldValue::Integer(i), Some(F::Unix)) => {
            DateTime::from_timestamp(*i, 0).ok_or_else(|| bad(i))
        }
        (FieldValue::Float(x), Some(F::Unix)) => from_fractional(*x, 1e9).ok_or_else(|| bad(x)),
        (FieldValue::Float(x), None | Some(F::UnixMs)) => {
            from_fractional(*x, 1e6).ok_or_else(|| bad(x))
        }
        (FieldValue::Integer(i), Some(F::Pattern(p))) => {
            parse_with_pattern(&i.to_string(), p).ok_or_else(|| bad(i))
        }
        (FieldValue::String(s), format) => {
            parse_text(s, format).ok_or_else(|| bad(&format!("`{s}`")))
        }
        (other, _) => Err(bad(&format!("{other:?}"))),
    }
}

fn from_fractional(x: f64, nanos_per_unit: f64) -> Option<DateTime<Utc>> {
    if !x.is_finite() {
        return None;
    }
    let nanos = x * nanos_per_unit;
    if nanos.abs() > i64::MAX as f64 {
        return None;
    }
    Some(DateTime::from_timestamp_nanos(nanos.round() as i64))
}

fn parse_text(s: &str, format: Option<&TimestampFormat>) -> Option<DateTime<Utc>> {
    use TimestampFormat as F;
    let t = s.trim();
    match format {
        None => parse_timestamp(t).or_else(|| {
            t.parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
        }),
        Some(F::Iso8601) => parse_timestamp(t).or_else(|| {
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|n| n.and_utc())
        }),
        Some(F::Rfc3339) => DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|d| d.with_timezone(&Utc)),
        Some(F::Unix) => match t.parse::<i64>() {
            Ok(secs) => DateTime::from_timestamp(secs, 0),
            Err(_) => t.parse::<f64>().ok().and_then(|x| from_fractional(x, 1e9)),
        },
        Some(F::UnixMs) => match t.parse::<i64>() {
            Ok(ms) => DateTime::from_timestamp_millis(ms),
            Err(_) => t.parse::<f64>().ok().and_then(|x| from_fractional(x, 1e6)),
        },
        Some(F::Pattern(p)) => parse_with_pattern(t, p),
    }
}

fn parse_with_pattern(t: &str, pattern: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_str(t, pattern) {
        return Some(dt.with_timezone(&Utc));
    }
    if let Ok(naive) = NaiveDateTime::parse_from_str(t, pattern) {
        return Some(naive.and_utc());
    }
    NaiveDate::parse_from_str(t, pattern)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
}

/// Sets `event_time` on records, resolving the field's position once per
/// schema and counting failures.
#[derive(Debug)]
pub struct EventTimeExtractor {
    config: EventTimeConfig,
    /// The last schema seen and the field's position in it.
    resolved: Option<(Arc<Schema>, Option<usize>)>,
    failures: u64,
    log_every: u64,
}

impl EventTimeExtractor {
    /// An extractor that logs the first failure and then one in `log_every`.
    pub fn new(config: EventTimeConfig, log_every: u64) -> Self {
        EventTimeExtractor {
            config,
            resolved: None,
            failures: 0,
            log_every: log_every.max(1),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EventTimeConfig {
        &self.config
    }

    /// Records whose event time could not be read so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Sets `record.event_time`; returns whether it could be read.
    pub fn apply(&mut self, record: &mut StreamRecord) -> bool {
        let index = self.index_in(record.schema());
        let result = match index.and_then(|i| record.value(i)) {
            Some(value) => parse_event_time(value, self.config.format.as_ref()),
            None => Err("no such field in the record".to_owned()),
        };
        record.event_time = self.outcome(result, record.offset, record.partition);
        record.event_time.is_some()
    }

    /// Sets the event time of every row of `batch`; returns how many could be read.
    pub fn apply_to_batch(&mut self, batch: &mut ColumnBatch) -> usize {
        let index = self.index_in(batch.schema());
        let mut read = 0;
        for row in 0..batch.len() {
            let result = match index {
                Some(i) => parse_event_time(&batch.column(i).get(row), self.config.format.as_ref()),
                None => Err("no such field in the record".to_owned()),
            };
            let meta = &batch.rows()[row];
            let t = self.outcome(result, meta.offset, meta.partition);
            read += usize::from(t.is_some());
            batch.rows_mut()[row].event_time = t;
        }
        read
    }

    /// The field's position in `schema`, resolved once per schema.
    fn index_in(&mut self, schema: &Arc<Schema>) -> Option<usize> {
        match &self.resolved {
            Some((resolved, index)) if Arc::ptr_eq(resolved, schema) => *index,
            _ => {
                let index = schema.index_of(&self.config.field_name);
                self.resolved = Some((schema.clone(), index));
                index
            }
        }
    }

    /// The event time, or `None` with the failure counted and logged.
    fn outcome(
        &mut self,
        result: std::result::Result<DateTime<Utc>, String>,
        offset: i64,
        partition: i32,
    ) -> Option<DateTime<Utc>> {
        match result {
            Ok(t) => Some(t),
            Err(reason) => {
                self.failures += 1;
                metrics::counter!("velo_event_time_errors_total").increment(1);
                if self.failures == 1 || self.failures.is_multiple_of(self.log_every) {
                    tracing::warn!(
                        field = %self.config.field_name,
                        offset,
                        partition,
                        failures = self.failures,
                        "Failed to extract event_time: {reason}"
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{DataType, FieldDefinition};
    use std::collections::HashMap;

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn parse(v: impl Into<FieldValue>, f: &str) -> std::result::Result<DateTime<Utc>, String> {
        let format = if f.is_empty() {
            None
        } else {
            Some(f.parse().unwrap())
        };
        parse_event_time(&v.into(), format.as_ref())
    }

    #[test]
    fn guide_table() {
        // The guide's table pairs each format with an example; its epoch
        // examples (1705318200) are 11:30Z, not the 10:30Z of the others.
        let want = ts("2024-01-15T10:30:00Z");
        let epoch = ts("2024-01-15T11:30:00Z");
        assert_eq!(parse("2024-01-15T10:30:00Z", "iso8601"), Ok(want));
        assert_eq!(parse("1705318200", "unix"), Ok(epoch));
        assert_eq!(parse(1705318200i64, "unix"), Ok(epoch));
        assert_eq!(parse("1705318200000", "unix_ms"), Ok(epoch));
        assert_eq!(parse(1705318200000i64, "unix_ms"), Ok(epoch));
        assert_eq!(parse("2024-01-15 10:30:00", "%Y-%m-%d %H:%M:%S"), Ok(want));
        assert_eq!(parse("2024-01-15T10:30:00+00:00", "rfc3339"), Ok(want));
    }

    #[test]
    fn iso8601_variants() {
        assert_eq!(
            parse("2024-01-15T12:30:00.250+02:00", "iso8601"),
            Ok(ts("2024-01-15T10:30:00.250Z"))
        );
        assert_eq!(
            parse("2024-01-15T10:30:00", "iso8601"),
            Ok(ts("2024-01-15T10:30:00Z"))
        );
        assert_eq!(
            parse("2024-01-15", "iso8601"),
            Ok(ts("2024-01-15T00:00:00Z"))
        );
    }

    #[test]
    fn values_taken_as_they_are() {
        let want = ts("2024-01-15T11:30:00Z");
        assert_eq!(parse(FieldValue::Timestamp(want), "unix"), Ok(want));
        assert_eq!(parse(1705318200000i64, ""), Ok(want));
        assert_eq!(parse("2024-01-15T11:30:00Z", ""), Ok(want));
        assert_eq!(
            parse(1705318200.5f64, "unix"),
            Ok(ts("2024-01-15T11:30:00.5Z"))
        );
        assert_eq!(
            parse("15/01/2024 10:30 +0100", "%d/%m/%Y %H:%M %z"),
            Ok(ts("2024-01-15T09:30:00Z"))
        );
        assert_eq!(parse(20240115i64, "%Y%m%d"), Ok(ts("2024-01-15T00:00:00Z")));
    }

    #[test]
    fn failures() {
        assert!(
            parse("yesterday", "iso8601")
                .unwrap_err()
                .contains("`yesterday`")
        );
        assert!(parse("2024-01-15", "rfc3339").is_err());
        assert!(parse("abc", "unix").is_err());
        assert!(parse("1705318200", "%Y-%m-%d").is_err());
        assert_eq!(parse(FieldValue::Null, "unix"), Err("value is null".into()));
        assert!(parse(true, "unix").is_err());
        assert!(parse(f64::NAN, "unix").is_err());
        assert!("%Q".parse::<TimestampFormat>().is_err());
        assert!(
            "seconds"
                .parse::<TimestampFormat>()
                .unwrap_err()
                .to_string()
                .contains("event.time.format")
        );
    }

    #[test]
    fn config_from_properties() {
        let props: HashMap<String, String> = [
            ("event.time.field".to_owned(), "ts".to_owned()),
            ("event.time.format".to_owned(), "unix_ms".to_owned()),
        ]
        .into();
        let c = EventTimeConfig::from_properties(&props).unwrap().unwrap();
        assert_eq!(c, EventTimeConfig::new("ts", Some(TimestampFormat::UnixMs)));
        let only_format: HashMap<String, String> =
            [("event.time.format".to_owned(), "unix".to_owned())].into();
        assert!(EventTimeConfig::from_properties(&only_format).is_err());
        assert_eq!(
            EventTimeConfig::from_properties(&HashMap::new()).unwrap(),
            None
        );
    }

    #[test]
    fn extractor_counts_failures() {
        let schema = Arc::new(Schema::new(vec![FieldDefinition::optional(
            "ts",
            DataType::String,
        )]));
        let mut ex = EventTimeExtractor::new(
            EventTimeConfig::new("ts", Some(TimestampFormat::Iso8601)),
            10,
        );
        let mut good =
            StreamRecord::new(schema.clone(), vec!["2024-01-15T10:30:00Z".into()]).unwrap();
        let mut bad = StreamRecord::new(schema, vec!["nope".into()]).unwrap();
        assert!(ex.apply(&mut good));
        assert_eq!(good.event_time, Some(ts("2024-01-15T10:30:00Z")));
        assert!(!ex.apply(&mut bad));
        assert_eq!(bad.event_time, None);
        assert_eq!(ex.failures(), 1);
        let rec = StreamRecord::new(
            Arc::new(Schema::new(vec![FieldDefinition::optional(
                "other",
                DataType::String,
            )])),
            vec!["x".into()],
        )
        .unwrap();
        assert_eq!(
            extract_event_time(&rec, ex.config())
                .unwrap_err()
                .to_string(),
            "event time field `ts`: no such field in the record"
        );
    }

    #[test]
    fn batches_get_the_same_event_times_as_records() {
        let schema = Arc::new(Schema::new(vec![
            FieldDefinition::optional("ts", DataType::Timestamp),
            FieldDefinition::optional("text", DataType::String),
        ]));
        let records: Vec<StreamRecord> = [
            (Some("2024-01-15T10:30:00Z"), "2024-01-15T10:30:00Z"),
            (None, "nope"),
            (Some("2024-02-01T00:00:00.5Z"), "2024-02-01T00:00:00.5Z"),
        ]
        .into_iter()
        .map(|(t, text)| {
            let t = t.map_or(FieldValue::Null, |t| FieldValue::Timestamp(ts(t)));
            StreamRecord::new(schema.clone(), vec![t, text.into()]).unwrap()
        })
        .collect();
        for field in ["ts", "text"] {
            let config = EventTimeConfig::new(field, None);
            let mut by_record = EventTimeExtractor::new(config.clone(), 1);
            let mut by_batch = EventTimeExtractor::new(config, 1);
            let mut expected = records.clone();
            for r in &mut expected {
                by_record.apply(r);
            }
            let mut batch = ColumnBatch::from_records(records.clone()).remove(0);
            assert_eq!(by_batch.apply_to_batch(&mut batch), 2, "{field}");
            assert_eq!(batch.into_records(), expected, "{field}");
            assert_eq!(by_batch.failures(), 1, "{field}");
        }
    }
}
