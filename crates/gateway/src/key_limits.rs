//! A key's per-request limits, checked by the policy stage before routing: the models it
//! may use (a missing `model` resolved first; `auto` and the tier it picks both checked),
//! the most choices, the `max_tokens` ceiling and the most urgent `priority`.

use sconce_protocol::ApiError;

use crate::endpoint::ApiRequest;
use crate::error::GatewayError;
use crate::keys::ApiKey;
use crate::names::ModelNames;
use crate::route::auto::AutoFacts;
use crate::route::catalog::MAX_ALIAS_HOPS;
use crate::route::RoutingConfig;

/// Checks and rewrites `request` for `key`; `tier` is the `x-sconce-tier` hint.
pub fn apply(
    key: &ApiKey,
    names: &ModelNames,
    routing: &RoutingConfig,
    tier: Option<&str>,
    request: &mut impl ApiRequest,
) -> Result<(), ApiError> {
    clamp_max_tokens(key, request);
    check_choices(key, request)?;
    clamp_priority(key, request);
    if key.models.as_ref().is_some_and(|models| !models.iter().any(|model| model == "*")) {
        check_model(key, names, routing, tier, request)?;
    }
    Ok(())
}

/// Caps `max_tokens` at the key's ceiling (and sets it when absent).
fn clamp_max_tokens(key: &ApiKey, request: &mut impl ApiRequest) {
    let Some(ceiling) = key.max_tokens else {
        return;
    };
    let ceiling = usize::try_from(ceiling).unwrap_or(usize::MAX);
    let wanted = request.max_tokens().unwrap_or(ceiling).min(ceiling);
    request.set_max_tokens(wanted);
}

/// Refuses more choices (`n`, `best_of`) than the key allows.
fn check_choices(key: &ApiKey, request: &impl ApiRequest) -> Result<(), ApiError> {
    let Some(max) = key.max_n else {
        return Ok(());
    };
    let sampling = request.sampling();
    for (param, asked) in [("n", sampling.n.or(Some(1))), ("best_of", sampling.best_of)] {
        if let Some(asked) = asked.filter(|&asked| asked as u64 > max) {
            let message = format!("this key allows at most {max} choices per request; `{param}` is {asked}");
            return Err(ApiError::invalid_param(param, message));
        }
    }
    Ok(())
}

/// Priority is a privilege (lower runs first): a key gets no more urgent than its
/// `max_priority` (default 0), and no less urgent than that either when it is positive.
fn clamp_priority(key: &ApiKey, request: &mut impl ApiRequest) {
    let most_urgent = key.max_priority.unwrap_or(0);
    let sampling = request.sampling_mut();
    if sampling.priority.unwrap_or(0) < most_urgent {
        sampling.priority = Some(most_urgent);
    }
}

/// Resolves the model as the upstream would (a missing one, `auto` and its tier), checks it
/// against the key's list and pins the request to it, so routing cannot pick another.
fn check_model(
    key: &ApiKey,
    names: &ModelNames,
    routing: &RoutingConfig,
    tier: Option<&str>,
    request: &mut impl ApiRequest,
) -> Result<(), ApiError> {
    let requested = match request.model() {
        Some(model) => model.to_string(),
        None => names.default_model().ok_or_else(|| ApiError::unavailable("the model is still loading"))?,
    };
    if !allows(key, routing, &requested) {
        return Err(refused(&format!("this key may not use the model `{requested}`")));
    }
    let target = match requested.as_str() {
        "auto" if !routing.auto.tiers.is_empty() => auto_target(routing, tier, request),
        _ => requested.clone(),
    };
    if !allows(key, routing, &target) {
        return Err(refused(&format!("this key may not use the model `{target}`, which `auto` picked")));
    }
    if request.model() != Some(target.as_str()) {
        request.set_model(target);
    }
    Ok(())
}

/// The model `auto` picks for this request, as the router picks it.
fn auto_target(routing: &RoutingConfig, tier: Option<&str>, request: &impl ApiRequest) -> String {
    let facts = AutoFacts::from_text(&request.prompt_text(), request.max_tokens());
    routing.auto.model(&facts, tier).unwrap_or_default().to_string()
}

/// Whether the key lists `name` or a name it is an alias of.
fn allows(key: &ApiKey, routing: &RoutingConfig, name: &str) -> bool {
    let mut name = name;
    for _ in 0..=MAX_ALIAS_HOPS {
        if key.allows_model(name) {
            return true;
        }
        match routing.aliases.get(name) {
            Some(target) => name = target,
            None => return false,
        }
    }
    false
}

fn refused(message: &str) -> ApiError {
    ApiError::from(GatewayError::Forbidden(message.to_string())).with_param("model")
}

#[cfg(test)]
#[path = "key_limits_tests.rs"]
mod tests;
