//! The table of configuration keys each scheme understands, with the aliases
//! the guide's YAML layout and common client spellings map onto.
//!
//! URI parameters and YAML keys both end up here: a key is looked up,
//! replaced by its canonical name, or rejected with a suggestion.

use crate::error::{Error, Result};

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// Canonical name, as connectors read it from `properties`.
    pub key: &'static str,
    /// Other spellings, including the guide's nested YAML paths joined by dots.
    pub aliases: &'static [&'static str],
    /// One line for docs and `velo connectors`.
    pub doc: &'static str,
}

const fn k(key: &'static str, aliases: &'static [&'static str], doc: &'static str) -> KeySpec {
    KeySpec { key, aliases, doc }
}

/// Keys every source and sink accepts.
pub const COMMON_KEYS: &[KeySpec] = &[
    k(
        "event.time.field",
        &["event_time_field"],
        "field holding the event time",
    ),
    k(
        "event.time.format",
        &["event_time_format"],
        "iso8601, rfc3339, unix, unix_ms or a chrono pattern",
    ),
    k(
        "batch.size",
        &["batch_size", "max_batch_size"],
        "records per batch (default 1000)",
    ),
    k(
        "batch.timeout",
        &["batch_timeout"],
        "longest wait to fill a batch, e.g. 100ms (default 1s)",
    ),
    k(
        "errors",
        &["error_policy", "bad_records"],
        "bad-record policy: fail, skip or dead_letter",
    ),
    k(
        "errors.dead_letter",
        &["dead_letter", "dead_letter_path"],
        "where dead letters go (a path or URI)",
    ),
    k(
        "errors.log_every",
        &[],
        "log one bad record in N (default 1000)",
    ),
];

/// Keys of `file://` sources and sinks.
pub const FILE_KEYS: &[KeySpec] = &[
    k(
        "format",
        &[],
        "csv, json (JSON Lines), jsonl, json_array, parquet, avro",
    ),
    k(
        "delimiter",
        &["csv.delimiter"],
        "CSV field separator, one ASCII character (default ,)",
    ),
    k("quote", &["csv.quote"], "CSV quote character (default \")"),
    k(
        "escape",
        &["csv.escape"],
        "CSV escape character (default: doubled quotes)",
    ),
    k(
        "header",
        &["has_header", "has_headers", "csv.header"],
        "whether the first CSV row names the columns (default true)",
    ),
    k(
        "null_values",
        &["null_tokens"],
        "comma-separated cells read as null (default: empty, NA, N/A, null, NULL)",
    ),
    k(
        "sample_rows",
        &["infer.sample_rows"],
        "rows sampled for schema inference (default 1000)",
    ),
    k("schema", &[], "explicit schema: name:type,name:type"),
    k(
        "compression",
        &[],
        "none, gzip or zstd (default: by extension)",
    ),
    k(
        "mode",
        &["watching.mode", "watch_mode"],
        "bounded, tail, directory_watch or periodic_scan",
    ),
    k(
        "watch",
        &["watching.enabled"],
        "keep reading after the end (default false)",
    ),
    k(
        "poll_interval",
        &["watching.poll_interval"],
        "how often to look for new data when idle (default 100ms)",
    ),
    k(
        "read_timeout",
        &["watching.read_timeout"],
        "longest a read waits for data before returning nothing (default 1s)",
    ),
    k(
        "position_tracking",
        &["position_tracking.enabled"],
        "save positions to checkpoints (default true)",
    ),
    k(
        "checkpoint_dir",
        &["position_tracking.checkpoint_dir"],
        "directory of checkpoint files",
    ),
    k(
        "checkpoint_interval",
        &["position_tracking.checkpoint_interval"],
        "records between checkpoints (default 1000)",
    ),
    k(
        "checkpoint_interval_time",
        &["position_tracking.checkpoint_interval_time"],
        "time between checkpoints (default 10s)",
    ),
    k(
        "detect_rotation",
        &["rotation.detect_rotation"],
        "follow rename+create and copytruncate rotation (default true)",
    ),
    k(
        "rotation_pattern",
        &["rotation.rotation_pattern"],
        "glob of rotated files, e.g. app.log.*",
    ),
    k(
        "finish_rotated",
        &["rotation.finish_rotated"],
        "read a rotated file to its end first (default true)",
    ),
    k(
        "fingerprint_bytes",
        &[],
        "bytes checksummed to identify a file (default 256)",
    ),
    k(
        "roll.size",
        &["rolling.max_bytes", "max_file_size"],
        "sink: start a new file after this many bytes, e.g. 64MB",
    ),
    k(
        "roll.records",
        &["rolling.max_records", "max_records_per_file"],
        "sink: start a new file after this many records",
    ),
    k(
        "roll.interval",
        &["rolling.interval"],
        "sink: start a new file after this long, e.g. 5m",
    ),
    k(
        "roll.on_commit",
        &[],
        "file sink: finish the file at every commit, so each commit is visible at once",
    ),
    k(
        "append",
        &[],
        "sink: append to an existing file instead of replacing it",
    ),
];

/// Keys of `kafka://` sources and sinks. `kafka.*` keys pass to librdkafka as they are.
pub const KAFKA_KEYS: &[KeySpec] = &[
    k("group_id", &["group.id"], "consumer group"),
    k(
        "auto_commit",
        &["offset_management.auto_commit", "enable.auto.commit"],
        "let the client commit on its own (default false)",
    ),
    k(
        "commit_interval",
        &[
            "offset_management.commit_interval",
            "auto.commit.interval.ms",
        ],
        "how often stored offsets are committed (default 5s)",
    ),
    k(
        "reset_policy",
        &["offset_management.reset_policy", "auto.offset.reset"],
        "earliest, latest or none",
    ),
    k(
        "save_offsets_externally",
        &["recovery.save_offsets_externally"],
        "also keep offsets in the checkpoint store",
    ),
    k(
        "external_store",
        &["recovery.external_store"],
        "where external offsets live",
    ),
    k(
        "poll_timeout",
        &[],
        "longest a read waits for messages (default 1s)",
    ),
    k("bounded", &[], "stop at the high watermarks seen at start"),
    k(
        "format",
        &["value.format"],
        "json, csv, raw or avro payloads (default json)",
    ),
    k(
        "key.field",
        &["key_field"],
        "sink: field whose value is the message key",
    ),
    k(
        "headers",
        &[],
        "sink: comma-separated fields sent as headers",
    ),
    k(
        "transactional.id",
        &["transactional_id"],
        "sink: use transactions with this id",
    ),
    k("acks", &[], "sink: acks (default all)"),
    k(
        "compression",
        &["compression.type"],
        "sink: none, gzip, snappy, lz4, zstd",
    ),
];

/// Keys of object-store (`s3://`, `gs://`, `az://`) sources and sinks.
pub const S3_KEYS: &[KeySpec] = &[
    k("format", &[], "csv, json (JSON Lines), jsonl, parquet"),
    k("region", &["aws_region"], "bucket region"),
    k(
        "endpoint",
        &["aws_endpoint", "endpoint_url"],
        "custom endpoint (MinIO, moto, ...)",
    ),
    k("allow_http", &[], "allow plain HTTP endpoints"),
    k("access_key_id", &["aws_access_key_id"], "access key id"),
    k(
        "secret_access_key",
        &["aws_secret_access_key"],
        "secret access key",
    ),
    k("session_token", &["aws_session_token"], "session token"),
    k(
        "state_file",
        &["position_tracking.state_file"],
        "where the listing cursor is kept",
    ),
    k(
        "track_processed",
        &["position_tracking.track_processed"],
        "remember processed objects (default true)",
    ),
    k("scan_mode", &["scanning.mode"], "incremental or full"),
    k(
        "poll_interval",
        &["scanning.poll_interval", "scan_interval"],
        "time between listings (default 30s)",
    ),
    k(
        "max_keys_per_scan",
        &["scanning.max_keys_per_scan"],
        "objects listed per scan (default 1000)",
    ),
    k(
        "modified_since",
        &["filtering.modified_since"],
        "skip objects older than this RFC 3339 time",
    ),
    k(
        "exclude_pattern",
        &["filtering.exclude_pattern"],
        "regex of keys to skip",
    ),
    k(
        "parallel_downloads",
        &[],
        "objects fetched at once (default 4)",
    ),
    k("delimiter", &[], "CSV field separator"),
    k(
        "header",
        &["has_header", "has_headers"],
        "whether CSV objects start with a header",
    ),
    k("null_values", &[], "cells read as null"),
    k("compression", &[], "none, gzip or zstd"),
    k("roll.size", &[], "sink: bytes per object"),
    k("roll.records", &[], "sink: records per object"),
    k("roll.interval", &[], "sink: time per object"),
    k(
        "until",
        &[],
        "`end`: read what the first listing finds, then stop",
    ),
    k(
        "boundary_keys",
        &[],
        "incremental: keys re-checked behind the cursor for rewrites and late arrivals (default 100)",
    ),
    k(
        "on_rewrite",
        &[],
        "reread (default) or skip an object whose ETag changed",
    ),
    k(
        "file_prefix",
        &[],
        "sink: object name prefix (default part)",
    ),
    k("schema", &[], "fixed schema, e.g. `id:integer,name:string`"),
    k("quote", &[], "CSV quote character"),
    k("sample_rows", &[], "rows sampled for schema inference"),
    k(
        "virtual_hosted_style",
        &[],
        "S3: bucket in the host name instead of the path",
    ),
    k(
        "service_account_path",
        &[],
        "GCS: service account JSON file",
    ),
    k(
        "service_account_key",
        &[],
        "GCS: service account JSON, inline (secret)",
    ),
    k("bearer_token", &[], "GCS: an OAuth bearer token (secret)"),
    k(
        "skip_signature",
        &[],
        "GCS: send requests without credentials (public buckets, emulators)",
    ),
    k("account", &[], "Azure: storage account"),
    k("access_key", &[], "Azure: account key"),
];

/// Keys of `postgresql://` sources and sinks (libpq parameters stay in the connection string).
pub const POSTGRES_KEYS: &[KeySpec] = &[
    k("table", &[], "table, optionally schema-qualified"),
    k(
        "mode",
        &["cdc_mode"],
        "cdc (logical replication, default) or poll",
    ),
    k(
        "slot",
        &["slot_name", "replication_slot"],
        "replication slot (default velo_cdc_<table>)",
    ),
    k(
        "publication",
        &["publication_name"],
        "publication (default velo_cdc_<table>)",
    ),
    k(
        "snapshot",
        &["initial_snapshot"],
        "take a consistent snapshot first (default false)",
    ),
    k(
        "drop_slot",
        &[],
        "drop the slot and publication when the reader closes (default false)",
    ),
    k(
        "until",
        &[],
        "cdc: stop at `current` (the WAL position at start) or an LSN; poll: `end`",
    ),
    k(
        "heartbeat_interval",
        &[],
        "how often a heartbeat message is emitted (default 10s)",
    ),
    k(
        "status_interval",
        &[],
        "how often the applied LSN is reported (default 1s)",
    ),
    k(
        "cursor.column",
        &["timestamp_column", "cursor_column"],
        "polling: column the cursor follows",
    ),
    k("cursor.kind", &[], "polling: timestamp or primary_key"),
    k(
        "poll_interval",
        &[],
        "polling: time between queries (default 1s)",
    ),
    k("query_timeout", &[], "polling: longest a query may run"),
    k(
        "key_columns",
        &["primary_key"],
        "sink: columns that identify a row",
    ),
    k(
        "write_mode",
        &["operation"],
        "sink: insert, upsert (default) or delete; CDC records say their own",
    ),
    k(
        "store_positions",
        &[],
        "sink: store source positions in velo_positions, in the same transaction",
    ),
    k(
        "positions_table",
        &[],
        "sink: table for source positions (implies store_positions)",
    ),
];

/// Keys of `clickhouse://` sinks.
pub const CLICKHOUSE_KEYS: &[KeySpec] = &[
    k("table", &[], "target table"),
    k("database", &[], "database (default: the URI path)"),
    k("user", &["username"], "user name"),
    k("password", &[], "password"),
    k(
        "compression",
        &[],
        "auto, gzip or none: request body compression (auto: gzip unless the server is on loopback)",
    ),
    k(
        "create_table",
        &[],
        "create the table from the record schema when missing",
    ),
    k(
        "order_by",
        &[],
        "with create_table: MergeTree ORDER BY columns",
    ),
    k(
        "batch.max_bytes",
        &["batch_max_bytes"],
        "bytes of encoded rows that send a batch before batch.size (default 64 MiB)",
    ),
    k(
        "insert_format",
        &[],
        "auto, native, row_binary or json_each_row (auto: Native when every column has a binary encoding)",
    ),
    k("secure", &["https"], "use HTTPS"),
    k(
        "timeout",
        &["request_timeout"],
        "longest one insert may take (default 60s)",
    ),
    k(
        "retry_for",
        &[],
        "how long a failing insert is retried (default 5m)",
    ),
];

/// Key prefixes passed through as they are (client-library settings).
fn passthrough_prefixes(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "kafka" => &[
            "kafka.",
            "security.",
            "sasl.",
            "ssl.",
            "producer.",
            "consumer.",
        ],
        "s3" | "gs" | "az" => &["aws_", "google_", "azure_"],
        _ => &[],
    }
}

