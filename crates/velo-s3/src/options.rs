//! Settings of an object-store source or sink, and the store they talk to.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use velo_datasource_core::format::FormatOptions;
use velo_datasource_core::format::compression::Compression;
use velo_datasource_core::{
    BatchConfig, ConnectorConfig, Error, EventTimeConfig, FileFormat, Result,
};

/// How each poll lists the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// From the last key read (keys are expected to grow, like timestamps),
    /// re-checking the last `boundary_keys` keys for rewrites and late arrivals.
    Incremental,
    /// The whole prefix every poll; every processed key is remembered.
    Full,
}

/// What to do with an object whose ETag changed after it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRewrite {
    /// Read it again from the start.
    Reread,
    /// Leave it.
    Skip,
}

/// Everything a reader or writer needs. (`Debug` shows the store by its
/// `Display` form, which holds no credentials.)
#[derive(Clone)]
pub struct S3Options {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// `s3://bucket` (for positions and messages).
    pub bucket: String,
    /// Key prefix.
    pub prefix: Path,
    /// Record format.
    pub format: FormatOptions,
    /// Listing mode.
    pub scan_mode: ScanMode,
    /// Time between listings.
    pub poll_interval: Duration,
    /// Most new objects taken per listing.
    pub max_keys_per_scan: usize,
    /// Objects last modified before this are skipped.
    pub modified_since: Option<DateTime<Utc>>,
    /// Keys matching this are skipped.
    pub exclude: Option<regex::Regex>,
    /// Objects downloaded ahead, in parallel.
    pub parallel_downloads: usize,
    /// Keys re-checked behind the cursor in incremental mode.
    pub boundary_keys: usize,
    /// Rewritten objects.
    pub on_rewrite: OnRewrite,
    /// Remember processed keys (`false`: full mode reads everything each poll).
    pub track_processed: bool,
    /// Read what the first listing finds, then stop.
    pub bounded: bool,
    /// Where the reader keeps its own state (besides the runner's checkpoint).
    pub state_file: Option<std::path::PathBuf>,
    /// Sink: roll after this many bytes.
    pub roll_size: u64,
    /// Sink: roll after this many records.
    pub roll_records: Option<u64>,
    /// Sink: roll after this long.
    pub roll_interval: Option<Duration>,
    /// Sink: compression of written objects.
    pub compression: Compression,
    /// Sink: object name prefix inside the key prefix.
    pub file_prefix: String,
    /// Batching.
    pub batch: BatchConfig,
    /// Event time.
    pub event_time: Option<EventTimeConfig>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("store", &self.store.to_string())
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("format", &self.format.format)
            .field("scan_mode", &self.scan_mode)
            .field("bounded", &self.bounded)
            .finish_non_exhaustive()
    }
}

impl S3Options {
    /// Reads the options and builds the store from an `s3://`, `gs://` or `az://` config.
    pub fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let ConnectorConfig::S3 {
            scheme,
            bucket,
            prefix,
            region,
            format,
            properties: p,
            ..
        } = config
        else {
            return Err(Error::State(format!(
                "velo-s3 got a `{}` config, not an object-store one",
                config.scheme()
            )));
        };
        let store = build_store(scheme, bucket, region.as_deref(), p)?;
        Self::with_store(
            store,
            &format!("{scheme}://{bucket}"),
            prefix,
            *format,
            config,
        )
    }

    /// The options of `config` over a store built elsewhere (tests, embedding,
    /// `object_store`'s local and in-memory stores).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        bucket: &str,
        prefix: &str,
        format: FileFormat,
        config: &ConnectorConfig,
    ) -> Result<Self> {
        let p = config.properties();
        let exclude = p
            .get("exclude_pattern")
            .map(|r| {
                regex::Regex::new(r)
                    .map_err(|e| Error::invalid_value("exclude_pattern", r, e.to_string()))
            })
            .transpose()?;
        let modified_since = p
            .get("modified_since")
            .map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        Error::invalid_value(
                            "modified_since",
                            t,
                            format!("not an RFC 3339 time: {e}"),
                        )
                    })
            })
            .transpose()?;
        let scan_mode = match p.get("scan_mode").unwrap_or("incremental") {
            "incremental" => ScanMode::Incremental,
            "full" => ScanMode::Full,
            other => {
                return Err(Error::invalid_value(
                    "scan_mode",
                    other,
                    "expected incremental or full",
                ));
            }
        };
        let on_rewrite = match p.get("on_rewrite").unwrap_or("reread") {
            "reread" | "read" => OnRewrite::Reread,
            "skip" => OnRewrite::Skip,
            other => {
                return Err(Error::invalid_value(
                    "on_rewrite",
                    other,
                    "expected reread or skip",
                ));
            }
        };
        let bounded = match p.get("until") {
            None => false,
            Some("end") => true,
            Some(other) => return Err(Error::invalid_value("until", other, "expected `end`")),
        };
        let compression = match p.get("compression") {
            Some(c) => c.parse()?,
            None => Compression::None,
        };
        Ok(S3Options {
            store,
            bucket: bucket.to_owned(),
            prefix: Path::from(prefix.trim_matches('/')),
            format: FormatOptions::from_properties(format, p)?,
            scan_mode,
            poll_interval: p
                .get_duration("poll_interval")?
                .unwrap_or(Duration::from_secs(30)),
            max_keys_per_scan: p
                .get_parsed::<usize>("max_keys_per_scan")?
                .unwrap_or(1000)
                .max(1),
            modified_since,
            exclude,
            parallel_downloads: p
                .get_parsed::<usize>("parallel_downloads")?
                .unwrap_or(4)
                .max(1),
            boundary_keys: p.get_parsed::<usize>("boundary_keys")?.unwrap_or(100),
            on_rewrite,
            track_processed: p.get_bool("track_processed")?.unwrap_or(true),
            bounded,
            state_file: p.get("state_file").map(Into::into),
            roll_size: p.get_parsed::<u64>("roll.size")?.unwrap_or(128 << 20),
            roll_records: p.get_parsed::<u64>("roll.records")?,
            roll_interval: p.get_duration("roll.interval")?,
            compression,
            file_prefix: p.get("file_prefix").unwrap_or("part").to_owned(),
            batch: *config.batch_config(),
            event_time: config.event_time_config().cloned(),
        })
    }

    /// Whether `key` passes `exclude_pattern` and `modified_since`.
    pub fn wanted(&self, key: &str, modified: DateTime<Utc>) -> bool {
        !self.exclude.as_ref().is_some_and(|r| r.is_match(key))
            && self.modified_since.is_none_or(|since| modified >= since)
    }
}

