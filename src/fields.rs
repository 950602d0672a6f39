//! Reading JSON into derived types. [`decode`] deserializes a
//! `#[derive(Deserialize)]` type and names what failed by its path
//! (serde_path_to_error: `capture.inboundPort`, `[1].ips[0]`); the
//! `deserialize_with` adapters here take the values whose accepted forms
//! differ from one plain JSON type — lists given as an array or a
//! comma-separated string, numeric ids as numbers or digit strings — and
//! refuse with a message that reads after the field's name
//! (`capture.proxyUID: must be a numeric id (0-4294967294)`). In every
//! adapter a `null` reads as absent.

use crate::error::{code, CniError};
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// Why [`decode`] refused a value.
#[derive(Debug)]
pub struct Refused {
    /// Where: `capture.inboundPort`, `[0].bogus`; empty for the value itself.
    pub path: String,
    /// The key is not one the type has (`deny_unknown_fields`).
    pub unknown_field: bool,
    pub msg: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.msg)
        } else {
            write!(f, "{}: {}", self.path, self.msg)
        }
    }
}

impl Refused {
    /// As a network-config error named by `prefix` and the path: code 2
    /// for an unknown key, 7 for anything else.
    pub fn config(&self, prefix: &str) -> CniError {
        let c = if self.unknown_field {
            code::UNSUPPORTED_FIELD
        } else {
            code::INVALID_CONFIG
        };
        CniError::new(c, format!("{prefix}{self}"))
    }
}

/// Deserialize `T` from `v`, naming the failing field by its path.
pub fn decode<T: DeserializeOwned>(v: &Value) -> Result<T, Refused> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        Refused {
            path: if path == "." { String::new() } else { path },
            // serde's own wording for a key `deny_unknown_fields` refuses
            // (`de::Error::unknown_field`); the one place that reads it.
            unknown_field: msg.starts_with("unknown field `"),
            msg,
        }
    })
}

/// A `T` given as a JSON object only: a derived struct alone also takes a
/// list (by position), which no config or annotation means. The map is
/// handed on as it is read, so paths inside keep naming the field.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<T> std::ops::Deref for Object<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::Serialize> serde::Serialize for Object<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Object)
    }
}

/// Deserialize the field as JSON and check it with `f`; `null` reads as
/// absent. The one way the adapters below (and the other typed readers)
/// take a value.
pub fn leaf<'de, D: Deserializer<'de>, T>(
    d: D,
    f: impl FnOnce(Value) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => f(v).map(Some).map_err(D::Error::custom),
    }
}

/// A string.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    leaf(d, |v| match v {
        Value::String(s) => Ok(s),
        _ => Err("must be a string".into()),
    })
}

/// A boolean.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    leaf(d, |v| v.as_bool().ok_or_else(|| "must be a boolean".into()))
}

/// An object.
pub fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    leaf(d, |v| match v {
        Value::Object(m) => Ok(m),
        _ => Err("must be an object".into()),
    })
}

/// A list in either form [`list`] takes.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    leaf(d, |v| list(&v))
}

/// A numeric id ([`id`]).
pub fn numeric_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    leaf(d, |v| id(&v))
}

/// A list given as a JSON array (of strings or numbers) or as a
/// comma-separated string (the form Multus fields and mesh annotations
/// use). Items are trimmed; empty ones are ignored.
pub fn list(v: &Value) -> Result<Vec<String>, String> {
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
                _ => Err("items must be strings or numbers".to_string()),
            })
            .filter(|x| x.as_ref().map_or(true, |s| !s.is_empty()))
            .collect(),
        _ => Err("must be a list or a comma-separated string".into()),
    }
}

/// A numeric user or group id: a JSON number or a string of digits, below
/// 4294967295 (that is `(uid_t)-1`, "no change": never a real owner).
pub fn id(v: &Value) -> Result<u32, String> {
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
        _ => Err("must be a numeric id (0-4294967294)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_and_ids() {
        assert_eq!(list(&json!("a, b,,c ")).unwrap(), ["a", "b", "c"]);
        assert_eq!(list(&json!(["a", 1, " "])).unwrap(), ["a", "1"]);
        assert!(list(&json!([true])).is_err());
        assert!(list(&json!({})).is_err());
        assert_eq!(id(&json!(1337)).unwrap(), 1337);
        assert_eq!(id(&json!(" 2102 ")).unwrap(), 2102);
        for bad in [
            json!(-1),
            json!(4294967295u64),
            json!("+5"),
            json!("1e3"),
            json!(""),
            json!(1.5),
        ] {
            assert!(id(&bad).is_err(), "{bad}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default, deserialize_with = "numeric_id")]
        uid: Option<u32>,
        #[serde(default, deserialize_with = "string")]
        name: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(default)]
        inner: Vec<Inner>,
        #[serde(default, deserialize_with = "boolean")]
        on: Option<bool>,
    }

    #[test]
    fn decode_names_the_path_and_tells_unknown_keys_apart() {
        let o: Outer = decode(&json!({"inner": [{"uid": "7", "name": null}], "other": 1})).unwrap();
        assert_eq!(o.inner[0].uid, Some(7));
        assert_eq!(o.inner[0].name, None);
        assert_eq!(o.on, None);
        let e = decode::<Outer>(&json!({"inner": [{}, {"uid": -1}]})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inner[1].uid: must be a numeric id (0-4294967294)"
        );
        assert!(!e.unknown_field);
        assert_eq!(e.config("x.").code, code::INVALID_CONFIG);
        let e = decode::<Outer>(&json!({"inner": [{"bogus": 1}]})).unwrap_err();
        assert!(e.unknown_field, "{e}");
        assert_eq!(e.path, "inner[0].bogus");
        let c = e.config("p.");
        assert_eq!(c.code, code::UNSUPPORTED_FIELD);
        assert!(
            c.msg.starts_with("p.inner[0].bogus: unknown field"),
            "{}",
            c.msg
        );
        let e = decode::<Outer>(&json!({"on": "yes"})).unwrap_err();
        assert_eq!(e.to_string(), "on: must be a boolean");
        // A derived struct takes a list by position; `Object` does not.
        assert!(decode::<Outer>(&json!([[], null])).is_ok());
        let e = decode::<Object<Outer>>(&json!([[], null])).unwrap_err();
        assert!(e.path.is_empty() && !e.unknown_field, "{e:?}");
        assert!(e.msg.ends_with("expected an object"), "{e}");
        let e = decode::<Vec<Object<Inner>>>(&json!([{}, {"uid": true}])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "[1].uid: must be a numeric id (0-4294967294)"
        );
    }
}
