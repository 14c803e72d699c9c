#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use sconce_protocol::chat::ChatCompletionRequest;
use sconce_protocol::completion::{CompletionRequest, CompletionResponse};
use sconce_protocol::ApiError;

use super::breaker::{BreakerConfig, BreakerState};
use super::*;
use crate::api::{reply_id, Api, Backend, Call, CallResult, Chat, Completions, Outcome, Reply, Upstream};
use crate::cache::replay::static_reply;
use crate::endpoint::{ApiReply, ApiRequest};
use crate::{CallContext, Principal};

/// Answers with its own name on any endpoint, or fails with `fail`.
struct Named {
    name: &'static str,
    calls: AtomicUsize,
    fail: Option<ApiError>,
}

impl<A: Api> Backend<A> for Named {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (name, fail) = (self.name, self.fail.clone());
        Box::pin(async move {
            match fail {
                Some(error) => Err(error.into()),
                None => {
                    let id = reply_id::<A>(&call.ctx.request_id);
                    Ok(Outcome::new(static_reply::<A>(id, name, name, call.request.is_stream())))
                }
            }
        })
    }
}

fn named(name: &'static str, fail: Option<ApiError>) -> Arc<Named> {
    Arc::new(Named { name, calls: AtomicUsize::new(0), fail })
}

fn call(model: &str, content: &str) -> Call<Chat> {
    let json =
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 16});
    let request: ChatCompletionRequest = serde_json::from_value(json).unwrap();
    Call { request, ctx: CallContext::new("r", Principal::default()) }
}

fn completion_call(model: &str, prompt: &str, stream: bool) -> Call<Completions> {
    let json = serde_json::json!({"model": model, "prompt": prompt, "max_tokens": 16, "stream": stream});
    let request: CompletionRequest = serde_json::from_value(json).unwrap();
    Call { request, ctx: CallContext::new("r", Principal::default()) }
}

fn dep(name: &str, url: Option<&str>) -> DeploymentConfig {
    DeploymentConfig { name: name.into(), url: url.map(String::from), ..DeploymentConfig::default() }
}

