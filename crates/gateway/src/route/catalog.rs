//! The names clients may send while routing is on: groups, aliases and `auto`, with what
//! each resolves to (for `/v1/models`).

use std::collections::BTreeMap;

use super::config::{DeploymentConfig, GroupConfig, RoutingConfig};

/// Alias hops followed before giving up (aliases may point at aliases).
pub(crate) const MAX_ALIAS_HOPS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Group,
    Alias,
    Auto,
}

impl NameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Group => "group",
            NameKind::Alias => "alias",
            NameKind::Auto => "auto",
        }
    }
}

/// One servable name.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedName {
    pub name: String,
    pub kind: NameKind,
    /// The group it resolves to; none for `auto` (and for an alias to nowhere).
    pub group: Option<String>,
    /// That group's deployment names.
    pub deployments: Vec<String>,
    /// Whether every deployment of that group is the local engine.
    pub local_only: bool,
    /// `auto` only: tier to model.
    pub tiers: BTreeMap<String, String>,
}

impl DeploymentConfig {
    /// The name shown in `x-sconce-deployment`: its own, else `group/model`.
    pub fn display_name(&self, group: &str) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        format!("{group}/{}", self.model.as_deref().unwrap_or(group))
    }
}

impl RoutingConfig {
    /// Groups, then aliases, then `auto` when tiers are set.
    pub fn served_names(&self) -> Vec<ServedName> {
        let mut names: Vec<ServedName> =
            self.groups.iter().map(|g| self.served(g.name.clone(), NameKind::Group, Some(g))).collect();
        for alias in self.aliases.keys() {
            names.push(self.served(alias.clone(), NameKind::Alias, self.alias_target(alias)));
        }
        if !self.auto.tiers.is_empty() {
            let mut auto = self.served("auto".into(), NameKind::Auto, None);
            auto.tiers = self.auto.tiers.clone();
            names.push(auto);
        }
        names
    }

    fn served(&self, name: String, kind: NameKind, group: Option<&GroupConfig>) -> ServedName {
        let deployments =
            group.map_or_else(Vec::new, |g| g.deployments.iter().map(|d| d.display_name(&g.name)).collect());
        let local_only = group.is_some_and(|g| g.deployments.iter().all(|d| d.url.is_none()));
        ServedName { name, kind, group: group.map(|g| g.name.clone()), deployments, local_only, tiers: BTreeMap::new() }
    }

    /// The group an alias ends at, following alias chains like the router does.
    fn alias_target(&self, alias: &str) -> Option<&GroupConfig> {
        let mut name = alias;
        for _ in 0..=MAX_ALIAS_HOPS {
            if let Some(group) = self.groups.iter().find(|g| g.name == name) {
                return Some(group);
            }
            name = self.aliases.get(name)?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn groups_aliases_and_auto_are_listed_with_their_targets() {
        let local = DeploymentConfig { name: "local".into(), ..DeploymentConfig::default() };
        let remote = DeploymentConfig { url: Some("http://h/v1".into()), model: Some("m".into()), ..local.clone() };
        let mut config = RoutingConfig::default();
        config.groups.push(GroupConfig::new("chat", vec![local.clone()]));
        config.groups.push(GroupConfig::new("big", vec![DeploymentConfig { name: String::new(), ..remote }, local]));
        config.aliases.insert("gpt-4o".into(), "smart".into());
        config.aliases.insert("smart".into(), "big".into());
        config.aliases.insert("dangling".into(), "nowhere".into());
        config.auto.tiers.insert("fast".into(), "chat".into());
        let names = config.served_names();
        let find = |n: &str| names.iter().find(|s| s.name == n).unwrap();
        assert_eq!(names.len(), 6);
        assert_eq!((find("chat").kind, find("chat").local_only), (NameKind::Group, true));
        let alias = find("gpt-4o");
        assert_eq!((alias.kind, alias.group.as_deref()), (NameKind::Alias, Some("big")));
        assert_eq!(alias.deployments, ["big/m", "local"]);
        assert!(!alias.local_only);
        assert_eq!(find("dangling").group, None);
        assert_eq!(find("auto").tiers.get("fast").map(String::as_str), Some("chat"));
    }
}
