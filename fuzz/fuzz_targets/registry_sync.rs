//! Registry sync as the receiving node sees it: a peer's automerge sync
//! message into a replica, then what it brought through the node's batch
//! admission. Raw bytes, and (so the fuzzer starts past automerge's
//! framing) a real sync message from a replica holding the input's
//! records, with input bytes written over it.
#![no_main]

use std::sync::LazyLock;

use automerge::sync;
use libfuzzer_sys::fuzz_target;
use packfed_node::config::Home;
use packfed_node::core::Channel;
use packfed_node::node::Node;
use packfed_node::registry::Replica;
use packfed_protocol::RecordId;

static VICTIM: LazyLock<(Node, tempfile::TempDir)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("scratch home");
    let home = Home {
        root: dir.path().join("home"),
    };
    packfed_node::init::init_dev_home(&home).expect("a dev home");
    (Node::open(home).expect("open the node"), dir)
});

fn absorb(bytes: &[u8]) {
    let mut replica = Replica::new();
    let mut state = sync::State::new();
    // Every record's signature "holds" here, so forged envelopes get past
    // the screen to the node's own checks (the product's screen refuses
    // more, never less).
    if let Ok(got) = replica.receive(&mut state, bytes, |_| true) {
        let records: Vec<Vec<u8>> = got.candidates.into_iter().map(|(_, b)| b).collect();
        let _ = VICTIM.0.ingest_batch(&records, &Default::default(), Channel::Public);
        let _ = replica.generate(&mut state);
    }
}

fuzz_target!(|data: &[u8]| {
    absorb(data);
    if data.len() < 4 {
        return;
    }
    // A sender replica with up to 4 entries cut from the input.
    let mut sender = Replica::new();
    for piece in data.chunks(data.len().div_ceil(4)).take(4) {
        let _ = sender.insert(&RecordId::of(piece), piece);
    }
    let Some(mut msg) = sender.generate(&mut sync::State::new()) else {
        return;
    };
    let at = u16::from_le_bytes([data[0], data[1]]) as usize % msg.len().max(1);
    for (i, b) in data[2..].iter().take(8).enumerate() {
        if let Some(slot) = msg.get_mut(at + i) {
            *slot ^= b;
        }
    }
    absorb(&msg);
});
