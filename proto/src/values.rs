//! Validated values: each type can only hold what DESIGN.md allows.
//!
//! Parsing is the one way in (`RoomId::parse`), so a handler that holds a `RoomId` never checks
//! it again, and a room id can be put into a NATS subject without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::text;

/// Why a value was refused; `code` is the API error code to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Invalid {
    /// The API error code.
    pub code: ErrorCode,
    /// Human text for the `detail` field; never echoes the refused value.
    pub detail: &'static str,
}

fn invalid(code: ErrorCode, detail: &'static str) -> Invalid {
    Invalid { code, detail }
}

/// A room id: `^[A-Za-z0-9_-]{1,64}$`, so it is also a single NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl RoomId {
    /// Longest room id, in bytes (all allowed characters are ASCII).
    pub const MAX_LEN: usize = 64;

    /// Parses a room id.
    ///
    /// # Errors
    /// `invalid_room` when empty, longer than 64 or holding anything but `A-Z a-z 0-9 _ -`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid(
                ErrorCode::InvalidRoom,
                "room must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A nickname: 1–32 Unicode scalar values, at least one visible, nothing hidden (see
/// [`Nickname::parse`]).
///
/// Read back from a stored record it is taken as stored, without the checks: it was parsed
/// when it came in, and a nickname an older version accepted must stay readable after the
/// rules grew stricter (its session and occupant would otherwise become unreadable).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Nickname(String);

impl<'de> Deserialize<'de> for Nickname {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl Nickname {
    /// Longest nickname, in Unicode scalar values.
    pub const MAX_CHARS: usize = 32;

