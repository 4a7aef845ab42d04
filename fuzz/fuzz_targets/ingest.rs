//! What a peer gossips, through the node's own admission path
//! (`Node::ingest`: decode, verify, per-kind checks, learning summaries,
//! checkpoints, governance, store). Raw bytes first; then the input as the
//! payload of a record of the kind its first byte picks, signed by a fresh
//! key or by the federation's only member (a witness), so the fuzzer
//! reaches each record's checks behind the signature.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use packfed_node::config::Home;
use packfed_node::core::Channel;
use packfed_node::node::Node;
use packfed_protocol::{Domain, KeyPair, Signed};

struct Victim {
    node: Node,
    member: KeyPair,
    _dir: tempfile::TempDir,
}

static VICTIM: LazyLock<Victim> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("scratch home");
    let home = Home {
        root: dir.path().join("home"),
    };
    packfed_node::init::init_dev_home(&home).expect("a dev home");
    let member = packfed_node::keys::load_key(&home, "default").expect("the member key");
    let node = Node::open(home).expect("open the node");
    Victim {
        node,
        member,
        _dir: dir,
    }
});

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
    let v = &*VICTIM;
    let fed = *v.node.federation();
    let _ = v.node.ingest(data, Channel::Public);
    if let Some((&which, payload)) = data.split_first() {
        let fresh = KeyPair::from_seed([which; 32]);
        let key = if which & 0x80 != 0 { &v.member } else { &fresh };
        let domain = DOMAINS[which as usize % DOMAINS.len()];
        let env = Signed::sign_payload(domain, payload.to_vec(), key, &fed);
        let channel = if which & 0x40 != 0 { Channel::Org } else { Channel::Public };
        let _ = v.node.ingest(env.encoded(), channel);
    }
});
