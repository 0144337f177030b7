//! The bulk AEAD passes Wycheproof's AES-256-GCM vectors (96-bit IV, 128-bit tag).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde::Deserialize;
use trustbridge_protocol::sealed::{Aes256Gcm, NONCE_LEN};
use trustbridge_testkit::{hex_decode, read_vector};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    test_groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    key_size: usize,
    iv_size: usize,
    tag_size: usize,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    tc_id: u32,
    key: String,
    iv: String,
    aad: String,
    msg: String,
    ct: String,
    tag: String,
    result: String,
}

#[test]
fn wycheproof_aes_256_gcm() {
    let Some(bytes) = read_vector("wycheproof_aes_256_gcm", "wycheproof/aes_gcm_test.json") else {
        return;
    };
    let file: File = serde_json::from_slice(&bytes).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in file
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.iv_size == 96 && g.tag_size == 128)
    {
        for t in &group.tests {
            let key: [u8; 32] = hex_decode(&t.key).try_into().unwrap();
            let nonce: [u8; NONCE_LEN] = hex_decode(&t.iv).try_into().unwrap();
            let (aad, msg, ct, tag) = (
                hex_decode(&t.aad),
                hex_decode(&t.msg),
                hex_decode(&t.ct),
                hex_decode(&t.tag),
            );
            let aead = Aes256Gcm::new(&key);
            let mut out = vec![0xffu8; ct.len()];
            let opened = aead.open_into(nonce, &aad, &ct, &tag, &mut out);
            match t.result.as_str() {
                "valid" | "acceptable" => {
                    opened.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
                    assert_eq!(out, msg, "tc {}", t.tc_id);
                    let mut buf = msg.clone();
                    let sealed_tag = aead.seal_in_place(nonce, &aad, &mut buf).unwrap();
                    assert_eq!((buf, sealed_tag.to_vec()), (ct, tag), "tc {} seal", t.tc_id);
                    valid += 1;
                }
                _ => {
                    assert!(opened.is_err(), "tc {} must fail", t.tc_id);
                    assert!(
                        out.iter().all(|&b| b == 0),
                        "tc {}: unverified plaintext left in buffer",
                        t.tc_id
                    );
                    invalid += 1;
                }
            }
        }
    }
    // SOURCES.md: the AES-256 / 96-bit IV / 128-bit tag subset has 39 valid and 27 invalid.
    assert_eq!((valid, invalid), (39, 27));
}
