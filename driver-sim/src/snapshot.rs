//! Snapshots: a simulation saved to a file between two events and resumed later, in
//! another process, with the same outcome and trace hash as if it had never stopped.
//!
//! A run too long for one sitting (a million peers take hours) goes on in steps this way.
//! The file is a sequence of length-prefixed [postcard] records, written and read one at a
//! time, so saving and loading need little memory beyond the simulation itself:
//!
//! ```text
//! MAGIC  BUILD "\n"  extra  sim  peer_count:u64  peer * peer_count  xxh3:u64
//! ```
//!
//! each record `len:u64` (little-endian) then its postcard bytes, and last the XXH3-64 of
//! every byte before it, so a damaged or cut file is refused ([`SnapshotError::Damaged`])
//! rather than loaded into a state no run could reach; `extra` is the caller's
//! own state (the CLI's run phase), `sim` everything of the [`Sim`](crate::Sim) but its
//! peers. Postcard is not self-describing, so a snapshot loads only into the build that
//! saved it: [`BUILD`] (16 hex digits, a hash of the simulator's and the core's sources and
//! of the lock file, made by `build.rs`) follows the magic, and a snapshot of any other
//! build is refused ([`SnapshotError::OtherBuild`]) rather than decoded into a wrong state.
//!
//! [postcard]: https://docs.rs/postcard

use std::io::{self, Read, Write};
use std::sync::Arc;

use peer_relay_core::Config;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xxhash_rust::xxh3::Xxh3;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8] = b"peer-relay-sim snapshot 2\n";

/// This build's fingerprint, written after [`MAGIC`]: a snapshot loads only into the build
/// that saved it.
pub const BUILD: &str = env!("PEER_RELAY_SIM_BUILD");

/// Why a snapshot could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot i/o: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with [`MAGIC`].
    #[error("not a peer-relay-sim snapshot, or one of another format")]
    NotASnapshot,
    /// The snapshot was saved by another build (other sources or dependencies), whose
    /// state this one cannot read; resume it with the binary that saved it.
    #[error(
        "snapshot of another build ({saved}; this is {this}): resume it with the binary that saved it"
    )]
    OtherBuild {
        /// The saving build's fingerprint, as written in the file.
        saved: String,
        /// This build's, [`BUILD`].
        this: &'static str,
    },
    /// The file's checksum does not match its contents, or bytes follow its end: it was
    /// damaged after it was written.
    #[error("damaged snapshot: its checksum does not match")]
    Damaged,
    /// A record did not encode or decode (a truncated or damaged file).
    #[error("snapshot record: {0}")]
    Record(#[from] postcard::Error),
    /// A frame filter is code, not state: a run using one cannot be saved.
    #[error("a simulation with a frame filter cannot be saved")]
    FrameFilter,
}

/// Writes records, reusing one buffer, and checksums what it writes.
pub(crate) struct RecordWriter<W: Write> {
    out: W,
    buffer: Vec<u8>,
    checksum: Xxh3,
}

impl<W: Write> RecordWriter<W> {
    pub(crate) fn new(out: W) -> Result<Self, SnapshotError> {
        let mut writer = RecordWriter {
            out,
            buffer: Vec::new(),
            checksum: Xxh3::new(),
        };
        writer.put(MAGIC)?;
        writer.put(BUILD.as_bytes())?;
        writer.put(b"\n")?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.checksum.update(bytes);
        Ok(self.out.write_all(bytes)?)
    }

    pub(crate) fn record(&mut self, value: &impl Serialize) -> Result<(), SnapshotError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        buffer = postcard::to_extend(value, buffer)?;
        self.count(buffer.len() as u64)?;
        let written = self.put(&buffer);
        self.buffer = buffer;
        written
    }

    pub(crate) fn count(&mut self, n: u64) -> Result<(), SnapshotError> {
        self.put(&n.to_le_bytes())
    }

    /// Writes the checksum and flushes.
    pub(crate) fn finish(mut self) -> Result<(), SnapshotError> {
        let checksum = self.checksum.digest();
        self.out.write_all(&checksum.to_le_bytes())?;
        Ok(self.out.flush()?)
    }
}

/// Reads records, reusing one buffer, and checksums what it reads.
pub(crate) struct RecordReader<R: Read> {
    input: R,
    buffer: Vec<u8>,
    checksum: Xxh3,
}

impl<R: Read> RecordReader<R> {
    pub(crate) fn new(mut input: R) -> Result<Self, SnapshotError> {
        let mut magic = [0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .map_err(|_| SnapshotError::NotASnapshot)?;
        if magic != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let mut build = [0u8; BUILD.len() + 1];
        input
            .read_exact(&mut build)
            .map_err(|_| SnapshotError::NotASnapshot)?;
        if build[..BUILD.len()] != *BUILD.as_bytes() || build[BUILD.len()] != b'\n' {
            return Err(SnapshotError::OtherBuild {
                saved: String::from_utf8_lossy(&build).trim_end().to_owned(),
                this: BUILD,
            });
        }
        let mut checksum = Xxh3::new();
        checksum.update(&magic);
        checksum.update(&build);
        Ok(RecordReader {
            input,
            buffer: Vec::new(),
            checksum,
        })
    }

    pub(crate) fn record<T: DeserializeOwned>(&mut self) -> Result<T, SnapshotError> {
        let len = self.count()?;
        let len = usize::try_from(len).map_err(|_| SnapshotError::NotASnapshot)?;
        self.buffer.clear();
        // `take` rather than a buffer of `len` zeroes: a corrupt length fails at the end of
        // the file instead of allocating that much.
        (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut self.buffer)?;
        if self.buffer.len() != len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        self.checksum.update(&self.buffer);
        Ok(postcard::from_bytes(&self.buffer)?)
    }

    pub(crate) fn count(&mut self) -> Result<u64, SnapshotError> {
        let mut bytes = [0u8; 8];
        self.input.read_exact(&mut bytes)?;
        self.checksum.update(&bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    /// Checks the checksum that ends the file, and that nothing follows it.
    pub(crate) fn finish(mut self) -> Result<(), SnapshotError> {
        let mut bytes = [0u8; 8];
        self.input.read_exact(&mut bytes)?;
        let mut after = [0u8; 1];
        let trailing = self.input.read(&mut after)?;
        if u64::from_le_bytes(bytes) != self.checksum.digest() || trailing != 0 {
            return Err(SnapshotError::Damaged);
        }
        Ok(())
    }
}

/// Serde for an `Arc<Config>` field: the config itself, loaded into an `Arc` of its own.
pub(crate) mod shared_config {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(config: &Arc<Config>, s: S) -> Result<S::Ok, S::Error> {
        config.as_ref().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Config>, D::Error> {
        Config::deserialize(d).map(Arc::new)
    }
}
