//! The gateway's key and the client's encapsulation, on the `ohttp` crate.

use ohttp::hpke::{Aead, Kdf, Kem};

pub use ohttp::{ClientResponse, PreparedRequest, ServerResponse};
use ohttp::{KeyConfig, SymmetricSuite};

use super::KEY_ID;

/// An Oblivious HTTP operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OhttpError {
    /// The `ohttp` crate refused: a malformed or unauthentic message, an unsupported
    /// configuration, or a failed decryption.
    #[error("oblivious HTTP: {0}")]
    Ohttp(#[from] ohttp::Error),
    /// A key configuration list that offers nothing this client can use.
    #[error("the gateway's key configuration offers no X25519 / HKDF-SHA256 / AES-128-GCM key")]
    NoUsableKey,
}

fn suites() -> Vec<SymmetricSuite> {
    vec![SymmetricSuite::new(Kdf::HkdfSha256, Aead::Aes128Gcm)]
}

/// The gateway's private key and its configuration.
pub struct GatewayKey {
    server: ohttp::Server,
    keys: Vec<u8>,
}

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GatewayKey({})",
            hex::encode(super::ohttp_keys_sha256(&self.keys))
        )
    }
}

impl GatewayKey {
    /// The key derived from 32 secret random bytes (RFC 9180 DeriveKeyPair).
    pub fn derive(seed: &[u8; 32]) -> Result<Self, OhttpError> {
        let config = KeyConfig::derive(KEY_ID, Kem::X25519Sha256, suites(), seed)?;
        let keys = KeyConfig::encode_list(std::slice::from_ref(&config))?;
        Ok(Self {
            server: ohttp::Server::new(config)?,
            keys,
        })
    }

    /// The `application/ohttp-keys` body.
    pub fn keys(&self) -> &[u8] {
        &self.keys
    }

    /// The `ohttp` server, for chunked requests (`Server::decapsulate_stream`).
    pub fn server(&self) -> &ohttp::Server {
        &self.server
    }

    /// Decapsulates a request: its plaintext and what encapsulates the response.
    pub fn decapsulate(&self, request: &[u8]) -> Result<(Vec<u8>, ServerResponse), OhttpError> {
        Ok(self.server.decapsulate(request)?)
    }
}

/// Encapsulates `request` to the first usable key of an `application/ohttp-keys` list.
pub fn encapsulate(keys: &[u8], request: &[u8]) -> Result<(Vec<u8>, ClientResponse), OhttpError> {
    Ok(prepare(keys)?.encapsulate(request)?)
}

/// The HPKE context of one request to the first usable key of an `application/ohttp-keys`
/// list, set up before the request is known: a fresh ephemeral X25519 key and its
/// Diffie-Hellman with the gateway's key, the costly part of an encapsulation.
/// [`PreparedRequest::encapsulate`] then seals the one request it is for.
pub fn prepare(keys: &[u8]) -> Result<PreparedRequest, OhttpError> {
    Ok(client_for(keys)?.prepare()?)
}

/// A client request (complete or chunked) to the first usable key of an
/// `application/ohttp-keys` list.
pub fn client_for(keys: &[u8]) -> Result<ohttp::ClientRequest, OhttpError> {
    // The crate's list reader would take the last configuration, and its client panics
    // on a configuration without a suite it supports: pick a usable one here.
    // (decode_list keeps only configurations of a supported KEM, and `select` succeeds only
    // for a suite the configuration offers.)
    let configs = KeyConfig::decode_list(keys)?;
    let mut config = configs
        .into_iter()
        .find(|c| c.select(suites()[0]).is_ok())
        .ok_or(OhttpError::NoUsableKey)?;
    Ok(ohttp::ClientRequest::from_config(&mut config)?)
}
