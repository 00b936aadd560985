//! Tidy checks that keep the architecture honest (docs/architecture.md): dependency directions,
//! a `//!` paragraph opening every source file, and no stubs left in production code.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    workspace_root()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The dependency names in a crate's `[dependencies]` section.
fn dependencies(krate: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml"))
        .expect("Cargo.toml");
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                out.push(
                    name.trim()
                        .split('.')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    }
    out
}

#[test]
fn dependency_directions() {
    let mvcc = dependencies("mvcc");
    for banned in [
        "tokio",
        "tonic",
        "prost",
        "openraft",
        "etcd-api",
        "replication",
        "server",
    ] {
        assert!(
            !mvcc.iter().any(|d| d == banned),
            "mvcc must not depend on {banned}"
        );
    }
    let replication = dependencies("replication");
    assert!(
        !replication.iter().any(|d| d == "server"),
        "replication must not depend on server"
    );
    let ctl = dependencies("ctl");
    for banned in ["mvcc", "replication", "server", "openraft"] {
        assert!(
            !ctl.iter().any(|d| d == banned),
            "ctl talks to members over the API only, not {banned}"
        );
    }
    let api = dependencies("etcd-api");
    for banned in ["mvcc", "replication", "server", "openraft"] {
        assert!(
            !api.iter().any(|d| d == banned),
            "etcd-api must not depend on {banned}"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_source_file_says_what_it_owns() {
    let mut files = Vec::new();
    for dir in [
        "crates",
        "etcd-compat-tests/src",
        "etcd-compat-tests/tests",
        "benches/src",
    ] {
        rust_files(&root().join(dir), &mut files);
    }
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !f.ends_with("build.rs"))
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! paragraph: {missing:?}"
    );
}

#[test]
fn no_stubs_in_production_code() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    let stubs: Vec<_> = files
        .iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "tests"))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.contains(concat!("todo", "!(")) || text.contains(concat!("unimplemented", "!("))
        })
        .collect();
    assert!(stubs.is_empty(), "stubs in {stubs:?}");
}
