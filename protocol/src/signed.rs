//! The `Signed` envelope: exact payload bytes, the signer's key and an ed25519
//! signature over `domain tag || 0x00 || federation id || payload`.
//!
//! The domain tag names the record kind and version, so a signature can never
//! be replayed as another kind of record; the federation id is inside the
//! signed message, so it can never be replayed into another federation. We
//! verify the bytes as received and only then decode them: nothing is ever
//! re-encoded to be verified. A [`Verified`] value only comes out of
//! [`Signed::verify`].

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;

use crate::ids::{FederationId, RecordId};
use crate::keys::{KeyPair, PublicKey};
use crate::limits::MAX_ENVELOPE_BYTES;
use crate::pb;

/// Envelope format version this code writes and accepts.
pub const ENVELOPE_VERSION: u32 = 1;

/// The kinds of signed record, each with its own domain tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    Release,
    NamespaceClaim,
    Yank,
    Attestation,
    Proposal,
    Vote,
    LearningSummary,
    NodeAnnouncement,
    ProposalCancel,
    Checkpoint,
    Deprecation,
}

impl Domain {
    pub const ALL: [Domain; 11] = [
        Domain::Release,
        Domain::NamespaceClaim,
        Domain::Yank,
        Domain::Attestation,
        Domain::Proposal,
        Domain::Vote,
        Domain::LearningSummary,
        Domain::NodeAnnouncement,
        Domain::ProposalCancel,
        Domain::Checkpoint,
        Domain::Deprecation,
    ];

    pub fn tag(self) -> &'static str {
        match self {
            Domain::Release => "packfed/release/v1",
            Domain::NamespaceClaim => "packfed/namespace-claim/v1",
            Domain::Yank => "packfed/yank/v1",
            Domain::Attestation => "packfed/attestation/v1",
            Domain::Proposal => "packfed/proposal/v1",
            Domain::Vote => "packfed/vote/v1",
            Domain::LearningSummary => "packfed/learning-summary/v1",
            Domain::NodeAnnouncement => "packfed/node-announcement/v1",
            Domain::ProposalCancel => "packfed/proposal-cancel/v1",
            Domain::Checkpoint => "packfed/checkpoint/v1",
            Domain::Deprecation => "packfed/deprecation/v1",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Domain> {
        Domain::ALL.into_iter().find(|d| d.tag() == tag)
    }
}

/// A record type carried in an envelope.
pub trait Record: Message + Default + Sized {
    const DOMAIN: Domain;
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedError {
    #[error("envelope is {0} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("envelope is not valid protobuf: {0}")]
    Malformed(String),
    #[error("envelope version {0} is not supported (this node speaks {ENVELOPE_VERSION})")]
    UnknownVersion(u32),
    #[error("envelope is not in canonical protobuf encoding")]
    NonCanonical,
    #[error("record kind {found:?} where {expected:?} was expected")]
    WrongKind { expected: String, found: String },
    #[error("signer is not a valid ed25519 public key")]
    BadSigner,
    #[error("signature is malformed")]
    MalformedSignature,
    #[error("signature does not verify for this record kind and federation")]
    BadSignature,
    #[error("payload does not decode as {kind}: {reason}")]
    BadPayload { kind: &'static str, reason: String },
}

/// An envelope as received, not yet trusted.
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    inner: pb::Signed,
    encoded: Vec<u8>,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signed({}, {})", self.inner.kind, self.id())
    }
}

/// The message an envelope's signature covers.
pub fn signing_message(domain: Domain, federation: &FederationId, payload: &[u8]) -> Vec<u8> {
    tagged_message(domain.tag(), federation, payload)
}

fn tagged_message(tag: &str, federation: &FederationId, payload: &[u8]) -> Vec<u8> {
    let tag = tag.as_bytes();
    let mut m = Vec::with_capacity(tag.len() + 1 + 32 + payload.len());
    m.extend_from_slice(tag);
    m.push(0);
    m.extend_from_slice(federation.as_bytes());
    m.extend_from_slice(payload);
    m
}

impl Signed {
    /// Encodes and signs `record` for `federation`.
    pub fn sign<R: Record>(record: &R, key: &KeyPair, federation: &FederationId) -> Signed {
        Self::sign_payload(R::DOMAIN, record.encode_to_vec(), key, federation)
    }

    /// Signs already-encoded payload bytes.
    pub fn sign_payload(domain: Domain, payload: Vec<u8>, key: &KeyPair, federation: &FederationId) -> Signed {
        let signature = key.sign(&signing_message(domain, federation, &payload));
        Self::with_signature(domain, payload, key.public(), signature)
    }

