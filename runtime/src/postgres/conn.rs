//! One pooled connection: the client, its prepared-statement cache and its bookkeeping
//! (age, query count, whether a transaction is open, whether it is still usable).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Poll, ready};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rustc_hash::FxBuildHasher;
use serde_json::Value;
use tokio_postgres::{Client, Statement};

use super::connect::Connector;
use super::metrics::StatementInfo;
use super::params;
use super::rows::{column_to_json, rows_to_json};
use super::stats::CloseReason;
use crate::error::{ErrorCode, OnexError};
use crate::models::postgres::{QueryResult, QueryType};

/// SQLSTATEs after which a cached statement must be prepared again: `0A000` (cached plan
/// must not change result type, after DDL) and `26000` (prepared statement does not exist).
const STALE_STATEMENT_STATES: [&str; 2] = ["0A000", "26000"];

struct Cached {
    statement: Statement,
    info: StatementInfo,
}

/// A connection and what the pool needs to know about it.
pub(crate) struct Conn {
    client: Client,
    /// Looked up once per query. FxHash is several times cheaper than SipHash on SQL text and
    /// gives up only resistance to keys crafted to collide, harmless in a map bounded by
    /// `cache_capacity`.
    statements: HashMap<String, Cached, FxBuildHasher>,
    cache_capacity: usize,
    pub(crate) idle_since: Instant,
    pub(crate) queries: u64,
    /// A `BEGIN` was sent and neither `COMMIT` nor `ROLLBACK` succeeded yet: the pool rolls
    /// back before reuse.
    pub(crate) in_transaction: bool,
    /// Set when the connection must not be reused.
    pub(crate) retire: Option<CloseReason>,
    /// A statement is in flight. If the connection comes back in this state, its caller was
    /// cancelled mid-statement: the server may still be running it, so the pool asks the
    /// server to cancel it and closes the connection instead of reusing it.
    pub(crate) busy: bool,
    /// The statement timer, reused from statement to statement (see [`Conn::run`]).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How much of a statement's rows the caller wants converted to JSON: conversion is the
/// costliest client-side step, so `fetch_one` and `fetch_value` convert only what they return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    AllRows,
    FirstRow,
    /// The first column of the first row, in [`Outcome::value`]; `result.rows` stays empty.
    FirstValue,
}

/// What a statement produced, plus what metrics need to know.
pub(crate) struct Outcome {
    pub result: QueryResult,
    /// With [`Take::FirstValue`]: the first column of the first row, if any.
    pub value: Option<Value>,
    pub info: StatementInfo,
}

impl Conn {
    pub(crate) fn new(client: Client, cache_capacity: usize) -> Self {
        Self {
            client,
            statements: HashMap::default(),
            cache_capacity,
            idle_since: Instant::now(),
            queries: 0,
            in_transaction: false,
            retire: None,
            busy: false,
            deadline: None,
        }
    }

