//! Removes secrets from text that came from outside the process (driver and broker errors).
//!
//! Drivers echo connection strings and server messages into their errors; those can carry
//! passwords. Everything the runtime shows (errors, logs) goes through [`sanitize_message`].

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

#[cfg(test)]
mod tests {
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
}
