//! Creating a node home: `packfed init`, and the development node that
//! `packfed node run` sets up on an empty home.

use std::fs;

use anyhow::{Context, Result, bail};
use packfed_governance::{Genesis, Member, Parameters, Policy, Role};

use crate::config::{Config, Home, NodeRole, write_atomic, write_private};
use crate::keys;

/// What `packfed init` was asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub name: String,
    pub role: NodeRole,
    pub genesis: Vec<u8>,
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub api: Option<String>,
    pub org: Vec<String>,
}

/// What init created.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub peer_id: String,
    pub federation_id: String,
}

/// A fresh random hex string (API tokens, genesis salts).
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source failed: {e}"))?;
    Ok(hex::encode(b))
}

/// Creates the home: config, genesis copy, node key, API token, store dir.
pub fn init_home(home: &Home, opts: InitOptions) -> Result<Initialized> {
    if home.config().exists() {
        bail!(
            "{} is already initialized; use another --home or remove it first",
            home.root.display()
        );
    }
    let genesis = Genesis::parse(&opts.genesis).context("the --federation file is not a valid genesis")?;
    let mut config = Config::default_config();
    config.node.name = opts.name;
    config.node.role = opts.role;
    if !opts.listen.is_empty() {
        config.net.listen = opts.listen;
    }
    config.net.bootstrap = opts.bootstrap;
    if let Some(api) = opts.api {
        api.parse::<std::net::SocketAddr>()
            .with_context(|| format!("--api {api:?} must be HOST:PORT, e.g. 127.0.0.1:7420"))?;
        config.api.listen = api;
    }
    config.org.peers = opts.org;

    fs::create_dir_all(&home.root).with_context(|| format!("creating {}", home.root.display()))?;
    write_atomic(&home.genesis(), &opts.genesis)?;
    let key = keys::node_key(home)?;
    write_private(&home.api_token(), random_hex(32)?.as_bytes())?;
    fs::create_dir_all(home.store())?;
    // The config goes last: its presence marks a complete home.
    write_atomic(&home.config(), toml::to_string_pretty(&config)?.as_bytes())?;
    Ok(Initialized {
        peer_id: keys::peer_id(&key)?.to_string(),
        federation_id: genesis.id.to_hex(),
    })
}

/// Sets up a development node on an empty home: a `default` key that is the
/// only (maintainer) member of a new federation, and the embedded config.
pub fn init_dev_home(home: &Home) -> Result<Initialized> {
    let key = match keys::load_key(home, "default") {
        Ok(k) => k,
        Err(_) => keys::new_key(home, "default")?,
    };
    let genesis = Genesis::render(
        "dev",
        &random_hex(16)?,
        vec![Member {
            public_key: key.public(),
            role: Role::Maintainer,
            weight: 1,
        }],
        Parameters::default(),
        Policy::default(),
    )?;
    init_home(
        home,
        InitOptions {
            name: "packfed-node".into(),
            role: NodeRole::Public,
            genesis: genesis.into_bytes(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            api: None,
            org: Vec::new(),
        },
    )
}
