//! What the fuzz targets (`fuzz/`) assert of arbitrary input, shared with the regression test
//! that replays every input a fuzzer ever found (`proto/tests/fuzz_regressions.rs`), so a
//! crash once found stays a test.

use crate::params::{decode_json, decode_urlencoded, merge, Source};
use crate::ticket::TicketKey;
use crate::values::{parse_decimal, IdempotentId};
use crate::{jsonp, Callback, MessageText, Nickname, RoomId};

/// Decodes `data` as a request would be (the first byte picks query, form or JSON) and runs
/// every validator on what comes out. Panics on a broken invariant.
pub fn request_decoding(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let decoded = match selector % 3 {
        0 => decode_urlencoded(body, Source::Query),
        1 => decode_urlencoded(body, Source::Form),
        _ => decode_json(body),
    };
    let Ok(pairs) = decoded else {
        return;
    };
    let Ok(params) = merge([pairs]) else {
        return;
    };
    for value in params.values() {
        if let Ok(room) = RoomId::parse(value) {
            assert!(
                crate::subjects::room_of_subject(&crate::subjects::room_events(&room))
                    == Some(room)
            );
        }
        if let Ok(nickname) = Nickname::parse(value) {
            assert!(crate::text::has_visible(nickname.as_str()));
            assert!(nickname.as_str().chars().count() <= Nickname::MAX_CHARS);
        }
        if let Ok(message) = MessageText::parse(value) {
            assert_eq!(message.as_str(), value);
        }
        if let Some(number) = parse_decimal(value) {
            assert_eq!(
                number.to_string().trim_start_matches('0'),
                value.trim_start_matches('0')
            );
        }
        let _ = IdempotentId::parse(value);
        let callback = Callback::parse(value).unwrap_or_else(|_| {
            Callback::parse("cb").unwrap_or_else(|_| unreachable!("a valid literal"))
        });
        let json = serde_json::to_vec(&serde_json::json!({ "text": value }))
            .unwrap_or_else(|_| unreachable!("a string always serializes"));
        let body = jsonp::wrap(&callback, &json);
        let script = std::str::from_utf8(&body).unwrap_or_else(|_| panic!("JSONP is not UTF-8"));
        assert!(!script.contains(['\u{2028}', '\u{2029}', '<']));
        let inner = &script[4 + callback.as_str().len() + 1..script.len() - 2];
        let parsed: serde_json::Value =
            serde_json::from_str(inner).unwrap_or_else(|err| panic!("JSONP does not parse: {err}"));
        assert_eq!(parsed["text"].as_str(), Some(value));
    }
}

/// Verifies `data` as a ticket: whatever verifies must be exactly what signing its contents
/// gives, so no second spelling of a ticket is accepted. Panics otherwise.
pub fn ticket_verification(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = TicketKey::new(b"fuzzing-secret-0123456789abcdef");
    if let Ok(ticket) = key.verify(text) {
        assert_eq!(key.sign(&ticket), text);
    }
    let rotated = TicketKey::new(b"another-secret-0123456789abcdef")
        .with_previous(b"fuzzing-secret-0123456789abcdef");
    assert_eq!(rotated.verify(text).is_ok(), key.verify(text).is_ok());
}
