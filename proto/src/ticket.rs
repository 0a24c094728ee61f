//! Room tickets: proof that a session entered a room as a given occupant.
//!
//! A ticket is `<room>.<occupant id>.<session tag>.<p|a>.<signature>`, signed with HMAC-SHA256
//! under the deployment's secret, so a comet replica checks one without a network call. Whether
//! the occupant is still in the room is a separate question, answered from the occupants bucket.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

use crate::error::ErrorCode;
use crate::values::{Invalid, OccupantId, RoomId};

/// What a valid ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The room entered.
    pub room: RoomId,
    /// The occupant the session became.
    pub occupant_id: OccupantId,
    /// The tag of the session that entered.
    pub session_tag: String,
    /// An anonymous observer may observe but not speak.
    pub anonymous: bool,
}

/// The secret that signs tickets, and the previous one while a rotation is under way.
///
/// Tickets are signed with the current secret only; one signed with the previous secret still
/// verifies, so an operator can roll a new secret out to every replica, wait as long as the
/// tickets in use should live, and then drop the previous one.
#[derive(Clone)]
pub struct TicketKey {
    current: hmac::Key,
    previous: Option<hmac::Key>,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// A key from secret bytes (the `--secret` value).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            current: hmac::Key::new(hmac::HMAC_SHA256, secret),
            previous: None,
        }
    }

    /// Also accepts tickets signed with `secret` (the `--previous-secret` value).
    pub fn with_previous(mut self, secret: &[u8]) -> Self {
        self.previous = Some(hmac::Key::new(hmac::HMAC_SHA256, secret));
        self
    }

    /// Signs a ticket into its text form.
    pub fn sign(&self, ticket: &Ticket) -> String {
        let body = body(ticket);
        let tag = hmac::sign(&self.current, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks a ticket's form and signature.
    ///
    /// # Errors
    /// `invalid_ticket` when malformed or not signed with this key.
    pub fn verify(&self, text: &str) -> Result<Ticket, Invalid> {
        let refuse = || Invalid {
            code: ErrorCode::InvalidTicket,
            detail: "unknown or expired ticket",
        };
        let (body, signature) = text.rsplit_once('.').ok_or_else(refuse)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| refuse())?;
        let signed_by = |key: &hmac::Key| hmac::verify(key, body.as_bytes(), &signature).is_ok();
        if !signed_by(&self.current) && !self.previous.as_ref().is_some_and(signed_by) {
            return Err(refuse());
        }
        let mut parts = body.split('.');
        let (Some(room), Some(occupant), Some(tag), Some(kind), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(refuse());
        };
        Ok(Ticket {
            room: RoomId::parse(room).map_err(|_| refuse())?,
            occupant_id: OccupantId::parse(occupant).map_err(|_| refuse())?,
            session_tag: tag.to_owned(),
            anonymous: match kind {
                "a" => true,
                "p" => false,
                _ => return Err(refuse()),
            },
        })
    }
}

fn body(ticket: &Ticket) -> String {
    let kind = if ticket.anonymous { "a" } else { "p" };
    format!(
        "{}.{}.{}.{kind}",
        ticket.room.as_str(),
        ticket.occupant_id.as_str(),
        ticket.session_tag
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            room: RoomId::parse("lobby").expect("valid"),
            occupant_id: OccupantId::from_bytes(&[1; 16]),
            session_tag: "abcdef".into(),
            anonymous: false,
        }
    }

    #[test]
    fn signed_ticket_verifies_and_round_trips() {
        let key = TicketKey::new(b"secret");
        let text = key.sign(&sample());
        assert_eq!(key.verify(&text), Ok(sample()));
    }

    #[test]
    fn tampered_or_foreign_tickets_are_refused() {
        let key = TicketKey::new(b"secret");
        let text = key.sign(&sample());
        assert!(TicketKey::new(b"other").verify(&text).is_err());
        let anonymous_made_participant = text.replacen(".p.", ".a.", 1);
        assert!(key.verify(&anonymous_made_participant).is_err());
        assert!(key.verify("garbage").is_err());
        assert!(key.verify("").is_err());
    }

    #[test]
    fn a_previous_secret_verifies_during_a_rotation() {
        let old = TicketKey::new(b"old-secret");
        let issued = old.sign(&sample());
        let rotated = TicketKey::new(b"new-secret").with_previous(b"old-secret");
        assert_eq!(rotated.verify(&issued), Ok(sample()));
        assert!(
            old.verify(&rotated.sign(&sample())).is_err(),
            "new tickets use the new secret"
        );
        let finished = TicketKey::new(b"new-secret");
        assert!(
            finished.verify(&issued).is_err(),
            "dropping the previous secret ends it"
        );
    }
}
