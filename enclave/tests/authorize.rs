//! The sentinel's Authorize step end to end: a key broker, the relay's egress proxy on a
//! Unix socket, and a simulated TEE. The key arrives only through the egress tunnel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[cfg(feature = "azure-vtpm")]
#[path = "support/paravisor.rs"]
mod paravisor;
#[cfg(feature = "azure-vtpm")]
#[path = "support/vtpm.rs"]
mod vtpm;
#[path = "support/world.rs"]
mod world;

use std::sync::Arc;

use trustbridge_enclave::attestation::{AttestationProvider, SimulatedPlatform, SimulatedProvider};
use trustbridge_enclave::authorize::{EgressLimits, KmsTarget, authorize};
use trustbridge_enclave::boot::StepError;
use trustbridge_enclave::keys::SentinelKeys;
use trustbridge_transport::Endpoint;
use trustbridge_verifier::simulated::NitroSpec;
use world::{ASSET, World, world};

fn provider(w: &World, spec: NitroSpec) -> Arc<dyn AttestationProvider> {
    Arc::new(SimulatedProvider::new(w.tee(), SimulatedPlatform::Nitro).with_nitro(spec))
}

/// The key release for `contract` with fresh sentinel keys, through `w`'s egress.
async fn release(
    w: &World,
    provider: Arc<dyn AttestationProvider>,
    contract: &str,
) -> Result<trustbridge_enclave::authorize::Released, StepError> {
    authorize(
        provider,
        &SentinelKeys::generate().unwrap(),
        &w.egress,
        &w.kms,
        &w.pins,
        &EgressLimits::default(),
        ASSET,
        contract,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_arrives_through_the_egress_tunnel() {
    let w = world(true).await;
    let released = release(&w, provider(&w, NitroSpec::default()), "c")
        .await
        .unwrap();
    assert_eq!(released.key.key_id(), w.key.key_id());
    assert_eq!(released.manifest_sha256, w.manifest_sha256);
    assert!(
        !format!("{released:?}").contains(&hex::encode(w.key.expose_secret())),
        "Debug shows no key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_is_fatal_with_the_broker_reason() {
    let w = world(true).await;
    let mut rogue = NitroSpec::default();
    rogue.pcrs.insert(0, vec![0x99; 48]);
    let err = release(&w, provider(&w, rogue), "c").await.unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "measurement_mismatch"),
        "{err}"
    );
    let err = release(&w, provider(&w, NitroSpec::default()), "nope")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "unknown_contract"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_refusal_is_fatal_and_an_unreachable_broker_is_transient() {
    let w = world(false).await;
    let err = release(&w, provider(&w, NitroSpec::default()), "c")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "egress_refused"),
        "{err}"
    );
    // The egress proxy allows 127.0.0.1:1, where nothing listens: retry later.
    let down = KmsTarget {
        host: "127.0.0.1".into(),
        port: 1,
    };
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate().unwrap(),
        &w.egress,
        &down,
        &w.pins,
        &EgressLimits::default(),
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StepError::Transient(_)), "{err}");
    // No relay at all: transient too.
    let nowhere = Endpoint::Unix(w.dir.path().join("missing.sock"));
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate().unwrap(),
        &nowhere,
        &w.kms,
        &w.pins,
        &EgressLimits::default(),
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StepError::Transient(_)), "{err}");
}

#[test]
fn kms_target_parsing() {
    assert_eq!(
        "http://kms.internal:7443".parse::<KmsTarget>().unwrap(),
        KmsTarget {
            host: "kms.internal".into(),
            port: 7443
        }
    );
    assert_eq!(
        "127.0.0.1:80/".parse::<KmsTarget>().unwrap(),
        KmsTarget {
            host: "127.0.0.1".into(),
            port: 80
        }
    );
    assert!("http://kms".parse::<KmsTarget>().is_err());
    assert!("http://a/b:1".parse::<KmsTarget>().is_err());
}

/// Azure vTPM evidence from the real attester (on swtpm) through the egress to the broker,
/// which verifies it (SNP chain, HCL binding, quote, PCRs) against the policy's Azure set.
#[cfg(feature = "azure-vtpm")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_vtpm_evidence_releases_the_key_and_a_changed_pcr_is_denied() {
    use trustbridge_enclave::attestation::azure_vtpm::certs::CertificateSource;
    use trustbridge_enclave::attestation::azure_vtpm::{AzureVtpm, AzureVtpmConfig};
    let Some(tpm) = vtpm::Swtpm::start() else {
        return;
    };
    let w = world(true).await;
    let ak = tpm.provision_ak();
    let tee = w.tee();
    tpm.provision_hcl_report(&vtpm::hcl_report(&tee, &ak, &[0; 64]));
    let paravisor = paravisor::Paravisor::start(&tpm, w.tee(), ak);
    let provider: Arc<dyn AttestationProvider> = Arc::new(AzureVtpm::new(AzureVtpmConfig {
        tcti: paravisor.tcti(),
        refresh_timeout: std::time::Duration::from_secs(1),
        certificates: CertificateSource::File(vtpm::pem_file(&tee, w.dir.path())),
    }));
    let released = release(&w, provider.clone(), "c").await.unwrap();
    assert_eq!(released.key.key_id(), w.key.key_id());

    // PCR 7 moves on (another boot component measured): the policy no longer matches.
    {
        use tss_esapi::interface_types::algorithm::HashingAlgorithm;
        let mut values = tss_esapi::structures::DigestValues::new();
        values.set(HashingAlgorithm::Sha256, vec![8u8; 32].try_into().unwrap());
        tpm.context()
            .pcr_extend(tss_esapi::handles::PcrHandle::Pcr7, values)
            .unwrap();
    }
    let err = release(&w, provider, "c").await.unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "measurement_mismatch"),
        "{err}"
    );
}
