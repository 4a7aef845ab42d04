//! No change to a signed envelope, however small, may survive verification:
//! not to the payload, the signer, the signature, the framing, the federation
//! or the record kind.

use packfed_protocol::pb;
use packfed_protocol::records::check_release;
use packfed_protocol::signed::{Domain, Record};
use packfed_protocol::{FederationId, KeyPair, Signed, SignedError};
use prost::Message;

const FED: FederationId = FederationId([7; 32]);
const OTHER_FED: FederationId = FederationId([8; 32]);

/// Every single-bit mask; includes the 0x01 and 0x80 flips.
const MASKS: [u8; 8] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80];

fn release() -> pb::Release {
    pb::Release {
        name: "acme/rest-api".into(),
        version: "1.2.3".into(),
        content_hash: (0u8..32).map(|i| i.wrapping_mul(37) ^ 0x5a).collect(),
        size: 1_234_567,
        description: "A REST API template pack with tests and examples".into(),
        license: "MIT OR Apache-2.0".into(),
        keywords: vec!["rest".into(), "api".into(), "openapi".into()],
        category: "web".into(),
        authors: vec!["Ada Lovelace <ada@example.org>".into()],
        dependencies: vec![
            pb::Dependency {
                name: "acme/base".into(),
                requirement: "^1.0".into(),
            },
            pb::Dependency {
                name: "other/util".into(),
                requirement: ">=0.3, <0.5".into(),
            },
        ],
        visibility: pb::Visibility::Org as i32,
        quality: Some(pb::QualityReport {
            score: 85,
            tier: "production".into(),
            guards: vec![
                pb::QualityGuard {
                    name: "readme".into(),
                    weight: 15,
                    passed: true,
                    detail: "README.md, 2048 bytes".into(),
                },
                pb::QualityGuard {
                    name: "examples".into(),
                    weight: 15,
                    passed: false,
                    detail: String::new(),
                },
            ],
        }),
        published_at_ms: 1_700_000_123_456,
    }
}

fn signed_release() -> (Signed, KeyPair) {
    let key = KeyPair::generate().unwrap();
    (Signed::sign(&release(), &key, &FED), key)
}

/// Rebuilds an envelope from a tampered prost message and returns why it was
/// refused (at rebuilding or at verifying as a release). Panics if it verifies.
fn refusal(p: pb::Signed, what: &str) -> SignedError {
    match Signed::from_pb(p) {
        Err(e) => e,
        Ok(s) => match s.verify::<pb::Release>(&FED) {
            Err(e) => e,
            Ok(v) => panic!("{what}: tampered envelope verified: {:?}", v.record()),
        },
    }
}

#[test]
fn untampered_release_verifies() {
    let (s, key) = signed_release();
    let v = s.verify::<pb::Release>(&FED).unwrap();
    assert_eq!(v.record(), &release());
    assert_eq!(v.signer(), key.public());
    assert_eq!(v.id(), s.id());
    check_release(v.record()).unwrap();

    // The bytes as encoded decode to the same envelope with the same id.
    let back = Signed::decode(s.encoded()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.id(), s.id());
    assert_eq!(back.verify::<pb::Release>(&FED).unwrap().record(), &release());
    // And through the prost message too.
    let again = Signed::from_pb(s.to_pb()).unwrap();
    assert_eq!(again.encoded(), s.encoded());
    assert_eq!(s.kind(), Domain::Release.tag());
    assert_eq!(s.domain(), Some(Domain::Release));
    assert_eq!(s.claimed_signer(), key.public().as_bytes());
}

#[test]
fn every_payload_bit_flip_is_refused() {
    let (s, _) = signed_release();
    let original = s.to_pb();
    assert!(original.payload.len() > 200, "payload should exercise many fields");
    for i in 0..original.payload.len() {
        for mask in MASKS {
            let mut p = original.clone();
            p.payload[i] ^= mask;
            let err = refusal(p, &format!("payload[{i}] ^ {mask:#04x}"));
            assert_eq!(err, SignedError::BadSignature, "payload[{i}] ^ {mask:#04x}");
        }
    }
}

