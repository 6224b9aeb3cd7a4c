//! Keeping passwords, keys and tokens out of logs and error messages.

use std::fmt;

/// What stands in for a secret in `Debug`, `Display` and logs.
pub const REDACTED: &str = "***";

/// Fragments that mark a config key or URI parameter as secret.
const SECRET_KEY_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "access_key",
    "access.key",
    "private_key",
    "private.key",
    "api_key",
    "apikey",
    "credential",
    "sas",
    "session_key",
    "account_key",
    "sasl.jaas",
];

/// Whether a config key or URI parameter holds a secret (by its name).
///
/// ```
/// use velo_datasource_core::secret::is_secret_key;
/// assert!(is_secret_key("sasl.password"));
/// assert!(is_secret_key("aws_secret_access_key"));
/// assert!(!is_secret_key("delimiter"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_FRAGMENTS.iter().any(|f| {
        if *f == "sas" {
            key == "sas" || key.ends_with("_sas") || key.starts_with("sas_")
        } else {
            key.contains(f)
        }
    })
}

/// A string that never shows itself in `Debug` or `Display`.
///
/// Call [`Secret::expose`] at the one place the real value is needed.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value: use it only to hand it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A copy of `uri` with the password and every secret query parameter replaced.
///
/// Strings that do not parse as URLs are returned with anything after `@` in
/// the authority hidden, so that a malformed URI in an error message cannot
/// leak a password either.
///
/// ```
/// use velo_datasource_core::secret::redact_uri;
/// assert_eq!(
///     redact_uri("postgresql://app:hunter2@db:5432/shop?sslmode=disable&password=x"),
///     "postgresql://app:***@db:5432/shop?sslmode=disable&password=***"
/// );
/// ```
pub fn redact_uri(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some(REDACTED));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_key(&k) {
                            REDACTED.to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            // `Url` percent-encodes `***` in the password; show it plainly.
            url.to_string()
                .replace("%2A%2A%2A", REDACTED)
                .replace("%2a%2a%2a", REDACTED)
        }
        Err(_) => match (uri.find("://"), uri.rfind('@')) {
            (Some(start), Some(at)) if at > start => {
                format!("{}://{}@{}", &uri[..start], REDACTED, &uri[at + 1..])
            }
            _ => uri.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redacts_password_and_params() {
        let r = redact_uri("kafka://u:pw@broker:9092/t?sasl.password=pw2&group.id=g");
        assert!(!r.contains("pw@") && !r.contains("pw2"), "{r}");
        assert!(r.contains("group.id=g"), "{r}");
    }

    #[test]
    fn redacts_unparseable_uris() {
        let r = redact_uri("postgresql://u:p w@[bad/db");
        assert!(!r.contains("p w"), "{r}");
    }

    #[test]
    fn uri_without_secret_is_unchanged() {
        assert_eq!(
            redact_uri("file:///data/a.csv?format=csv"),
            "file:///data/a.csv?format=csv"
        );
    }
}

/// A connection string or URL that shows itself with its password redacted.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ConnectionString(String);

impl ConnectionString {
    /// Wraps a connection string.
    pub fn new(value: impl Into<String>) -> Self {
        ConnectionString(value.into())
    }

    /// The real value, password included: hand it only to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value with secrets replaced, safe to log.
    pub fn redacted(&self) -> String {
        redact_uri(&self.0)
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}
