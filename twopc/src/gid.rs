//! Global transaction ids.
//!
//! One checkout is one transaction `txid` (a UUID) run by one coordinator; each participant's
//! branch of it is prepared under its own gid:
//!
//! ```text
//! wdm_<coordinator>_<txid as 32 hex digits>_<participant>
//! ```
//!
//! The coordinator's identity is part of the gid so that several coordinators can share
//! participants and each recovers only its own branches. Names are `[a-z0-9-]`, so `_` is an
//! unambiguous separator, and the whole gid stays far below PostgreSQL's 200-byte limit.

use std::fmt;

use thiserror::Error;
use uuid::Uuid;

/// Every gid of this system starts with this.
pub const GID_PREFIX: &str = "wdm_";

/// Longest coordinator or participant name.
pub const MAX_NAME_LEN: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gid {
    coordinator: String,
    txid: Uuid,
    participant: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GidError {
    #[error("{what} name {name:?} must be 1 to {MAX_NAME_LEN} characters of [a-z0-9-]")]
    BadName { what: &'static str, name: String },
    #[error("{0:?} is not a gid of the form wdm_<coordinator>_<txid>_<participant>")]
    Malformed(String),
}

/// Checks a coordinator or participant name.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), GidError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(GidError::BadName {
            what,
            name: name.chars().take(64).collect(),
        })
    }
}

impl Gid {
    pub fn new(coordinator: &str, txid: Uuid, participant: &str) -> Result<Self, GidError> {
        validate_name("coordinator", coordinator)?;
        validate_name("participant", participant)?;
        Ok(Self {
            coordinator: coordinator.to_owned(),
            txid,
            participant: participant.to_owned(),
        })
    }

    /// Parses and validates a gid read from a request or from `pg_prepared_xacts`.
    pub fn parse(text: &str) -> Result<Self, GidError> {
        let malformed = || GidError::Malformed(text.chars().take(64).collect());
        let rest = text.strip_prefix(GID_PREFIX).ok_or_else(malformed)?;
        let mut parts = rest.split('_');
        let (Some(coordinator), Some(txid), Some(participant), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        if txid.len() != 32 || !txid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(malformed());
        }
        let txid = Uuid::try_parse(txid).map_err(|_| malformed())?;
        Self::new(coordinator, txid, participant).map_err(|_| malformed())
    }

    /// The prefix shared by every gid of one coordinator (for `LIKE` in listings).
    pub fn coordinator_prefix(coordinator: &str) -> String {
        format!("{GID_PREFIX}{coordinator}_")
    }

    pub fn coordinator(&self) -> &str {
        &self.coordinator
    }

    pub fn txid(&self) -> Uuid {
        self.txid
    }

    pub fn participant(&self) -> &str {
        &self.participant
    }

    /// The gid as a quoted SQL literal. Safe because every character was validated to be one
    /// of `[a-z0-9_-]`.
    pub(crate) fn sql_literal(&self) -> String {
        format!("'{self}'")
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{GID_PREFIX}{}_{}_{}",
            self.coordinator,
            self.txid.simple(),
            self.participant
        )
    }
}

impl std::str::FromStr for Gid {
    type Err = GidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gid_round_trips_through_its_text() {
        let txid = Uuid::new_v4();
        let gid = Gid::new("coord-1", txid, "stock").unwrap();
        let text = gid.to_string();
        assert!(text.starts_with("wdm_coord-1_"));
        assert!(text.len() < 200);
        assert_eq!(Gid::parse(&text).unwrap(), gid);
    }

    #[test]
    fn names_outside_the_alphabet_are_refused() {
        let txid = Uuid::new_v4();
        for bad in ["", "Coord", "a_b", "a'b", "a b", &"x".repeat(41)] {
            assert!(Gid::new(bad, txid, "stock").is_err(), "{bad:?}");
            assert!(Gid::new("c", txid, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_text_is_refused() {
        let good = Gid::new("c", Uuid::new_v4(), "p").unwrap().to_string();
        let injected = format!("{good}'; drop table x; --");
        for bad in [
            "",
            "wdm_",
            "xyz_c_00000000000000000000000000000000_p",
            "wdm_c_0000_p",
            "wdm_c_0000000000000000000000000000000g_p",
            "wdm_c_00000000000000000000000000000000_p_extra",
            "wdm_c_00000000-0000-0000-0000-000000000000_p",
            injected.as_str(),
        ] {
            assert!(Gid::parse(bad).is_err(), "{bad:?}");
        }
    }
}
