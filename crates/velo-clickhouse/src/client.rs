//! ClickHouse's HTTP interface: settings from the config, queries, inserts,
//! and which failures a retry can fix.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use velo_datasource_core::secret::Secret;
use velo_datasource_core::{ConnectorConfig, Error, Result};

/// How to reach the server and where to write.
#[derive(Debug, Clone)]
pub struct ClickHouseOptions {
    /// `http(s)://host:port/` (no credentials).
    pub base: url::Url,
    /// Database.
    pub database: String,
    /// Table.
    pub table: String,
    /// User (default `default`).
    pub user: String,
    /// Password (redacted in `Debug`).
    pub password: Option<Secret>,
    /// Gzip request bodies.
    pub gzip: bool,
    /// Create the table from the first records' schema when it is missing.
    pub create_table: bool,
    /// `ORDER BY` of a created table.
    pub order_by: Vec<String>,
    /// Longest a request may take.
    pub timeout: Duration,
    /// How long a failing insert is retried.
    pub retry_for: Duration,
    /// Rows per insert.
    pub batch_rows: usize,
    /// Bytes that send a batch before `batch_rows` (`batch.max_bytes`).
    pub batch_bytes: usize,
    /// Age of the oldest buffered row that sends a batch (`batch.timeout`),
    /// looked at as rows are written.
    pub batch_timeout: Duration,
    /// How rows travel: `RowBinary` where every column allows, or `JSONEachRow`.
    pub insert_format: InsertFormat,
}

/// The format of `INSERT` bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertFormat {
    /// `Native` when every column of the insert has a binary encoding here
    /// (integers, floats, strings, dates and times, arrays, nullables) and
    /// none is `LowCardinality`; `RowBinary` when only the latter holds;
    /// `JSONEachRow` otherwise (`Decimal`, `Enum`, `UUID`, ...).
    Auto,
    /// Always `Native` (columnar blocks); a column without an encoding is an error.
    Native,
    /// Always `RowBinary`; a column without an encoding is an error.
    RowBinary,
    /// Always `JSONEachRow`: text the server parses.
    JsonEachRow,
}

/// `batch.max_bytes` unless set: a bound on the memory one batch holds,
/// far above what an ordinary `batch.size` of rows takes.
const DEFAULT_BATCH_BYTES: usize = 64 << 20;

