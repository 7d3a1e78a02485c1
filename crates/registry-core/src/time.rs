//! Timestamps: microsecond precision, Python `isoformat()` on the wire, lenient parsing — the
//! shared [`dynreg_wire::time`] forms, under the names this crate has always exported.

use chrono::{DateTime, Utc};
use serde::{Deserializer, Serializer};

pub use dynreg_wire::time::now;

/// The current time in microseconds since the Unix epoch (what [`now`] stores), without
/// building a `DateTime`: for hot paths that only record a touch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Formats as Python's `datetime.isoformat()` does for an aware UTC time:
/// `2024-01-15T10:30:00.123456+00:00` (no fraction when it is zero).
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    dynreg_wire::time::format(t)
}

/// Parses an ISO-8601 timestamp with `Z` or a numeric offset, with or without fractional
/// seconds, truncated to microseconds; a timestamp without an offset is taken as UTC (as the
/// original writes naive UTC times).
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    dynreg_wire::time::parse(s)
}

pub(crate) fn serialize_timestamp<S: Serializer>(
    t: &DateTime<Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    dynreg_wire::time::isoformat::serialize(t, s)
}

pub(crate) fn deserialize_timestamp<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<DateTime<Utc>, D::Error> {
    dynreg_wire::time::isoformat::deserialize(d)
}
