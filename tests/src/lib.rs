//! The test kit of tcr's integration tests and its Jepsen suite: real
//! `tcr-node` processes (`launch`, and `harness` on loopback ports), hosts
//! in network namespaces (`hosts`), and OCI images the tests build
//! themselves (`images`).

pub mod containerd;
pub mod grpc;
pub mod harness;
pub mod hosts;
pub mod images;
pub mod launch;
pub mod oci;
