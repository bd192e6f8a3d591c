//! The one error type of orc.
//!
//! Every fallible function returns [`Result`]. The `Display` text is written for the
//! operator: `main` prints it as a single `error: ...` line. Errors that cross the wire are
//! carried in a gRPC status whose message is this same text, so a client sees what the
//! server said, unchanged.
//!
//! Some errors decide a retry: [`Error::NoLeader`], [`Error::NoQuorum`],
//! [`Error::NotLeader`], [`Error::NotManager`]. They travel as `UNAVAILABLE` with their
//! kind in the `orc-error-kind` metadata ([`KIND_KEY`]), written and read here alone, so
//! a forwarding manager or a CLI decides by the kind, never by the words.

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
    /// No leader is known (an election is under way, or this manager is cut off from a
    /// quorum). Retrying on the same manager at once will not help.
    NoLeader(String),
    /// The leader has not heard from a majority of the managers: the write was refused
    /// or not committed. Retrying on the same leader at once will not help.
    NoQuorum(String),
    /// This manager is not the leader (the caller should go to the leader).
    NotLeader(String),
    /// This node cannot serve a manager's call: it is a worker, or in no cluster.
    NotManager(String),
    /// The caller is not allowed (bad token, wrong role, foreign CA, expired certificate).
    PermissionDenied(String),
    /// An I/O, storage, network or other internal failure.
    Internal(String),
}

/// The gRPC metadata key of an error's retry kind (see the module doc).
pub const KIND_KEY: &str = "orc-error-kind";

impl Error {
    /// The retry kind's name on the wire, for the kinds that have one.
    fn kind_name(&self) -> Option<&'static str> {
        match self {
            Error::NoLeader(_) => Some("no-leader"),
            Error::NoQuorum(_) => Some("no-quorum"),
            Error::NotLeader(_) => Some("not-leader"),
            Error::NotManager(_) => Some("not-manager"),
            _ => None,
        }
    }

    /// The error of that kind name, with message `m`.
    fn of_kind(name: &str, m: String) -> Option<Error> {
        Some(match name {
            "no-leader" => Error::NoLeader(m),
            "no-quorum" => Error::NoQuorum(m),
            "not-leader" => Error::NotLeader(m),
            "not-manager" => Error::NotManager(m),
            _ => return None,
        })
    }

    /// True for the errors after which retrying the same call on the same manager, at
    /// once, cannot help (no leader, no quorum, not a manager).
    pub fn is_final_here(&self) -> bool {
        matches!(
            self,
            Error::NoLeader(_) | Error::NoQuorum(_) | Error::NotManager(_)
        )
    }

    /// Shorthand for an internal error built from anything displayable.
    pub fn internal(e: impl fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl Error {
    /// The same error, its message changed by `f`.
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Error {
        match self {
            Error::InvalidInput(m) => Error::InvalidInput(f(m)),
            Error::NotFound(m) => Error::NotFound(f(m)),
            Error::Conflict(m) => Error::Conflict(f(m)),
            Error::Unavailable(m) => Error::Unavailable(f(m)),
            Error::NoLeader(m) => Error::NoLeader(f(m)),
            Error::NoQuorum(m) => Error::NoQuorum(f(m)),
            Error::NotLeader(m) => Error::NotLeader(f(m)),
            Error::NotManager(m) => Error::NotManager(f(m)),
            Error::PermissionDenied(m) => Error::PermissionDenied(f(m)),
            Error::Internal(m) => Error::Internal(f(m)),
        }
    }

    /// A refusal that carries the warnings given before it: `warning: ...` lines, then
    /// the error's own line ([`Error::split_warnings`] takes them apart again).
    pub fn with_warnings(self, warnings: &[String]) -> Error {
        if warnings.is_empty() {
            return self;
        }
        self.map_message(|m| {
            let mut out: String = warnings.iter().map(|w| format!("warning: {w}\n")).collect();
            out.push_str(&m);
            out
        })
    }

    /// The warnings [`Error::with_warnings`] put before the message, and the error
    /// without them.
    pub fn split_warnings(self) -> (Vec<String>, Error) {
        let mut warnings = vec![];
        let e = self.map_message(|m| {
            let mut rest = m.as_str();
            while let Some(line) = rest.strip_prefix("warning: ") {
                let (w, tail) = line.split_once('\n').unwrap_or((line, ""));
                warnings.push(w.to_string());
                rest = tail;
            }
            rest.to_string()
        });
        (warnings, e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::Unavailable(m)
            | Error::NoLeader(m)
            | Error::NoQuorum(m)
            | Error::NotLeader(m)
            | Error::NotManager(m)
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
            Error::Unavailable(_)
            | Error::NoLeader(_)
            | Error::NoQuorum(_)
            | Error::NotLeader(_)
            | Error::NotManager(_) => Code::Unavailable,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Internal(_) => Code::Internal,
        };
        let mut s = tonic::Status::new(code, e.to_string());
        if let Some(kind) = e.kind_name() {
            s.metadata_mut()
                .insert(KIND_KEY, tonic::metadata::MetadataValue::from_static(kind));
        }
        s
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let m = s.message().to_string();
        let kind = s.metadata().get(KIND_KEY).and_then(|v| v.to_str().ok());
        if let Some(e) = kind
            .filter(|_| s.code() == Code::Unavailable)
            .and_then(|k| Error::of_kind(k, m.clone()))
        {
            return e;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_ride_with_a_refusal_and_come_apart_again() {
        let e = Error::Conflict("port 80/tcp is taken".into());
        let w = vec!["network x exists".to_string(), "second".to_string()];
        let carried = e.clone().with_warnings(&w);
        assert_eq!(
            carried.to_string(),
            "warning: network x exists\nwarning: second\nport 80/tcp is taken"
        );
        // across the wire and back
        let back = Error::from(tonic::Status::from(carried));
        assert_eq!(back.split_warnings(), (w, e.clone()));
        // none: unchanged both ways
        assert_eq!(e.clone().with_warnings(&[]), e);
        assert_eq!(e.clone().split_warnings(), (vec![], e));
    }

    #[test]
    fn retry_kinds_survive_a_grpc_hop_with_their_words() {
        for e in [
            Error::NoLeader("no leader: this manager cannot reach a quorum".into()),
            Error::NoQuorum("no quorum: the write was not committed within 5 s".into()),
            Error::NotLeader("not the leader: open the session with the leader".into()),
            Error::NotManager("this node is not a manager".into()),
        ] {
            let s = tonic::Status::from(e.clone());
            assert_eq!(s.code(), tonic::Code::Unavailable);
            assert_eq!(s.message(), e.to_string());
            assert_eq!(Error::from(s), e);
        }
        // Without the metadata (an older node), the kind is plain Unavailable.
        let s = tonic::Status::unavailable("no quorum: refused");
        assert_eq!(
            Error::from(s),
            Error::Unavailable("no quorum: refused".into())
        );
        assert!(!Error::Unavailable("the leader changed".into()).is_final_here());
        assert!(Error::NoQuorum(String::new()).is_final_here());
    }
}
