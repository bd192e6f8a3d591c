//! The one error type of orc.
//!
//! Every fallible function returns [`Result`]. The `Display` text is written for the
//! operator: `main` prints it as a single `error: ...` line. Errors that cross the wire are
//! carried in a gRPC status whose message is this same text, so a client sees what the
//! server said, unchanged.

use std::fmt;

/// The result type of orc.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request was malformed: names the flag, field or argument at fault.
    InvalidInput(String),
    /// The named object does not exist.
    NotFound(String),
    /// The request conflicts with the current state (e.g. already in a cluster).
    Conflict(String),
    /// This node cannot serve the request (a worker asked for a manager's job, no leader,
    /// no quorum).
    Unavailable(String),
    /// The caller is not allowed (bad token, wrong role, foreign CA, expired certificate).
    PermissionDenied(String),
    /// An I/O, storage, network or other internal failure.
    Internal(String),
}

impl Error {
    /// Shorthand for an internal error built from anything displayable.
    pub fn internal(e: impl fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::Unavailable(m)
            | Error::PermissionDenied(m)
            | Error::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Internal(format!("storage: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("encoding: {e}"))
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::InvalidInput(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::Conflict(_) => Code::FailedPrecondition,
            Error::Unavailable(_) => Code::Unavailable,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let m = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => Error::InvalidInput(m),
            Code::NotFound => Error::NotFound(m),
            Code::FailedPrecondition | Code::AlreadyExists => Error::Conflict(m),
            Code::Unavailable | Code::DeadlineExceeded => {
                if m.is_empty() {
                    Error::Unavailable("the remote node is unavailable".into())
                } else {
                    Error::Unavailable(m)
                }
            }
            Code::PermissionDenied | Code::Unauthenticated => Error::PermissionDenied(m),
            _ => Error::Internal(m),
        }
    }
}
