//! Times as TrustBridge reads them from people and messages: strict RFC 3339.
//!
//! `full-date "T" full-time` with a mandatory offset (`Z` or `±hh:mm`), which is honoured:
//! `2026-12-31T23:59:59+14:00` is 09:59:59 UTC. Fractions of a second are allowed and
//! ignored (times are whole Unix seconds); a space in place of the `T` is accepted, as RFC
//! 3339 §5.6 permits. Anything else (no offset, a day the month does not have, trailing
//! text) is an error, never a guess.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A string that is not a strict RFC 3339 time (or lies before 1970).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z: {reason}")]
pub struct BadTime {
    /// The text (shortened).
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses a strict RFC 3339 time into Unix seconds (fractions dropped).
pub fn parse_unix_seconds(text: &str) -> Result<u64, BadTime> {
    let bad = |reason: String| BadTime {
        text: text.chars().take(64).collect(),
        reason,
    };
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| bad(e.to_string()))?;
    u64::try_from(t.unix_timestamp()).map_err(|_| bad("before 1970".into()))
}

/// Parses a strict RFC 3339 time.
pub fn parse_system_time(text: &str) -> Result<SystemTime, BadTime> {
    parse_unix_seconds(text).map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_honoured_and_fractions_dropped() {
        let utc = parse_unix_seconds("2026-12-31T09:59:59Z").unwrap();
        assert_eq!(utc, 1_798_711_199);
        assert_eq!(parse_unix_seconds("2026-12-31T23:59:59.0+14:00"), Ok(utc));
        assert_eq!(parse_unix_seconds("2026-12-30T21:59:59-12:00"), Ok(utc));
        assert_eq!(
            parse_unix_seconds("2026-12-31T09:59:59.999999999Z"),
            Ok(utc)
        );
        assert_eq!(parse_unix_seconds("2026-12-31t09:59:59z"), Ok(utc));
        assert_eq!(parse_unix_seconds("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_unix_seconds("2026-12-31 09:59:59Z"), Ok(utc));
    }

    #[test]
    fn anything_else_is_an_error() {
        for bad in [
            "",
            "2026-12-31",
            "2026-12-31T23:59:59",
            "2026-12-31T23:59:59+1400",
            "2026-12-31T23:59:59+14",
            "2026-02-30T00:00:00Z",
            "2026-12-31T24:00:00Z",
            "2026-12-31T23:60:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-31T23:59:59Z trailing",
            "1969-12-31T23:59:59Z",
            "1798761599",
            "next tuesday",
        ] {
            assert!(parse_unix_seconds(bad).is_err(), "{bad:?} was accepted");
        }
        let e = parse_unix_seconds("2026-12-31").unwrap_err().to_string();
        assert!(e.contains("2026-01-01T00:00:00Z"), "{e}");
    }
}
