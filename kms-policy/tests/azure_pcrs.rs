//! Azure evidence at the broker: only the PCRs the TPM quote selects count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{ASSET, Fixture};
use trustbridge_kms::client::{ClientError, ReleaseClientError};
use trustbridge_verifier::simulated::{AttestationKeyPair, AzureSpec};

/// A PCR the TPM quote does not select is covered by no signature: evidence that lists
/// one (here the policy's PCR 7 value beside a quote of PCR 0 only) is refused, and a
/// policy PCR outside the selection is a measurement mismatch that names it.
#[test]
fn azure_pcrs_outside_the_quote_selection_release_nothing() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    let ak = AttestationKeyPair::generate().unwrap();
    let c = &r.client;
    let released = c
        .release_with_evidence(
            ASSET,
            "c-policy",
            [1; 32],
            f.azure(&ak, AzureSpec::default()),
        )
        .unwrap();
    assert_eq!(
        released.key.key_id(),
        f.key.key_id(),
        "the genuine full quote releases"
    );

    // The genuine AK quotes PCR 0 only; the relay lists PCR 7 = the policy's value.
    let forged = AzureSpec {
        selection: vec![0],
        ..AzureSpec::default()
    };
    match c.release_with_evidence(ASSET, "c-policy", [1; 32], f.azure(&ak, forged)) {
        Err(ClientError::Release(ReleaseClientError::Denied { code, detail })) => {
            assert_eq!(code.as_str(), "evidence_invalid", "{detail}");
            assert!(detail.contains("not covered"), "{detail}");
        }
        other => panic!("uncovered PCR values were accepted: {other:?}"),
    }

    // An honest quote of PCR 0 alone: the policy's PCR 7 is not covered.
    let partial = AzureSpec {
        selection: vec![0],
        pcrs: vec![[0; 32]],
        ..AzureSpec::default()
    };
    match c.release_with_evidence(ASSET, "c-policy", [1; 32], f.azure(&ak, partial)) {
        Err(ClientError::Release(ReleaseClientError::Denied { code, detail })) => {
            assert_eq!(code.as_str(), "measurement_mismatch", "{detail}");
            assert!(detail.contains("tpm_pcr7"), "{detail}");
        }
        other => panic!("a policy PCR outside the quote was accepted: {other:?}"),
    }
}
