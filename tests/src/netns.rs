//! Running a test inside a private network namespace.
//!
//! WebRTC stacks gather candidates on every interface and Chromium announces mDNS names by
//! multicast, so the WebRTC and browser tests must not run in the machine's own network. A
//! test calls [`inside`] first: in the normal test run that re-runs the same test binary,
//! filtered to that one test, under `unshare -n` with a fresh namespace (loopback up and one
//! veth pair, 10.213.0.1/24 - 10.213.0.2/24, with a default route so that multicast works),
//! waits for it and fails if it failed; inside the namespace it returns true and the test
//! body runs. Everything is built before (no registry access is needed inside).
//!
//! Needs root (or user namespaces) and `unshare` and `ip` on PATH. Under `CI=true` their
//! absence fails the test; elsewhere the test is skipped, loudly.

use std::io::Write;
use std::process::Command;

/// Set in the re-run test process: it is inside the namespace.
const INSIDE: &str = "PEER_RELAY_TEST_NETNS";

/// Sets the namespace's network up, then runs the command given as arguments.
const SETUP: &str = "set -e
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 10.213.0.1/24 dev v0
ip addr add 10.213.0.2/24 dev v1
ip link set v0 up
ip link set v1 up
ip route add default via 10.213.0.2 dev v0
exec \"$@\"";

/// Whether `CI=true`, where a missing prerequisite is a failure rather than a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports a missing prerequisite: a panic under CI, a visible skip message elsewhere.
/// Returns false (the caller skips).
pub fn missing(what: &str, problem: &str) -> bool {
    if under_ci() {
        panic!("{what} needs {problem} under CI");
    }
    // Written to the stderr handle itself: the test harness captures `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPING {what}: it needs {problem} !!!\n"
    );
    false
}

/// True when the caller is inside its private network namespace and should run its body.
/// Otherwise runs test `name` (the test function's path within its test binary) there and
/// returns false once it passed; panics with its output if it failed.
pub fn inside(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let probe = Command::new("unshare")
        .args(["-n", "sh", "-c", SETUP, "sh", "true"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return missing(
                name,
                &format!(
                    "a private network namespace (`unshare -n` and `ip`, as root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
        }
        Err(err) => return missing(name, &format!("`unshare` on PATH ({err})")),
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", SETUP, "sh"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run the test in a network namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed in its network namespace ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // The filter must have matched exactly this one test: never pass on nothing run.
    assert!(
        stdout.contains("1 passed"),
        "{name}: the namespaced run did not run the test:\n{stdout}"
    );
    if !stderr.trim().is_empty() {
        let _ = writeln!(std::io::stderr(), "{stderr}");
    }
    false
}

/// For a benchmark or tool binary: true when inside the namespace (run the work). Otherwise
/// runs this binary again with `args` in a fresh namespace, passes its output through, and
/// exits with its status (never returns).
pub fn reexec_inside(args: &[String]) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("this binary's path");
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", SETUP, "sh"])
        .arg(exe)
        .args(args)
        .env(INSIDE, "1")
        .status()
        .expect("`unshare` on PATH (run as root)");
    std::process::exit(status.code().unwrap_or(1));
}

/// A multi-threaded tokio runtime for a namespaced test body.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
