//! Timestamps: microsecond precision, Python `isoformat()` on the wire, lenient parsing.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// The current time, truncated to microseconds so that it survives every backend unchanged.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

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
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

/// Parses an ISO-8601 timestamp with `Z` or a numeric offset, with or without fractional seconds;
/// a timestamp without an offset is taken as UTC (as the original writes naive UTC times).
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).trunc_subsecs(6));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().trunc_subsecs(6));
        }
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.with_timezone(&Utc).trunc_subsecs(6));
    }
    None
}

pub(crate) fn serialize_timestamp<S: Serializer>(
    t: &DateTime<Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(t))
}

pub(crate) fn deserialize_timestamp<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<DateTime<Utc>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s {
        None => Ok(now()),
        Some(s) if s.is_empty() => Ok(now()),
        Some(s) => parse_timestamp(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid timestamp {s:?}: expected ISO-8601"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form_to_the_same_instant() {
        let a = parse_timestamp("2024-01-15T10:30:00.123456+00:00").unwrap();
        let b = parse_timestamp("2024-01-15T10:30:00.123456Z").unwrap();
        let c = parse_timestamp("2024-01-15T10:30:00.123456").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let d = parse_timestamp("2024-01-15T10:30:00Z").unwrap();
        let e = parse_timestamp("2024-01-15T10:30:00+00:00").unwrap();
        assert_eq!(d, e);
        assert_eq!(format_timestamp(&a), "2024-01-15T10:30:00.123456+00:00");
        assert_eq!(format_timestamp(&d), "2024-01-15T10:30:00+00:00");
        let f = parse_timestamp("2024-01-15T12:30:00+02:00").unwrap();
        assert_eq!(f, d);
        assert!(parse_timestamp("yesterday").is_none());
    }
}
