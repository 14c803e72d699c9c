#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use sconce_protocol::chat::PromptRef;
use serde_json::json;

use super::layer::{apply_prompt, fill_in};
use super::template::CompiledPrompt;
use super::*;
use crate::api::{Call, Chat};
use crate::store::Store;
use crate::{CallContext, Principal};

fn version(messages: serde_json::Value, params: serde_json::Value) -> PromptVersion {
    PromptVersion {
        name: "support".into(),
        version: 1,
        messages: serde_json::from_value(messages).unwrap(),
        model: Some("m".into()),
        params: serde_json::from_value(params).unwrap(),
        message: String::new(),
        created_at: 0,
    }
}

fn vars(value: serde_json::Value) -> Map<String, Value> {
    serde_json::from_value(value).unwrap()
}

fn text(message: &sconce_protocol::chat::ChatMessage) -> String {
    message.text().unwrap()
}

#[test]
fn templates_render_variables_and_name_the_missing_ones() {
    let system = "You help with {{ product }}.{% if tone %} Be {{ tone }}.{% endif %}\n";
    let compiled = CompiledPrompt::compile(version(json!([{"role": "system", "content": system}]), json!({}))).unwrap();
    assert_eq!(compiled.variables, ["product", "tone"]);
    let plain = compiled.render(&vars(json!({"product": "kettles"}))).unwrap();
    assert_eq!(text(&plain[0]), "You help with kettles.\n");
    let toned = compiled.render(&vars(json!({"product": "kettles", "tone": "terse"}))).unwrap();
    assert_eq!(text(&toned[0]), "You help with kettles. Be terse.\n");
    let missing = compiled.render(&vars(json!({"tone": "terse"}))).unwrap_err();
    assert_eq!((missing.status, missing.param.as_deref()), (400, Some("prompt.variables")));
    assert!(missing.message.contains("`product`") && missing.message.contains("support@1"), "{}", missing.message);
    assert_eq!(missing.code, Some("missing_prompt_variable"));
}

#[test]
fn template_syntax_errors_name_the_message() {
    let messages = json!([{"role": "system", "content": "fine"}, {"role": "user", "content": "{{ oops"}]);
    let error = CompiledPrompt::compile(version(messages, json!({}))).unwrap_err();
    assert_eq!((error.status, error.param.as_deref()), (400, Some("messages[1].content")));
}

#[test]
fn new_prompts_are_checked_before_they_are_stored() {
    let good = || NewPrompt {
        name: "support.v-2_x".into(),
        messages: serde_json::from_value(json!([{"role": "user", "content": "hi"}])).unwrap(),
        params: vars(json!({"temperature": 0.2, "max_tokens": 9})),
        labels: vec!["production".into()],
        ..NewPrompt::default()
    };
    assert!(good().check().is_ok());
    let param_of = |new: NewPrompt| new.check().unwrap_err().param.unwrap();
    assert_eq!(param_of(NewPrompt { name: "a b".into(), ..good() }), "name");
    assert_eq!(param_of(NewPrompt { name: "a/b".into(), ..good() }), "name");
    assert_eq!(param_of(NewPrompt { messages: vec![], ..good() }), "messages");
    assert_eq!(param_of(NewPrompt { labels: vec!["latest".into()], ..good() }), "labels");
    assert_eq!(param_of(NewPrompt { model: Some(" ".into()), ..good() }), "model");
    for params in [json!({"model": "x"}), json!({"temprature": 1}), json!({"top_p": null}), json!({"n": "two"})] {
        assert_eq!(param_of(NewPrompt { params: vars(params.clone()), ..good() }), "params", "{params}");
    }
    assert_eq!(param_of(NewPrompt { params: vars(json!({"temperature": -1})), ..good() }), "params.temperature");
}

fn share(split: &Split, version: u32, users: u32) -> u32 {
    (0..users).filter(|user| split.choose("p", "production", &format!("user-{user}")) == version).count() as u32
}

