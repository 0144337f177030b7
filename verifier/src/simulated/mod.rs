//! The simulated TEE (cargo feature `simulate`): evidence in the real formats, signed by
//! freshly generated chains, for end-to-end tests and `trustbridge demo` on machines
//! without TEE hardware.
//!
//! - Nitro: COSE_Sign1 ES384 documents whose `module_id` starts with `sim-`, signed by a
//!   P-384 leaf under a generated root and intermediate.
//! - SEV-SNP: 1184-byte reports signed by a generated VCEK (with AMD's TCB and hwID
//!   extensions) under a generated ASK and ARK.
//! - Azure vTPM SNP: HCL reports over such SNP reports and TPM quotes signed by a
//!   generated RSA attestation key ([`AzureSpec`]).
//!
//! Every certificate says `TrustBridge SIMULATION` in its subject. The roots are never in
//! [`TrustRoots::production`]; evidence verifies only when a caller adds them with
//! [`TrustRoots::add_simulation_root`] (see [`SimulatedTee::trust_roots`]), and the default
//! [`crate::Policy`] still rejects it as simulated.

mod azure;

use std::collections::BTreeMap;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use ciborium::Value;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
};
use trustbridge_protocol::binding::EvidenceBinding;

use crate::nitro::SIMULATED_MODULE_PREFIX;
use crate::snp_report::{REPORT_LEN, SIGNED_LEN, TcbComponents};
use crate::x509::ParsedCertificate;
use crate::{Platform, TrustRoots};

pub use azure::{AttestationKeyPair, AzureSpec};

/// Generating simulated evidence failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// Signing failed.
    #[error("signing failed")]
    Signing,
    /// The evidence binding is invalid.
    #[error("invalid evidence binding: {0}")]
    Binding(String),
    /// Reading or writing a saved simulation CA failed.
    #[error("simulation CA: {0}")]
    Io(String),
}

const ORG: &str = "TrustBridge SIMULATION";

/// What a simulated Nitro document reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NitroSpec {
    /// PCR values (index 0..=31); PCR0 all zero means debug mode.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// Document timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// `user_data`.
    pub user_data: Option<Vec<u8>>,
    /// `nonce`.
    pub nonce: Option<Vec<u8>>,
    /// `public_key`.
    pub public_key: Option<Vec<u8>>,
}

impl Default for NitroSpec {
    /// PCR0..2 set to distinct non-zero values, PCR3..15 zero, timestamp 2026-01-01.
    fn default() -> Self {
        let mut pcrs = BTreeMap::new();
        for i in 0..16u8 {
            pcrs.insert(
                i,
                if i < 3 {
                    vec![0x10 + i; 48]
                } else {
                    vec![0; 48]
                },
            );
        }
        Self {
            pcrs,
            timestamp_ms: 1_767_225_600_000,
            user_data: None,
            nonce: None,
            public_key: None,
        }
    }
}

impl NitroSpec {
    /// Carries `binding` as the binding rule places it on Nitro.
    pub fn bind(mut self, binding: &EvidenceBinding) -> Result<Self, SimError> {
        self.user_data = Some(
            binding
                .digest()
                .map_err(|e| SimError::Binding(e.to_string()))?
                .to_vec(),
        );
        self.nonce = Some(binding.nonce.clone());
        Ok(self)
    }
}

/// What a simulated SNP report reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpSpec {
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host data.
    pub host_data: [u8; 32],
    /// Report data.
    pub report_data: [u8; 64],
    /// Guest policy (bit 19 = debug).
    pub policy: u64,
    /// VMPL.
    pub vmpl: u32,
    /// Reported TCB; the VCEK certifies [`SimulatedTee`]'s TCB, so a different value here
    /// produces a TCB mismatch.
    pub reported_tcb: TcbComponents,
    /// Chip id; a value other than the VCEK's hwID produces a chip id mismatch, zeros a
    /// masked chip id (the host's `MASK_CHIP_ID`).
    pub chip_id: [u8; 64],
    /// The key information field at 0x48 (bit 1 `MASK_CHIP_KEY`: the signature is then
    /// left zero, as the firmware does; bits 4:2 the signing key).
    pub key_info: u32,
}

