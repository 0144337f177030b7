//! The vTPM of an Azure confidential VM, through `tss-esapi` (libtss2).
//!
//! The indices and handles are Azure's, as the `az-snp-vtpm` attester uses them:
//! the paravisor (HCL) keeps a fresh HCL report in NV index `0x01400001`, regenerated with
//! whatever the guest last wrote to `0x01400002` as its `user-data`; the attestation key
//! (AK) is persistent at `0x81000003`. Unlike `az-snp-vtpm`, the TCTI is configurable
//! (`device:/dev/tpmrm0` on Azure, `swtpm:...` in tests), and the caller polls for the
//! refreshed report instead of sleeping a fixed three seconds.

use std::str::FromStr;

use aws_lc_rs::digest;
use tss_esapi::Context;
use tss_esapi::abstraction::{nv, pcr};
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Attest, AttestInfo, Data, MaxNvBuffer, NvPublicBuilder, PcrSelectionListBuilder, PcrSlot,
    Signature, SignatureScheme,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;

/// NV index of the HCL report.
pub const HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;
/// NV index the guest writes its report data (`user-data`) to.
pub const REPORT_DATA_NV_INDEX: u32 = 0x0140_0002;
/// Persistent handle of the attestation key.
pub const AK_HANDLE: u32 = 0x8100_0003;

/// PCRs 0..=23 of the SHA-256 bank, as the quote covers them.
const PCRS: [PcrSlot; 24] = [
    PcrSlot::Slot0,
    PcrSlot::Slot1,
    PcrSlot::Slot2,
    PcrSlot::Slot3,
    PcrSlot::Slot4,
    PcrSlot::Slot5,
    PcrSlot::Slot6,
    PcrSlot::Slot7,
    PcrSlot::Slot8,
    PcrSlot::Slot9,
    PcrSlot::Slot10,
    PcrSlot::Slot11,
    PcrSlot::Slot12,
    PcrSlot::Slot13,
    PcrSlot::Slot14,
    PcrSlot::Slot15,
    PcrSlot::Slot16,
    PcrSlot::Slot17,
    PcrSlot::Slot18,
    PcrSlot::Slot19,
    PcrSlot::Slot20,
    PcrSlot::Slot21,
    PcrSlot::Slot22,
    PcrSlot::Slot23,
];

/// How often a quote is retried when a PCR changed between the quote and the PCR read.
const QUOTE_ATTEMPTS: usize = 3;

/// A TPM operation failed; the message names the step.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {detail}")]
pub struct VtpmError {
    step: &'static str,
    detail: String,
}

fn at(step: &'static str) -> impl Fn(tss_esapi::Error) -> VtpmError {
    move |e| VtpmError {
        step,
        detail: e.to_string(),
    }
}

/// A signed quote over PCRs 0..=23 (SHA-256) and the PCR values it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The marshalled `TPMS_ATTEST`.
    pub message: Vec<u8>,
    /// The RSASSA-PKCS1-v1_5 signature by the AK.
    pub signature: Vec<u8>,
    /// PCR 0..=23, in order.
    pub pcrs: Vec<[u8; 32]>,
}

/// An open connection to the vTPM.
pub struct Vtpm {
    context: Context,
}

