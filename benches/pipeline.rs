//! The publish pipeline, shared by the criterion bench and the report: pack a
//! directory straight into the store, assess, sign, verify, commit, flush.

#![allow(dead_code)]

use std::io::{BufWriter, Write};
use std::path::Path;

use packfed_node::packing;
use packfed_node::publish::{self, Published};
use packfed_node::store::{CHUNK_SIZE, Store};
use packfed_protocol::archive;
use packfed_protocol::{FederationId, KeyPair};

/// Rewrites the version in `dir/pack.toml` (each publish needs a new one).
pub fn set_version(dir: &Path, version: &str) {
    let path = dir.join("pack.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("version = \"").unwrap() + "version = \"".len();
    let end = start + text[start..].find('"').unwrap();
    let mut out = text[..start].to_string();
    out.push_str(version);
    out.push_str(&text[end..]);
    std::fs::write(path, out).unwrap();
}

/// One in-process publish of `dir`, durable when it returns.
pub fn publish_dir(store: &Store, fed: &FederationId, key: &KeyPair, dir: &Path) -> Published {
    let writer = store.blob_writer(u64::MAX).unwrap();
    let (writer, _summary) = archive::pack_dir(dir, BufWriter::with_capacity(CHUNK_SIZE, writer)).unwrap();
    let staged = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .unwrap()
        .finish()
        .unwrap();
    // The publisher's own assessment, as `packfed publish` does before signing.
    let (manifest, quality) = publish::assess_archive(store, &staged).unwrap();
    let now = packing::now_ms();
    let summary = archive::PackSummary {
        hash: staged.hash,
        size: staged.size,
        entries: 0,
    };
    let release = packing::release_record(&manifest, &summary, &quality, None, now);
    let req = packing::sign_publish(&release, key, fed, now);
    let verified = publish::verify_release(fed, &req).unwrap();
    publish::publish_staged(store, fed, &verified, staged).unwrap()
}

/// Baseline: bare sled insert of the same bytes in the same chunk size, then flush.
pub fn sled_insert_flush(db: &sled::Tree, flusher: &sled::Db, prefix: u64, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(CHUNK_SIZE).enumerate() {
        let mut k = prefix.to_be_bytes().to_vec();
        k.extend_from_slice(&(i as u32).to_be_bytes());
        db.insert(k, chunk).unwrap();
    }
    flusher.flush().unwrap();
}

/// The archive bytes of `dir` (for the baselines).
pub fn archive_bytes(dir: &Path) -> Vec<u8> {
    let (mut v, _) = archive::pack_dir(dir, Vec::new()).unwrap();
    v.flush().unwrap();
    v
}
