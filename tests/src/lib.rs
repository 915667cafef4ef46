//! Shared pieces of tcr's integration tests: real `tcr-node` processes on
//! loopback ports (`harness`) and OCI images the tests build themselves
//! (`images`).

pub mod containerd;
pub mod grpc;
pub mod harness;
pub mod hosts;
pub mod images;
pub mod oci;
