//! The publisher's side of a publish: validate `pack.toml`, build the
//! deterministic archive, recompute quality from the archive exactly as any
//! node will, and sign the release (and the namespace claim that goes with a
//! first publish).

use std::fs;
use std::io::{BufWriter, Seek};
use std::path::Path;

use anyhow::{Context, Result};
use packfed_protocol::archive::{self, PackSummary, ReadLimits};
use packfed_protocol::manifest::{MANIFEST_FILE, Manifest, Visibility};
use packfed_protocol::{FederationId, KeyPair, Signed, pb, quality};

use crate::publish::PublishRequest;

/// Reads and validates a pack directory's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let meta = fs::metadata(&path).with_context(|| {
        format!(
            "{} has no {MANIFEST_FILE}; a pack directory needs one (see the README)",
            dir.display()
        )
    })?;
    if meta.len() > packfed_protocol::limits::MAX_MANIFEST_BYTES {
        anyhow::bail!("{} is larger than 64 KiB", path.display());
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Manifest::parse(&text)?)
}

/// An archive built from a directory, ready to sign.
pub struct PreparedPack {
    pub manifest: Manifest,
    pub summary: PackSummary,
    pub quality: pb::QualityReport,
    /// The archive, in a temporary file removed on drop.
    pub file: tempfile::NamedTempFile,
}

/// Validates and packs `dir` into a temporary file in `tmp_dir`.
pub fn prepare(dir: &Path, tmp_dir: &Path) -> Result<PreparedPack> {
    let manifest = read_manifest(dir)?;
    crate::templates::check_pack(dir, &manifest.variables)
        .map_err(|e| crate::client::UserError::new("bad_templates", format!("{}: {e:#}", dir.display())))?;
    fs::create_dir_all(tmp_dir)?;
    let tmp = tempfile::NamedTempFile::new_in(tmp_dir)?;
    let (writer, summary) = archive::pack_dir(dir, BufWriter::new(tmp.reopen()?))?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let mut reader = tmp.reopen()?;
    reader.rewind()?;
    let inspection = archive::inspect(std::io::BufReader::new(reader), ReadLimits::for_archive(summary.size))?;
    let quality = quality::assess(&manifest, &inspection.entries);
    Ok(PreparedPack {
        manifest,
        summary,
        quality,
        file: tmp,
    })
}

/// The release record for a packed archive.
pub fn release_record(
    manifest: &Manifest,
    summary: &PackSummary,
    quality: &pb::QualityReport,
    visibility: Option<Visibility>,
    now_ms: u64,
) -> pb::Release {
    let mut r = manifest.release_fields();
    r.content_hash = summary.hash.as_bytes().to_vec();
    r.size = summary.size;
    r.quality = Some(quality.clone());
    r.published_at_ms = now_ms;
    if let Some(v) = visibility {
        r.visibility = v.to_pb() as i32;
    }
    r
}

/// Signs the release and a claim on its namespace (which the node keeps only
/// if the namespace has no owner yet).
pub fn sign_publish(release: &pb::Release, key: &KeyPair, fed: &FederationId, now_ms: u64) -> PublishRequest {
    let namespace = release.name.split('/').next().unwrap_or_default().to_string();
    let claim = pb::NamespaceClaim {
        namespace,
        claimed_at_ms: now_ms,
    };
    PublishRequest {
        release: Signed::sign(release, key, fed),
        claim: Some(Signed::sign(&claim, key, fed)),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
