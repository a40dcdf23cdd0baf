//! The query guard of `node_postgres_adapter_effect`: checks a statement and its parameters
//! before it reaches the pool.
//!
//! In order, each failure naming the limit and the measured figure, never the statement or a
//! parameter value:
//!
//! 1. the statement is not blank and at most `max_query_size` characters — `VALIDATION_ERROR`;
//! 2. at most `max_parameter_count` parameters, none longer than `max_parameter_size`
//!    characters (an object or array counts as its JSON text) — `VALIDATION_ERROR`;
//! 3. a requested statement timeout is a number of seconds in (0, `max_timeout`] —
//!    `VALIDATION_ERROR`;
//! 4. no injection pattern matches (module `injection`) — `SECURITY_VIOLATION_ERROR`;
//! 5. the complexity score ([`complexity`]) is at most `max_complexity_score` —
//!    `SECURITY_VIOLATION_ERROR`.
//!
//! The limits come from the deployment environment's profile and `POSTGRES_ADAPTER_*`
//! overrides ([`limits`]); production caps them and keeps injection detection and error
//! sanitization on.
//!
//! The guard sits in front of every statement, so it is built for that: the statement is
//! walked once, splitting it into words and the gaps between them with a byte-class table, and
//! that walk feeds the injection matcher and the complexity score (both of which look at words,
//! not at every byte) and computes the statement's hash (the pool's
//! [`query_hash`](super::metrics::query_hash), for the adapter's events); sizes are taken from
//! byte lengths first (a character is at least one byte, so only text longer in bytes than a
//! limit has its characters counted); a parameter of a few bytes is never measured; nothing is
//! allocated unless a check fails.

pub mod complexity;
mod injection;
pub mod limits;

use std::io;
use std::time::Duration;

use serde_json::Value;

pub use self::complexity::ComplexityWeights;
use self::complexity::{Scorer, is_word_byte};
use self::injection::{Matcher, is_space};
pub use self::limits::GuardConfig;
use crate::environment::{EnvSource, Environment};
use crate::error::{ErrorCode, OnexError};

/// The injection patterns the guard refuses, as the original system wrote them (regular
/// expressions, case-insensitive).
pub const INJECTION_PATTERNS: [&str; 4] = [
    injection::PATTERNS[0].source,
    injection::PATTERNS[1].source,
    injection::PATTERNS[2].source,
    injection::PATTERNS[3].source,
];

/// What a statement that passed the guard was found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The statement timeout the request asked for, if it asked.
    pub timeout: Option<Duration>,
    /// Its complexity score.
    pub complexity_score: u32,
    /// Its hash, the same as [`query_hash`](super::metrics::query_hash) gives.
    pub query_hash: u64,
}

/// What the walk over a statement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scan {
    blank: bool,
    complexity_score: u32,
    injection: Option<&'static str>,
    query_hash: u64,
}

/// Byte classes of the walk.
const WORD: u8 = 1;
const SPACE: u8 = 2;

/// The class of every byte: one load tells a word byte, a space and anything else apart.
static CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = if is_word_byte(b) {
            WORD
        } else if is_space(b) {
            SPACE
        } else {
            0
        };
        byte += 1;
    }
    table
};

/// FNV-1a 64, as [`query_hash`](super::metrics::query_hash) computes it.
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    #[inline]
    fn feed(&mut self, byte: u8) {
        self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
    }
}

/// Checks statements against a [`GuardConfig`]. Cheap to share; holds no state between calls.
#[derive(Debug, Clone)]
pub struct QueryGuard {
    config: GuardConfig,
}

