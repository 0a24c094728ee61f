//! Decoding a call's parameters from a query string, a form body or a JSON object body, the
//! same strict way for every endpoint.
//!
//! Strict because a lenient decoder lets a value mean one thing here and another to a proxy or
//! a client: invalid UTF-8 is refused rather than replaced, a parameter given twice is refused
//! rather than resolved, and a JSON number keeps the digits it was sent with (`-0` stays `-0`).

use std::ops::Range;

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

/// Name and value pairs in the order they were sent, decoded into one text: a query of
/// parameters sent without `+` or `%` costs two allocations, not two per parameter (a held
/// observe's re-observe decodes four on every delivery).
#[derive(Clone, Default)]
pub struct Pairs {
    text: String,
    spans: Vec<(Range<usize>, Range<usize>)>,
}

impl Pairs {
    /// Each name and value, in the order they were sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|(name, value)| (&self.text[name.clone()], &self.text[value.clone()]))
    }

    /// Appends a pair.
    pub fn push(&mut self, name: &str, value: &str) {
        let name = self.append(name);
        let value = self.append(value);
        self.spans.push((name, value));
    }

    fn append(&mut self, part: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(part);
        start..self.text.len()
    }

    /// Appends `other`'s pairs after these.
    fn extend(&mut self, other: Pairs) {
        let shift = self.text.len();
        self.text.push_str(&other.text);
        let moved = |span: Range<usize>| span.start + shift..span.end + shift;
        self.spans.extend(
            other
                .spans
                .into_iter()
                .map(|(name, value)| (moved(name), moved(value))),
        );
    }
}

/// The pairs themselves, not how their text is laid out.
impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal when the same pairs come in the same order, however their text is laid out.
impl PartialEq for Pairs {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Pairs {}

impl<'a> FromIterator<(&'a str, &'a str)> for Pairs {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut collected = Self::default();
        for (name, value) in pairs {
            collected.push(name, value);
        }
        collected
    }
}

/// Decodes `application/x-www-form-urlencoded` text: a query string or a form body.
///
/// # Errors
/// When a name or value is not UTF-8 once percent-decoded.
pub fn decode_urlencoded(input: &[u8], source: Source) -> Result<Pairs, Invalid> {
    // The separators are found with memchr's vector search: scanning byte by byte was about
    // a third of the ~0.6 µs a re-observe's four parameters cost to decode.
    let mut pairs = Pairs {
        // Decoding never lengthens a component.
        text: String::with_capacity(input.len()),
        // A re-observe's four without growing; a longer call grows as a Vec does.
        spans: Vec::with_capacity(4),
    };
    let mut rest = input;
    while !rest.is_empty() {
        let (field, after) = match memchr::memchr(b'&', rest) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &b""[..]),
        };
        rest = after;
        if field.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', field) {
            Some(at) => (&field[..at], &field[at + 1..]),
            None => (field, &b""[..]),
        };
        let name = decode_component(&mut pairs, name, source)?;
        let value = decode_component(&mut pairs, value, source)?;
        pairs.spans.push((name, value));
    }
    Ok(pairs)
}

/// Decodes one name or value onto the end of `pairs`' text.
fn decode_component(
    pairs: &mut Pairs,
    raw: &[u8],
    source: Source,
) -> Result<Range<usize>, Invalid> {
    let refuse = || source.refuse("parameters must be valid UTF-8");
    // Session tokens, tickets and counters are sent as they are: checked and copied once.
    if memchr::memchr2(b'+', b'%', raw).is_none() {
        return Ok(pairs.append(std::str::from_utf8(raw).map_err(|_| refuse())?));
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    Ok(pairs.append(std::str::from_utf8(&decoded).map_err(|_| refuse())?))
}

/// Decodes a JSON object body whose values are strings, numbers, booleans or null (null
/// means absent). Numbers keep their text as sent.
///
/// # Errors
/// When the body is not one JSON object of such values, repeats a name, or is not UTF-8.
pub fn decode_json(body: &[u8]) -> Result<Pairs, Invalid> {
    let refuse = || Source::Json.refuse("the body is not a JSON object of strings and numbers");
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Pairs::default());
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    let raw_pairs = reader.deserialize_map(RawPairs).map_err(|_| refuse())?;
    reader.end().map_err(|_| refuse())?;
    let mut pairs = Pairs::default();
    for (name, value) in raw_pairs {
        let text = value.get();
        match text.as_bytes().first() {
            Some(b'"') => {
                let decoded = serde_json::from_str::<String>(text).map_err(|_| refuse())?;
                pairs.push(&name, &decoded);
            }
            Some(b'-' | b'0'..=b'9' | b't' | b'f') => pairs.push(&name, text),
            Some(b'n') => {}
            _ => return Err(refuse()),
        }
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
pub struct Merged(Pairs);

impl Merged {
    /// The value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let pairs = &self.0;
        pairs
            .spans
            .binary_search_by(|(given, _)| pairs.text[given.clone()].cmp(name))
            .ok()
            .map(|at| &pairs.text[pairs.spans[at].1.clone()])
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.0.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.spans.is_empty()
    }

    /// Every value, in the order of their names.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, value)| value)
    }
}

/// Merges the pairs of every source into one set of parameters.
///
/// # Errors
/// `invalid_parameter` when a name appears twice, in one source or across two: which of the
/// two a proxy or cache would read is anybody's guess.
pub fn merge(sources: impl IntoIterator<Item = Pairs>) -> Result<Merged, Invalid> {
    let mut sources = sources.into_iter();
    let mut merged = sources.next().unwrap_or_default();
    for source in sources {
        merged.extend(source);
    }
    let Pairs { text, spans } = &mut merged;
    spans.sort_unstable_by(|(a, _), (b, _)| text[a.clone()].cmp(&text[b.clone()]));
    if spans
        .windows(2)
        .any(|pair| text[pair[0].0.clone()] == text[pair[1].0.clone()])
    {
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
        list.iter().copied().collect()
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
    fn merged_sources_are_found_by_name_whatever_their_order() {
        let query =
            decode_urlencoded(b"ticket=t%2B1&session=s&counter=7", Source::Query).expect("decodes");
        let body = decode_json(br#"{"timeout":30,"callback":"cb"}"#).expect("decodes");
        let merged = merge([query, body]).expect("no duplicates");
        assert_eq!(merged.get("ticket"), Some("t+1"));
        assert_eq!(merged.get("session"), Some("s"));
        assert_eq!(merged.get("counter"), Some("7"));
        assert_eq!(merged.get("timeout"), Some("30"));
        assert_eq!(merged.get("callback"), Some("cb"));
        assert_eq!(merged.get("nothing"), None);
        assert_eq!(
            merged.values().collect::<Vec<_>>(),
            ["cb", "7", "s", "t+1", "30"],
            "in the order of their names"
        );
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