    /// Parses a nickname, trimming surrounding white space.
    ///
    /// # Errors
    /// `invalid_nickname` when it has no visible character, is longer than 32 characters, or
    /// holds a control character, a line separator, or a format character (bidi override,
    /// zero-width space, byte-order mark) other than a joiner that emoji or a script needs.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        let chars: Vec<char> = trimmed.chars().collect();
        if !text::has_visible(trimmed) || chars.len() > Self::MAX_CHARS {
            return Err(invalid(
                ErrorCode::InvalidNickname,
                "nickname must be 1-32 characters with at least one visible character",
            ));
        }
        let hidden = chars.iter().enumerate().any(|(i, &c)| {
            c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}')
                || (text::is_format(c)
                    && !(text::is_joiner(c) && text::is_needed_joiner(&chars, i)))
        });
        if hidden {
            return Err(invalid(
                ErrorCode::InvalidNickname,
                "nickname must not contain control, bidi or zero-width characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The nickname as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message: 1–2,000 Unicode scalar values, at least one visible, no control characters but
/// tab and line breaks. Kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    /// Longest message, in Unicode scalar values.
    pub const MAX_CHARS: usize = 2000;

    /// Parses a message.
    ///
    /// # Errors
    /// `invalid_message` when it has no visible character, is longer than 2,000 characters, or
    /// holds a control character other than tab and line breaks (NUL, terminal escapes).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if !text::has_visible(raw) {
            return Err(invalid(
                ErrorCode::InvalidMessage,
                "message must not be empty, only white space or only invisible characters",
            ));
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(invalid(
                ErrorCode::InvalidMessage,
                "message must be at most 2000 characters",
            ));
        }
        if raw.chars().any(text::is_forbidden_control) {
            return Err(invalid(
                ErrorCode::InvalidMessage,
                "message must not contain control characters other than tab and line breaks",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The message as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The message, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A JSONP callback name: a JavaScript identifier path of at most four dots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback(String);

impl Callback {
    /// Parses a callback name against
    /// `^[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,3}$`.
    ///
    /// # Errors
    /// `invalid_callback`; the detail never repeats the value.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let refuse = || {
            invalid(
                ErrorCode::InvalidCallback,
                "callback must be a JavaScript identifier path (letters, digits, '_', '$', up to 3 dots)",
            )
        };
        let parts: Vec<&str> = raw.split('.').collect();
        if parts.len() > 4 {
            return Err(refuse());
        }
        for part in parts {
            let mut bytes = part.bytes();
            let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b'$');
            let rest_ok = part.len() <= 64
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
            if !first_ok || !rest_ok {
                return Err(refuse());
            }
        }
        Ok(Self(raw.to_owned()))
    }

    /// The callback as text; safe to put into a script verbatim.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's idempotency id: 1–64 printable ASCII characters without white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentId(String);

impl IdempotentId {
    /// Longest idempotency id.
    pub const MAX_LEN: usize = 64;

    /// Parses an idempotency id.
    ///
    /// # Errors
    /// `invalid_parameter` when empty, too long or holding anything but visible ASCII.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_graphic())
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid(
                ErrorCode::InvalidParameter,
                "idempotent_id must be 1-64 visible ASCII characters",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A session token as the client holds it: `s_` and 48 hex digits. The service stores only its
/// [`SessionToken::tag`], never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// Mints a token from 24 random bytes.
    pub fn from_random(bytes: [u8; 24]) -> Self {
        Self(format!("s_{}", hex(&bytes)))
    }

    /// Parses a token's shape (not whether it exists).
    ///
    /// # Errors
    /// `invalid_session` when it is not `s_` and 48 lowercase hex digits.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if is_prefixed_hex(raw, "s_", 48) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid(
                ErrorCode::InvalidSession,
                "unknown or expired session",
            ))
        }
    }

    /// The token as text, for the client only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The public handle of the session: 24 hex digits of SHA-256 of the token. It names the
    /// session in NATS keys and tickets without revealing the token.
    pub fn tag(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        hex(&digest.as_ref()[..12])
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

/// An occupant id: `o_` and 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OccupantId(String);

impl OccupantId {
    /// Makes an id from 16 bytes (random, or derived for an idempotent enter).
    pub fn from_bytes(bytes: &[u8; 16]) -> Self {
        Self(format!("o_{}", hex(bytes)))
    }

    /// Parses an occupant id.
    ///
    /// # Errors
    /// `invalid_ticket` when it is not `o_` and 32 lowercase hex digits.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if is_prefixed_hex(raw, "o_", 32) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid(
                ErrorCode::InvalidTicket,
                "unknown or expired ticket",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-negative integer parameter (a counter, a limit, a timeout) as clients send it: 1 to
/// 20 ASCII digits that fit in 64 bits. No sign, no white space, no exponent, so each number
/// has one spelling that every role and proxy reads the same way.
pub fn parse_decimal(raw: &str) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Whether `raw` is `prefix` followed by exactly `digits` lowercase hex digits.
fn is_prefixed_hex(raw: &str, prefix: &str, digits: usize) -> bool {
    raw.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == digits && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

macro_rules! string_conversions {
    ($($ty:ident),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = Invalid;
            fn try_from(raw: String) -> Result<Self, Invalid> {
                Self::parse(&raw)
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
string_conversions!(RoomId, Nickname, OccupantId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_single_subject_tokens() {
        assert!(RoomId::parse("lobby_1-A").is_ok());
        assert!(RoomId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "a.b", "a*", ">", "a b", "ü", &"a".repeat(65)] {
            assert_eq!(
                RoomId::parse(bad).err().map(|e| e.code),
                Some(ErrorCode::InvalidRoom),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nickname_limits_count_characters_not_bytes() {
        assert_eq!(
            Nickname::parse("  alice ").map(|n| n.0),
            Ok("alice".to_owned())
        );
        assert!(Nickname::parse(&"é".repeat(32)).is_ok());
        assert!(Nickname::parse(&"é".repeat(33)).is_err());
        assert!(Nickname::parse("   ").is_err());
        assert!(Nickname::parse("a\u{7}b").is_err());
    }

    #[test]
    fn a_stored_nickname_stays_readable_under_stricter_rules() {
        let stored: Nickname = serde_json::from_str(r#""zero\u200bwidth""#).expect("readable");
        assert_eq!(stored.as_str(), "zero\u{200B}width");
        assert!(
            Nickname::parse(stored.as_str()).is_err(),
            "but no longer accepted as input"
        );
    }

    #[test]
    fn message_limits_count_unicode_scalar_values() {
        assert!(MessageText::parse(&"😀".repeat(2000)).is_ok());
        assert!(MessageText::parse(&"😀".repeat(2001)).is_err());
        assert!(MessageText::parse(" \n\t ").is_err());
        assert!(MessageText::parse("").is_err());
    }

    #[test]
    fn callbacks_follow_the_contract_pattern() {
        for good in ["cb", "$", "_a.b.c.d", "jQuery123_456", &"a".repeat(64)] {
            assert!(Callback::parse(good).is_ok(), "{good:?}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "1a",
            "a.b.c.d.e",
            "a..b",
            "a.",
            "alert(1)",
            "a-b",
            "a b",
            long.as_str(),
        ] {
            assert!(Callback::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_tokens_round_trip_and_hide_behind_a_tag() {
        let token = SessionToken::from_random([7; 24]);
        let parsed = SessionToken::parse(token.as_str()).expect("minted token parses");
        assert_eq!(parsed.tag(), token.tag());
        assert_eq!(token.tag().len(), 24);
        assert!(SessionToken::parse("s_xyz").is_err());
    }
}
