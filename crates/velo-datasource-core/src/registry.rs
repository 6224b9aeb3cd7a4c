//! Finding connectors by URI scheme.
//!
//! A connector crate registers itself once:
//!
//! ```ignore
//! velo_datasource_core::inventory::submit! {
//!     velo_datasource_core::SourcePlugin {
//!         name: "file",
//!         description: "Local files: CSV, JSON Lines, JSON arrays",
//!         schemes: &["file"],
//!         create: || Box::new(FileDataSource::default()),
//!     }
//! }
//! ```
//!
//! and [`DataSourceRegistry::with_plugins`] finds every linked plugin. A
//! binary that links a connector crate without naming it may have it dropped
//! by the linker: name each one once (`use velo_file as _;`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{DataSourceUri, SinkConfig, SourceConfig};
use crate::error::{Error, Result};
use crate::traits::{DataSink, DataSource, SinkMetadata, SourceMetadata};

/// A source connector that registers itself with `inventory::submit!`.
#[derive(Debug)]
pub struct SourcePlugin {
    /// Connector name, e.g. `file`.
    pub name: &'static str,
    /// One line for `velo connectors`.
    pub description: &'static str,
    /// URI schemes it handles (also YAML `type` values).
    pub schemes: &'static [&'static str],
    /// A new, uninitialized source. `metadata()` must work before `initialize`.
    pub create: fn() -> Box<dyn DataSource>,
}

/// A sink connector that registers itself with `inventory::submit!`.
#[derive(Debug)]
pub struct SinkPlugin {
    /// Connector name.
    pub name: &'static str,
    /// One line for `velo connectors`.
    pub description: &'static str,
    /// URI schemes it handles.
    pub schemes: &'static [&'static str],
    /// A new, uninitialized sink. `metadata()` must work before `initialize`.
    pub create: fn() -> Box<dyn DataSink>,
}

inventory::collect!(SourcePlugin);
inventory::collect!(SinkPlugin);

type SourceFactory = Arc<dyn Fn(&str) -> Result<Box<dyn DataSource>> + Send + Sync>;
type SinkFactory = Arc<dyn Fn(&str) -> Result<Box<dyn DataSink>> + Send + Sync>;

/// One registered connector, as `velo connectors` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorInfo {
    /// Connector name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Schemes it handles.
    pub schemes: Vec<String>,
    /// Source capabilities, if it is a source.
    pub source: Option<SourceMetadata>,
    /// Sink capabilities, if it is a sink.
    pub sink: Option<SinkMetadata>,
}

/// Source and sink factories by scheme.
#[derive(Clone, Default)]
pub struct DataSourceRegistry {
    sources: BTreeMap<String, SourceFactory>,
    sinks: BTreeMap<String, SinkFactory>,
    infos: BTreeMap<String, ConnectorInfo>,
}

impl fmt::Debug for DataSourceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataSourceRegistry")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl DataSourceRegistry {
    /// An empty registry, for tests and embedding.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry of every plugin linked into the program.
    pub fn with_plugins() -> Self {
        let mut registry = Self::new();
        for plugin in inventory::iter::<SourcePlugin> {
            let create = plugin.create;
            for scheme in plugin.schemes {
                registry
                    .sources
                    .insert((*scheme).to_owned(), Arc::new(move |_| Ok(create())));
            }
            let info = registry.info_entry(plugin.name, plugin.description, plugin.schemes);
            info.source = Some(create().metadata());
        }
        for plugin in inventory::iter::<SinkPlugin> {
            let create = plugin.create;
            for scheme in plugin.schemes {
                registry
                    .sinks
                    .insert((*scheme).to_owned(), Arc::new(move |_| Ok(create())));
            }
            let info = registry.info_entry(plugin.name, plugin.description, plugin.schemes);
            info.sink = Some(create().metadata());
        }
        registry
    }

    fn info_entry(
        &mut self,
        name: &str,
        description: &str,
        schemes: &[&str],
    ) -> &mut ConnectorInfo {
        let info = self
            .infos
            .entry(name.to_owned())
            .or_insert_with(|| ConnectorInfo {
                name: name.to_owned(),
                description: description.to_owned(),
                schemes: Vec::new(),
                source: None,
                sink: None,
            });
        for s in schemes {
            if !info.schemes.iter().any(|x| x == s) {
                info.schemes.push((*s).to_owned());
            }
        }
        info
    }

    /// Registers a source factory for `scheme`; it receives the full URI.
    pub fn register_source<F>(&mut self, scheme: &str, factory: F)
    where
        F: Fn(&str) -> Result<Box<dyn DataSource>> + Send + Sync + 'static,
    {
        self.sources
            .insert(scheme.to_ascii_lowercase(), Arc::new(factory));
        self.info_entry(scheme, "registered by the application", &[scheme]);
    }

    /// Registers a sink factory for `scheme`; it receives the full URI.
    pub fn register_sink<F>(&mut self, scheme: &str, factory: F)
    where
        F: Fn(&str) -> Result<Box<dyn DataSink>> + Send + Sync + 'static,
    {
        self.sinks
            .insert(scheme.to_ascii_lowercase(), Arc::new(factory));
        self.info_entry(scheme, "registered by the application", &[scheme]);
    }

    /// Schemes that have a source.
    pub fn source_schemes(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// Schemes that have a sink.
    pub fn sink_schemes(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    /// Every registered connector, by name.
    pub fn connectors(&self) -> Vec<ConnectorInfo> {
        self.infos.values().cloned().collect()
    }

    /// An initialized source for `uri`.
    pub async fn create_source(&self, uri: &str) -> Result<Box<dyn DataSource>> {
        let parsed = DataSourceUri::parse(uri)?;
        let factory = self.source_factory(parsed.scheme())?;
        let config = parsed.to_source_config()?;
        let mut source = factory(uri)?;
        source.initialize(config).await?;
        Ok(source)
    }

    /// An initialized source for a config (e.g. from YAML).
    pub async fn create_source_from_config(
        &self,
        config: SourceConfig,
    ) -> Result<Box<dyn DataSource>> {
        let factory = self.source_factory(config.scheme())?;
        let uri = format!("{}://", config.scheme());
        let mut source = factory(&uri)?;
        source.initialize(config).await?;
        Ok(source)
    }

    /// An initialized sink for `uri`.
    pub async fn create_sink(&self, uri: &str) -> Result<Box<dyn DataSink>> {
        let parsed = DataSourceUri::parse(uri)?;
        let factory = self.sink_factory(parsed.scheme())?;
        let config = parsed.to_sink_config()?;
        let mut sink = factory(uri)?;
        sink.initialize(config).await?;
        Ok(sink)
    }

    /// An initialized sink for a config (e.g. from YAML).
    pub async fn create_sink_from_config(&self, config: SinkConfig) -> Result<Box<dyn DataSink>> {
        let factory = self.sink_factory(config.scheme())?;
        let uri = format!("{}://", config.scheme());
        let mut sink = factory(&uri)?;
        sink.initialize(config).await?;
        Ok(sink)
    }

    fn source_factory(&self, scheme: &str) -> Result<&SourceFactory> {
        self.sources
            .get(scheme)
            .ok_or_else(|| Error::UnknownScheme {
                scheme: scheme.to_owned(),
                registered: join_or_none(self.sources.keys()),
            })
    }

    fn sink_factory(&self, scheme: &str) -> Result<&SinkFactory> {
        self.sinks.get(scheme).ok_or_else(|| Error::UnknownScheme {
            scheme: scheme.to_owned(),
            registered: join_or_none(self.sinks.keys()),
        })
    }
}

fn join_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}
