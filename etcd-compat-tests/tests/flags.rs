//! Every flag etcd 3.5.1 and 3.4.23 list in `--help` is known to tandem: honoured, accepted with
//! a logged note that it has no effect (bbolt and Go tuning), or refused with tandem's own "not
//! supported" message — never clap's "unexpected argument", so an etcd unit file or manifest
//! starts tandem or says plainly what to change.

use std::process::Command;

use etcd_compat_tests::*;

/// The flags an etcd binary lists in its help.
fn etcd_flags(bin: &std::path::Path) -> Vec<String> {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .expect("etcd --help");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let mut flags: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|f| !f.is_empty())
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// What tandem prints when started with `args` and a setting that stops it right after parsing.
fn tandem_says(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(tandem_bin())
        .args(args)
        .arg(format!("--data-dir={}", dir.path().join("d").display()))
        .arg("--initial-cluster-state=stop-here")
        .output()
        .expect("tandem");
    String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
}

#[test]
fn every_etcd_flag_is_known() {
    for (version, bin) in [
        ("3.5.1", etcd_bin(Kind::Etcd35)),
        ("3.4.23", etcd_bin(Kind::Etcd34)),
    ] {
        let flags = etcd_flags(&bin);
        assert!(
            flags.len() > 60,
            "etcd {version} lists {} flags",
            flags.len()
        );
        let unknown: Vec<&String> = flags
            .iter()
            .filter(|f| *f != "help" && *f != "version")
            .filter(|f| tandem_says(&[&format!("--{f}=x")]).contains("unexpected argument"))
            .collect();
        assert!(
            unknown.is_empty(),
            "etcd {version} flags tandem does not know: {unknown:?}"
        );
    }
}

#[test]
fn the_flags_the_issue_names_are_honoured_or_refused_by_name() {
    let stopped = |args: &[&str]| tandem_says(args).contains("--initial-cluster-state=stop-here");
    assert!(stopped(&["--metrics=extensive"]), "--metrics accepted");
    assert!(stopped(&["--metrics=basic"]));
    assert!(tandem_says(&["--metrics=everything"]).contains("unknown metrics type"));
    assert!(stopped(&["--experimental-initial-corrupt-check=true"]));
    assert!(stopped(&[
        "--grpc-keepalive-interval=30s",
        "--grpc-keepalive-timeout=5s"
    ]));
    let refused = tandem_says(&["--unsafe-no-fsync"]);
    assert!(
        refused.contains("--unsafe-no-fsync (ETCD_UNSAFE_NO_FSYNC) is not supported by tandem"),
        "{refused}"
    );
    // A flag given twice takes its last value, as Go's flag package does.
    assert!(stopped(&["--name=a", "--name=b"]));
}
