//! Removes secrets from text that came from outside the process (driver and broker errors).
//!
//! Drivers echo connection strings and server messages into their errors; those can carry
//! passwords. Everything the runtime shows (errors, logs) goes through [`sanitize_message`].
//!
//! [`sanitize_error_message`] is the stricter sanitizer of errors that leave the process
//! through a message bus (`node_postgres_adapter_effect`): besides credentials it hides whole
//! DSNs, tokens, file paths and quoted names (schemas, tables, columns, values), and it replaces
//! text about connections, or too short to judge, by [`GENERIC_ERROR_MESSAGE`].

/// Masks credentials in `text`: the password of `scheme://user:password@host` URLs and the
/// value of `password=`, `passwd=`, `pwd=`, `secret=`, `token=`, `api_key=` pairs.
pub fn sanitize_message(text: &str) -> String {
    mask_key_values(&mask_url_passwords(text))
}

fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let (before, after) = rest.split_at(scheme_end + 3);
        out.push_str(before);
        let authority_end = after.find(|c: char| c == '/' || c.is_whitespace()).unwrap_or(after.len());
        let authority = &after[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

const SECRET_KEYS: &[&str] =
    &["password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "sasl.password", "ssl.key.password"];

fn mask_key_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        let hit = SECRET_KEYS.iter().find_map(|key| {
            let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if starts_word && lower[i..].starts_with(key) {
                let after = i + key.len();
                let sep = lower[after..].find(|c: char| !c.is_whitespace()).map(|o| after + o)?;
                if matches!(bytes[sep], b'=' | b':') { Some(sep + 1) } else { None }
            } else {
                None
            }
        });
        match hit {
            Some(value_start) => {
                out.push_str(&text[i..value_start]);
                let skip_ws =
                    text[value_start..].find(|c: char| !c.is_whitespace()).map_or(text.len(), |o| value_start + o);
                out.push_str(&text[value_start..skip_ws]);
                let quoted = text[skip_ws..].starts_with(['\'', '"']);
                let value_end = if quoted {
                    let q = &text[skip_ws..skip_ws + 1];
                    text[skip_ws + 1..].find(q).map_or(text.len(), |o| skip_ws + 1 + o + 1)
                } else {
                    text[skip_ws..]
                        .find(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '&')
                        .map_or(text.len(), |o| skip_ws + o)
                };
                out.push_str("***");
                i = value_end;
            }
            None => {
                let ch = text[i..].chars().next().expect("i is on a char boundary");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// What [`sanitize_error_message`] answers for text it does not show at all.
pub const GENERIC_ERROR_MESSAGE: &str = "the database operation failed; details are withheld";

/// Text shorter than this many characters is replaced whole: too short to tell a message from
/// a bare secret.
const MIN_SHOWN_CHARS: usize = 10;

/// Sanitizes an error message for callers outside the process:
///
/// - text shorter than 10 characters, or mentioning "connection" in any case (connection errors
///   name hosts, ports, users and databases), becomes [`GENERIC_ERROR_MESSAGE`];
/// - a URL or DSN (`scheme://…`) becomes `[REDACTED_DSN]`;
/// - the content of double quotes, and of single quotes that open at a word boundary (not the
///   apostrophe of "doesn't"), becomes `[REDACTED]`: PostgreSQL quotes the schema, table,
///   column and constraint names and the values its messages mention;
/// - the token after `Bearer` or `Basic`, and the value of every `key=value` or `key: value`
///   pair whose key mentions a password, secret, token, API key, credential, auth or access
///   or private key (`access_token=`, `X-Api-Key:`, `aws_secret_access_key=` alike), or names a
///   host, user or database (`host=`, `user=`, `dbname=`), becomes `[REDACTED]`;
/// - JWTs (`eyJ….….…`) become `[REDACTED_JWT]`; GitHub tokens (`ghp_`, `gho_`, `ghu_`,
///   `ghs_`, `ghr_`, `github_pat_`) `[REDACTED_GITHUB_TOKEN]`; AWS access key ids (`AKIA…`,
///   `ASIA…`) `[REDACTED_AWS_KEY]`;
/// - any other run of 32 or more token characters mixing letters and digits (API keys, AWS
///   secret keys, session ids, generated database names) becomes `[REDACTED_TOKEN]`;
/// - IPv4 addresses and `host:port` targets become `[REDACTED_HOST]`;
/// - absolute and home- or dot-relative file paths (`/etc/…`, `~/…`, `./…`, `C:\…`) become
///   `[REDACTED_PATH]`.
///
/// Everything else (SQLSTATE codes, keywords, numbers, the wording) is kept.
pub fn sanitize_error_message(text: &str) -> String {
    if text.chars().count() < MIN_SHOWN_CHARS || text.to_ascii_lowercase().contains("connection") {
        return GENERIC_ERROR_MESSAGE.to_owned();
    }
    let text = mask_dsns(text);
    let text = mask_quoted(&text);
    let text = mask_after_scheme_words(&text);
    let text = mask_sensitive_pairs(&text);
    mask_tokens(&text)
}

/// `scheme://anything-up-to-whitespace-or-a-quote` → `[REDACTED_DSN]`.
fn mask_dsns(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        // The scheme starts after the last character that cannot be part of one; that
        // character may be wider than a byte.
        let scheme_start = rest[..sep]
            .char_indices()
            .rfind(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = rest[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .map_or(rest.len(), |i| sep + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str("[REDACTED_DSN]");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The content of `"…"` and of `'…'` opened at a word boundary → `[REDACTED]`; an unclosed
/// quote hides the rest of the text.
fn mask_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<char> = None;
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        at += c.len_utf8();
        let opens = c == '"' || (c == '\'' && !prev.is_some_and(char::is_alphanumeric));
        out.push(c);
        prev = Some(c);
        if !opens {
            continue;
        }
        out.push_str("[REDACTED]");
        match text[at..].find(c) {
            Some(offset) => {
                out.push(c);
                at += offset + 1;
            }
            None => return out,
        }
    }
    out
}

/// Whether `c` can be part of a token, a key or a path.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '+' | '=' | '~' | '\\' | ':')
}

/// The word after `Bearer` or `Basic` (an `Authorization` value) → `[REDACTED]`.
fn mask_after_scheme_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let hit = ["bearer", "basic"]
            .iter()
            .filter_map(|word| {
                lower
                    .match_indices(word)
                    .find(|(i, _)| {
                        let before = rest[..*i].chars().next_back();
                        let after = &rest[i + word.len()..];
                        let value = after.trim_start();
                        let value = &value[..value.find(char::is_whitespace).unwrap_or(value.len())];
                        // `Basic` also starts plain sentences: only a base64 credential after it
                        // is one.
                        let credential = !value.is_empty()
                            && (*word == "bearer"
                                || (value.len() >= 8
                                    && value
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))));
                        !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '_')
                            && after.starts_with(char::is_whitespace)
                            && credential
                    })
                    .map(|(i, _)| (i, word.len()))
            })
            .min();
        let Some((i, len)) = hit else { break };
        let after = &rest[i + len..];
        let spaces = after.len() - after.trim_start().len();
        let value = &after[spaces..];
        let value_len = value.find(char::is_whitespace).unwrap_or(value.len());
        out.push_str(&rest[..i + len + spaces]);
        out.push_str("[REDACTED]");
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

/// Key fragments that make a `key=value` pair secret wherever they appear in the key.
const SENSITIVE_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "auth",
    "credential",
    "private_key",
    "private-key",
    "privatekey",
    "access_key",
    "access-key",
    "accesskey",
    "session",
];

/// Keys that name where and as whom a client connects (libpq keyword DSNs).
const LOCATION_KEYS: &[&str] = &["host", "hostaddr", "user", "username", "dbname", "database", "db"];

/// The value of a sensitive `key=value` / `key: value` pair → `[REDACTED]`.
fn mask_sensitive_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let Some(c) = text[at..].chars().next() else { break };
        let key_start = at;
        if !(c.is_ascii_alphanumeric() || c == '_') {
            out.push(c);
            at += c.len_utf8();
            continue;
        }
        let key_len = text[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .unwrap_or(text.len() - at);
        let key = &text[key_start..key_start + key_len];
        at += key_len;
        out.push_str(key);
        let after = &text[at..];
        let spaces = after.len() - after.trim_start().len();
        let separator = after[spaces..].chars().next();
        let lower = key.to_ascii_lowercase();
        let sensitive =
            SENSITIVE_KEY_PARTS.iter().any(|part| lower.contains(part)) || LOCATION_KEYS.contains(&lower.as_str());
        if !sensitive || !matches!(separator, Some('=' | ':')) || after[spaces + 1..].starts_with(':') {
            continue;
        }
        let value_from = spaces + 1;
        let value = &after[value_from..];
        let value_spaces = value.len() - value.trim_start().len();
        let value = &value[value_spaces..];
        let value_len = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].find(q).map_or(value.len(), |i| i + 2),
            _ => value.find(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '&' | ')')).unwrap_or(value.len()),
        };
        out.push_str(&after[..value_from + value_spaces]);
        if value_len > 0 {
            out.push_str("[REDACTED]");
        }
        at += value_from + value_spaces + value_len;
    }
    out
}

