//! The JSONP body: `/**/CALLBACK(JSON);`, safe wherever a script can be loaded from.
//!
//! JSON is not quite JavaScript: before ES2019 a raw U+2028 or U+2029 inside a string literal
//! ends the line and breaks the script for everyone in the room, and a `</script>` or `<!--`
//! in a message changes how an HTML parser reads an inline copy. Inside JSON those characters
//! can only appear within strings, so each is written as its `\u` escape, which every JSON and
//! JavaScript parser reads back as the same character.

use bytes::{BufMut as _, Bytes, BytesMut};

use crate::values::Callback;

/// `/**/` guards against a callback being read as something else at the start of a file
/// (the Rosetta Flash attack relied on the body starting with the callback).
const PREFIX: &[u8] = b"/**/";

/// The script body calling `callback` with `json`, escaped as described above.
pub fn wrap(callback: &Callback, json: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(json.len() + callback.as_str().len() + 16);
    body.put_slice(PREFIX);
    body.put_slice(callback.as_str().as_bytes());
    body.put_u8(b'(');
    put_escaped(&mut body, json);
    body.put_slice(b");");
    body.freeze()
}

/// Copies `json`, writing `<`, U+2028 and U+2029 as `\u` escapes.
fn put_escaped(out: &mut BytesMut, json: &[u8]) {
    let mut copied = 0;
    let mut at = 0;
    while at < json.len() {
        let escape: Option<(&[u8], usize)> = match json[at] {
            b'<' => Some((b"\\u003c", 1)),
            // U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8; in valid UTF-8 those
            // three bytes mean nothing else.
            0xE2 if json.get(at + 1) == Some(&0x80) => match json.get(at + 2) {
                Some(0xA8) => Some((b"\\u2028", 3)),
                Some(0xA9) => Some((b"\\u2029", 3)),
                _ => None,
            },
            _ => None,
        };
        match escape {
            Some((replacement, len)) => {
                out.put_slice(&json[copied..at]);
                out.put_slice(replacement);
                at += len;
                copied = at;
            }
            None => at += 1,
        }
    }
    out.put_slice(&json[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback() -> Callback {
        Callback::parse("cb").expect("valid")
    }

    #[test]
    fn escapes_line_separators_and_markup_openers() {
        let json =
            serde_json::to_vec(&serde_json::json!({"text": "a\u{2028}b\u{2029}</script><!--"}))
                .expect("json");
        let body = wrap(&callback(), &json);
        let text = std::str::from_utf8(&body).expect("utf-8");
        assert_eq!(
            text,
            r#"/**/cb({"text":"a\u2028b\u2029\u003c/script>\u003c!--"});"#
        );
    }

    #[test]
    fn leaves_other_text_as_it_is() {
        let json = b"{\"text\":\"caf\xc3\xa9 \xe2\x80\x94 ok\"}";
        let body = wrap(&callback(), json);
        assert_eq!(&body[7..body.len() - 2], &json[..]);
    }
}
