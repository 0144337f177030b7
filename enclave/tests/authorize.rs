//! The sentinel's Authorize step end to end: a key broker, the relay's egress proxy on a
//! Unix socket, and a simulated TEE. The key arrives only through the egress tunnel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[cfg(feature = "azure-vtpm")]
#[path = "support/vtpm.rs"]
mod vtpm;

use std::sync::Arc;

use trustbridge_enclave::attestation::{AttestationProvider, SimulatedPlatform, SimulatedProvider};
use trustbridge_enclave::authorize::{KmsTarget, authorize};
use trustbridge_enclave::boot::StepError;
use trustbridge_enclave::keys::SentinelKeys;
use trustbridge_kms::broker::kek::Kek;
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::broker::{Broker, service};
use trustbridge_kms::client::{AdminSigner, KmsClient};
use trustbridge_protocol::bundle::{
    AssetId, BundlePath, Manifest, ProviderSigningKey, SignedManifest, seal_file,
};
use trustbridge_protocol::sealed::{DataKey, SegmentSize};
use trustbridge_relay::egress::{AllowList, EgressConfig, serve_egress};
use trustbridge_transport::{Endpoint, Listener};
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee};

const ASSET: &str = "acme/llm@v1";

struct World {
    _dir: tempfile::TempDir,
    egress: Endpoint,
    kms: KmsTarget,
    key: DataKey,
    manifest_sha256: [u8; 32],
    sim_dir: tempfile::TempDir,
}

async fn world(allow_broker: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedTee::new().unwrap();
    let sim_dir = tempfile::tempdir().unwrap();
    sim.save(sim_dir.path()).unwrap();
    let provider = ProviderSigningKey::generate().unwrap();
    let admin = ProviderSigningKey::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let asset = AssetId::new(ASSET).unwrap();
    let entry = seal_file(
        &key,
        &asset,
        BundlePath::new("w").unwrap(),
        SegmentSize::default(),
        &b"w"[..],
        std::io::sink(),
    )
    .unwrap();
    let signed = SignedManifest::sign(
        Manifest::new(asset, 0, provider.public(), &key, vec![entry]).unwrap(),
        &provider,
    )
    .unwrap();
    // Nitro with PCR0 = 0x10..; Azure with the simulator's SNP measurement and PCR 7 as the
    // vTPM tests extend it once with 0x07.. (`support/vtpm.rs`).
    let pcr7 =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &[[0u8; 32], [7u8; 32]].concat());
    let policy = format!(
        "[admin]\nkeys = [\"{}\"]\n[simulation]\nnitro_root_sha256 = [\"{}\"]\nsnp_root_sha256 = [\"{}\"]\n[[asset]]\nid = \"{ASSET}\"\nprovider_key = \"{}\"\n[[asset.nitro]]\npcr0 = \"{}\"\n[[asset.azure]]\nmeasurement = \"{}\"\ntpm_pcrs = {{ \"7\" = \"{}\" }}\n[[contract]]\nid = \"c\"\nasset = \"{ASSET}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2099-01-01T00:00:00Z\"\n",
        admin.public().to_hex(),
        hex::encode(sim.nitro_root().sha256()),
        hex::encode(sim.snp_root().sha256()),
        provider.public().to_hex(),
        "10".repeat(48),
        "4d".repeat(48),
        hex::encode(pcr7),
    );
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("kms.db")).unwrap());
    let broker = Arc::new(Broker::open(store, Kek::generate().unwrap(), Some(&policy)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(service::serve(listener, broker, std::future::pending()));
    let base = format!("http://127.0.0.1:{port}");
    let manifest = signed.as_bytes().to_vec();
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        let signer = AdminSigner {
            public_key: admin.public().to_bytes(),
            sign: Box::new(move |m| admin.sign(m)),
        };
        KmsClient::new(&base)
            .register_asset(ASSET, &manifest, &k, &signer)
            .unwrap();
    })
    .await
    .unwrap();
    let egress = Endpoint::Unix(dir.path().join("egress.sock"));
    let allowed = if allow_broker {
        format!("127.0.0.1:{port}")
    } else {
        "127.0.0.1:1".to_owned()
    };
    let egress_listener = Listener::bind(&egress).await.unwrap();
    tokio::spawn(serve_egress(
        egress_listener,
        EgressConfig::new(AllowList::parse(&[allowed]).unwrap()),
    ));
    World {
        _dir: dir,
        egress,
        kms: KmsTarget {
            host: "127.0.0.1".into(),
            port,
        },
        key,
        manifest_sha256: signed.digest(),
        sim_dir,
    }
}

