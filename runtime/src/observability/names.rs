//! What a recorded sample may be: Prometheus-valid names, a bounded label set, a finite value.
//!
//! Rules (every violation is a `VALIDATION_ERROR` whose detail `field` names the request field):
//! - `metric_name`: 1 to [`MAX_NAME_CHARS`] of `[a-zA-Z_:][a-zA-Z0-9_:]*`.
//! - `metric_labels`: at most [`MAX_LABELS`]; each name `[a-zA-Z_][a-zA-Z0-9_]*`, not starting
//!   with `__` (reserved by Prometheus), and none of `environment` (every series of the
//!   registry already carries it), `le` and `quantile` (the bucket and quantile labels); each
//!   value at most [`MAX_LABEL_VALUE_CHARS`] characters (any text: the exposition escapes it).
//! - `metric_value`: finite; not negative for a counter (a running total) or a histogram (an
//!   exposition with negative observations would have to drop its sum).

use std::collections::BTreeMap;

use crate::error::OnexError;
use crate::models::observability::MetricType;

/// Longest metric name accepted.
pub const MAX_NAME_CHARS: usize = 200;
/// Most labels on one sample.
pub const MAX_LABELS: usize = 16;
/// Longest label value accepted.
pub const MAX_LABEL_VALUE_CHARS: usize = 1024;

/// Label names a recorded sample cannot use.
const RESERVED_LABELS: [&str; 3] = ["environment", "le", "quantile"];

/// A `VALIDATION_ERROR` about `field`.
pub(crate) fn invalid(field: &str, message: impl Into<String>) -> OnexError {
    OnexError::validation(message).with_detail("field", field)
}

/// Checks a metric name.
pub fn check_metric_name(name: &str) -> Result<(), OnexError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()));
    if valid {
        return Ok(());
    }
    Err(invalid(
        "metric_name",
        format!(
            "metric_name '{}' is not a Prometheus metric name: 1 to {MAX_NAME_CHARS} letters, digits, `_` or `:`, \
             not starting with a digit",
            shorten(name)
        ),
    ))
}

/// Checks a label set.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), OnexError> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(
            "metric_labels",
            format!("metric_labels has {} labels; at most {MAX_LABELS} are accepted", labels.len()),
        ));
    }
    for (name, value) in labels {
        let field = format!("metric_labels.{}", shorten(name));
        let well_formed = !name.is_empty()
            && name.len() <= MAX_NAME_CHARS
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
        if !well_formed {
            return Err(invalid(
                &field,
                format!(
                    "{field} is not a Prometheus label name: 1 to {MAX_NAME_CHARS} letters, digits or `_`, not starting \
                     with a digit"
                ),
            ));
        }
        if name.starts_with("__") {
            return Err(invalid(&field, format!("{field}: label names starting with `__` are reserved by Prometheus")));
        }
        if RESERVED_LABELS.contains(&name.as_str()) {
            return Err(invalid(
                &field,
                format!(
                    "{field} is set by the exposition itself (`environment` on every series, `le` and `quantile` on \
                     buckets and quantiles); use another label name"
                ),
            ));
        }
        if value.chars().count() > MAX_LABEL_VALUE_CHARS {
            return Err(invalid(&field, format!("{field} is longer than {MAX_LABEL_VALUE_CHARS} characters")));
        }
    }
    Ok(())
}

/// Checks a sample's value for its type.
pub fn check_value(value: f64, metric_type: MetricType) -> Result<(), OnexError> {
    if !value.is_finite() {
        return Err(invalid("metric_value", "metric_value must be a finite number"));
    }
    if value < 0.0 && metric_type != MetricType::Gauge {
        return Err(invalid(
            "metric_value",
            format!("metric_value {value} is negative; a {metric_type} takes values of 0 or more"),
        ));
    }
    Ok(())
}

/// `text` cut to 64 characters for an error message.
pub(crate) fn shorten(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.chars().count() <= SHOWN {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(SHOWN).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn field(error: &OnexError) -> &str {
        error.details().get("field").and_then(|v| v.as_str()).unwrap_or_default()
    }

    #[test]
    fn prometheus_metric_names_pass_and_others_name_the_field() {
        for good in ["a", "_a", "a:b_c9", "onex_queue_depth"] {
            check_metric_name(good).unwrap();
        }
        for bad in ["", "9a", "a-b", "a b", "é", &"a".repeat(MAX_NAME_CHARS + 1)] {
            let error = check_metric_name(bad).unwrap_err();
            assert_eq!(error.code(), ErrorCode::ValidationError);
            assert_eq!(field(&error), "metric_name", "{bad}");
        }
    }

    #[test]
    fn label_names_are_checked_and_reserved_ones_refused() {
        let labels = |name: &str| BTreeMap::from([(name.to_owned(), "v".to_owned())]);
        check_labels(&labels("service")).unwrap();
        check_labels(&labels("_x1")).unwrap();
        for bad in ["1x", "a:b", "a-b", "", "__name", "environment", "le", "quantile"] {
            let error = check_labels(&labels(bad)).unwrap_err();
            assert_eq!(field(&error), format!("metric_labels.{bad}"), "{error}");
        }
        let long = BTreeMap::from([("k".to_owned(), "v".repeat(MAX_LABEL_VALUE_CHARS + 1))]);
        assert_eq!(field(&check_labels(&long).unwrap_err()), "metric_labels.k");
        let many: BTreeMap<String, String> = (0..=MAX_LABELS).map(|i| (format!("l{i}"), String::new())).collect();
        assert_eq!(field(&check_labels(&many).unwrap_err()), "metric_labels");
    }

    #[test]
    fn values_must_be_finite_and_totals_and_observations_not_negative() {
        check_value(-1.0, MetricType::Gauge).unwrap();
        check_value(0.0, MetricType::Counter).unwrap();
        for (value, kind) in [
            (f64::NAN, MetricType::Gauge),
            (f64::INFINITY, MetricType::Gauge),
            (-1.0, MetricType::Counter),
            (-0.5, MetricType::Histogram),
        ] {
            assert_eq!(field(&check_value(value, kind).unwrap_err()), "metric_value", "{value} {kind}");
        }
    }
}
