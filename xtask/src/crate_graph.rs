//! `check-crate-graph`: enforces the workspace's dependency direction.

use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Each sconce package and the workspace packages it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("sconce-text", &[]),
    ("sconce-protocol", &[]),
    ("sconce-kernels", &[]),
    ("sconce-modeling", &["sconce-kernels", "sconce-text"]),
    ("sconce-engine", &["sconce-kernels", "sconce-modeling", "sconce-text"]),
    ("sconce-gateway", &["sconce-protocol", "sconce-text"]),
    (
        "sconce-server",
        &["sconce-protocol", "sconce-text", "sconce-modeling", "sconce-engine", "sconce-gateway", "sconce-kernels"],
    ),
];

/// Packages that must not depend on any `candle-*` crate.
const NO_CANDLE: &[&str] = &["sconce-protocol", "sconce-text", "sconce-gateway"];

/// One dependency edge as listed by `cargo metadata`.
struct Dep {
    name: String,
    kind: String,
}

struct Package {
    name: String,
    deps: Vec<Dep>,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v[key].as_str().ok_or_else(|| anyhow!("metadata: missing {key}"))
}

fn parse_dep(d: &Value) -> Result<Dep> {
    let name = str_field(d, "name")?.to_owned();
    let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
    Ok(Dep { name, kind })
}

fn parse_package(p: &Value) -> Result<Package> {
    let name = str_field(p, "name")?.to_owned();
    let deps = p["dependencies"].as_array().map_or(&[][..], Vec::as_slice);
    let deps = deps.iter().map(parse_dep).collect::<Result<_>>()?;
    Ok(Package { name, deps })
}

fn parse_packages(metadata: &Value) -> Result<Vec<Package>> {
    let pkgs = metadata["packages"].as_array().ok_or_else(|| anyhow!("metadata: no packages array"))?;
    pkgs.iter().map(parse_package).collect()
}

/// Sconce packages are ours, whether or not they exist yet.
fn is_ours(name: &str) -> bool {
    name.starts_with("sconce-")
}

fn check_package(p: &Package, out: &mut Vec<String>) {
    let Some((_, allowed)) = ALLOWED.iter().find(|(n, _)| *n == p.name) else {
        out.push(format!("{}: not in the allowed-edge table", p.name));
        return;
    };
    let no_candle = NO_CANDLE.contains(&p.name.as_str());
    for d in &p.deps {
        let edge = format!("{} -> {} ({})", p.name, d.name, d.kind);
        if is_ours(&d.name) && !allowed.contains(&d.name.as_str()) {
            out.push(format!("{edge}: not an allowed workspace edge"));
        }
        if no_candle && d.name.starts_with("candle-") {
            out.push(format!("{edge}: must not depend on candle"));
        }
    }
}

/// All rule violations in `cargo metadata --no-deps` output.
pub fn violations(metadata: &Value) -> Result<Vec<String>> {
    let pkgs = parse_packages(metadata)?;
    let mut out = Vec::new();
    for p in pkgs.iter().filter(|p| is_ours(&p.name)) {
        check_package(p, &mut out);
    }
    Ok(out)
}

fn cargo_metadata(root: &Path) -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        bail!("cargo metadata failed: {err}");
    }
    serde_json::from_slice(&output.stdout).context("parsing cargo metadata")
}

/// Runs the check on the workspace at `root`; errors if any rule is broken.
pub fn run(root: &Path) -> Result<()> {
    let found = violations(&cargo_metadata(root)?)?;
    if found.is_empty() {
        println!("crate graph OK");
        return Ok(());
    }
    for v in &found {
        eprintln!("violation: {v}");
    }
    bail!("{} crate-graph violation(s)", found.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(pkgs: &[(&str, &[&str])]) -> Value {
        let pkgs: Vec<Value> = pkgs
            .iter()
            .map(|(name, deps)| {
                let deps: Vec<Value> = deps.iter().map(|d| json!({"name": d})).collect();
                json!({"name": name, "dependencies": deps})
            })
            .collect();
        json!({ "packages": pkgs })
    }

    #[test]
    fn allowed_graph_passes() {
        let m = meta(&[
            ("sconce-text", &["tokenizers"]),
            ("sconce-kernels", &["candle-core"]),
            ("sconce-modeling", &["sconce-kernels", "sconce-text"]),
            ("sconce-engine", &["sconce-modeling", "candle-core"]),
            ("xtask", &["candle-core"]),
        ]);
        assert!(violations(&m).unwrap().is_empty());
    }

    #[test]
    fn upward_edge_is_reported() {
        let m = meta(&[("sconce-engine", &[]), ("sconce-modeling", &["sconce-engine"])]);
        let v = violations(&m).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("sconce-modeling -> sconce-engine"));
    }

    #[test]
    fn candle_in_gateway_is_reported() {
        let m = meta(&[("sconce-engine", &[]), ("sconce-gateway", &["candle-nn", "sconce-engine"])]);
        assert_eq!(violations(&m).unwrap().len(), 2);
    }

    #[test]
    fn unknown_sconce_package_is_reported() {
        let m = meta(&[("sconce-mystery", &[])]);
        assert_eq!(violations(&m).unwrap().len(), 1);
    }
}
