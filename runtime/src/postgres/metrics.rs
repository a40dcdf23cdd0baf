//! Query metrics: the last 1000 executions, keyed by a hash of the statement text that is
//! the same in every process (FNV-1a 64 of the whitespace-normalized text), unlike the
//! original's randomized `hash()`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::models::postgres::{QueryMetric, QueryType};

/// How many executions are kept.
pub const METRICS_CAPACITY: usize = 1000;

/// What is known about a statement text, computed once per prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatementInfo {
    pub hash: u64,
    pub query_type: QueryType,
}

impl StatementInfo {
    pub(crate) fn of(sql: &str) -> Self {
        Self { hash: query_hash(sql), query_type: classify(sql) }
    }
}

/// FNV-1a 64 of `sql` with runs of whitespace collapsed to one space and the ends trimmed,
/// so reformatting a statement keeps its hash.
pub fn query_hash(sql: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    };
    for (i, word) in sql.split_whitespace().enumerate() {
        if i > 0 {
            feed(b' ');
        }
        word.bytes().for_each(&mut feed);
    }
    hash
}

/// The kind of statement, from its first keyword (after comments and parentheses).
pub fn classify(sql: &str) -> QueryType {
    let keyword = first_keyword(sql).to_ascii_uppercase();
    match keyword.as_str() {
        "SELECT" | "WITH" | "VALUES" | "TABLE" | "SHOW" | "EXPLAIN" => QueryType::Select,
        "INSERT" => QueryType::Insert,
        "UPDATE" => QueryType::Update,
        "DELETE" => QueryType::Delete,
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "COMMENT" | "RENAME" => QueryType::Ddl,
        "GRANT" | "REVOKE" => QueryType::Dcl,
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "ABORT" => QueryType::Tcl,
        _ => QueryType::General,
    }
}

pub(crate) fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.find('\n').map_or("", |end| &comment[end..]);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.find("*/").map_or("", |end| &comment[end + 2..]);
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

/// One recorded execution, compact until it is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    pub info: StatementInfo,
    pub execution_time_ms: f64,
    pub rows: u64,
    pub error_code: Option<&'static str>,
    /// When the statement finished. A monotonic reading (the statement's own timing already
    /// read the clock): turned into wall-clock time only when the log is read.
    pub at: Instant,
}

/// A bounded log of recent executions; the oldest entry goes when it is full.
#[derive(Debug)]
pub(crate) struct QueryLog {
    entries: Mutex<VecDeque<Record>>,
    /// One instant with its wall-clock time, to date the entries by.
    anchor: (Instant, DateTime<Utc>),
}

impl Default for QueryLog {
    fn default() -> Self {
        Self { entries: Mutex::default(), anchor: (Instant::now(), Utc::now()) }
    }
}

impl QueryLog {
    pub(crate) fn record(&self, record: Record) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() == METRICS_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(record);
    }

    /// The newest `limit` executions, newest first.
    pub(crate) fn recent(&self, limit: usize) -> Vec<QueryMetric> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .iter()
            .rev()
            .take(limit)
            .map(|r| QueryMetric {
                query_hash: format!("{:016x}", r.info.hash),
                query_type: r.info.query_type,
                execution_time_ms: r.execution_time_ms,
                rows_affected: r.rows,
                success: r.error_code.is_none(),
                timestamp: self.wall_clock(r.at),
                error_code: r.error_code.map(str::to_owned),
            })
            .collect()
    }

    fn wall_clock(&self, at: Instant) -> DateTime<Utc> {
        let (anchor, anchor_utc) = self.anchor;
        let since = chrono::Duration::from_std(at.saturating_duration_since(anchor)).unwrap_or(chrono::Duration::MAX);
        anchor_utc.checked_add_signed(since).unwrap_or(anchor_utc)
    }

    /// Drops every entry; returns how many there were.
    pub(crate) fn clear(&self) -> u64 {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = entries.len() as u64;
        entries.clear();
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fnv1a_of_the_normalized_text() {
        // Reference values of FNV-1a 64.
        assert_eq!(query_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(query_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(query_hash("SELECT  1\n"), query_hash("SELECT 1"));
        assert_ne!(query_hash("SELECT 1"), query_hash("SELECT 2"));
    }

    #[test]
    fn classifies_by_first_keyword() {
        assert_eq!(classify("  -- note\n/* x */ (select 1)"), QueryType::Select);
        assert_eq!(classify("with x as (select 1) select * from x"), QueryType::Select);
        assert_eq!(classify("INSERT INTO t VALUES (1)"), QueryType::Insert);
        assert_eq!(classify("create table t()"), QueryType::Ddl);
        assert_eq!(classify("REVOKE ALL ON t FROM x"), QueryType::Dcl);
        assert_eq!(classify("commit"), QueryType::Tcl);
        assert_eq!(classify("vacuum"), QueryType::General);
    }

    #[test]
    fn keeps_the_last_thousand_newest_first() {
        let log = QueryLog::default();
        for i in 0..1005u64 {
            log.record(Record {
                info: StatementInfo::of("SELECT 1"),
                execution_time_ms: 1.0,
                rows: i,
                error_code: None,
                at: Instant::now(),
            });
        }
        let recent = log.recent(usize::MAX);
        assert_eq!(recent.len(), METRICS_CAPACITY);
        let age = Utc::now() - recent[0].timestamp;
        assert!(age >= chrono::Duration::zero() && age < chrono::Duration::seconds(5), "{age}");
        assert_eq!(recent[0].rows_affected, 1004);
        assert_eq!(recent[999].rows_affected, 5);
        assert_eq!(log.clear(), 1000);
        assert!(log.recent(10).is_empty());
    }
}
