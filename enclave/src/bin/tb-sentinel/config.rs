//! Options from the command line, the environment and a TOML file, merged.
//!
//! Precedence: command line, then `TB_*` variables (both through clap), then the
//! `--config` file, then the defaults. The file uses the long option names with
//! underscores (`download_concurrency = 8`); an unknown key is an error, so a typo cannot
//! silently leave a default in place.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::Path;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use serde::Deserialize;
use trustbridge_enclave::authorize::{BrokerKey, KmsTarget};
use trustbridge_enclave::engine::runtime::RuntimeUrl;
use trustbridge_enclave::output::ModelOutput;
use trustbridge_protocol::bundle::ProviderPublicKey;
use trustbridge_transport::Endpoint;

use crate::{Args, EngineKind, SimPlatform, Tee};
use trustbridge_logging::LogFormat;

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, deserialize_with = "parsed")]
    listen: Option<Endpoint>,
    #[serde(default, deserialize_with = "parsed")]
    relay_egress: Option<Endpoint>,
    #[serde(default, deserialize_with = "parsed")]
    relay_bundles: Option<Endpoint>,
    #[serde(default, deserialize_with = "parsed")]
    kms_url: Option<KmsTarget>,
    #[serde(default, deserialize_with = "parsed")]
    kms_key: Option<BrokerKey>,
    #[serde(default, deserialize_with = "parsed")]
    provider_key: Option<ProviderPublicKey>,
    asset_id: Option<String>,
    contract_id: Option<String>,
    tee: Option<Tee>,
    tpm_tcti: Option<String>,
    azure_certs: Option<std::path::PathBuf>,
    sim_ca: Option<std::path::PathBuf>,
    sim_platform: Option<SimPlatform>,
    download_concurrency: Option<NonZeroUsize>,
    download_chunk_bytes: Option<NonZeroU64>,
    retry_initial_ms: Option<u64>,
    retry_attempts: Option<u32>,
    reauth_interval_secs: Option<u64>,
    reauth_grace_secs: Option<u64>,
    allow_swap: Option<bool>,
    ready_signal: Option<std::path::PathBuf>,
    #[serde(default, deserialize_with = "parsed")]
    model_output: Option<ModelOutput>,
    engine: Option<EngineKind>,
    engine_workers: Option<NonZeroUsize>,
    engine_queue: Option<usize>,
    #[serde(default, deserialize_with = "parsed")]
    runtime_url: Option<RuntimeUrl>,
    max_concurrent_requests: Option<NonZeroUsize>,
    request_timeout_secs: Option<NonZeroU64>,
    drain_secs: Option<NonZeroU64>,
    attestation_max_age_secs: Option<NonZeroU64>,
    attestation_nonce_per_minute: Option<u32>,
    log_format: Option<LogFormat>,
}

/// A string field parsed with the type's `FromStr`, as on the command line.
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    Option::<String>::deserialize(d)?
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// Whether option `id` was left to its default (not on the command line or in the
/// environment).
fn unset(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        None | Some(ValueSource::DefaultValue)
    )
}

/// Parses the command line and environment, then fills what they left unset from the
/// `--config` file.
pub(crate) fn load() -> Result<Args> {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches)?;
    if let Some(path) = args.config.clone() {
        let file = read(&path)?;
        merge(&mut args, &matches, file);
    }
    Ok(args)
}

fn read(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn merge(args: &mut Args, matches: &ArgMatches, file: FileConfig) {
    macro_rules! take {
        ($($field:ident),* $(,)?) => {$(
            if let Some(value) = file.$field {
                if unset(matches, stringify!($field)) {
                    args.$field = value.into();
                }
            }
        )*};
    }
    take!(
        listen,
        relay_egress,
        relay_bundles,
        kms_url,
        kms_key,
        provider_key,
        asset_id,
        contract_id,
        tee,
        tpm_tcti,
        azure_certs,
        sim_ca,
        sim_platform,
        download_concurrency,
        download_chunk_bytes,
        retry_initial_ms,
        retry_attempts,
        reauth_interval_secs,
        reauth_grace_secs,
        allow_swap,
        ready_signal,
        model_output,
        engine,
        engine_workers,
        engine_queue,
        runtime_url,
        max_concurrent_requests,
        request_timeout_secs,
        drain_secs,
        attestation_max_age_secs,
        attestation_nonce_per_minute,
        log_format,
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(argv: &[&str], toml_text: &str) -> Args {
        let matches = Args::command().try_get_matches_from(argv).unwrap();
        let mut args = Args::from_arg_matches(&matches).unwrap();
        merge(&mut args, &matches, toml::from_str(toml_text).unwrap());
        args
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_the_file_over_defaults() {
        let args = parse(
            &["tb-sentinel", "--download-concurrency", "3"],
            r#"
                kms_url = "http://kms.example:8080"
                kms_key = "1111111111111111111111111111111111111111111111111111111111111111"
                asset_id = "acme/llm@v1"
                contract_id = "c-1"
                download_concurrency = 16
                download_chunk_bytes = 1048576
                model_output = "tmpfs:/dev/shm/model"
                tee = "simulated"
                listen = "unix:///run/tb.sock"
                tpm_tcti = "swtpm:host=127.0.0.1,port=2321"
                azure_certs = "/run/trustbridge/thim.json"
                drain_secs = 120
            "#,
        );
        assert_eq!(args.drain_secs.get(), 120);
        assert_eq!(args.tpm_tcti, "swtpm:host=127.0.0.1,port=2321");
        assert_eq!(
            args.azure_certs.as_deref(),
            Some(std::path::Path::new("/run/trustbridge/thim.json"))
        );
        assert_eq!(args.download_concurrency.get(), 3);
        assert_eq!(args.download_chunk_bytes.get(), 1 << 20);
        assert_eq!(args.asset_id.as_deref(), Some("acme/llm@v1"));
        assert_eq!(
            args.model_output,
            ModelOutput::Tmpfs("/dev/shm/model".into())
        );
        assert!(matches!(args.tee, Tee::Simulated));
        assert_eq!(args.listen.to_string(), "unix:///run/tb.sock");
        assert_eq!(args.retry_attempts, 10, "untouched default");
        assert_eq!(args.kms_key.unwrap().as_bytes(), &[0x11; 32]);
        assert!(args.provider_key.is_none());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<FileConfig>("download_concurency = 3").is_err());
        assert!(toml::from_str::<FileConfig>("model_output = \"disk:/x\"").is_err());
        assert!(toml::from_str::<FileConfig>("listen = \"ftp://x\"").is_err());
        assert!(toml::from_str::<FileConfig>("tee = \"sgx\"").is_err());
        assert!(toml::from_str::<FileConfig>("sim_platform = \"spn\"").is_err());
        assert!(toml::from_str::<FileConfig>("kms_key = \"abcd\"").is_err());
    }
}
