//! `plexus bench` end to end: sink, engine and load generator in the binary, a small run.
//! Only correctness is asserted; timings depend on the machine.

use std::process::Command;

#[test]
fn a_small_bench_run_delivers_every_message_and_reports_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["bench", "--messages", "400", "--connections", "4", "--json"])
        .output()
        .expect("plexus runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON object: {e}\n{stderr}"));

    assert_eq!(report["mode"], "engine");
    assert_eq!(report["messages"], 400);
    assert_eq!(report["connections"], 4);
    assert_eq!(report["acked"], 400);
    assert_eq!(report["delivered"], 400);
    assert_eq!(report["missing"], 0);
    assert_eq!(report["non_aa_acks"], 0);
    assert_eq!(
        report["unmapped"], 0,
        "the chain mapped SCH-25 of every delivery"
    );
    assert!(report["cores"].as_u64().is_some_and(|n| n >= 1), "{report}");

    let positive = |key: &str| {
        let value = report.pointer(key).and_then(serde_json::Value::as_f64);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{key} = {value:?} in {report}"
        );
    };
    for key in [
        "/wall_seconds",
        "/accepted_per_second",
        "/delivered_per_second",
        "/ack_latency_ms/p50",
        "/ack_latency_ms/p99",
        "/ack_latency_ms/max",
        "/end_to_end_ms/p50",
        "/end_to_end_ms/p99",
        "/end_to_end_ms/max",
    ] {
        positive(key);
    }
}
