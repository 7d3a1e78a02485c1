//! Test support shared by the retrieval test and the RAG benchmark.

pub mod corpus;
pub mod synth;
