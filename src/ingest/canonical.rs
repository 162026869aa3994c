//! JSON re-encoded in the exact compact form serde_json writes for a parsed
//! `Value`, without building one. Parsing goes through serde_json's own
//! deserializer, so exactly the documents a `Value` accepts get through;
//! a duplicate key (which a `Value` collapses to its last copy) is refused.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serializer as _;
use serde_json::ser::{CompactFormatter, Formatter};

/// Members an object may have here. Duplicate keys are looked for by
/// comparing each key with the earlier ones, so a bigger object is refused
/// rather than compared quadratically (its caller takes the `Value` path).
const MAX_MEMBERS: usize = 64;

/// The output and the working state of a transcoding.
#[derive(Default)]
pub(crate) struct Canon {
    /// Everything transcoded so far, back to back.
    pub out: Vec<u8>,
    /// The keys of the objects being transcoded (positions in `out`), the
    /// innermost object's last: what a new key is checked against.
    keys: Vec<Range<usize>>,
}

impl Canon {
    /// A canon whose output has room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Canon {
        Canon {
            out: Vec::with_capacity(capacity),
            keys: Vec::new(),
        }
    }

    /// Writes `s` as a JSON string.
    fn write_str(&mut self, s: &str) {
        write_str(&mut self.out, s);
    }

    /// Writes a string serde_json lent straight from the input: it holds
    /// no escape sequence, and a JSON string without one has no character
    /// that needs escaping (no quote, backslash or control character), so
    /// it is written as it is, which is what serde_json's escaping would
    /// write, without looking at each byte again.
    fn write_unescaped(&mut self, s: &str) {
        self.out.reserve(s.len() + 2);
        self.out.push(b'"');
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(b'"');
    }

    /// Transcodes one value and returns where it lies in `out`.
    pub fn value<'de, D: de::Deserializer<'de>>(&mut self, d: D) -> Result<Range<usize>, D::Error> {
        let start = self.out.len();
        d.deserialize_any(Any(self))?;
        Ok(start..self.out.len())
    }

    /// Transcodes an object, calling `member` with the position of each
    /// top-level member's key and value; refuses anything but an object.
    pub fn object<'de, D, F>(&mut self, d: D, member: F) -> Result<Range<usize>, D::Error>
    where
        D: de::Deserializer<'de>,
        F: FnMut(Range<usize>, Range<usize>),
    {
        let start = self.out.len();
        d.deserialize_map(Object {
            canon: self,
            member,
        })?;
        Ok(start..self.out.len())
    }

    /// Transcodes an object's members into `out`, each key checked against
    /// the earlier ones.
    fn members<'de, A, F>(&mut self, mut map: A, mut member: F) -> Result<(), A::Error>
    where
        A: MapAccess<'de>,
        F: FnMut(Range<usize>, Range<usize>),
    {
        self.out.push(b'{');
        let mark = self.keys.len();
        loop {
            let before = self.out.len();
            if self.keys.len() > mark {
                self.out.push(b',');
            }
            let key_start = self.out.len();
            if map.next_key_seed(Key(self))?.is_none() {
                self.out.truncate(before);
                break;
            }
            let key = key_start..self.out.len();
            let earlier = &self.keys[mark..];
            if earlier.len() >= MAX_MEMBERS {
                return Err(de::Error::custom(
                    "too many members to check for duplicates",
                ));
            }
            let text = &self.out[key.clone()];
            if earlier.iter().any(|k| &self.out[k.clone()] == text) {
                return Err(de::Error::custom("duplicate key"));
            }
            self.keys.push(key.clone());
            self.out.push(b':');
            let value = map.next_value_seed(Any(self))?;
            member(key, value);
        }
        self.keys.truncate(mark);
        self.out.push(b'}');
        Ok(())
    }
}

/// Transcodes any value; as a seed, yields where it lies in the output.
pub(crate) struct Any<'c>(pub &'c mut Canon);

impl<'de> DeserializeSeed<'de> for Any<'_> {
    type Value = Range<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Range<usize>, D::Error> {
        self.0.value(d)
    }
}

impl<'de> Visitor<'de> for Any<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0
            .out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        let _ = CompactFormatter.write_i64(&mut self.0.out, v);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let _ = CompactFormatter.write_u64(&mut self.0.out, v);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // serde_json's parser yields finite numbers only; a `Value` would
        // hold anything else as null.
        if v.is_finite() {
            let _ = CompactFormatter.write_f64(&mut self.0.out, v);
        } else {
            self.0.out.extend_from_slice(b"null");
        }
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.write_str(v);
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.write_unescaped(v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let canon = self.0;
        canon.out.push(b'[');
        let mut first = true;
        loop {
            let before = canon.out.len();
            if !first {
                canon.out.push(b',');
            }
            if seq.next_element_seed(Any(canon))?.is_none() {
                canon.out.truncate(before);
                break;
            }
            first = false;
        }
        canon.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.members(map, |_, _| {})
    }
}

/// Transcodes an object, reporting its top-level members.
struct Object<'c, F> {
    canon: &'c mut Canon,
    member: F,
}

impl<'de, F: FnMut(Range<usize>, Range<usize>)> Visitor<'de> for Object<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.canon.members(map, self.member)
    }
}

