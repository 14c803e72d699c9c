//! One id per request: the client's `x-request-id` when it is a sane token, else a new
//! one. It is set on the request (for the log span and the handlers) and echoed back.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest client id kept.
const MAX_LEN: usize = 128;

/// The request's id, as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Letters, digits and `-_.:`, 1 to 128 of them: safe in logs, labels and reply ids.
pub fn is_valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Middleware: keeps a valid client id, replaces a missing or invalid one.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let sent = request.headers().get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok());
    let id = sent.filter(|id| is_valid(id)).map_or_else(generate, str::to_string);
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(is_valid("req-42_a.b:c"));
        assert!(is_valid(&generate()));
        for bad in ["", "has space", "ünï", "semi;colon", &"x".repeat(129)] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
