pub mod cluster;
pub mod namespaces;
pub mod repos;
pub mod storage;
