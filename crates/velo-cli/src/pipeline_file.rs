//! `velo run pipeline.yaml`: `source:` and `sink:` blocks in the guide's YAML
//! keys, plus `checkpoint:` and `errors:`.

use std::path::{Path, PathBuf};

use serde_norway::Value;
use velo_datasource_core::{ConnectorConfig, Error, Result};

/// A parsed pipeline file.
#[derive(Debug)]
pub(crate) struct PipelineFile {
    pub(crate) source: ConnectorConfig,
    pub(crate) sink: ConnectorConfig,
    pub(crate) checkpoint_dir: Option<PathBuf>,
    pub(crate) errors: Option<String>,
    pub(crate) dead_letter: Option<PathBuf>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) limit: Option<u64>,
    /// For the checkpoint key: the blocks as written.
    pub(crate) identity: (String, String),
}

const TOP_KEYS: &[&str] = &[
    "source",
    "sink",
    "checkpoint",
    "errors",
    "batch_size",
    "limit",
    "name",
];

pub(crate) fn load(path: &Path) -> Result<PipelineFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let what = path.display().to_string();
    let doc: Value = serde_norway::from_str(&text).map_err(|e| Error::Syntax {
        what: what.clone(),
        message: e.to_string(),
    })?;
    let Value::Mapping(map) = &doc else {
        return Err(Error::Syntax {
            what,
            message: "expected a mapping with `source:` and `sink:`".into(),
        });
    };
    for key in map.keys() {
        let k = key.as_str().unwrap_or_default();
        if !TOP_KEYS.contains(&k) {
            return Err(Error::UnknownConfigKey {
                key: k.to_owned(),
                context: format!("pipeline file {what}"),
                hint: None,
            });
        }
    }
    let block = |name: &str| -> Result<&Value> {
        doc.get(name).ok_or_else(|| Error::MissingConfigKey {
            key: name.into(),
            reason: format!("{what} needs a `{name}:` block"),
        })
    };
    let source = ConnectorConfig::from_yaml_value(block("source")?, "source")?;
    let sink = ConnectorConfig::from_yaml_value(block("sink")?, "sink")?;
    let identity = (
        serde_norway::to_string(block("source")?).unwrap_or_default(),
        serde_norway::to_string(block("sink")?).unwrap_or_default(),
    );
    let mut checkpoint_dir = None;
    if let Some(cp) = doc.get("checkpoint") {
        for (k, v) in cp.as_mapping().into_iter().flatten() {
            match k.as_str().unwrap_or_default() {
                "dir" | "checkpoint_dir" => checkpoint_dir = v.as_str().map(PathBuf::from),
                other => {
                    return Err(Error::UnknownConfigKey {
                        key: format!("checkpoint.{other}"),
                        context: what.clone(),
                        hint: Some("checkpoint.dir".into()),
                    });
                }
            }
        }
    }
    let (mut errors, mut dead_letter) = (None, None);
    match doc.get("errors") {
        None => {}
        Some(Value::String(policy)) => errors = Some(policy.clone()),
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                match k.as_str().unwrap_or_default() {
                    "policy" => errors = v.as_str().map(str::to_owned),
                    "dead_letter" => dead_letter = v.as_str().map(PathBuf::from),
                    other => {
                        return Err(Error::UnknownConfigKey {
                            key: format!("errors.{other}"),
                            context: what.clone(),
                            hint: Some("errors.policy".into()),
                        });
                    }
                }
            }
        }
        Some(_) => {
            return Err(Error::invalid_value(
                "errors",
                "?",
                "expected a policy (fail, skip, dead_letter) or a mapping with `policy:` and `dead_letter:`",
            ));
        }
    }
    let number = |key: &str| -> Result<Option<u64>> {
        match doc.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::invalid_value(key, format!("{v:?}"), "expected a whole number")
            }),
        }
    };
    Ok(PipelineFile {
        source,
        sink,
        checkpoint_dir,
        errors,
        dead_letter,
        batch_size: number("batch_size")?.map(|n| n as usize),
        limit: number("limit")?,
        identity,
    })
}
