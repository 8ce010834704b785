//! What can go wrong before the backend serves: the database cannot be
//! reached, or holds a schema this build does not know.

/// Starting the PostgreSQL backend failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    /// No host of the URL answered (down, unreachable, refused, or none
    /// accepts writes).
    #[error("cannot reach the database at {hosts}: {cause}")]
    Unreachable {
        /// The hosts tried, as the URL names them.
        hosts: String,
        /// What the last attempt said.
        cause: String,
    },
    /// The database's schema is newer than this build.
    #[error(
        "the database holds schema version {found}, newer than this subscriberd knows ({known}): upgrade subscriberd"
    )]
    UnknownSchema {
        /// The version in the database.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
    /// The schema is older than this build and `serve` was told not to migrate.
    #[error(
        "the database holds schema version {found}, this subscriberd needs {known}: run `subscriberd migrate`"
    )]
    Outdated {
        /// The version in the database.
        found: i32,
        /// The version this build needs.
        known: i32,
    },
    /// A statement failed.
    #[error("database error: {0}")]
    Query(String),
}

/// A tokio-postgres error as the store's storage error.
pub(crate) fn storage(e: &tokio_postgres::Error) -> subscriber_store::Error {
    subscriber_store::Error::Storage(format!("database: {}", describe(e)))
}

/// The database's own message when there is one (the Display of
/// tokio-postgres says only "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Whether a transaction failed only because it raced another one
/// (serialization failure, deadlock): it can run again.
pub(crate) fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
            || *code == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
    })
}
