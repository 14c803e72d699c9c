//! The call model every endpoint shares. A typed request travels inward through the
//! stages as a [`Call`]; a [`Reply`] (one body or a stream of chunks) travels back out.
//! A stage is written once, generic over [`Api`], and works for every endpoint.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sconce_protocol::chat::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse};
use sconce_protocol::completion::{CompletionRequest, CompletionResponse};
use sconce_protocol::embeddings::{EmbeddingRequest, EmbeddingResponse};
use sconce_protocol::ApiError;

use crate::context::CallContext;
use crate::endpoint::{ApiReply, ApiRequest};
use crate::stack::Pipeline;

/// The OpenAI endpoints that run through the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// The ledger's `operation` and OpenTelemetry's `gen_ai.operation.name`.
    pub fn operation(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "text_completion",
            Self::Embeddings => "embeddings",
        }
    }
}

/// One endpoint: its request, full response and stream chunk types.
pub trait Api: Send + Sync + Sized + 'static {
    const ENDPOINT: Endpoint;
    /// The path under `/v1` (the same toward remote upstreams).
    const PATH: &'static str;
    /// The prefix of reply ids: `{prefix}-{request id}`.
    const ID_PREFIX: &'static str;
    type Request: ApiRequest;
    type Response: ApiReply;
    type Chunk: ApiReply;

    /// The full response of a finished stream (None when it never finished).
    fn fold(chunks: Vec<Self::Chunk>) -> Option<Self::Response>;
    /// A finished response as a stream: text cut into token-like pieces, then the usage chunk.
    fn replay(response: &Self::Response) -> Vec<Self::Chunk>;
    /// A one-choice answer with `text` (the router's static fallback).
    fn text_response(id: String, model: &str, text: &str) -> Self::Response;
    /// This endpoint's entry into a pipeline.
    fn entry(pipeline: &Pipeline) -> &Service<Self>;
    /// This endpoint's side of an upstream.
    fn select(upstream: Arc<dyn Upstream>) -> Service<Self>;
}

/// `/v1/chat/completions`.
pub struct Chat;
/// `/v1/completions`.
pub struct Completions;
/// `/v1/embeddings`: never streamed; its "stream" is the one full reply.
pub struct Embeddings;

/// The reply id of request `request_id` on endpoint `A`.
pub fn reply_id<A: Api>(request_id: &str) -> String {
    format!("{}-{request_id}", A::ID_PREFIX)
}

/// One request travelling through the stages.
#[derive(Debug, Clone)]
pub struct Call<A: Api> {
    pub request: A::Request,
    pub ctx: CallContext,
}

/// Chunks of a streamed reply. A successful stream ends with the usage chunk
/// (`choices: []`); the SSE encoder hides it unless the client asked for it.
pub type ReplyStream<C> = BoxStream<'static, Result<C, ApiError>>;

/// What a backend answers: one body, or a stream of chunks.
pub enum Reply<A: Api> {
    Full(Box<A::Response>),
    Stream(ReplyStream<A::Chunk>),
}

