//! Reading record fields as leniently as the services write them.
//!
//! IMS sends booleans and numbers as strings (`"true"`, `"64"`, `__image_size` in bytes as a
//! string; `reference/cloud-metadata.md` §3, seed 004), the SCP CLI prints Python-style
//! `False` (seed 000), and any field may be `null`. These readers accept every such spelling
//! of a value and turn everything else into [`Recorded::Absent`] with the reason, or
//! [`Recorded::Invalid`] with the text, so that a record is never refused for one odd field.

use serde_json::{Map, Value};

use super::record::{Absence, Recorded};

/// The longest text kept from an invalid value, so that a hostile record cannot make a report
/// arbitrarily long. Our budget, not a service limit.
pub const MAX_INVALID_TEXT: usize = 80;

/// A JSON object: the record.
pub type Object = Map<String, Value>;

/// A value as short text for reports, cut at [`MAX_INVALID_TEXT`] characters.
pub fn excerpt(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    cut(&text)
}

/// `text` cut at [`MAX_INVALID_TEXT`] characters, with an ellipsis when cut.
pub fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_INVALID_TEXT {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX_INVALID_TEXT).collect();
        s.push('…');
        s
    }
}

/// A text field. Numbers are accepted as their decimal text (a service may send an ID or a
/// version as a number); objects, arrays and booleans are invalid.
pub fn text(obj: &Object, key: &str) -> Recorded<String> {
    match obj.get(key) {
        None => Recorded::Absent(Absence::Missing),
        Some(Value::Null) => Recorded::Absent(Absence::Null),
        Some(Value::String(s)) if s.trim().is_empty() => Recorded::Absent(Absence::Empty),
        Some(Value::String(s)) => Recorded::Value(s.clone()),
        Some(Value::Number(n)) => Recorded::Value(n.to_string()),
        Some(other) => Recorded::Invalid(excerpt(other)),
    }
}

/// A text field as an `Option`: present and non-blank, or nothing.
pub fn opt_text(obj: &Object, key: &str) -> Option<String> {
    text(obj, key).value().cloned()
}

/// A non-negative integer field: a JSON integer, a float with no fraction (some JSON
/// encoders write `2.0`), or a string of decimal digits (IMS). Negative numbers, fractions,
/// words and other types are invalid.
pub fn count(obj: &Object, key: &str) -> Recorded<u64> {
    match obj.get(key) {
        None => Recorded::Absent(Absence::Missing),
        Some(Value::Null) => Recorded::Absent(Absence::Null),
        Some(Value::String(s)) if s.trim().is_empty() => Recorded::Absent(Absence::Empty),
        Some(v) => count_value(v).map_or_else(|| Recorded::Invalid(excerpt(v)), Recorded::Value),
    }
}

fn count_value(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            // 2^64 as f64; anything at or above it does not fit.
            (f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0).then_some(f as u64)
        }),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        }
        _ => None,
    }
}

/// A boolean field: JSON `true`/`false`, or the strings `true`, `false`, `True`, `False`
/// (IMS `__lazyloading` documents all four spellings; the SCP CLI prints `False`), and `1`/`0`.
pub fn flag(obj: &Object, key: &str) -> Option<bool> {
    match obj.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test objects are objects"),
        }
    }

    #[test]
    fn counts_accept_numbers_digit_strings_and_integral_floats() {
        let o = obj(json!({"a": 5, "b": "64", "c": 2.0, "d": " 7 "}));
        assert_eq!(count(&o, "a"), Recorded::Value(5));
        assert_eq!(count(&o, "b"), Recorded::Value(64));
        assert_eq!(count(&o, "c"), Recorded::Value(2));
        assert_eq!(count(&o, "d"), Recorded::Value(7));
    }

    #[test]
    fn counts_refuse_negatives_fractions_and_words() {
        let o = obj(json!({"a": -1, "b": 1.5, "c": "big", "d": true, "e": "-3", "f": 1e30}));
        for k in ["a", "b", "c", "d", "e", "f"] {
            assert!(matches!(count(&o, k), Recorded::Invalid(_)), "{k}");
        }
    }

    #[test]
    fn absent_counts_keep_their_reason() {
        let o = obj(json!({"a": null, "b": ""}));
        assert_eq!(count(&o, "a"), Recorded::Absent(Absence::Null));
        assert_eq!(count(&o, "b"), Recorded::Absent(Absence::Empty));
        assert_eq!(count(&o, "c"), Recorded::Absent(Absence::Missing));
    }

    #[test]
    fn flags_accept_the_spellings_services_use() {
        let o = obj(json!({"a": "True", "b": "false", "c": true, "d": "maybe"}));
        assert_eq!(flag(&o, "a"), Some(true));
        assert_eq!(flag(&o, "b"), Some(false));
        assert_eq!(flag(&o, "c"), Some(true));
        assert_eq!(flag(&o, "d"), None);
    }

    #[test]
    fn invalid_text_is_cut_to_a_bounded_excerpt() {
        let long = "x".repeat(10_000);
        let o = obj(json!({ "a": [long] }));
        match text(&o, "a") {
            Recorded::Invalid(s) => assert!(s.chars().count() <= MAX_INVALID_TEXT + 1),
            other => panic!("{other:?}"),
        }
    }
}
