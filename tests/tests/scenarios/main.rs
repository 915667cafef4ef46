//! The integration tests, one binary: a file per scenario over the test kit
//! (`tcr_tests`), each against real `tcr-node` processes and real clients.

mod abuse_resistance;
mod blob_memory;
mod clients_auth;
mod clients_containerd;
mod clients_docker;
mod clients_https;
mod clients_oras;
mod clients_podman;
mod clients_skopeo;
mod cluster_blobs;
mod cluster_membership;
mod cluster_partition;
mod cluster_three_nodes;
mod console;
mod crash_recovery;
mod gc_online;
mod kubernetes;
mod limits_and_metering;
mod management_and_auth;
mod oci_blobs_and_uploads;
mod oci_manifests;
mod peer_tls;
mod retention;
mod snapshot_restart;
mod tenancy_auth;
