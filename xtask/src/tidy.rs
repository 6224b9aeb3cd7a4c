//! Repository hygiene that a reviewer would otherwise point out.

use std::path::Path;
use std::process::ExitCode;

use crate::{Result, project_root};

pub(crate) fn run() -> Result<ExitCode> {
    let problems = check(&project_root())?;
    if problems.is_empty() {
        eprintln!("tidy: ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Every problem found, one line each.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let ws = read_toml(&root.join("Cargo.toml"))?;
    let deps = ws
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    for (name, spec) in &deps {
        if let Some(t) = spec.as_table()
            && t.contains_key("path")
            && !t.contains_key("version")
        {
            problems.push(format!(
                "workspace dependency `{name}` has a path but no version: it could not be published"
            ));
        }
    }
    let crates = root.join("crates");
    let mut dirs: Vec<_> = std::fs::read_dir(&crates)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let manifest = dir.join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        let m = read_toml(&manifest)?;
        let package = m
            .get("package")
            .and_then(|p| p.as_table())
            .cloned()
            .unwrap_or_default();
        let name = package
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_owned();
        if package.get("publish").and_then(|p| p.as_bool()) == Some(false) {
            continue;
        }
        for key in [
            "description",
            "readme",
            "license",
            "repository",
            "keywords",
            "categories",
        ] {
            if !package.contains_key(key) {
                problems.push(format!("{name}: [package] lacks `{key}`"));
            }
        }
        if !dir.join("README.md").exists() {
            problems.push(format!("{name}: no README.md"));
        }
        if m.get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool())
            != Some(true)
        {
            problems.push(format!("{name}: lints are not `workspace = true`"));
        }
        // Versions are set once, in the workspace.
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            for (dep, spec) in m
                .get(section)
                .and_then(|d| d.as_table())
                .into_iter()
                .flatten()
            {
                let inherits = spec
                    .as_table()
                    .is_some_and(|t| t.get("workspace").and_then(|w| w.as_bool()) == Some(true));
                if !inherits {
                    problems.push(format!(
                        "{name}: {section}.{dep} does not use `workspace = true`"
                    ));
                }
            }
        }
        // A connector depends on core and its client library, never on another connector.
        if name != "velo-cli" && name != "velo-datasource-core" {
            for (dep, _) in m
                .get("dependencies")
                .and_then(|d| d.as_table())
                .into_iter()
                .flatten()
            {
                if dep.starts_with("velo-") && dep != "velo-datasource-core" {
                    problems.push(format!("{name} depends on another connector, {dep}"));
                }
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_repository_is_tidy() {
        let problems = super::check(&crate::project_root()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
