//! The demo's key-broker stage: an embedded `tb-kms` on loopback, a simulated sentinel that
//! obtains the data key through an attested release, and the decision log.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use trustbridge_protocol::Platform;

use anyhow::{Context, Result, bail, ensure};
use trustbridge_kms::broker::decision_log::verify_log;
use trustbridge_kms::broker::kek::Kek;
use trustbridge_kms::broker::service::LoopbackBroker;
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::broker::{Broker, ContractRequest};
use trustbridge_kms::client::{AdminSigner, Evidence, KmsClient};
use trustbridge_protocol::bundle::{ProviderSigningKey, SignedManifest};
use trustbridge_protocol::sealed::DataKey;
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee};

use super::key_release::simulation_section;
use crate::output_file::write_output;

fn step(out: &mut impl Write, text: &str) -> Result<()> {
    writeln!(out, "  [ok] {text}")?;
    Ok(())
}

/// Runs the broker stage in `dir` and returns the data key as the simulated sentinel
/// received it.
pub(crate) fn run(
    dir: &Path,
    out: &mut impl Write,
    provider: &ProviderSigningKey,
    key: &DataKey,
    signed: &SignedManifest,
) -> Result<DataKey> {
    let kek = Kek::generate()?;
    write_output(&dir.join("kek"), false, 0o600, |f| {
        f.write_all(kek.to_hex_line().as_bytes())
            .context("writing the KEK")
    })?;
    let sim = SimulatedTee::new()?;
    sim.save(&dir.join("sim-ca"))?;
    let admin = ProviderSigningKey::generate()?;
    let asset = signed.manifest().asset_id.as_str().to_owned();
    let defaults = NitroSpec::default();
    let pcr = |i: u8| defaults.pcrs.get(&i).map(hex::encode).unwrap_or_default();
    let policy = format!(
        "[admin]\nkeys = [\"{admin}\"]\n\n{simulation}\n[[asset]]\nid = \"{asset}\"\nprovider_key = \"{provider}\"\nmanifest_sha256 = \"{digest}\"\n\n  [[asset.nitro]]\n  pcr0 = \"{p0}\"\n  pcr1 = \"{p1}\"\n  pcr2 = \"{p2}\"\n",
        admin = admin.public().to_hex(),
        simulation = simulation_section(&sim),
        provider = provider.public().to_hex(),
        digest = hex::encode(signed.digest()),
        p0 = pcr(0),
        p1 = pcr(1),
        p2 = pcr(2),
    );
    std::fs::write(dir.join("policy.toml"), &policy)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("kms.db"))?);
    let embedded = LoopbackBroker::start(Arc::new(Broker::open(store, kek, Some(&policy))?))?;
    step(
        out,
        &format!(
            "key broker started on {} (policy pins the provider key, the manifest and the enclave PCRs; simulation CA in sim-ca/)",
            embedded.url()
        ),
    )?;

    // The demo pins its own broker's identity key, as a sentinel pins --kms-key.
    let client = KmsClient::new(embedded.url(), embedded.broker().identity_key())
        .pin_provider(provider.public().to_bytes());
    let signer = AdminSigner {
        public_key: admin.public().to_bytes(),
        sign: Box::new(move |m| admin.sign(m)),
    };
    client.register_asset(&asset, signed.as_bytes(), key, &signer)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let time = |t: u64| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(t))
            .to_string()
    };
    client.add_contract(
        &ContractRequest {
            id: "demo".into(),
            asset: asset.clone(),
            not_before: time(now - 3600),
            not_after: time(now + 86_400),
            max_releases: Some(10),
        },
        &signer,
    )?;
    step(
        out,
        "data key registered (sealed to the broker, checked against the key commitment) and contract added",
    )?;

    let evidence = |spec: NitroSpec| {
        let sim = &sim;
        move |b: &trustbridge_protocol::binding::EvidenceBinding| {
            let doc = sim
                .nitro_document(&spec.bind(b).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            Ok(Evidence {
                platform: Platform::Nitro,
                bytes: doc,
                certificates: vec![],
            })
        }
    };
    let released =
        client.release_with_evidence(&asset, "demo", [0; 32], evidence(NitroSpec::default()))?;
    ensure!(
        released.key.key_id() == key.key_id(),
        "the released key is not the bundle's"
    );
    ensure!(
        released.manifest_sha256 == signed.digest(),
        "the broker names another manifest"
    );
    step(
        out,
        &format!(
            "simulated enclave attested and received the data key (key id {}, HPKE-sealed to its attested key; every answer signed by the broker identity {})",
            released.key.key_id(),
            &client.broker_key().to_string()[..16]
        ),
    )?;

    let mut rogue = NitroSpec::default();
    rogue.pcrs.insert(2, vec![0xee; 48]);
    match client.release_with_evidence(&asset, "demo", [0; 32], evidence(rogue)) {
        Err(e) if e.denial_code() == Some("measurement_mismatch") => {
            step(
                out,
                "an enclave with another application image (PCR2) was denied: measurement_mismatch",
            )?;
        }
        other => bail!("a foreign enclave was not denied as expected: {other:?}"),
    }
    let log = embedded.broker().store().decisions()?;
    let verified = verify_log(
        &log,
        &Kek::from_hex(&std::fs::read_to_string(dir.join("kek"))?)?
            .decision_log_key()
            .verifying_key(),
    )?;
    step(
        out,
        &format!("decision log: {verified} signed, hash-chained records verified"),
    )?;
    drop(embedded);
    Ok(released.key)
}
