//! Azure's paravisor, played at the TPM command level: a proxy in front of `swtpm` that
//! forwards the guest's TPM commands one by one and, when the guest writes NV index
//! `0x01400002` (the report data), regenerates the HCL report in `0x01400001` with that
//! data as `user-data` before it answers, over a fresh simulated SNP report. On Azure the
//! paravisor does this below the guest; here it lets an unmodified `tb-sentinel --tee
//! azure` process boot against a software TPM.
//!
//! TPM 2.0 commands and responses are framed by their 10-byte header (tag, size, code),
//! so the proxy needs no TPM library: it reads one frame, forwards it, reads the answer.
#![allow(dead_code, unreachable_pub)] // test support

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use trustbridge_enclave::attestation::azure_vtpm::tpm::{
    HCL_REPORT_NV_INDEX, REPORT_DATA_NV_INDEX,
};
use trustbridge_verifier::simulated::SimulatedTee;

use crate::vtpm::{Swtpm, free_port_pair, hcl_report};

const TPM_CC_NV_WRITE: u32 = 0x0000_0137;
const TPM_RH_OWNER: u32 = 0x4000_0001;
const TPM_RS_PW: u32 = 0x4000_0009;
const TPM_ST_SESSIONS: u16 = 0x8002;
/// The most data one TPM2_NV_Write carries (the TPM's NV buffer).
const NV_CHUNK: usize = 1024;

/// What the paravisor did, for the test to check.
#[derive(Default)]
struct Log {
    /// The report data of each regeneration.
    regenerated: Vec<Vec<u8>>,
    /// Anything that went wrong in its threads.
    errors: Vec<String>,
}

/// The proxy; its threads end with the test process.
pub struct Paravisor {
    port: u16,
    log: Arc<Mutex<Log>>,
}

impl Paravisor {
    /// Listens on a fresh port pair and forwards to `tpm`, regenerating the HCL report
    /// (signed by `tee`'s simulated VCEK, naming `ak`) on each report-data write.
    pub fn start(tpm: &Swtpm, tee: SimulatedTee, ak: (Vec<u8>, Vec<u8>)) -> Self {
        let port = free_port_pair();
        let log = Arc::new(Mutex::new(Log::default()));
        let upstream = tpm.port();
        let commands = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let control = TcpListener::bind(("127.0.0.1", port + 1)).unwrap();
        let tee = Arc::new((tee, ak));
        let l = log.clone();
        std::thread::spawn(move || {
            for client in commands.incoming().flatten() {
                let (tee, log) = (tee.clone(), l.clone());
                std::thread::spawn(move || {
                    if let Err(e) = forward_commands(client, upstream, &tee, &log) {
                        log.lock().unwrap().errors.push(e);
                    }
                });
            }
        });
        // The control channel (power, locality) passes through untouched.
        std::thread::spawn(move || {
            for client in control.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream + 1)) else {
                    continue;
                };
                // Each direction passes on the end of its stream, or swtpm, which serves one
                // control connection at a time, would wait on a finished one for ever.
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    })
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Self { port, log }
    }

    /// The TCTI for the guest: this proxy.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The report data of each regeneration so far.
    pub fn regenerated(&self) -> Vec<Vec<u8>> {
        self.log.lock().unwrap().regenerated.clone()
    }

    /// Errors in the proxy's threads so far.
    pub fn errors(&self) -> Vec<String> {
        self.log.lock().unwrap().errors.clone()
    }
}

/// One TPM command or response: the header's size field says how long it is.
fn read_frame(stream: &mut TcpStream) -> Result<Option<Vec<u8>>, String> {
    let mut header = [0u8; 10];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("reading a frame header: {e}")),
    }
    let size = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
    if !(10..=1 << 16).contains(&size) {
        return Err(format!("frame size {size}"));
    }
    let mut frame = header.to_vec();
    frame.resize(size, 0);
    stream
        .read_exact(&mut frame[10..])
        .map_err(|e| format!("reading a frame body: {e}"))?;
    Ok(Some(frame))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The data of a TPM2_NV_Write to `index` (handles, then the authorization area, then a
/// TPM2B data and the offset), or None for any other command.
fn nv_write_to(command: &[u8], index: u32) -> Option<(Vec<u8>, u16)> {
    if command.len() < 22 || u32_at(command, 6) != TPM_CC_NV_WRITE || u32_at(command, 14) != index {
        return None;
    }
    let params = 22 + u32_at(command, 18) as usize;
    let len = u16::from_be_bytes(command.get(params..params + 2)?.try_into().ok()?) as usize;
    let data = command.get(params + 2..params + 2 + len)?.to_vec();
    let offset = command.get(params + 2 + len..params + 4 + len)?;
    Some((data, u16::from_be_bytes(offset.try_into().ok()?)))
}

/// A TPM2_NV_Write of `data` at `offset` to `index`, authorized by the owner (empty
/// password), as the paravisor writes the HCL report.
fn nv_write_command(index: u32, data: &[u8], offset: u16) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&TPM_ST_SESSIONS.to_be_bytes());
    c.extend_from_slice(&[0; 4]); // size, below
    c.extend_from_slice(&TPM_CC_NV_WRITE.to_be_bytes());
    c.extend_from_slice(&TPM_RH_OWNER.to_be_bytes());
    c.extend_from_slice(&index.to_be_bytes());
    c.extend_from_slice(&9u32.to_be_bytes()); // the password session below
    c.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    c.extend_from_slice(&0u16.to_be_bytes()); // nonce
    c.push(0x01); // continueSession
    c.extend_from_slice(&0u16.to_be_bytes()); // empty password
    c.extend_from_slice(&(data.len() as u16).to_be_bytes());
    c.extend_from_slice(data);
    c.extend_from_slice(&offset.to_be_bytes());
    let size = c.len() as u32;
    c[2..6].copy_from_slice(&size.to_be_bytes());
    c
}

fn forward_commands(
    mut client: TcpStream,
    upstream: u16,
    tee: &(SimulatedTee, (Vec<u8>, Vec<u8>)),
    log: &Mutex<Log>,
) -> Result<(), String> {
    let mut tpm = TcpStream::connect(("127.0.0.1", upstream)).map_err(|e| e.to_string())?;
    let mut report_data = Vec::new();
    while let Some(command) = read_frame(&mut client)? {
        tpm.write_all(&command).map_err(|e| e.to_string())?;
        let response = read_frame(&mut tpm)?.ok_or("swtpm closed the connection")?;
        let succeeded = u32_at(&response, 6) == 0;
        if let Some((data, offset)) = nv_write_to(&command, REPORT_DATA_NV_INDEX)
            && succeeded
        {
            let end = offset as usize + data.len();
            report_data.resize(report_data.len().max(end), 0);
            report_data[offset as usize..end].copy_from_slice(&data);
            let report = hcl_report(&tee.0, &tee.1, &report_data);
            for (i, chunk) in report.chunks(NV_CHUNK).enumerate() {
                let write = nv_write_command(HCL_REPORT_NV_INDEX, chunk, (i * NV_CHUNK) as u16);
                tpm.write_all(&write).map_err(|e| e.to_string())?;
                let answer = read_frame(&mut tpm)?.ok_or("swtpm closed the connection")?;
                if u32_at(&answer, 6) != 0 {
                    return Err(format!(
                        "writing the HCL report: TPM rc {:#x}",
                        u32_at(&answer, 6)
                    ));
                }
            }
            log.lock().unwrap().regenerated.push(report_data.clone());
        }
        client.write_all(&response).map_err(|e| e.to_string())?;
    }
    Ok(())
}
