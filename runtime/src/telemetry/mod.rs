//! Telemetry: what the runtime shows of its work in traces.
//!
//! - [`sql`]: SQL statements as a span shows them, literals replaced by `?`.

pub mod sql;
