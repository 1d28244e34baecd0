//! Refusing numbers no board can report, before anything stores or sums them.
//!
//! JSON has no infinity, but `1e308` is a valid number, and two of them summed are
//! infinite: a manager that adds CPU counters, or keeps a temperature as `f32`, turns
//! such a report into `inf`, which JSON then writes as `null`. So every number of a
//! snapshot or a report batch is checked, by walking the whole document rather than
//! the fields known today, so fields added later are covered too:
//!
//! - every fractional or huge number must be finite and within ±[`MAX_ABS`];
//! - a number under a key `celsius` or `*_celsius` must lie in [`CELSIUS`].
//!
//! Integers that fit `u64`/`i64` (byte counts, seqs, times) are taken as they are.
//! [`check_value`] walks a parsed `serde_json::Value`; [`check_json`] applies the same
//! rules while reading the text, without building the tree (the report path).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Largest magnitude of a non-integer number: 10^15 seconds is 31 million years; no
/// counter of a board comes near it, and sums of thousands of them stay finite.
pub const MAX_ABS: f64 = 1e15;

/// Plausible range of a temperature in °C (a sensor can misread; it cannot be 1e39).
pub const CELSIUS: (f64, f64) = (-100.0, 300.0);

/// Why a document was refused: the JSON path of the first bad number, and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {value} {rule}")]
pub struct Invalid {
    pub path: String,
    pub value: String,
    pub rule: String,
}

fn is_celsius(key: &str) -> bool {
    key == "celsius" || key.ends_with("_celsius")
}

/// The rule for one number under `key` (the nearest enclosing object key).
fn check_number(key: Option<&str>, v: f64) -> Result<(), String> {
    if !v.is_finite() {
        return Err("is not a finite number".into());
    }
    if v.abs() > MAX_ABS {
        return Err(format!("is beyond ±{MAX_ABS:e}"));
    }
    if key.is_some_and(is_celsius) && !(CELSIUS.0..=CELSIUS.1).contains(&v) {
        return Err(format!(
            "is not a plausible temperature ({} to {} °C)",
            CELSIUS.0, CELSIUS.1
        ));
    }
    Ok(())
}

/// The path from the root, kept as a stack whose strings are reused between keys.
#[derive(Default)]
struct JsonPath {
    segs: Vec<(String, Option<usize>)>,
    depth: usize,
}

impl JsonPath {
    fn push_key(&mut self, k: &str) {
        if self.depth < self.segs.len() {
            let s = &mut self.segs[self.depth];
            s.0.clear();
            s.0.push_str(k);
            s.1 = None;
        } else {
            self.segs.push((k.to_string(), None));
        }
        self.depth += 1;
    }
    fn push_index(&mut self, i: usize) {
        if self.depth < self.segs.len() {
            let s = &mut self.segs[self.depth];
            s.0.clear();
            s.1 = Some(i);
        } else {
            self.segs.push((String::new(), Some(i)));
        }
        self.depth += 1;
    }
    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
    fn key(&self) -> Option<&str> {
        self.segs[..self.depth]
            .iter()
            .rev()
            .find(|s| s.1.is_none())
            .map(|s| s.0.as_str())
    }
    fn invalid(&self, value: f64, rule: String) -> Invalid {
        let mut path = String::from("$");
        for (k, i) in &self.segs[..self.depth] {
            match i {
                Some(i) => path.push_str(&format!("[{i}]")),
                None => {
                    path.push('.');
                    path.push_str(k);
                }
            }
        }
        Invalid {
            path,
            value: format!("{value:e}"),
            rule,
        }
    }
}

