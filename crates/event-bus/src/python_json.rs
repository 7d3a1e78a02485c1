//! JSON output byte-compatible with Python's `json.dumps(obj)` (separators `", "` / `": "`,
//! `ensure_ascii=True`), so events written by dynreg look exactly like the original's.

use std::io::{self, Write};

/// A `serde_json` formatter that mimics CPython's default `json.dumps` output.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json already escaped `"`, `\` and C0 controls; escape everything outside
        // printable ASCII the way Python's ensure_ascii does (DEL and non-ASCII as \uXXXX,
        // astral characters as surrogate pairs).
        let mut start = 0;
        for (index, ch) in fragment.char_indices() {
            if ch.is_ascii() && ch != '\u{7f}' {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..index])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = index + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serialises `value` the way Python's `json.dumps(value)` would.
pub(crate) fn to_python_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serialising maps with string keys, strings and numbers into a Vec cannot fail.
    if value.serialize(&mut serializer).is_err() {
        return String::from("null");
    }
    // The formatter writes only ASCII, so this is always valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::to_python_json;
    use serde_json::json;

    #[test]
    fn matches_python_dumps() {
        // python3 -c 'import json; print(json.dumps({"a": [1, 2.5, "é😀\x7f\n"], "b": None}))'
        let value = json!({"a": [1, 2.5, "é😀\u{7f}\n"], "b": null});
        assert_eq!(
            to_python_json(&value),
            r#"{"a": [1, 2.5, "\u00e9\ud83d\ude00\u007f\n"], "b": null}"#
        );
    }
}
