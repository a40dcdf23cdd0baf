//! Binding JSON parameters to the types the server inferred for `$1..$n`.
//!
//! The statement is prepared first, so each parameter's PostgreSQL type is known; a JSON
//! value is converted for that type here, before anything is sent, and a value that does not
//! fit is a `VALIDATION_ERROR` naming the parameter. Values travel as bound parameters in
//! the binary protocol, never spliced into SQL text, so their content cannot change the
//! statement.

use std::error::Error as StdError;

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::Value;
use smallvec::SmallVec;
use tokio_postgres::types::{IsNull, Kind, ToSql, Type, to_sql_checked};

use super::numeric;
use crate::error::OnexError;

/// One parameter, converted for its target type.
#[derive(Debug)]
pub(crate) enum Param<'a> {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    Oid(u32),
    F32(f32),
    F64(f64),
    /// Text for text-like types and enums (the binary form of both is the UTF-8 text).
    Text(std::borrow::Cow<'a, str>),
    Numeric(std::borrow::Cow<'a, str>),
    Json(&'a Value),
    Uuid(uuid::Uuid),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
    Date(NaiveDate),
    Time(NaiveTime),
    Bytea(Vec<u8>),
    Array(Vec<Param<'a>>),
}

/// The parameters of one statement, on the stack up to this many: most statements have a
/// few, and a vector for them was an allocation per statement.
const INLINE_PARAMS: usize = 4;

/// Converts `values` for the parameter types of a prepared statement.
pub(crate) fn bind<'a>(values: &'a [Value], types: &[Type]) -> Result<SmallVec<[Param<'a>; INLINE_PARAMS]>, OnexError> {
    if values.len() != types.len() {
        return Err(OnexError::validation(format!(
            "the statement has {} parameter(s) but {} value(s) were given",
            types.len(),
            values.len()
        ))
        .with_detail("expected", types.len())
        .with_detail("given", values.len()));
    }
    // A plain loop: collecting a `Result` iterator costs a few hundred instructions more per
    // statement, which shows at tens of thousands of statements per second.
    let mut bound = SmallVec::with_capacity(values.len());
    for (i, (value, ty)) in values.iter().zip(types).enumerate() {
        match convert(value, ty) {
            Ok(param) => bound.push(param),
            Err(why) => return Err(unbindable(i, ty, &why)),
        }
    }
    Ok(bound)
}

#[cold]
fn unbindable(index: usize, ty: &Type, why: &str) -> OnexError {
    OnexError::validation(format!("parameter ${} ({}) cannot be bound: {why}", index + 1, ty.name()))
        .with_detail("parameter", index + 1)
        .with_detail("type", ty.name())
}

fn is_text(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN)
        || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn convert<'a>(value: &'a Value, ty: &Type) -> Result<Param<'a>, String> {
    use std::borrow::Cow;
    if value.is_null() {
        return Ok(Param::Null);
    }
    if matches!(*ty, Type::JSON | Type::JSONB) {
        return Ok(Param::Json(value));
    }
    if let Kind::Array(member) = ty.kind() {
        return match value {
            Value::Array(items) => {
                items.iter().map(|item| convert(item, member)).collect::<Result<_, _>>().map(Param::Array)
            }
            other => Err(format!("expected an array, got {}", kind_of(other))),
        };
    }
    let mismatch = || format!("{} does not convert to {}", kind_of(value), ty.name());
    match value {
        Value::Bool(b) => match *ty {
            Type::BOOL => Ok(Param::Bool(*b)),
            _ if is_text(ty) => Ok(Param::Text(Cow::Borrowed(if *b { "true" } else { "false" }))),
            _ => Err(mismatch()),
        },
        Value::Number(n) => match *ty {
            Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => {
                let int = n.as_i64().ok_or_else(|| format!("{n} is not an integer"))?;
                integer(int, ty)
            }
            Type::FLOAT4 => Ok(Param::F32(n.as_f64().ok_or_else(mismatch)? as f32)),
            Type::FLOAT8 => Ok(Param::F64(n.as_f64().ok_or_else(mismatch)?)),
            Type::NUMERIC => Ok(Param::Numeric(Cow::Owned(n.to_string()))),
            _ if is_text(ty) => Ok(Param::Text(Cow::Owned(n.to_string()))),
            _ => Err(mismatch()),
        },
        Value::String(s) => {
            from_string(s, ty).ok_or_else(|| format!("'{}' is not a valid {}", preview(s), ty.name()))?
        }
        Value::Array(_) | Value::Object(_) if is_text(ty) => Ok(Param::Text(Cow::Owned(value.to_string()))),
        _ => Err(mismatch()),
    }
}

