//! One id per request: the client's `x-request-id` when it is a sane token, else a new
//! one. It is set on the request (for the log span and the handlers) and echoed back.
//! Plain tower layers, so the id costs no boxed middleware per request.

use axum::http::{HeaderName, HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest client id kept.
const MAX_LEN: usize = 128;

pub fn header_name() -> HeaderName {
    HeaderName::from_static(REQUEST_ID_HEADER)
}

/// Letters, digits and `-_.:`, 1 to 128 of them: safe in logs, labels and reply ids.
pub fn is_valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The request's id, once the layers ran (a new one if they did not).
pub fn from_headers(headers: &axum::http::HeaderMap) -> String {
    let sent = headers.get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok());
    sent.filter(|id| is_valid(id)).map_or_else(generate, str::to_string)
}

/// Removes a client id that is not a sane token, so that [`NewId`] makes one.
pub fn drop_invalid<B>(mut request: Request<B>) -> Request<B> {
    let sent = request.headers().get(REQUEST_ID_HEADER).map(|value| value.to_str().is_ok_and(is_valid));
    if sent == Some(false) {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

/// Makes 32 hex digits for a request that came without a (valid) id.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewId;

impl MakeRequestId for NewId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&generate()).ok().map(RequestId::new)
    }
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

    #[test]
    fn invalid_client_ids_are_dropped_and_valid_ones_kept() {
        let request = |id: &str| Request::builder().header(REQUEST_ID_HEADER, id).body(()).unwrap();
        assert!(drop_invalid(request("has space")).headers().get(REQUEST_ID_HEADER).is_none());
        assert_eq!(from_headers(drop_invalid(request("ok-1")).headers()), "ok-1");
        assert_eq!(from_headers(Request::new(()).headers()).len(), 32);
    }
}