impl SnpSpec {
    /// Carries `binding` as the binding rule places it on SNP.
    pub fn bind(mut self, binding: &EvidenceBinding) -> Result<Self, SimError> {
        self.report_data = binding
            .digest()
            .map_err(|e| SimError::Binding(e.to_string()))?;
        Ok(self)
    }
}

/// The TCB the simulated VCEK certifies.
pub const SIM_TCB: TcbComponents = TcbComponents {
    fmc: None,
    bootloader: 4,
    tee: 0,
    snp: 24,
    microcode: 219,
};
/// The simulated chip id (the VCEK's hwID).
pub const SIM_CHIP_ID: [u8; 64] = [0x5a; 64];

/// A simulated TEE with its generated certificate chains and keys.
pub struct SimulatedTee {
    nitro_chain: Vec<ParsedCertificate>,
    nitro_key: EcdsaKeyPair,
    nitro_key_pkcs8: zeroize::Zeroizing<Vec<u8>>,
    snp_chain: Vec<ParsedCertificate>,
    vcek_key: EcdsaKeyPair,
    vcek_key_pkcs8: zeroize::Zeroizing<Vec<u8>>,
    /// The ARK's and the ASK's signing keys (only in a freshly generated simulator, not one
    /// loaded from disk): they sign revocation lists.
    snp_issuers: Option<Box<(Issuer<'static, KeyPair>, Issuer<'static, KeyPair>)>>,
}

/// Which simulated SNP CA signs a revocation list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnpCrlIssuer {
    /// The ARK: its list names ASKs (AMD's CRLs are of this kind).
    Ark,
    /// The ASK: its list names VCEKs.
    Ask,
}

/// File names of a saved simulation CA directory.
const NITRO_CHAIN: &str = "nitro_chain.pem";
const NITRO_KEY: &str = "nitro_leaf.pk8";
const SNP_CHAIN: &str = "snp_chain.pem";
const VCEK_KEY: &str = "vcek.pk8";

impl std::fmt::Debug for SimulatedTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedTee(<keys redacted>)")
    }
}

impl SimulatedTee {
    /// Generates fresh Nitro and SNP chains.
    pub fn new() -> Result<Self, SimError> {
        Self::with_vcek_hw_id(&SIM_CHIP_ID, SIM_TCB)
    }

    /// Like [`Self::new`] with a VCEK that certifies `hw_id` and `tcb` (for tampering tests).
    pub fn with_vcek_hw_id(hw_id: &[u8], tcb: TcbComponents) -> Result<Self, SimError> {
        let cert_err = |e: rcgen::Error| SimError::Certificate(e.to_string());
        // Nitro: root -> intermediate -> leaf.
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let root_params = ca_params("Nitro simulation root")?;
        let root = root_params.self_signed(&root_key).map_err(cert_err)?;
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let int_params = ca_params("Nitro simulation intermediate")?;
        let int = int_params
            .signed_by(&int_key, &root_issuer)
            .map_err(cert_err)?;
        let int_issuer = Issuer::new(int_params, int_key);
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let leaf = leaf_params("sim-enclave")?
            .signed_by(&leaf_key, &int_issuer)
            .map_err(cert_err)?;
        let nitro_key_pkcs8 = zeroize::Zeroizing::new(leaf_key.serialize_der());
        let nitro_key = signing_key(&nitro_key_pkcs8)?;

        // SNP: ARK -> ASK -> VCEK.
        let ark_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let ark_params = ca_params("ARK-Simulation")?;
        let ark = ark_params.self_signed(&ark_key).map_err(cert_err)?;
        let ark_issuer = Issuer::new(ark_params, ark_key);
        let ask_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let ask_params = ca_params("SEV-Simulation")?;
        let ask = ask_params
            .signed_by(&ask_key, &ark_issuer)
            .map_err(cert_err)?;
        let ask_issuer = Issuer::new(ask_params, ask_key);
        let vcek_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let mut vcek_params = leaf_params("SEV-VCEK")?;
        vcek_params.custom_extensions = vcek_extensions(hw_id, tcb);
        let vcek = vcek_params
            .signed_by(&vcek_key, &ask_issuer)
            .map_err(cert_err)?;
        let snp_issuers = Some(Box::new((ark_issuer, ask_issuer)));

        let parse = |der: &[u8]| {
            ParsedCertificate::from_der(der, "simulated certificate")
                .map_err(|e| SimError::Certificate(e.to_string()))
        };
        let vcek_key_pkcs8 = zeroize::Zeroizing::new(vcek_key.serialize_der());
        Ok(Self {
            nitro_chain: vec![parse(leaf.der())?, parse(int.der())?, parse(root.der())?],
            nitro_key,
            nitro_key_pkcs8,
            snp_chain: vec![parse(vcek.der())?, parse(ask.der())?, parse(ark.der())?],
            vcek_key: signing_key(&vcek_key_pkcs8)?,
            vcek_key_pkcs8,
            snp_issuers,
        })
    }