impl QueryGuard {
    /// A guard with `config`, validated first ([`GuardConfig::validate`]).
    pub fn new(config: GuardConfig) -> Result<Self, OnexError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// A guard configured by [`GuardConfig::from_env`].
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        Self::new(GuardConfig::from_env(env)?)
    }

    /// The configuration in effect.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// The profile the limits came from.
    pub fn environment(&self) -> Environment {
        self.config.environment
    }

    /// Checks `sql`, `params` and a requested timeout in seconds (see the module
    /// documentation for the order and the error codes).
    pub fn check(&self, sql: &str, params: &[Value], timeout_seconds: Option<f64>) -> Result<Checked, OnexError> {
        let config = &self.config;
        if sql.len() > config.max_query_size {
            let chars = sql.chars().count();
            if chars > config.max_query_size {
                return Err(over_limit("query", "max_query_size", chars, config.max_query_size, "characters"));
            }
        }
        if params.len() > config.max_parameter_count {
            return Err(over_limit("parameters", "max_parameter_count", params.len(), config.max_parameter_count, ""));
        }
        for (i, param) in params.iter().enumerate() {
            if let Some(size) = oversized(param, config.max_parameter_size) {
                return Err(OnexError::validation(format!(
                    "parameter ${} is {size} characters long, over the limit of {}",
                    i + 1,
                    config.max_parameter_size
                ))
                .with_detail("field", "parameters")
                .with_detail("parameter", i + 1)
                .with_detail("limit", config.max_parameter_size));
            }
        }
        let timeout = match timeout_seconds {
            None => None,
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= config.max_timeout.as_secs_f64() => {
                Some(Duration::from_secs_f64(secs))
            }
            Some(secs) => {
                return Err(OnexError::validation(format!(
                    "timeout_seconds must be a number of seconds in (0, {}], got {secs}",
                    config.max_timeout.as_secs()
                ))
                .with_detail("field", "timeout_seconds")
                .with_detail("limit", config.max_timeout.as_secs()));
            }
        };
        let Scan { blank, complexity_score, injection, query_hash } = self.scan(sql);
        if blank {
            return Err(OnexError::validation("query must not be blank").with_detail("field", "query"));
        }
        if let Some(pattern) = injection {
            return Err(OnexError::new(
                ErrorCode::SecurityViolationError,
                format!("query refused: it matches the injection pattern {pattern}"),
            )
            .with_detail("field", "query")
            .with_detail("pattern", pattern));
        }
        if complexity_score > config.max_complexity_score {
            return Err(OnexError::new(
                ErrorCode::SecurityViolationError,
                format!(
                    "query refused: its complexity score {complexity_score} is over the limit of {}",
                    config.max_complexity_score
                ),
            )
            .with_detail("field", "query")
            .with_detail("complexity_score", complexity_score)
            .with_detail("limit", config.max_complexity_score));
        }
        Ok(Checked { timeout, complexity_score, query_hash })
    }

    /// The single walk over the statement: whether it is blank, its complexity score, the
    /// injection pattern it matches (with detection on) and its hash.
    ///
    /// The hash collapses every run of whitespace to one space and drops leading and trailing
    /// whitespace, as `query_hash` does with `split_whitespace`; that agrees on ASCII text,
    /// and text with other bytes (whose whitespace `split_whitespace` also knows) is hashed by
    /// `query_hash` itself.
    fn scan(&self, sql: &str) -> Scan {
        let text = sql.as_bytes();
        let mut scorer = Scorer::new(self.config.weights);
        let mut matcher = Matcher::default();
        let detect = self.config.detect_injection;
        let mut hash = Fnv(Fnv::OFFSET);
        let mut ascii = true;
        // A non-space byte was seen: the statement is not blank, and a space before the next
        // one is hashed.
        let mut seen = false;
        let mut at = 0;
        while at < text.len() {
            let gap = at;
            let mut spaces_only = true;
            let mut semicolon = false;
            let mut space_before = false;
            while at < text.len() {
                let byte = text[at];
                let class = CLASSES[usize::from(byte)];
                if class == WORD {
                    break;
                }
                if class == SPACE {
                    space_before = true;
                } else {
                    spaces_only = false;
                    if space_before && seen {
                        hash.feed(b' ');
                    }
                    space_before = false;
                    seen = true;
                    hash.feed(byte);
                    match byte {
                        b';' => semicolon = true,
                        b'~' => scorer.tilde(),
                        _ => {}
                    }
                }
                at += 1;
            }
            if detect {
                matcher.gap(at > gap && spaces_only, semicolon);
            }
            if at == text.len() {
                break;
            }
            if space_before && seen {
                hash.feed(b' ');
            }
            seen = true;
            let word = at;
            while at < text.len() && CLASSES[usize::from(text[at])] == WORD {
                ascii &= text[at] < 0x80;
                hash.feed(text[at]);
                at += 1;
            }
            scorer.word(text, word, at);
            if detect {
                matcher.word(&text[word..at]);
            }
        }
        Scan {
            blank: !seen,
            complexity_score: scorer.finish(),
            injection: matcher.matched().map(|p| p.source),
            query_hash: if ascii { hash.0 } else { super::metrics::query_hash(sql) },
        }
    }
}

