//! SQL statements as a span or a log shows them: [`sanitize_sql`].
//!
//! Literals are what can hold personal data or secrets, so every literal becomes `?`: strings
//! (`'…'` with `''` inside, and the `E`, `N`, `B`, `X` and `U&` prefixed forms), dollar-quoted
//! strings (`$$…$$`, `$tag$…$tag$`) and numbers (integers, decimals, exponents, `0x…`).
//! Keywords, identifiers (also `"quoted"` ones), positional parameters (`$1`) and operators are
//! kept, so `SELECT COUNT(*) FROM t WHERE a >= 10` reads `SELECT COUNT(*) FROM t WHERE a >= ?`.
//! Comments are dropped (they can hold anything), runs of whitespace become one space, only
//! the first statement is kept (up to its `;`), and the result is cut to [`MAX_SANITIZED_CHARS`]
//! characters, ending in `...` when cut.
//!
//! A statement longer than [`MAX_STATEMENT_CHARS`] characters is not read at all: it becomes
//! `-- QUERY TOO LARGE (N chars) --`. A statement that does not tokenize (an unterminated
//! string, quoted identifier, dollar quote or block comment) is an error rather than a guess,
//! since a guess could show the rest of a literal. The error never quotes the statement.

use crate::error::{ErrorCode, OnexError};

/// Longest statement that is read; longer ones are only counted.
pub const MAX_STATEMENT_CHARS: usize = 10_000;
/// Longest sanitized statement, `...` included.
pub const MAX_SANITIZED_CHARS: usize = 200;

/// The statement with every literal replaced by `?` (see the module documentation).
pub fn sanitize_sql(statement: &str) -> Result<String, OnexError> {
    if statement.trim().is_empty() {
        return Ok(String::new());
    }
    let chars: Vec<char> = statement.chars().collect();
    if chars.len() > MAX_STATEMENT_CHARS {
        return Ok(format!("-- QUERY TOO LARGE ({} chars) --", chars.len()));
    }
    let mut out = Sanitized::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        i = match c {
            ';' => break,
            c if c.is_whitespace() => {
                out.space();
                i + 1
            }
            '-' if next == Some('-') => {
                out.space();
                chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |n| i + n + 1)
            }
            '/' if next == Some('*') => {
                out.space();
                block_comment_end(&chars, i).ok_or_else(|| unreadable("an unterminated /* comment", i))?
            }
            '\'' => {
                out.literal();
                quoted_end(&chars, i, '\'').ok_or_else(|| unreadable("an unterminated string literal", i))?
            }
            '"' => {
                let end =
                    quoted_end(&chars, i, '"').ok_or_else(|| unreadable("an unterminated quoted identifier", i))?;
                out.text(&chars[i..end]);
                end
            }
            '$' if next.is_some_and(|n| n.is_ascii_digit()) => {
                let end = run_end(&chars, i + 1, |c| c.is_ascii_digit());
                out.text(&chars[i..end]);
                end
            }
            '$' => match dollar_tag_end(&chars, i) {
                Some(tag_end) => {
                    out.literal();
                    dollar_quote_end(&chars, i, tag_end)
                        .ok_or_else(|| unreadable("an unterminated dollar-quoted string", i))?
                }
                None => {
                    out.text(&chars[i..=i]);
                    i + 1
                }
            },
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                out.literal();
                number_end(&chars, i)
            }
            c if c.is_alphabetic() || c == '_' => {
                let end = run_end(&chars, i, |c| c.is_alphanumeric() || c == '_' || c == '$');
                let word: String = chars[i..end].iter().collect();
                // `E'…'`, `N'…'`, `B'…'`, `X'…'` and `U&'…'` are string literals with a prefix.
                let prefixed = matches!(word.to_ascii_uppercase().as_str(), "E" | "N" | "B" | "X");
                if prefixed && chars.get(end) == Some(&'\'') {
                    out.literal();
                    quoted_end(&chars, end, '\'').ok_or_else(|| unreadable("an unterminated string literal", end))?
                } else if word.eq_ignore_ascii_case("U")
                    && chars.get(end) == Some(&'&')
                    && chars.get(end + 1) == Some(&'\'')
                {
                    out.literal();
                    quoted_end(&chars, end + 1, '\'')
                        .ok_or_else(|| unreadable("an unterminated string literal", end + 1))?
                } else {
                    out.text(&chars[i..end]);
                    end
                }
            }
            _ => {
                out.text(&chars[i..=i]);
                i + 1
            }
        };
    }
    Ok(out.finish())
}