impl ClickHouseOptions {
    /// Reads a `clickhouse://user:pass@host:8123/db?table=t` config.
    pub fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let ConnectorConfig::ClickHouse {
            connection_string,
            table,
            properties: p,
            batch_config,
            ..
        } = config
        else {
            return Err(Error::State(format!(
                "velo-clickhouse got a `{}` config, not a clickhouse one",
                config.scheme()
            )));
        };
        let uri = url::Url::parse(connection_string.expose()).map_err(|e| Error::InvalidUri {
            uri: connection_string.redacted(),
            reason: e.to_string(),
        })?;
        let secure = p.get_bool("secure")?.unwrap_or(false);
        let host = uri.host_str().unwrap_or("localhost");
        let port = uri.port().unwrap_or(if secure { 8443 } else { 8123 });
        let scheme = if secure { "https" } else { "http" };
        let base = url::Url::parse(&format!("{scheme}://{host}:{port}/")).map_err(|e| {
            Error::InvalidUri {
                uri: connection_string.redacted(),
                reason: e.to_string(),
            }
        })?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let path_db = uri.path().trim_matches('/');
        let database = p
            .get("database")
            .map(str::to_owned)
            .or_else(|| (!path_db.is_empty()).then(|| decode(path_db)))
            .unwrap_or_else(|| "default".into());
        let user = p
            .get("user")
            .map(str::to_owned)
            .or_else(|| (!uri.username().is_empty()).then(|| decode(uri.username())))
            .unwrap_or_else(|| "default".into());
        let password = p
            .get("password")
            .map(str::to_owned)
            .or_else(|| uri.password().map(decode))
            .map(Secret::new);
        let gzip = match p.get("compression").unwrap_or("auto") {
            // Compressing costs more CPU than it saves on the loopback interface.
            "auto" => !is_loopback(host),
            "gzip" => true,
            "none" => false,
            other => {
                return Err(Error::invalid_value(
                    "compression",
                    other,
                    "expected auto, gzip or none",
                ));
            }
        };
        Ok(ClickHouseOptions {
            base,
            database,
            table: table.clone(),
            user,
            password,
            gzip,
            create_table: p.get_bool("create_table")?.unwrap_or(false),
            order_by: p
                .get("order_by")
                .map(|o| {
                    o.split(',')
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            timeout: p
                .get_duration("timeout")?
                .unwrap_or(Duration::from_secs(60)),
            retry_for: p
                .get_duration("retry_for")?
                .unwrap_or(Duration::from_secs(300)),
            batch_rows: batch_config.max_batch_size.max(1),
            batch_bytes: p
                .get_parsed::<usize>("batch.max_bytes")?
                .unwrap_or(DEFAULT_BATCH_BYTES)
                .max(1),
            batch_timeout: batch_config.batch_timeout,
            insert_format: match p.get("insert_format").unwrap_or("auto") {
                "auto" => InsertFormat::Auto,
                "native" | "Native" => InsertFormat::Native,
                "row_binary" | "RowBinary" => InsertFormat::RowBinary,
                "json_each_row" | "JSONEachRow" => InsertFormat::JsonEachRow,
                other => {
                    return Err(Error::invalid_value(
                        "insert_format",
                        other,
                        "expected auto, native, row_binary or json_each_row",
                    ));
                }
            },
        })
    }

    /// `host:port/db.table`, for messages.
    pub fn target(&self) -> String {
        format!(
            "{}/{}.{}",
            self.base
                .as_str()
                .trim_end_matches('/')
                .trim_start_matches("http://")
                .trim_start_matches("https://"),
            self.database,
            self.table
        )
    }
}

/// Quotes an identifier with backticks.
pub fn quote(identifier: &str) -> String {
    let mut out = String::with_capacity(identifier.len() + 2);
    out.push('`');
    for c in identifier.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('`');
    out
}

/// Exception codes that no retry fixes: bad data, bad schema, bad SQL, no such
/// table or database, no permission.
const PERMANENT: &[u32] = &[
    6, 16, 20, 26, 27, 36, 38, 41, 44, 47, 49, 53, 57, 60, 62, 69, 70, 72, 81, 115, 117, 164, 192,
    193, 194, 497,
];

/// The `Code: N` of a ClickHouse exception text.
pub(crate) fn exception_code(text: &str) -> Option<u32> {
    let rest = text.split("Code: ").nth(1)?;
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    opts: ClickHouseOptions,
}

impl Client {
    /// A client for `opts`.
    pub fn new(opts: ClickHouseOptions) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::State(format!("HTTP client: {e}")))?;
        Ok(Client { http, opts })
    }

    /// The options.
    pub fn options(&self) -> &ClickHouseOptions {
        &self.opts
    }

    /// Runs `sql` with `body` (inserts) in the configured database; returns the response text.
    pub async fn execute(&self, sql: &str, body: Bytes) -> Result<String> {
        let mut url = self.opts.base.clone();
        url.query_pairs_mut()
            .append_pair("database", &self.opts.database);
        // Without data, the query itself is the body (an empty POST needs a length the
        // client does not send); with data, the query goes in the URL.
        let body = if body.is_empty() {
            Bytes::copy_from_slice(sql.as_bytes())
        } else {
            url.query_pairs_mut().append_pair("query", sql);
            body
        };
        let (body, gzip) = if self.opts.gzip && body.len() > 1024 {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&body)
                .map_err(|e| Error::State(format!("gzip: {e}")))?;
            (
                Bytes::from(
                    enc.finish()
                        .map_err(|e| Error::State(format!("gzip: {e}")))?,
                ),
                true,
            )
        } else {
            (body, false)
        };
        let mut request = self.http.post(url).body(body);
        if gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        request = request.header("X-ClickHouse-User", &self.opts.user);
        if let Some(password) = &self.opts.password {
            request = request.header("X-ClickHouse-Key", password.expose());
        }
        let endpoint = self.opts.target();
        let response = request.send().await.map_err(|e| Error::Connection {
            endpoint: endpoint.clone(),
            message: format!("sending a request: {e}"),
            retryable: true,
            source: Some(Box::new(e)),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Error::Connection {
            endpoint: endpoint.clone(),
            message: format!("reading the answer: {e}"),
            retryable: true,
            source: Some(Box::new(e)),
        })?;
        if status.is_success() {
            return Ok(text);
        }
        let code = exception_code(&text);
        let retryable = match code {
            Some(c) => !PERMANENT.contains(&c),
            None => status.is_server_error() || status.as_u16() == 429,
        };
        let first_line = text.lines().next().unwrap_or("").trim();
        Err(Error::Connection {
            endpoint,
            message: format!("HTTP {status}: {first_line}"),
            retryable,
            source: None,
        })
    }
}

/// Whether `host` names this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use velo_datasource_core::DataSourceUri;

    use super::*;

    #[test]
    fn options_from_uri() {
        let c = DataSourceUri::parse(
            "clickhouse://alice:s%40cret@ch.local:9123/analytics?table=events&order_by=ts,id",
        )
        .unwrap()
        .to_sink_config()
        .unwrap();
        let o = ClickHouseOptions::from_config(&c).unwrap();
        assert_eq!(o.base.as_str(), "http://ch.local:9123/");
        assert_eq!(
            (o.database.as_str(), o.table.as_str(), o.user.as_str()),
            ("analytics", "events", "alice")
        );
        assert_eq!(o.password.as_ref().map(Secret::expose), Some("s@cret"));
        assert_eq!(o.order_by, ["ts", "id"]);
        assert!(o.gzip, "compressed to another host");
        for (uri, gzip) in [
            ("clickhouse://127.0.0.1:8123/db?table=t", false),
            ("clickhouse://localhost/db?table=t", false),
            ("clickhouse://[::1]:8123/db?table=t", false),
            ("clickhouse://127.0.0.1/db?table=t&compression=gzip", true),
            ("clickhouse://ch.local/db?table=t&compression=none", false),
        ] {
            let c = DataSourceUri::parse(uri).unwrap().to_sink_config().unwrap();
            assert_eq!(
                ClickHouseOptions::from_config(&c).unwrap().gzip,
                gzip,
                "{uri}"
            );
        }
        assert!(
            !format!("{o:?}").contains("s@cret"),
            "the password stays out of Debug"
        );
        assert_eq!(o.target(), "ch.local:9123/analytics.events");
    }

    #[test]
    fn quoting_and_codes() {
        assert_eq!(quote("a`b"), "`a\\`b`");
        assert_eq!(
            exception_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist."),
            Some(60)
        );
        assert_eq!(exception_code("something else"), None);
    }
}
