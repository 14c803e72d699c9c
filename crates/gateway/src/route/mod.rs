//! Routing: aliases, groups of deployments, load balancing, `auto` tiers, retries,
//! fallbacks and circuit breakers.

pub mod auto;
pub mod balance;
pub mod breaker;
pub mod catalog;
mod config;
pub mod metrics;
pub mod poll;
pub mod remote;
pub mod retry;
mod router;

pub use config::{DeploymentConfig, GroupConfig, RoutingConfig};
pub use router::{Deployment, Router};

/// What the HTTP layer read from a request's headers for the routing and cache stages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHints {
    /// `x-sconce-tier`.
    pub tier: Option<String>,
    /// `Cache-Control: no-cache`: do not answer from the cache.
    pub no_cache: bool,
    /// `Cache-Control: no-store`: do not store the answer.
    pub no_store: bool,
}

impl RequestHints {
    /// Reads the `Cache-Control` directives this gateway honours.
    pub fn with_cache_control(mut self, value: &str) -> Self {
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.as_str() {
                "no-cache" => self.no_cache = true,
                "no-store" => self.no_store = true,
                _ => {}
            }
        }
        self
    }
}

#[cfg(test)]
mod tests;
