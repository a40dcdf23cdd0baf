//! The complexity score of a statement: a weighted count of the constructs that make a
//! statement expensive for the server.
//!
//! | construct | counted | development weight | production weight |
//! |---|---|---:|---:|
//! | `JOIN` | each | 2 | 3 |
//! | `SELECT` beyond the first | each | 3 | 4 |
//! | `UNION` | each | 4 | 5 |
//! | `LIKE '%…` / `ILIKE '%…` (a leading wildcard defeats an index) | each | 5 | 6 |
//! | regular-expression match `~` (`~`, `~*`, `!~`, `!~*`) | each | 10 | 12 |
//! | aggregate call (`count(`, `sum(`, `avg(`, `min(`, `max(`, `array_agg(`, `string_agg(`, `json_agg(`, `jsonb_agg(`), `generate_series`, `RECURSIVE` | each | 3 | 4 |
//! | `ORDER BY` without any `LIMIT` | once | 2 | 3 |
//!
//! Keywords are whole words, matched case-insensitively, over the raw text: words inside
//! string literals and comments count too, which errs on the strict side (a literal belongs
//! in a parameter anyway). The score is computed in the guard's single walk over the text,
//! which hands every word and every `~` to the scorer; nothing is allocated.

use crate::environment::Environment;

/// The weight of each construct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComplexityWeights {
    /// Per `JOIN`.
    pub join: u32,
    /// Per `SELECT` beyond the first.
    pub extra_select: u32,
    /// Per `UNION`.
    pub union: u32,
    /// Per `LIKE '%` (leading wildcard).
    pub leading_wildcard: u32,
    /// Per regular-expression operator `~`.
    pub regex: u32,
    /// Per aggregate call, `generate_series` or `RECURSIVE`.
    pub aggregate: u32,
    /// Once, for `ORDER BY` without `LIMIT`.
    pub unbounded_order: u32,
}

impl ComplexityWeights {
    /// Production weighs every construct more than the other environments.
    pub const fn for_environment(environment: Environment) -> Self {
        match environment {
            Environment::Production => Self {
                join: 3,
                extra_select: 4,
                union: 5,
                leading_wildcard: 6,
                regex: 12,
                aggregate: 4,
                unbounded_order: 3,
            },
            Environment::Staging | Environment::Development => Self {
                join: 2,
                extra_select: 3,
                union: 4,
                leading_wildcard: 5,
                regex: 10,
                aggregate: 3,
                unbounded_order: 2,
            },
        }
    }
}

/// Aggregate functions, counted when a `(` follows them.
const AGGREGATES: [&[u8]; 9] =
    [b"count", b"sum", b"avg", b"min", b"max", b"array_agg", b"string_agg", b"json_agg", b"jsonb_agg"];

/// The running score of one text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scorer {
    weights: ComplexityWeights,
    score: u32,
    selects: u32,
    /// The previous word was `ORDER`.
    after_order: bool,
    order_by: bool,
    limit: bool,
}

/// The first position from `at` that is not whitespace.
fn skip_spaces(text: &[u8], mut at: usize) -> usize {
    while at < text.len() && text[at].is_ascii_whitespace() {
        at += 1;
    }
    at
}

impl Scorer {
    pub(crate) const fn new(weights: ComplexityWeights) -> Self {
        Self { weights, score: 0, selects: 0, after_order: false, order_by: false, limit: false }
    }

    /// Scores the word `text[start..end]` (letters, digits, `_`, `$`), which the caller found
    /// at a word boundary.
    #[inline]
    pub(crate) fn word(&mut self, text: &[u8], start: usize, end: usize) {
        let word = &text[start..end];
        let after_order = std::mem::take(&mut self.after_order);
        // Dispatch on the length first: most words of a statement (identifiers) are dismissed
        // by one comparison.
        let is = |keyword: &[u8]| word.eq_ignore_ascii_case(keyword);
        let w = self.weights;
        let add = match word.len() {
            2 if after_order && is(b"by") => {
                self.order_by = true;
                0
            }
            3 if AGGREGATES.iter().any(|a| is(a)) => self.called(text, end, w.aggregate),
            4 if is(b"join") => w.join,
            4 if is(b"like") => self.leading_wildcard(text, end),
            5 if is(b"union") => w.union,
            5 if is(b"order") => {
                self.after_order = true;
                0
            }
            5 if is(b"limit") => {
                self.limit = true;
                0
            }
            5 if is(b"count") => self.called(text, end, w.aggregate),
            5 if is(b"ilike") => self.leading_wildcard(text, end),
            6 if is(b"select") => {
                self.selects += 1;
                if self.selects > 1 { w.extra_select } else { 0 }
            }
            8..=10 if AGGREGATES.iter().any(|a| is(a)) => self.called(text, end, w.aggregate),
            9 if is(b"recursive") => w.aggregate,
            15 if is(b"generate_series") => w.aggregate,
            _ => 0,
        };
        self.score = self.score.saturating_add(add);
    }

    /// A `~` operator.
    #[inline]
    pub(crate) fn tilde(&mut self) {
        self.score = self.score.saturating_add(self.weights.regex);
    }

