#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use sconce_protocol::chat::ChatCompletionRequest;
use sconce_protocol::completion::CompletionRequest;
use sconce_protocol::{ApiError, Usage};

use super::*;
use crate::api::{reply_id, Chat, Completions};
use crate::endpoint::split_pieces;
use crate::route::RequestHints;
use crate::{CallContext, Principal};

/// Answers "Hello there friend" (full or as chunks) on any endpoint, or fails with `fail`.
struct Fake {
    calls: AtomicUsize,
    fail: Option<u16>,
}

impl<A: Api> Backend<A> for Fake {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = self.fail;
        Box::pin(async move {
            if let Some(status) = fail {
                let mut error = ApiError::overloaded("busy");
                error.status = status;
                return Err(error.into());
            }
            let id = reply_id::<A>(&call.ctx.request_id);
            let reply = replay::static_reply::<A>(id, "m", "Hello there friend", call.request.is_stream());
            let with_usage = |mut reply: A::Response| {
                if let Some(usage) = reply.usage_mut() {
                    *usage = Usage::new(7, 3, 0);
                }
                reply
            };
            Ok(Outcome::new(match reply {
                Reply::Full(r) => Reply::Full(Box::new(with_usage(*r))),
                Reply::Stream(s) => Reply::Stream(
                    s.map(|c| {
                        c.map(|mut c| {
                            if let Some(usage) = c.usage_mut() {
                                *usage = Usage::new(7, 3, 0);
                            }
                            c
                        })
                    })
                    .boxed(),
                ),
            }))
        })
    }
}

fn setup<A: Api>(fail: Option<u16>) -> (Arc<Fake>, Service<A>) {
    let fake = Arc::new(Fake { calls: AtomicUsize::new(0), fail });
    let cache = ResponseCache::new(CacheConfig { enabled: true, ..CacheConfig::default() }, None).unwrap();
    let backend: Service<A> = Arc::new(CachedStage::<A>::new(Arc::new(cache), fake.clone()));
    (fake, backend)
}

fn call(stream: bool, temperature: f32, hints: RequestHints) -> Call<Chat> {
    let json = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "temperature": temperature, "stream": stream});
    let request: ChatCompletionRequest = serde_json::from_value(json).unwrap();
    let mut ctx = CallContext::new("r", Principal::default());
    ctx.hints = hints;
    Call { request, ctx }
}

fn completion_call(request_id: &str, stream: bool) -> Call<Completions> {
    let json = serde_json::json!({"model": "m", "prompt": "Say hello", "temperature": 0.0, "stream": stream});
    let request: CompletionRequest = serde_json::from_value(json).unwrap();
    Call { request, ctx: CallContext::new(request_id, Principal::default()) }
}

fn header<A: Api>(outcome: &Outcome<A>) -> &str {
    &outcome.headers.iter().find(|(k, _)| *k == CACHE_HEADER).unwrap().1
}

async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}

#[tokio::test]
async fn second_deterministic_request_hits_with_same_text_and_usage() {
    let (fake, backend) = setup::<Chat>(None);
    let first = backend.call(call(false, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&first), "miss");
    settle().await;
    let second = backend.call(call(false, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&second), "hit");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    let (Reply::Full(a), Reply::Full(b)) = (first.reply, second.reply) else { panic!("full replies") };
    assert_eq!(a.choices[0].message.content, b.choices[0].message.content);
    assert_eq!((b.usage.prompt_tokens, b.usage.completion_tokens), (7, 3));
    assert_eq!(b.usage.prompt_tokens_details.cached_tokens, 7);
}

async fn chunks<A: Api>(outcome: Outcome<A>) -> Vec<A::Chunk> {
    let Reply::Stream(stream) = outcome.reply else { panic!("stream") };
    stream.map(|c| c.unwrap()).collect().await
}

