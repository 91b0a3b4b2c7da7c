//! The rafka client library.
//!
//! Today it re-exports the record batch codec that producers use to build batches; the
//! gRPC `Producer`, `Consumer` and `Admin` arrive with the single-node broker.

pub use rafka_proto::batch;
