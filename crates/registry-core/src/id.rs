//! The bot id rules every backend enforces, so an id valid on one backend is valid on all.

use crate::error::{DisplayId, RegistryError, Result};

/// The longest accepted bot id, in bytes. Longer ids would not fit a PostgreSQL index entry or
/// a file name, so every backend refuses them alike.
pub const MAX_BOT_ID_BYTES: usize = 1024;

/// Checks a bot id: non-empty, at most [`MAX_BOT_ID_BYTES`] bytes, no NUL or other control
/// character. Everything else — `/`, `..`, `:`, `%`, spaces, any Unicode — is a valid id, and
/// backends that map ids onto paths or URLs encode them so that no id can escape its place.
pub fn validate_bot_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "must not be empty"
    } else if id.len() > MAX_BOT_ID_BYTES {
        "longer than 1024 bytes"
    } else if !id.bytes().all(|b| (0x20..0x7f).contains(&b)) // printable ASCII: no decoding
        && id.chars().any(char::is_control)
    {
        "contains a control character (NUL, newline, ...)"
    } else {
        return Ok(());
    };
    Err(RegistryError::InvalidId {
        id: DisplayId::new(id),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        for ok in [
            "a",
            "my-bot",
            "a/b",
            "..",
            "x:y.z_1",
            "日本語",
            "with space",
        ] {
            validate_bot_id(ok).unwrap();
        }
        for bad in ["", "a\0b", "a\nb"] {
            assert!(validate_bot_id(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(10 * 1024);
        let err = validate_bot_id(&long).unwrap_err().to_string();
        assert!(err.contains("1024") && err.contains("10240 bytes"), "{err}");
    }
}
