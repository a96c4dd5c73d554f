//! Requests tonic cannot decode (too large, garbage, truncated) are refused by tonic before a
//! handler runs, with OUT_OF_RANGE or INTERNAL and no `ErrorResponse`. This wrapper turns those
//! into the INVALID_ARGUMENT statuses of DESIGN.md, with details, so clients see a clear input
//! error instead of what looks like a server fault.

use std::convert::Infallible;
use std::task::{Context, Poll};
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
}

impl<S> WireErrors<S> {
    pub fn new(inner: S, max_message_bytes: usize) -> Self {
        WireErrors {
            inner,
            max_message_bytes,
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
        let future = self.inner.call(request);
        let max = self.max_message_bytes;
        Box::pin(async move {
            let response = future.await?;
            Ok(rewrite(response, max))
        })
    }
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
        Code::Internal => Error::Serialization(format!(
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
