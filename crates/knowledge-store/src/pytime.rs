//! Timestamps in the Python original's wire form: `isoformat()` of an aware UTC datetime.
//!
//! Written as `2024-01-15T10:30:00.123456+00:00` (no fraction when it is zero, like Python);
//! read leniently: `T` or space, `Z` or an offset, any fraction, or a naive time taken as UTC.

use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Now, truncated to microseconds so it survives a round trip through Python.
pub(crate) fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// Formats like Python's `datetime.isoformat()` for a UTC datetime.
pub(crate) fn format(t: &DateTime<Utc>) -> String {
    let micros = t.timestamp_subsec_micros();
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        format!("{}.{micros:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// Parses the forms Python writes (and a few more); `None` if nothing fits.
pub(crate) fn parse(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = s.parse::<DateTime<chrono::FixedOffset>>() {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// serde `with` module for `DateTime<Utc>` fields.
pub(crate) mod serde_py {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        match raw {
            None => Ok(now()),
            Some(s) => parse(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_python_isoformat() {
        for s in [
            "2026-11-28T00:04:10.596849+00:00",
            "2026-11-28T00:04:10+00:00",
        ] {
            assert_eq!(format(&parse(s).unwrap()), s);
        }
        let spaced = parse("2026-11-28 00:04:10.596849+00:00").unwrap();
        assert_eq!(format(&spaced), "2026-11-28T00:04:10.596849+00:00");
        assert_eq!(
            format(&parse("2026-11-28T00:04:10.5Z").unwrap()),
            "2026-11-28T00:04:10.500000+00:00"
        );
        assert_eq!(
            format(&parse("2026-11-28T00:04:10.25").unwrap()),
            "2026-11-28T00:04:10.250000+00:00"
        );
        assert!(parse("yesterday").is_none());
    }

    #[test]
    fn now_has_microsecond_precision() {
        let t = now();
        assert_eq!(t.timestamp_subsec_nanos() % 1000, 0);
    }
}