/// Response headers a stage wants added (cost, rate-limit state, cache status).
pub type ExtraHeaders = Vec<(&'static str, String)>;

/// A reply with the headers the stages attached.
pub struct Outcome<A: Api> {
    pub reply: Reply<A>,
    pub headers: ExtraHeaders,
}

impl<A: Api> Outcome<A> {
    pub fn new(reply: Reply<A>) -> Self {
        Self { reply, headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// An error with the headers the stages attached (e.g. `Retry-After`).
#[derive(Debug)]
pub struct Failure {
    pub error: ApiError,
    pub headers: ExtraHeaders,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self { error, headers: Vec::new() }
    }
}

impl From<crate::GatewayError> for Failure {
    fn from(error: crate::GatewayError) -> Self {
        Self::from(ApiError::from(error))
    }
}

pub type CallResult<A> = Result<Outcome<A>, Failure>;

/// Adds `headers` to what the stages below answered, reply or refusal.
pub fn with_headers<A: Api>(result: CallResult<A>, headers: ExtraHeaders) -> CallResult<A> {
    match result {
        Ok(mut outcome) => {
            outcome.headers.extend(headers);
            Ok(outcome)
        }
        Err(mut failure) => {
            failure.headers.extend(headers);
            Err(failure)
        }
    }
}

/// Answers one endpoint's calls: every stage, the router and the local engine.
pub trait Backend<A: Api>: Send + Sync + 'static {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>>;
}

/// A shared, type-erased backend of one endpoint.
pub type Service<A> = Arc<dyn Backend<A>>;

/// What sits under the stages and answers every endpoint: the local engine, a remote
/// upstream, or the router over them.
pub trait Upstream: Backend<Chat> + Backend<Completions> + Backend<Embeddings> {}

impl<T: Backend<Chat> + Backend<Completions> + Backend<Embeddings>> Upstream for T {}

impl Api for Chat {
    const ENDPOINT: Endpoint = Endpoint::Chat;
    const PATH: &'static str = "/chat/completions";
    const ID_PREFIX: &'static str = "chatcmpl";
    type Request = ChatCompletionRequest;
    type Response = ChatCompletionResponse;
    type Chunk = ChatCompletionChunk;

    fn fold(chunks: Vec<ChatCompletionChunk>) -> Option<ChatCompletionResponse> {
        crate::endpoint::chat::fold(chunks)
    }

    fn replay(response: &ChatCompletionResponse) -> Vec<ChatCompletionChunk> {
        crate::endpoint::chat::replay(response)
    }

    fn text_response(id: String, model: &str, text: &str) -> ChatCompletionResponse {
        crate::endpoint::chat::text_response(id, model, text)
    }

    fn entry(pipeline: &Pipeline) -> &Service<Self> {
        pipeline.chat()
    }

    fn select(upstream: Arc<dyn Upstream>) -> Service<Self> {
        upstream
    }
}

impl Api for Completions {
    const ENDPOINT: Endpoint = Endpoint::Completions;
    const PATH: &'static str = "/completions";
    const ID_PREFIX: &'static str = "cmpl";
    type Request = CompletionRequest;
    type Response = CompletionResponse;
    type Chunk = CompletionResponse;

    fn fold(chunks: Vec<CompletionResponse>) -> Option<CompletionResponse> {
        crate::endpoint::completions::fold(chunks)
    }

    fn replay(response: &CompletionResponse) -> Vec<CompletionResponse> {
        crate::endpoint::completions::replay(response)
    }

    fn text_response(id: String, model: &str, text: &str) -> CompletionResponse {
        crate::endpoint::completions::text_response(id, model, text)
    }

    fn entry(pipeline: &Pipeline) -> &Service<Self> {
        pipeline.completions()
    }

    fn select(upstream: Arc<dyn Upstream>) -> Service<Self> {
        upstream
    }
}

impl Api for Embeddings {
    const ENDPOINT: Endpoint = Endpoint::Embeddings;
    const PATH: &'static str = "/embeddings";
    const ID_PREFIX: &'static str = "embd";
    type Request = EmbeddingRequest;
    type Response = EmbeddingResponse;
    type Chunk = EmbeddingResponse;

    /// A "stream" of embeddings is one chunk: the full reply.
    fn fold(chunks: Vec<EmbeddingResponse>) -> Option<EmbeddingResponse> {
        chunks.into_iter().last()
    }

    fn replay(response: &EmbeddingResponse) -> Vec<EmbeddingResponse> {
        vec![response.clone()]
    }

    fn text_response(id: String, model: &str, _text: &str) -> EmbeddingResponse {
        crate::endpoint::embeddings::empty_response(id, model)
    }

    fn entry(pipeline: &Pipeline) -> &Service<Self> {
        pipeline.embeddings()
    }

    fn select(upstream: Arc<dyn Upstream>) -> Service<Self> {
        upstream
    }
}