/// The keys of `scheme` (not counting [`COMMON_KEYS`]); `None` for schemes
/// whose plugin validates its own properties.
pub fn scheme_keys(scheme: &str) -> Option<&'static [KeySpec]> {
    Some(match scheme {
        "file" => FILE_KEYS,
        "kafka" => KAFKA_KEYS,
        "s3" | "gs" | "az" => S3_KEYS,
        "postgresql" | "postgres" => POSTGRES_KEYS,
        "clickhouse" => CLICKHOUSE_KEYS,
        _ => return None,
    })
}

/// The canonical name of `key` for `scheme`, or an error naming the key and
/// the closest known one. Keys of unknown schemes pass unchanged.
pub fn canonical_key(scheme: &str, key: &str, context: &str) -> Result<String> {
    let Some(specific) = scheme_keys(scheme) else {
        return Ok(key.to_owned());
    };
    for spec in COMMON_KEYS.iter().chain(specific) {
        if spec.key == key || spec.aliases.contains(&key) {
            return Ok(spec.key.to_owned());
        }
    }
    if passthrough_prefixes(scheme)
        .iter()
        .any(|p| key.starts_with(p))
    {
        return Ok(key.to_owned());
    }
    let hint = COMMON_KEYS
        .iter()
        .chain(specific)
        .flat_map(|s| std::iter::once(s.key).chain(s.aliases.iter().copied()))
        .map(|cand| (strsim::levenshtein(key, cand), cand))
        .filter(|(d, cand)| *d <= 2.max(cand.len() / 4))
        .min()
        .map(|(_, cand)| cand.to_owned());
    Err(Error::UnknownConfigKey {
        key: key.to_owned(),
        context: context.to_owned(),
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_canonical() {
        assert_eq!(
            canonical_key("file", "position_tracking.checkpoint_dir", "file source").unwrap(),
            "checkpoint_dir"
        );
        assert_eq!(canonical_key("kafka", "group.id", "k").unwrap(), "group_id");
        assert_eq!(
            canonical_key("kafka", "kafka.fetch.min.bytes", "k").unwrap(),
            "kafka.fetch.min.bytes"
        );
        assert_eq!(
            canonical_key("myplugin", "anything", "p").unwrap(),
            "anything"
        );
    }

    #[test]
    fn unknown_key_suggests() {
        let err = canonical_key("file", "delimter", "file source").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key `delimter` for file source (did you mean `delimiter`?)"
        );
        let err = canonical_key("file", "zzzzzz", "file source").unwrap_err();
        assert!(!err.to_string().contains("did you mean"));
    }

    #[test]
    fn no_key_is_listed_twice() {
        for scheme in ["file", "kafka", "s3", "postgresql", "clickhouse"] {
            let mut seen = std::collections::HashSet::new();
            for spec in COMMON_KEYS.iter().chain(scheme_keys(scheme).unwrap()) {
                for name in std::iter::once(spec.key).chain(spec.aliases.iter().copied()) {
                    assert!(seen.insert(name), "{scheme}: `{name}` listed twice");
                }
            }
        }
    }
}
