//! Transition conditions: the text of a condition turned into a [`Check`] on a field of the
//! data the transition is asked about, or `None` when it is not understood (the caller makes it
//! a guard method).
//!
//! The grammar is `<field> <operator> <value>` (exactly three words) or `<field> <unary>`:
//! `<field>` is a dotted path of keys (no segment empty or starting with `_`, which keeps private
//! fields out of reach), `<value>` is one word (`_` where none is needed).

/// A comparison operator on numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `>`, `greater_than`
    Greater,
    /// `<`, `less_than`
    Less,
    /// `>=`, `greater_than_or_equal`
    GreaterOrEqual,
    /// `<=`, `less_than_or_equal`
    LessOrEqual,
}

impl Compare {
    /// The Rust operator.
    pub fn symbol(self) -> &'static str {
        match self {
            Compare::Greater => ">",
            Compare::Less => "<",
            Compare::GreaterOrEqual => ">=",
            Compare::LessOrEqual => "<=",
        }
    }
}

/// What a condition checks about the field.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `exists`: the key is there (its value may be null).
    Exists,
    /// `not_exists`: the key is not there.
    NotExists,
    /// `is_present`: the key is there and not null.
    Present,
    /// `is_absent`: the key is not there or null.
    Absent,
    /// `equals`, `==`: the value's text (a string, or a number or boolean written out) is this.
    Equals(String),
    /// `not_equals`, `!=`: the field is absent or its text is not this.
    NotEquals(String),
    /// A numeric comparison; a field that is no number (or a numeric string) fails it.
    Compare(Compare, f64),
    /// `min_length`: a string (in characters), list or mapping at least this long.
    MinLength(usize),
    /// `max_length`: a string, list or mapping at most this long.
    MaxLength(usize),
    /// `in`: the value's text is one of these (the value is a comma-separated list).
    In(Vec<String>),
    /// `not_in`: the field is absent or its text is none of these.
    NotIn(Vec<String>),
    /// `contains`: a string containing this text, or a list with this string as an item.
    Contains(String),
}

/// A condition the generated code evaluates itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The path of keys to the field, from the data's root.
    pub field: Vec<String>,
    /// What is checked.
    pub test: Test,
}

/// Parses a condition's expression; `None` when it is not one of the understood forms.
pub fn parse(expression: &str) -> Option<Check> {
    let words: Vec<&str> = expression.split_whitespace().collect();
    let (field, test) = match words.as_slice() {
        [field, unary] => (*field, unary_test(unary)?),
        [field, operator, value] => (*field, binary_test(operator, value)?),
        _ => return None,
    };
    let field: Vec<String> = field.split('.').map(str::to_owned).collect();
    if field.iter().any(|segment| segment.is_empty() || segment.starts_with('_')) {
        return None;
    }
    Some(Check { field, test })
}

fn unary_test(word: &str) -> Option<Test> {
    Some(match word {
        "exists" => Test::Exists,
        "not_exists" => Test::NotExists,
        "is_present" => Test::Present,
        "is_absent" | "is_not_present" => Test::Absent,
        _ => return None,
    })
}

fn binary_test(operator: &str, value: &str) -> Option<Test> {
    let number = || value.parse::<f64>().ok().filter(|n| n.is_finite());
    let list = || value.split(',').map(|v| v.trim().to_owned()).collect::<Vec<_>>();
    Some(match operator {
        "exists" | "not_exists" | "is_present" | "is_absent" | "is_not_present" if value == "_" => {
            unary_test(operator)?
        }
        "equals" | "==" => Test::Equals(value.to_owned()),
        "not_equals" | "!=" => Test::NotEquals(value.to_owned()),
        "greater_than" | ">" => Test::Compare(Compare::Greater, number()?),
        "less_than" | "<" => Test::Compare(Compare::Less, number()?),
        "greater_than_or_equal" | ">=" => Test::Compare(Compare::GreaterOrEqual, number()?),
        "less_than_or_equal" | "<=" => Test::Compare(Compare::LessOrEqual, number()?),
        "min_length" => Test::MinLength(value.parse().ok()?),
        "max_length" => Test::MaxLength(value.parse().ok()?),
        "in" => Test::In(list()),
        "not_in" => Test::NotIn(list()),
        "contains" => Test::Contains(value.to_owned()),
        _ => return None,
    })
}

/// A JSON value of a field that satisfies `test` (`None`: leave the field out), for the tests
/// the generator writes next to the transition function.
pub fn witness(test: &Test) -> Option<serde_json::Value> {
    use serde_json::Value;
    let text = |s: &str| Some(Value::String(s.to_owned()));
    match test {
        Test::Exists | Test::Present => Some(Value::Bool(true)),
        Test::NotExists | Test::Absent => None,
        Test::Equals(v) | Test::Contains(v) => text(v),
        Test::NotEquals(v) => text(&format!("{v}_other")),
        Test::Compare(op, n) => {
            let value = match op {
                Compare::Greater => n + 1.0,
                Compare::Less => n - 1.0,
                Compare::GreaterOrEqual | Compare::LessOrEqual => *n,
            };
            serde_json::Number::from_f64(value).map(Value::Number)
        }
        Test::MinLength(n) => text(&"x".repeat(*n)),
        Test::MaxLength(_) => text(""),
        Test::In(values) => values.first().and_then(|v| text(v)),
        Test::NotIn(values) => text(&format!("{}_other", values.join("_"))),
    }
}

