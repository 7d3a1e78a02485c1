//! Test support shared by the retrieval and local-embedder tests and the benchmarks.

pub mod corpus;
#[cfg(feature = "local")]
pub mod minilm;
pub mod synth;
