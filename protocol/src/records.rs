//! The records carried in [`Signed`](crate::Signed) envelopes, and the checks
//! a release must pass beyond its signature (well-formed name, version, sizes).

use std::fmt;
use std::str::FromStr;

use crate::ids::{ContentHash, IdError};
use crate::limits::*;
use crate::pb;
use crate::signed::{Domain, Record};

impl Record for pb::Release {
    const DOMAIN: Domain = Domain::Release;
}
impl Record for pb::NamespaceClaim {
    const DOMAIN: Domain = Domain::NamespaceClaim;
}
impl Record for pb::NodeAnnouncement {
    const DOMAIN: Domain = Domain::NodeAnnouncement;
}
impl Record for pb::Yank {
    const DOMAIN: Domain = Domain::Yank;
}
impl Record for pb::Deprecation {
    const DOMAIN: Domain = Domain::Deprecation;
}
impl Record for pb::Attestation {
    const DOMAIN: Domain = Domain::Attestation;
}
impl Record for pb::Proposal {
    const DOMAIN: Domain = Domain::Proposal;
}
impl Record for pb::Vote {
    const DOMAIN: Domain = Domain::Vote;
}
impl Record for pb::ProposalCancel {
    const DOMAIN: Domain = Domain::ProposalCancel;
}
impl Record for pb::Checkpoint {
    const DOMAIN: Domain = Domain::Checkpoint;
}
impl Record for pb::LearningSummary {
    const DOMAIN: Domain = Domain::LearningSummary;
}

/// Problems with a record's content (its signature being fine).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error(
        "pack name {0:?} must be namespace/name: lowercase letters, digits and '-', each part 1-64 characters, starting with a letter"
    )]
    Name(String),
    #[error("version {0:?} is not semver (e.g. 1.2.0)")]
    Version(String),
    #[error("dependency {name:?} has requirement {req:?}, which is not a semver requirement (e.g. ^1.2)")]
    Requirement { name: String, req: String },
    #[error("content hash: {0}")]
    Hash(IdError),
    #[error("field {field} is too long or has too many items (limit {limit})")]
    TooLong { field: &'static str, limit: usize },
    #[error("id {0:?} must be namespace/name@version")]
    Id(String),
    #[error(
        "attestation kind {0:?} must be audit, reproducible-build, license, vuln-scan, review, benchmark or quality"
    )]
    Kind(String),
    #[error("attestation result {0:?} must be pass or fail")]
    Result(String),
}

fn valid_part(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.as_bytes()[0].is_ascii_lowercase()
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A pack's name: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackName {
    full: String,
    slash: usize,
}