    /// A revocation list (DER) signed by the simulated ARK or ASK that names the serial
    /// numbers `revoked` (DER content bytes, e.g. [`ParsedCertificate::serial`]), valid
    /// 2024 to 2049. Only a freshly generated simulator has the keys.
    pub fn snp_crl(&self, issuer: SnpCrlIssuer, revoked: &[&[u8]]) -> Result<Vec<u8>, SimError> {
        let cert_err = |e: rcgen::Error| SimError::Certificate(e.to_string());
        let issuers = self.snp_issuers.as_deref().ok_or_else(|| {
            SimError::Certificate("a simulator loaded from disk has no CA keys".into())
        })?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2049, 1, 1),
            crl_number: rcgen::SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(serial),
                    revocation_time: rcgen::date_time_ymd(2024, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = match issuer {
            SnpCrlIssuer::Ark => params.signed_by(&issuers.0),
            SnpCrlIssuer::Ask => params.signed_by(&issuers.1),
        }
        .map_err(cert_err)?;
        Ok(crl.der().to_vec())
    }

    /// Saves the chains and signing keys to `dir` (created; key files mode 0600), so a
    /// broker can pin the roots and later processes can produce evidence under them.
    pub fn save(&self, dir: &std::path::Path) -> Result<(), SimError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| SimError::Io(e.to_string());
        std::fs::create_dir_all(dir).map_err(io)?;
        let pem = |chain: &[ParsedCertificate]| {
            chain.iter().map(|c| pem_block(c.der())).collect::<String>()
        };
        std::fs::write(dir.join(NITRO_CHAIN), pem(&self.nitro_chain)).map_err(io)?;
        std::fs::write(dir.join(SNP_CHAIN), pem(&self.snp_chain)).map_err(io)?;
        for (name, key) in [
            (NITRO_KEY, &self.nitro_key_pkcs8),
            (VCEK_KEY, &self.vcek_key_pkcs8),
        ] {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(dir.join(name))
                .map_err(io)?;
            f.write_all(key).map_err(io)?;
        }
        Ok(())
    }

    /// Loads a simulation CA saved by [`Self::save`].
    pub fn load(dir: &std::path::Path) -> Result<Self, SimError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| SimError::Io(format!("{}: {e}", dir.join(name).display())))
        };
        let chain = |name: &str| -> Result<Vec<ParsedCertificate>, SimError> {
            let certs = ParsedCertificate::from_pem_chain(&read(name)?, "simulation chain")
                .map_err(|e| SimError::Certificate(e.to_string()))?;
            if certs.len() != 3 {
                return Err(SimError::Certificate(format!(
                    "{name} must hold 3 certificates"
                )));
            }
            Ok(certs)
        };
        let nitro_key_pkcs8 = zeroize::Zeroizing::new(read(NITRO_KEY)?);
        let vcek_key_pkcs8 = zeroize::Zeroizing::new(read(VCEK_KEY)?);
        Ok(Self {
            nitro_chain: chain(NITRO_CHAIN)?,
            nitro_key: signing_key(&nitro_key_pkcs8)?,
            nitro_key_pkcs8,
            snp_chain: chain(SNP_CHAIN)?,
            vcek_key: signing_key(&vcek_key_pkcs8)?,
            vcek_key_pkcs8,
            snp_issuers: None,
        })
    }

    /// The Nitro leaf, intermediate and root, in that order.
    pub fn nitro_chain(&self) -> &[ParsedCertificate] {
        &self.nitro_chain
    }

    /// The Nitro simulation root.
    pub fn nitro_root(&self) -> &ParsedCertificate {
        &self.nitro_chain[2]
    }

    /// The SNP simulation root (ARK).
    pub fn snp_root(&self) -> &ParsedCertificate {
        &self.snp_chain[2]
    }

    /// The VCEK, ASK and ARK, in that order, as they accompany a report.
    pub fn snp_certificates(&self) -> &[ParsedCertificate] {
        &self.snp_chain
    }

    /// The production roots plus this simulator's roots, marked as simulation roots.
    pub fn trust_roots(&self) -> TrustRoots {
        let mut roots = TrustRoots::production();
        roots.add_simulation_root(Platform::Nitro, self.nitro_root());
        roots.add_simulation_root(Platform::Snp, self.snp_root());
        roots
    }

    /// A Nitro attestation document (untagged COSE_Sign1, as the NSM returns it).
    pub fn nitro_document(&self, spec: &NitroSpec) -> Result<Vec<u8>, SimError> {
        let cabundle = self.nitro_chain[1..]
            .iter()
            .rev()
            .map(|c| c.der().to_vec())
            .collect();
        self.nitro_document_with_cabundle(spec, cabundle)
    }

    /// A Nitro document signed by the simulated enclave's key whose `cabundle` (root
    /// first) is `cabundle`, whatever it holds: for tests of chains an attacker builds.
    pub fn nitro_document_with_cabundle(
        &self,
        spec: &NitroSpec,
        cabundle: Vec<Vec<u8>>,
    ) -> Result<Vec<u8>, SimError> {
        let bytes = |b: &Option<Vec<u8>>| b.clone().map_or(Value::Null, Value::Bytes);
        let pcrs = spec
            .pcrs
            .iter()
            .map(|(i, v)| (Value::from(*i), Value::Bytes(v.clone())))
            .collect();
        let cabundle = cabundle.into_iter().map(Value::Bytes).collect();
        let payload = Value::Map(vec![
            (
                Value::Text("module_id".into()),
                Value::Text(format!(
                    "{SIMULATED_MODULE_PREFIX}i-00000000000000000-enc0000000000000000"
                )),
            ),
            (Value::Text("digest".into()), Value::Text("SHA384".into())),
            (
                Value::Text("timestamp".into()),
                Value::from(spec.timestamp_ms),
            ),
            (Value::Text("pcrs".into()), Value::Map(pcrs)),
            (
                Value::Text("certificate".into()),
                Value::Bytes(self.nitro_chain[0].der().to_vec()),
            ),
            (Value::Text("cabundle".into()), Value::Array(cabundle)),
            (Value::Text("public_key".into()), bytes(&spec.public_key)),
            (Value::Text("user_data".into()), bytes(&spec.user_data)),
            (Value::Text("nonce".into()), bytes(&spec.nonce)),
        ]);
        let mut encoded = Vec::new();
        ciborium::into_writer(&payload, &mut encoded).map_err(|_| SimError::Signing)?;
        trustbridge_protocol::cose_es384::sign1_es384(&self.nitro_key, encoded)
            .map_err(|_| SimError::Signing)
    }

    /// An SNP report (version 3, VCEK-signed) and the certificates that accompany it.
    pub fn snp_report(&self, spec: &SnpSpec) -> Result<Vec<u8>, SimError> {
        let mut r = vec![0u8; REPORT_LEN];
        r[0x00..0x04].copy_from_slice(&3u32.to_le_bytes());
        r[0x08..0x10].copy_from_slice(&spec.policy.to_le_bytes());
        r[0x30..0x34].copy_from_slice(&spec.vmpl.to_le_bytes());
        r[0x48..0x4C].copy_from_slice(&spec.key_info.to_le_bytes());
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
        let tcb = tcb_bytes(spec.reported_tcb);
        r[0x38..0x40].copy_from_slice(&tcb);
        r[0x50..0x90].copy_from_slice(&spec.report_data);
        r[0x90..0xC0].copy_from_slice(&spec.measurement);
        r[0xC0..0xE0].copy_from_slice(&spec.host_data);
        r[0x180..0x188].copy_from_slice(&tcb);
        r[0x188] = 0x19; // CPUID family: Milan/Genoa
        r[0x1A0..0x1E0].copy_from_slice(&spec.chip_id);
        r[0x1E0..0x1E8].copy_from_slice(&tcb);
        r[0x1F0..0x1F8].copy_from_slice(&tcb);
        if spec.key_info & 0b10 != 0 {
            return Ok(r); // MASK_CHIP_KEY: the firmware writes zeros, not a signature
        }
        let sig = self
            .vcek_key
            .sign(&SystemRandom::new(), &r[..SIGNED_LEN])
            .map_err(|_| SimError::Signing)?;
        let sig = sig.as_ref();
        for (half, at) in [(0usize, 0x2A0usize), (48, 0x2E8)] {
            for i in 0..48 {
                r[at + i] = sig[half + 47 - i];
            }
        }
        Ok(r)
    }
}

