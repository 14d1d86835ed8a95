//! Reading a request body without trusting its size.

use super::ApiError;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, StatusCode};

/// The 413 answer for a body over `limit` bytes; `what` names the body
/// ("body", "checkpoint").
fn too_large(what: &str, limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body: {what} larger than the limit of {limit} bytes"),
    )
    .with_limit(limit)
}

/// The whole body, refused with a 413 once it passes `limit` bytes. An
/// announced length over the limit is answered before any byte is read; a
/// body that lies about its length or is chunked is cut off at the limit.
pub(super) async fn read_limited(req: Request, what: &str, limit: u64) -> Result<Bytes, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large(what, limit));
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(req.into_body(), cap)
        .await
        .map_err(|e| {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                too_large(what, limit)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, format!("body: {e}"))
            }
        })
}
