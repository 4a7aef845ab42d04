//! The node side of a publish: verify the signed release against the staged
//! archive, recompute what the archive says, enforce the namespace rule,
//! commit and flush. The same path serves the HTTP API and the in-process
//! benchmark.

use packfed_protocol::archive::{self, ReadLimits};
use packfed_protocol::manifest::Manifest;
use packfed_protocol::records::{ReleaseFacts, check_release};
use packfed_protocol::{ContentHash, FederationId, RecordId, Signed, SignedError, Verified, pb, quality};

use crate::store::{InsertRelease, StagedBlob, Store, StoreError};

/// Why a publish was refused. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("release record refused: {0}")]
    Signature(#[from] SignedError),
    #[error("release record is malformed: {0}")]
    Malformed(String),
    #[error("the archive's BLAKE3 is {actual} but the release says {claimed}; re-run publish")]
    HashMismatch { claimed: ContentHash, actual: ContentHash },
    #[error("the archive is {actual} bytes but the release says {claimed}; re-run publish")]
    SizeMismatch { claimed: u64, actual: u64 },
    #[error("the archive is not a valid pack: {0}")]
    Archive(#[from] archive::ArchiveError),
    #[error("the archive has no pack.toml at its root")]
    NoManifest,
    #[error("the archive's pack.toml is invalid: {0}")]
    Manifest(String),
    #[error("the release record's {field} does not match the archive's pack.toml")]
    ManifestMismatch { field: &'static str },
    #[error("the release claims quality {claimed} but the archive scores {actual}")]
    QualityMismatch { claimed: u32, actual: u32 },
    #[error(
        "{id} is already published with different content; versions are immutable, so bump the version in pack.toml"
    )]
    VersionTaken { id: String },
    #[error("namespace {namespace} is owned by key {owner}; publish with that key or choose another namespace")]
    NamespaceOwned { namespace: String, owner: String },
    #[error("namespace {0} has no owner yet and the publish carried no claim on it signed by the same key")]
    NeedsClaim(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PublishError {
    /// A stable machine-readable code for `--json` errors.
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::Signature(_) => "bad_signature",
            PublishError::Malformed(_) => "malformed_record",
            PublishError::HashMismatch { .. } | PublishError::SizeMismatch { .. } => "archive_mismatch",
            PublishError::Archive(_) | PublishError::NoManifest => "bad_archive",
            PublishError::Manifest(_) => "bad_manifest",
            PublishError::ManifestMismatch { .. } | PublishError::QualityMismatch { .. } => "record_mismatch",
            PublishError::VersionTaken { .. } => "version_exists",
            PublishError::NamespaceOwned { .. } => "namespace_owned",
            PublishError::NeedsClaim(_) => "namespace_unclaimed",
            PublishError::Store(_) => "store",
        }
    }

    /// Whether the caller, not the node, is at fault.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, PublishError::Store(_))
    }
}

/// A publish as it arrives: the signed release and an optional namespace claim.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub release: Signed,
    pub claim: Option<Signed>,
}

impl PublishRequest {
    pub fn to_pb(&self) -> pb::PublishRequest {
        pb::PublishRequest {
            release: Some(self.release.to_pb()),
            claim: self.claim.as_ref().map(Signed::to_pb),
        }
    }

    /// Decodes the prefix, bounded by the envelope limit (twice: two envelopes).
    pub fn decode(bytes: &[u8]) -> Result<PublishRequest, PublishError> {
        use prost::Message;
        if bytes.len() > 2 * packfed_protocol::limits::MAX_ENVELOPE_BYTES + 16 {
            return Err(PublishError::Malformed("publish request too large".into()));
        }
        let p = pb::PublishRequest::decode(bytes).map_err(|e| PublishError::Malformed(e.to_string()))?;
        let release = Signed::from_pb(p.release.ok_or_else(|| PublishError::Malformed("no release".into()))?)?;
        let claim = p.claim.map(Signed::from_pb).transpose()?;
        Ok(PublishRequest { release, claim })
    }
}

/// What a successful publish stored.
#[derive(Debug, Clone)]
pub struct Published {
    pub facts: ReleaseFacts,
    pub record_id: RecordId,
    pub quality: pb::QualityReport,
    /// False when the exact same record was already stored.
    pub new: bool,
}

