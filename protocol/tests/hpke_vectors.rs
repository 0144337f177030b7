//! The key-release HPKE suite against the RFC 9180 test vectors: base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use trustbridge_protocol::key_release::{HpkeError, HpkeKeyPair};
use trustbridge_testkit::{hex_decode, read_vector};

#[test]
fn rfc9180_base_x25519_sha256_aes256gcm() {
    let Some(bytes) = read_vector("hpke", "hpke/rfc9180-x25519-hkdfsha256-subset.json") else {
        return;
    };
    let vectors: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
    let mut checked = 0;
    for v in vectors
        .iter()
        .filter(|v| v["mode"] == 0 && v["kem_id"] == 32 && v["kdf_id"] == 1 && v["aead_id"] == 2)
    {
        let h = |k: &str| hex_decode(v[k].as_str().unwrap());
        let recipient = HpkeKeyPair::derive(&h("ikmR"));
        assert_eq!(recipient.public_key().to_vec(), h("pkRm"), "DeriveKeyPair");
        let first = &v["encryptions"][0];
        let e = |k: &str| hex_decode(first[k].as_str().unwrap());
        let pt = recipient
            .open_with_aad(&h("enc"), &e("ct"), &h("info"), &e("aad"))
            .unwrap();
        assert_eq!(*pt, e("pt"));
        // Tampering twins: flipped ciphertext, other info.
        let mut ct = e("ct");
        ct[0] ^= 1;
        assert_eq!(
            recipient
                .open_with_aad(&h("enc"), &ct, &h("info"), &e("aad"))
                .unwrap_err(),
            HpkeError::Open
        );
        assert_eq!(
            recipient
                .open_with_aad(&h("enc"), &e("ct"), b"other", &e("aad"))
                .unwrap_err(),
            HpkeError::Open
        );
        checked += 1;
    }
    assert_eq!(
        checked, 1,
        "one base-mode X25519/SHA-256/AES-256-GCM vector in RFC 9180"
    );
}
