//! Opening one connection: TLS per `ssl_mode`, the connect timeout, and the session set-up
//! that runs once per new connection (`search_path`).

use std::time::Duration;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::{CancelToken, Client, NoTls};

use super::config::secs;
use super::ident::quote_ident;
use crate::error::{ErrorCode, OnexError};
use crate::models::postgres::{PostgresConnectionConfig, SslMode};

/// How connections are encrypted.
#[derive(Clone)]
enum Tls {
    Plain,
    OpenSsl(MakeTlsConnector),
}

/// Opens connections for the pool. Holds the driver configuration (with the password inside
/// it, which tokio-postgres never prints) and the TLS connector.
pub(crate) struct Connector {
    pg: tokio_postgres::Config,
    tls: Tls,
    session_setup: String,
    create_timeout: Duration,
    target: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Connector {
    /// Builds the connector; TLS files that cannot be loaded are a `CONFIGURATION_ERROR`.
    pub(crate) fn new(config: &PostgresConnectionConfig) -> Result<Self, OnexError> {
        let create_timeout = secs(config.create_timeout_secs);
        let mut pg = tokio_postgres::Config::new();
        pg.host(&config.host)
            .port(config.port)
            .dbname(&config.database)
            .user(&config.user)
            .application_name(&config.application_name)
            .connect_timeout(create_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if !config.password.expose().is_empty() {
            pg.password(config.password.expose().as_bytes());
        }
        let tls = match config.ssl_mode {
            SslMode::Disable => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Tls::Plain
            }
            SslMode::Prefer => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Prefer);
                Tls::OpenSsl(tls_connector(config, false)?)
            }
            SslMode::Require => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                Tls::OpenSsl(tls_connector(config, false)?)
            }
            SslMode::VerifyFull => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                Tls::OpenSsl(tls_connector(config, true)?)
            }
        };
        Ok(Self {
            pg,
            tls,
            session_setup: format!("SET search_path TO {}, public", quote_ident(&config.schema)),
            create_timeout,
            target: format!("{}@{}:{}/{}", config.user, config.host, config.port, config.database),
        })
    }

    /// `user@host:port/database`, for messages (never carries the password).
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Opens a connection and sets its `search_path`, all within the create timeout.
    /// Failures are `DATABASE_CONNECTION_FAILED` with the sanitized driver message.
    pub(crate) async fn connect(&self) -> Result<Client, OnexError> {
        match tokio::time::timeout(self.create_timeout, self.connect_and_set_up()).await {
            Ok(result) => result,
            Err(_) => Err(OnexError::new(
                ErrorCode::DatabaseConnectionFailed,
                format!(
                    "connecting to PostgreSQL at {} did not finish within {} ms",
                    self.target,
                    self.create_timeout.as_millis()
                ),
            )
            .with_detail("timeout_ms", self.create_timeout.as_millis() as u64)),
        }
    }

    async fn connect_and_set_up(&self) -> Result<Client, OnexError> {
        let client = match &self.tls {
            Tls::Plain => {
                let (client, connection) = self.pg.connect(NoTls).await.map_err(|e| self.connect_error(e))?;
                tokio::spawn(drive(connection));
                client
            }
            Tls::OpenSsl(tls) => {
                let (client, connection) = self.pg.connect(tls.clone()).await.map_err(|e| self.connect_error(e))?;
                tokio::spawn(drive(connection));
                client
            }
        };
        client.batch_execute(&self.session_setup).await.map_err(|e| {
            OnexError::new(
                ErrorCode::DatabaseConnectionFailed,
                format!("setting search_path on a new connection to {} failed", self.target),
            )
            .with_source(e)
        })?;
        Ok(client)
    }

    fn connect_error(&self, e: tokio_postgres::Error) -> OnexError {
        match e.as_db_error() {
            Some(db) => OnexError::new(
                ErrorCode::DatabaseConnectionFailed,
                format!(
                    "cannot connect to PostgreSQL at {}: {}",
                    self.target,
                    crate::sanitize::sanitize_message(db.message())
                ),
            )
            .with_detail("sqlstate", db.code().code()),
            None => OnexError::new(
                ErrorCode::DatabaseConnectionFailed,
                format!("cannot connect to PostgreSQL at {}", self.target),
            )
            .with_source(e),
        }
    }

    /// Asks the server to cancel whatever `token`'s connection is running; bounded by the
    /// create timeout, and best effort (the caller discards the connection anyway).
    pub(crate) async fn cancel(&self, token: CancelToken) {
        let attempt = async {
            match &self.tls {
                Tls::Plain => token.cancel_query(NoTls).await,
                Tls::OpenSsl(tls) => token.cancel_query(tls.clone()).await,
            }
        };
        match tokio::time::timeout(self.create_timeout, attempt).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(target: "onex::postgres", error = %crate::sanitize::sanitize_message(&e.to_string()), "cancel request failed")
            }
            Err(_) => tracing::warn!(target: "onex::postgres", "cancel request timed out"),
        }
    }
}

/// Runs the connection's I/O until the client is dropped or the socket fails.
async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(target: "onex::postgres", error = %crate::sanitize::sanitize_message(&e.to_string()), "connection closed");
    }
}

fn tls_connector(config: &PostgresConnectionConfig, verify: bool) -> Result<MakeTlsConnector, OnexError> {
    let tls_error = |what: &str, variable: &str, e: openssl::error::ErrorStack| {
        OnexError::configuration(format!("TLS set-up failed: {what}")).with_detail("variable", variable).with_source(e)
    };
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| tls_error("cannot create the TLS context", "POSTGRES_SSL_MODE", e))?;
    // prefer and require encrypt without authenticating the server (libpq semantics);
    // verify-full checks the chain against the CA and the host name.
    builder.set_verify(if verify { SslVerifyMode::PEER } else { SslVerifyMode::NONE });
    if let Some(ca) = &config.ssl_ca_file {
        builder.set_ca_file(ca).map_err(|e| tls_error("cannot load the CA file", "POSTGRES_SSL_CA_FILE", e))?;
    }
    if let (Some(cert), Some(key)) = (&config.ssl_cert_file, &config.ssl_key_file) {
        builder
            .set_certificate_chain_file(cert)
            .map_err(|e| tls_error("cannot load the client certificate", "POSTGRES_SSL_CERT_FILE", e))?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| tls_error("cannot load the client key", "POSTGRES_SSL_KEY_FILE", e))?;
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if !verify {
        connector.set_callback(|connect, _| {
            connect.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(connector)
}
