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
//! rules while reading the text, without building the tree; [`from_slice_checked`]
//! applies them while parsing the text into a type, in the same read (the report path:
//! each byte of a report is read once for both).

use std::fmt;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};
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

/// Why [`from_slice_checked`] refused a text: a number against the rules, or the text
/// is not JSON of the wanted shape.
#[derive(Debug, thiserror::Error)]
pub enum CheckedError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Parses `json` as a `T` and applies the rules of [`check_json`] to every number of the
/// text while it is read, in the same pass: the numbers of fields `T` does not know (or
/// skips, as `IgnoredAny`) are read and checked too. One read instead of a
/// [`check_json`] followed by a parse (the report path reads each snapshot once).
pub fn from_slice_checked<'de, T: Deserialize<'de>>(json: &'de [u8]) -> Result<T, CheckedError> {
    let mut ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = T::deserialize(De {
        d: &mut de,
        ctx: &mut ctx,
    })
    .and_then(|v| de.end().map(|()| v));
    match (ctx.found, parsed) {
        (Some(bad), _) => Err(bad.into()),
        (None, Ok(v)) => Ok(v),
        (None, Err(e)) => Err(e.into()),
    }
}

/// The path so far and the first bad number, shared by the wrappers below.
#[derive(Default)]
struct Ctx {
    path: JsonPath,
    found: Option<Invalid>,
}

impl Ctx {
    fn number<E: serde::de::Error>(&mut self, v: f64, integer: bool) -> Result<(), E> {
        let key = self.path.key();
        if integer && !key.is_some_and(is_celsius) {
            return Ok(());
        }
        match check_number(key, v) {
            Ok(()) => Ok(()),
            Err(rule) => {
                self.found = Some(self.path.invalid(v, rule));
                Err(E::custom("invalid number"))
            }
        }
    }
}

/// A deserializer that hands every value it reads through [`V`]; skipped values are
/// read as values (`deserialize_any`), so their numbers are checked too.
struct De<'c, D> {
    d: D,
    ctx: &'c mut Ctx,
}

/// A visitor that checks numbers and wraps what it descends into.
struct V<'c, X> {
    v: X,
    ctx: &'c mut Ctx,
}

/// A seed whose deserializer is wrapped.
struct Seed<'c, S> {
    s: S,
    ctx: &'c mut Ctx,
}

/// A map key's seed: the key's text goes into the path.
struct KeySeed<'c, S> {
    s: S,
    ctx: &'c mut Ctx,
}

struct KeyDe<'c, D> {
    d: D,
    ctx: &'c mut Ctx,
}

struct KeyV<'c, X> {
    v: X,
    ctx: &'c mut Ctx,
}

struct Map<'c, A> {
    a: A,
    ctx: &'c mut Ctx,
}

struct Seq<'c, A> {
    a: A,
    ctx: &'c mut Ctx,
    i: usize,
}

struct Enum<'c, A> {
    a: A,
    ctx: &'c mut Ctx,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.s.deserialize(De { d, ctx: self.ctx })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.s.deserialize(KeyDe { d, ctx: self.ctx })
    }
}

/// Forwards `deserialize_*` methods to the inner deserializer with the visitor wrapped.
macro_rules! forward_de {
    ($wrap:ident; $($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<X: Visitor<'de>>(self, $($arg: $ty,)* v: X) -> Result<X::Value, D::Error> {
                self.d.$method($($arg,)* $wrap { v, ctx: self.ctx })
            }
        )*
    };
}

