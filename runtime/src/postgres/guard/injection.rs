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
//! forward walk suffices: every pattern waits for its current stage, and a stage is compared
//! only at positions whose byte starts it, from where the previous stage ended. Nothing is
//! allocated and the text is read once.
//!
//! The original system allowed `.` to stop at a line break; here it does not, so a payload
//! cannot hide `; DROP TABLE` on the next line.

/// One alternative of a stage: words separated by one or more whitespace characters.
type Phrase = &'static [&'static [u8]];

/// One stage: any of its phrases.
type Stage = &'static [Phrase];

/// An injection pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The pattern as the original system wrote it (what a refusal names).
    pub source: &'static str,
    stages: &'static [Stage],
}

/// The patterns, in the order a refusal reports them.
pub(crate) const PATTERNS: [Pattern; 4] = [
    Pattern { source: r";.*drop\s+table", stages: &[&[&[b";"]], &[&[b"drop", b"table"]]] },
    Pattern { source: r";.*delete\s+from", stages: &[&[&[b";"]], &[&[b"delete", b"from"]]] },
    Pattern { source: r";.*truncate\s+table", stages: &[&[&[b";"]], &[&[b"truncate", b"table"]]] },
    Pattern {
        source: r"union.*select.*(password|admin)",
        stages: &[&[&[b"union"]], &[&[b"select"]], &[&[b"password"], &[b"admin"]]],
    },
];

/// Python's `\s` on ASCII text: space, tab, line feed, carriage return, form feed, vertical tab.
const fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Where `phrase` ends when it starts at `at` in `text`, if it does (case-insensitive).
fn phrase_at(text: &[u8], at: usize, phrase: Phrase) -> Option<usize> {
    let mut pos = at;
    for (i, word) in phrase.iter().enumerate() {
        if i > 0 {
            let spaces = text[pos..].iter().take_while(|b| is_space(**b)).count();
            if spaces == 0 {
                return None;
            }
            pos += spaces;
        }
        let end = pos + word.len();
        if end > text.len() || !text[pos..end].eq_ignore_ascii_case(word) {
            return None;
        }
        pos = end;
    }
    Some(pos)
}

/// The progress of every pattern along one text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matcher {
    /// Per pattern: the stage it waits for (`stages.len()` = matched).
    stage: [u8; PATTERNS.len()],
    /// Per pattern: the first position the awaited stage may start at.
    from: [usize; PATTERNS.len()],
    /// The first byte (lower case) of every phrase some pattern waits for, as a bit set over
    /// the 128 ASCII bytes: most positions are dismissed with one test.
    wanted: u128,
}

const fn first_bytes(stage: Stage) -> u128 {
    let mut set = 0u128;
    let mut i = 0;
    while i < stage.len() {
        set |= 1 << stage[i][0][0].to_ascii_lowercase();
        i += 1;
    }
    set
}

impl Matcher {
    pub(crate) const fn new() -> Self {
        let mut wanted = 0;
        let mut i = 0;
        while i < PATTERNS.len() {
            wanted |= first_bytes(PATTERNS[i].stages[0]);
            i += 1;
        }
        Self { stage: [0; PATTERNS.len()], from: [0; PATTERNS.len()], wanted }
    }

    /// Looks at position `at` of `text`; call it for every position in order.
    #[inline]
    pub(crate) fn step(&mut self, text: &[u8], at: usize) {
        let byte = text[at].to_ascii_lowercase();
        if byte >= 128 || self.wanted & (1 << byte) == 0 {
            return;
        }
        self.advance(text, at, byte);
    }

    #[inline(never)]
    fn advance(&mut self, text: &[u8], at: usize, byte: u8) {
        let mut wanted = 0;
        for (p, pattern) in PATTERNS.iter().enumerate() {
            let stage = usize::from(self.stage[p]);
            if stage < pattern.stages.len() && at >= self.from[p] {
                let end = pattern.stages[stage]
                    .iter()
                    .filter(|phrase| phrase[0][0].eq_ignore_ascii_case(&byte))
                    .find_map(|phrase| phrase_at(text, at, phrase));
                if let Some(end) = end {
                    self.stage[p] += 1;
                    self.from[p] = end;
                }
            }
            if let Some(next) = pattern.stages.get(usize::from(self.stage[p])) {
                wanted |= first_bytes(next);
            }
        }
        self.wanted = wanted;
    }

    /// The first pattern (in [`PATTERNS`] order) that matched, if any.
    pub(crate) fn matched(&self) -> Option<&'static Pattern> {
        PATTERNS
            .iter()
            .enumerate()
            .find(|(p, pattern)| usize::from(self.stage[*p]) == pattern.stages.len())
            .map(|(_, p)| p)
    }
}

/// The first pattern `text` matches, walking it on its own (tests; the guard walks the text
/// once for this and the complexity score together).
#[cfg(test)]
pub(crate) fn find(text: &str) -> Option<&'static Pattern> {
    let bytes = text.as_bytes();
    let mut matcher = Matcher::new();
    for at in 0..bytes.len() {
        matcher.step(bytes, at);
    }
    matcher.matched()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A direct reading of the patterns' regular-expression semantics, by brute force over
    /// every placement of every stage: slow, obviously right, and independent of the
    /// earliest-placement argument the matcher relies on.
    fn reference(text: &str, pattern: &Pattern) -> bool {
        fn from(text: &[u8], stages: &[Stage], start: usize) -> bool {
            let Some((stage, rest)) = stages.split_first() else { return true };
            (start..text.len()).any(|at| {
                stage.iter().any(|phrase| {
                    // Every length of every `\s+` run, not only the longest.
                    ends(text, at, phrase).into_iter().any(|end| from(text, rest, end))
                })
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
        from(text.as_bytes(), pattern.stages, 0)
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
            let expected = PATTERNS.iter().find(|p| reference(&text, p)).map(|p| p.source);
            prop_assert_eq!(names(&text), expected);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let expected = PATTERNS.iter().find(|p| reference(&text, p)).map(|p| p.source);
            prop_assert_eq!(names(&text), expected);
        }
    }
}