#[test]
fn a_split_is_sticky_even_and_ramps_without_moving_anyone_back() {
    let split = |weights: &[(u32, u32)]| Split::new(&weights.iter().copied().collect()).unwrap();
    let even = split(&[(1, 50), (2, 50)]);
    assert!((4800..=5200).contains(&share(&even, 1, 10_000)), "{}", share(&even, 1, 10_000));
    assert_eq!(share(&even, 1, 10_000), share(&split(&[(1, 1), (2, 1)]), 1, 10_000), "only the ratio counts");
    for user in 0..100 {
        let id = format!("user-{user}");
        assert_eq!(even.choose("p", "production", &id), even.choose("p", "production", &id));
    }
    let (ten, twenty) = (split(&[(3, 90), (4, 10)]), split(&[(3, 80), (4, 20)]));
    assert!((800..=1200).contains(&share(&ten, 4, 10_000)));
    assert!((1800..=2200).contains(&share(&twenty, 4, 10_000)));
    for user in 0..10_000 {
        let id = format!("user-{user}");
        if ten.choose("p", "production", &id) == 4 {
            assert_eq!(twenty.choose("p", "production", &id), 4, "{id} moved back to v3");
        }
    }
    assert_eq!(Split::single(7).choose("p", "x", "anyone"), 7);
    assert!(Split::new(&BTreeMap::new()).is_err());
    assert!(Split::new(&[(1, 0), (2, 5)].into_iter().collect()).is_err());
}

#[test]
fn defaults_fill_only_what_the_request_left_unset() {
    let prompt = version(json!([{"role": "system", "content": "s"}]), json!({"temperature": 0.0, "max_tokens": 7}));
    let rendered = CompiledPrompt::compile(prompt.clone()).unwrap().render(&Map::new()).unwrap();
    let mut request: ChatCompletionRequest =
        serde_json::from_value(json!({"messages": [{"role": "user", "content": "q"}], "max_tokens": 3})).unwrap();
    assert_eq!(fill_in(&mut request, &prompt, rendered.clone()).unwrap().as_deref(), Some("m"));
    assert_eq!(request.messages.iter().map(text).collect::<Vec<_>>(), ["s", "q"]);
    assert_eq!((request.model.as_deref(), request.sampling.temperature), (Some("m"), Some(0.0)));
    assert_eq!(request.sampling.max_tokens, Some(3), "the request's own value wins");
    let mut named: ChatCompletionRequest = serde_json::from_value(json!({"model": "x", "messages": []})).unwrap();
    assert_eq!(fill_in(&mut named, &prompt, rendered).unwrap(), None);
    assert_eq!((named.model.as_deref(), named.sampling.max_tokens), (Some("x"), Some(7)));
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!("sqlite://{}", dir.path().join("prompts.db").display())).await.unwrap()
}

fn new_version(system: &str, labels: &[&str]) -> NewPrompt {
    NewPrompt {
        name: "support".into(),
        messages: serde_json::from_value(json!([{"role": "system", "content": system}])).unwrap(),
        message: Some(format!("says {system}")),
        labels: labels.iter().map(|label| label.to_string()).collect(),
        ..NewPrompt::default()
    }
}

fn reference(value: serde_json::Value) -> PromptRef {
    serde_json::from_value(value).unwrap()
}

fn resolved(registry: &PromptRegistry, value: serde_json::Value) -> Result<u32, ApiError> {
    registry.snapshot().resolve(&reference(value), "someone").map(|resolved| resolved.prompt.version.version)
}

