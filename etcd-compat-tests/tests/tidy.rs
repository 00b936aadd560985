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

/// Every package each workspace crate links (normal and build dependencies, transitively; dev
/// dependencies left out), by package name, from `cargo metadata`.
fn linked() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id"),
                p["name"].as_str().expect("name"),
            )
        })
        .collect();
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve") {
        let id = node["id"].as_str().expect("id");
        let linked = node["deps"].as_array().expect("deps").iter().filter(|d| {
            d["dep_kinds"]
                .as_array()
                .expect("kinds")
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"))
        });
        deps.insert(
            id,
            linked.map(|d| d["pkg"].as_str().expect("pkg")).collect(),
        );
    }
    let mut out = BTreeMap::new();
    for member in meta["workspace_members"].as_array().expect("members") {
        let start = member.as_str().expect("member");
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(id) = todo.pop() {
            for d in deps.get(id).into_iter().flatten() {
                if seen.insert(*d) {
                    todo.push(d);
                }
            }
        }
        out.insert(
            name_of[start].to_string(),
            seen.iter().map(|id| name_of[id].to_string()).collect(),
        );
    }
    out
}

#[test]
fn dependency_directions() {
    let linked = linked();
    let rules: [(&str, &[&str], &str); 6] = [
        (
            "mvcc",
            &[
                "tokio",
                "tonic",
                "prost",
                "openraft",
                "etcd-api",
                "raft",
                "replication",
                "server",
            ],
            "mvcc is synchronous storage: no runtime, no network, none of our upper layers",
        ),
        (
            "raft",
            &["mvcc", "etcd-api", "replication", "server", "witness"],
            "the raft layer carries opaque payloads: no key-value data, none of etcd's API",
        ),
        (
            "witness",
            &["mvcc", "etcd-api", "replication", "server"],
            "the witness holds no key-value data and links none of etcd's API",
        ),
        (
            "replication",
            &["server"],
            "replication is below the server",
        ),
        (
            "ctl",
            &["raft", "replication", "server", "openraft"],
            "ctl talks to members over the API only; its offline restore uses etcd-db and mvcc",
        ),
        (
            "etcd-api",
            &["mvcc", "raft", "replication", "server", "openraft"],
            "etcd-api is the wire contract, no logic",
        ),
    ];
    for (krate, banned, why) in rules {
        let links = linked
            .get(krate)
            .unwrap_or_else(|| panic!("no crate {krate}"));
        let found: Vec<&&str> = banned.iter().filter(|b| links.contains(**b)).collect();
        assert!(found.is_empty(), "{krate} links {found:?} ({why})");
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