impl Vtpm {
    /// Connects through `tcti` (`device:/dev/tpmrm0`, `swtpm:host=...,port=...`, ...).
    pub fn open(tcti: &str) -> Result<Self, VtpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| VtpmError {
            step: "TCTI",
            detail: format!("{tcti:?}: {e}"),
        })?;
        let mut context = Context::new(conf).map_err(|e| VtpmError {
            step: "connecting to the TPM",
            detail: format!("{tcti}: {e}"),
        })?;
        context.set_sessions((Some(AuthSession::Password), None, None));
        Ok(Self { context })
    }

    /// Writes `data` to the report-data index, defining it (owner read/write, this size)
    /// when it is missing or of another size.
    pub fn write_report_data(&mut self, data: &[u8]) -> Result<(), VtpmError> {
        let handle =
            NvIndexTpmHandle::new(REPORT_DATA_NV_INDEX).map_err(at("report-data index"))?;
        let buffer = MaxNvBuffer::try_from(data.to_vec()).map_err(at("report data"))?;
        let existing = nv::list(&mut self.context)
            .map_err(at("listing NV indices"))?
            .into_iter()
            .find(|(public, _)| public.nv_index() == handle)
            .map(|(public, _)| public.data_size());
        let index = match existing {
            Some(size) if size == data.len() => self.resolve(handle)?,
            Some(_) => {
                let index = self.resolve(handle)?;
                self.context
                    .nv_undefine_space(Provision::Owner, index)
                    .map_err(at("undefining the report-data index"))?;
                self.define(handle, data.len())?
            }
            None => self.define(handle, data.len())?,
        };
        self.context
            .nv_write(NvAuth::Owner, index, buffer, 0)
            .map_err(at("writing the report data"))?;
        // The ESYS handle is only a local reference; closing it leaves the index in place.
        let mut object = index.into();
        let _ = self.context.tr_close(&mut object);
        Ok(())
    }

    fn resolve(&mut self, handle: NvIndexTpmHandle) -> Result<NvIndexHandle, VtpmError> {
        self.context
            .execute_without_session(|c| c.tr_from_tpm_public(handle.into()))
            .map(NvIndexHandle::from)
            .map_err(at("report-data index"))
    }

    fn define(&mut self, handle: NvIndexTpmHandle, len: usize) -> Result<NvIndexHandle, VtpmError> {
        let attributes = NvIndexAttributesBuilder::new()
            .with_owner_write(true)
            .with_owner_read(true)
            .build()
            .map_err(at("report-data index attributes"))?;
        let public = NvPublicBuilder::new()
            .with_nv_index(handle)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attributes)
            .with_data_area_size(len)
            .build()
            .map_err(at("report-data index"))?;
        self.context
            .nv_define_space(Provision::Owner, None, public)
            .map_err(at("defining the report-data index"))
    }

    /// The HCL report as the paravisor currently holds it.
    pub fn read_hcl_report(&mut self) -> Result<Vec<u8>, VtpmError> {
        let handle = NvIndexTpmHandle::new(HCL_REPORT_NV_INDEX).map_err(at("HCL report index"))?;
        nv::read_full(&mut self.context, NvAuth::Owner, handle)
            .map_err(at("reading the HCL report (NV index 0x01400001)"))
    }

    /// Whether the HCL report index exists (an Azure confidential VM's vTPM).
    pub fn has_hcl_report(&mut self) -> bool {
        let Ok(handle) = NvIndexTpmHandle::new(HCL_REPORT_NV_INDEX) else {
            return false;
        };
        self.context
            .execute_without_session(|c| c.tr_from_tpm_public(handle.into()))
            .is_ok()
    }

    /// A quote by the AK with `nonce` as `extraData`, and the PCR values it covers. The
    /// PCRs are read after the quote; should one change in between (its digest no longer
    /// matching the quoted one), the quote is taken again.
    pub fn quote(&mut self, nonce: &[u8]) -> Result<Quote, VtpmError> {
        let ak = TpmHandle::try_from(AK_HANDLE).map_err(at("AK handle"))?;
        let key = self
            .context
            .execute_without_session(|c| c.tr_from_tpm_public(ak))
            .map_err(at("the attestation key (persistent handle 0x81000003)"))?;
        let data = Data::try_from(nonce.to_vec()).map_err(at("quote nonce"))?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &PCRS)
            .build()
            .map_err(at("PCR selection"))?;
        for _ in 0..QUOTE_ATTEMPTS {
            let (attest, signature) = self
                .context
                .quote(
                    key.into(),
                    data.clone(),
                    SignatureScheme::Null,
                    selection.clone(),
                )
                .map_err(at("quote"))?;
            let quoted_digest = match attest.attested() {
                AttestInfo::Quote { info } => info.pcr_digest().to_vec(),
                _ => {
                    return Err(VtpmError {
                        step: "quote",
                        detail: "the TPM returned an attestation that is not a quote".into(),
                    });
                }
            };
            let Signature::RsaSsa(signature) = signature else {
                return Err(VtpmError {
                    step: "quote",
                    detail: "the AK did not sign with RSASSA".into(),
                });
            };
            let pcrs = self.read_pcrs(selection.clone())?;
            let mut ctx = digest::Context::new(&digest::SHA256);
            pcrs.iter().for_each(|p| ctx.update(p));
            if ctx.finish().as_ref() == quoted_digest.as_slice() {
                return Ok(Quote {
                    message: marshall(&attest)?,
                    signature: signature.signature().to_vec(),
                    pcrs,
                });
            }
            tracing::info!("a PCR changed during the quote; quoting again");
        }
        Err(VtpmError {
            step: "quote",
            detail: format!("the PCRs kept changing during {QUOTE_ATTEMPTS} quotes"),
        })
    }

    fn read_pcrs(
        &mut self,
        selection: tss_esapi::structures::PcrSelectionList,
    ) -> Result<Vec<[u8; 32]>, VtpmError> {
        let data = self
            .context
            .execute_without_session(|c| pcr::read_all(c, selection))
            .map_err(at("reading the PCRs"))?;
        let bank = data
            .pcr_bank(HashingAlgorithm::Sha256)
            .ok_or_else(|| VtpmError {
                step: "reading the PCRs",
                detail: "no SHA-256 bank".into(),
            })?;
        bank.into_iter()
            .map(|(_, value)| {
                <[u8; 32]>::try_from(value.value()).map_err(|_| VtpmError {
                    step: "reading the PCRs",
                    detail: "a SHA-256 PCR is not 32 bytes".into(),
                })
            })
            .collect()
    }
}

fn marshall(attest: &Attest) -> Result<Vec<u8>, VtpmError> {
    attest.marshall().map_err(at("encoding the quote"))
}
