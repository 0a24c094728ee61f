//! Decoding a call's parameters from a query string, a form body or a JSON object body, the
//! same strict way for every endpoint.
//!
//! Strict because a lenient decoder lets a value mean one thing here and another to a proxy or
//! a client: invalid UTF-8 is refused rather than replaced, a parameter given twice is refused
//! rather than resolved, and a JSON number keeps the digits it was sent with (`-0` stays `-0`).

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ErrorCode;
use crate::values::Invalid;

/// Where parameters came from; it decides the error code of a malformed source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The URL's query string (`invalid_parameter` when malformed).
    Query,
    /// A form body (`invalid_body`).
    Form,
    /// A JSON object body (`invalid_body`).
    Json,
}

impl Source {
    fn refuse(self, detail: &'static str) -> Invalid {
        let code = match self {
            Self::Query => ErrorCode::InvalidParameter,
            Self::Form | Self::Json => ErrorCode::InvalidBody,
        };
        Invalid { code, detail }
    }
}

/// Name and value pairs in the order they were sent.
pub type Pairs = Vec<(String, String)>;

/// Decodes `application/x-www-form-urlencoded` text: a query string or a form body.
///
/// # Errors
/// When a name or value is not UTF-8 once percent-decoded.
pub fn decode_urlencoded(input: &[u8], source: Source) -> Result<Pairs, Invalid> {
    let mut pairs = Vec::new();
    for field in input.split(|&b| b == b'&').filter(|f| !f.is_empty()) {
        let (name, value) = match field.iter().position(|&b| b == b'=') {
            Some(at) => (&field[..at], &field[at + 1..]),
            None => (field, &b""[..]),
        };
        pairs.push((
            decode_component(name, source)?,
            decode_component(value, source)?,
        ));
    }
    Ok(pairs)
}

fn decode_component(raw: &[u8], source: Source) -> Result<String, Invalid> {
    // Session tokens, tickets and counters are sent as they are: copied once, not twice.
    let bytes: Vec<u8> = if raw.iter().any(|&b| b == b'+' || b == b'%') {
        let spaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&spaced).collect()
    } else {
        raw.to_vec()
    };
    String::from_utf8(bytes).map_err(|_| source.refuse("parameters must be valid UTF-8"))
}

/// Decodes a JSON object body whose values are strings, numbers, booleans or null (null
/// means absent). Numbers keep their text as sent.
///
/// # Errors
/// When the body is not one JSON object of such values, repeats a name, or is not UTF-8.
pub fn decode_json(body: &[u8]) -> Result<Pairs, Invalid> {
    let refuse = || Source::Json.refuse("the body is not a JSON object of strings and numbers");
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    let raw_pairs = reader.deserialize_map(RawPairs).map_err(|_| refuse())?;
    reader.end().map_err(|_| refuse())?;
    let mut pairs = Vec::with_capacity(raw_pairs.len());
    for (name, value) in raw_pairs {
        let text = value.get();
        let decoded = match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(text).map_err(|_| refuse())?,
            Some(b'-' | b'0'..=b'9' | b't' | b'f') => text.to_owned(),
            Some(b'n') => continue,
            _ => return Err(refuse()),
        };
        pairs.push((name, decoded));
    }
    Ok(pairs)
}

/// Collects an object's members without interpreting their values.
struct RawPairs;

impl<'de> Visitor<'de> for RawPairs {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry::<String, &'de RawValue>()? {
            pairs.push(pair);
        }
        Ok(pairs)
    }
}

/// A call's parameters, each name once. Sorted by name, so a lookup is a binary search: a
/// call has a handful, fewer than hashing them costs, and no name a client picks can slow it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged(Vec<(String, String)>);

impl Merged {
    /// The value given for `name`.
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(given, _)| given.as_str().cmp(name))
            .ok()
            .map(|at| &self.0[at].1)
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every value, in the order of their names.
    pub fn values(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(_, value)| value)
    }
}

/// Merges the pairs of every source into one set of parameters.
///
/// # Errors
/// `invalid_parameter` when a name appears twice, in one source or across two: which of the
/// two a proxy or cache would read is anybody's guess.
pub fn merge(sources: impl IntoIterator<Item = Pairs>) -> Result<Merged, Invalid> {
    let mut merged: Vec<(String, String)> = sources.into_iter().flatten().collect();
    merged.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    if merged.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        return Err(Invalid {
            code: ErrorCode::InvalidParameter,
            detail: "a parameter is given more than once",
        });
    }
    Ok(Merged(merged))
}

/// Whether a `Content-Type` value names JSON (`application/json`, any letter case, with or
/// without parameters).
pub fn is_json_media_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn urlencoded_decodes_plus_and_percent_and_refuses_invalid_utf8() {
        let decoded = decode_urlencoded(b"a=x+y&b=%C3%A9&&c", Source::Query);
        assert_eq!(decoded, Ok(pairs(&[("a", "x y"), ("b", "é"), ("c", "")])));
        let refused = decode_urlencoded(b"message=%FF", Source::Form);
        assert_eq!(refused.map_err(|e| e.code), Err(ErrorCode::InvalidBody));
        let raw = decode_urlencoded(b"message=\xff", Source::Query);
        assert_eq!(raw.map_err(|e| e.code), Err(ErrorCode::InvalidParameter));
    }

    #[test]
    fn json_keeps_number_text_and_refuses_nesting() {
        let decoded = decode_json(br#"{"a":"x","n":-0,"e":1e3,"b":true,"z":null}"#);
        assert_eq!(
            decoded,
            Ok(pairs(&[
                ("a", "x"),
                ("n", "-0"),
                ("e", "1e3"),
                ("b", "true")
            ]))
        );
        for bad in [
            &br#"{"a":[1]}"#[..],
            br#"{"a":{}}"#,
            b"[1]",
            b"{} {}",
            br#"{"a":"\ud800"}"#,
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(
                decode_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let twice = merge([pairs(&[("a", "1")]), pairs(&[("a", "2")])]);
        assert_eq!(twice.map_err(|e| e.code), Err(ErrorCode::InvalidParameter));
        let json_twice = decode_json(br#"{"a":"1","a":"2"}"#).and_then(|p| merge([p]));
        assert!(json_twice.is_err());
    }

    #[test]
    fn json_media_type_ignores_case_and_parameters() {
        assert!(is_json_media_type("APPLICATION/JSON"));
        assert!(is_json_media_type(" application/json ; charset=utf-8"));
        assert!(!is_json_media_type("application/jsonp"));
        assert!(!is_json_media_type("text/plain"));
    }
}
