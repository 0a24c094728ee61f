//! Property tests for every parser and validator of the wire contract: each accepts exactly
//! what DESIGN.md allows, whatever it is given, and what it produces reads back unchanged.

use lingr_proto::params::{decode_json, decode_urlencoded, merge, Source};
use lingr_proto::ticket::{Ticket, TicketKey};
use lingr_proto::values::parse_decimal;
use lingr_proto::{
    jsonp, text, Callback, IdempotentId, MessageText, Nickname, OccupantId, RoomId, SessionToken,
};
use proptest::prelude::*;
use regex::Regex;

const ROOM_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";
const CALLBACK_PATTERN: &str =
    r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,3}$";

/// Text mixing the characters validators care about: ASCII, controls, format characters,
/// separators, fillers, combining marks, emoji and other scripts.
fn tricky_text(max: usize) -> impl Strategy<Value = String> {
    let interesting = prop_oneof![
        any::<char>(),
        prop::sample::select(vec![
            '\0', '\t', '\n', '\r', '\u{1B}', '\u{7F}', '\u{9B}', ' ', '\u{A0}', '\u{200B}',
            '\u{200C}', '\u{200D}', '\u{202E}', '\u{2066}', '\u{FEFF}', '\u{2028}', '\u{2029}',
            '\u{3164}', '\u{2800}', '\u{0301}', '<', '>', '"', '\\', '/', '😀', 'é', '中', 'a',
        ]),
    ];
    prop::collection::vec(interesting, 0..max).prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #[test]
    fn room_ids_are_exactly_the_contract_pattern(raw in "[A-Za-z0-9_.*> -]{0,70}|\\PC{0,8}") {
        let pattern = Regex::new(ROOM_PATTERN).expect("pattern");
        prop_assert_eq!(RoomId::parse(&raw).is_ok(), pattern.is_match(&raw));
        if let Ok(room) = RoomId::parse(&raw) {
            prop_assert_eq!(room.as_str(), raw.as_str());
            prop_assert!(!room.as_str().contains(['.', '*', '>', ' ']));
        }
    }

    #[test]
    fn callbacks_are_exactly_the_contract_pattern(raw in "[A-Za-z0-9_$.()<>;=-]{0,80}|\\PC{0,8}") {
        let pattern = Regex::new(CALLBACK_PATTERN).expect("pattern");
        prop_assert_eq!(Callback::parse(&raw).is_ok(), pattern.is_match(&raw));
    }

    #[test]
    fn generated_callbacks_are_accepted(raw in "[A-Za-z_$][A-Za-z0-9_$]{0,63}(\\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,3}") {
        prop_assert!(Callback::parse(&raw).is_ok());
    }

    #[test]
    fn nicknames_are_trimmed_visible_and_hide_nothing(raw in tricky_text(40)) {
        match Nickname::parse(&raw) {
            Ok(nickname) => {
                let kept = nickname.as_str();
                prop_assert_eq!(kept, raw.trim());
                prop_assert!((1..=32).contains(&kept.chars().count()));
                prop_assert!(text::has_visible(kept));
                let chars: Vec<char> = kept.chars().collect();
                for (i, c) in chars.iter().enumerate() {
                    prop_assert!(!c.is_control(), "control {:?}", c);
                    prop_assert!(!matches!(c, '\u{2028}' | '\u{2029}'), "line separator");
                    if text::is_format(*c) {
                        prop_assert!(text::is_joiner(*c) && text::is_needed_joiner(&chars, i));
                    }
                }
            }
            Err(refused) => prop_assert_eq!(refused.code, lingr_proto::ErrorCode::InvalidNickname),
        }
    }

    #[test]
    fn messages_are_kept_exactly_when_valid(raw in tricky_text(60)) {
        let valid = text::has_visible(&raw)
            && raw.chars().count() <= 2000
            && !raw.chars().any(text::is_forbidden_control);
        match MessageText::parse(&raw) {
            Ok(message) => {
                prop_assert!(valid);
                prop_assert_eq!(message.as_str(), raw.as_str());
            }
            Err(refused) => {
                prop_assert!(!valid);
                prop_assert_eq!(refused.code, lingr_proto::ErrorCode::InvalidMessage);
            }
        }
    }

    #[test]
    fn long_messages_are_counted_in_characters(n in 1990usize..2010, c in prop::sample::select(vec!['a', 'é', '😀'])) {
        let raw: String = std::iter::repeat_n(c, n).collect();
        prop_assert_eq!(MessageText::parse(&raw).is_ok(), n <= 2000);
    }

    #[test]
    fn counters_have_one_spelling(n in any::<u64>(), junk in "[+ -]|0x|e1| ") {
        prop_assert_eq!(parse_decimal(&n.to_string()), Some(n));
        prop_assert_eq!(parse_decimal(&format!("{junk}{n}")), None);
        prop_assert_eq!(parse_decimal(&format!("{n}{junk}")), None);
    }

    #[test]
    fn counters_never_accept_anything_but_digits(raw in "\\PC{0,24}|[0-9]{18,22}") {
        let digits_only = !raw.is_empty() && raw.len() <= 20 && raw.bytes().all(|b| b.is_ascii_digit());
        let expected = if digits_only { raw.parse::<u64>().ok() } else { None };
        prop_assert_eq!(parse_decimal(&raw), expected);
    }

    #[test]
    fn idempotency_ids_are_1_to_64_visible_ascii_characters(raw in "[ -~]{0,70}|\\PC{0,8}") {
        let valid = (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        prop_assert_eq!(IdempotentId::parse(&raw).is_ok(), valid);
    }

    #[test]
    fn session_tokens_and_occupant_ids_have_one_shape(bytes in any::<[u8; 24]>(), raw in "[s_o0-9a-fA-F]{0,52}") {
        let token = SessionToken::from_random(bytes);
        prop_assert_eq!(SessionToken::parse(token.as_str()).map(|t| t.tag()), Ok(token.tag()));
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[..16]);
        let occupant = OccupantId::from_bytes(&id);
        prop_assert_eq!(OccupantId::parse(occupant.as_str()), Ok(occupant.clone()));
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let token_shape = raw.strip_prefix("s_").is_some_and(|h| hex(h, 48));
        let occupant_shape = raw.strip_prefix("o_").is_some_and(|h| hex(h, 32));
        prop_assert_eq!(SessionToken::parse(&raw).is_ok(), token_shape);
        prop_assert_eq!(OccupantId::parse(&raw).is_ok(), occupant_shape);
    }

    #[test]
    fn tickets_verify_only_as_signed(
        room in "[A-Za-z0-9_-]{1,64}",
        occupant in any::<[u8; 16]>(),
        tag in "[0-9a-f]{24}",
        anonymous in any::<bool>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = TicketKey::new(b"property-secret-0123456789");
        let ticket = Ticket {
            room: RoomId::parse(&room).expect("valid room"),
            occupant_id: OccupantId::from_bytes(&occupant),
            session_tag: tag,
            anonymous,
        };
        let text = key.sign(&ticket);
        prop_assert_eq!(key.verify(&text), Ok(ticket.clone()));
        prop_assert!(TicketKey::new(b"another-secret-0123456789").verify(&text).is_err());
        let mut bytes = text.into_bytes();
        let at = flip.index(bytes.len());
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        if let Ok(tampered) = String::from_utf8(bytes) {
            // Changing any character either breaks the signature or leaves base64 padding
            // bits that decode to the same signature; it never yields a different ticket.
            if let Ok(verified) = key.verify(&tampered) {
                prop_assert_eq!(verified, ticket);
            }
        }
    }

    #[test]
    fn garbage_never_verifies_as_a_ticket(raw in "\\PC{0,200}") {
        prop_assert!(TicketKey::new(b"property-secret-0123456789").verify(&raw).is_err());
    }

    #[test]
    fn form_bodies_round_trip(fields in prop::collection::btree_map("\\PC{1,12}", "\\PC{0,40}", 0..8)) {
        let encoded = serde_urlencoded::to_string(&fields).expect("encodes");
        let decoded = decode_urlencoded(encoded.as_bytes(), Source::Form).expect("decodes");
        let merged = merge([decoded]).expect("no duplicates");
        prop_assert_eq!(merged.len(), fields.len());
        for (name, value) in &fields {
            prop_assert_eq!(merged.get(name), Some(value.as_str()));
        }
    }

    #[test]
    fn urlencoded_input_decodes_as_browsers_do_or_is_refused(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        // form_urlencoded is the WHATWG decoder, which replaces invalid UTF-8 with U+FFFD: ours
        // must agree with it exactly, or refuse where it had to replace something.
        let lossy: Vec<(String, String)> = form_urlencoded::parse(&raw).into_owned().collect();
        match decode_urlencoded(&raw, Source::Query) {
            Ok(pairs) => prop_assert_eq!(
                pairs.iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect::<Vec<_>>(),
                lossy
            ),
            Err(_) => prop_assert!(
                lossy.iter().any(|(n, v)| n.contains('\u{FFFD}') || v.contains('\u{FFFD}')),
                "refused input the browser decoder reads cleanly"
            ),
        }
    }

    #[test]
    fn json_bodies_round_trip_strings_and_numbers(
        strings in prop::collection::btree_map("\\PC{1,12}", "\\PC{0,40}", 0..6),
        number in "-?(0|[1-9][0-9]{0,10})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
    ) {
        let mut object = serde_json::Map::new();
        for (name, value) in &strings {
            object.insert(name.clone(), serde_json::Value::String(value.clone()));
        }
        let mut body = serde_json::to_vec(&object).expect("json");
        if !strings.contains_key("n") {
            body.pop();
            if !strings.is_empty() {
                body.push(b',');
            }
            body.extend_from_slice(format!("\"n\":{number}}}").as_bytes());
        }
        let merged = merge([decode_json(&body).expect("decodes")]).expect("no duplicates");
        for (name, value) in &strings {
            prop_assert_eq!(merged.get(name), Some(value.as_str()));
        }
        if !strings.contains_key("n") {
            prop_assert_eq!(merged.get("n"), Some(number.as_str()));
        }
    }

    #[test]
    fn json_input_never_panics(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_json(&raw);
    }

    #[test]
    fn jsonp_bodies_parse_back_to_exactly_what_was_said(said in tricky_text(80), callback in "[A-Za-z_$][A-Za-z0-9_$]{0,10}") {
        let callback = Callback::parse(&callback).expect("valid callback");
        let json = serde_json::to_vec(&serde_json::json!({"text": said})).expect("json");
        let body = jsonp::wrap(&callback, &json);
        let script = std::str::from_utf8(&body).expect("utf-8");
        prop_assert!(!script.contains(['\u{2028}', '\u{2029}', '<']), "unescaped character");
        let inner = script
            .strip_prefix(&format!("/**/{}(", callback.as_str()))
            .and_then(|rest| rest.strip_suffix(");"))
            .expect("shape");
        let parsed: serde_json::Value = serde_json::from_str(inner).expect("parses back");
        prop_assert_eq!(parsed["text"].as_str(), Some(said.as_str()));
    }
}
