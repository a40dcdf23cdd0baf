//! UTC timestamps as RFC 3339 text, written and read exactly as chrono's own serde
//! implementations do, but without their per-character cost: chrono writes through
//! `collect_str` (one escaped write per character) and reads through its general parser.
//! Events and generated models carry a timestamp each, so on a busy bus these were a large
//! share of encoding and decoding an envelope.
//!
//! Use as `#[serde(with = "onex_runtime::rfc3339")]` on a `DateTime<Utc>` field, and
//! `#[serde(default, skip_serializing_if = "Option::is_none", with = "onex_runtime::rfc3339::option")]`
//! on an `Option<DateTime<Utc>>`.
//!
//! Invariants (pinned by tests against chrono):
//! - what [`serialize`] writes is byte for byte what chrono's `Serialize` writes: `Z`, and the
//!   fraction in 0, 3, 6 or 9 digits, whichever is shortest and exact;
//! - [`deserialize`] accepts exactly what chrono's `Deserialize` accepts, with the same value:
//!   its fast path takes only `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with 1 to 9 fraction digits
//!   and a valid date and time, and hands everything else (offsets, leap seconds, other forms,
//!   errors) to chrono.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use serde::{Deserializer, Serialize, Serializer, de};

/// `YYYY-MM-DDTHH:MM:SS` + `.` + 9 digits + `Z`.
pub const MAX_LEN: usize = 30;

/// Writes `timestamp` as chrono's `Serialize` does.
pub fn serialize<S: Serializer>(timestamp: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match format(timestamp, &mut buf) {
        Some(text) => serializer.serialize_str(text),
        // Years outside 0..=9999 take a sign and more digits: chrono writes those.
        None => timestamp.serialize(serializer),
    }
}

/// Reads a timestamp as chrono's `Deserialize` does.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(TimestampVisitor)
}

struct TimestampVisitor;

impl de::Visitor<'_> for TimestampVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        match parse(text) {
            Some(timestamp) => Ok(timestamp),
            None => text.parse::<DateTime<chrono::FixedOffset>>().map(|t| t.with_timezone(&Utc)).map_err(E::custom),
        }
    }
}

