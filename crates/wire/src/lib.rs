//! The Python original's wire forms that every dynreg crate shares, in one place.
//!
//! [`time`]: timestamps. The original writes `datetime.isoformat()` of an aware UTC datetime
//! (`2024-01-15T10:30:00.123456+00:00`, no fraction when the microseconds are zero) and reads
//! with `datetime.fromisoformat`. Registrations, events and knowledge-base files all carry such
//! timestamps; they are produced, written and read here so the three agree exactly.

pub mod time;
