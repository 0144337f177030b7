//! The broker test fixture, on the test world's parts (`testkit::world::Parties`: keys, the
//! simulated TEE, the KEK, starting a broker): a signed manifest of a one-file model, and
//! brokers started on a store and policy of the test's choosing, at a clock it moves, and
//! restarted on the same store and KEK.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)] // test code

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use trustbridge_protocol::Platform;

use trustbridge_kms::broker::service::LoopbackBroker;
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::broker::{Broker, ContractRequest};
use trustbridge_kms::client::{AdminSigner, ClientError, Evidence, KmsClient};
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_protocol::bundle::{
    AssetId, BundlePath, Manifest, ProviderSigningKey, SignedManifest, seal_file,
};
use trustbridge_protocol::sealed::{DataKey, SegmentSize};
use trustbridge_testkit::world::{Parties, admin_signer, start_broker};
use trustbridge_verifier::simulated::{
    AttestationKeyPair, AzureSpec, NitroSpec, SimulatedTee, SnpSpec,
};

/// The reason code of a denial signed by the broker.
pub fn denial(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(e) if e.denial_code().is_some() => e.denial_code().unwrap_or_default().to_owned(),
        other => panic!("expected a signed denial, got {other:?}"),
    }
}

pub const ASSET: &str = "acme/model@v1";
/// The broker's clock starts at the real time: admin requests are signed with the real time.
pub fn start_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub kek_hex: String,
    pub sim: SimulatedTee,
    pub provider: ProviderSigningKey,
    pub admin: ProviderSigningKey,
    pub key: DataKey,
    pub manifest: Vec<u8>,
    pub clock: Arc<AtomicU64>,
}

pub struct Running {
    pub client: KmsClient,
    pub broker: Arc<Broker>,
    pub url: String,
    /// Serves until dropped.
    pub server: LoopbackBroker,
}

