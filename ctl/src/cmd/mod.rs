pub mod cluster;
pub mod credentials;
pub mod keys;
pub mod login;
pub mod namespaces;
pub mod orgs;
pub mod repos;
pub mod storage;