#[cold]
fn over_limit(what: &str, field: &str, size: usize, limit: usize, unit: &str) -> OnexError {
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    OnexError::validation(format!("{what}: {size}{unit}, over the limit of {limit}{unit}"))
        .with_detail("field", field)
        .with_detail("size", size)
        .with_detail("limit", limit)
}

/// The size of `param` in characters when it is over `limit`; `None` when within.
fn oversized(param: &Value, limit: usize) -> Option<usize> {
    match param {
        Value::String(s) => (s.len() > limit).then(|| s.chars().count()).filter(|chars| *chars > limit),
        // The JSON text of a number, a boolean or null is at most 24 characters.
        Value::Null | Value::Bool(_) | Value::Number(_) if limit >= 24 => None,
        _ => {
            let mut counter = CharCounter { chars: 0, limit };
            // The counter stops the serialization with an error once past the limit.
            let _ = serde_json::to_writer(&mut counter, param);
            (counter.chars > limit).then_some(counter.chars)
        }
    }
}

/// Counts the characters of serialized JSON, failing the write once past `limit`.
struct CharCounter {
    chars: usize,
    limit: usize,
}

impl io::Write for CharCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // UTF-8 continuation bytes (0b10xx_xxxx) do not start a character.
        self.chars += buf.iter().filter(|b| (**b & 0xc0) != 0x80).count();
        if self.chars > self.limit {
            return Err(io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::environment::MapEnv;

    fn guard(environment: Environment) -> QueryGuard {
        QueryGuard::new(GuardConfig::for_environment(environment)).unwrap()
    }

    #[test]
    fn a_plain_statement_passes() {
        let checked = guard(Environment::Production)
            .check("SELECT abalance FROM pgbench_accounts WHERE aid = $1", &[json!(7)], Some(2.5))
            .unwrap();
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        assert_eq!(
            checked,
            Checked {
                timeout: Some(Duration::from_millis(2500)),
                complexity_score: 0,
                query_hash: super::super::metrics::query_hash(sql)
            }
        );
    }

    #[test]
    fn sizes_are_counted_in_characters() {
        let mut config = GuardConfig::for_environment(Environment::Development);
        config.max_query_size = 20;
        config.max_parameter_size = 4;
        let guard = QueryGuard::new(config).unwrap();
        // 20 characters, 40 bytes.
        let sql = format!("SELECT {}", "é".repeat(13));
        assert!(guard.check(&sql, &[], None).is_ok());
        let err = guard.check(&format!("{sql}x"), &[], None).unwrap_err();
        assert_eq!((err.code(), err.details()["field"].clone()), (ErrorCode::ValidationError, json!("max_query_size")));
        assert!(err.message().contains("21 characters"), "{err}");
        assert!(guard.check("SELECT $1", &[json!("éééé")], None).is_ok());
        let err = guard.check("SELECT $1, $2", &[json!(1), json!("abcde")], None).unwrap_err();
        assert!(err.message().contains("$2 is 5 characters"), "{err}");
        // An object counts as its JSON text: {"a":1} is 7 characters.
        let err = guard.check("SELECT $1", &[json!({"a": 1})], None).unwrap_err();
        assert_eq!(err.details()["parameter"], 1);
        // With a small limit even a number is measured.
        let err = guard.check("SELECT $1", &[json!(123_456)], None).unwrap_err();
        assert!(err.message().contains("6 characters"), "{err}");
    }

    #[test]
    fn limits_refuse_with_validation_errors_that_do_not_echo_the_input() {
        let guard = guard(Environment::Production);
        let secret = "hunter2-".repeat(700);
        for (sql, params, timeout) in [
            (format!("SELECT '{secret}'").repeat(5), vec![], None),
            ("SELECT 1".to_owned(), vec![json!(1); 51], None),
            ("SELECT $1".to_owned(), vec![json!(secret.clone())], None),
            ("SELECT 1".to_owned(), vec![], Some(181.0)),
            ("SELECT 1".to_owned(), vec![], Some(0.0)),
            ("SELECT 1".to_owned(), vec![], Some(f64::NAN)),
            (" \n\t".to_owned(), vec![], None),
        ] {
            let err = guard.check(&sql, &params, timeout).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ValidationError, "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn injection_and_complexity_are_security_violations() {
        let guard = guard(Environment::Production);
        let err = guard.check("SELECT * FROM t WHERE id = 1; DROP TABLE users", &[], None).unwrap_err();
        assert_eq!(err.code(), ErrorCode::SecurityViolationError);
        assert_eq!(err.details()["pattern"], INJECTION_PATTERNS[0]);
        assert!(!err.message().contains("users"), "{err}");
        // 2 regex operators in production: 24 > 15.
        let err = guard.check("SELECT 1 FROM t WHERE a ~ $1 AND b ~ $2", &[json!("x"), json!("y")], None).unwrap_err();
        assert_eq!(err.code(), ErrorCode::SecurityViolationError);
        assert_eq!(err.details()["complexity_score"], 24);
        // The same statement is within development's limit of 30 with its lighter weights.
        assert!(
            self::guard(Environment::Development)
                .check("SELECT 1 FROM t WHERE a ~ $1 AND b ~ $2", &[json!("x"), json!("y")], None)
                .is_ok()
        );
    }

    #[test]
    fn injection_detection_can_be_switched_off_outside_production() {
        let env = MapEnv::from_pairs([
            ("DEPLOYMENT_ENVIRONMENT", "development"),
            (limits::ENABLE_INJECTION_DETECTION, "false"),
        ]);
        let guard = QueryGuard::from_env(&env).unwrap();
        assert!(guard.check("SELECT 1; DROP TABLE t", &[], None).is_ok());
    }

    proptest! {
        /// The single walk finds what the injection matcher and the scorer find on their own.
        #[test]
        fn the_single_walk_agrees_with_the_separate_checks(text in "[ a-zA-Z;~'%()\n\t\x0b_$é\u{a0}]{0,120}") {
            let config = GuardConfig::for_environment(Environment::Development);
            let guard = QueryGuard::new(config.clone()).unwrap();
            let scan = guard.scan(&text);
            // Blank means ASCII whitespace only: other whitespace is text the server will judge.
            prop_assert_eq!(scan.blank, text.bytes().all(is_space));
            prop_assert_eq!(scan.complexity_score, complexity::score(&text, config.weights));
            prop_assert_eq!(scan.injection, injection::find(&text).map(|p| p.source));
            prop_assert_eq!(scan.query_hash, super::super::metrics::query_hash(&text));
        }

        #[test]
        fn the_hash_is_the_pools_for_any_text(text in "\\PC{0,80}") {
            let guard = QueryGuard::new(GuardConfig::for_environment(Environment::Development)).unwrap();
            prop_assert_eq!(guard.scan(&text).query_hash, super::super::metrics::query_hash(&text));
        }
    }
}
