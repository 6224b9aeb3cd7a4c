//! The one error type of the connector API.
//!
//! Every variant says *what* went wrong and *where* (a config key, a file and
//! byte offset, a partition and offset, an LSN), and [`Error::is_retryable`]
//! tells a runner whether trying again can help.

use std::path::PathBuf;

/// Result alias used throughout the connector API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error kept inside [`Error`] variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors raised by sources, sinks, configs, registries and checkpoint stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration key that no part of the config understands.
    #[error("unknown configuration key `{key}` for {context}{}", hint_suffix(.hint))]
    UnknownConfigKey {
        /// The key as the user wrote it.
        key: String,
        /// What was being configured, e.g. `file source`.
        context: String,
        /// A known key that is close to the unknown one, if any.
        hint: Option<String>,
    },
    /// A configuration key whose value cannot be used.
    #[error("invalid value `{value}` for configuration key `{key}`: {reason}")]
    InvalidConfigValue {
        /// The key.
        key: String,
        /// The value, already redacted when the key holds a secret.
        value: String,
        /// Why it was rejected and what is expected.
        reason: String,
    },
    /// A required configuration key is absent.
    #[error("missing configuration key `{key}`: {reason}")]
    MissingConfigKey {
        /// The key.
        key: String,
        /// What it is needed for.
        reason: String,
    },
    /// A URI that cannot be parsed or does not fit its scheme.
    #[error("invalid URI `{uri}`: {reason}")]
    InvalidUri {
        /// The URI with secrets redacted.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A config file or document that cannot be parsed at all.
    #[error("cannot parse {what}: {message}")]
    Syntax {
        /// What was being parsed, e.g. `pipeline.yaml`.
        what: String,
        /// The parser's message, with line and column where it gives them.
        message: String,
    },
    /// No registered plugin handles the URI scheme.
    #[error("no connector registered for scheme `{scheme}://` (registered: {registered})")]
    UnknownScheme {
        /// The scheme asked for.
        scheme: String,
        /// A comma-separated list of the schemes that are registered.
        registered: String,
    },
    /// Connecting to or talking with an external service failed.
    #[error("connection to {endpoint} failed: {message}")]
    Connection {
        /// The endpoint, with secrets redacted.
        endpoint: String,
        /// What happened.
        message: String,
        /// Whether trying again later may succeed.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A local I/O operation failed.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be decoded at a known position.
    #[error("cannot decode record at {location}: {message}")]
    Decode {
        /// Where the bad record is: `file.csv, byte 1024 (line 17)`, `orders/3@42`, `LSN 0/16B3748`.
        location: String,
        /// What is wrong with it.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A record could not be encoded for a sink.
    #[error("cannot encode record for {target}: {message}")]
    Encode {
        /// The sink target.
        target: String,
        /// What is wrong with it.
        message: String,
    },
    /// A record does not fit the schema it is checked against.
    #[error("schema mismatch: {0}")]
    Schema(String),
    /// An offset or position that cannot be used with this reader.
    #[error("invalid offset: {0}")]
    Offset(String),
    /// A checkpoint that cannot be read, parsed or written.
    #[error("checkpoint {}: {message}", .path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong and what to do about it.
        message: String,
    },
    /// An operation ran out of time.
    #[error("timed out after {elapsed:?} while {operation}")]
    Timeout {
        /// What was being waited for.
        operation: String,
        /// How long was waited.
        elapsed: std::time::Duration,
    },
    /// The connector does not support this operation.
    #[error("{operation} is not supported by {connector}")]
    Unsupported {
        /// The operation asked for.
        operation: String,
        /// The connector.
        connector: String,
    },
    /// The component was used before `initialize` or after it was closed.
    #[error("{0}")]
    State(String),
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!(" (did you mean `{h}`?)"),
        None => String::new(),
    }
}

impl Error {
    /// Whether retrying the same operation later can succeed.
    ///
    /// Connection errors say so themselves; timeouts and transient I/O
    /// (interrupted, would-block, timed out) are retryable; config, decode,
    /// schema and checkpoint errors are not: they need a change by a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connection { retryable, .. } => *retryable,
            Error::Timeout { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Decode`] without an underlying error.
    pub fn decode(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Decode {
            location: location.into(),
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::InvalidConfigValue`].
    pub fn invalid_value(
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        let key = key.into();
        let value = if crate::secret::is_secret_key(&key) {
            crate::secret::REDACTED.to_owned()
        } else {
            value.into()
        };
        Error::InvalidConfigValue {
            key,
            value,
            reason: reason.into(),
        }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(operation: impl Into<String>, connector: impl Into<String>) -> Self {
        Error::Unsupported {
            operation: operation.into(),
            connector: connector.into(),
        }
    }

    /// An [`Error::Connection`] that may succeed on retry.
    pub fn connection(
        endpoint: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Connection {
            endpoint: endpoint.into(),
            message: message.into(),
            retryable: true,
            source: Some(source.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(
            Error::Timeout {
                operation: "read".into(),
                elapsed: std::time::Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(!Error::Schema("x".into()).is_retryable());
        assert!(Error::connection("localhost:9092", "refused", "refused").is_retryable());
        let not_found = Error::io("/x", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!not_found.is_retryable());
    }

    #[test]
    fn messages_name_the_place() {
        let e = Error::UnknownConfigKey {
            key: "delimter".into(),
            context: "file source".into(),
            hint: Some("delimiter".into()),
        };
        assert_eq!(
            e.to_string(),
            "unknown configuration key `delimter` for file source (did you mean `delimiter`?)"
        );
        let e = Error::decode(
            "trades.csv, byte 1024 (line 17)",
            "expected 3 fields, found 2",
        );
        assert!(e.to_string().contains("byte 1024"));
    }

    #[test]
    fn secret_values_are_not_echoed() {
        let e = Error::invalid_value("password", "hunter2", "too short");
        assert!(!e.to_string().contains("hunter2"));
    }
}
