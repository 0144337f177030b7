//! Where the relay gets a sealed bundle from: a URL naming an object-store prefix.
//!
//! | URL | store | configuration |
//! |---|---|---|
//! | `s3://BUCKET/PREFIX` | Amazon S3 (and compatibles) | `AWS_*` environment variables, then `--bundle-option` |
//! | `az://CONTAINER/PREFIX` (also `azure://`, `abfs://`, `https://ACCOUNT.blob.core.windows.net/...`) | Azure Blob Storage | `AZURE_*` environment variables, then `--bundle-option` |
//! | `https://HOST/PREFIX`, `http://HOST/PREFIX` | any HTTP server with range requests | `--bundle-option` (`allow_http` is implied for `http://`) |
//!
//! `--bundle-option KEY=VALUE` takes the store's configuration keys as `object_store`
//! names them (`endpoint`, `region`, `access_key_id`, `account_name`, `allow_http`, ...).
//! Requests are retried by the store's client (capped exponential back-off).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as StorePath;

/// A bundle location that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Not a URL, or a scheme no store handles.
    #[error("bundle source {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--bundle-option` the store does not know, or without `=`. Carries the key only:
    /// values are often credentials.
    #[error("bundle option {0:?}: expected KEY=VALUE with a key the store knows")]
    Option(String),
    /// The store refused its configuration.
    #[error("bundle source: {0}")]
    Store(#[from] object_store::Error),
}

/// A bundle in an object store: the store and the prefix under which `manifest.cose` and
/// the `*.sealed` files sit.
#[derive(Debug, Clone)]
pub struct BundleSource {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The bundle's prefix in the store.
    pub prefix: StorePath,
    /// The URL without any user information, for logs and errors.
    pub url: String,
}

impl BundleSource {
    /// Opens `url` with extra store `options` (`KEY=VALUE`).
    pub fn open(url: &str, options: &[String]) -> Result<Self, SourceError> {
        let bad = |reason: &str| SourceError::Url {
            url: redacted(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL"))?;
        let pairs = options
            .iter()
            .map(|o| {
                o.split_once('=')
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .ok_or_else(|| SourceError::Option("(no '=')".to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Applies the KEY=VALUE pairs through the builder's `with_config`.
        macro_rules! configure {
            ($builder:expr, $pairs:expr) => {{
                let mut b = $builder;
                for (k, v) in $pairs {
                    b = b.with_config(k.parse().map_err(|_| SourceError::Option(k))?, v);
                }
                b
            }};
        }
        let azure_https = scheme == "https" && rest.contains(".blob.core.windows.net");
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match scheme {
            "s3" | "s3a" => {
                let b = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                (
                    Arc::new(configure!(b, pairs).build()?),
                    after_first_segment(rest),
                )
            }
            "az" | "azure" | "abfs" | "abfss" | "adl" => {
                let b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url);
                (
                    Arc::new(configure!(b, pairs).build()?),
                    after_first_segment(rest),
                )
            }
            "https" if azure_https => {
                let b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url);
                // https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX
                let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
                (
                    Arc::new(configure!(b, pairs).build()?),
                    after_first_segment(path),
                )
            }
            "http" | "https" => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let client = object_store::ClientOptions::new().with_allow_http(scheme == "http");
                let client = configure!(client, pairs);
                let store = object_store::http::HttpBuilder::new()
                    .with_url(format!("{scheme}://{host}"))
                    .with_client_options(client)
                    .build()?;
                (Arc::new(store), path.to_owned())
            }
            _ => return Err(bad("use s3://, az://, https:// or http://")),
        };
        let prefix = StorePath::parse(prefix.trim_matches('/'))
            .map_err(|e| bad(&format!("invalid prefix: {e}")))?;
        Ok(Self {
            store,
            prefix,
            url: redacted(url),
        })
    }

    /// The store path of bundle file `name` (`manifest.cose`, `weights.bin.sealed`).
    pub fn path(&self, name: &str) -> StorePath {
        let mut path = self.prefix.clone();
        for part in name.split('/') {
            path = path.child(part);
        }
        path
    }
}

/// `url` with any `user:password@` removed.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let sep = if rest.contains('/') { "/" } else { "" };
            format!("{scheme}://{host}{sep}{path}")
        }
        None => url.to_owned(),
    }
}

/// `BUCKET/PREFIX` -> `PREFIX`.
fn after_first_segment(rest: &str) -> String {
    rest.split_once('/')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_map_to_stores_and_prefixes() {
        let s3 = BundleSource::open(
            "s3://models/acme/llm-v1/",
            &[
                "region=eu-west-1".into(),
                "access_key_id=AK".into(),
                "secret_access_key=S".into(),
            ],
        )
        .unwrap();
        assert_eq!(s3.prefix.as_ref(), "acme/llm-v1");
        assert_eq!(
            s3.path("weights/a b.sealed").as_ref(),
            "acme/llm-v1/weights/a b.sealed"
        );
        let az = BundleSource::open(
            "az://bundles/llm",
            &["account_name=acct".into(), "access_key=AAAA".into()],
        )
        .unwrap();
        assert_eq!(az.prefix.as_ref(), "llm");
        let http = BundleSource::open("http://mirror.example/b/llm", &[]).unwrap();
        assert_eq!(http.prefix.as_ref(), "b/llm");
        for bad in ["/local/dir", "ftp://x/y", "nonsense"] {
            assert!(BundleSource::open(bad, &[]).is_err(), "{bad}");
        }
        assert!(matches!(
            BundleSource::open("s3://b/p", &["no-equals".into()]),
            Err(SourceError::Option(_))
        ));
        // The error names the key, never the value (often a credential).
        let err = BundleSource::open("s3://b/p", &["secret_acess_key=hunter2".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret_acess_key") && !err.contains("hunter2"),
            "{err}"
        );
        let err = BundleSource::open("s3://b/p", &["hunter2".into()])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let with_user = BundleSource::open("https://me:hunter2@mirror.example/b", &[]).unwrap();
        assert_eq!(with_user.url, "https://mirror.example/b");
    }
}
