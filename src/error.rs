//! The crate's error type. `anyhow` is used only in `main.rs`.

/// Everything that can go wrong inside tidings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the message names the key and the rule.
    #[error("config: {0}")]
    Config(String),
    /// A database error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An I/O error (listener, file).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

impl From<tidings_client::Error> for Error {
    fn from(e: tidings_client::Error) -> Self {
        match e {
            tidings_client::Error::Database(e) => Error::Database(e),
            other => Error::Other(other.to_string()),
        }
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