fn unreadable(what: &str, at: usize) -> OnexError {
    OnexError::new(
        ErrorCode::ValidationError,
        format!("cannot sanitize the SQL statement: {what} starts at character {}", at + 1),
    )
}

/// The text being built: whitespace collapsed, nothing before the first word.
#[derive(Default)]
struct Sanitized {
    text: String,
    pending_space: bool,
}

impl Sanitized {
    fn space(&mut self) {
        self.pending_space = !self.text.is_empty();
    }

    fn text(&mut self, chars: &[char]) {
        if std::mem::take(&mut self.pending_space) {
            self.text.push(' ');
        }
        self.text.extend(chars);
    }

    fn literal(&mut self) {
        self.text(&['?']);
    }

    fn finish(self) -> String {
        let count = self.text.chars().count();
        if count <= MAX_SANITIZED_CHARS {
            return self.text;
        }
        let mut cut: String = self.text.chars().take(MAX_SANITIZED_CHARS - 3).collect();
        cut.push_str("...");
        cut
    }
}

/// The index after the run of `chars` from `start` that `keep` accepts.
fn run_end(chars: &[char], start: usize, keep: impl Fn(char) -> bool) -> usize {
    chars[start..].iter().position(|&c| !keep(c)).map_or(chars.len(), |n| start + n)
}

