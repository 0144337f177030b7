//! One member of a JSON object, read without building the rest of the document.
//!
//! The gateway reads `usage` from a runtime's answer for the receipt, the client's proxy
//! reads `stream` from a request to choose how to send it. Both are one member of a
//! document whose other members (messages, choices) are most of its bytes. Parsing the
//! whole document into a [`serde_json::Value`] allocates a string for every key and value
//! in it; [`top_level_member`] checks the other members' syntax and keeps nothing of them.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The value of the member `name` of the JSON object `document`, as a
/// [`serde_json::Value`] of the whole document would have it: `None` when `document` is
/// not UTF-8, not JSON, not an object, or has no member `name`. Of repeated members the
/// last counts (as `serde_json::Value`'s). Only members of the object itself count, not
/// of objects nested in it. The other members are checked for JSON syntax only and not
/// kept, so three things `serde_json::Value` refuses in them are accepted there: a
/// number too large for an `f64`, nesting deeper than 128 levels, and an escaped lone
/// surrogate (`"\ud800"`; Python's `json` accepts all three). The member `name` itself
/// is read as `serde_json::Value` reads it. Time and memory are linear in the document's
/// length: callers cap that first.
pub fn top_level_member(document: &[u8], name: &str) -> Option<serde_json::Value> {
    let text = std::str::from_utf8(document).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let member = (&mut de).deserialize_map(Member { name }).ok()?;
    de.end().ok()?;
    member
}

/// Visits an object for its member `name`.
struct Member<'n> {
    name: &'n str,
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<serde_json::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut member = None;
        while let Some(is_it) = map.next_key_seed(KeyIs(self.name))? {
            if is_it {
                member = Some(map.next_value::<serde_json::Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(member)
    }
}

/// Reads a key (escapes decoded) and says whether it is the one sought, keeping nothing.
struct KeyIs<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// What the whole document as a `serde_json::Value` says.
    fn by_value(document: &[u8], name: &str) -> Option<serde_json::Value> {
        serde_json::from_slice::<serde_json::Value>(document)
            .ok()?
            .get(name)
            .cloned()
    }

    #[test]
    fn reads_a_member_as_a_whole_parse_does() {
        let cases: &[&[u8]] = &[
            br#"{"stream":true}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            br#"{"stream":false,"stream":true}"#,
            br#"{"stream":true,"stream":false}"#,
            br#"{"st\u0072eam":true}"#,
            br#"{"usage":{"prompt_tokens":3,"completion_tokens":4},"id":"x"}"#,
            br#"{"a":{"stream":true}}"#,
            br#"{"stream":null}"#,
            br#"{"stream":[true]}"#,
            br#"  {"stream" : "yes"}  "#,
            br#"{}"#,
            br#"[{"stream":true}]"#,
            br#"true"#,
            br#"{"stream":true"#,
            br#"{"stream":true}x"#,
            br#"{"stream":true,}"#,
            br#"{"x":tru,"stream":true}"#,
            br#"{"x":"\q","stream":true}"#,
            b"{\"x\":\"\xff\",\"stream\":true}",
            b"",
        ];
        for doc in cases {
            assert_eq!(
                top_level_member(doc, "stream"),
                by_value(doc, "stream"),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        assert_eq!(
            top_level_member(cases[5], "usage"),
            Some(json!({"prompt_tokens": 3, "completion_tokens": 4}))
        );
        assert_eq!(top_level_member(cases[2], "stream"), Some(json!(true)));
    }

    #[test]
    fn other_members_are_checked_for_syntax_only() {
        // serde_json::Value refuses a number beyond f64, nesting beyond 128 levels and a
        // lone surrogate; this reader only skips them.
        let deep = format!(
            r#"{{"x":{}{},"stream":true}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for doc in [
            &br#"{"x":1e400,"stream":true}"#[..],
            deep.as_bytes(),
            br#"{"x":"\ud800","stream":true}"#,
        ] {
            assert_eq!(by_value(doc, "stream"), None);
            assert_eq!(top_level_member(doc, "stream"), Some(json!(true)));
        }
        // The member sought is read as serde_json::Value reads it.
        for doc in [&br#"{"stream":1e400}"#[..], br#"{"stream":"\ud800"}"#] {
            assert_eq!(top_level_member(doc, "stream"), None);
        }
        // Syntax errors anywhere still count.
        let broken = format!(
            r#"{{"x":{}{},"stream":true}}"#,
            "[".repeat(200),
            "]".repeat(199)
        );
        assert_eq!(top_level_member(broken.as_bytes(), "stream"), None);
    }
}
