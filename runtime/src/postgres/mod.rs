//! The PostgreSQL connection manager (issue 4 replaces this placeholder with the pool).

/// The PostgreSQL connection manager service that `node_postgres_connection_manager_effect`
/// resolves from the container.
#[derive(Debug, Default)]
pub struct PostgresConnectionManager {}