    /// An envelope for a signature made elsewhere (an external signer) over
    /// [`signing_message`]; checked only when it is verified.
    pub fn with_signature(domain: Domain, payload: Vec<u8>, signer: PublicKey, signature: [u8; 64]) -> Signed {
        let inner = pb::Signed {
            version: ENVELOPE_VERSION,
            kind: domain.tag().to_string(),
            payload,
            signer: signer.as_bytes().to_vec(),
            signature: signature.to_vec(),
        };
        let encoded = inner.encode_to_vec();
        Signed { inner, encoded }
    }

    /// Parses envelope bytes, checking size and shape, not the signature.
    pub fn decode(bytes: &[u8]) -> Result<Signed, SignedError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(SignedError::TooLarge(bytes.len()));
        }
        let inner = pb::Signed::decode(bytes).map_err(|e| SignedError::Malformed(e.to_string()))?;
        if inner.version != ENVELOPE_VERSION {
            return Err(SignedError::UnknownVersion(inner.version));
        }
        // Only the canonical encoding is accepted: otherwise a relay could
        // re-frame a record (reorder fields, append unknown ones) and give it
        // a new id without the signer's key.
        if inner.encode_to_vec() != bytes {
            return Err(SignedError::NonCanonical);
        }
        Ok(Signed {
            inner,
            encoded: bytes.to_vec(),
        })
    }

    /// From the prost message embedded in another message.
    pub fn from_pb(inner: pb::Signed) -> Result<Signed, SignedError> {
        let encoded = inner.encode_to_vec();
        Self::decode(&encoded)
    }

    pub fn to_pb(&self) -> pb::Signed {
        self.inner.clone()
    }

    /// The payload decoded as `R` without a signature check: for envelopes
    /// verified on their way into the store and read back from it (reading
    /// through [`Signed::to_pb`] copied the whole envelope first).
    pub fn unchecked_record<R: Message + Default>(&self) -> Result<R, prost::DecodeError> {
        R::decode(self.inner.payload.as_slice())
    }

    /// The bytes as received (or as first encoded).
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The record's id: BLAKE3 of the envelope bytes.
    pub fn id(&self) -> RecordId {
        RecordId::of(&self.encoded)
    }

    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    pub fn domain(&self) -> Option<Domain> {
        Domain::from_tag(&self.inner.kind)
    }

    /// The claimed signer; trustworthy only after [`Signed::verify`].
    pub fn claimed_signer(&self) -> &[u8] {
        &self.inner.signer
    }

    fn check_signature(&self, domain: Domain, federation: &FederationId) -> Result<PublicKey, SignedError> {
        self.check_signature_by(domain, federation, |signer| VerifyingKey::from_bytes(signer).ok())
    }

    /// The strict check, with the signer's key from `key` (which may cache).
    fn check_signature_by(
        &self,
        domain: Domain,
        federation: &FederationId,
        key: impl FnOnce(&[u8; 32]) -> Option<VerifyingKey>,
    ) -> Result<PublicKey, SignedError> {
        if self.inner.kind != domain.tag() {
            return Err(SignedError::WrongKind {
                expected: domain.tag().to_string(),
                found: self.inner.kind.clone(),
            });
        }
        self.check_signature_tagged(domain.tag(), federation, key)
    }

    /// The strict check of the signature over `tag`, the federation and
    /// the payload.
    fn check_signature_tagged(
        &self,
        tag: &str,
        federation: &FederationId,
        key: impl FnOnce(&[u8; 32]) -> Option<VerifyingKey>,
    ) -> Result<PublicKey, SignedError> {
        let signer: [u8; 32] = self
            .inner
            .signer
            .as_slice()
            .try_into()
            .map_err(|_| SignedError::BadSigner)?;
        let vk = key(&signer).ok_or(SignedError::BadSigner)?;
        let sig: [u8; 64] = self
            .inner
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| SignedError::MalformedSignature)?;
        let msg = tagged_message(tag, federation, &self.inner.payload);
        vk.verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| SignedError::BadSignature)?;
        Ok(PublicKey(signer))
    }

    /// The strict signature check under the kind the envelope names, known
    /// to this version or not: for carriers that pass records on unread
    /// (the registry document), so nothing unsigned rides along and newer
    /// kinds still travel. Readers use [`Signed::verify`].
    pub fn check_signature_as_sent(&self, federation: &FederationId) -> Result<PublicKey, SignedError> {
        self.check_signature_tagged(&self.inner.kind, federation, |signer| {
            VerifyingKey::from_bytes(signer).ok()
        })
    }

    /// [`Signed::check_signature_as_sent`], remembered: a screen that
    /// passes records of any kind keeps this, so the node that then reads
    /// the record as its kind does not check the signature a second time.
    pub fn check_as_sent(&self, federation: &FederationId) -> Result<Checked, SignedError> {
        let signer = self.check_signature_as_sent(federation)?;
        Ok(self.checked_by(signer, federation))
    }

    /// [`Signed::check_as_sent`] with signers' keys decompressed once for a
    /// whole batch (`keys`, shared by the threads screening it).
    pub fn check_as_sent_with(&self, federation: &FederationId, keys: &SignerKeys) -> Result<Checked, SignedError> {
        let signer = self.check_signature_tagged(&self.inner.kind, federation, |signer| keys.get(signer))?;
        Ok(self.checked_by(signer, federation))
    }

    fn checked_by(&self, signer: PublicKey, federation: &FederationId) -> Checked {
        Checked {
            id: self.id(),
            signer,
            federation: *federation,
        }
    }

    /// The payload as `R`, for an envelope whose signature `checked`
    /// already vouches for: the same bytes (by id), the same federation,
    /// and `R`'s kind (the checked signature covered the kind as sent).
    pub fn verified_by<R: Record>(
        &self,
        checked: &Checked,
        federation: &FederationId,
    ) -> Result<Verified<R>, SignedError> {
        if checked.id != self.id() || checked.federation != *federation {
            return Err(SignedError::BadSignature);
        }
        if self.inner.kind != R::DOMAIN.tag() {
            return Err(SignedError::WrongKind {
                expected: R::DOMAIN.tag().to_string(),
                found: self.inner.kind.clone(),
            });
        }
        self.decode_payload(checked.signer)
    }

    /// Verifies the signature over the bytes as received, then decodes the
    /// payload as `R`.
    pub fn verify<R: Record>(&self, federation: &FederationId) -> Result<Verified<R>, SignedError> {
        let signer = self.check_signature(R::DOMAIN, federation)?;
        self.decode_payload(signer)
    }

    /// The payload as `R`, for an envelope whose signature by `signer` holds.
    fn decode_payload<R: Record>(&self, signer: PublicKey) -> Result<Verified<R>, SignedError> {
        let record = R::decode(self.inner.payload.as_slice()).map_err(|e| SignedError::BadPayload {
            kind: R::DOMAIN.tag(),
            reason: e.to_string(),
        })?;
        Ok(Verified {
            record,
            signer,
            envelope: self.clone(),
        })
    }
}

