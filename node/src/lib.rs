//! packfed-node: the `packfed` command line and the node daemon.
//!
//! Module map, top-down (no module imports one above it):
//! - [`cli`]: argument parsing and output; [`client`]: its connection to a
//!   daemon; [`install`]: resolve ([`resolve`]), fetch, verify, install;
//!   [`lifecycle`]: outdated, upgrade, uninstall, history, rollback;
//!   [`generate`]: render a pack's templates ([`templates`]) into a project;
//!   [`project`]: an install directory (lockfile, lock, kept archives,
//!   transactions, `verify`)
//! - [`daemon`]: `packfed node run`, putting the pieces below together
//! - [`api`]: the HTTP/JSON API
//! - [`search`]: local search and the federated fan-out; [`sparql`]: the
//!   catalog as an RDF graph, read-only SPARQL over it
//! - [`fetch`]: fetching blobs from providers; [`blobs`]: iroh-blobs
//! - [`net`]: the libp2p reactor
//! - [`node`]: the shell around the core: store, registry documents, effects
//! - [`core`]: the sans-IO rules: admission, verdicts, governance, learning rounds
//! - [`publish`]: the node side of a publish; [`packing`]: the publisher side
//! - [`store`]: the sled database; [`registry`], [`docfile`]: the replicated
//!   registry document and its file; [`learn`]: the pure learning math
//! - [`config`], [`init`], [`keys`]: the home, its config and keys;
//!   [`memory`]: returning freed memory to the OS after bulk loads

pub mod api;
pub mod blobs;
pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod daemon;
pub mod docfile;
pub mod fetch;
pub mod generate;
pub mod init;
pub mod install;
pub mod keys;
pub mod learn;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod node;
pub mod packing;
pub mod project;
pub mod publish;
pub mod registry;
pub mod resolve;
pub mod search;
pub mod settings;
pub mod sparql;
pub mod store;
pub mod swarm;
pub mod templates;
pub mod upload_limit;
pub mod web;
