//! Logging set-up shared by the TrustBridge daemons (`tb-kms`, `tb-relay`, `tb-sentinel`).
//!
//! Each daemon logs `tracing` events on stderr, as human-readable text or as one JSON object
//! per line for log collectors (`--log-format json`). `RUST_LOG` selects what is logged, in
//! the `tracing_subscriber::EnvFilter` syntax; without it the level is `info`. A `RUST_LOG`
//! that does not parse is an error rather than a silently different level.
//!
//! Each daemon also stops on the same signals, SIGINT or SIGTERM ([`shutdown_signal`]), and
//! drains the same way: requests in flight get a bounded time to finish, a second signal
//! stops at once ([`serve_until_stopped`]).
#![forbid(unsafe_code)]

mod shutdown;

pub use shutdown::{
    Cut, DEFAULT_DRAIN, DEFAULT_DRAIN_SECS, StopSignals, StopTaking, serve_until_stopped,
    shutdown_signal, stop_signals,
};
use tracing_subscriber::EnvFilter;

/// The environment variable that selects what is logged.
pub const FILTER_ENV: &str = "RUST_LOG";

/// The filter used when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info";

/// How a daemon writes its log lines on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` holds a filter that does not parse.
    #[error("{FILTER_ENV}={value:?} is not a valid log filter: {reason}")]
    Filter {
        /// The filter as given.
        value: String,
        /// What the parser said.
        reason: String,
    },
    /// A global subscriber was installed before.
    #[error("a logger is already installed: {0}")]
    AlreadyInstalled(String),
}

/// The filter from `value` (the contents of `RUST_LOG`), or [`DEFAULT_FILTER`] when unset.
pub fn filter(value: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let value = value.unwrap_or(DEFAULT_FILTER);
    EnvFilter::try_new(value).map_err(|e| LoggingError::Filter {
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// Installs the process-wide subscriber: stderr, in `format`, filtered by `RUST_LOG`.
pub fn init(format: LogFormat) -> Result<(), LoggingError> {
    let value = std::env::var(FILTER_ENV).ok();
    install(format, filter(value.as_deref())?)
}

fn install(format: LogFormat, filter: EnvFilter) -> Result<(), LoggingError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| LoggingError::AlreadyInstalled(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;

    #[test]
    fn filters_parse_or_fail_with_the_variable_named() {
        assert_eq!(filter(None).unwrap().to_string(), DEFAULT_FILTER);
        assert_eq!(
            filter(Some("warn,tb_sentinel=debug")).unwrap().to_string(),
            "tb_sentinel=debug,warn"
        );
        let err = filter(Some("info,=[")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"RUST_LOG="info,=[" is not a valid log filter: "#),
            "{err}"
        );
    }

    #[test]
    fn formats_read_from_config_and_command_line() {
        use clap::ValueEnum;
        use serde::de::{Deserialize, IntoDeserializer, value::Error};
        let from_config =
            |s: &str| LogFormat::deserialize(IntoDeserializer::<Error>::into_deserializer(s));
        assert_eq!(from_config("json").unwrap(), LogFormat::Json);
        assert!(from_config("Json").is_err());
        assert_eq!(LogFormat::from_str("text", false).unwrap(), LogFormat::Text);
        assert!(LogFormat::from_str("xml", false).is_err());
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }

    #[test]
    fn a_second_install_is_an_error_not_a_panic() {
        // The only test in this process that installs a subscriber.
        install(LogFormat::Text, filter(None).unwrap()).unwrap();
        assert!(matches!(
            install(LogFormat::Json, filter(None).unwrap()),
            Err(LoggingError::AlreadyInstalled(_))
        ));
    }
}
