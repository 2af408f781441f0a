//! The core does no IO and reads no clock or OS randomness: checked on its sources and its
//! manifest, so a regression fails CI.

use std::fs;
use std::path::Path;

const FORBIDDEN_NAMES: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "OsRng",
    "getrandom",
    "std::net",
    "std::fs",
];
const FORBIDDEN_DEPS: &[&str] = &["tokio", "tungstenite", "webrtc", "getrandom", "rand ="];

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((
                path.display().to_string(),
                fs::read_to_string(&path).unwrap(),
            ));
        }
    }
}

#[test]
fn core_sources_name_no_clock_rng_or_network() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() >= 8, "found the sources");
    for (path, text) in files {
        for name in FORBIDDEN_NAMES {
            assert!(!text.contains(name), "{path} names {name}");
        }
    }
}

#[test]
fn core_depends_on_no_io_crate() {
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for dep in FORBIDDEN_DEPS {
        assert!(!deps.contains(dep), "core depends on {dep}");
    }
}

#[test]
fn core_dependency_tree_has_no_io_crate() {
    // The resolved tree, not just the manifest: a dependency must not pull these in either.
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "peer-relay-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        for dep in [
            "tokio",
            "tungstenite",
            "tokio-tungstenite",
            "webrtc",
            "getrandom",
            "mio",
        ] {
            assert_ne!(name, dep, "core's dependency tree contains {dep}");
        }
    }
}
