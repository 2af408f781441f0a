//! Fingerprints the build for snapshots: postcard records are not self-describing, so a
//! snapshot loads only into the build that saved it. The fingerprint is a hash of the
//! simulator's and the core's sources and of the workspace's lock file (the state's layout
//! and the code that evolves it), so a snapshot from any other build is refused with a
//! clear error instead of decoding into a wrong state.

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let inputs = [
        manifest.join("src"),
        manifest.join("../core/src"),
        manifest.join("../Cargo.lock"),
    ];
    let mut files = Vec::new();
    for input in &inputs {
        println!("cargo::rerun-if-changed={}", input.display());
        collect(input, &mut files);
    }
    files.sort();
    let mut hash = Fnv1a::default();
    for file in &files {
        let relative = file.strip_prefix(&manifest).unwrap_or(file);
        hash.write(relative.to_string_lossy().as_bytes());
        hash.write(&[0]);
        let contents = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        hash.write(&(contents.len() as u64).to_le_bytes());
        hash.write(&contents);
    }
    println!("cargo::rustc-env=PEER_RELAY_SIM_BUILD={:016x}", hash.0);
}

/// Every file under `path` (or `path` itself), if it exists.
fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    let Ok(meta) = fs::metadata(path) else {
        return;
    };
    if meta.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    let entries = fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for entry in entries {
        collect(&entry.expect("a directory entry").path(), files);
    }
}

/// 64-bit FNV-1a: tiny and fixed, so the fingerprint does not depend on the toolchain.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
