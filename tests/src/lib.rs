//! Cross-crate and interoperability tests of peer-relay: Rust peers against the JS original.
