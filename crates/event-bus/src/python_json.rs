//! JSON output byte-compatible with Python's `json.dumps(obj)` (separators `", "` / `": "`,
//! `ensure_ascii=True`, floats as `repr` writes them), so events written by dynreg look exactly
//! like the original's.
//!
//! Numbers: the workspace builds `serde_json` with `arbitrary_precision`, so a number keeps the
//! text it was parsed from. An integer is written as that text (any size, as Python's `int`);
//! any other number is written as Python's `repr` of the nearest double (`1e-05`, `1e+16`,
//! `100.0`, `Infinity`) — what the original writes after `json.loads` of the same text.

use std::io::{self, Write};

/// A `serde_json` formatter that mimics CPython's default `json.dumps` output.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(python_float(value, &format!("{value:e}")).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        writer.write_all(python_float(f64::from(value), &format!("{value:e}")).as_bytes())
    }

    fn write_number_str<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        value: &str,
    ) -> io::Result<()> {
        let digits = value.strip_prefix('-').unwrap_or(value);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            // An integer: Python's int keeps every digit (and `-0` is `0`).
            let zero = digits.bytes().all(|b| b == b'0');
            return writer.write_all(if zero { b"0" } else { value.as_bytes() });
        }
        match value.parse::<f64>() {
            Ok(x) => self.write_f64(writer, x),
            Err(_) => writer.write_all(value.as_bytes()),
        }
    }

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

/// Python's `repr(x)` of a double, given `sci`, Rust's shortest round-trip `{:e}` text of it
/// (the same digits Python's repr chooses): positional for decimal exponents from -4 to 15
/// (`0.0001`, `100.0`), else scientific with a signed two-digit exponent (`1e-05`, `1.5e+16`).
fn python_float(x: f64, sci: &str) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // The value is 0.DIGITS × 10^point.
    let point = exp + 1;
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if !(-4 < point && point <= 16) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = point - 1;
        out.push_str(&format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()));
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(&digits);
    } else if point >= n {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (point - n) as usize));
        out.push_str(".0");
    } else {
        let (int, frac) = digits.split_at(point as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    out
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

    #[test]
    fn floats_are_written_as_python_repr() {
        // python3 -c 'import json; print(json.dumps([1e-05, 0.0001, 1e16, 1e15, 1.5e-300,
        //   123456789.123, -0.0, 0.1, 2.5, 1e22, 1.7976931348623157e308, 5e-324, 100.0,
        //   12345678901234567.0, 2**64, float("inf"), float("-inf"), float("nan")]))'
        let values = [
            1e-05,
            0.0001,
            1e16,
            1e15,
            1.5e-300,
            123_456_789.123,
            -0.0,
            0.1,
            2.5,
            1e22,
            f64::MAX,
            5e-324,
            100.0,
            12_345_678_901_234_567.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        let written: Vec<String> = values
            .iter()
            .map(|x| super::python_float(*x, &format!("{x:e}")))
            .collect();
        assert_eq!(
            written.join(", "),
            "1e-05, 0.0001, 1e+16, 1000000000000000.0, 1.5e-300, 123456789.123, -0.0, 0.1, \
             2.5, 1e+22, 1.7976931348623157e+308, 5e-324, 100.0, 1.2345678901234568e+16, \
             Infinity, -Infinity, NaN"
        );
    }

    #[test]
    fn parsed_numbers_come_out_as_python_writes_them_after_loads() {
        // python3 -c 'import json; print(json.dumps(json.loads("[1.0e2, 100.000000000000000000001,
        //   1E400, 18446744073709551616, -0, 1e-05, 0.30000000000000004]")))'
        let value: serde_json::Value = serde_json::from_str(
            "[1.0e2, 100.000000000000000000001, 1E400, 18446744073709551616, -0, 1e-05, \
             0.30000000000000004]",
        )
        .unwrap();
        assert_eq!(
            to_python_json(&value),
            "[100.0, 100.0, Infinity, 18446744073709551616, 0, 1e-05, 0.30000000000000004]"
        );
        // Keys keep their order.
        let value: serde_json::Value = serde_json::from_str(r#"{"z": 1, "a": 2, "m": 3}"#).unwrap();
        assert_eq!(to_python_json(&value), r#"{"z": 1, "a": 2, "m": 3}"#);
    }
}