/// Verifies many envelopes of one kind, each with the same strict check as
/// [`Signed::verify`], decompressing each signer's key once (a sync's records
/// come from few signers, and decompression is about a fifth of a check).
///
/// Why not ed25519 batch verification: it accepts signatures that strict
/// verification refuses (a small-torsion component in R, which the key's
/// holder can grind for), so a record admitted by a batch would fail every
/// later strict read of it, and of the package it names. One rule for every
/// path that stores a record is worth the batch's speed.
pub fn verify_many<R: Record>(
    envelopes: &[Signed],
    federation: &FederationId,
) -> Vec<Result<Verified<R>, SignedError>> {
    let keys = SignerKeys::default();
    envelopes
        .iter()
        .map(|env| {
            let signer = env.check_signature_by(R::DOMAIN, federation, |signer| keys.get(signer))?;
            env.decode_payload(signer)
        })
        .collect()
}

/// Signers' keys, decompressed once per batch of checks: decompressing a
/// key is about a fifth of a strict check, and a batch's records come from
/// few signers. Holds at most [`SignerKeys::MAX`] keys (a batch signed by
/// many fresh keys just decompresses the rest each time); shareable between
/// threads.
#[derive(Default)]
pub struct SignerKeys(std::sync::Mutex<std::collections::HashMap<[u8; 32], Option<VerifyingKey>>>);

impl SignerKeys {
    pub const MAX: usize = 4096;

    fn get(&self, signer: &[u8; 32]) -> Option<VerifyingKey> {
        if let Some(known) = self.0.lock().ok().and_then(|m| m.get(signer).copied()) {
            return known;
        }
        let key = VerifyingKey::from_bytes(signer).ok();
        if let Ok(mut m) = self.0.lock()
            && m.len() < Self::MAX
        {
            m.insert(*signer, key);
        }
        key
    }
}