/// A publish request whose signatures and fields check out.
pub type VerifiedPublish = (
    Verified<pb::Release>,
    ReleaseFacts,
    Option<Verified<pb::NamespaceClaim>>,
);

/// Verifies the release before any bytes are looked at: cheap refusals first.
pub fn verify_release(fed: &FederationId, req: &PublishRequest) -> Result<VerifiedPublish, PublishError> {
    let release = req.release.verify::<pb::Release>(fed)?;
    let facts = check_release(release.record()).map_err(|e| PublishError::Malformed(e.to_string()))?;
    let claim = req
        .claim
        .as_ref()
        .map(|c| c.verify::<pb::NamespaceClaim>(fed))
        .transpose()?;
    Ok((release, facts, claim))
}

/// Compares the signed release with what the archive itself says.
fn check_against_archive(
    r: &pb::Release,
    manifest: &Manifest,
    quality: &pb::QualityReport,
) -> Result<(), PublishError> {
    let expect = manifest.release_fields();
    let mismatch = |field| Err(PublishError::ManifestMismatch { field });
    if r.name != expect.name {
        return mismatch("name");
    }
    if r.version != expect.version {
        return mismatch("version");
    }
    if r.license != expect.license {
        return mismatch("license");
    }
    if r.dependencies != expect.dependencies {
        return mismatch("dependencies");
    }
    if r.description != expect.description || r.keywords != expect.keywords || r.category != expect.category {
        return mismatch("description, keywords or category");
    }
    let claimed = r.quality.as_ref().map(|q| q.score).unwrap_or(0);
    if claimed != quality.score {
        return Err(PublishError::QualityMismatch {
            claimed,
            actual: quality.score,
        });
    }
    Ok(())
}

/// Reads a staged archive's manifest and recomputes its quality.
pub fn assess_archive(store: &Store, staged: &StagedBlob) -> Result<(Manifest, pb::QualityReport), PublishError> {
    let inspection = archive::inspect(store.staged_reader(staged)?, ReadLimits::for_archive(staged.size))?;
    let text = inspection.manifest_text.ok_or(PublishError::NoManifest)?;
    let manifest = Manifest::parse(&text).map_err(|e| PublishError::Manifest(e.to_string()))?;
    let q = quality::assess(&manifest, &inspection.entries);
    Ok((manifest, q))
}

/// Completes a publish whose archive bytes are staged in the store, for a
/// request [`verify_release`] checked. On any refusal the staged bytes are
/// discarded and nothing changes. Durable (flushed) when it returns Ok.
pub fn publish_staged(
    store: &Store,
    fed: &FederationId,
    verified: &VerifiedPublish,
    staged: StagedBlob,
) -> Result<Published, PublishError> {
    let result = publish_inner(store, fed, verified, staged);
    if result.is_err() {
        store.abandon(&staged)?;
    }
    result
}

fn publish_inner(
    store: &Store,
    fed: &FederationId,
    (release, facts, claim): &VerifiedPublish,
    staged: StagedBlob,
) -> Result<Published, PublishError> {
    let r = release.record();
    if staged.hash != facts.hash {
        return Err(PublishError::HashMismatch {
            claimed: facts.hash,
            actual: staged.hash,
        });
    }
    if staged.size != r.size {
        return Err(PublishError::SizeMismatch {
            claimed: r.size,
            actual: staged.size,
        });
    }
    let (manifest, quality) = assess_archive(store, &staged)?;
    check_against_archive(r, &manifest, &quality)?;

    store.commit_blob(staged)?;
    let outcome = store.publish_local(fed, release, &facts.hash, claim.as_ref())?;
    let new = match outcome {
        InsertRelease::Inserted => true,
        InsertRelease::AlreadyPresent => false,
        InsertRelease::VersionTaken(_) => {
            return Err(PublishError::VersionTaken {
                id: facts.id.to_string(),
            });
        }
        InsertRelease::NamespaceOwned(owner) => {
            return Err(PublishError::NamespaceOwned {
                namespace: facts.id.name.namespace().to_string(),
                owner: owner.to_hex(),
            });
        }
        InsertRelease::NeedsClaim => return Err(PublishError::NeedsClaim(facts.id.name.namespace().to_string())),
    };
    store.flush()?;
    Ok(Published {
        record_id: release.id(),
        facts: facts.clone(),
        quality,
        new,
    })
}
