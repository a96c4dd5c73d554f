//! The one error type of UmaDB. The server maps it to gRPC statuses, the client maps statuses
//! back to it, and the Python package maps it to exceptions.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An append condition or a tracking position was violated.
    Integrity(String),
    /// The request itself is malformed or exceeds a limit.
    InvalidArgument(String),
    /// A missing or wrong API key.
    Authentication(String),
    /// Stored bytes failed a check: the store is damaged.
    Corruption(String),
    /// The disk or the operating system failed.
    Io(String),
    /// A message could not be encoded or decoded.
    Serialization(String),
    /// The server could not be reached or the connection broke.
    Transport(String),
    /// The caller cancelled the operation.
    Cancelled(String),
    /// Anything else; a bug if it happens.
    Internal(String),
}

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Error::Integrity(m)
            | Error::InvalidArgument(m)
            | Error::Authentication(m)
            | Error::Corruption(m)
            | Error::Io(m)
            | Error::Serialization(m)
            | Error::Transport(m)
            | Error::Cancelled(m)
            | Error::Internal(m) => m,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::Integrity(_) => "integrity error",
            Error::InvalidArgument(_) => "invalid argument",
            Error::Authentication(_) => "authentication error",
            Error::Corruption(_) => "corruption",
            Error::Io(_) => "I/O error",
            Error::Serialization(_) => "serialization error",
            Error::Transport(_) => "transport error",
            Error::Cancelled(_) => "cancelled",
            Error::Internal(_) => "internal error",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for Error {}
