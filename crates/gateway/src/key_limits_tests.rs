use sconce_protocol::chat::ChatCompletionRequest;

use super::*;
use crate::config::GatewayConfig;

fn routing() -> RoutingConfig {
    let config: GatewayConfig = toml::from_str(
        "[routing.aliases]\nsmall-alias = \"small\"\n[[routing.groups]]\nname = \"small\"\n\
         [[routing.groups]]\nname = \"big\"\n[routing.auto.tiers]\nfast = \"small\"\nquality = \"big\"\n",
    )
    .expect("valid");
    config.routing
}

fn key(models: &[&str]) -> ApiKey {
    let new =
        crate::keys::NewKey { models: Some(models.iter().map(|m| m.to_string()).collect()), ..Default::default() };
    new.issue(0).1
}

fn chat(body: serde_json::Value) -> ChatCompletionRequest {
    serde_json::from_value(body).expect("a chat request")
}

fn status(result: Result<(), ApiError>) -> Option<u16> {
    result.err().map(|error| error.status)
}

#[test]
fn the_model_list_holds_for_a_missing_model_auto_and_the_tier_header() {
    let (routing, names) = (routing(), ModelNames::new(&GatewayConfig { routing: routing(), ..Default::default() }));
    let big_only = key(&["big"]);
    let mut missing = chat(serde_json::json!({"messages": []}));
    assert_eq!(status(apply(&big_only, &names, &routing, None, &mut missing)), None, "first group: big");
    assert_eq!(missing.model.as_deref(), Some("big"), "pinned to what was checked");
    let small_only = key(&["small", "auto"]);
    let mut missing = chat(serde_json::json!({"messages": []}));
    assert_eq!(status(apply(&small_only, &names, &routing, None, &mut missing)), Some(403));
    let mut auto = chat(serde_json::json!({"model": "auto", "messages": []}));
    assert_eq!(status(apply(&small_only, &names, &routing, Some("quality"), &mut auto)), Some(403), "tier header");
    let mut auto = chat(serde_json::json!({"model": "auto", "messages": []}));
    assert_eq!(status(apply(&small_only, &names, &routing, Some("fast"), &mut auto)), None);
    assert_eq!(auto.model.as_deref(), Some("small"));
    let mut auto = chat(serde_json::json!({"model": "auto", "messages": []}));
    assert_eq!(status(apply(&key(&["small", "big"]), &names, &routing, None, &mut auto)), Some(403), "auto unlisted");
    let mut alias = chat(serde_json::json!({"model": "small-alias", "messages": []}));
    assert_eq!(status(apply(&small_only, &names, &routing, None, &mut alias)), None, "an alias of a listed group");
}

#[test]
fn choices_are_capped_and_priority_is_clamped() {
    let (routing, names) = (RoutingConfig::default(), ModelNames::default());
    let mut limited = key(&["*"]);
    limited.max_n = Some(2);
    let mut three = chat(serde_json::json!({"messages": [], "n": 3}));
    let error = apply(&limited, &names, &routing, None, &mut three).err();
    assert_eq!(error.map(|e| (e.status, e.param)), Some((400, Some("n".into()))));
    let mut urgent = chat(serde_json::json!({"messages": [], "priority": i32::MIN}));
    assert_eq!(status(apply(&limited, &names, &routing, None, &mut urgent)), None);
    assert_eq!(urgent.sampling.priority, Some(0), "a default key cannot jump the queue");
    let mut patient = chat(serde_json::json!({"messages": [], "priority": 7}));
    assert_eq!(status(apply(&limited, &names, &routing, None, &mut patient)), None);
    assert_eq!(patient.sampling.priority, Some(7), "deferring itself is fine");
    limited.max_priority = Some(-5);
    let mut urgent = chat(serde_json::json!({"messages": [], "priority": -9}));
    assert_eq!(status(apply(&limited, &names, &routing, None, &mut urgent)), None);
    assert_eq!(urgent.sampling.priority, Some(-5));
}