fn provider(w: &World, spec: NitroSpec) -> Arc<dyn AttestationProvider> {
    Arc::new(
        SimulatedProvider::new(
            SimulatedTee::load(w.sim_dir.path()).unwrap(),
            SimulatedPlatform::Nitro,
        )
        .with_nitro(spec),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_arrives_through_the_egress_tunnel() {
    let w = world(true).await;
    let keys = SentinelKeys::generate();
    let released = authorize(
        provider(&w, NitroSpec::default()),
        &keys,
        &w.egress,
        &w.kms,
        ASSET,
        "c",
    )
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
    let err = authorize(
        provider(&w, rogue),
        &SentinelKeys::generate(),
        &w.egress,
        &w.kms,
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "measurement_mismatch"),
        "{err}"
    );
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate(),
        &w.egress,
        &w.kms,
        ASSET,
        "nope",
    )
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
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate(),
        &w.egress,
        &w.kms,
        ASSET,
        "c",
    )
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
        &SentinelKeys::generate(),
        &w.egress,
        &down,
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StepError::Transient(_)), "{err}");
    // No relay at all: transient too.
    let nowhere = Endpoint::Unix(w._dir.path().join("missing.sock"));
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate(),
        &nowhere,
        &w.kms,
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

/// Plays Azure's paravisor in front of the real attester: when asked for evidence, it
/// regenerates the HCL report in the swtpm with the binding digest as `user-data` (on Azure
/// the paravisor does this on its own once the guest writes NV index `0x01400002`).
#[cfg(feature = "azure-vtpm")]
struct Paravisor {
    tpm: vtpm::Swtpm,
    tee: SimulatedTee,
    ak: (Vec<u8>, Vec<u8>),
    attester: trustbridge_enclave::attestation::azure_vtpm::AzureVtpm,
}

#[cfg(feature = "azure-vtpm")]
impl AttestationProvider for Paravisor {
    fn name(&self) -> &'static str {
        self.attester.name()
    }
    fn simulated(&self) -> bool {
        false
    }
    fn evidence(
        &self,
        binding: &trustbridge_protocol::binding::EvidenceBinding,
    ) -> Result<
        trustbridge_enclave::attestation::Evidence,
        trustbridge_enclave::attestation::AttestError,
    > {
        let report = vtpm::hcl_report(&self.tee, &self.ak, &binding.digest().unwrap());
        self.tpm.provision_hcl_report(&report);
        self.attester.evidence(binding)
    }
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
    let tee = SimulatedTee::load(w.sim_dir.path()).unwrap();
    let attester = AzureVtpm::new(AzureVtpmConfig {
        tcti: tpm.tcti(),
        refresh_timeout: std::time::Duration::from_secs(1),
        certificates: CertificateSource::File(vtpm::pem_file(&tee, w._dir.path())),
    });
    let paravisor = Arc::new(Paravisor {
        tpm,
        tee,
        ak,
        attester,
    });
    let provider: Arc<dyn AttestationProvider> = paravisor.clone();
    let released = authorize(
        provider.clone(),
        &SentinelKeys::generate(),
        &w.egress,
        &w.kms,
        ASSET,
        "c",
    )
    .await
    .unwrap();
    assert_eq!(released.key.key_id(), w.key.key_id());

    // PCR 7 moves on (another boot component measured): the policy no longer matches.
    {
        use tss_esapi::interface_types::algorithm::HashingAlgorithm;
        let mut values = tss_esapi::structures::DigestValues::new();
        values.set(HashingAlgorithm::Sha256, vec![8u8; 32].try_into().unwrap());
        paravisor
            .tpm
            .context()
            .pcr_extend(tss_esapi::handles::PcrHandle::Pcr7, values)
            .unwrap();
    }
    let err = authorize(
        provider,
        &SentinelKeys::generate(),
        &w.egress,
        &w.kms,
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "measurement_mismatch"),
        "{err}"
    );
}
