//! packfed-node: the `packfed` command line and the node daemon.
//!
//! Module map (one concern each):
//! - [`config`]: the node home and its config file; [`init`]: creating a home
//! - [`keys`]: key files in the home
//! - [`store`]: the sled database (blobs with outboards, records, indexes)
//! - [`publish`]: the node side of a publish (verify, recompute, commit)
//! - [`packing`]: the publisher side (pack, assess, sign)
//! - [`core`]: the sans-IO rules: admission, verdicts, governance, learning rounds
//! - [`node`]: the shell around the core: the store, the registry documents,
//!   and carrying out what the core decides
//! - [`registry`], [`docfile`]: the replicated registry document and its file
//! - [`memory`]: returning freed memory to the OS after bulk loads
//! - [`search`]: local search
//! - [`api`]: the HTTP/JSON API; [`daemon`]: `packfed node run`
//! - [`client`]: the CLI's connection to a daemon
//! - [`install`]: resolve, fetch, verify, install, and `verify`
//! - [`cli`]: argument parsing and output

pub mod api;
pub mod blobs;
pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod daemon;
pub mod docfile;
pub mod fetch;
pub mod init;
pub mod install;
pub mod keys;
pub mod learn;
pub mod memory;
pub mod net;
pub mod node;
pub mod packing;
pub mod publish;
pub mod registry;
pub mod resolve;
pub mod search;
pub mod store;
