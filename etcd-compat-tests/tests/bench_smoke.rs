//! Smoke test of `tandem-ctl bench`: tiny totals of every workload against tandem must all
//! succeed and report what they did. Benchmark figures are never asserted.

use std::process::Command;

use etcd_compat_tests::*;

#[test]
fn bench_runs_every_workload() {
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let bin = tandem_bin().with_file_name("tandem-ctl");
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p ctl",
        bin.display()
    );
    for workload in [
        "put",
        "range",
        "range-serializable",
        "txn-put",
        "txn-mixed",
        "delete",
        "watch",
        "watch-latency",
        "lease-keepalive",
        "k8s",
    ] {
        let out = Command::new(&bin)
            .args([
                "bench",
                workload,
                "--endpoints",
                &tandem.endpoint(),
                "--clients",
                "4",
                "--conns",
                "2",
            ])
            .args(["--total", "200", "--key-space-size", "50", "--json"])
            .args(["--watchers", "6", "--streams", "2", "--rate", "2000"])
            .output()
            .expect("tandem-ctl");
        assert!(
            out.status.success(),
            "{workload}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
        assert_eq!(report["requests"], 200, "{workload}: {report}");
        assert_eq!(report["succeeded"], 200, "{workload}: {report}");
        assert_eq!(
            report["errors"],
            serde_json::json!({}),
            "{workload}: {report}"
        );
        // Watchers see every write that took effect (k8s: lease expiry may add deletes).
        if let Some(expected) = report.get("events_expected") {
            assert!(
                expected.as_u64().is_some_and(|e| e > 0),
                "{workload}: {report}"
            );
            assert!(
                report["events"].as_u64() >= expected.as_u64(),
                "{workload}: {report}"
            );
        }
        assert!(
            report["latency_ms"]["p99"]
                .as_f64()
                .is_some_and(|p| p > 0.0),
            "{workload}: {report}"
        );
    }
}
