//! Human and JSON output of `schema`, `connectors` and `offsets`.

use std::fmt::Write as _;

use velo_datasource_core::{Checkpoint, ConnectorInfo, Schema};

pub(crate) fn schema_table(schema: &Schema) -> String {
    schema.to_string()
}

pub(crate) fn connectors_table(connectors: &[ConnectorInfo]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<18} {:<12} {:<10} {:<6} CAPABILITIES",
        "NAME", "SCHEMES", "ROLE", "STREAMING", "BATCH"
    );
    for c in connectors {
        let role = match (&c.source, &c.sink) {
            (Some(_), Some(_)) => "source+sink",
            (Some(_), None) => "source",
            (None, Some(_)) => "sink",
            (None, None) => "-",
        };
        let yes = |b: bool| if b { "yes" } else { "no" };
        let (streaming, batch) = c.source.as_ref().map_or(("-", "-"), |m| {
            (yes(m.supports_streaming), yes(m.supports_batch))
        });
        let mut caps: Vec<&str> = c
            .source
            .iter()
            .flat_map(|m| m.capabilities.iter())
            .map(String::as_str)
            .collect();
        for cap in c.sink.iter().flat_map(|m| m.capabilities.iter()) {
            if !caps.contains(&cap.as_str()) {
                caps.push(cap);
            }
        }
        let schemes: Vec<String> = c.schemes.iter().map(|s| format!("{s}://")).collect();
        let _ = writeln!(
            out,
            "{:<10} {:<18} {:<12} {:<10} {:<6} {}",
            c.name,
            schemes.join(","),
            role,
            streaming,
            batch,
            caps.join(", ")
        );
        let _ = writeln!(out, "{:<10} {}", "", c.description);
    }
    out
}

pub(crate) fn offsets_text(entries: &[(String, Checkpoint)]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no checkpoints\n");
    }
    for (key, cp) in entries {
        let _ = writeln!(
            out,
            "{key}: {} records from {}, saved {}",
            cp.records,
            cp.source,
            cp.saved_at.to_rfc3339()
        );
        for offset in &cp.position.offsets {
            let _ = writeln!(out, "  {}", offset.describe());
        }
    }
    out
}