#[tokio::test]
async fn the_registry_numbers_versions_and_resolves_labels() {
    let dir = tempfile::tempdir().unwrap();
    let registry = PromptRegistry::open(sqlite_store(&dir).await).await.unwrap();
    let first = registry.create(new_version("one {{ x }}", &["production"])).await.unwrap();
    assert_eq!((first.version.version, first.variables.as_slice()), (1, ["x".to_string()].as_slice()));
    assert_eq!(registry.create(new_version("two", &["staging"])).await.unwrap().version.version, 2);
    assert_eq!(resolved(&registry, json!({"name": "support"})).unwrap(), 1, "production by default");
    assert_eq!(resolved(&registry, json!({"name": "support", "label": "latest"})).unwrap(), 2);
    assert_eq!(resolved(&registry, json!({"name": "support", "version": 2})).unwrap(), 2);
    let code = |value| resolved(&registry, value).unwrap_err().code.unwrap();
    assert_eq!(code(json!({"name": "nope"})), "prompt_not_found");
    assert_eq!(code(json!({"name": "support", "label": "nope"})), "prompt_label_not_found");
    assert_eq!(code(json!({"name": "support", "version": 9})), "prompt_version_not_found");
    assert_eq!(resolved(&registry, json!({"name": "support", "version": 1, "label": "x"})).unwrap_err().status, 400);
    let moved = registry.set_label("support", "production", LabelSpec { version: Some(2), split: None }).await;
    assert_eq!(moved.unwrap().target.version, Some(2));
    assert_eq!(resolved(&registry, json!({"name": "support"})).unwrap(), 2);
    let missing = LabelSpec { version: Some(9), split: None };
    assert_eq!(registry.set_label("support", "production", missing).await.unwrap_err().status, 404);
    assert_eq!(registry.set_label("nope", "production", LabelSpec::default()).await.unwrap_err().status, 400);
    assert_eq!(registry.set_label("support", "latest", LabelSpec::default()).await.unwrap_err().status, 400);
    registry.delete_label("support", "production").await.unwrap();
    assert_eq!(registry.delete_label("support", "production").await.unwrap_err().status, 404);
    assert_eq!(resolved(&registry, json!({"name": "support"})).unwrap(), 2, "latest without production");
    let detail = registry.show("support").await.unwrap();
    assert_eq!(detail.versions.iter().map(|v| v.version.version).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(detail.versions[0].labels, ["staging", "latest"]);
    assert_eq!(registry.list().await.unwrap()[0].versions, 2);
}

#[tokio::test]
async fn another_process_sees_writes_after_a_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let writer = PromptRegistry::open(sqlite_store(&dir).await).await.unwrap();
    let reader = PromptRegistry::open(sqlite_store(&dir).await).await.unwrap();
    writer.create(new_version("one", &["production"])).await.unwrap();
    writer.create(new_version("two", &[])).await.unwrap();
    assert!(reader.snapshot().get("support").is_none(), "not before a refresh");
    reader.refresh().await.unwrap();
    assert_eq!(resolved(&reader, json!({"name": "support"})).unwrap(), 1);
    let split = LabelSpec { version: None, split: Some([(1, 50), (2, 50)].into_iter().collect()) };
    writer.set_label("support", "production", split.clone()).await.unwrap();
    reader.refresh().await.unwrap();
    let shown = reader.show("support").await.unwrap();
    assert_eq!(shown.labels["production"], split);
    let book = reader.snapshot();
    let chosen: Vec<u32> = (0..40)
        .map(|user| book.resolve(&reference(json!({"name": "support"})), &format!("u{user}")).unwrap())
        .map(|resolved| resolved.prompt.version.version)
        .collect();
    assert!(chosen.contains(&1) && chosen.contains(&2), "{chosen:?}");
}

#[tokio::test]
async fn concurrent_creates_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let registry = PromptRegistry::open(sqlite_store(&dir).await).await.unwrap();
    let creates = (0..8).map(|i| {
        let registry = registry.clone();
        tokio::spawn(async move { registry.create(new_version(&format!("v{i}"), &[])).await.unwrap().version.version })
    });
    let mut versions: Vec<u32> =
        futures_util::future::join_all(creates).await.into_iter().map(Result::unwrap).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_stage_renders_in_front_and_records_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let registry = PromptRegistry::open(sqlite_store(&dir).await).await.unwrap();
    registry.create(new_version("About {{ product }}.", &["production"])).await.unwrap();
    let request = json!({"messages": [{"role": "user", "content": "q"}], "user": "alice"});
    let mut call: Call<Chat> =
        Call { request: serde_json::from_value(request).unwrap(), ctx: CallContext::new("r1", Principal::default()) };
    let prompt = reference(json!({"name": "support", "variables": {"product": "kettles"}}));
    let tag = apply_prompt(&registry.snapshot(), &prompt, &mut call.request, &mut call.ctx).unwrap();
    assert_eq!((tag.to_string(), tag.label.as_deref()), ("support@1".to_string(), Some("production")));
    assert_eq!(call.request.messages.iter().map(text).collect::<Vec<_>>(), ["About kettles.", "q"]);
    assert_eq!(call.ctx.prompt.as_ref(), Some(&tag), "for the stages inside (the cache key)");
    assert_eq!(call.ctx.journal.prompt.get(), Some(&tag), "for the ledger");
}
