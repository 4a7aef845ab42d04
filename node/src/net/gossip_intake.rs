//! Gossiped records are judged off the swarm task: one worker on the
//! blocking pool verifies and admits them in arrival order (a namespace
//! claim before the release it covers, as sent), and the reactor reports
//! each verdict to gossipsub when it comes back. The queue is bounded: when
//! a flood fills it, further messages are neither forwarded nor penalized
//! (registry sync brings what was valid), and the swarm task stays free.

use std::sync::Arc;

use libp2p::{PeerId, gossipsub};
use tokio::sync::mpsc;

use crate::core::Channel;
use crate::node::{Ingested, Node};

/// Gossiped messages waiting for the worker, at most.
const QUEUE: usize = 4096;

struct Job {
    source: PeerId,
    id: gossipsub::MessageId,
    topic: String,
    data: Vec<u8>,
}

/// A gossiped message's verdict, back on the swarm task.
pub(super) struct Judged {
    pub source: PeerId,
    pub id: gossipsub::MessageId,
    pub topic: String,
    pub outcome: Ingested,
}

pub(super) struct Intake {
    jobs: mpsc::Sender<Job>,
    waiting: Option<mpsc::Receiver<Job>>,
    verdicts: mpsc::UnboundedSender<Judged>,
    pub(super) judged: mpsc::UnboundedReceiver<Judged>,
}

impl Intake {
    pub(super) fn new() -> Intake {
        let (jobs, waiting) = mpsc::channel(QUEUE);
        let (verdicts, judged) = mpsc::unbounded_channel();
        Intake {
            jobs,
            waiting: Some(waiting),
            verdicts,
            judged,
        }
    }

    /// Starts the worker (once; it ends with the reactor).
    pub(super) fn start(&mut self, node: Arc<Node>) {
        let Some(mut waiting) = self.waiting.take() else { return };
        let verdicts = self.verdicts.clone();
        tokio::task::spawn_blocking(move || {
            while let Some(Job {
                source,
                id,
                topic,
                data,
            }) = waiting.blocking_recv()
            {
                let outcome = node.ingest(&data, Channel::Public);
                if verdicts
                    .send(Judged {
                        source,
                        id,
                        topic,
                        outcome,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
    }

    /// Queues a message; false if the queue is full.
    pub(super) fn submit(&self, source: PeerId, id: gossipsub::MessageId, topic: String, data: Vec<u8>) -> bool {
        self.jobs
            .try_send(Job {
                source,
                id,
                topic,
                data,
            })
            .is_ok()
    }
}
