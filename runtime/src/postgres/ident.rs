//! SQL identifiers built from caller input (function and schema names).

use crate::error::OnexError;

/// Quotes `name` as an SQL identifier: wrapped in `"` with embedded quotes doubled, so any
/// text (including `; DROP TABLE …`) is one identifier and never SQL.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Checks that `name` can be an identifier: non-empty, at most 63 bytes (PostgreSQL's
/// NAMEDATALEN - 1, beyond which the server silently truncates) and free of NUL.
pub fn validate_ident(what: &str, name: &str) -> Result<(), OnexError> {
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(OnexError::validation(format!("{what} must be 1 to 63 bytes without NUL characters"))
            .with_detail("field", what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_doubles_embedded_quotes() {
        assert_eq!(quote_ident("infrastructure"), "\"infrastructure\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("x\"; DROP TABLE t; --"), "\"x\"\"; DROP TABLE t; --\"");
        assert!(validate_ident("function_name", "").is_err());
        assert!(validate_ident("function_name", &"a".repeat(64)).is_err());
        assert!(validate_ident("function_name", "ok_name").is_ok());
    }
}
