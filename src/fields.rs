//! Typed reads of configuration values that several parts share: lists
//! given as a JSON array or a comma-separated string, and numeric
//! user/group ids. Errors are code 7 naming the field.

use crate::error::{CniError, Result};
use serde_json::Value;

/// A list given as a JSON array (of strings or numbers) or as a
/// comma-separated string (the form Multus fields and mesh annotations
/// use). Items are trimmed; empty ones are ignored.
pub fn list(v: &Value, field: &str) -> Result<Vec<String>> {
    match v {
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.trim().to_string()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(CniError::config(format!(
                    "{field}: items must be strings or numbers"
                ))),
            })
            .filter(|x| x.as_ref().map_or(true, |s| !s.is_empty()))
            .collect(),
        _ => Err(CniError::config(format!(
            "{field}: must be a list or a comma-separated string"
        ))),
    }
}

/// A numeric user or group id: a JSON number or a string of digits, below
/// 4294967295 (that is `(uid_t)-1`, "no change": never a real owner).
pub fn id(v: &Value, field: &str) -> Result<u32> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse().ok())
                .flatten()
        }
        _ => None,
    };
    match n {
        Some(n) if n < u32::MAX as u64 => Ok(n as u32),
        _ => Err(CniError::config(format!(
            "{field}: must be a numeric id (0-4294967294)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_and_ids() {
        assert_eq!(list(&json!("a, b,,c "), "f").unwrap(), ["a", "b", "c"]);
        assert_eq!(list(&json!(["a", 1, " "]), "f").unwrap(), ["a", "1"]);
        assert!(list(&json!([true]), "f").is_err());
        assert!(list(&json!({}), "f").is_err());
        assert_eq!(id(&json!(1337), "f").unwrap(), 1337);
        assert_eq!(id(&json!(" 2102 "), "f").unwrap(), 2102);
        for bad in [
            json!(-1),
            json!(4294967295u64),
            json!("+5"),
            json!("1e3"),
            json!(""),
            json!(1.5),
        ] {
            assert!(id(&bad, "f").is_err(), "{bad}");
        }
    }
}
