//! The response cache.