impl Default for SnpSpec {
    /// A non-debug guest at VMPL 0 with the simulator's TCB and chip id.
    fn default() -> Self {
        Self {
            measurement: [0x4d; 48],
            host_data: [0; 32],
            report_data: [0; 64],
            policy: 0x30000,
            vmpl: 0,
            reported_tcb: SIM_TCB,
            chip_id: SIM_CHIP_ID,
            key_info: 0,
        }
    }
}

fn tcb_bytes(t: TcbComponents) -> [u8; 8] {
    [t.bootloader, t.tee, 0, 0, 0, 0, t.snp, t.microcode]
}

fn name(params: &mut CertificateParams, cn: &str) {
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORG);
}

fn ca_params(cn: &str) -> Result<CertificateParams, SimError> {
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| SimError::Certificate(e.to_string()))?;
    name(&mut p, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    Ok(p)
}

fn leaf_params(cn: &str) -> Result<CertificateParams, SimError> {
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| SimError::Certificate(e.to_string()))?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, ORG);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    Ok(p)
}

/// AMD's VCEK extensions: productName, the TCB SPLs and hwID.
fn vcek_extensions(hw_id: &[u8], tcb: TcbComponents) -> Vec<CustomExtension> {
    let int = |v: u8| {
        if v < 0x80 {
            vec![0x02, 0x01, v]
        } else {
            vec![0x02, 0x02, 0x00, v]
        }
    };
    let amd = |tail: &[u64], content: Vec<u8>| {
        let mut oid = vec![1, 3, 6, 1, 4, 1, 3704, 1];
        oid.extend_from_slice(tail);
        CustomExtension::from_oid_content(&oid, content)
    };
    let product = b"Milan-SIM";
    let mut product_der = vec![0x16, product.len() as u8];
    product_der.extend_from_slice(product);
    vec![
        amd(&[2], product_der),
        amd(&[3, 1], int(tcb.bootloader)),
        amd(&[3, 2], int(tcb.tee)),
        amd(&[3, 3], int(tcb.snp)),
        amd(&[3, 8], int(tcb.microcode)),
        amd(&[4], hw_id.to_vec()),
    ]
}

fn signing_key(pkcs8: &[u8]) -> Result<EcdsaKeyPair, SimError> {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8).map_err(|_| SimError::Signing)
}

fn pem_block(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
