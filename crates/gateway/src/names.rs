//! The model names this gateway serves: those in its config and the local engine's. They
//! bound metric labels (anything else is `other`) and say what a request without `model`
//! is served by.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use crate::config::GatewayConfig;

/// The label of every model name the gateway does not serve.
pub const OTHER: &str = "other";

#[derive(Debug, Default)]
pub struct ModelNames {
    configured: BTreeSet<String>,
    /// Where the router sends a request without `model` (the first group by name).
    first_group: Option<String>,
    /// The local engine's name, then its aliases; set once the model is known.
    local: OnceLock<Vec<String>>,
}

impl ModelNames {
    pub fn new(config: &GatewayConfig) -> Self {
        let routing = &config.routing;
        let mut configured: BTreeSet<String> = config.prices.keys().cloned().collect();
        for group in &routing.groups {
            configured.insert(group.name.clone());
            configured.extend(group.deployments.iter().filter_map(|dep| dep.model.clone()));
        }
        configured.extend(routing.aliases.iter().flat_map(|(alias, target)| [alias.clone(), target.clone()]));
        if !routing.auto.tiers.is_empty() {
            configured.insert("auto".into());
            configured.extend(routing.auto.tiers.values().cloned());
        }
        let first_group = routing.groups.iter().map(|group| group.name.clone()).min();
        Self { configured, first_group, local: OnceLock::new() }
    }

    /// Adds the local engine's served name and aliases (only the first call counts).
    pub fn set_local(&self, name: &str, aliases: &[String]) {
        let names = std::iter::once(name.to_string()).chain(aliases.iter().cloned()).collect();
        let _ = self.local.set(names);
    }

    pub fn is_known(&self, name: &str) -> bool {
        self.configured.contains(name) || self.local.get().is_some_and(|local| local.iter().any(|n| n == name))
    }

    /// `name` when the gateway serves it, else [`OTHER`].
    pub fn label<'a>(&self, name: &'a str) -> &'a str {
        if self.is_known(name) {
            name
        } else {
            OTHER
        }
    }

    /// What serves a request without `model`: the first group, else the local engine.
    pub fn default_model(&self) -> Option<String> {
        self.first_group.clone().or_else(|| self.local.get().and_then(|local| local.first().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_and_local_names_become_labels() {
        let config: GatewayConfig = toml::from_str(
            "[prices.priced]\ninput = 1.0\n[routing.aliases]\nfast = \"zeta\"\n\
             [[routing.groups]]\nname = \"zeta\"\n[[routing.groups]]\nname = \"alpha\"\n\
             [routing.auto.tiers]\nquality = \"big\"\n",
        )
        .expect("valid");
        let names = ModelNames::new(&config);
        for name in ["priced", "fast", "zeta", "alpha", "auto", "big"] {
            assert_eq!(names.label(name), name);
        }
        assert_eq!(names.label("a-client-chose-this"), OTHER);
        assert_eq!(names.label("tiny"), OTHER);
        names.set_local("tiny", &["/models/tiny".into()]);
        assert_eq!((names.label("tiny"), names.label("/models/tiny")), ("tiny", "/models/tiny"));
        assert_eq!(names.default_model().as_deref(), Some("alpha"), "the router's first group");
        let local_only = ModelNames::new(&GatewayConfig::default());
        assert_eq!(local_only.default_model(), None);
        local_only.set_local("tiny", &[]);
        assert_eq!(local_only.default_model().as_deref(), Some("tiny"));
    }
}