impl Fixture {
    /// The world's parties (testkit::world::Parties), a one-file sealed model, and a clock
    /// the test moves.
    pub fn new() -> Self {
        let Parties {
            provider,
            admin,
            key,
            sim,
            kek_hex,
        } = Parties::generate().unwrap();
        let asset = AssetId::new(ASSET).unwrap();
        let mut ct = Vec::new();
        let entry = seal_file(
            &key,
            &asset,
            BundlePath::new("model.bin").unwrap(),
            SegmentSize::new(4096).unwrap(),
            &b"weights"[..],
            &mut ct,
        )
        .unwrap();
        let manifest =
            Manifest::new(asset, start_time(), provider.public(), &key, vec![entry]).unwrap();
        let manifest = SignedManifest::sign(manifest, &provider)
            .unwrap()
            .as_bytes()
            .to_vec();
        Self {
            dir: tempfile::tempdir().unwrap(),
            kek_hex,
            sim,
            provider,
            admin,
            key,
            manifest,
            clock: Arc::new(AtomicU64::new(start_time())),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("kms.db")
    }

    pub fn policy(&self, simulation: bool) -> String {
        let fp = |c: &trustbridge_verifier::x509::ParsedCertificate| hex::encode(c.sha256());
        let sim = if simulation {
            format!(
                "[simulation]\nnitro_root_sha256 = [\"{}\"]\nsnp_root_sha256 = [\"{}\"]\n",
                fp(self.sim.nitro_root()),
                fp(self.sim.snp_root())
            )
        } else {
            String::new()
        };
        format!(
            r#"
[admin]
keys = ["{admin}"]
{sim}
[[asset]]
id = "{ASSET}"
provider_key = "{provider}"

  [[asset.nitro]]
  pcr0 = "{pcr0}"
  pcr1 = "{pcr1}"
  pcr2 = "{pcr2}"

  [[asset.snp]]
  measurement = "{m}"
  min_tcb = {{ bootloader = 4, snp = 24, microcode = 219 }}

  [[asset.azure]]
  measurement = "{m}"
  tpm_pcrs = {{ 7 = "{pcr7}" }}

[[contract]]
id = "c-policy"
asset = "{ASSET}"
not_before = "2026-01-01T00:00:00Z"
not_after = "2030-01-01T00:00:00Z"
"#,
            admin = self.admin.public().to_hex(),
            provider = self.provider.public().to_hex(),
            pcr0 = "10".repeat(48),
            pcr1 = "11".repeat(48),
            pcr2 = "12".repeat(48),
            m = "4d".repeat(48),
            pcr7 = "07".repeat(32),
        )
    }

    pub fn start(&self, policy: Option<&str>) -> Running {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&self.db()).unwrap());
        self.start_on(store, policy)
    }

    /// [`Self::start`] on a store of the test's choosing.
    pub fn start_on(&self, store: Arc<dyn Store>, policy: Option<&str>) -> Running {
        let server = start_broker(&self.kek_hex, store, policy, Some(self.clock.clone())).unwrap();
        let url = server.url().to_owned();
        Running {
            client: KmsClient::new(&url, server.broker().identity_key()),
            broker: server.broker().clone(),
            url,
            server,
        }
    }

    pub fn signer(&self) -> AdminSigner {
        admin_signer(&self.admin).unwrap()
    }

    pub fn register(&self, r: &Running) {
        r.client
            .register_asset(ASSET, &self.manifest, &self.key, &self.signer())
            .unwrap();
    }

    pub fn contract(&self, r: &Running, id: &str, max: Option<u64>) {
        let c = ContractRequest {
            id: id.into(),
            asset: ASSET.into(),
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2030-01-01T00:00:00Z".into(),
            max_releases: max,
        };
        r.client.add_contract(&c, &self.signer()).unwrap();
    }

    pub fn nitro(
        &self,
        spec: NitroSpec,
    ) -> impl FnOnce(&EvidenceBinding) -> Result<Evidence, String> + '_ {
        move |b| sim_nitro(&self.sim, spec, b)
    }

    pub fn snp(
        &self,
        spec: SnpSpec,
    ) -> impl FnOnce(&EvidenceBinding) -> Result<Evidence, String> + '_ {
        move |b| sim_snp(&self.sim, spec, b)
    }

    /// Simulated Azure evidence under the attestation key `ak`.
    pub fn azure<'a>(
        &'a self,
        ak: &'a AttestationKeyPair,
        spec: AzureSpec,
    ) -> impl FnOnce(&EvidenceBinding) -> Result<Evidence, String> + 'a {
        move |b| {
            let json = self
                .sim
                .azure_evidence(ak, &spec.bind(b).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            Ok(Evidence {
                platform: Platform::AzureSnpVtpm,
                bytes: json,
                // The VCEK is in the evidence; the ASK and ARK come beside it.
                certificates: self.sim.snp_certificates()[1..]
                    .iter()
                    .map(|c| c.der().to_vec())
                    .collect(),
            })
        }
    }
}

/// Simulated Nitro evidence that carries `b`.
pub fn sim_nitro(
    sim: &SimulatedTee,
    spec: NitroSpec,
    b: &EvidenceBinding,
) -> Result<Evidence, String> {
    let doc = sim
        .nitro_document(&spec.bind(b).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(Evidence {
        platform: Platform::Nitro,
        bytes: doc,
        certificates: vec![],
    })
}

/// Simulated SNP evidence that carries `b`, with the simulator's VCEK, ASK and ARK.
pub fn sim_snp(sim: &SimulatedTee, spec: SnpSpec, b: &EvidenceBinding) -> Result<Evidence, String> {
    let report = sim
        .snp_report(&spec.bind(b).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(Evidence {
        platform: Platform::Snp,
        bytes: report,
        certificates: sim
            .snp_certificates()
            .iter()
            .map(|c| c.der().to_vec())
            .collect(),
    })
}
