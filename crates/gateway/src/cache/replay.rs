//! What a cache entry holds (an endpoint's full response), how a live stream is folded
//! into one, and how an entry or a static answer is replayed as a stream.

use futures_util::StreamExt;

use crate::api::{reply_id, Api, Reply, ReplyStream};
use crate::endpoint::ApiReply;

/// Finish reasons of complete answers; anything else is never cached.
fn is_complete_reason(reason: Option<&str>) -> bool {
    matches!(reason, Some("stop" | "length"))
}

/// Whether every choice ended on its own (not cut short or filtered).
pub fn is_complete(response: &impl ApiReply) -> bool {
    let reasons = response.finish_reasons();
    !reasons.is_empty() && reasons.into_iter().all(is_complete_reason)
}

/// A stored answer as a hit for request `request_id`: its id, prompt tokens marked cached.
pub fn hit<A: Api>(mut response: A::Response, request_id: &str, stream: bool) -> Reply<A> {
    response.set_id(reply_id::<A>(request_id));
    if let Some(usage) = response.usage_mut() {
        usage.prompt_tokens_details.cached_tokens = usage.prompt_tokens;
    }
    replayed::<A>(response, stream)
}

/// The configured last-resort answer, as a full reply or a stream.
pub fn static_reply<A: Api>(id: String, model: &str, text: &str, stream: bool) -> Reply<A> {
    replayed::<A>(A::text_response(id, model, text), stream)
}

fn replayed<A: Api>(response: A::Response, stream: bool) -> Reply<A> {
    if stream {
        Reply::Stream(futures_util::stream::iter(A::replay(&response).into_iter().map(Ok)).boxed())
    } else {
        Reply::Full(Box::new(response))
    }
}

/// Passes the chunks on and keeps them; once the stream ends without an error, hands
/// the folded response to `complete`.
pub fn collect_into<A: Api>(
    stream: ReplyStream<A::Chunk>,
    complete: impl FnOnce(A::Response) + Send + 'static,
) -> ReplyStream<A::Chunk> {
    let mut kept = Some(Vec::new());
    let mut complete = Some(complete);
    let items = stream.map(Some).chain(futures_util::stream::once(async { None }));
    items
        .filter_map(move |item| {
            let out = match item {
                Some(Ok(chunk)) => {
                    if let Some(chunks) = kept.as_mut() {
                        chunks.push(chunk.clone());
                    }
                    Some(Ok(chunk))
                }
                Some(Err(error)) => {
                    kept = None;
                    Some(Err(error))
                }
                None => {
                    if let (Some(response), Some(complete)) = (kept.take().and_then(A::fold), complete.take()) {
                        complete(response);
                    }
                    None
                }
            };
            futures_util::future::ready(out)
        })
        .boxed()
}