fn build_store(
    scheme: &str,
    bucket: &str,
    region: Option<&str>,
    p: &velo_datasource_core::config::Properties,
) -> Result<Arc<dyn ObjectStore>> {
    let err = |e: object_store::Error| Error::InvalidUri {
        uri: format!("{scheme}://{bucket}"),
        reason: e.to_string(),
    };
    Ok(match scheme {
        "s3" => {
            // The environment first (AWS_*), then what the config says.
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(r) = region.or(p.get("region")) {
                b = b.with_region(r);
            }
            if let Some(e) = p.get("endpoint") {
                b = b.with_endpoint(e);
                if e.starts_with("http://") && p.get_bool("allow_http")?.is_none() {
                    b = b.with_allow_http(true);
                }
            }
            if let Some(a) = p.get_bool("allow_http")? {
                b = b.with_allow_http(a);
            }
            if let Some(k) = p.get("access_key_id") {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = p.get("secret_access_key") {
                b = b.with_secret_access_key(k);
            }
            if let Some(t) = p.get("session_token") {
                b = b.with_token(t);
            }
            if let Some(v) = p.get_bool("virtual_hosted_style")? {
                b = b.with_virtual_hosted_style_request(v);
            }
            Arc::new(b.build().map_err(err)?)
        }
        "gs" => {
            // The environment first (GOOGLE_*), then what the config says.
            let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            if let Some(path) = p.get("service_account_path") {
                b = b.with_service_account_path(path);
            }
            if let Some(key) = p.get("service_account_key") {
                b = b.with_service_account_key(key);
            }
            if let Some(token) = p.get("bearer_token") {
                b = b.with_config(GoogleConfigKey::BearerToken, token);
            }
            // Another server speaking GCS's XML API (an emulator, a private endpoint).
            if let Some(e) = p.get("endpoint") {
                b = b.with_base_url(e);
            }
            if let Some(skip) = p.get_bool("skip_signature")? {
                b = b.with_config(GoogleConfigKey::SkipSignature, skip.to_string());
            }
            Arc::new(b.build().map_err(err)?)
        }
        "az" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(bucket);
            if let Some(a) = p.get("account") {
                b = b.with_account(a);
            }
            if let Some(k) = p.get("access_key") {
                b = b.with_access_key(k);
            }
            if let Some(e) = p.get("endpoint") {
                b = b
                    .with_endpoint(e.to_owned())
                    .with_allow_http(e.starts_with("http://"));
            }
            Arc::new(b.build().map_err(err)?)
        }
        other => {
            return Err(Error::InvalidUri {
                uri: format!("{other}://{bucket}"),
                reason: "velo-s3 handles s3://, gs:// and az://".into(),
            });
        }
    })
}

/// An object-store error as ours: retryable unless it is about the object
/// or the credentials (missing, bad path, denied), where retrying cannot help.
pub(crate) fn store_error(opts: &S3Options, doing: &str, e: object_store::Error) -> Error {
    let retryable = !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
    );
    Error::Connection {
        endpoint: opts.bucket.clone(),
        message: format!("{doing}: {e}"),
        retryable,
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use velo_datasource_core::DataSourceUri;

    use super::*;

    #[test]
    fn options_from_a_uri_keep_secrets_out_of_debug() {
        let config = DataSourceUri::parse(
            "s3://bucket/in/?endpoint=http://127.0.0.1:9000&access_key_id=AKID&secret_access_key=TOPSECRET\
             &format=jsonl&scan_mode=full&max_keys_per_scan=5&exclude_pattern=tmp$&until=end",
        )
        .unwrap()
        .to_source_config()
        .unwrap();
        let o = S3Options::from_config(&config).unwrap();
        assert_eq!(o.scan_mode, ScanMode::Full);
        assert_eq!(o.max_keys_per_scan, 5);
        assert!(o.bounded);
        assert!(!o.wanted("in/a.tmp", Utc::now()) && o.wanted("in/a.jsonl", Utc::now()));
        let debug = format!("{o:?}");
        assert!(!debug.contains("TOPSECRET"), "{debug}");
        let err = S3Options::from_config(
            &DataSourceUri::parse("s3://b/p?format=jsonl&scan_mode=sometimes")
                .unwrap()
                .to_source_config()
                .unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("incremental or full"), "{err}");
    }
}
