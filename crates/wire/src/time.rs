//! Timestamps in the original's form, at its precision.
//!
//! Invariants: [`now()`] and [`parse()`] give microsecond precision (Python's `datetime` has no
//! more), so a timestamp survives every round trip through the original and every backend
//! unchanged; [`format()`] of a parsed timestamp is the original's text for it; [`parse()`] accepts
//! what the original writes and what `fromisoformat` accepts in practice (`T` or a space, `Z` or
//! a numeric offset, converted to UTC, any fraction, minutes-only times, and a time without an
//! offset taken as UTC, as the original writes naive UTC times).

use chrono::{DateTime, FixedOffset, NaiveDateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Now, truncated to microseconds.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Python's `datetime.isoformat()` of a UTC time: `2024-01-15T10:30:00.123456+00:00`, and no
/// fraction when the microseconds are zero (`2024-01-15T10:30:00+00:00`).
pub fn format(t: &DateTime<Utc>) -> String {
    let micros = t.timestamp_subsec_micros();
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        format!("{}.{micros:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// Parses an ISO-8601 timestamp (see the module invariants), truncated to microseconds; `None`
/// if it is not one.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let aware = |t: DateTime<FixedOffset>| Some(t.with_timezone(&Utc).trunc_subsecs(6));
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return aware(t);
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return aware(t);
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().trunc_subsecs(6));
        }
    }
    None
}

/// serde `with` module for a `DateTime<Utc>` field in the original's form; a missing, null or
/// empty value reads as [`now()`] (the original fills such fields with the current time).
pub mod isoformat {
    use super::*;

    /// Writes [`format()`].
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    /// Reads [`parse()`]; null or empty is [`now()`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(now()),
            Some(s) if s.is_empty() => Ok(now()),
            Some(s) => parse(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_originals_text() {
        for s in [
            "2026-11-28T00:04:10.596849+00:00",
            "2026-11-28T00:04:10+00:00",
        ] {
            assert_eq!(format(&parse(s).unwrap()), s);
        }
    }

    #[test]
    fn reads_every_form_fromisoformat_gives_as_utc() {
        for (input, want) in [
            (
                "2026-11-28 00:04:10.596849+00:00",
                "2026-11-28T00:04:10.596849+00:00",
            ),
            ("2026-11-28T00:04:10.5Z", "2026-11-28T00:04:10.500000+00:00"),
            ("2026-11-28T00:04:10.25", "2026-11-28T00:04:10.250000+00:00"),
            ("2026-11-28T02:04:10+02:00", "2026-11-28T00:04:10+00:00"),
            ("2026-11-28T00:04+00:00", "2026-11-28T00:04:00+00:00"),
            ("2026-11-28T00:04", "2026-11-28T00:04:00+00:00"),
            (
                " 2026-11-28T00:04:10.123456789Z ",
                "2026-11-28T00:04:10.123456+00:00",
            ),
        ] {
            assert_eq!(
                parse(input).map(|t| format(&t)).as_deref(),
                Some(want),
                "{input}"
            );
        }
        for bad in ["yesterday", "", "2026-13-01T00:00:00Z"] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(now().timestamp_subsec_nanos() % 1000, 0);
    }

    #[test]
    fn serde_writes_isoformat_and_reads_null_as_now() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct T {
            #[serde(with = "isoformat")]
            at: DateTime<Utc>,
        }
        let t: T = serde_json::from_str(r#"{"at": "2026-11-28T00:04:10Z"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"at":"2026-11-28T00:04:10+00:00"}"#
        );
        let before = now();
        let t: T = serde_json::from_str(r#"{"at": null}"#).unwrap();
        assert!(t.at >= before);
        assert!(serde_json::from_str::<T>(r#"{"at": "soon"}"#).is_err());
    }
}
