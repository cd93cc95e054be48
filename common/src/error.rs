//! The error type of `fjord-common`: one variant per case a caller acts on differently.

/// Errors raised by the shared pieces. NATS and PostgreSQL failures keep their source so the
/// caller can decide whether to retry; `Invalid` is bad input and is never worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("NATS: {0}")]
    Nats(String),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Wraps any NATS client error; async-nats has one error type per operation.
    pub fn nats(e: impl std::fmt::Display) -> Self {
        Error::Nats(e.to_string())
    }
}
