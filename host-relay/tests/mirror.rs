#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Mirroring a bundle from S3, Azure Blob and plain HTTP, each played by a local server
//! speaking the store's URL layout, and resuming an interrupted mirror.

use std::path::Path;
use std::sync::Arc;

use trustbridge_protocol::bundle::{
    AssetId, MANIFEST_FILE, ProviderSigningKey, seal_bundle_in_memory,
};
use trustbridge_protocol::sealed::{DataKey, SegmentSize};
use trustbridge_relay::bundles::BundleServer;
use trustbridge_relay::mirror::{MirrorConfig, mirror};
use trustbridge_relay::source::BundleSource;
use trustbridge_transport::{Endpoint, Listener};

/// A sealed bundle under `root/bundle/llm/` (the "remote" store's layout).
fn remote_bundle(root: &Path) -> Vec<&'static str> {
    let dir = root.join("bundle/llm");
    std::fs::create_dir_all(&dir).unwrap();
    let weights: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    seal_bundle_in_memory(
        &dir,
        &DataKey::generate().unwrap(),
        &ProviderSigningKey::generate().unwrap(),
        &AssetId::new("acme/llm@v1").unwrap(),
        SegmentSize::new(64 << 10).unwrap(),
        &[("w/weights.bin", &weights), ("config.json", b"{}")],
    )
    .unwrap();
    vec![MANIFEST_FILE, "w/weights.bin.sealed", "config.json.sealed"]
}

/// Serves `root` on loopback TCP; returns the server and its base URL.
async fn store(root: &Path) -> (Arc<BundleServer>, String) {
    let listener = Listener::bind(&"tcp://127.0.0.1:0".parse::<Endpoint>().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_endpoint().unwrap())
        .replace("http://tcp://", "http://");
    // The server answers under /bundle/...: the bucket, container or path prefix "bundle".
    let server = BundleServer::new(&root.join("bundle")).unwrap();
    tokio::spawn(server.clone().serve(listener));
    (server, url)
}

fn same_files(remote: &Path, local: &Path, names: &[&str]) {
    for name in names {
        assert_eq!(
            std::fs::read(remote.join(name)).unwrap(),
            std::fs::read(local.join(name)).unwrap(),
            "{name}"
        );
    }
}

fn config() -> MirrorConfig {
    MirrorConfig {
        concurrency: 3,
        chunk_bytes: 100_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_from_s3_azure_and_http() {
    let root = tempfile::tempdir().unwrap();
    let names = remote_bundle(root.path());
    let (_server, base) = store(root.path()).await;
    let sources = [
        (
            "s3://bundle/llm".to_owned(),
            vec![
                format!("endpoint={base}"),
                "allow_http=true".into(),
                "region=us-east-1".into(),
                "access_key_id=test".into(),
                "secret_access_key=test".into(),
            ],
        ),
        (
            "az://bundle/llm".to_owned(),
            vec![
                format!("endpoint={base}"),
                "allow_http=true".into(),
                "account_name=acct".into(),
                "access_key=dGVzdA==".into(),
            ],
        ),
        (format!("{base}/bundle/llm"), vec![]),
    ];
    for (url, options) in sources {
        let local = tempfile::tempdir().unwrap();
        let source = BundleSource::open(&url, &options).unwrap();
        let report = mirror(&source, local.path(), config()).await.unwrap();
        assert_eq!(report.files_fetched, 2, "{url}");
        assert_eq!(
            report.chunks_fetched,
            8 + 1,
            "{url}: 8 weight chunks, 1 config chunk"
        );
        same_files(&root.path().join("bundle/llm"), local.path(), &names);
        // A second run finds everything in place.
        let again = mirror(&source, local.path(), config()).await.unwrap();
        assert_eq!((again.files_present, again.chunks_fetched), (2, 0), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_mirror_resumes_from_its_journal() {
    let root = tempfile::tempdir().unwrap();
    let names = remote_bundle(root.path());
    let (server, base) = store(root.path()).await;
    let source = BundleSource::open(&format!("{base}/bundle/llm"), &[]).unwrap();
    let remote = root.path().join("bundle/llm");
    // A previous run got chunks 0, 2 and 5 of the weights and then stopped.
    let local = tempfile::tempdir().unwrap();
    let partial = local.path().join(".partial/w/weights.bin.sealed");
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    let full = std::fs::read(remote.join("w/weights.bin.sealed")).unwrap();
    let mut got = vec![0u8; full.len()];
    for i in [0usize, 2, 5] {
        let r = i * 100_000..((i + 1) * 100_000).min(full.len());
        got[r.clone()].copy_from_slice(&full[r]);
    }
    std::fs::write(&partial, &got).unwrap();
    std::fs::write(partial.with_extension("done"), "0\n2\n5\n").unwrap();
    let before = server.requests();
    let report = mirror(&source, local.path(), config()).await.unwrap();
    assert_eq!(report.chunks_resumed, 3);
    assert_eq!(report.chunks_fetched, 8 - 3 + 1);
    same_files(&remote, local.path(), &names);
    assert!(!partial.exists() && !partial.with_extension("done").exists());
    // The manifest and the missing chunks only.
    assert_eq!(server.requests() - before, 1 + 5 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_object_or_a_missing_manifest_fails() {
    let root = tempfile::tempdir().unwrap();
    remote_bundle(root.path());
    let (_server, base) = store(root.path()).await;
    let source = BundleSource::open(&format!("{base}/bundle/llm"), &[]).unwrap();
    let weights = root.path().join("bundle/llm/w/weights.bin.sealed");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    assert!(mirror(&source, local.path(), config()).await.is_err());
    assert!(
        !local.path().join(MANIFEST_FILE).exists(),
        "never looks complete"
    );
    let nowhere = BundleSource::open(&format!("{base}/bundle/other"), &[]).unwrap();
    assert!(mirror(&nowhere, local.path(), config()).await.is_err());
}
