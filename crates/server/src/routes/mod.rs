//! Request handlers, one module per API area.

pub mod chat;
pub mod completions;
pub mod health;
pub mod models;