/// The same for an `Option<DateTime<Utc>>` (`null` is `None`).
pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as [`super::serialize`], `None` as `null`.
    pub fn serialize<S: Serializer>(timestamp: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match timestamp {
            Some(timestamp) => super::serialize(timestamp, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads `null` as `None`, anything else as [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Timestamp(#[serde(with = "super")] DateTime<Utc>);
        Ok(Option::<Timestamp>::deserialize(deserializer)?.map(|Timestamp(t)| t))
    }
}

/// The text chrono's `Serialize` produces, or `None` for a year outside 0..=9999.
pub fn format<'b>(timestamp: &DateTime<Utc>, buf: &'b mut [u8; MAX_LEN]) -> Option<&'b str> {
    let naive = timestamp.naive_utc();
    let date = naive.date();
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let time = naive.time();
    let seconds = time.num_seconds_from_midnight();
    let (hour, minute, mut second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut nano = time.nanosecond();
    // chrono keeps a leap second as nanoseconds past 1e9, and writes it as second 60.
    if nano >= 1_000_000_000 {
        second += 1;
        nano -= 1_000_000_000;
    }
    let two = |buf: &mut [u8; MAX_LEN], at: usize, value: u32| {
        buf[at] = b'0' + (value / 10) as u8;
        buf[at + 1] = b'0' + (value % 10) as u8;
    };
    two(buf, 0, year / 100);
    two(buf, 2, year % 100);
    buf[4] = b'-';
    two(buf, 5, date.month());
    buf[7] = b'-';
    two(buf, 8, date.day());
    buf[10] = b'T';
    two(buf, 11, hour);
    buf[13] = b':';
    two(buf, 14, minute);
    buf[16] = b':';
    two(buf, 17, second);
    let mut len = 19;
    let (digits, mut fraction) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (3, nano / 1_000_000)
    } else if nano.is_multiple_of(1_000) {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        buf[len] = b'.';
        for i in (0..digits).rev() {
            buf[len + 1 + i] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        len += 1 + digits;
    }
    buf[len] = b'Z';
    len += 1;
    // SAFETY: every byte of `buf[..len]` was written above, each an ASCII separator or
    // `b'0'` plus a value below 10 (`two` takes values below 100: the year is at most 9999, the
    // rest are fields of a date and time), so the bytes are ASCII and valid UTF-8. Checking
    // them (`from_utf8`) was a third of this function's instructions. The property tests below
    // compare the text with chrono's for every representable year.
    Some(unsafe { std::str::from_utf8_unchecked(&buf[..len]) })
}

/// The fast path of [`deserialize`]: `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with 1 to 9 fraction
/// digits and a valid date and time (no leap second), else `None`.
fn parse(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (fraction, z) = b[19..].split_at(b.len() - 20);
    if z != b"Z" {
        return None;
    }
    let number =
        |digits: &[u8]| digits.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')));
    let nano = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            number(digits)? * 10u32.pow(9 - u32::try_from(digits.len()).ok()?)
        }
        _ => return None,
    };
    let year = i32::try_from(number(&b[0..4])?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, number(&b[5..7])?, number(&b[8..10])?)?;
    let (hour, minute, second) = (number(&b[11..13])?, number(&b[14..16])?, number(&b[17..19])?);
    // Second 60 (a leap second) is chrono's to read.
    if second >= 60 {
        return None;
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nano)?;
    Some(Utc.from_utc_datetime(&date.and_time(time)))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use proptest::prelude::*;

    use super::*;

    /// chrono's own serde text of `timestamp`.
    fn chrono_text(timestamp: &DateTime<Utc>) -> String {
        serde_json::to_string(timestamp).unwrap()
    }

    fn our_text(timestamp: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(timestamp, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    proptest! {
        #[test]
        fn timestamps_serialize_exactly_as_chrono_does(
            seconds in -62_135_596_800i64..253_402_300_800i64,
            nanos in 0u32..1_000_000_000,
            precision in 0usize..4,
        ) {
            // Every precision chrono picks: whole seconds, millis, micros, nanos.
            let nanos = match precision {
                0 => 0,
                1 => nanos / 1_000_000 * 1_000_000,
                2 => nanos / 1_000 * 1_000,
                _ => nanos,
            };
            let timestamp = Utc.timestamp_opt(seconds, nanos).unwrap();
            prop_assert_eq!(our_text(&timestamp), chrono_text(&timestamp));
        }

        #[test]
        fn timestamps_read_as_chrono_reads_them(
            seconds in -62_135_596_800i64..253_402_300_800i64,
            nanos in 0u32..1_000_000_000,
            digits in 0usize..10,
        ) {
            let timestamp = Utc.timestamp_opt(seconds, nanos).unwrap();
            let mut text = timestamp.format("%Y-%m-%dT%H:%M:%S").to_string();
            if digits > 0 {
                text.push_str(&format!(".{:09}", nanos)[..=digits]);
            }
            text.push('Z');
            prop_assert_eq!(we_read(&text), chrono_reads(&text), "{}", text);
            prop_assert!(parse(&text).is_some(), "the fast path takes {}", text);
        }

        #[test]
        fn any_text_of_the_shape_reads_as_chrono_reads_it(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,11})?(Z|z|[+-][0-9]{2}:[0-9]{2})?") {
            prop_assert_eq!(we_read(&text), chrono_reads(&text), "{}", text);
        }
    }

    #[test]
    fn edge_timestamps_serialize_exactly_as_chrono_does() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
        let cases = [
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(0, 1).unwrap(),
            Utc.timestamp_opt(0, 100_000_000).unwrap(),
            Utc.timestamp_opt(0, 999_999_999).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
            Utc.from_utc_datetime(&leap),
            Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(9999, 12, 31).unwrap().and_hms_opt(23, 59, 59).unwrap()),
            Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()),
            Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(-1, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        for timestamp in cases {
            assert_eq!(our_text(&timestamp), chrono_text(&timestamp), "{timestamp:?}");
        }
    }

    /// chrono's reading of `text`.
    fn chrono_reads(text: &str) -> Option<DateTime<Utc>> {
        serde_json::from_value::<DateTime<Utc>>(serde_json::Value::String(text.into())).ok()
    }

    fn we_read(text: &str) -> Option<DateTime<Utc>> {
        #[derive(serde::Deserialize)]
        struct T(#[serde(with = "super")] DateTime<Utc>);
        serde_json::from_value::<T>(serde_json::Value::String(text.into())).ok().map(|T(t)| t)
    }

    #[test]
    fn edge_texts_read_as_chrono_reads_them() {
        for text in [
            "2016-12-31T23:59:60Z",
            "2016-12-31T23:59:60.5Z",
            "2026-02-29T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00+02:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567891Z",
            "0000-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01",
            "",
            "not a time",
            "2026-01-01T00:00:00ZZ",
            "２０２６-01-01T00:00:00Z",
        ] {
            assert_eq!(we_read(text), chrono_reads(text), "{text}");
        }
    }

    #[test]
    fn an_optional_timestamp_round_trips_and_null_is_none() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(default, skip_serializing_if = "Option::is_none", with = "option")]
            at: Option<DateTime<Utc>>,
        }
        let some = T { at: Some(Utc.timestamp_opt(1_700_000_000, 5_000).unwrap()) };
        let text = serde_json::to_string(&some).unwrap();
        assert_eq!(text, r#"{"at":"2023-11-14T22:13:20.000005Z"}"#);
        assert_eq!(serde_json::from_str::<T>(&text).unwrap(), some);
        assert_eq!(serde_json::from_str::<T>(r#"{"at":null}"#).unwrap(), T { at: None });
        assert_eq!(serde_json::from_str::<T>("{}").unwrap(), T { at: None });
        assert_eq!(serde_json::to_string(&T { at: None }).unwrap(), "{}");
    }
}