/// Whether `test` holds for a field whose value is `value` (`None`: absent). The same rules as
/// the checks the generator writes, so the generator can pick data for its tests.
pub fn holds(test: &Test, value: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    let equals = |v: &Value, expected: &str| match v {
        Value::String(s) => s == expected,
        Value::Number(n) => n.as_f64().zip(expected.parse::<f64>().ok()).is_some_and(|(a, b)| a == b),
        Value::Bool(b) => expected.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        _ => false,
    };
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let length = |v: &Value| match v {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(items) => Some(items.len()),
        Value::Object(entries) => Some(entries.len()),
        _ => None,
    };
    match test {
        Test::Exists => value.is_some(),
        Test::NotExists => value.is_none(),
        Test::Present => value.is_some_and(|v| !v.is_null()),
        Test::Absent => value.is_none_or(Value::is_null),
        Test::Equals(e) => value.is_some_and(|v| equals(v, e)),
        Test::NotEquals(e) => value.is_none_or(|v| !equals(v, e)),
        Test::In(list) => value.is_some_and(|v| list.iter().any(|e| equals(v, e))),
        Test::NotIn(list) => value.is_none_or(|v| !list.iter().any(|e| equals(v, e))),
        Test::Compare(op, bound) => value.and_then(number).is_some_and(|x| match op {
            Compare::Greater => x > *bound,
            Compare::Less => x < *bound,
            Compare::GreaterOrEqual => x >= *bound,
            Compare::LessOrEqual => x <= *bound,
        }),
        Test::MinLength(n) => value.and_then(length).is_some_and(|l| l >= *n),
        Test::MaxLength(n) => value.and_then(length).is_some_and(|l| l <= *n),
        Test::Contains(part) => value.is_some_and(|v| match v {
            Value::String(s) => s.contains(part.as_str()),
            Value::Array(items) => items.iter().any(|item| item.as_str() == Some(part)),
            _ => false,
        }),
    }
}

/// A value of a field that satisfies all of `tests` (`None` in the outer option: there is
/// none among the candidates; `Some(None)`: leave the field out).
pub fn witness_of_all(tests: &[&Test]) -> Option<Option<serde_json::Value>> {
    let mut candidates: Vec<Option<serde_json::Value>> = tests.iter().map(|t| witness(t)).collect();
    candidates.push(None);
    candidates.into_iter().find(|candidate| tests.iter().all(|t| holds(t, candidate.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(field: &[&str], test: Test) -> Option<Check> {
        Some(Check { field: field.iter().map(|s| (*s).to_owned()).collect(), test })
    }

    #[test]
    fn understood_forms() {
        assert_eq!(parse("check_results is_present"), check(&["check_results"], Test::Present));
        assert_eq!(parse("name exists _"), check(&["name"], Test::Exists));
        assert_eq!(parse("user.email not_exists"), check(&["user", "email"], Test::NotExists));
        assert_eq!(parse("count  equals 5"), check(&["count"], Test::Equals("5".into())));
        assert_eq!(parse("count >= 2.5"), check(&["count"], Test::Compare(Compare::GreaterOrEqual, 2.5)));
        assert_eq!(parse("items min_length 1"), check(&["items"], Test::MinLength(1)));
        assert_eq!(parse("status in a,b"), check(&["status"], Test::In(vec!["a".into(), "b".into()])));
        assert_eq!(parse("tags contains x"), check(&["tags"], Test::Contains("x".into())));
    }

    #[test]
    fn other_forms_are_not_understood() {
        for text in [
            "",
            "check_results",
            "score above threshold now",
            "score above threshold",
            "name matches ^a.*",
            "count > many",
            "items min_length -1",
            "_private equals x",
            "a..b exists",
            "count > NaN",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn witnesses_satisfy_their_tests() {
        for text in [
            "a exists",
            "a not_exists",
            "a is_present",
            "a is_absent",
            "a equals x",
            "a != 3",
            "a > 3",
            "a < -2",
            "a >= 1.5",
            "a <= 0",
            "a min_length 3",
            "a max_length 2",
            "a in x,y",
            "a not_in x,y",
            "a contains z",
        ] {
            let test = parse(text).unwrap().test;
            assert!(holds(&test, witness(&test).as_ref()), "{text}");
        }
        let (min, max) = (Test::MinLength(1), Test::MaxLength(5));
        assert_eq!(witness_of_all(&[&min, &max]), Some(Some(serde_json::json!("x"))));
        assert_eq!(witness_of_all(&[&Test::Exists, &Test::NotExists]), None);
        assert_eq!(witness(&Test::Compare(Compare::Greater, 3.0)), Some(serde_json::json!(4.0)));
        assert_eq!(witness(&Test::MinLength(2)), Some(serde_json::json!("xx")));
        assert_eq!(witness(&Test::NotExists), None);
    }
}