/// Checks every number of a parsed document.
pub fn check_value(v: &Value) -> Result<(), Invalid> {
    fn walk(v: &Value, path: &mut JsonPath) -> Result<(), Invalid> {
        match v {
            Value::Number(n) => {
                if n.is_f64() {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    check_number(path.key(), f).map_err(|r| path.invalid(f, r))?;
                } else if let Some(f) = n.as_f64().filter(|_| path.key().is_some_and(is_celsius)) {
                    check_number(path.key(), f).map_err(|r| path.invalid(f, r))?;
                }
                Ok(())
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push_index(i);
                    walk(x, path)?;
                    path.pop();
                }
                Ok(())
            }
            Value::Object(o) => {
                for (k, x) in o {
                    path.push_key(k);
                    walk(x, path)?;
                    path.pop();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(v, &mut JsonPath::default())
}

/// Checks every number of a JSON text (also refusing text that is not JSON).
pub fn check_json(json: &[u8]) -> Result<(), Invalid> {
    let mut path = JsonPath::default();
    let mut found: Option<Invalid> = None;
    let mut de = serde_json::Deserializer::from_slice(json);
    let walked = Walk {
        path: &mut path,
        found: &mut found,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (found, walked) {
        (Some(bad), _) => Err(bad),
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => Err(Invalid {
            path: "$".into(),
            value: String::new(),
            rule: format!("is not valid JSON: {e}"),
        }),
    }
}

/// A visitor over any JSON value that checks numbers and descends into the rest.
struct Walk<'a> {
    path: &'a mut JsonPath,
    found: &'a mut Option<Invalid>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walk<'_> {
    fn number<E: serde::de::Error>(self, v: f64, integer: bool) -> Result<(), E> {
        if integer && !self.path.key().is_some_and(is_celsius) {
            return Ok(());
        }
        match check_number(self.path.key(), v) {
            Ok(()) => Ok(()),
            Err(rule) => {
                *self.found = Some(self.path.invalid(v, rule));
                Err(E::custom("invalid number"))
            }
        }
    }
}

/// A map key, copied into the path's reused buffer.
struct Key<'a>(&'a mut JsonPath);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_key(v);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.number(v as f64, true)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.number(v as f64, true)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.number(v, false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            self.path.push_index(i);
            let more = seq.next_element_seed(Walk {
                path: self.path,
                found: self.found,
            })?;
            self.path.pop();
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Key(self.path))?.is_some() {
            map.next_value_seed(Walk {
                path: self.path,
                found: self.found,
            })?;
            self.path.pop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(json: &str) -> Result<(), Invalid> {
        let streamed = check_json(json.as_bytes());
        let tree = serde_json::from_str::<Value>(json)
            .map_err(|e| e.to_string())
            .map(|v| check_value(&v));
        // Both refuse the same documents (a Value's keys are sorted, so the first bad
        // number found may differ).
        if let Ok(tree) = tree {
            assert_eq!(streamed.is_ok(), tree.is_ok(), "{json}");
        }
        streamed
    }

    #[test]
    fn plausible_snapshots_pass() {
        both(r#"{"seq":18446744073709551615,"host":{"cpu":[{"user":1234.5,"nice":0}]},
                "health":{"thermal":[{"zone":"cpu","celsius":51.5}]},"t":-3,"x":[1,2.5,null,true,"s"]}"#)
            .unwrap();
    }

    #[test]
    fn overflowing_and_absurd_numbers_are_refused_with_their_path() {
        let e = both(r#"{"host":{"cpu":[{"user":1e308,"nice":1e308}]}}"#).unwrap_err();
        assert_eq!(e.path, "$.host.cpu[0].user");
        assert!(e.rule.contains("beyond"), "{e}");
        let e = both(r#"{"health":{"thermal":[{"celsius":1e39}]}}"#).unwrap_err();
        assert_eq!(e.path, "$.health.thermal[0].celsius");
        let e = both(r#"{"health":{"soc_celsius":400}}"#).unwrap_err();
        assert!(e.rule.contains("temperature"), "{e}");
        // A number too large for u64 is read as a float and bounded like one.
        let e = both(r#"{"a":[{"b":100000000000000000000000}]}"#).unwrap_err();
        assert_eq!(e.path, "$.a[0].b");
        // A field nobody knows today is covered too.
        assert!(both(r#"{"new_family":{"deep":[[0.5,-2e300]]}}"#).is_err());
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        assert!(check_json(b"{\"a\":").is_err());
        assert!(check_json(b"{} trailing").is_err());
    }
}