/// The index after the closing `quote` of the quoted text opening at `start` (a doubled
/// quote inside stands for one, and a backslash escapes the next character, as in `E'…'`).
fn quoted_end(chars: &[char], start: usize, quote: char) -> Option<usize> {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote == '\'' => i += 2,
            c if c == quote && chars.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index after the `*/` closing the block comment opening at `start`; block comments nest.
fn block_comment_end(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// If a dollar-quote tag (`$$` or `$tag$`, the tag an identifier) opens at `start`, the index
/// after it.
fn dollar_tag_end(chars: &[char], start: usize) -> Option<usize> {
    let end = run_end(chars, start + 1, |c| c.is_alphanumeric() || c == '_');
    let tag_ok = end == start + 1 || !chars[start + 1].is_ascii_digit();
    (tag_ok && chars.get(end) == Some(&'$')).then_some(end + 1)
}

/// The index after the tag that closes the dollar quote whose tag spans `start..tag_end`.
fn dollar_quote_end(chars: &[char], start: usize, tag_end: usize) -> Option<usize> {
    let tag = &chars[start..tag_end];
    (tag_end..=chars.len().saturating_sub(tag.len())).find(|&i| &chars[i..i + tag.len()] == tag).map(|i| i + tag.len())
}

/// The index after the number starting at `start`: `0x` hex digits, or digits with an
/// optional fraction and exponent.
fn number_end(chars: &[char], start: usize) -> usize {
    if chars[start] == '0' && matches!(chars.get(start + 1), Some('x' | 'X')) {
        return run_end(chars, start + 2, |c| c.is_ascii_hexdigit() || c == '_');
    }
    let mut i = run_end(chars, start, |c| c.is_ascii_digit() || c == '_');
    if chars.get(i) == Some(&'.') {
        i = run_end(chars, i + 1, |c| c.is_ascii_digit() || c == '_');
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
        if chars.get(i + 1 + sign).is_some_and(char::is_ascii_digit) {
            i = run_end(chars, i + 1 + sign, |c| c.is_ascii_digit());
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn s(statement: &str) -> String {
        sanitize_sql(statement).unwrap()
    }

    #[test]
    fn operators_keywords_and_identifiers_are_kept() {
        assert_eq!(s("SELECT COUNT(*) FROM users"), "SELECT COUNT(*) FROM users");
        assert_eq!(
            s("select a.b, c::text from t1 where x >= y and z <> w"),
            "select a.b, c::text from t1 where x >= y and z <> w"
        );
        assert_eq!(s(r#"SELECT "Weird ""name""" FROM "T""#), r#"SELECT "Weird ""name""" FROM "T""#);
        assert_eq!(s("UPDATE t SET a = $1 WHERE id = $2"), "UPDATE t SET a = $1 WHERE id = $2");
    }

    #[test]
    fn every_kind_of_literal_becomes_a_placeholder() {
        assert_eq!(
            s("SELECT * FROM t WHERE name = 'O''Brien' AND age > 42"),
            "SELECT * FROM t WHERE name = ? AND age > ?"
        );
        assert_eq!(s("SELECT 3.14, .5, 1e10, 2.5E-3, 0xFF, 1_000"), "SELECT ?, ?, ?, ?, ?, ?");
        assert_eq!(s(r"SELECT E'a\'b', N'x', B'101', X'ff', U&'d\0061t'"), "SELECT ?, ?, ?, ?, ?");
        assert_eq!(s("SELECT $$secret; stuff$$, $fn$ body $fn$"), "SELECT ?, ?");
        assert_eq!(s("INSERT INTO t VALUES ('pw', 7) RETURNING id"), "INSERT INTO t VALUES (?, ?) RETURNING id");
    }

    #[test]
    fn comments_go_whitespace_collapses_and_only_the_first_statement_is_kept() {
        assert_eq!(s("  SELECT  1 -- password=x\n  FROM /* a /* nested */ b */ t ; DROP TABLE t"), "SELECT ? FROM t");
        assert_eq!(s(""), "");
        assert_eq!(s("   \n\t "), "");
    }

    #[test]
    fn long_statements_are_cut_and_huge_ones_only_counted() {
        let long = format!("SELECT {} FROM t", vec!["column_name"; 40].join(", "));
        let cut = s(&long);
        assert_eq!(cut.chars().count(), MAX_SANITIZED_CHARS);
        assert!(cut.ends_with("...") && cut.starts_with("SELECT column_name, column_name"), "{cut}");
        let huge = "x".repeat(MAX_STATEMENT_CHARS + 1);
        assert_eq!(s(&huge), format!("-- QUERY TOO LARGE ({} chars) --", MAX_STATEMENT_CHARS + 1));
        assert_eq!(s(&"y".repeat(MAX_STATEMENT_CHARS)).len(), MAX_SANITIZED_CHARS);
    }

    #[test]
    fn an_unterminated_literal_is_an_error_that_does_not_quote_it() {
        for bad in ["SELECT 'secret", "SELECT \"col", "SELECT $$secret", "SELECT 1 /* secret", "SELECT E'secret\\'"] {
            let err = sanitize_sql(bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ValidationError, "{bad}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn a_statement_of_exactly_the_limit_is_kept_whole_and_one_more_character_is_cut() {
        let exact = format!("SELECT {}", "a".repeat(MAX_SANITIZED_CHARS - "SELECT ".len()));
        assert_eq!(s(&exact), exact);
        let over = format!("{exact}b");
        let cut = s(&over);
        assert_eq!(cut.chars().count(), MAX_SANITIZED_CHARS);
        assert_eq!(cut, format!("{}...", &exact[..MAX_SANITIZED_CHARS - 3]));
    }

    #[test]
    fn the_size_limit_counts_characters_not_bytes() {
        // 10 000 two-byte characters: 20 000 bytes, still within the limit, so it is read.
        let wide = format!("SELECT '{}'", "é".repeat(MAX_STATEMENT_CHARS - "SELECT ''".len()));
        assert_eq!(wide.chars().count(), MAX_STATEMENT_CHARS);
        assert_eq!(s(&wide), "SELECT ?");
        let wider = format!("{wide} ");
        assert_eq!(s(&wider), format!("-- QUERY TOO LARGE ({} chars) --", MAX_STATEMENT_CHARS + 1));
    }

    #[test]
    fn a_semicolon_inside_a_literal_or_comment_does_not_end_the_statement() {
        assert_eq!(
            s("SELECT 'a;b', $$c;d$$ /* ; */ FROM t -- ;\n WHERE x = 1; DELETE FROM t"),
            "SELECT ?, ? FROM t WHERE x = ?"
        );
        assert_eq!(s("SELECT \"semi;colon\" FROM t; SELECT 'leak'"), "SELECT \"semi;colon\" FROM t");
        assert_eq!(s("; SELECT 'leak'"), "");
    }

    #[test]
    fn comments_alone_and_a_comment_at_the_end_leave_nothing_of_themselves() {
        assert_eq!(s("-- only a comment"), "");
        assert_eq!(s("/* secret */"), "");
        assert_eq!(s("SELECT a FROM t -- token=abc"), "SELECT a FROM t");
        assert_eq!(s("SELECT a/* x */FROM t"), "SELECT a FROM t");
    }

    #[test]
    fn dollar_quotes_need_their_own_tag_to_close() {
        assert_eq!(s("SELECT $a$ text $b$ still text $a$, 1"), "SELECT ?, ?");
        assert_eq!(s("SELECT $tag$ 'not a quote $tag$ FROM t"), "SELECT ? FROM t");
        let err = sanitize_sql("SELECT $a$ secret $b$").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        // `$1` is a parameter, not a tag; a lone `$` is kept as an operator.
        assert_eq!(s("SELECT $1, a $ b"), "SELECT $1, a $ b");
    }

    #[test]
    fn hex_and_signed_numbers_become_placeholders_but_identifiers_with_digits_stay() {
        assert_eq!(s("SELECT 0x1F, -7, +3.5e+2 FROM t2 WHERE c3 = 0XABC"), "SELECT ?, -?, +? FROM t2 WHERE c3 = ?");
    }

    #[test]
    fn a_one_megabyte_statement_is_counted_quickly_without_being_read() {
        for input in ["SELECT '".to_owned() + &"x".repeat(1 << 20), "/*".repeat(1 << 19), "é".repeat(1 << 19)] {
            let started = std::time::Instant::now();
            let out = sanitize_sql(&input).unwrap();
            let took = started.elapsed();
            println!("{} bytes sanitized in {took:?}", input.len());
            assert_eq!(out, format!("-- QUERY TOO LARGE ({} chars) --", input.chars().count()));
            assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
        }
    }

    #[test]
    fn the_worst_statements_within_the_limit_are_sanitized_in_bounded_time() {
        // Shapes that make a scanner look far ahead: nested comment openers, many dollar tags,
        // many quotes and a long run of escapes, each just under the size limit.
        let n = MAX_STATEMENT_CHARS / 4;
        let cases = [
            "/*".repeat(n),
            "$a$".repeat(n),
            "''".repeat(n * 2),
            format!("SELECT E'{}'", "\\'".repeat(n)),
            "-".repeat(MAX_STATEMENT_CHARS),
            "1".repeat(MAX_STATEMENT_CHARS),
        ];
        for statement in &cases {
            assert!(statement.chars().count() <= MAX_STATEMENT_CHARS);
            let started = std::time::Instant::now();
            let out = sanitize_sql(statement);
            let took = started.elapsed();
            println!("{}...: {took:?} -> {:?}", &statement[..12], out.as_ref().map(String::len));
            assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
            if let Ok(out) = out {
                assert!(out.chars().count() <= MAX_SANITIZED_CHARS);
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_within_the_limit(statement in any::<String>()) {
            if let Ok(out) = sanitize_sql(&statement) {
                prop_assert!(out.chars().count() <= MAX_SANITIZED_CHARS.max(40));
            }
        }

        #[test]
        fn a_string_literal_never_shows(content in "[^'\\\\]{0,40}") {
            let statement = format!("SELECT * FROM t WHERE a = '{}'", content.replace('\'', "''"));
            prop_assert_eq!(s(&statement), "SELECT * FROM t WHERE a = ?");
        }

        #[test]
        fn a_number_never_shows(n in any::<u64>(), f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            prop_assert_eq!(s(&format!("SELECT {n} + {}", f.abs())), "SELECT ? + ?");
        }
    }
}