/// Runs of token characters that are paths, JWTs, GitHub tokens, AWS key ids or long opaque
/// tokens → their placeholder.
fn mask_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let Some(c) = text[at..].chars().next() else { break };
        if !is_token_char(c) {
            out.push(c);
            at += c.len_utf8();
            continue;
        }
        let len = text[at..].find(|c: char| !is_token_char(c)).unwrap_or(text.len() - at);
        let run = &text[at..at + len];
        // A sentence's punctuation is not part of the token.
        let token = run.trim_end_matches(['.', ',', ':']);
        match classify_token(token) {
            Some(placeholder) => {
                out.push_str(placeholder);
                out.push_str(&run[token.len()..]);
            }
            None => out.push_str(run),
        }
        at += len;
    }
    out
}

/// An IPv4 address, or a host name or address with a port (`db.internal:5432`,
/// `localhost:5432/billing`, `10.0.0.7:6432`): where a client connects.
fn is_network_address(token: &str) -> bool {
    let (host, rest) = token.split_once(':').unwrap_or((token, ""));
    let port = rest.split('/').next().unwrap_or("");
    let has_port = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let ipv4 = {
        let parts: Vec<&str> = host.split('.').collect();
        parts.len() == 4 && parts.iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let named = host == "localhost"
        || (host.contains('.')
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && host.bytes().any(|b| b.is_ascii_alphabetic()));
    (ipv4 && (rest.is_empty() || has_port)) || (named && has_port)
}

fn classify_token(token: &str) -> Option<&'static str> {
    let bytes = token.as_bytes();
    let is_path = (token.starts_with('/') && token[1..].contains('/'))
        || token.starts_with("~/")
        || token.starts_with("./")
        || token.starts_with("../")
        || (bytes.len() > 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\');
    if is_path {
        return Some("[REDACTED_PATH]");
    }
    if is_network_address(token) {
        return Some("[REDACTED_HOST]");
    }
    if token.starts_with("eyJ") && token.split('.').filter(|part| !part.is_empty()).count() >= 3 {
        return Some("[REDACTED_JWT]");
    }
    let github = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"];
    if token.len() >= 20 && github.iter().any(|prefix| token.starts_with(prefix)) {
        return Some("[REDACTED_GITHUB_TOKEN]");
    }
    let aws = ["AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA"];
    if bytes.len() >= 20
        && aws.iter().any(|prefix| token.starts_with(prefix))
        && bytes[4..20].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Some("[REDACTED_AWS_KEY]");
    }
    if token.len() >= 32 && token.bytes().any(|b| b.is_ascii_digit()) && token.bytes().any(|b| b.is_ascii_alphabetic())
    {
        return Some("[REDACTED_TOKEN]");
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::sanitize_message;

    #[test]
    fn masks_url_passwords() {
        assert_eq!(sanitize_message("postgres://app:s3cr3t@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(sanitize_message("no url here"), "no url here");
        assert_eq!(sanitize_message("http://host/path"), "http://host/path");
    }

    #[test]
    fn masks_key_value_secrets() {
        let s = sanitize_message("host=db password=hunter2 user=app");
        assert_eq!(s, "host=db password=*** user=app");
        let s = sanitize_message("sasl.password: 'a b c', next");
        assert!(!s.contains("a b c"), "{s}");
        assert_eq!(sanitize_message("PASSWORD=x"), "PASSWORD=***");
        assert_eq!(sanitize_message("mypassword is fine"), "mypassword is fine");
    }

    #[test]
    fn keeps_non_ascii_text() {
        assert_eq!(sanitize_message("naïve → token=abc"), "naïve → token=***");
    }

    proptest! {
        /// Each marker is one the masking steps slice the text around.
        #[test]
        fn text_around_any_marker_is_masked_without_panicking(
            before in "\\PC{0,12}",
            marker in prop::sample::select(vec!["://", ":@", "password=", "token: ", "pwd =\"", "secret='"]),
            after in "\\PC{0,24}",
        ) {
            let _ = sanitize_message(&format!("{before}{marker}{after}"));
        }
    }
}

#[cfg(test)]
mod error_message_tests {
    use proptest::prelude::*;

    use super::{GENERIC_ERROR_MESSAGE, sanitize_error_message as sanitize};

    #[test]
    fn short_text_and_text_about_connections_become_generic() {
        assert_eq!(sanitize("timeout"), GENERIC_ERROR_MESSAGE);
        assert_eq!(sanitize("hunter2!"), GENERIC_ERROR_MESSAGE);
        assert_eq!(sanitize("the Connection to db.internal:5432 as admin was refused"), GENERIC_ERROR_MESSAGE);
        assert_eq!(sanitize("no PostgreSQL connection became free within 5000 ms"), GENERIC_ERROR_MESSAGE);
        assert_eq!(
            sanitize("Database circuit breaker is OPEN: retry in 42 s"),
            "Database circuit breaker is OPEN: retry in 42 s"
        );
    }

    #[test]
    fn dsns_and_credentials_are_masked() {
        let out = sanitize("failed to open postgresql://app:s3cr3t@db.internal:5432/billing?sslmode=require now");
        assert_eq!(out, "failed to open [REDACTED_DSN] now");
        let out = sanitize("config host=db.internal port=5432 user=app password=s3cr3t dbname=billing");
        assert_eq!(out, "config host=[REDACTED] port=5432 user=[REDACTED] password=[REDACTED] dbname=[REDACTED]");
        let out = sanitize("upstream said access_token=abc123 and X-Api-Key: k-999, aws_secret_access_key = wJalr");
        assert!(!out.contains("abc123") && !out.contains("k-999") && !out.contains("wJalr"), "{out}");
        let out = sanitize("request had Authorization: Bearer abc.def-ghi and a basic check failed");
        assert!(!out.contains("abc.def-ghi"), "{out}");
        assert!(out.ends_with("a basic check failed"), "{out}");
        let out = sanitize("header Authorization: Basic dXNlcjpwYXNzd29yZA== was refused");
        assert!(!out.contains("dXNlcjpwYXNzd29yZA"), "{out}");
    }

    #[test]
    fn a_dsn_after_a_wide_character_is_masked_after_that_character() {
        assert_eq!(sanitize("ﬔpostgres://app:s3cr3t@db/x failed"), "ﬔ[REDACTED_DSN] failed");
        assert_eq!(sanitize("\u{fb34}://𝒥a \u{b3c}🀰 "), "\u{fb34}[REDACTED_DSN] \u{b3c}🀰 ");
    }

    #[test]
    fn tokens_and_keys_are_masked() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(sanitize(&format!("token {jwt} expired")), "token [REDACTED_JWT] expired");
        let github = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
        assert_eq!(sanitize(&format!("push with {github} failed")), "push with [REDACTED_GITHUB_TOKEN] failed");
        assert_eq!(sanitize("key AKIAIOSFODNN7EXAMPLE is inactive"), "key [REDACTED_AWS_KEY] is inactive");
        assert_eq!(
            sanitize("cannot reach db.internal:5432/billing or 10.0.0.7 or localhost:6432, at 12:30:00 (v1.2)"),
            "cannot reach [REDACTED_HOST] or [REDACTED_HOST] or [REDACTED_HOST], at 12:30:00 (v1.2)"
        );
        let opaque = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_eq!(sanitize(&format!("secret {opaque} rejected.")), "secret [REDACTED_TOKEN] rejected.");
        // A generated name is one token, underscores and all.
        assert_eq!(
            sanitize("database onex_test_2f1c0b6e2b5d4d0e9a1b2c3d4e5f6a7b is gone"),
            "database [REDACTED_TOKEN] is gone"
        );
    }

    #[test]
    fn paths_and_quoted_names_are_masked() {
        assert_eq!(
            sanitize("could not read /etc/postgresql/15/main/pg_hba.conf: denied"),
            "could not read [REDACTED_PATH]: denied"
        );
        assert_eq!(sanitize(r"cannot open C:\data\pg\base.conf today"), "cannot open [REDACTED_PATH] today");
        assert_eq!(sanitize("see ~/secrets/key.pem and ./conf/app.yaml"), "see [REDACTED_PATH] and [REDACTED_PATH]");
        assert_eq!(
            sanitize("statement failed (42P01): relation \"billing.invoices\" does not exist"),
            "statement failed (42P01): relation \"[REDACTED]\" does not exist"
        );
        assert_eq!(
            sanitize("schema 'accounting' does not exist, and it doesn't matter"),
            "schema '[REDACTED]' does not exist, and it doesn't matter"
        );
        assert_eq!(sanitize("value \"unterminated and secret"), "value \"[REDACTED]");
        // Ordinary wording, codes and numbers stay.
        assert_eq!(
            sanitize("statement failed (23505): duplicate key value violates unique constraint"),
            "statement failed (23505): duplicate key value violates unique constraint"
        );
        assert_eq!(sanitize("a/b and 5 / 2 are fine"), "a/b and 5 / 2 are fine");
    }

    proptest! {
        #[test]
        fn a_secret_placed_anywhere_never_survives(
            secret in "[A-Za-z0-9]{12,40}",
            template in prop::sample::select(vec![
                "login failed: password={} for the account",
                "redirect to https://user:{}@example.com/path failed",
                "the header Authorization: Bearer {} was refused",
                "relation \"{}\" does not exist at all",
                "cannot read /home/{}/pgpass for the job",
                "api_key: {} is not valid for the project",
            ]),
        ) {
            let text = template.replace("{}", &secret);
            let out = sanitize(&text);
            prop_assert!(!out.contains(&secret), "{} -> {}", text, out);
        }

        #[test]
        fn any_text_is_sanitized_without_panicking(text in "\\PC{0,120}") {
            let _ = sanitize(&text);
        }

        /// Arbitrary text rarely holds `://`, `Bearer` or `key=`: this places them between
        /// arbitrary characters, wide ones included, where each masking step slices the text.
        #[test]
        fn text_around_any_marker_is_sanitized_without_panicking(
            before in "\\PC{0,12}",
            marker in prop::sample::select(vec!["://", " Bearer ", "Basic ", "password=", "token: ", "\"", "'", "host=", "eyJ"]),
            after in "\\PC{0,24}",
        ) {
            let _ = sanitize(&format!("{before}{marker}{after}"));
        }
    }
}
