#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use sconce_protocol::chat::ChatCompletionRequest;
use sconce_protocol::ApiError;

use super::replay::split_pieces;
use super::*;
use crate::route::RequestHints;
use crate::{CallContext, Principal};

/// Answers "Hello there friend" (full or as three chunks), or fails with `fail`.
struct Fake {
    calls: AtomicUsize,
    fail: Option<u16>,
}

impl ChatBackend for Fake {
    fn chat(&self, call: ChatCall) -> BoxFuture<'static, ChatResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = self.fail;
        Box::pin(async move {
            if let Some(status) = fail {
                let mut error = ApiError::overloaded("busy");
                error.status = status;
                return Err(error.into());
            }
            let reply = replay::static_reply("m", "Hello there friend", call.request.sampling.is_stream());
            Ok(ChatOutcome::new(match reply {
                ChatReply::Full(mut r) => {
                    r.usage = sconce_protocol::Usage::new(7, 3, 0);
                    ChatReply::Full(r)
                }
                ChatReply::Stream(s) => ChatReply::Stream(
                    s.map(|c| {
                        c.map(|mut c| {
                            if c.usage.is_some() {
                                c.usage = Some(Some(sconce_protocol::Usage::new(7, 3, 0)));
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

fn setup(fail: Option<u16>) -> (Arc<Fake>, SharedBackend) {
    let fake = Arc::new(Fake { calls: AtomicUsize::new(0), fail });
    let cache = ResponseCache::new(CacheConfig { enabled: true, ..CacheConfig::default() }, None).unwrap();
    let backend = CacheLayer(Arc::new(cache)).layer(fake.clone());
    (fake, backend)
}

fn call(stream: bool, temperature: f32, hints: RequestHints) -> ChatCall {
    let json = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "temperature": temperature, "stream": stream});
    let request: ChatCompletionRequest = serde_json::from_value(json).unwrap();
    let mut ctx = CallContext::new("r", Principal::default());
    ctx.hints = hints;
    ChatCall { request, ctx }
}

fn header(outcome: &ChatOutcome) -> &str {
    &outcome.headers.iter().find(|(k, _)| *k == "x-sconce-cache").unwrap().1
}

async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}

#[tokio::test]
async fn second_deterministic_request_hits_with_same_text_and_usage() {
    let (fake, backend) = setup(None);
    let first = backend.chat(call(false, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&first), "miss");
    settle().await;
    let second = backend.chat(call(false, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&second), "hit");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    let (ChatReply::Full(a), ChatReply::Full(b)) = (first.reply, second.reply) else { panic!("full replies") };
    assert_eq!(a.choices[0].message.content, b.choices[0].message.content);
    assert_eq!((b.usage.prompt_tokens, b.usage.completion_tokens), (7, 3));
    assert_eq!(b.usage.prompt_tokens_details.cached_tokens, 7);
}

async fn chunks(outcome: ChatOutcome) -> Vec<sconce_protocol::chat::ChatCompletionChunk> {
    let ChatReply::Stream(stream) = outcome.reply else { panic!("stream") };
    stream.map(|c| c.unwrap()).collect().await
}

#[tokio::test]
async fn a_streamed_hit_replays_token_by_token_with_usage() {
    let (fake, backend) = setup(None);
    let live = chunks(backend.chat(call(true, 0.0, RequestHints::default())).await.unwrap()).await;
    settle().await;
    let outcome = backend.chat(call(true, 0.0, RequestHints::default())).await.unwrap();
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
    let full = backend.chat(call(false, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&full), "hit");
}

#[tokio::test]
async fn errors_are_never_cached() {
    for status in [429, 500, 503] {
        let (fake, backend) = setup(Some(status));
        for _ in 0..2 {
            let error = backend.chat(call(false, 0.0, RequestHints::default())).await.err().unwrap();
            assert_eq!(error.error.status, status);
            settle().await;
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn sampling_no_cache_no_store_and_cancelled_streams_skip_the_cache() {
    let (fake, backend) = setup(None);
    backend.chat(call(false, 0.7, RequestHints::default())).await.unwrap();
    backend.chat(call(false, 0.7, RequestHints::default())).await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "sampling requests are not cached");
    let no_store = RequestHints::default().with_cache_control("no-store");
    backend.chat(call(false, 0.0, no_store)).await.unwrap();
    settle().await;
    let outcome = backend.chat(call(false, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&outcome), "miss");
    settle().await;
    let no_cache = RequestHints::default().with_cache_control("no-cache, max-age=0");
    let outcome = backend.chat(call(false, 0.0, no_cache)).await.unwrap();
    assert_eq!(header(&outcome), "miss");
}

#[tokio::test]
async fn a_cancelled_stream_is_not_stored() {
    let (_fake, backend) = setup(None);
    let outcome = backend.chat(call(true, 0.0, RequestHints::default())).await.unwrap();
    let ChatReply::Stream(mut stream) = outcome.reply else { panic!() };
    stream.next().await;
    drop(stream);
    settle().await;
    let again = backend.chat(call(true, 0.0, RequestHints::default())).await.unwrap();
    assert_eq!(header(&again), "miss");
}

#[test]
fn pieces_join_back() {
    let text = "Hello  there\nfriend ";
    let pieces = split_pieces(text);
    assert_eq!(pieces.concat(), text);
    assert_eq!(pieces.len(), 3);
}