macro_rules! all_de_methods {
    ($wrap:ident) => {
        forward_de! { $wrap;
            deserialize_any();
            deserialize_bool();
            deserialize_i8();
            deserialize_i16();
            deserialize_i32();
            deserialize_i64();
            deserialize_i128();
            deserialize_u8();
            deserialize_u16();
            deserialize_u32();
            deserialize_u64();
            deserialize_u128();
            deserialize_f32();
            deserialize_f64();
            deserialize_char();
            deserialize_str();
            deserialize_string();
            deserialize_bytes();
            deserialize_byte_buf();
            deserialize_option();
            deserialize_unit();
            deserialize_unit_struct(name: &'static str);
            deserialize_newtype_struct(name: &'static str);
            deserialize_seq();
            deserialize_tuple(len: usize);
            deserialize_tuple_struct(name: &'static str, len: usize);
            deserialize_map();
            deserialize_struct(name: &'static str, fields: &'static [&'static str]);
            deserialize_enum(name: &'static str, variants: &'static [&'static str]);
            deserialize_identifier();
        }
        fn is_human_readable(&self) -> bool {
            self.d.is_human_readable()
        }
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for De<'_, D> {
    type Error = D::Error;
    all_de_methods!(V);
    fn deserialize_ignored_any<X: Visitor<'de>>(self, v: X) -> Result<X::Value, D::Error> {
        // Read, not skipped: a field nobody knows today is checked too.
        self.d.deserialize_any(V { v, ctx: self.ctx })
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDe<'_, D> {
    type Error = D::Error;
    all_de_methods!(KeyV);
    fn deserialize_ignored_any<X: Visitor<'de>>(self, v: X) -> Result<X::Value, D::Error> {
        // Read, so that the key of a skipped field is in the path (its `_celsius`).
        self.d.deserialize_any(KeyV { v, ctx: self.ctx })
    }
}

/// Forwards `visit_*` methods of plain values to the inner visitor.
macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: serde::de::Error>(self, x: $ty) -> Result<X::Value, E> {
                self.v.$method(x)
            }
        )*
    };
}

impl<'de, X: Visitor<'de>> Visitor<'de> for V<'_, X> {
    type Value = X::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.v.expecting(f)
    }
    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_f32(f32);
        visit_i128(i128);
        visit_u128(u128);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }
    fn visit_u64<E: serde::de::Error>(self, x: u64) -> Result<X::Value, E> {
        self.ctx.number(x as f64, true)?;
        self.v.visit_u64(x)
    }
    fn visit_i64<E: serde::de::Error>(self, x: i64) -> Result<X::Value, E> {
        self.ctx.number(x as f64, true)?;
        self.v.visit_i64(x)
    }
    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<X::Value, E> {
        self.ctx.number(x, false)?;
        self.v.visit_f64(x)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<X::Value, E> {
        self.v.visit_none()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<X::Value, E> {
        self.v.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<X::Value, D::Error> {
        self.v.visit_some(De { d, ctx: self.ctx })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<X::Value, D::Error> {
        self.v.visit_newtype_struct(De { d, ctx: self.ctx })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<X::Value, A::Error> {
        self.v.visit_seq(Seq {
            a,
            ctx: self.ctx,
            i: 0,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<X::Value, A::Error> {
        self.v.visit_map(Map { a, ctx: self.ctx })
    }
    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<X::Value, A::Error> {
        self.v.visit_enum(Enum { a, ctx: self.ctx })
    }
}

impl<'de, X: Visitor<'de>> Visitor<'de> for KeyV<'_, X> {
    type Value = X::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.v.expecting(f)
    }
    fn visit_str<E: serde::de::Error>(self, x: &str) -> Result<X::Value, E> {
        self.ctx.path.push_key(x);
        self.v.visit_str(x)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, x: &'de str) -> Result<X::Value, E> {
        self.ctx.path.push_key(x);
        self.v.visit_borrowed_str(x)
    }
    fn visit_string<E: serde::de::Error>(self, x: String) -> Result<X::Value, E> {
        self.ctx.path.push_key(&x);
        self.v.visit_string(x)
    }
    // JSON keys are strings; any other visit is still forwarded (and gets an empty
    // key in the path from `Map`).
    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_f32(f32);
        visit_f64(f64);
        visit_i128(i128);
        visit_u128(u128);
        visit_char(char);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<X::Value, E> {
        self.v.visit_none()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<X::Value, E> {
        self.v.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<X::Value, D::Error> {
        self.v.visit_some(De { d, ctx: self.ctx })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<X::Value, D::Error> {
        self.v.visit_newtype_struct(De { d, ctx: self.ctx })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<X::Value, A::Error> {
        self.v.visit_seq(Seq {
            a,
            ctx: self.ctx,
            i: 0,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<X::Value, A::Error> {
        self.v.visit_map(Map { a, ctx: self.ctx })
    }
    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<X::Value, A::Error> {
        self.v.visit_enum(Enum { a, ctx: self.ctx })
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let depth = self.ctx.path.depth;
        let key = self.a.next_key_seed(KeySeed {
            s: seed,
            ctx: &mut *self.ctx,
        })?;
        if key.is_some() && self.ctx.path.depth == depth {
            self.ctx.path.push_key("");
        }
        Ok(key)
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let value = self.a.next_value_seed(Seed {
            s: seed,
            ctx: &mut *self.ctx,
        })?;
        self.ctx.path.pop();
        Ok(value)
    }
    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint()
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.ctx.path.push_index(self.i);
        let element = self.a.next_element_seed(Seed {
            s: seed,
            ctx: &mut *self.ctx,
        })?;
        self.ctx.path.pop();
        self.i += 1;
        Ok(element)
    }
    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint()
    }
}

impl<'de, 'c, A: EnumAccess<'de>> EnumAccess<'de> for Enum<'c, A> {
    type Error = A::Error;
    type Variant = Enum<'c, A::Variant>;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let ctx = self.ctx;
        let (value, variant) = self.a.variant_seed(Seed {
            s: seed,
            ctx: &mut *ctx,
        })?;
        Ok((value, Enum { a: variant, ctx }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Enum<'_, A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.a.unit_variant()
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.a.newtype_variant_seed(Seed {
            s: seed,
            ctx: self.ctx,
        })
    }
    fn tuple_variant<X: Visitor<'de>>(self, len: usize, v: X) -> Result<X::Value, A::Error> {
        self.a.tuple_variant(len, V { v, ctx: self.ctx })
    }
    fn struct_variant<X: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: X,
    ) -> Result<X::Value, A::Error> {
        self.a.struct_variant(fields, V { v, ctx: self.ctx })
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
        // Checking while parsing finds the same first bad number, at the same path,
        // whether the type skips everything or keeps everything.
        for parsed in [
            from_slice_checked::<serde::de::IgnoredAny>(json.as_bytes()).map(|_| ()),
            from_slice_checked::<Value>(json.as_bytes()).map(|_| ()),
        ] {
            match (&streamed, parsed) {
                (Ok(()), Ok(())) => {}
                (Err(a), Err(CheckedError::Invalid(b))) => assert_eq!(a, &b, "{json}"),
                (Err(a), Err(CheckedError::Json(_))) => {
                    assert!(a.rule.contains("not valid JSON"), "{json}: {a}")
                }
                (a, b) => panic!("{json}: check_json {a:?}, from_slice_checked {b:?}"),
            }
        }
        streamed
    }

    /// A type that knows a few fields (an Option, a Vec, an enum) and not the rest.
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Known {
        seq: u64,
        #[serde(default)]
        cpu: Vec<Cpu>,
        temp: Option<Zone>,
        #[serde(default)]
        kind: Option<Kind>,
        #[serde(default)]
        skipped: serde::de::IgnoredAny,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Cpu {
        user: f64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Zone {
        celsius: f64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    enum Kind {
        Plain,
        Tagged { x: f64 },
    }

    #[test]
    fn checked_parse_covers_known_skipped_and_unknown_fields() {
        let ok = br#"{"seq":7,"cpu":[{"user":1.5,"extra":2}],"temp":{"celsius":50},
            "kind":{"Tagged":{"x":0.5}},"new":{"soc_celsius":40,"v":[1e14]}}"#;
        let k: Known = from_slice_checked(ok).unwrap();
        assert_eq!(
            (k.seq, k.cpu[0].user, k.temp.unwrap().celsius),
            (7, 1.5, 50.0)
        );
        let bad = |json: &str| match from_slice_checked::<Known>(json.as_bytes()) {
            Err(CheckedError::Invalid(e)) => e,
            other => panic!("{json}: {other:?}"),
        };
        // A known field.
        assert_eq!(
            bad(r#"{"seq":1,"cpu":[{"user":1e308}]}"#).path,
            "$.cpu[0].user"
        );
        // A known temperature, written as an integer.
        let e = bad(r#"{"seq":1,"temp":{"celsius":400}}"#);
        assert_eq!(e.path, "$.temp.celsius");
        assert!(e.rule.contains("temperature"), "{e}");
        // Inside an enum variant.
        assert_eq!(
            bad(r#"{"seq":1,"kind":{"Tagged":{"x":2e15}}}"#).path,
            "$.kind.x"
        );
        // A field the type skips, and fields it has never heard of, at any depth.
        assert_eq!(
            bad(r#"{"seq":1,"skipped":[0,-1e300]}"#).path,
            "$.skipped[1]"
        );
        assert_eq!(
            bad(r#"{"seq":1,"cpu":[{"user":1,"steal":1e16}]}"#).path,
            "$.cpu[0].steal"
        );
        let e = bad(r#"{"seq":1,"zones":{"gpu":{"now_celsius":1000}}}"#);
        assert_eq!(e.path, "$.zones.gpu.now_celsius");
        // Not the type's shape, and not JSON at all: a JSON error, not a number's.
        assert!(matches!(
            from_slice_checked::<Known>(br#"{"cpu":[]}"#),
            Err(CheckedError::Json(_))
        ));
        assert!(matches!(
            from_slice_checked::<Known>(br#"{"seq":1} x"#),
            Err(CheckedError::Json(_))
        ));
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
