//! [`Properties`]: a connector's string settings with typed, key-naming getters.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::secret::{REDACTED, is_secret_key};

/// String settings under canonical keys; secret values are hidden in `Debug`.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Sets `key`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(key.into(), value.into())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// Whether `key` is set.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// All `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// Keys that start with `prefix`, with the prefix removed (e.g. `kafka.` passthrough).
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .iter()
            .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_str())))
    }

    /// The value of `key`, or an error saying why it is needed.
    pub fn require(&self, key: &str, reason: &str) -> Result<String> {
        self.get(key)
            .map(str::to_owned)
            .ok_or_else(|| Error::MissingConfigKey {
                key: key.to_owned(),
                reason: reason.to_owned(),
            })
    }

    /// `key` parsed as `T`; the error names the key and the value.
    pub fn get_parsed<T>(&self, key: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => raw.trim().parse::<T>().map(Some).map_err(|e| {
                Error::invalid_value(
                    key,
                    raw,
                    format!("expected {}: {e}", short_type_name::<T>()),
                )
            }),
        }
    }

    /// `key` as a boolean (`true/false/yes/no/1/0/on/off`).
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Ok(Some(true)),
                "false" | "no" | "0" | "off" => Ok(Some(false)),
                _ => Err(Error::invalid_value(key, raw, "expected true or false")),
            },
        }
    }

    /// `key` as a duration (`100ms`, `5s`, `5m`, `1h 30m`).
    pub fn get_duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => parse_duration(raw)
                .map(Some)
                .map_err(|reason| Error::invalid_value(key, raw, reason)),
        }
    }
}

/// Parses `100ms`, `5s`, `30s`, `5m`, `1h 30m`; a bare number is refused
/// because its unit would be a guess.
///
/// ```
/// use std::time::Duration;
/// use velo_datasource_core::config::parse_duration;
/// assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
/// assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
/// assert!(parse_duration("5").unwrap_err().contains("unit"));
/// ```
pub fn parse_duration(raw: &str) -> std::result::Result<Duration, String> {
    let t = raw.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("a duration needs a unit, e.g. {t}ms or {t}s"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("expected a duration like 100ms, 5s or 5m: {e}"))
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    match full {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative whole number",
        "i64" | "i32" => "a whole number",
        "f64" | "f32" => "a number",
        _ => full.rsplit("::").next().unwrap_or(full),
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if is_secret_key(k) {
                    REDACTED
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Properties(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_name_the_key() {
        let p: Properties = [("n", "12"), ("bad", "x"), ("flag", "yes"), ("d", "30s")]
            .into_iter()
            .collect();
        assert_eq!(p.get_parsed::<usize>("n").unwrap(), Some(12));
        let e = p.get_parsed::<usize>("bad").unwrap_err().to_string();
        assert!(
            e.contains("`bad`") && e.contains("`x`") && e.contains("whole number"),
            "{e}"
        );
        assert_eq!(p.get_bool("flag").unwrap(), Some(true));
        assert_eq!(p.get_duration("d").unwrap(), Some(Duration::from_secs(30)));
        assert!(p.get_duration("n").is_err());
        assert_eq!(p.get_parsed::<usize>("absent").unwrap(), None);
    }

    #[test]
    fn debug_hides_secrets() {
        let p: Properties = [("secret_access_key", "abc123"), ("region", "eu")]
            .into_iter()
            .collect();
        let d = format!("{p:?}");
        assert!(!d.contains("abc123") && d.contains("eu"), "{d}");
    }
}