/// Transcodes an object key (always a string in JSON).
struct Key<'c>(&'c mut Canon);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(Any(self.0))
    }
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::Serializer::new(out).serialize_str(s);
}

/// The text of a transcoded string value, unescaped; `None` when `json` is
/// not a string.
pub(crate) fn string(json: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let inner = json.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        serde_json::from_slice::<String>(json).ok().map(Into::into)
    } else {
        std::str::from_utf8(inner).ok().map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The transcoding of `text`, or `None` when refused.
    fn canon(text: &str) -> Option<String> {
        let mut canon = Canon::default();
        let mut d = serde_json::Deserializer::from_str(text);
        canon.value(&mut d).ok()?;
        d.end().ok()?;
        Some(String::from_utf8(canon.out).unwrap())
    }

    /// What a parsed `Value` writes, when it parses.
    fn reference(text: &str) -> Option<String> {
        serde_json::from_str::<Value>(text)
            .ok()
            .map(|v| v.to_string())
    }

    #[test]
    fn scalars_and_arrays_read_as_a_value_writes_them() {
        for text in [
            "null",
            "true",
            " false ",
            "0",
            "-0",
            "-0.0",
            "1e2",
            "1E-400",
            "123456789012345678901234567890",
            "-9223372036854775809",
            "18446744073709551615",
            "0.1",
            "2.5e+3",
            r#""a\u00e9\/\"\\\n\t\u0001\ud83d\ude00""#,
            "[]",
            "[1, [2, []], \"x\"]",
            "[1,]",
            "1e400",
            "01",
            r#""\ud800""#,
            "\"tab\there\"",
            "[1] 2",
            "01",
            "1.",
            "-",
            "+1",
            ".5",
            "1e",
            "[1,]",
            r#"{"a":1,}"#,
            "NaN",
            r#""\x""#,
            r#""\u12G4""#,
            "\"del\u{7f}\"",
            "",
            " ",
            "{} x",
            "\u{feff}{}",
        ] {
            assert_eq!(canon(text), reference(text), "{text}");
        }
        // serde_json's nesting limit holds as it does for a `Value`.
        for depth in [127, 128, 129] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(canon(&text), reference(&text), "depth {depth}");
        }
    }

    #[test]
    fn objects_keep_their_member_order() {
        let text = r#"{ "b" : 1, "a" : {"z": [], "\u0079": null} }"#;
        assert_eq!(canon(text).unwrap(), r#"{"b":1,"a":{"z":[],"y":null}}"#);
        let back: Value = serde_json::from_str(&canon(text).unwrap()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert_eq!(canon(r#"{"a":1,"a":2}"#), None);
        assert_eq!(canon(r#"{"a":1,"\u0061":2}"#), None);
        assert_eq!(canon(r#"{"x":[{"a":1,"b":{"c":1,"c":1}}]}"#), None);
        // The same key in different objects is no duplicate.
        assert!(canon(r#"{"a":{"a":{"a":1}},"b":{"a":2}}"#).is_some());
    }

    #[test]
    fn an_object_past_the_member_limit_is_refused() {
        let members = |n: usize| {
            let m: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            format!("{{{}}}", m.join(","))
        };
        assert!(canon(&members(MAX_MEMBERS)).is_some());
        assert_eq!(canon(&members(MAX_MEMBERS + 1)), None);
    }

    #[test]
    fn object_reports_each_member() {
        let mut canon = Canon::default();
        let mut seen = Vec::new();
        let mut d = serde_json::Deserializer::from_str(r#"{"a": [1, 2], "b\n": "x"}"#);
        let all = canon
            .object(&mut d, |k, v| seen.push((k, v)))
            .expect("an object");
        let text = |r: Range<usize>| String::from_utf8(canon.out[r].to_vec()).unwrap();
        assert_eq!(text(all), r#"{"a":[1,2],"b\n":"x"}"#);
        let seen: Vec<_> = seen.into_iter().map(|(k, v)| (text(k), text(v))).collect();
        assert_eq!(
            seen,
            [
                ("\"a\"".to_owned(), "[1,2]".to_owned()),
                ("\"b\\n\"".to_owned(), "\"x\"".to_owned())
            ]
        );
        let mut d = serde_json::Deserializer::from_str("[1]");
        assert!(Canon::default().object(&mut d, |_, _| {}).is_err());
    }

    #[test]
    fn strings_read_back_unescaped() {
        assert_eq!(string(br#""plain""#).as_deref(), Some("plain"));
        assert_eq!(string(br#""a\"b\u00e9""#).as_deref(), Some("a\"bé"));
        assert_eq!(string(b"12"), None);
        assert_eq!(string(b"null"), None);
    }

    /// Any JSON value: odd strings, numbers of every kind, nesting.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC*".prop_map(Value::from),
            "[\"\\\\/\u{0}-\u{1f}\u{7f}é😀a]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c\"\\\n]{0,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any JSON document transcodes to exactly what its `Value` writes
        /// (the generated objects hold their keys in a `Value`'s order).
        #[test]
        fn transcodes_as_a_value_writes(value in json_value(), pretty: bool) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            let out = canon(&text).expect("a document without duplicate keys");
            proptest::prop_assert_eq!(out, reference(&text).unwrap());
        }
    }
}
