//! The injection patterns, matched by hand instead of by a regular-expression engine.
//!
//! The four patterns, case-insensitive, anywhere in the text (no word boundaries, `.` matching
//! any character including a line break):
//!
//! | pattern | catches |
//! |---|---|
//! | `;.*drop\s+table` | a statement chained after `;` that drops a table |
//! | `;.*delete\s+from` | a statement chained after `;` that deletes rows |
//! | `;.*truncate\s+table` | a statement chained after `;` that empties a table |
//! | `union.*select.*(password\|admin)` | a UNION that selects credentials |
//!
//! Each pattern is a chain of *stages* joined by `.*`, and each stage a phrase of words joined
//! by `\s+`. For such a chain, taking every stage at its earliest possible place never misses
//! a match: an earlier end of one stage leaves at least as much text for the next. So one
//! forward walk suffices.
//!
//! The walk is the guard's: it splits the text into *words* (runs of letters, digits, `_`, `$`
//! and non-ASCII bytes) and the *gaps* between them, and hands both to the [`Matcher`], which
//! therefore looks at words, not at every byte. That is exact, because every stage is made of
//! letters (and `;`, which only a gap holds): a letter sequence lies inside one word; `drop`
//! followed by whitespace ends a word; `table` after whitespace starts the next one, and the
//! gap between them is whitespace only.
//!
//! The original system allowed `.` to stop at a line break; here it does not, so a payload
//! cannot hide `; DROP TABLE` on the next line.

/// An injection pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The pattern as the original system wrote it (what a refusal names).
    pub source: &'static str,
}

/// The patterns, in the order a refusal reports them.
pub(crate) const PATTERNS: [Pattern; 4] = [
    Pattern { source: r";.*drop\s+table" },
    Pattern { source: r";.*delete\s+from" },
    Pattern { source: r";.*truncate\s+table" },
    Pattern { source: r"union.*select.*(password|admin)" },
];

/// The stacked-statement patterns (the first three): after a `;`, a word ending in the first
/// keyword, whitespace, and a word starting with the second.
const STACKED: [(&[u8], &[u8]); 3] = [(b"drop", b"table"), (b"delete", b"from"), (b"truncate", b"table")];

/// The stages of the union pattern (the fourth); the last has two alternatives.
const UNION: &[u8] = b"union";
const SELECT: &[u8] = b"select";
const CREDENTIALS: [&[u8]; 2] = [b"password", b"admin"];

/// Python's `\s` on ASCII text: space, tab, line feed, carriage return, form feed, vertical tab.
pub(crate) const fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Where the first case-insensitive occurrence of `needle` in `word` at or after `from` ends.
fn find_from(word: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let last_start = word.len().checked_sub(needle.len())?;
    (from..=last_start)
        .find(|&at| word[at].to_ascii_lowercase() == first && word[at..at + needle.len()].eq_ignore_ascii_case(needle))
        .map(|at| at + needle.len())
}

/// The progress of every pattern along one text, fed its gaps and words in order.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Matcher {
    /// A `;` was seen.
    semicolon: bool,
    /// The previous word ended with the first keyword of this stacked pattern after a `;`,
    /// and only whitespace followed it so far.
    pending: Option<u8>,
    /// The stage the union pattern waits for (3 = matched).
    union_stage: u8,
    /// Bit `p` set: pattern `p` matched.
    matched: u8,
}

impl Matcher {
    /// The bytes between two words (or before the first): whether there were any and all were
    /// whitespace, and whether a `;` was among them.
    #[inline]
    pub(crate) fn gap(&mut self, whitespace_only: bool, semicolon: bool) {
        if !whitespace_only {
            self.pending = None;
        }
        self.semicolon |= semicolon;
    }

    /// The next word.
    #[inline]
    pub(crate) fn word(&mut self, word: &[u8]) {
        if let Some(p) = self.pending.take() {
            let second = STACKED[usize::from(p)].1;
            if word.len() >= second.len() && word[..second.len()].eq_ignore_ascii_case(second) {
                self.matched |= 1 << p;
            }
        }
        if self.semicolon {
            self.pending = STACKED
                .iter()
                .position(|(first, _)| {
                    word.len() >= first.len() && word[word.len() - first.len()..].eq_ignore_ascii_case(first)
                })
                .map(|p| p as u8);
        }
        if self.union_stage < 3 {
            self.union(word);
        }
    }

    #[inline(never)]
    fn union(&mut self, word: &[u8]) {
        let mut from = 0;
        while self.union_stage < 3 {
            let end = match self.union_stage {
                0 => find_from(word, from, UNION),
                1 => find_from(word, from, SELECT),
                _ => CREDENTIALS.iter().find_map(|needle| find_from(word, from, needle)),
            };
            let Some(end) = end else { return };
            self.union_stage += 1;
            from = end;
        }
        self.matched |= 1 << 3;
    }

    /// The first pattern (in [`PATTERNS`] order) that matched, if any.
    pub(crate) fn matched(&self) -> Option<&'static Pattern> {
        (self.matched != 0).then(|| &PATTERNS[self.matched.trailing_zeros() as usize])
    }
}

