//! Signed envelopes as a peer sends them: decode (size, shape, canonical
//! encoding), then strict verification as every record kind, alone and
//! through `verify_many`. A payload signed by a real key reaches each
//! record decoder too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packfed_protocol::{Domain, FederationId, KeyPair, Signed, pb, verify_many};

fn verify_all(env: &Signed, fed: &FederationId) {
    let _ = env.verify::<pb::Release>(fed);
    let _ = env.verify::<pb::NamespaceClaim>(fed);
    let _ = env.verify::<pb::Yank>(fed);
    let _ = env.verify::<pb::Attestation>(fed);
    let _ = env.verify::<pb::Proposal>(fed);
    let _ = env.verify::<pb::Vote>(fed);
    let _ = env.verify::<pb::ProposalCancel>(fed);
    let _ = env.verify::<pb::LearningSummary>(fed);
    let _ = env.verify::<pb::NodeAnnouncement>(fed);
    let _ = env.verify::<pb::Checkpoint>(fed);
    let many = verify_many::<pb::Release>(std::slice::from_ref(env), fed);
    assert_eq!(many[0].is_ok(), env.verify::<pb::Release>(fed).is_ok());
}

const DOMAINS: [Domain; 10] = [
    Domain::Release,
    Domain::NamespaceClaim,
    Domain::Yank,
    Domain::Attestation,
    Domain::Proposal,
    Domain::Vote,
    Domain::ProposalCancel,
    Domain::LearningSummary,
    Domain::NodeAnnouncement,
    Domain::Checkpoint,
];

fuzz_target!(|data: &[u8]| {
    let fed = FederationId([7; 32]);
    if let Ok(env) = Signed::decode(data) {
        // Only the canonical encoding is accepted, so ids cannot be re-framed.
        assert_eq!(env.encoded(), data);
        verify_all(&env, &fed);
    }
    if let Some((&which, payload)) = data.split_first() {
        let key = KeyPair::from_seed([9; 32]);
        let domain = DOMAINS[which as usize % DOMAINS.len()];
        let env = Signed::sign_payload(domain, payload.to_vec(), &key, &fed);
        if let Ok(again) = Signed::decode(env.encoded()) {
            verify_all(&again, &fed);
        }
    }
});
