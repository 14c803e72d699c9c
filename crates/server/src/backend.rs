//! The only module that talks to `sconce_engine` and `sconce_text`: launching the
//! engine, tokenizing, rendering chat templates and decoding token text.

use std::sync::Arc;

use sconce_engine::{EngineHandle, ModelFrontend};
use sconce_protocol::ApiError;
use sconce_text::{ChatMessage, Tokenizer};

pub use sconce_engine::{
    Constraint, Delta, EngineError, EngineState, EngineStats, FinishReason, GenerateRequest, GrammarSpec, ModelInfo,
    RequestStream, RequestTimings, SamplingParams, TokenLogprob, Usage as EngineUsage,
};

use crate::config::Config;

/// A loaded model behind its engine loop, with its text side. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    handle: EngineHandle,
    frontend: Arc<ModelFrontend>,
}

impl Backend {
    /// Loads the model named in `config` and starts the engine (on a blocking thread).
    pub async fn launch(config: &Config) -> anyhow::Result<Self> {
        let (load, engine) = (config.model.clone(), config.engine.clone());
        let (handle, frontend) = tokio::task::spawn_blocking(move || sconce_engine::launch(&load, engine)).await??;
        Ok(Self { handle, frontend: Arc::new(frontend) })
    }

    pub fn submit(&self, request: GenerateRequest) -> Result<RequestStream, EngineError> {
        self.handle.submit(request)
    }

    pub fn stats(&self) -> EngineStats {
        self.handle.stats()
    }

    pub fn state(&self) -> EngineState {
        self.handle.state()
    }

    /// Resolves with the reason once the engine thread has failed.
    pub async fn failed(&self) -> String {
        self.handle.failed().await
    }

    pub fn info(&self) -> &ModelInfo {
        self.handle.model_info()
    }

    /// Tokenizes a completion prompt, adding BOS (once).
    pub fn encode_text(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ApiError> {
        self.frontend
            .encode_text(text, add_special_tokens)
            .map_err(|e| ApiError::invalid_param("prompt", e.to_string()))
    }

    /// Renders `(role, content)` messages with the chat template and tokenizes them
    /// (the template writes BOS itself).
    pub fn encode_chat(
        &self,
        messages: Vec<(String, String)>,
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, ApiError> {
        let messages: Vec<ChatMessage> =
            messages.into_iter().map(|(role, content)| ChatMessage::new(role, content)).collect();
        self.encode_chat_messages(&messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// Like [`Backend::encode_chat`], with whole messages (tool calls, ids) and extra
    /// template variables (`tools`).
    pub fn encode_chat_messages(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        context: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<u32>, ApiError> {
        self.frontend
            .encode_chat(messages, add_generation_prompt, context)
            .map_err(|e| ApiError::invalid_param("messages", e.to_string()))
    }

    /// Compiles an output constraint (or takes it from the cache); a bad one is a 400.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, ApiError> {
        self.handle.grammars().compile(spec).map_err(|e| match e {
            EngineError::InvalidParam { param, message } => ApiError::invalid_param(param, message),
            other => ApiError::internal(other.to_string()),
        })
    }

    /// Mask and compile timings of the constraints.
    pub fn constraint_stats(&self) -> sconce_engine::MaskStatsSnapshot {
        self.handle.grammars().stats().snapshot()
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, ApiError> {
        self.tokenizer().decode(ids, false).map_err(|e| ApiError::invalid_param("tokens", e.to_string()))
    }

    pub fn token_text(&self) -> TokenText {
        TokenText(self.tokenizer().clone())
    }

    /// Stops the engine loop (aborting what still runs) and waits for it.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// The model's tokenizer, chat template and EOS ids.
    pub fn frontend(&self) -> &ModelFrontend {
        &self.frontend
    }

    fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.frontend.tokenizer
    }
}

/// Turns single token ids into the strings shown in logprobs.
#[derive(Clone)]
pub struct TokenText(Arc<Tokenizer>);

impl TokenText {
    pub fn token(&self, id: u32) -> String {
        match self.0.decode(&[id], false) {
            Ok(text) => text,
            Err(_) => self.0.id_to_token(id).unwrap_or_default(),
        }
    }
}
