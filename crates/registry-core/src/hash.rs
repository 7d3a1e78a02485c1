//! `config_hash`: SHA-256 of the canonical JSON of a config (object keys sorted, no whitespace).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of [`canonical_json`]`(config)`. Stable across processes, runs and
/// serde_json feature sets (keys are sorted explicitly, not by the map type).
pub fn config_hash(config: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(canonical_json(config));
    hex::encode(hasher.finalize())
}

/// The canonical JSON text of a value: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings as serde_json writes them, integers as their digits (any size) and every other number
/// as the shortest text of its nearest double — so `1e-05`, `0.00001` and `1.0e-5` (the forms a
/// value takes through Python, PostgreSQL's `jsonb` and other writers) hash alike.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec cannot fail");
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        Value::Number(n) => {
            let text = n.to_string();
            let digits = text.strip_prefix('-').unwrap_or(&text);
            if digits.bytes().all(|b| b.is_ascii_digit()) {
                if digits.bytes().all(|b| b == b'0') {
                    out.push(b'0');
                } else {
                    out.extend_from_slice(text.as_bytes());
                }
            } else {
                match n.as_f64() {
                    Some(x) if x.is_finite() => {
                        serde_json::to_writer(&mut *out, &x).expect("writing to a Vec cannot fail")
                    }
                    _ => out.extend_from_slice(text.as_bytes()),
                }
            }
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec cannot fail"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order_and_sees_every_value() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, 2]}, "b": 1});
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_eq!(
            canonical_json(&a),
            br#"{"a":{"x":"s","y":[1,2]},"b":1}"#.to_vec()
        );
        assert_ne!(
            config_hash(&a),
            config_hash(&json!({"b": 2, "a": {"y": [1, 2], "x": "s"}}))
        );
        assert_eq!(config_hash(&a).len(), 64);
    }

    #[test]
    fn numbers_hash_by_value_and_integers_by_every_digit() {
        let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert_eq!(
            config_hash(&parse(r#"{"x": 1e-05}"#)),
            config_hash(&parse(r#"{"x": 0.00001}"#))
        );
        assert_eq!(
            canonical_json(&parse("[1.0e2, -0, 18446744073709551617]")),
            b"[100.0,0,18446744073709551617]".to_vec()
        );
        // Integers beyond a double's precision stay apart.
        assert_ne!(
            config_hash(&parse("[18446744073709551617]")),
            config_hash(&parse("[18446744073709551616]"))
        );
    }
}
