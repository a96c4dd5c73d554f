//! Failures that happen around a handler rather than in it, given the `ErrorResponse` details of
//! DESIGN.md that tonic's own statuses lack:
//!
//! - Requests tonic cannot decode (too large, garbage, truncated) are refused by tonic before a
//!   handler runs, with OUT_OF_RANGE or INTERNAL and no details. They become INVALID_ARGUMENT
//!   statuses, so clients see a clear input error instead of what looks like a server fault.
//! - A call not answered within the request timeout (or the client's `grpc-timeout`, when
//!   shorter) is answered DEADLINE_EXCEEDED, type IO, saying that an append may still be
//!   recorded. tonic's own timeout answered a bare CANCELLED, which clients take for a call
//!   their user cancelled. The timeout bounds the time to the response headers: unary calls;
//!   streams send theirs at once, or (a read) once its first small batch is read.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Code, Status};
use umadb_core::Error;
use umadb_proto::status_from_error;

#[derive(Clone)]
pub(crate) struct WireErrors<S> {
    inner: S,
    max_message_bytes: usize,
    request_timeout: Option<Duration>,
}

impl<S> WireErrors<S> {
    pub fn new(inner: S, max_message_bytes: usize, request_timeout: Option<Duration>) -> Self {
        WireErrors {
            inner,
            max_message_bytes,
            request_timeout,
        }
    }
}

impl<S: NamedService> NamedService for WireErrors<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for WireErrors<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let limit = match (self.request_timeout, client_deadline(request.headers())) {
            (Some(server), Some(client)) => Some(server.min(client)),
            (server, client) => server.or(client),
        };
        let future = self.inner.call(request);
        let max = self.max_message_bytes;
        Box::pin(async move {
            let response = match limit {
                None => future.await?,
                Some(limit) => match tokio::time::timeout(limit, future).await {
                    Ok(response) => response?,
                    // Dropping the handler's future does not withdraw an append the writer
                    // already has: it commits or fails on its own.
                    Err(_) => return Ok(timed_out(limit)),
                },
            };
            Ok(rewrite(response, max))
        })
    }
}

/// The client's deadline for the call, from its `grpc-timeout` header (up to 8 digits and a
/// unit); none when absent or malformed. tonic's server also bounds the call by it (outside
/// this wrapper, answering a bare CANCELLED if its timer is seen first); the client stops
/// waiting at that moment itself, so what it is answered then matters little.
fn client_deadline(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(unit_at);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn timed_out(limit: Duration) -> http::Response<Body> {
    let message = format!(
        "the call was not answered within {limit:?} (the server's request timeout, or the \
         client's deadline when shorter); an append may still be recorded after this: append \
         it again with the same event uuids (an idempotent retry) or read to check"
    );
    tracing::debug!("{message}");
    umadb_proto::deadline_exceeded(&message).into_http()
}

/// Replaces a detail-less decode failure in a trailers-only response; leaves the rest alone.
fn rewrite(response: http::Response<Body>, max_message_bytes: usize) -> http::Response<Body> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    let error = match status.code() {
        Code::OutOfRange => Error::InvalidArgument(format!(
            "the request is larger than the {max_message_bytes} bytes this server accepts per \
             message ({}); send fewer or smaller events per append",
            status.message()
        )),
        // Bad input, as DESIGN.md counts garbage bytes: INVALID_ARGUMENT of type
        // INVALID_ARGUMENT, like every other input the server refuses.
        Code::Internal => Error::InvalidArgument(format!(
            "the request is not a valid umadb.v1 message ({})",
            status.message()
        )),
        _ => return response,
    };
    tracing::debug!(error = %error, "refused an undecodable request");
    let replacement = status_from_error(&error);
    let (mut parts, body) = response.into_parts();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        parts.headers.remove(name);
    }
    if replacement.add_header(&mut parts.headers).is_err() {
        return status.into_http();
    }
    http::Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "grpc-timeout",
            http::HeaderValue::from_str(value).expect("header value"),
        );
        client_deadline(&headers)
    }

    #[test]
    fn a_client_deadline_is_read_in_every_unit_of_the_grpc_spec() {
        assert_eq!(deadline("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(deadline("3M"), Some(Duration::from_secs(180)));
        assert_eq!(deadline("5S"), Some(Duration::from_secs(5)));
        assert_eq!(deadline("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            deadline("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(deadline("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(client_deadline(&http::HeaderMap::new()), None);
    }

    #[test]
    fn a_malformed_client_deadline_is_ignored() {
        for value in [
            "",
            "S",
            "5",
            "5s",
            "+5S",
            "-5S",
            "123456789S",
            "1.5S",
            "5SS",
        ] {
            assert_eq!(deadline(value), None, "{value:?}");
        }
    }
}
