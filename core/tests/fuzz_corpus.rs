//! Replays the committed fuzz corpus and every past crash through the same checks the fuzz
//! targets run (`peer_relay_core::fuzzing`), on the stable toolchain, so CI covers them
//! without nightly.

use std::fs;
use std::path::{Path, PathBuf};

use peer_relay_core::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.map(|e| e.expect("readable dir entry").path()));
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files.len() >= 10,
        "the {target} corpus is committed ({} files)",
        files.len()
    );
    for file in files {
        let data = fs::read(&file).expect("readable corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", file.display());
    }
}

#[test]
fn decode_frame_corpus_and_regressions() {
    replay("decode_frame", fuzzing::decode_frame);
}

#[test]
fn node_ops_corpus_and_regressions() {
    replay("node_ops", fuzzing::node_ops);
}