    /// Whether the socket is gone (the server closed it, or it failed).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The raw client, for callers that need the driver directly (benchmarks, COPY).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `sql` with `params` within `timeout` of `started` (the caller's clock reading, so
    /// a statement reads the clock once to start). On timeout the server is asked to cancel
    /// the statement and the connection is retired (its protocol state is unknown).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    pub(crate) fn run(
        &mut self,
        sql: &str,
        params: &[Value],
        take: Take,
        started: Instant,
        timeout: Duration,
        connector: &Connector,
    ) -> impl Future<Output = Result<Outcome, OnexError>> + Send {
        async move {
            self.busy = true;
            let due = tokio::time::Instant::from_std(started) + timeout;
            let mut deadline = self.deadline.take().unwrap_or_else(|| Box::pin(tokio::time::sleep_until(due)));
            // The timer is re-armed lazily, as network libraries do with socket deadlines: one
            // armed earlier than `due` (the previous statement's) is left alone, and when it fires
            // early it is pushed to `due` then. Statements of one connection mostly share a
            // timeout, so it is re-armed about once per timeout instead of once per statement.
            // Only a later one must be pulled in now.
            if deadline.deadline() > due {
                deadline.as_mut().reset(due);
            }
            let outcome = {
                let mut work = std::pin::pin!(self.run_inner(sql, params, take));
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(result) = work.as_mut().poll(cx) {
                        return Poll::Ready(Some(result));
                    }
                    loop {
                        ready!(deadline.as_mut().poll(cx));
                        if deadline.deadline() >= due {
                            return Poll::Ready(None);
                        }
                        deadline.as_mut().reset(due);
                    }
                })
                .await
            };
            self.deadline = Some(deadline);
            self.busy = false;
            match outcome {
                Some(result) => result,
                None => {
                    self.retire = Some(CloseReason::Timeout);
                    Box::pin(connector.cancel(self.client.cancel_token())).await;
                    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                    Err(OnexError::new(
                        ErrorCode::DatabaseQueryError,
                        format!("statement did not finish within {millis} ms and was cancelled"),
                    )
                    .with_detail("timeout_ms", millis)
                    .with_detail("query_hash", format!("{:016x}", StatementInfo::of(sql).hash)))
                }
            }
        }
    }

    async fn run_inner(&mut self, sql: &str, values: &[Value], take: Take) -> Result<Outcome, OnexError> {
        let (statement, info) = self.prepare(sql).await?;
        let bound = params::bind(values, statement.params())?;
        self.queries += 1;
        // One path for every statement: the row stream yields the rows (none for INSERT,
        // UPDATE and DELETE without RETURNING) and then the affected count. A single awaited
        // driver future also keeps this function's state small.
        let stream = self
            .client
            .query_raw(&statement, bound.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)))
            .await
            .map_err(|e| self.query_error(sql, e))?;
        let mut stream = std::pin::pin!(stream);
        // Only the rows `take` returns are kept, the rest only counted: the first row or value
        // needs no vector (growing one was an allocation per statement).
        let mut rows = Vec::new();
        let mut first = None;
        let mut row_count = 0u64;
        while let Some(row) = stream.next().await {
            let row = row.map_err(|e| self.query_error(sql, e))?;
            row_count += 1;
            if take == Take::AllRows {
                rows.push(row);
            } else if first.is_none() {
                first = Some(row);
            }
        }
        if statement.columns().is_empty() {
            let affected = stream.rows_affected().unwrap_or(0);
            let result = QueryResult {
                rows: Vec::new(),
                column_names: Vec::new(),
                row_count: affected,
                has_more: false,
                command_tag: command_tag(info.query_type, affected),
            };
            return Ok(Outcome { result, value: None, info });
        }
        let mut value = None;
        let (converted, column_names) = match take {
            Take::AllRows => (rows_to_json(&rows)?, column_names(&statement)),
            Take::FirstRow => (rows_to_json(first.as_slice())?, column_names(&statement)),
            Take::FirstValue => {
                value = first.as_ref().map(|row| column_to_json(row, 0)).transpose()?;
                (Vec::new(), Vec::new())
            }
        };
        let result = QueryResult { row_count, rows: converted, column_names, has_more: false, command_tag: None };
        Ok(Outcome { result, value, info })
    }

    /// The cached statement for `sql`, preparing (and caching) it on first use.
    async fn prepare(&mut self, sql: &str) -> Result<(Statement, StatementInfo), OnexError> {
        if let Some(cached) = self.statements.get(sql) {
            return Ok((cached.statement.clone(), cached.info));
        }
        // Boxed: preparing is the rare path (statements are cached), and its state machine
        // would otherwise sit in every query's future.
        let statement = Box::pin(self.client.prepare(sql)).await.map_err(|e| self.query_error(sql, e))?;
        let info = StatementInfo::of(sql);
        if self.cache_capacity > 0 {
            if self.statements.len() >= self.cache_capacity {
                // Any victim will do: the cache bounds server memory, it is not an LRU.
                if let Some(victim) = self.statements.keys().next().cloned() {
                    self.statements.remove(&victim);
                }
            }
            self.statements.insert(sql.to_owned(), Cached { statement: statement.clone(), info });
        }
        Ok((statement, info))
    }

    /// Sends a transaction-control statement (simple protocol, no parameters).
    pub(crate) async fn control(&mut self, sql: &str, timeout: Duration) -> Result<(), OnexError> {
        self.busy = true;
        let outcome = tokio::time::timeout(timeout, self.client.batch_execute(sql)).await;
        self.busy = false;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.query_error(sql, e)),
            Err(_) => {
                self.retire = Some(CloseReason::Timeout);
                Err(OnexError::new(ErrorCode::DatabaseOperationError, format!("{sql} did not finish in time")))
            }
        }
    }

    /// Maps a driver error: server errors are `DATABASE_QUERY_ERROR` with the SQLSTATE; a lost
    /// connection is `DATABASE_CONNECTION_FAILED` and retires the connection.
    fn query_error(&mut self, sql: &str, e: tokio_postgres::Error) -> OnexError {
        if let Some(db) = e.as_db_error() {
            let state = db.code().code();
            if STALE_STATEMENT_STATES.contains(&state) {
                self.statements.remove(sql);
            }
            if state.starts_with("57P") || state.starts_with("08") {
                // admin shutdown, crash shutdown, connection exceptions: the session is gone.
                self.retire = Some(CloseReason::Broken);
            }
            // The server's message names what failed (relation, constraint, type); values it
            // may quote are masked like any external text.
            return OnexError::new(
                ErrorCode::DatabaseQueryError,
                format!("statement failed ({state}): {}", crate::sanitize::sanitize_message(db.message())),
            )
            .with_detail("sqlstate", state)
            .with_detail("severity", db.severity().to_owned());
        }
        if e.is_closed() || self.client.is_closed() {
            self.retire = Some(CloseReason::Broken);
            return OnexError::new(ErrorCode::DatabaseConnectionFailed, "the connection to PostgreSQL was lost")
                .with_source(e);
        }
        OnexError::new(ErrorCode::DatabaseQueryError, "statement failed").with_source(e)
    }
}

fn column_names(statement: &Statement) -> Vec<String> {
    statement.columns().iter().map(|c| c.name().to_owned()).collect()
}

/// The command tag for INSERT, UPDATE and DELETE, rebuilt from the statement kind and the
/// count (tokio-postgres reports only the count); `None` for other statements, whose tag
/// cannot be known exactly from the text.
fn command_tag(query_type: QueryType, affected: u64) -> Option<String> {
    match query_type {
        QueryType::Insert => Some(format!("INSERT 0 {affected}")),
        QueryType::Update => Some(format!("UPDATE {affected}")),
        QueryType::Delete => Some(format!("DELETE {affected}")),
        _ => None,
    }
}
