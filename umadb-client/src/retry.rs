//! Turning statuses into errors, and retrying the calls that are safe to repeat.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use tonic::{Code, Status};

use crate::{Error, Result, RetryPolicy};

/// Whether a failed attempt may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Repeating the call cannot change what it does: retry any transient failure.
    Safe,
    /// Retry only when the request certainly never reached the server.
    IfNeverSent,
}

/// Runs `attempt` until it succeeds, fails for good, or the policy's retries are spent. Each
/// attempt is bounded by `timeout`, when given.
pub(crate) async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    timeout: Option<Duration>,
    repeat: Repeat,
    what: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut retry = 0;
    loop {
        let outcome = match timeout {
            None => attempt().await,
            Some(limit) => match tokio::time::timeout(limit, attempt()).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(Error::Transport(format!(
                        "{what} timed out after {limit:?}"
                    )))
                }
            },
        };
        let status = match outcome {
            Ok(value) => return Ok(value),
            Err(status) => status,
        };
        let retryable = match repeat {
            Repeat::Safe => is_transient(&status),
            Repeat::IfNeverSent => was_never_sent(&status),
        };
        if !retryable || retry >= policy.max_retries {
            return Err(error_from_status(&status));
        }
        tokio::time::sleep(policy.backoff(retry)).await;
        retry += 1;
    }
}

/// The error a status stands for. Statuses made by the client's own transport (connection
/// refused, reset, TLS failure) are [`Error::Transport`] whatever their code; statuses sent by
/// the server are decoded by [`umadb_proto::error_from_status`].
pub(crate) fn error_from_status(status: &Status) -> Error {
    if is_local(status) {
        return Error::Transport(describe(status));
    }
    umadb_proto::error_from_status(status)
}

/// Made by the client's transport rather than sent by the server: tonic attaches the
/// underlying error as the source, and a server's status carries none.
fn is_local(status: &Status) -> bool {
    status.source().is_some() && status.details().is_empty()
}

/// A failure that may pass: the server is unreachable or the connection broke. TLS failures
/// (certificates, handshakes) are local too but will not pass by waiting.
fn is_transient(status: &Status) -> bool {
    if is_local(status) {
        return !io_error_kinds(status).contains(&std::io::ErrorKind::InvalidData);
    }
    status.code() == Code::Unavailable
}

/// The connection was refused, so no byte of the request was sent: repeating it is safe even
/// for an append that is not idempotent.
fn was_never_sent(status: &Status) -> bool {
    is_local(status) && io_error_kinds(status).contains(&std::io::ErrorKind::ConnectionRefused)
}

fn io_error_kinds(status: &Status) -> Vec<std::io::ErrorKind> {
    let mut kinds = Vec::new();
    let mut next = status.source();
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            kinds.push(io.kind());
        }
        next = error.source();
    }
    kinds
}

/// The status message followed by each distinct message of its source chain.
fn describe(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut next = status.source();
    while let Some(error) = next {
        let message = error.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        next = error.source();
    }
    text
}

/// Describes a transport error raised while connecting.
pub(crate) fn connect_error(error: tonic::transport::Error, url: &str) -> Error {
    let mut text = format!("cannot connect to {url}: {error}");
    let mut next = error.source();
    while let Some(cause) = next {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        next = cause.source();
    }
    Error::Transport(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn refused() -> Status {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        Status::from_error(Box::new(io))
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        }
    }

    #[test]
    fn local_status_is_a_transport_error_whatever_its_code() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad certificate");
        let status = Status::from_error(Box::new(io));
        assert!(
            matches!(error_from_status(&status), Error::Transport(m) if m.contains("bad certificate"))
        );
    }

    #[test]
    fn server_status_is_decoded_by_its_details() {
        let status = umadb_proto::status_from_error(&Error::Integrity("taken".into()));
        assert_eq!(error_from_status(&status), Error::Integrity("taken".into()));
    }

    #[test]
    fn refused_connection_was_never_sent() {
        assert!(was_never_sent(&refused()));
        assert!(!was_never_sent(&Status::unavailable("server going away")));
    }

    #[tokio::test]
    async fn safe_call_is_retried_until_it_succeeds() {
        let attempts = AtomicU32::new(0);
        let result = with_retry(&fast(), None, Repeat::Safe, "head", || async {
            if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Status::unavailable("down"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result, Ok(7));
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_stop_after_the_policy_limit() {
        let attempts = AtomicU32::new(0);
        let result: Result<()> = with_retry(&fast(), None, Repeat::Safe, "head", || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(Status::unavailable("down"))
        })
        .await;
        assert!(matches!(result, Err(Error::Transport(_))));
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn unsafe_call_is_not_retried_after_it_may_have_been_sent() {
        let attempts = AtomicU32::new(0);
        let result: Result<()> =
            with_retry(&fast(), None, Repeat::IfNeverSent, "append", || async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(Status::unavailable("connection reset"))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unsafe_call_is_retried_when_the_connection_was_refused() {
        let attempts = AtomicU32::new(0);
        let result = with_retry(&fast(), None, Repeat::IfNeverSent, "append", || async {
            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(refused())
            } else {
                Ok(1)
            }
        })
        .await;
        assert_eq!(result, Ok(1));
    }

    #[tokio::test]
    async fn integrity_errors_are_never_retried() {
        let attempts = AtomicU32::new(0);
        let result: Result<()> = with_retry(&fast(), None, Repeat::Safe, "append", || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(umadb_proto::status_from_error(&Error::Integrity(
                "x".into(),
            )))
        })
        .await;
        assert!(matches!(result, Err(Error::Integrity(_))));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempt_that_exceeds_the_timeout_is_a_transport_error() {
        let result: Result<()> = with_retry(
            &fast(),
            Some(Duration::from_millis(10)),
            Repeat::Safe,
            "head",
            std::future::pending,
        )
        .await;
        assert!(matches!(result, Err(Error::Transport(m)) if m.contains("timed out")));
    }
}