fn router(config: RoutingConfig, locals: Vec<(&'static str, Arc<Named>)>) -> Router {
    let local = move |d: &DeploymentConfig| {
        locals.iter().find(|(n, _)| *n == d.name).map(|(_, b)| b.clone() as Arc<dyn Upstream>)
    };
    Router::new(config, &local, None).unwrap()
}

fn header<A: Api>(outcome: &Outcome<A>, name: &str) -> String {
    outcome.headers.iter().find(|(h, _)| *h == name).map(|(_, v)| v.clone()).unwrap()
}

fn answered_by(outcome: &Outcome<Chat>) -> (String, String) {
    let Reply::Full(response) = &outcome.reply else { panic!("full") };
    (response.choices[0].message.content.clone(), header(outcome, "x-sconce-deployment"))
}

fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

fn group_config(url: &str, threshold: u32) -> RoutingConfig {
    let group = GroupConfig::new("chat", vec![dep("primary", Some(url)), dep("local", None)]);
    RoutingConfig {
        groups: vec![group],
        breaker: BreakerConfig { failure_threshold: threshold, cooldown_secs: 0.3, ..BreakerConfig::default() },
        retry: retry::RetryConfig { max_retries: 0, ..retry::RetryConfig::default() },
        ..RoutingConfig::default()
    }
}

#[tokio::test]
async fn a_closed_port_falls_through_to_the_next_deployment_and_opens_the_breaker() {
    let url = closed_port();
    let local = named("local", None);
    let router = router(group_config(&url, 2), vec![("local", local.clone())]);
    for _ in 0..4 {
        let outcome = router.call(call("chat", "hi")).await.unwrap();
        assert_eq!(answered_by(&outcome).1, "local");
    }
    let primary = &router.deployments()[0];
    assert_eq!(primary.breaker.state(std::time::Instant::now()), BreakerState::Open);
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(primary.breaker.state(std::time::Instant::now()), BreakerState::HalfOpen);
    router.call(call("chat", "hi")).await.unwrap();
    assert_eq!(primary.breaker.state(std::time::Instant::now()), BreakerState::Open, "the probe failed");
}

#[tokio::test]
async fn fallbacks_follow_the_cause_and_static_is_last() {
    let mut config = group_config(&closed_port(), 5);
    config.groups[0].deployments.truncate(1);
    config.groups.push(GroupConfig::new("long", vec![dep("long", None)]));
    config.groups.push(GroupConfig::new("backup", vec![dep("backup", None)]));
    config.fallbacks.insert("chat".into(), vec!["backup".into()]);
    config.context_window_fallbacks.insert("backup".into(), vec!["long".into()]);
    let backup = named("backup", Some(ApiError::context_length_exceeded("too long")));
    let router = router(config.clone(), vec![("long", named("long", None)), ("backup", backup)]);
    let outcome = router.call(call("chat", "hi")).await.unwrap();
    assert_eq!(answered_by(&outcome), ("long".into(), "long".into()));
    assert!(outcome.headers.contains(&("x-sconce-attempted-fallbacks", "2".into())));

    config.fallbacks.clear();
    config.static_fallback = Some("Sorry, try later.".into());
    let router2 = self::router(config, vec![("long", named("long", None)), ("backup", named("backup", None))]);
    let outcome = router2.call(call("chat", "hi")).await.unwrap();
    assert_eq!(answered_by(&outcome), ("Sorry, try later.".into(), "static-fallback".into()));
}

#[tokio::test]
async fn client_errors_are_not_retried_and_never_become_500() {
    let bad = named("bad", Some(ApiError::invalid_request("nope")));
    let mut config = RoutingConfig::default();
    config.groups.push(GroupConfig::new("g", vec![dep("bad", None)]));
    config.retry.max_retries = 3;
    let router = router(config, vec![("bad", bad.clone())]);
    let error = router.call(call("g", "hi")).await.err().unwrap();
    assert_eq!(error.error.status, 400);
    assert_eq!(bad.calls.load(Ordering::SeqCst), 1);
    let missing = router.call(call("nope", "hi")).await.err().unwrap();
    assert_eq!(missing.error.status, 404);
}

#[tokio::test]
async fn retryable_failures_retry_then_count() {
    let flaky = named("flaky", Some(ApiError::overloaded("busy")));
    let mut config = RoutingConfig::default();
    config.groups.push(GroupConfig::new("g", vec![dep("flaky", None)]));
    config.retry = retry::RetryConfig { max_retries: 2, base_delay_ms: 1, max_delay_ms: 2 };
    let router = router(config, vec![("flaky", flaky.clone())]);
    let error = router.call(call("g", "hi")).await.err().unwrap();
    assert_eq!(error.error.status, 429);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn auto_and_aliases_pick_groups() {
    let mut config = RoutingConfig::default();
    for name in ["small", "big"] {
        config.groups.push(GroupConfig::new(name, vec![dep(name, None)]));
    }
    config.aliases.insert("gpt-4o".into(), "big".into());
    config.auto.tiers.insert("fast".into(), "small".into());
    config.auto.tiers.insert("quality".into(), "gpt-4o".into());
    config.auto.default_tier = "fast".into();
    let router = router(config, vec![("small", named("small", None)), ("big", named("big", None))]);
    let short = router.call(call("auto", "What is 2+2?")).await.unwrap();
    assert_eq!(answered_by(&short).1, "small");
    let reasoning =
        router.call(call("auto", "Prove that there are infinitely many primes, step by step.")).await.unwrap();
    assert_eq!(answered_by(&reasoning).1, "big");
    let long = router.call(call("auto", &"word ".repeat(3000))).await.unwrap();
    assert_eq!(answered_by(&long).1, "big");
    let mut tiered = call("auto", "hi");
    tiered.ctx.hints.tier = Some("quality".into());
    assert_eq!(answered_by(&router.call(tiered).await.unwrap()).1, "big");
    assert!(router.model_names().contains(&"auto".to_string()));
}

#[tokio::test]
async fn completions_route_through_aliases_fallbacks_static_and_passthrough() {
    let mut config = RoutingConfig::default();
    config.groups.push(GroupConfig::new("primary", vec![dep("busy", None)]));
    config.groups.push(GroupConfig::new("backup", vec![dep("ok", None)]));
    config.aliases.insert("text".into(), "primary".into());
    config.fallbacks.insert("primary".into(), vec!["backup".into()]);
    config.retry.max_retries = 0;
    let busy = named("busy", Some(ApiError::overloaded("busy")));
    let router = router(config.clone(), vec![("busy", busy.clone()), ("ok", named("ok", None))]);
    let outcome = router.call(completion_call("text", "hi", false)).await.unwrap();
    assert_eq!(busy.calls.load(Ordering::SeqCst), 1);
    assert_eq!(header(&outcome, "x-sconce-deployment"), "ok");
    assert_eq!(header(&outcome, "x-sconce-model"), "backup");
    assert_eq!(header(&outcome, "x-sconce-attempted-fallbacks"), "1");
    let Reply::Full(response) = outcome.reply else { panic!("full") };
    assert_eq!((response.id.as_str(), response.choices[0].text.as_str()), ("cmpl-r", "ok"));

    let streamed = router.call(completion_call("text", "hi", true)).await.unwrap();
    let Reply::Stream(stream) = streamed.reply else { panic!("stream") };
    let chunks: Vec<CompletionResponse> = stream.map(|c| c.unwrap()).collect().await;
    assert_eq!(chunks.iter().flat_map(|c| c.choices.iter().map(|ch| ch.text.as_str())).collect::<String>(), "ok");
    assert!(chunks.last().unwrap().is_usage_only());

    config.fallbacks.clear();
    config.static_fallback = Some("Sorry, try later.".into());
    let locals = vec![("busy", named("busy", Some(ApiError::overloaded("busy")))), ("ok", named("ok", None))];
    let router = self::router(config, locals);
    let outcome = router.call(completion_call("text", "hi", false)).await.unwrap();
    assert_eq!(header(&outcome, "x-sconce-deployment"), "static-fallback");
    let Reply::Full(response) = outcome.reply else { panic!("full") };
    assert_eq!((response.object.as_str(), response.choices[0].text.as_str()), ("text_completion", "Sorry, try later."));

    let missing = router.call(completion_call("nope", "hi", false)).await.err().unwrap();
    assert_eq!(missing.error.status, 404);
    let local = named("engine", None);
    router.pass_unknown_names_to(local.clone());
    let outcome = router.call(completion_call("nope", "hi", false)).await.unwrap();
    assert_eq!(
        (header(&outcome, "x-sconce-deployment"), header(&outcome, "x-sconce-model")),
        ("local".into(), "nope".into())
    );
    assert_eq!(local.calls.load(Ordering::SeqCst), 1);
}
