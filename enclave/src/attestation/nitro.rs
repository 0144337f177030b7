//! AWS Nitro Enclaves: attestation documents from the Nitro Secure Module (`/dev/nsm`).

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver::{nsm_exit, nsm_init, nsm_process_request};
use serde_bytes::ByteBuf;
use trustbridge_protocol::Platform;
use trustbridge_protocol::binding::EvidenceBinding;

use super::{AttestError, AttestationProvider, Evidence};

/// The NSM device inside a Nitro enclave.
pub const NSM_DEVICE: &str = "/dev/nsm";

/// Evidence from the NSM: `user_data` = binding digest, `nonce` = the broker's nonce.
#[derive(Debug, Default)]
pub struct NitroNsm;

impl AttestationProvider for NitroNsm {
    fn name(&self) -> &'static str {
        "nitro-nsm"
    }

    fn simulated(&self) -> bool {
        false
    }

    fn evidence(&self, binding: &EvidenceBinding) -> Result<Evidence, AttestError> {
        let digest = binding.digest()?;
        let err = |detail: String| AttestError::Device {
            provider: "nitro-nsm",
            detail,
        };
        let fd = nsm_init();
        if fd < 0 {
            return Err(err(format!("cannot open {NSM_DEVICE}")));
        }
        let response = nsm_process_request(
            fd,
            Request::Attestation {
                user_data: Some(ByteBuf::from(digest.to_vec())),
                nonce: Some(ByteBuf::from(binding.nonce.clone())),
                public_key: None,
            },
        );
        nsm_exit(fd);
        match response {
            Response::Attestation { document } => Ok(Evidence {
                platform: Platform::Nitro,
                bytes: document,
                certificates: vec![],
            }),
            Response::Error(code) => Err(err(format!("NSM error {code:?}"))),
            other => Err(err(format!("unexpected NSM response {other:?}"))),
        }
    }
}