fn integer(int: i64, ty: &Type) -> Result<Param<'static>, String> {
    let out_of_range = || format!("{int} is out of range for {}", ty.name());
    match *ty {
        Type::INT2 => i16::try_from(int).map(Param::I16).map_err(|_| out_of_range()),
        Type::INT4 => i32::try_from(int).map(Param::I32).map_err(|_| out_of_range()),
        Type::OID => u32::try_from(int).map(Param::Oid).map_err(|_| out_of_range()),
        _ => Ok(Param::I64(int)),
    }
}

/// A string for a non-JSON type: parsed for typed columns, `None` when it does not parse.
fn from_string<'a>(s: &'a str, ty: &Type) -> Option<Result<Param<'a>, String>> {
    use std::borrow::Cow;
    let param = match *ty {
        _ if is_text(ty) => Param::Text(Cow::Borrowed(s)),
        Type::BOOL => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "on" => Param::Bool(true),
            "false" | "f" | "0" | "no" | "off" => Param::Bool(false),
            _ => return None,
        },
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => return Some(integer(s.trim().parse().ok()?, ty)),
        Type::FLOAT4 => Param::F32(s.trim().parse().ok()?),
        Type::FLOAT8 => Param::F64(s.trim().parse().ok()?),
        Type::NUMERIC => {
            numeric::encode(s, &mut Vec::new()).ok()?;
            Param::Numeric(Cow::Borrowed(s))
        }
        Type::UUID => Param::Uuid(s.trim().parse().ok()?),
        Type::TIMESTAMPTZ => Param::TimestampTz(parse_timestamptz(s.trim())?),
        Type::TIMESTAMP => Param::Timestamp(parse_timestamp(s.trim())?),
        Type::DATE => Param::Date(NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?),
        Type::TIME => Param::Time(NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f").ok()?),
        Type::BYTEA => Param::Bytea(match s.strip_prefix("\\x") {
            Some(hex) => decode_hex(hex)?,
            None => s.as_bytes().to_vec(),
        }),
        _ => return None,
    };
    Some(Ok(param))
}

fn parse_timestamptz(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .ok()
}

fn parse_timestamp(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

fn preview(s: &str) -> String {
    let cut: String = s.chars().take(40).collect();
    if cut.len() < s.len() { format!("{cut}…") } else { cut }
}

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Bool(v) => v.to_sql(ty, out),
            Param::I16(v) => v.to_sql(ty, out),
            Param::I32(v) => v.to_sql(ty, out),
            Param::I64(v) => v.to_sql(ty, out),
            Param::Oid(v) => v.to_sql(ty, out),
            Param::F32(v) => v.to_sql(ty, out),
            Param::F64(v) => v.to_sql(ty, out),
            Param::Text(v) => {
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            Param::Numeric(v) => {
                let mut buf = Vec::with_capacity(16);
                numeric::encode(v, &mut buf)?;
                out.extend_from_slice(&buf);
                Ok(IsNull::No)
            }
            Param::Json(v) => v.to_sql(ty, out),
            Param::Uuid(v) => v.to_sql(ty, out),
            Param::Timestamp(v) => v.to_sql(ty, out),
            Param::TimestampTz(v) => v.to_sql(ty, out),
            Param::Date(v) => v.to_sql(ty, out),
            Param::Time(v) => v.to_sql(ty, out),
            Param::Bytea(v) => v.to_sql(ty, out),
            Param::Array(items) => items.to_sql(ty, out),
        }
    }

    /// Every type: [`bind`] already checked the value against the statement's type.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_convert_for_their_target_type() {
        let values = [json!(7), json!("42"), json!(1.5), json!("2024-05-01"), json!({"a": 1}), json!([1, 2])];
        let types = [Type::INT2, Type::INT8, Type::FLOAT8, Type::DATE, Type::JSONB, Type::INT4_ARRAY];
        let bound = bind(&values, &types).unwrap();
        assert!(matches!(bound[0], Param::I16(7)));
        assert!(matches!(bound[1], Param::I64(42)));
        assert!(matches!(bound[3], Param::Date(_)));
        assert!(matches!(&bound[5], Param::Array(items) if items.len() == 2));
    }

    #[test]
    fn mismatches_name_the_parameter() {
        let err = bind(&[json!(1), json!("abc")], &[Type::INT4, Type::INT4]).unwrap_err();
        assert_eq!(err.code(), crate::error::ErrorCode::ValidationError);
        assert!(err.message().contains("$2"), "{err}");
        let err = bind(&[json!(70000)], &[Type::INT2]).unwrap_err();
        assert!(err.message().contains("out of range"), "{err}");
        let err = bind(&[json!(1)], &[Type::INT4, Type::INT4]).unwrap_err();
        assert!(err.message().contains("2 parameter(s) but 1"), "{err}");
        assert!(bind(&[json!("1; DROP TABLE x")], &[Type::NUMERIC]).is_err());
    }
}
