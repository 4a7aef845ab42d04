//! Federated learning of the search ranking weights: the pure core.
//!
//! Everything here is sans-IO and deterministic: no clock, sockets, threads or
//! ambient randomness (randomness comes from a caller-seeded [`Rng`]).
//!
//! **What is learned.** The five weights of the linear ranking [`Model`]
//! (schema [`SCHEMA_VERSION`]) over each result's features `text`, `quality`,
//! `attested`, `installs`, `recency`.
//!
//! **What stays local.** Each install is an [`Event`]: the feature vectors of
//! the results the user was shown and which one was installed. Events never
//! leave the node.
//!
//! **What is shared.** Once per round a node trains from the current global
//! model on its events ([`train::update`]: position-bias-corrected conditional
//! logit, L2-anchored to the global model) and shares only the delta, clipped
//! to a norm bound ([`clip`]), optionally with Gaussian noise for
//! differential privacy ([`dp::privatize`]), plus the number of events it
//! used ([`train::usable`]).
//!
//! **The rules.** Receivers drop deltas that are non-finite or longer than the
//! bound ([`validate`]), weigh each node by its sample count capped at a
//! `sample_cap`, and combine the round's deltas coordinate-wise with a robust
//! [`Rule`]: the trimmed mean trims by count, so with at most ⌊trim·n⌋ poisoned
//! contributions every coordinate of the result stays within the honest
//! contributions' range whatever the attackers claim ([`mod@aggregate`] has the
//! proof). Everyone adds the aggregate to the global model ([`Model::apply`],
//! which keeps weights within ±[`MAX_WEIGHT`]).
//!
//! [`sim`] is the evaluation harness that measures all of this on a synthetic
//! federation.

pub mod aggregate;
pub mod dp;
pub mod model;
pub mod sim;
pub mod train;

pub use aggregate::{Contribution, Rule, aggregate, trim_count, validate};
pub use dp::{DpConfig, Rng, privatize};
pub use model::{DEFAULT_WEIGHTS, FEATURE_NAMES, FEATURES, MAX_WEIGHT, Model, SCHEMA_VERSION};
pub use sim::{SimConfig, SimReport};
pub use train::{Event, Loss, TrainConfig, clip, train, update};
