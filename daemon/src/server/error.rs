//! The daemon's one error type and its mapping onto gRPC status codes.
//!
//! Beside the one-line message, the status carries the standard
//! `google.rpc` error details (`grpc-status-details-bin`) that gRPC clients in
//! any language can read: a `BadRequest` field violation for a bad field, a
//! `ResourceInfo` for an unknown id.
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::engine::EngineError;

/// Everything that can go wrong while serving a request or running a job.
/// Every message is one line that names the field or the record concerned.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A request field is malformed or out of range.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// An id names no record.
    #[error("{field}: no {what} with id {id:?}")]
    NotFound {
        field: String,
        what: &'static str,
        id: String,
    },
    /// The request is well formed but the state of the library forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The queue is full.
    #[error("{0}")]
    QueueFull(String),
    /// The daemon is loading its model or shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A newer request replaced this one (a superseded preview).
    #[error("{0}")]
    Aborted(String),
    /// The daemon is shutting down and stopped the job between two steps.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// The sled store failed (not damage, not a full disk).
    #[error("store: {0}")]
    Store(sled::Error),
    /// A PostgreSQL statement failed (server/pg): the message says what was being
    /// done and the server's error, on one line.
    #[error("database: {0}")]
    Database(String),
    /// A stored record could not be read back (a JSON record that does not parse, a
    /// missing companion record): DATA_LOSS. The message names the latent or job.
    #[error("store: corrupt record {0}")]
    Corrupt(String),
    /// sled could not read what it stored ("Read corrupted data"): DATA_LOSS. The
    /// message names the record when the caller knows it.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// The disk holding the store is full (ENOSPC, or below `--min-free-mb`):
    /// RESOURCE_EXHAUSTED, naming the folder.
    #[error("{0}")]
    DiskFull(String),
    /// The store cannot be opened at all (damaged beyond recovery by sled): the
    /// message names the folder and the commands to run next. `ddimd` exits 3.
    #[error("{0}")]
    Unopenable(String),
    /// The engine failed.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// Start-up configuration (flags, files).
    #[error("{0}")]
    Config(String),
    /// A bug or an unexpected condition.
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

impl ServerError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServerError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(field: impl Into<String>, what: &'static str, id: impl Into<String>) -> Self {
        ServerError::NotFound {
            field: field.into(),
            what,
            id: id.into(),
        }
    }
}

/// Whether an I/O error means the disk is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(28)
        || e.to_string().contains("No space left on device")
}

impl From<sled::Error> for ServerError {
    /// Sorts sled's errors: corruption is DATA_LOSS, a full disk RESOURCE_EXHAUSTED,
    /// the rest stays a store error (INTERNAL). Store methods that know the record
    /// or the folder add them (see `Store::classify`).
    fn from(e: sled::Error) -> Self {
        match &e {
            sled::Error::Corruption { .. } => ServerError::DataLoss(e.to_string()),
            sled::Error::Io(io) if is_disk_full(io) => {
                ServerError::DiskFull(format!("disk full: {e}"))
            }
            _ => ServerError::Store(e),
        }
    }
}

impl From<sled::transaction::TransactionError<ServerError>> for ServerError {
    fn from(e: sled::transaction::TransactionError<ServerError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}

impl From<tokio::task::JoinError> for ServerError {
    fn from(e: tokio::task::JoinError) -> Self {
        ServerError::Internal(format!("blocking task failed: {e}"))
    }
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        let code = match &e {
            ServerError::InvalidArgument { .. } => Code::InvalidArgument,
            ServerError::NotFound { .. } => Code::NotFound,
            ServerError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServerError::QueueFull(_) | ServerError::DiskFull(_) => Code::ResourceExhausted,
            ServerError::Corrupt(_) | ServerError::DataLoss(_) => Code::DataLoss,
            ServerError::Unavailable(_) | ServerError::Interrupted => Code::Unavailable,
            ServerError::Unauthenticated(_) => Code::Unauthenticated,
            ServerError::Cancelled => Code::Cancelled,
            ServerError::Aborted(_) => Code::Aborted,
            ServerError::Engine(EngineError::InvalidInput(_)) => Code::InvalidArgument,
            ServerError::Engine(EngineError::Cancelled) => Code::Cancelled,
            ServerError::Engine(EngineError::Config(_)) => Code::FailedPrecondition,
            ServerError::Engine(
                EngineError::NonFinite(_) | EngineError::Io(_) | EngineError::Torch(_),
            ) => Code::Internal,
            ServerError::Store(_)
            | ServerError::Database(_)
            | ServerError::Unopenable(_)
            | ServerError::Config(_)
            | ServerError::Internal(_) => Code::Internal,
        };
        let message = e.to_string();
        match e {
            ServerError::InvalidArgument { field, message: m } => Status::with_error_details(
                code,
                message,
                ErrorDetails::with_bad_request_violation(field, m),
            ),
            ServerError::NotFound { field, what, id } => {
                let mut d = ErrorDetails::with_resource_info(what, id, "", "no such record");
                d.add_bad_request_violation(field, format!("no {what} with this id"));
                Status::with_error_details(code, message, d)
            }
            _ => Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let s: Status = ServerError::invalid("sample.count", "must be ≥ 1").into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "sample.count: must be ≥ 1")
        );
        let v = s.get_details_bad_request().expect("BadRequest details");
        assert_eq!(v.field_violations[0].field, "sample.count");
        assert_eq!(v.field_violations[0].description, "must be ≥ 1");
        let s: Status = ServerError::not_found("id", "latent", "lat-9").into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("lat-9"));
        let r = s.get_details_resource_info().expect("ResourceInfo details");
        assert_eq!(
            (r.resource_type.as_str(), r.resource_name.as_str()),
            ("latent", "lat-9")
        );
        let v = s.get_details_bad_request().expect("BadRequest details");
        assert_eq!(v.field_violations[0].field, "id");
        let s: Status = ServerError::QueueFull("full".into()).into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s: Status = ServerError::Engine(EngineError::InvalidInput("x".into())).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: Status = ServerError::Corrupt("latent lat-3: EOF".into()).into();
        assert_eq!(s.code(), Code::DataLoss);
        assert!(s.message().contains("lat-3"));
        let corrupt = sled::Error::Corruption { at: None, bt: () };
        assert_eq!(
            Status::from(ServerError::from(corrupt)).code(),
            Code::DataLoss
        );
        let full = std::io::Error::from_raw_os_error(28);
        let s = Status::from(ServerError::from(sled::Error::Io(full)));
        assert_eq!(s.code(), Code::ResourceExhausted);
        let other = sled::Error::Unsupported("x".into());
        assert_eq!(
            Status::from(ServerError::from(other)).code(),
            Code::Internal
        );
    }
}
