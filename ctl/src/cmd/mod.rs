pub mod namespaces;
pub mod repos;