#[tokio::test]
async fn a_streamed_hit_replays_token_by_token_with_usage() {
    let (fake, backend) = setup::<Chat>(None);
    let live = chunks(backend.call(call(true, 0.0, RequestHints::default())).await.unwrap()).await;
    settle().await;
    let outcome = backend.call(call(true, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&outcome), "hit");
    let hit = chunks(outcome).await;
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    let text = |cs: &[sconce_protocol::chat::ChatCompletionChunk]| {
        cs.iter().flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone())).collect::<String>()
    };
    assert_eq!(text(&hit), text(&live));
    let content_chunks = hit
        .iter()
        .filter(|c| c.choices.iter().any(|ch| ch.delta.content.as_deref().is_some_and(|t| !t.is_empty())))
        .count();
    assert!(content_chunks >= 3, "{content_chunks} content chunks");
    let usage = hit.last().unwrap().usage.unwrap().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 3));
    // A full request for the same prompt is answered from the streamed entry.
    let full = backend.call(call(false, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&full), "hit");
}

#[tokio::test]
async fn errors_are_never_cached() {
    for status in [429, 500, 503] {
        let (fake, backend) = setup::<Chat>(Some(status));
        for _ in 0..2 {
            let error = backend.call(call(false, 0.0, RequestHints::default())).await.err().unwrap();
            assert_eq!(error.error.status, status);
            settle().await;
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn sampling_no_cache_no_store_and_cancelled_streams_skip_the_cache() {
    let (fake, backend) = setup::<Chat>(None);
    backend.call(call(false, 0.7, RequestHints::default())).await.unwrap();
    backend.call(call(false, 0.7, RequestHints::default())).await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "sampling requests are not cached");
    let no_store = RequestHints::default().with_cache_control("no-store");
    backend.call(call(false, 0.0, no_store)).await.unwrap();
    settle().await;
    let outcome = backend.call(call(false, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&outcome), "miss");
    settle().await;
    let no_cache = RequestHints::default().with_cache_control("no-cache, max-age=0");
    let outcome = backend.call(call(false, 0.0, no_cache)).await.unwrap();
    assert_eq!(header(&outcome), "miss");
}

#[tokio::test]
async fn a_cancelled_stream_is_not_stored() {
    let (_fake, backend) = setup::<Chat>(None);
    let outcome = backend.call(call(true, 0.0, RequestHints::default())).await.unwrap();
    let Reply::Stream(mut stream) = outcome.reply else { panic!() };
    stream.next().await;
    drop(stream);
    settle().await;
    let again = backend.call(call(true, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&again), "miss");
}

#[tokio::test]
async fn a_completion_hits_with_its_text_usage_and_the_current_request_id() {
    let (fake, backend) = setup::<Completions>(None);
    let first = backend.call(completion_call("r1", false)).await.unwrap();
    assert_eq!(header(&first), "miss");
    settle().await;
    let second = backend.call(completion_call("r2", false)).await.unwrap();
    assert_eq!(header(&second), "hit");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    let (Reply::Full(a), Reply::Full(b)) = (first.reply, second.reply) else { panic!("full replies") };
    assert_eq!(a.id, "cmpl-r1");
    assert_eq!(b.id, "cmpl-r2", "a hit answers with the current request's id");
    assert_eq!(a.choices[0].text, b.choices[0].text);
    let usage = b.usage.flatten().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens), (7, 3, 7));
    // The same entry replayed as a stream: the text in pieces, then the usage chunk.
    let streamed = chunks(backend.call(completion_call("r3", true)).await.unwrap()).await;
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert!(streamed.iter().all(|c| c.id == "cmpl-r3"));
    assert!(streamed.iter().filter(|c| !c.choices.is_empty()).count() >= 3);
    assert_eq!(
        streamed.iter().flat_map(|c| c.choices.iter().map(|ch| ch.text.as_str())).collect::<String>(),
        a.choices[0].text
    );
    assert!(streamed.last().unwrap().is_usage_only());
}

#[test]
fn pieces_join_back() {
    let text = "Hello  there\nfriend ";
    let pieces = split_pieces(text);
    assert_eq!(pieces.concat(), text);
    assert_eq!(pieces.len(), 3);
}