impl PackName {
    pub fn namespace(&self) -> &str {
        &self.full[..self.slash]
    }
    pub fn name(&self) -> &str {
        &self.full[self.slash + 1..]
    }
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl FromStr for PackName {
    type Err = RecordError;
    fn from_str(s: &str) -> Result<Self, RecordError> {
        let err = || RecordError::Name(s.to_string());
        let (ns, name) = s.split_once('/').ok_or_else(err)?;
        if !valid_part(ns) || !valid_part(name) {
            return Err(err());
        }
        Ok(PackName {
            full: s.to_string(),
            slash: ns.len(),
        })
    }
}

impl fmt::Display for PackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// A release id: `namespace/name@version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackId {
    pub name: PackName,
    pub version: semver::Version,
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for PackId {
    type Err = RecordError;
    fn from_str(s: &str) -> Result<Self, RecordError> {
        let (name, version) = s.split_once('@').ok_or_else(|| RecordError::Id(s.to_string()))?;
        Ok(PackId {
            name: name.parse()?,
            version: version.parse().map_err(|_| RecordError::Version(version.to_string()))?,
        })
    }
}

fn check_len(field: &'static str, s: &str, limit: usize) -> Result<(), RecordError> {
    if s.len() > limit {
        return Err(RecordError::TooLong { field, limit });
    }
    Ok(())
}

fn check_list(field: &'static str, items: &[String], limit: usize) -> Result<(), RecordError> {
    if items.len() > limit {
        return Err(RecordError::TooLong { field, limit });
    }
    items.iter().try_for_each(|i| check_len(field, i, MAX_NAME_BYTES))
}

/// A release's content, checked: what an index may rely on.
#[derive(Debug, Clone)]
pub struct ReleaseFacts {
    pub id: PackId,
    pub hash: ContentHash,
    pub dependencies: Vec<(PackName, semver::VersionReq)>,
}

/// Checks a decoded release's fields and extracts the typed facts.
pub fn check_release(r: &pb::Release) -> Result<ReleaseFacts, RecordError> {
    check_len("version", &r.version, MAX_VERSION_BYTES)?;
    check_len("description", &r.description, MAX_DESCRIPTION_BYTES)?;
    check_len("license", &r.license, MAX_NAME_BYTES)?;
    check_len("category", &r.category, MAX_NAME_BYTES)?;
    check_list("keywords", &r.keywords, MAX_LIST_ITEMS)?;
    check_list("authors", &r.authors, MAX_LIST_ITEMS)?;
    if r.dependencies.len() > MAX_DEPENDENCIES {
        return Err(RecordError::TooLong {
            field: "dependencies",
            limit: MAX_DEPENDENCIES,
        });
    }
    let name: PackName = r.name.parse()?;
    let version: semver::Version = r.version.parse().map_err(|_| RecordError::Version(r.version.clone()))?;
    let hash = ContentHash::from_slice(&r.content_hash).map_err(RecordError::Hash)?;
    let dependencies = r
        .dependencies
        .iter()
        .map(|d| {
            let n: PackName = d.name.parse()?;
            let req = d.requirement.parse().map_err(|_| RecordError::Requirement {
                name: d.name.clone(),
                req: d.requirement.clone(),
            })?;
            Ok((n, req))
        })
        .collect::<Result<_, RecordError>>()?;
    Ok(ReleaseFacts {
        id: PackId { name, version },
        hash,
        dependencies,
    })
}

/// The predicate kinds an attestation may carry (the policy file's names).
pub const ATTESTATION_KINDS: [&str; 7] = [
    "audit",
    "reproducible-build",
    "license",
    "vuln-scan",
    "review",
    "benchmark",
    "quality",
];

/// An attestation's content, checked.
#[derive(Debug, Clone)]
pub struct AttestationFacts {
    pub id: PackId,
    pub hash: ContentHash,
}

/// Checks a decoded attestation's fields: subject, kind, result, sizes.
pub fn check_attestation(a: &pb::Attestation) -> Result<AttestationFacts, RecordError> {
    check_len("version", &a.version, MAX_VERSION_BYTES)?;
    check_len("note", &a.note, MAX_DESCRIPTION_BYTES)?;
    if !ATTESTATION_KINDS.contains(&a.kind.as_str()) {
        return Err(RecordError::Kind(a.kind.chars().take(32).collect()));
    }
    if a.result != "pass" && a.result != "fail" {
        return Err(RecordError::Result(a.result.chars().take(32).collect()));
    }
    if a.score > 100 {
        return Err(RecordError::TooLong {
            field: "score",
            limit: 100,
        });
    }
    let name: PackName = a.name.parse()?;
    let version: semver::Version = a.version.parse().map_err(|_| RecordError::Version(a.version.clone()))?;
    let hash = ContentHash::from_slice(&a.content_hash).map_err(RecordError::Hash)?;
    Ok(AttestationFacts {
        id: PackId { name, version },
        hash,
    })
}

/// A deprecation's content, checked.
#[derive(Debug, Clone)]
pub struct DeprecationFacts {
    pub name: PackName,
    pub requirement: semver::VersionReq,
    pub replacement: Option<PackName>,
}

/// Checks a decoded deprecation: the pack, the versions it covers, the
/// replacement's name, the message's size.
pub fn check_deprecation(d: &pb::Deprecation) -> Result<DeprecationFacts, RecordError> {
    check_len("requirement", &d.requirement, MAX_VERSION_BYTES)?;
    check_len("message", &d.message, MAX_DESCRIPTION_BYTES)?;
    let name: PackName = d.name.parse()?;
    let requirement = semver::VersionReq::parse(&d.requirement).map_err(|_| RecordError::Requirement {
        name: d.name.clone(),
        req: d.requirement.clone(),
    })?;
    let replacement = match d.replacement.as_str() {
        "" => None,
        r => Some(r.parse()?),
    };
    Ok(DeprecationFacts {
        name,
        requirement,
        replacement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!("acme/rest-api".parse::<PackName>().is_ok());
        for bad in [
            "acme", "Acme/x", "acme/", "/x", "acme/x/y", "acme/x_y", "1acme/x", "acme/-x",
        ] {
            assert!(bad.parse::<PackName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        let id: PackId = "acme/rest-api@1.2.0".parse().unwrap();
        assert_eq!(id.name.namespace(), "acme");
        assert_eq!(id.to_string(), "acme/rest-api@1.2.0");
        assert!("acme/rest-api@one".parse::<PackId>().is_err());
    }
}
