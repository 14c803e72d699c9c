//! The router: an upstream that resolves aliases and `auto`, picks a deployment in
//! the group, retries, falls back by cause, and keeps a breaker per deployment.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use sconce_protocol::ApiError;

use crate::api::{reply_id, Api, Backend, Call, CallResult, Outcome, Reply, Upstream};
use crate::endpoint::ApiRequest;
use crate::error::GatewayError;

use super::auto::AutoFacts;
use super::balance::{order, Load, Strategy};
use super::breaker::{BreakerState, CircuitBreaker};
use super::catalog::MAX_ALIAS_HOPS;
use super::config::{DeploymentConfig, RoutingConfig};
use super::metrics::RouteMetrics;
use super::poll::{spawn_pollers, PollTarget};
use super::remote::RemoteBackend;
use super::retry::Cause;
use crate::cache::replay::static_reply;

pub struct Deployment {
    pub name: String,
    model: String,
    backend: Arc<dyn Upstream>,
    pub breaker: CircuitBreaker,
    pub load: Arc<Load>,
    timeout: Duration,
    remote_url: Option<String>,
}

/// A group's deployments (indices) and how to balance over them.
struct Group {
    members: Vec<usize>,
    strategy: Strategy,
    kv_aware: bool,
}

struct Inner {
    config: RoutingConfig,
    deployments: Vec<Deployment>,
    groups: BTreeMap<String, Group>,
    metrics: Option<RouteMetrics>,
    /// Answers names that are no group or alias (the local engine's own names).
    passthrough: OnceLock<Arc<dyn Upstream>>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

/// `local` builds the backend of a deployment without a URL (the server's engine).
pub fn build_deployment(
    config: &RoutingConfig,
    group: &str,
    dep: &DeploymentConfig,
    local: &dyn Fn(&DeploymentConfig) -> Option<Arc<dyn Upstream>>,
) -> Result<Deployment, GatewayError> {
    let model = dep.model.clone().unwrap_or_else(|| group.to_string());
    let connect = Duration::from_secs_f64(config.connect_timeout_secs.max(0.001));
    let backend: Arc<dyn Upstream> = match &dep.url {
        Some(url) => Arc::new(RemoteBackend::new(url, dep.api_key.clone(), Some(model.clone()), connect)),
        None => local(dep)
            .ok_or_else(|| GatewayError::config(format!("deployment `{}`: no local model `{model}`", dep.name)))?,
    };
    Ok(Deployment {
        name: dep.display_name(group),
        model,
        backend,
        breaker: CircuitBreaker::new(config.breaker.clone()),
        load: Arc::default(),
        timeout: Duration::from_secs_f64(dep.timeout_secs.unwrap_or(config.timeout_secs).max(0.001)),
        remote_url: dep.url.clone(),
    })
}

impl Router {
    pub fn new(
        config: RoutingConfig,
        local: &dyn Fn(&DeploymentConfig) -> Option<Arc<dyn Upstream>>,
        metrics: Option<RouteMetrics>,
    ) -> Result<Self, GatewayError> {
        let mut deployments = Vec::new();
        let mut groups = BTreeMap::new();
        for group in &config.groups {
            let mut members = Vec::new();
            for dep in &group.deployments {
                members.push(deployments.len());
                deployments.push(build_deployment(&config, &group.name, dep, local)?);
            }
            let (strategy, kv_aware) = (group.strategy(&config), group.kv_aware(&config));
            groups.insert(group.name.clone(), Group { members, strategy, kv_aware });
        }
        let inner = Inner { config, deployments, groups, metrics, passthrough: OnceLock::new() };
        spawn_pollers(inner.poll_targets(), Duration::from_millis(inner.config.metrics_poll_ms));
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Sends names that are no group or alias to `backend` (which refuses those it lacks).
    pub fn pass_unknown_names_to(&self, backend: Arc<dyn Upstream>) {
        let _ = self.inner.passthrough.set(backend);
    }

    /// Every name clients may send: groups, aliases and `auto` when tiers are set.
    pub fn model_names(&self) -> Vec<String> {
        self.inner.config.served_names().into_iter().map(|n| n.name).collect()
    }

    pub fn deployments(&self) -> &[Deployment] {
        &self.inner.deployments
    }

    /// Sconce upstreams' base URLs by deployment index, for KV-aware polling.
    pub fn remote_urls(&self) -> Vec<(usize, String)> {
        let deps = self.inner.deployments.iter().enumerate();
        deps.filter_map(|(i, d)| d.remote_url.clone().map(|u| (i, u))).collect()
    }

    /// The group a requested name routes to (aliases and `auto` resolved).
    pub fn resolve(&self, model: Option<&str>, facts: &AutoFacts, tier: Option<&str>) -> Result<String, ApiError> {
        self.inner.resolve(model, facts, tier)
    }
}

impl Inner {
    fn resolve(&self, model: Option<&str>, facts: &AutoFacts, tier: Option<&str>) -> Result<String, ApiError> {
        let mut name = match model {
            Some(name) => name.to_string(),
            None => self.groups.keys().next().cloned().ok_or_else(|| ApiError::model_not_found("(none)"))?,
        };
        if name == "auto" && !self.config.auto.tiers.is_empty() {
            name = self.config.auto.model(facts, tier).unwrap_or_default().to_string();
        }
        for _ in 0..=MAX_ALIAS_HOPS {
            if self.groups.contains_key(&name) {
                return Ok(name);
            }
            match self.config.aliases.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        Err(ApiError::model_not_found(model.unwrap_or(&name)))
    }

    fn fallbacks(&self, group: &str, cause: Cause) -> &[String] {
        let map = match cause {
            Cause::ContextWindow => &self.config.context_window_fallbacks,
            Cause::ContentPolicy => &self.config.content_policy_fallbacks,
            _ => &self.config.fallbacks,
        };
        map.get(group).map_or(&[], Vec::as_slice)
    }

    /// The remote deployments of KV-aware groups.
    fn poll_targets(&self) -> Vec<PollTarget> {
        let kv_members = self.groups.values().filter(|g| g.kv_aware).flat_map(|g| g.members.iter());
        let deps = kv_members.map(|&i| &self.deployments[i]);
        deps.filter_map(|d| d.remote_url.as_deref().map(|url| PollTarget::new(&d.name, url, &d.load))).collect()
    }

    fn note_state(&self, dep: &Deployment) {
        if let Some(metrics) = &self.metrics {
            metrics.state(&dep.name, dep.breaker.state(Instant::now()).code());
        }
    }
}

impl<A: Api> Backend<A> for Router {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let (inner, journal) = (self.inner.clone(), call.ctx.journal.clone());
        crate::telemetry::time_stage("route", &journal, || Box::pin(route(inner, call)))
    }
}

async fn route<A: Api>(inner: Arc<Inner>, call: Call<A>) -> CallResult<A> {
    let facts = AutoFacts::from_text(&call.request.prompt_text(), call.request.max_tokens());
    let first = match inner.resolve(call.request.model(), &facts, call.ctx.hints.tier.as_deref()) {
        Ok(group) => group,
        Err(error) => return pass_through(&inner, call, error).await,
    };
    let mut queue = VecDeque::from([(first.clone(), first)]);
    let mut tried: Vec<String> = Vec::new();
    let mut last = None;
    while let Some((from, group)) = queue.pop_front() {
        if tried.contains(&group) {
            continue;
        }
        tried.push(group.clone());
        match try_group(&inner, &group, &call).await {
            Ok((outcome, dep)) => {
                let fallbacks = (tried.len() - 1).to_string();
                let outcome = outcome.with_header("x-sconce-model", group).with_header("x-sconce-deployment", dep);
                return Ok(outcome.with_header("x-sconce-attempted-fallbacks", fallbacks));
            }
            Err(error) => {
                let cause = Cause::of(&error);
                if cause == Cause::Client {
                    return Err(error.into());
                }
                for next in inner.fallbacks(&group, cause) {
                    if let Some(metrics) = &inner.metrics {
                        metrics.fallback(&from, next, cause.as_str());
                    }
                    queue.push_back((group.clone(), next.clone()));
                }
                last = Some(error);
            }
        }
    }
    last_resort(&inner, &call, last, tried.len())
}

/// A name the routes lack goes to the passthrough backend as it is, when there is one.
async fn pass_through<A: Api>(inner: &Inner, call: Call<A>, error: ApiError) -> CallResult<A> {
    let Some(backend) = inner.passthrough.get().cloned() else { return Err(error.into()) };
    let model = call.request.model().unwrap_or_default().to_string();
    let outcome = A::select(backend).call(call).await?;
    Ok(outcome.with_header("x-sconce-model", model).with_header("x-sconce-deployment", "local"))
}

fn last_resort<A: Api>(inner: &Inner, call: &Call<A>, last: Option<ApiError>, tried: usize) -> CallResult<A> {
    let error = last.unwrap_or_else(|| ApiError::unavailable("no deployment could answer"));
    let (Some(text), Cause::Retryable) = (&inner.config.static_fallback, Cause::of(&error)) else {
        return Err(error.into());
    };
    let model = call.request.model().unwrap_or_default().to_string();
    let id = reply_id::<A>(&call.ctx.request_id);
    let outcome = Outcome::new(static_reply::<A>(id, &model, text, call.request.is_stream()));
    let outcome = outcome.with_header("x-sconce-model", model).with_header("x-sconce-deployment", "static-fallback");
    Ok(outcome.with_header("x-sconce-attempted-fallbacks", tried.to_string()))
}

/// Tries the group's open deployments, best first, until one answers.
async fn try_group<A: Api>(inner: &Inner, group: &str, call: &Call<A>) -> Result<(Outcome<A>, String), ApiError> {
    let (members, strategy, kv_aware) = match inner.groups.get(group) {
        Some(plan) => (plan.members.as_slice(), plan.strategy, plan.kv_aware),
        None => (&[][..], inner.config.strategy, false),
    };
    let now = Instant::now();
    let open = |i: &usize| inner.deployments[*i].breaker.state(now) != BreakerState::Open;
    let mut candidates: Vec<usize> = members.iter().copied().filter(open).collect();
    let loads: Vec<&Load> = inner.deployments.iter().map(|d| &*d.load).collect();
    order(&loads, &mut candidates, strategy, kv_aware);
    let mut last = ApiError::unavailable(format!("every deployment of `{group}` is unavailable (circuit open)"));
    for index in candidates {
        let dep = &inner.deployments[index];
        if !dep.breaker.try_acquire(Instant::now()) {
            continue;
        }
        match attempt(inner, dep, call).await {
            Ok(outcome) => return Ok((outcome, dep.name.clone())),
            Err(error) if Cause::of(&error) == Cause::Retryable => last = error,
            Err(error) => return Err(error),
        }
    }
    Err(last)
}

/// One deployment, with retries on retryable failures before any token was sent.
async fn attempt<A: Api>(inner: &Inner, dep: &Deployment, call: &Call<A>) -> Result<Outcome<A>, ApiError> {
    let retry = &inner.config.retry;
    let mut tries = 0;
    loop {
        let started = Instant::now();
        let result = match tokio::time::timeout(dep.timeout, call_once(dep, call)).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::UpstreamTimeout { deployment: dep.name.clone(), after: dep.timeout }.into()),
        };
        let cause = result.as_ref().err().map(Cause::of);
        let failed = cause.is_some_and(Cause::is_deployment_failure);
        dep.breaker.record(Instant::now(), !failed);
        dep.load.observe_latency(Instant::now(), started.elapsed().as_secs_f64() * 1000.0);
        inner.note_state(dep);
        if let Some(metrics) = &inner.metrics {
            metrics.attempt(&dep.name, if failed { "failure" } else { "success" });
        }
        if !failed || tries >= retry.max_retries || dep.breaker.state(Instant::now()) == BreakerState::Open {
            return result;
        }
        tries += 1;
        if let Some(metrics) = &inner.metrics {
            metrics.retry(&dep.name);
        }
        tokio::time::sleep(retry.delay(tries)).await;
    }
}

/// Calls the backend; a stream counts as answered once its first chunk arrives.
async fn call_once<A: Api>(dep: &Deployment, call: &Call<A>) -> Result<Outcome<A>, ApiError> {
    let guard = dep.load.start();
    let mut request = call.request.clone();
    request.set_model(dep.model.clone());
    let next = Call { request, ctx: call.ctx.clone() };
    let Outcome { reply, headers } = A::select(dep.backend.clone()).call(next).await.map_err(|f| f.error)?;
    let reply = match reply {
        Reply::Full(response) => Reply::Full(response),
        Reply::Stream(mut stream) => match stream.next().await {
            Some(Ok(first)) => {
                let rest = stream.map(move |item| {
                    let _held = &guard;
                    item
                });
                Reply::Stream(futures_util::stream::once(async { Ok(first) }).chain(rest).boxed())
            }
            Some(Err(error)) => return Err(error),
            None => return Err(ApiError::unavailable("the upstream stream ended before its first chunk")),
        },
    };
    Ok(Outcome { reply, headers })
}
