//! Signatures with a small-torsion component: valid under ed25519 batch
//! verification (for about half the choices of nonce, which the key's
//! holder grinds for), refused by strict verification. Only a key's holder
//! can make one, so a hostile signer is exactly who would.
//!
//! Construction: R' = rB + T with T the point of order 2, k = H(R' ‖ A ‖ M),
//! s = r + k·a. Then sB - kA - R' = -T: not the identity (strict refuses),
//! but it vanishes from a batch equation whenever the batch's random
//! coefficient for this signature is even.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::scalar::Scalar;
use packfed_protocol::signed::Record;
use packfed_protocol::{FederationId, KeyPair, Signed, signing_message};
use sha2::{Digest, Sha512};

/// `record` signed by `key` with a torsion component in R, ground until a
/// lone ed25519 batch check accepts it (strict verification never does).
pub fn sign_with_torsion<R: Record>(record: &R, key: &KeyPair, federation: &FederationId) -> Signed {
    let payload = record.encode_to_vec();
    let msg = signing_message(R::DOMAIN, federation, &payload);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(key.public().as_bytes()).expect("a valid key");
    let h = Sha512::digest(key.seed());
    let mut clamped: [u8; 32] = h[..32].try_into().expect("32 bytes");
    clamped[0] &= 248;
    clamped[31] &= 127;
    clamped[31] |= 64;
    let a = Scalar::from_bytes_mod_order(clamped);
    let order2 = EIGHT_TORSION[4];
    loop {
        let mut wide = [0u8; 64];
        getrandom::fill(&mut wide).expect("random nonce");
        let r = Scalar::from_bytes_mod_order_wide(&wide);
        let big_r = (ED25519_BASEPOINT_POINT * r + order2).compress();
        let mut hasher = Sha512::new();
        hasher.update(big_r.as_bytes());
        hasher.update(key.public().as_bytes());
        hasher.update(&msg);
        let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
        let s = r + k * a;
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(big_r.as_bytes());
        bytes[32..].copy_from_slice(s.as_bytes());
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        debug_assert!(vk.verify_strict(&msg, &sig).is_err());
        if ed25519_dalek::verify_batch(&[msg.as_slice()], &[sig], &[vk]).is_ok() {
            return Signed::with_signature(R::DOMAIN, payload, key.public(), bytes);
        }
    }
}