/// The first pattern `text` matches, walking it on its own with the guard's split into words
/// and gaps (tests; the guard feeds the matcher during its single walk).
#[cfg(test)]
pub(crate) fn find(text: &str) -> Option<&'static Pattern> {
    use super::complexity::is_word_byte;
    let bytes = text.as_bytes();
    let mut matcher = Matcher::default();
    let mut at = 0;
    while at < bytes.len() {
        let gap = at;
        while at < bytes.len() && !is_word_byte(bytes[at]) {
            at += 1;
        }
        let gap = &bytes[gap..at];
        matcher.gap(!gap.is_empty() && gap.iter().all(|b| is_space(*b)), gap.contains(&b';'));
        let word = at;
        while at < bytes.len() && is_word_byte(bytes[at]) {
            at += 1;
        }
        if at > word {
            matcher.word(&bytes[word..at]);
        }
    }
    matcher.matched()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One alternative of a stage: words separated by one or more whitespace characters.
    type Phrase = &'static [&'static [u8]];
    /// One stage: any of its phrases.
    type Stage = &'static [Phrase];

    /// The patterns of [`PATTERNS`] as stages, for the reference.
    const STAGES: [&[Stage]; 4] = [
        &[&[&[b";"]], &[&[b"drop", b"table"]]],
        &[&[&[b";"]], &[&[b"delete", b"from"]]],
        &[&[&[b";"]], &[&[b"truncate", b"table"]]],
        &[&[&[b"union"]], &[&[b"select"]], &[&[b"password"], &[b"admin"]]],
    ];

    /// A direct reading of the patterns' regular-expression semantics, by brute force over
    /// every placement of every stage and every length of every `\s+` run: slow, obviously
    /// right, and independent of the word-level reasoning the matcher relies on.
    fn reference(text: &str, pattern: usize) -> bool {
        fn from(text: &[u8], stages: &[Stage], start: usize) -> bool {
            let Some((stage, rest)) = stages.split_first() else { return true };
            (start..text.len()).any(|at| {
                stage.iter().any(|phrase| ends(text, at, phrase).into_iter().any(|end| from(text, rest, end)))
            })
        }
        fn ends(text: &[u8], at: usize, phrase: Phrase) -> Vec<usize> {
            let mut positions = vec![at];
            for (i, word) in phrase.iter().enumerate() {
                let mut next = Vec::new();
                for pos in positions {
                    let mut starts = vec![];
                    if i == 0 {
                        starts.push(pos);
                    } else {
                        let mut p = pos;
                        while p < text.len() && is_space(text[p]) {
                            p += 1;
                            starts.push(p);
                        }
                    }
                    for s in starts {
                        if s + word.len() <= text.len() && text[s..s + word.len()].eq_ignore_ascii_case(word) {
                            next.push(s + word.len());
                        }
                    }
                }
                positions = next;
            }
            positions
        }
        from(text.as_bytes(), STAGES[pattern], 0)
    }

    fn expected(text: &str) -> Option<&'static str> {
        (0..PATTERNS.len()).find(|p| reference(text, *p)).map(|p| PATTERNS[p].source)
    }

    fn names(text: &str) -> Option<&'static str> {
        find(text).map(|p| p.source)
    }

    #[test]
    fn stacked_destructive_statements_are_caught() {
        assert_eq!(names("SELECT 1; DROP TABLE users"), Some(r";.*drop\s+table"));
        assert_eq!(names("select 1;\n\n  drop\t\ntable x"), Some(r";.*drop\s+table"));
        assert_eq!(names("SELECT * FROM t WHERE id = 1;DELETE   FROM t"), Some(r";.*delete\s+from"));
        assert_eq!(names("x'; TRUNCATE TABLE audit; --"), Some(r";.*truncate\s+table"));
        assert_eq!(names("SELECT a FROM t UNION SELECT password FROM users"), Some(r"union.*select.*(password|admin)"));
        assert_eq!(names("1 UnIoN aLL sElEcT name FROM ADMINS"), Some(r"union.*select.*(password|admin)"));
    }

    #[test]
    fn ordinary_statements_pass() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "DROP TABLE scratch",
            "DELETE FROM sessions WHERE expires < now();",
            "TRUNCATE TABLE staging",
            "SELECT password FROM users UNION SELECT 1",
            "SELECT 1 UNION SELECT 2",
            "SELECT 'drop table' ; SELECT 1",
            "DROP TABLE a; SELECT 1",
            "; drop tab le",
            "; dropped, table",
        ] {
            assert_eq!(names(sql), None, "{sql}");
        }
    }

    #[test]
    fn every_whitespace_of_python_counts_between_words() {
        for space in [" ", "\t", "\n", "\r", "\x0b", "\x0c", " \t\n"] {
            assert!(find(&format!("1;drop{space}table t")).is_some(), "{space:?}");
        }
        assert!(find("1;droptable t").is_none());
        assert!(find("1;drop\u{a0}table t").is_none(), "a non-ASCII space is not \\s here");
    }

    #[test]
    fn the_earliest_placement_does_not_hide_a_later_match() {
        // The first `union` has no `select` after it, the second does.
        assert!(find("union x union select admin").is_some());
        // `select` may start right where `union` ends; `admin` right where `select` ends.
        assert!(find("unionselectadmin").is_some());
        assert!(find("selectadmin union").is_none());
        // A `;` after the phrase does not count.
        assert!(find("drop table x;").is_none());
        // Non-ASCII text around the patterns is walked over.
        assert!(find("é;ü drop table ö").is_some());
    }

    /// Text made of the patterns' own pieces, so random strings hit the interesting cases.
    fn fragments() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            ";", "drop", "DROP", "table", "TaBle", "delete", "from", "truncate", "union", "UNION", "select",
            "password", "admin", "ADMIN", " ", "\t", "\n", "x", "é", "'", "--", "dro", "p", "un", "ion",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn the_matcher_agrees_with_the_regular_expressions(text in fragments()) {
            prop_assert_eq!(names(&text), expected(&text));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            prop_assert_eq!(names(&text), expected(&text));
        }
    }
}
