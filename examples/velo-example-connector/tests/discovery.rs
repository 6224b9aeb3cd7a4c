//! This test crate never names a type of the connector: it only links it.
//! The plugins must still be found through `inventory` (see dtolnay/inventory#50
//! for why a binary must name a linked crate once: `use ... as _`).

use velo_datasource_core::{DataSourceRegistry, Error, SourcePosition};
use velo_example_connector as _;

#[tokio::test]
async fn plugins_are_discovered_by_linking() {
    let registry = DataSourceRegistry::with_plugins();
    assert!(registry.source_schemes().any(|s| s == "counter"));
    assert!(registry.sink_schemes().any(|s| s == "collect"));
    let infos = registry.connectors();
    let counter = infos
        .iter()
        .find(|c| c.name == "counter")
        .expect("counter listed");
    assert_eq!(
        counter.source.as_ref().map(|m| m.supports_batch),
        Some(true)
    );
    assert!(counter.sink.is_none());
}

#[tokio::test]
async fn read_through_registry_write_to_sink_and_resume() {
    let registry = DataSourceRegistry::with_plugins();
    let source = registry
        .create_source("counter://t?count=10&start=100")
        .await
        .unwrap();
    let sink = registry.create_sink("collect://discovery").await.unwrap();
    let mut reader = source.create_reader().await.unwrap();
    let mut writer = sink.create_writer().await.unwrap();

    let batch = reader.read_batch(4).await.unwrap();
    writer.write_batch(&batch).await.unwrap();
    writer.commit().await.unwrap();
    let saved: SourcePosition = reader.position().unwrap();
    let uncommitted = reader.read_batch(2).await.unwrap();
    writer.write_batch(&uncommitted).await.unwrap();
    writer.rollback().await.unwrap();

    let mut resumed = source.create_reader().await.unwrap();
    resumed.restore(saved).await.unwrap();
    let rest = resumed.read_batch(100).await.unwrap();
    writer.write_batch(&rest).await.unwrap();
    writer.commit().await.unwrap();
    assert!(!resumed.has_more().await.unwrap());

    let ns: Vec<i64> = velo_example_connector::collected("discovery")
        .iter()
        .map(|r| r.get("n").and_then(|v| v.as_i64()).unwrap())
        .collect();
    assert_eq!(ns, (100..110).collect::<Vec<_>>());
}

#[tokio::test]
async fn unknown_scheme_and_bad_keys_are_named() {
    let registry = DataSourceRegistry::with_plugins();
    let err = registry.create_source("nope://x").await.err().unwrap();
    assert!(matches!(err, Error::UnknownScheme { .. }));
    assert!(err.to_string().contains("counter"), "{err}");
    let err = registry
        .create_source("counter://t?cuont=3")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("`cuont`"), "{err}");
}