#[test]
fn payload_truncation_and_extension_are_refused() {
    let (s, _) = signed_release();
    let original = s.to_pb();
    for len in 0..original.payload.len() {
        let mut p = original.clone();
        p.payload.truncate(len);
        assert_eq!(refusal(p, &format!("payload[..{len}]")), SignedError::BadSignature);
    }
    // Appending a valid field (an unknown one, which prost would skip) must
    // still break the signature.
    let mut p = original.clone();
    p.payload.extend_from_slice(&[0x78, 0x01]); // field 15, varint 1
    assert_eq!(refusal(p, "payload + unknown field"), SignedError::BadSignature);
    // So must re-encoding the same record differently (duplicated field).
    let mut p = original;
    p.payload.extend_from_slice(
        &pb::Release {
            name: release().name,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(refusal(p, "payload + duplicated name"), SignedError::BadSignature);
}

#[test]
fn every_signer_bit_flip_is_refused() {
    let (s, _) = signed_release();
    let original = s.to_pb();
    assert_eq!(original.signer.len(), 32);
    for i in 0..original.signer.len() {
        for mask in MASKS {
            let mut p = original.clone();
            p.signer[i] ^= mask;
            let err = refusal(p, &format!("signer[{i}] ^ {mask:#04x}"));
            assert!(
                matches!(err, SignedError::BadSigner | SignedError::BadSignature),
                "signer[{i}] ^ {mask:#04x}: {err:?}"
            );
        }
    }
}

#[test]
fn other_signer_is_refused() {
    let (s, _) = signed_release();
    let mut p = s.to_pb();
    p.signer = KeyPair::generate().unwrap().public().as_bytes().to_vec();
    assert_eq!(refusal(p, "other signer"), SignedError::BadSignature);
}

#[test]
fn signer_of_wrong_length_is_refused() {
    let (s, _) = signed_release();
    let original = s.to_pb();
    for len in [0usize, 1, 31, 33, 64] {
        let mut p = original.clone();
        p.signer.resize(len, 0xab);
        assert_eq!(
            refusal(p, &format!("signer of {len} bytes")),
            SignedError::BadSigner,
            "{len}"
        );
    }
}

#[test]
fn every_signature_bit_flip_is_refused() {
    let (s, _) = signed_release();
    let original = s.to_pb();
    assert_eq!(original.signature.len(), 64);
    for i in 0..original.signature.len() {
        for mask in MASKS {
            let mut p = original.clone();
            p.signature[i] ^= mask;
            let err = refusal(p, &format!("signature[{i}] ^ {mask:#04x}"));
            assert_eq!(err, SignedError::BadSignature, "signature[{i}] ^ {mask:#04x}");
        }
    }
}

#[test]
fn signature_of_wrong_length_is_refused() {
    let (s, _) = signed_release();
    let original = s.to_pb();
    for len in [0usize, 1, 32, 63, 65, 128] {
        let mut p = original.clone();
        p.signature.resize(len, 0);
        assert_eq!(
            refusal(p, &format!("signature of {len} bytes")),
            SignedError::MalformedSignature,
            "{len}"
        );
    }
    // An all-zero signature of the right length.
    let mut p = original;
    p.signature = vec![0; 64];
    assert_eq!(refusal(p, "zero signature"), SignedError::BadSignature);
}

/// The signature from one valid release pasted onto another must fail.
#[test]
fn signature_swapped_between_records_is_refused() {
    let key = KeyPair::generate().unwrap();
    let a = Signed::sign(&release(), &key, &FED);
    let mut other = release();
    other.version = "1.2.4".into();
    let b = Signed::sign(&other, &key, &FED);
    b.verify::<pb::Release>(&FED).unwrap();
    let mut p = b.to_pb();
    p.signature = a.to_pb().signature;
    assert_eq!(refusal(p, "swapped signature"), SignedError::BadSignature);
}

#[test]
fn every_bit_flip_of_the_encoded_envelope_is_refused() {
    let (s, _) = signed_release();
    let bytes = s.encoded().to_vec();
    let mut decode_failures = 0usize;
    let mut verify_failures = 0usize;
    for i in 0..bytes.len() {
        for mask in MASKS {
            let mut b = bytes.clone();
            b[i] ^= mask;
            match Signed::decode(&b) {
                Err(_) => decode_failures += 1,
                Ok(t) => {
                    let r = t.verify::<pb::Release>(&FED);
                    assert!(r.is_err(), "byte {i} ^ {mask:#04x} verified: {t:?}");
                    verify_failures += 1;
                }
            }
        }
    }
    assert_eq!(decode_failures + verify_failures, bytes.len() * MASKS.len());
    // Both layers did some of the refusing.
    assert!(
        decode_failures > 0 && verify_failures > 0,
        "{decode_failures} {verify_failures}"
    );
}

#[test]
fn every_truncation_of_the_encoded_envelope_is_refused() {
    let (s, _) = signed_release();
    let bytes = s.encoded();
    for len in 0..bytes.len() {
        if let Ok(t) = Signed::decode(&bytes[..len]) {
            assert!(t.verify::<pb::Release>(&FED).is_err(), "prefix of {len} bytes verified");
        }
    }
}

#[test]
fn other_federation_is_refused() {
    let key = KeyPair::generate().unwrap();
    let rel = Signed::sign(&release(), &key, &FED);
    assert!(rel.verify::<pb::Release>(&FED).is_ok());
    assert_eq!(
        rel.verify::<pb::Release>(&OTHER_FED).unwrap_err(),
        SignedError::BadSignature
    );
    // Federations differing in a single bit.
    for i in 0..32 {
        let mut f = FED;
        f.0[i] ^= 0x01;
        assert_eq!(
            rel.verify::<pb::Release>(&f).unwrap_err(),
            SignedError::BadSignature,
            "fed byte {i}"
        );
    }

    let claim = pb::NamespaceClaim {
        namespace: "acme".into(),
        claimed_at_ms: 42,
    };
    let c = Signed::sign(&claim, &key, &OTHER_FED);
    assert_eq!(c.verify::<pb::NamespaceClaim>(&OTHER_FED).unwrap().record(), &claim);
    assert_eq!(
        c.verify::<pb::NamespaceClaim>(&FED).unwrap_err(),
        SignedError::BadSignature
    );

    let yank = yank();
    let y = Signed::sign(&yank, &key, &FED);
    assert_eq!(y.verify::<pb::Yank>(&FED).unwrap().record(), &yank);
    assert_eq!(y.verify::<pb::Yank>(&OTHER_FED).unwrap_err(), SignedError::BadSignature);
}

fn yank() -> pb::Yank {
    pb::Yank {
        name: "acme/rest-api".into(),
        version: "1.2.3".into(),
        content_hash: vec![9; 32],
        reason: "security issue".into(),
        yanked_at_ms: 1_700_000_999_000,
    }
}

fn relabelled(s: &Signed, kind: &str) -> Signed {
    let mut p = s.to_pb();
    p.kind = kind.into();
    Signed::from_pb(p).unwrap()
}

#[test]
fn release_is_not_accepted_as_another_kind() {
    let (s, _) = signed_release();
    // As received: the kind does not match what the caller expects.
    assert!(matches!(s.verify::<pb::Yank>(&FED), Err(SignedError::WrongKind { .. })));
    assert!(matches!(
        s.verify::<pb::NamespaceClaim>(&FED),
        Err(SignedError::WrongKind { .. })
    ));

    // Relabelled as another kind: the domain tag is signed, so it fails.
    let as_yank = relabelled(&s, pb::Yank::DOMAIN.tag());
    assert_eq!(as_yank.domain(), Some(Domain::Yank));
    assert_eq!(as_yank.verify::<pb::Yank>(&FED).unwrap_err(), SignedError::BadSignature);
    assert!(matches!(
        as_yank.verify::<pb::Release>(&FED),
        Err(SignedError::WrongKind { .. })
    ));

    let as_claim = relabelled(&s, pb::NamespaceClaim::DOMAIN.tag());
    assert_eq!(
        as_claim.verify::<pb::NamespaceClaim>(&FED).unwrap_err(),
        SignedError::BadSignature
    );

    // Relabelled as every other domain there is, or as nonsense.
    for d in Domain::ALL.into_iter().filter(|d| *d != Domain::Release) {
        let t = relabelled(&s, d.tag());
        assert!(t.verify::<pb::Release>(&FED).is_err(), "{d:?}");
    }
    for kind in [
        "",
        "packfed/release/v2",
        "packfed/release/v1\0",
        "PACKFED/RELEASE/V1",
        " packfed/release/v1",
    ] {
        let t = relabelled(&s, kind);
        assert_eq!(t.domain(), None, "{kind:?}");
        assert!(
            matches!(t.verify::<pb::Release>(&FED), Err(SignedError::WrongKind { .. })),
            "{kind:?}"
        );
    }
}

#[test]
fn other_kinds_are_not_accepted_as_a_release() {
    let key = KeyPair::generate().unwrap();
    let y = Signed::sign(&yank(), &key, &FED);
    assert!(matches!(
        y.verify::<pb::Release>(&FED),
        Err(SignedError::WrongKind { .. })
    ));
    // A yank's payload happens to share fields 1-3 with a release; relabelled
    // as a release it must still fail on the signature.
    let as_release = relabelled(&y, Domain::Release.tag());
    assert_eq!(
        as_release.verify::<pb::Release>(&FED).unwrap_err(),
        SignedError::BadSignature
    );

    let c = Signed::sign(
        &pb::NamespaceClaim {
            namespace: "acme".into(),
            claimed_at_ms: 1,
        },
        &key,
        &FED,
    );
    let as_release = relabelled(&c, Domain::Release.tag());
    assert_eq!(
        as_release.verify::<pb::Release>(&FED).unwrap_err(),
        SignedError::BadSignature
    );
    let as_yank = relabelled(&c, Domain::Yank.tag());
    assert_eq!(as_yank.verify::<pb::Yank>(&FED).unwrap_err(), SignedError::BadSignature);
}

/// A payload signed honestly under one domain does not verify under another
/// even when the bytes happen to decode as both record types.
#[test]
fn same_payload_bytes_under_two_domains_are_distinct() {
    let key = KeyPair::generate().unwrap();
    // name, version and content_hash only: valid as a Release and as a Yank.
    let shared = pb::Yank {
        name: "acme/x".into(),
        version: "1.0.0".into(),
        content_hash: vec![1; 32],
        ..Default::default()
    }
    .encode_to_vec();
    assert!(pb::Release::decode(shared.as_slice()).is_ok());

    let as_yank = Signed::sign_payload(Domain::Yank, shared.clone(), &key, &FED);
    let as_release = Signed::sign_payload(Domain::Release, shared, &key, &FED);
    assert_ne!(as_yank.to_pb().signature, as_release.to_pb().signature);
    assert!(as_yank.verify::<pb::Yank>(&FED).is_ok());
    assert!(as_release.verify::<pb::Release>(&FED).is_ok());

    // Swap the signatures: each now carries the other domain's signature.
    let mut y = as_yank.to_pb();
    let mut r = as_release.to_pb();
    std::mem::swap(&mut y.signature, &mut r.signature);
    assert_eq!(
        Signed::from_pb(y).unwrap().verify::<pb::Yank>(&FED).unwrap_err(),
        SignedError::BadSignature
    );
    assert_eq!(
        Signed::from_pb(r).unwrap().verify::<pb::Release>(&FED).unwrap_err(),
        SignedError::BadSignature
    );
}

#[test]
fn garbage_payload_with_valid_signature_is_a_payload_error() {
    // The signature is checked first; a correctly signed payload that is not
    // a release is then refused as such rather than half-decoded.
    let key = KeyPair::generate().unwrap();
    let s = Signed::sign_payload(Domain::Release, vec![0xff; 16], &key, &FED);
    assert!(matches!(
        s.verify::<pb::Release>(&FED),
        Err(SignedError::BadPayload { .. })
    ));
}

/// Re-framings of an envelope that keep every field's value: the signature
/// still verifies, because it covers only the fields, so these must at least
/// not produce a second record id for the same signed record.
fn reframings(s: &Signed) -> Vec<(&'static str, Vec<u8>)> {
    let bytes = s.encoded().to_vec();
    let p = s.to_pb();
    let mut out = Vec::new();

    // An unknown field appended (prost skips unknown fields).
    let mut b = bytes.clone();
    b.extend_from_slice(&[0x78, 0x01]); // field 15, varint 1
    out.push(("unknown field appended", b));

    // The version field repeated (proto3: the last value wins).
    let mut b = bytes.clone();
    b.extend_from_slice(&[0x08, 0x01]);
    out.push(("version field repeated", b));

    // The fields in another order.
    let mut b = Vec::new();
    pb::Signed {
        signature: p.signature.clone(),
        ..Default::default()
    }
    .encode(&mut b)
    .unwrap();
    pb::Signed {
        version: p.version,
        kind: p.kind.clone(),
        payload: p.payload.clone(),
        signer: p.signer.clone(),
        ..Default::default()
    }
    .encode(&mut b)
    .unwrap();
    out.push(("signature field first", b));

    // A non-minimal varint for the version value (1 as 0x81 0x00).
    let mut b = vec![0x08, 0x81, 0x00];
    b.extend_from_slice(&bytes[2..]);
    assert_eq!(&bytes[..2], &[0x08, 0x01]);
    out.push(("non-minimal varint", b));

    out
}

/// Known weakness, see the report: the record id is BLAKE3 of the envelope
/// bytes as received, and `Signed::decode` accepts non-canonical encodings,
/// so anyone relaying a record can give it a new id without the key.
#[test]

fn reframed_envelope_keeps_its_id_or_is_refused() {
    let (s, _) = signed_release();
    let mut failures = Vec::new();
    for (what, b) in reframings(&s) {
        if let Ok(t) = Signed::decode(&b)
            && t.verify::<pb::Release>(&FED).is_ok()
            && t.id() != s.id()
        {
            failures.push(what);
        }
    }
    assert!(failures.is_empty(), "verified with a new record id: {failures:?}");
}
