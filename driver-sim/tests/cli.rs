//! The `peer-relay-sim` command line: help, the JSON report's schema, the SVG chart.

use std::path::PathBuf;
use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peer-relay-sim"))
}

/// The `--json --quiet` report of a run that must succeed.
fn report(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.args(["--json", "--quiet"]).output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// A fresh scratch directory for `test`, and a snapshot path in it.
fn scratch(test: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("peer-relay-sim-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("run.snapshot");
    (dir, snapshot)
}

#[test]
fn help_lists_the_options() {
    let out = sim().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--peers",
        "--messages",
        "--seed",
        "--loss",
        "--latency-ms",
        "--churn",
        "--servers",
        "--json",
        "--svg",
        "--strategy",
        "--bootstrap",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
}

#[test]
fn json_report_has_the_documented_keys_and_svg_is_written() {
    let svg = std::env::temp_dir().join(format!("peer-relay-sim-{}.svg", std::process::id()));
    let out = sim()
        .args([
            "--peers",
            "60",
            "--messages",
            "300",
            "--rate",
            "100",
            "--seed",
            "3",
        ])
        .args(["--json", "--quiet", "--svg"])
        .arg(&svg)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "peers",
        "seed",
        "sent",
        "delivered",
        "delivery_rate",
        "hops_mean",
        "hops_p50",
        "hops_p99",
        "hops_max",
        "transmissions_per_delivery",
        "links_mean",
        "links_max",
        "converge_ms",
        "events",
        "wall_ms",
        "events_per_sec",
        "peak_rss_bytes",
        "trace_hash",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}: {report}");
    }
    assert_eq!(report["peers"], 60);
    assert_eq!(report["seed"], 3);
    assert_eq!(report["sent"], 300);
    assert!(report["delivered"].as_u64().unwrap() > 250, "{report}");
    assert_eq!(report["trace_hash"].as_str().unwrap().len(), 16);
    assert!(
        report["heap_bytes"].as_u64().unwrap() > 0,
        "the binary meters its heap"
    );
    let chart = std::fs::read_to_string(&svg).expect("svg written");
    let _ = std::fs::remove_file(&svg);
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    assert!(chart.contains("<rect") && chart.contains("hops"));
}

#[test]
fn the_human_summary_has_a_hop_histogram() {
    let out = sim()
        .args([
            "--peers",
            "40",
            "--messages",
            "100",
            "--rate",
            "100",
            "--quiet",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("delivered") && text.contains("trace hash"),
        "{text}"
    );
    let bars = text.lines().filter(|l| l.contains('#')).count();
    assert!(bars >= 1, "no histogram bars:\n{text}");
}

#[test]
fn bad_options_are_refused_with_a_message() {
    for args in [
        &["--bootstrap", "mesh"][..],
        &["--servers", "many"],
        &["--loss", "2"],
    ] {
        let out = sim().args(args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

/// The report's fields that do not depend on the machine or the process.
fn deterministic(report: &serde_json::Value) -> serde_json::Value {
    let mut report = report.clone();
    let fields = report.as_object_mut().expect("an object");
    for key in [
        "wall_ms",
        "events_per_sec",
        "peak_rss_bytes",
        "heap_bytes",
        "heap_bytes_per_peer",
    ] {
        assert!(fields.remove(key).is_some(), "the report has {key}");
    }
    report
}

#[test]
fn a_run_paused_and_resumed_in_steps_reports_as_an_unbroken_one() {
    let (dir, snapshot) = scratch("resume");
    let run = [
        "--peers",
        "200",
        "--messages",
        "2000",
        "--seed",
        "5",
        "--loss",
        "0.01",
    ];
    let unbroken = report(sim().args(run));

    // A zero budget pauses at the first check, every 65,536 events.
    let pause = |cmd: &mut Command| {
        cmd.args(["--json", "--quiet", "--pause-after-s", "0", "--save"])
            .arg(&snapshot)
            .output()
            .unwrap()
    };
    let mut out = pause(sim().args(run));
    let mut steps = 0;
    while out.status.code() == Some(3) {
        assert!(out.stdout.is_empty(), "a paused run prints no report");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("go on with --resume"), "{said}");
        steps += 1;
        out = pause(sim().arg("--resume").arg(&snapshot));
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = unbroken["events"].as_u64().unwrap();
    assert_eq!(steps, events >> 16, "one pause per 65,536 events");
    let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deterministic(&resumed), deterministic(&unbroken));
    assert!(resumed["wall_ms"].as_u64().unwrap() > 0);

    // Not a snapshot: refused with a message.
    std::fs::write(&snapshot, b"garbage").unwrap();
    let out = sim().arg("--resume").arg(&snapshot).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a peer-relay-sim snapshot"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupted_run_with_a_save_file_is_saved_and_resumes_to_the_same_end() {
    let (dir, snapshot) = scratch("sigint");
    // About 6 s of work here: the signal at 1 s finds it running.
    let run = ["--peers", "2000", "--messages", "2000", "--seed", "9"];
    let child = sim()
        .args(run)
        .args(["--json", "--quiet", "--save"])
        .arg(&snapshot)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "SIGINT pauses and saves: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let resumed = report(sim().arg("--resume").arg(&snapshot));
    let unbroken = report(sim().args(run));
    assert_eq!(deterministic(&resumed), deterministic(&unbroken));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpointed_run_reports_as_an_unbroken_one_and_its_checkpoint_resumes() {
    let (dir, snapshot) = scratch("ckpt");
    let run = ["--peers", "200", "--messages", "2000", "--seed", "6"];
    let unbroken = report(sim().args(run));

    // A zero interval saves at every check (65,536 events) and goes on to the end.
    let out = sim()
        .args(run)
        .args(["--json", "--checkpoint-s", "0", "--save"])
        .arg(&snapshot)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let checkpoints = said.matches("peer-relay-sim: checkpoint at").count() as u64;
    let events = unbroken["events"].as_u64().unwrap();
    assert_eq!(checkpoints, events >> 16, "{said}");
    assert!(!said.contains("paused"), "{said}");
    let checkpointed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deterministic(&checkpointed), deterministic(&unbroken));

    // The last checkpoint goes on to the same end, as a crash after it would.
    let resumed = report(sim().arg("--resume").arg(&snapshot));
    assert_eq!(deterministic(&resumed), deterministic(&unbroken));

    // A checkpoint needs a file to save to.
    let out = sim().args(["--checkpoint-s", "60"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
