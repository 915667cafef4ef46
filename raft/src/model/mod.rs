//! The registry's replicated state, as the state machine applies it and
//! the node queries it.

pub mod apply;
pub mod audit;
pub mod command;
pub mod gc;
pub mod queries;
pub mod registry;
pub mod retention;
pub mod sessions;
pub mod tenancy;
pub mod usage;