    /// `weight` when a `(` follows position `end` (a call), else 0.
    fn called(&self, text: &[u8], end: usize, weight: u32) -> u32 {
        if text.get(skip_spaces(text, end)) == Some(&b'(') { weight } else { 0 }
    }

    /// The leading-wildcard weight when `'%` follows position `end`.
    fn leading_wildcard(&self, text: &[u8], end: usize) -> u32 {
        let at = skip_spaces(text, end);
        if text.get(at..at + 2) == Some(b"'%") { self.weights.leading_wildcard } else { 0 }
    }

    /// The score once the whole text was walked.
    pub(crate) fn finish(&self) -> u32 {
        let unbounded = if self.order_by && !self.limit { self.weights.unbounded_order } else { 0 };
        self.score.saturating_add(unbounded)
    }
}

/// Whether `byte` continues a word (an identifier or keyword).
#[inline]
pub(crate) const fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// The score of `text` walked on its own (tests; the guard scores during its single walk).
#[cfg(test)]
pub(crate) fn score(text: &str, weights: ComplexityWeights) -> u32 {
    let bytes = text.as_bytes();
    let mut scorer = Scorer::new(weights);
    let mut at = 0;
    while at < bytes.len() {
        if is_word_byte(bytes[at]) {
            let end = at + bytes[at..].iter().take_while(|b| is_word_byte(**b)).count();
            scorer.word(bytes, at, end);
            at = end;
        } else {
            if bytes[at] == b'~' {
                scorer.tilde();
            }
            at += 1;
        }
    }
    scorer.finish()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DEV: ComplexityWeights = ComplexityWeights::for_environment(Environment::Development);
    const PROD: ComplexityWeights = ComplexityWeights::for_environment(Environment::Production);

    #[test]
    fn a_simple_statement_scores_nothing() {
        assert_eq!(score("SELECT abalance FROM pgbench_accounts WHERE aid = $1", DEV), 0);
        assert_eq!(score("INSERT INTO t (a) VALUES ($1) RETURNING id", DEV), 0);
        assert_eq!(score("SELECT * FROM t ORDER BY a LIMIT 10", DEV), 0);
    }

    #[test]
    fn each_construct_has_its_weight() {
        assert_eq!(score("SELECT * FROM a JOIN b ON true LEFT JOIN c ON true", DEV), 4);
        assert_eq!(score("SELECT * FROM a JOIN b ON true LEFT JOIN c ON true", PROD), 6);
        assert_eq!(score("SELECT (SELECT 1), (SELECT 2)", DEV), 6);
        assert_eq!(score("SELECT 1 UNION SELECT 2", DEV), 4 + 3);
        assert_eq!(score("SELECT 1 FROM t WHERE a LIKE '%x' OR b ILIKE  '%y' OR c LIKE 'z%'", DEV), 10);
        assert_eq!(score("SELECT 1 FROM t WHERE a ~ 'x' OR b !~* 'y'", DEV), 20);
        assert_eq!(score("SELECT 1 FROM t WHERE a ~ 'x' OR b !~* 'y'", PROD), 24);
        assert_eq!(score("SELECT count(*), SUM (a), max(b), min, jsonb_agg(c) FROM t", DEV), 12);
        assert_eq!(score("WITH RECURSIVE r AS (SELECT 1) SELECT * FROM r, generate_series(1, 3)", DEV), 3 + 3 + 3);
        assert_eq!(score("SELECT a FROM t ORDER  BY a", DEV), 2);
        assert_eq!(score("SELECT a FROM t ORDER  BY a", PROD), 3);
        assert_eq!(score("SELECT a FROM t ORDER BY a OFFSET 5 LIMIT 5", DEV), 0);
    }

    #[test]
    fn keywords_are_whole_words_in_any_case() {
        assert_eq!(score("SELECT rejoin, joined, unions, selected, \"join\" FROM t", DEV), 2);
        assert_eq!(score("select * from a jOiN b on true", DEV), 2);
        assert_eq!(score("SELECT order_by, border FROM t", DEV), 0);
        assert_eq!(score("SELECT countx(1), $count(2) FROM t", DEV), 0);
    }

    #[test]
    fn a_heavy_statement_crosses_the_limits() {
        let sql = "SELECT * FROM a JOIN b ON a.id = b.id JOIN c ON b.id = c.id \
                   WHERE a.name LIKE '%x%' AND b.v ~ '^a' UNION SELECT * FROM d ORDER BY 1";
        // 2 joins, 1 extra select, 1 union, 1 wildcard, 1 regex, unbounded order.
        assert_eq!(score(sql, DEV), 4 + 3 + 4 + 5 + 10 + 2);
        assert_eq!(score(sql, PROD), 6 + 4 + 5 + 6 + 12 + 3);
    }

    proptest! {
        #[test]
        fn the_score_never_decreases_when_text_is_appended(a in ".{0,80}", b in "[ a-zA-Z(~'%]{0,40}") {
            // Appending cannot remove a construct already counted, except that a LIMIT
            // cancels the unbounded ORDER BY.
            let before = score(&a, DEV);
            let after = score(&format!("{a} {b}"), DEV);
            prop_assert!(after + DEV.unbounded_order >= before);
        }
    }
}
