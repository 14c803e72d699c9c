//! The stage stack: the stages in the configured order over one upstream (the local
//! engine or the router), built once per endpoint. With the gateway off it is empty.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::api::{Api, Call, CallResult, Chat, Completions, Embeddings, Endpoint, Service, Upstream};
use crate::cache::{CachedStage, ResponseCache};
use crate::guard::{GuardStage, Guarded};
use crate::meter::{MeterState, Metered};
use crate::policy::{Policed, PolicyState};
use crate::prompts::{PromptRegistry, PromptStage};
use crate::semantic::{SemanticCache, SemanticStage};
use crate::telemetry::timed;

/// A stage's name in config (`[gateway] stages = [...]`) and in traces (`gateway.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageName {
    Meter,
    Prompt,
    Policy,
    Guard,
    Cache,
    #[serde(rename = "semantic_cache")]
    SemanticCache,
}

impl StageName {
    /// Metering outermost, so refusals are metered too; then the prompt, so the policy and
    /// every later stage see the rendered request; then policy, guardrails, the exact cache
    /// and, inside it, the semantic cache (only what the exact cache missed reaches it).
    pub const DEFAULT_ORDER: [StageName; 6] =
        [Self::Meter, Self::Prompt, Self::Policy, Self::Guard, Self::Cache, Self::SemanticCache];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Meter => "meter",
            Self::Prompt => "prompt",
            Self::Policy => "policy",
            Self::Guard => "guard",
            Self::Cache => "cache",
            Self::SemanticCache => "semantic_cache",
        }
    }
}

/// One configured stage with its shared state.
#[derive(Clone)]
pub enum Stage {
    Meter(Arc<MeterState>),
    Prompt(Arc<PromptRegistry>),
    Policy(Arc<PolicyState>),
    Guard(Arc<GuardStage>),
    Cache(Arc<ResponseCache>),
    SemanticCache(Arc<SemanticCache>),
}

impl Stage {
    pub fn name(&self) -> StageName {
        match self {
            Self::Meter(_) => StageName::Meter,
            Self::Prompt(_) => StageName::Prompt,
            Self::Policy(_) => StageName::Policy,
            Self::Guard(_) => StageName::Guard,
            Self::Cache(_) => StageName::Cache,
            Self::SemanticCache(_) => StageName::SemanticCache,
        }
    }

    /// Which endpoints a stage takes part in: the one place that says so. The prompt
    /// registry holds chat messages, so it has nothing to do for `/v1/completions` or
    /// `/v1/embeddings`; the semantic cache embeds the last user message, so it applies to chat
    /// only; the response cache and its replay sit out embeddings (their guard checks the
    /// inputs only: the reply has no text).
    pub fn applies_to(&self, endpoint: Endpoint) -> bool {
        !matches!(
            (self, endpoint),
            (Self::Prompt(_) | Self::SemanticCache(_), Endpoint::Completions | Endpoint::Embeddings)
                | (Self::Cache(_), Endpoint::Embeddings)
        )
    }

    fn wrap<A: Api>(&self, inner: Service<A>) -> Service<A> {
        match self {
            Self::Meter(state) => Arc::new(Metered::new(state.clone(), inner)),
            Self::Prompt(registry) => Arc::new(PromptStage::new(registry.clone(), inner)),
            Self::Policy(state) => Arc::new(Policed::new(state.clone(), inner)),
            Self::Guard(stage) => Arc::new(Guarded::new(stage.clone(), inner)),
            Self::Cache(cache) => Arc::new(CachedStage::new(cache.clone(), inner)),
            Self::SemanticCache(cache) => Arc::new(SemanticStage::new(cache.clone(), inner)),
        }
    }
}

/// Every endpoint's way in: its stages, outermost first, over the upstream.
#[derive(Clone)]
pub struct Pipeline {
    chat: Service<Chat>,
    completions: Service<Completions>,
    embeddings: Service<Embeddings>,
    stages: Vec<Stage>,
}

impl Pipeline {
    /// `stages` outermost first; an empty list calls the upstream directly.
    pub fn new(stages: Vec<Stage>, upstream: Arc<dyn Upstream>) -> Self {
        let chat = build(&stages, Chat::select(upstream.clone()));
        let completions = build(&stages, Completions::select(upstream.clone()));
        let embeddings = build(&stages, Embeddings::select(upstream));
        Self { chat, completions, embeddings, stages }
    }

    /// Runs one call through its endpoint's stages.
    pub fn call<A: Api>(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        A::entry(self).call(call)
    }

    pub fn chat(&self) -> &Service<Chat> {
        &self.chat
    }

    pub fn completions(&self) -> &Service<Completions> {
        &self.completions
    }

    pub fn embeddings(&self) -> &Service<Embeddings> {
        &self.embeddings
    }

    /// The stages an endpoint's calls pass, outermost first.
    pub fn stages(&self, endpoint: Endpoint) -> Vec<StageName> {
        self.stages.iter().filter(|stage| stage.applies_to(endpoint)).map(Stage::name).collect()
    }
}

fn build<A: Api>(stages: &[Stage], upstream: Service<A>) -> Service<A> {
    let applicable = stages.iter().rev().filter(|stage| stage.applies_to(A::ENDPOINT));
    applicable.fold(upstream, |inner, stage| timed(stage.name().as_str(), stage.wrap(inner)))
}
