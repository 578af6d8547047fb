//! Strict parsing of path parameters.
//!
//! The public API carries every argument as a path segment. Anything a client can get wrong
//! (not a number, negative, zero where it means nothing, larger than `i64`, empty, absurdly
//! long) is refused here with a message that says which parameter and why, before any
//! database is touched.

use thiserror::Error;

/// Longest id accepted. Generated ids are UUIDs (36 bytes) and batch ids are decimal numbers;
/// the bound keeps hostile input out of indexes and logs.
pub const MAX_ID_LEN: usize = 128;

/// Largest row count one `batch_init` may create.
pub const MAX_BATCH: i64 = 1_000_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("{name} must not be empty")]
    Empty { name: &'static str },
    #[error("{name} is longer than {MAX_ID_LEN} bytes")]
    TooLong { name: &'static str },
    #[error("{name} contains a control character")]
    Control { name: &'static str },
    #[error("{name} must be an integer, got {value:?}")]
    NotInteger { name: &'static str, value: String },
    #[error("{name} must be at least {min}, got {value}")]
    TooSmall {
        name: &'static str,
        min: i64,
        value: i64,
    },
    #[error("{name} must be at most {max}, got {value}")]
    TooLarge {
        name: &'static str,
        max: i64,
        value: i64,
    },
}

/// An opaque id: 1 to [`MAX_ID_LEN`] bytes, no control characters.
pub fn parse_id(name: &'static str, raw: &str) -> Result<String, ParamError> {
    if raw.is_empty() {
        return Err(ParamError::Empty { name });
    }
    if raw.len() > MAX_ID_LEN {
        return Err(ParamError::TooLong { name });
    }
    if raw.chars().any(char::is_control) {
        return Err(ParamError::Control { name });
    }
    Ok(raw.to_owned())
}

/// An `i64` of at least `min`. Leading `+`, spaces and fractions are refused, as is anything
/// that does not fit in 64 bits.
pub fn parse_amount(name: &'static str, raw: &str, min: i64) -> Result<i64, ParamError> {
    if raw.is_empty() {
        return Err(ParamError::Empty { name });
    }
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParamError::NotInteger {
            name,
            value: truncate(raw),
        });
    }
    let value: i64 = raw.parse().map_err(|_| ParamError::TooLarge {
        name,
        max: i64::MAX,
        value: if raw.starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        },
    })?;
    if value < min {
        return Err(ParamError::TooSmall { name, min, value });
    }
    Ok(value)
}

/// A row count for `batch_init`: 1 to [`MAX_BATCH`].
pub fn parse_count(name: &'static str, raw: &str) -> Result<i64, ParamError> {
    let value = parse_amount(name, raw, 1)?;
    if value > MAX_BATCH {
        return Err(ParamError::TooLarge {
            name,
            max: MAX_BATCH,
            value,
        });
    }
    Ok(value)
}

fn truncate(raw: &str) -> String {
    raw.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_accept_plain_integers_at_or_above_the_minimum() {
        assert_eq!(parse_amount("amount", "0", 0), Ok(0));
        assert_eq!(parse_amount("amount", "42", 1), Ok(42));
        assert_eq!(
            parse_amount("amount", &i64::MAX.to_string(), 1),
            Ok(i64::MAX)
        );
    }

    #[test]
    fn amounts_refuse_what_is_not_a_plain_integer() {
        for raw in ["", "abc", "1.5", "+3", " 3", "3 ", "-", "0x10", "1e3"] {
            assert!(parse_amount("amount", raw, 0).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn amounts_refuse_negative_zero_and_overflow() {
        assert!(matches!(
            parse_amount("amount", "-5", 0),
            Err(ParamError::TooSmall { .. })
        ));
        assert!(matches!(
            parse_amount("amount", "0", 1),
            Err(ParamError::TooSmall { .. })
        ));
        assert!(matches!(
            parse_amount("amount", "9223372036854775808", 0),
            Err(ParamError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_amount("amount", "-9223372036854775809", 0),
            Err(ParamError::TooLarge { .. })
        ));
    }

    #[test]
    fn ids_refuse_empty_long_and_control_characters() {
        assert_eq!(parse_id("id", "0"), Ok("0".to_owned()));
        assert!(parse_id("id", "").is_err());
        assert!(parse_id("id", &"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(parse_id("id", "a\nb").is_err());
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!(parse_count("n", "100000"), Ok(100_000));
        assert!(parse_count("n", "0").is_err());
        assert!(parse_count("n", &(MAX_BATCH + 1).to_string()).is_err());
    }
}