/// Proof that one envelope's signature held for the kind it names (see
/// [`Signed::check_as_sent`]); only [`Signed::verified_by`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    id: RecordId,
    signer: PublicKey,
    federation: FederationId,
}

impl Checked {
    /// The checked envelope's id.
    pub fn id(&self) -> RecordId {
        self.id
    }
}

/// A record whose signature has been checked. Only [`Signed::verify`],
/// [`Signed::verified_by`] and [`verify_many`] make one, and
/// [`Verified::sign`] for a record signed here.
#[derive(Debug, Clone)]
pub struct Verified<R> {
    record: R,
    signer: PublicKey,
    envelope: Signed,
}

impl<R: Record> Verified<R> {
    /// Signs `record` with `key`. A signature this process has just made
    /// needs no check: verifying it again was 13 % of a witness's
    /// checkpoint path in the HTTP publish profile.
    pub fn sign(record: R, key: &KeyPair, federation: &FederationId) -> Verified<R> {
        let envelope = Signed::sign(&record, key, federation);
        Verified {
            record,
            signer: key.public(),
            envelope,
        }
    }
}

impl<R> Verified<R> {
    pub fn record(&self) -> &R {
        &self.record
    }
    pub fn signer(&self) -> PublicKey {
        self.signer
    }
    pub fn envelope(&self) -> &Signed {
        &self.envelope
    }
    pub fn id(&self) -> RecordId {
        self.envelope.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::NamespaceClaim;

    fn fed(n: u8) -> FederationId {
        FederationId([n; 32])
    }

    fn claim() -> NamespaceClaim {
        NamespaceClaim {
            namespace: "acme".into(),
            claimed_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn verifies_and_decodes() {
        let key = KeyPair::generate().unwrap();
        let s = Signed::sign(&claim(), &key, &fed(1));
        let back = Signed::decode(s.encoded()).unwrap();
        let v = back.verify::<NamespaceClaim>(&fed(1)).unwrap();
        assert_eq!(v.record(), &claim());
        assert_eq!(v.signer(), key.public());
        assert_eq!(v.id(), s.id());
    }

    #[test]
    fn a_carrier_checks_any_kind_under_the_tag_it_names() {
        let key = KeyPair::generate().unwrap();
        let known = Signed::sign(&claim(), &key, &fed(1));
        assert_eq!(known.check_signature_as_sent(&fed(1)).unwrap(), key.public());
        assert_eq!(
            known.check_signature_as_sent(&fed(2)).unwrap_err(),
            SignedError::BadSignature
        );
        // A kind this version does not know, signed under its own tag.
        let payload = b"a record of a later version".to_vec();
        let signature = key.sign(&tagged_message("packfed/later", &fed(1), &payload));
        let mut inner = known.to_pb();
        inner.kind = "packfed/later".into();
        inner.payload = payload;
        inner.signature = signature.to_vec();
        let later = Signed::from_pb(inner.clone()).unwrap();
        assert!(later.check_signature_as_sent(&fed(1)).is_ok());
        // Relabelled as another kind, the same signature fails.
        inner.kind = claim_tag();
        let relabelled = Signed::from_pb(inner).unwrap();
        assert_eq!(
            relabelled.check_signature_as_sent(&fed(1)).unwrap_err(),
            SignedError::BadSignature
        );
    }

    fn claim_tag() -> String {
        Domain::NamespaceClaim.tag().to_string()
    }

    #[test]
    fn other_federation_fails() {
        let key = KeyPair::generate().unwrap();
        let s = Signed::sign(&claim(), &key, &fed(1));
        assert_eq!(
            s.verify::<NamespaceClaim>(&fed(2)).unwrap_err(),
            SignedError::BadSignature
        );
    }

    #[test]
    fn other_domain_fails_even_with_relabelled_kind() {
        let key = KeyPair::generate().unwrap();
        let s = Signed::sign(&claim(), &key, &fed(1));
        // Same payload bytes presented as a yank: wrong kind.
        assert!(matches!(
            s.verify::<pb::Yank>(&fed(1)),
            Err(SignedError::WrongKind { .. })
        ));
        // Relabel the envelope's kind: the signature covers the domain, so it fails.
        let mut p = s.to_pb();
        p.kind = Domain::Yank.tag().into();
        let relabelled = Signed::from_pb(p).unwrap();
        assert_eq!(
            relabelled.verify::<pb::Yank>(&fed(1)).unwrap_err(),
            SignedError::BadSignature
        );
    }

    #[test]
    fn oversized_envelope_is_refused_before_parsing() {
        let big = vec![0u8; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            Signed::decode(&big).unwrap_err(),
            SignedError::TooLarge(MAX_ENVELOPE_BYTES + 1)
        );
    }

    #[test]
    fn unknown_version_is_refused() {
        let key = KeyPair::generate().unwrap();
        let mut p = Signed::sign(&claim(), &key, &fed(1)).to_pb();
        p.version = 2;
        assert_eq!(Signed::from_pb(p).unwrap_err(), SignedError::UnknownVersion(2));
    }

    #[test]
    fn a_checked_signature_vouches_only_for_its_own_bytes_kind_and_federation() {
        let key = KeyPair::generate().unwrap();
        let env = Signed::sign(&claim(), &key, &fed(1));
        let checked = env.check_as_sent(&fed(1)).unwrap();
        assert_eq!(checked.id(), env.id());
        let v = env.verified_by::<NamespaceClaim>(&checked, &fed(1)).unwrap();
        assert_eq!(v.signer(), key.public());
        // Another envelope, another federation, another kind: refused.
        let other = Signed::sign(&claim(), &KeyPair::generate().unwrap(), &fed(1));
        assert!(other.verified_by::<NamespaceClaim>(&checked, &fed(1)).is_err());
        assert!(env.verified_by::<NamespaceClaim>(&checked, &fed(2)).is_err());
        assert!(matches!(
            env.verified_by::<pb::Release>(&checked, &fed(1)),
            Err(SignedError::WrongKind { .. })
        ));
        // A forged signature is never checked.
        let mut p = env.to_pb();
        p.signature[3] ^= 1;
        assert!(Signed::from_pb(p).unwrap().check_as_sent(&fed(1)).is_err());
    }

    #[test]
    fn shared_signer_keys_judge_as_a_fresh_check_does() {
        let keys = SignerKeys::default();
        let signer = KeyPair::generate().unwrap();
        let good = Signed::sign(&claim(), &signer, &fed(1));
        let mut p = good.to_pb();
        p.signature[5] ^= 1;
        let forged = Signed::from_pb(p).unwrap();
        // Bytes that are no curve point: no key, every time.
        let mut p = good.to_pb();
        p.signer = vec![0xff; 32];
        let pointless = Signed::from_pb(p).unwrap();
        for _ in 0..2 {
            assert_eq!(
                good.check_as_sent_with(&fed(1), &keys).unwrap(),
                good.check_as_sent(&fed(1)).unwrap()
            );
            assert_eq!(
                forged.check_as_sent_with(&fed(1), &keys),
                Err(SignedError::BadSignature)
            );
            assert_eq!(
                pointless.check_as_sent_with(&fed(1), &keys),
                pointless.check_as_sent(&fed(1))
            );
            assert!(pointless.check_as_sent(&fed(1)).is_err());
        }
        // Bounded: past MAX signers, keys are decompressed each time.
        let many = SignerKeys::default();
        for _ in 0..SignerKeys::MAX + 10 {
            let k = KeyPair::generate().unwrap();
            assert!(
                Signed::sign(&claim(), &k, &fed(1))
                    .check_as_sent_with(&fed(1), &many)
                    .is_ok()
            );
        }
        assert_eq!(many.0.lock().unwrap().len(), SignerKeys::MAX);
    }

    #[test]
    fn verify_many_reports_each_envelope() {
        let keys: Vec<KeyPair> = (0..3).map(|_| KeyPair::generate().unwrap()).collect();
        let mut envs: Vec<Signed> = (0..6).map(|i| Signed::sign(&claim(), &keys[i % 3], &fed(1))).collect();
        let good = verify_many::<NamespaceClaim>(&envs, &fed(1));
        assert!(good.iter().all(|r| r.is_ok()));
        assert_eq!(good[4].as_ref().unwrap().signer(), keys[1].public());
        // One forged signature: the others still verify, that one does not.
        let mut p = envs[2].to_pb();
        p.signature[5] ^= 1;
        envs[2] = Signed::from_pb(p).unwrap();
        let mixed = verify_many::<NamespaceClaim>(&envs, &fed(1));
        assert_eq!(mixed[2].as_ref().unwrap_err(), &SignedError::BadSignature);
        assert_eq!(mixed.iter().filter(|r| r.is_ok()).count(), 5);
        // Another federation fails as a whole, envelope by envelope.
        assert!(verify_many::<NamespaceClaim>(&envs, &fed(2)).iter().all(|r| r.is_err()));
    }
}
