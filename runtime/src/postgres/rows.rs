//! Rows to JSON: each row becomes a map of column name → value.
//!
//! Mapping: integers and floats → numbers (NaN/±Infinity → strings), numeric → decimal
//! string (exact), text-like and enums → strings, bool, uuid → string, timestamp →
//! `YYYY-MM-DDTHH:MM:SS[.f]`, timestamptz → RFC 3339 in UTC, date, time → strings,
//! json/jsonb → the JSON itself, bytea → `\x…` hex (PostgreSQL's text form), void → null,
//! one-dimensional arrays of those → JSON arrays. Any other type is a `DATABASE_QUERY_ERROR`
//! that names the column and tells the caller to cast it to text.

use std::error::Error as StdError;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Kind, Type};

use super::numeric;
use crate::error::{ErrorCode, OnexError};

type BoxError = Box<dyn StdError + Sync + Send>;

/// Converts every row; the column names come from the statement.
pub(crate) fn rows_to_json(rows: &[Row]) -> Result<Vec<Map<String, Value>>, OnexError> {
    rows.iter().map(row_to_json).collect()
}

fn row_to_json(row: &Row) -> Result<Map<String, Value>, OnexError> {
    let mut map = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        map.insert(column.name().to_owned(), column_to_json(row, i)?);
    }
    Ok(map)
}

/// Converts column `i` of `row` (which must exist).
pub(crate) fn column_to_json(row: &Row, i: usize) -> Result<Value, OnexError> {
    row.try_get::<_, Json>(i).map(|j| j.0).map_err(|e| {
        let column = &row.columns()[i];
        OnexError::new(
            ErrorCode::DatabaseQueryError,
            format!(
                "column '{}' of type {} cannot be read as JSON; cast it in the query (e.g. {}::text)",
                column.name(),
                column.type_().name(),
                column.name()
            ),
        )
        .with_detail("column", column.name())
        .with_detail("type", column.type_().name())
        .with_source(e)
    })
}

/// A column value decoded from the binary format into JSON.
struct Json(Value);

impl<'a> FromSql<'a> for Json {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        decode(ty, raw).map(Json)
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, BoxError> {
        Ok(Json(Value::Null))
    }

    fn accepts(ty: &Type) -> bool {
        supported(ty)
    }
}

fn supported(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Array(member) => !matches!(member.kind(), Kind::Array(_)) && supported(member),
        Kind::Enum(_) => true,
        _ => {
            matches!(
                *ty,
                Type::BOOL
                    | Type::INT2
                    | Type::INT4
                    | Type::INT8
                    | Type::OID
                    | Type::FLOAT4
                    | Type::FLOAT8
                    | Type::NUMERIC
                    | Type::TEXT
                    | Type::VARCHAR
                    | Type::BPCHAR
                    | Type::NAME
                    | Type::CHAR
                    | Type::UNKNOWN
                    | Type::UUID
                    | Type::TIMESTAMP
                    | Type::TIMESTAMPTZ
                    | Type::DATE
                    | Type::TIME
                    | Type::JSON
                    | Type::JSONB
                    | Type::BYTEA
                    | Type::VOID
            ) || ty.name() == "citext"
        }
    }
}

fn float(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or_else(
        || {
            Value::String(if value.is_nan() {
                "NaN".into()
            } else if value > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            })
        },
        Value::Number,
    )
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    if let Kind::Array(_) = ty.kind() {
        let items: Vec<Option<Json>> = FromSql::from_sql(ty, raw)?;
        return Ok(Value::Array(items.into_iter().map(|item| item.map_or(Value::Null, |j| j.0)).collect()));
    }
    if let Kind::Enum(_) = ty.kind() {
        return Ok(Value::String(std::str::from_utf8(raw)?.to_owned()));
    }
    Ok(match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
        Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
        Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
        Type::OID => Value::from(u32::from_sql(ty, raw)?),
        Type::CHAR => Value::from(i8::from_sql(ty, raw)?),
        Type::FLOAT4 => float(f64::from(f32::from_sql(ty, raw)?)),
        Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Value::String(numeric::decode(raw)?),
        Type::UUID => Value::String(uuid::Uuid::from_sql(ty, raw)?.to_string()),
        Type::TIMESTAMP => Value::String(NaiveDateTime::from_sql(ty, raw)?.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
        Type::TIMESTAMPTZ => {
            Value::String(DateTime::<Utc>::from_sql(ty, raw)?.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
        Type::DATE => Value::String(NaiveDate::from_sql(ty, raw)?.format("%Y-%m-%d").to_string()),
        Type::TIME => Value::String(NaiveTime::from_sql(ty, raw)?.format("%H:%M:%S%.f").to_string()),
        Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
        Type::BYTEA => {
            let mut hex = String::with_capacity(2 + raw.len() * 2);
            hex.push_str("\\x");
            for byte in raw {
                hex.push_str(&format!("{byte:02x}"));
            }
            Value::String(hex)
        }
        Type::VOID => Value::Null,
        // Text-like types (text, varchar, bpchar, name, unknown, citext) are UTF-8 on the wire.
        _ => Value::String(std::str::from_utf8(raw)?.to_owned()),
    })
}
