//! The node home: where each file lives, the config file, and their loading.
//!
//! ```text
//! HOME/config.toml     node configuration (see default-config.toml)
//! HOME/genesis.toml    the federation's genesis, copied verbatim
//! HOME/node.key        the node key (0600): one seed for libp2p and iroh
//! HOME/api-token       bearer token for mutating API calls (0600)
//! HOME/keys/NAME.key   publisher and member keys (0600)
//! HOME/store/          the sled database
//! HOME/node.json       written by a running daemon, removed on exit
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The embedded default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// A node's role in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Company,
    Regional,
    Public,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Company => "company",
            NodeRole::Regional => "regional",
            NodeRole::Public => "public",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub name: String,
    pub role: NodeRole,
    /// Repack and re-assess every pack this node fetches and sign what it
    /// finds (reproducible-build and quality attestations). Default: on for
    /// regional mirrors (the federation's independent builders), off for
    /// company and public nodes, which fetch only to install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_check: Option<bool>,
    /// The largest pack this node stores, fetches or mirrors, whatever a
    /// release claims (the federation policy's `max_pack_bytes` may refuse
    /// smaller ones). Default 1 GiB; at most the protocol's archive limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pack_bytes: Option<u64>,
}

/// The default of `[node] max_pack_bytes`.
pub const DEFAULT_MAX_PACK_BYTES: u64 = 1 << 30;

impl NodeSection {
    pub fn self_check(&self) -> bool {
        self.self_check.unwrap_or(self.role == NodeRole::Regional)
    }

    pub fn max_pack_bytes(&self) -> u64 {
        self.max_pack_bytes
            .unwrap_or(DEFAULT_MAX_PACK_BYTES)
            .min(packfed_protocol::limits::MAX_ARCHIVE_BYTES)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSection {
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub bootstrap: Vec<String>,
    #[serde(default)]
    pub mdns: bool,
    /// Pack bytes per second this node uploads at most, over both
    /// transports together; absent or 0: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upload_rate: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub listen: String,
    /// Required to listen on an address that is not loopback; the API then
    /// serves only its read-only public part (no token, no org data, no
    /// writes, no blob downloads), since it speaks clear HTTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
}

impl ApiSection {
    /// Whether `listen` reaches beyond this machine: any address that is
    /// not loopback (a host name other than `localhost` counts as beyond).
    pub fn exposed(&self) -> bool {
        match self.listen.parse::<std::net::SocketAddr>() {
            Ok(a) => !a.ip().is_loopback(),
            Err(_) => !self
                .listen
                .rsplit_once(':')
                .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSection {
    #[serde(default)]
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
}

/// `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub net: NetSection,
    pub api: ApiSection,
    #[serde(default)]
    pub org: OrgSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub trust: TrustSection,
    #[serde(default)]
    pub learn: LearnSection,
    #[serde(default)]
    pub witness: WitnessSection,
    #[serde(default)]
    pub sparql: SparqlSection,
}

/// `[sparql]`: limits of `packfed sparql` queries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparqlSection {
    /// A query running longer is stopped (milliseconds).
    #[serde(default = "default_sparql_timeout_ms")]
    pub timeout_ms: u64,
    /// Results past this many are left out (the answer says so).
    #[serde(default = "default_sparql_max_results")]
    pub max_results: usize,
}

fn default_sparql_timeout_ms() -> u64 {
    5_000
}

fn default_sparql_max_results() -> usize {
    10_000
}

impl Default for SparqlSection {
    fn default() -> Self {
        SparqlSection {
            timeout_ms: default_sparql_timeout_ms(),
            max_results: default_sparql_max_results(),
        }
    }
}

/// `[witness]`: the checkpoint logs this node keeps for witness members.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSection {
    /// Names (or public keys) of the home's keys to witness with; absent:
    /// every key in the home that belongs to a witness member. One witness
    /// key must be used by one node only: two nodes signing one key's log
    /// equivocate, and that witness stops counting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Sign a checkpoint this soon after news (milliseconds).
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
    /// Sign one at least this often with no news, so peers see the view is
    /// fresh (milliseconds).
    #[serde(default = "default_idle_ms")]
    pub idle_interval_ms: u64,
    /// A view without checkpoints from a witness quorum newer than this is
    /// stale: installs refuse it (e.g. "1h").
    #[serde(default = "default_staleness")]
    pub max_staleness: packfed_governance::duration::Duration,
}

fn default_checkpoint_ms() -> u64 {
    500
}

fn default_idle_ms() -> u64 {
    60_000
}

fn default_staleness() -> packfed_governance::duration::Duration {
    packfed_governance::duration::Duration(3600)
}

impl Default for WitnessSection {
    fn default() -> Self {
        WitnessSection {
            keys: None,
            checkpoint_interval_ms: default_checkpoint_ms(),
            idle_interval_ms: default_idle_ms(),
            max_staleness: default_staleness(),
        }
    }
}

/// `[learn]`: federated learning of the search ranking.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnSection {
    /// Take part (train, publish summaries, adopt the aggregate).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Length of a round, e.g. "1h" (every node of a federation must agree).
    #[serde(default = "default_round")]
    pub round: packfed_governance::duration::Duration,
    /// Gaussian noise on each update for (epsilon, 1e-5)-differential
    /// privacy per round, 0 < epsilon < 1; absent: no noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_epsilon: Option<f64>,
}

fn yes() -> bool {
    true
}

fn default_round() -> packfed_governance::duration::Duration {
    packfed_governance::duration::Duration(3600)
}

impl Default for LearnSection {
    fn default() -> Self {
        LearnSection {
            enabled: true,
            round: default_round(),
            dp_epsilon: None,
        }
    }
}

/// `[trust]`: the install trust policy `packfed install` applies by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// A trust policy file (relative to the home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("config.toml: {e}"))
    }

    /// The sections of the configuration file.
    pub fn sections() -> Vec<String> {
        match toml::Value::try_from(Config::default_config()) {
            Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    pub fn default_config() -> Config {
        // The embedded file is covered by a test, so this cannot fail at run time.
        Config::parse(DEFAULT_CONFIG).unwrap_or_else(|e| panic!("embedded default config is invalid: {e}"))
    }
}

/// Paths inside a node home.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `--home`, else `$PACKFED_HOME` (clap fills it), else `~/.packfed`.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Home> {
        let root = match flag {
            Some(p) => p,
            None => {
                let home = std::env::var_os("HOME").context("no --home given, PACKFED_HOME unset and HOME unset")?;
                PathBuf::from(home).join(".packfed")
            }
        };
        Ok(Home { root })
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn genesis(&self) -> PathBuf {
        self.root.join("genesis.toml")
    }
    pub fn node_key(&self) -> PathBuf {
        self.root.join("node.key")
    }
    pub fn api_token(&self) -> PathBuf {
        self.root.join("api-token")
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    /// The search index: derived from the store, rebuilt from it when lost.
    pub fn search_index(&self) -> PathBuf {
        self.root.join("index")
    }
    pub fn node_json(&self) -> PathBuf {
        self.root.join("node.json")
    }

    pub fn is_initialized(&self) -> bool {
        self.config().exists() && self.genesis().exists() && self.node_key().exists()
    }

    pub fn require_initialized(&self) -> Result<()> {
        if !self.is_initialized() {
            bail!(
                "{} is not a packfed home; run `packfed init` (or `packfed node run` for a development node) first",
                self.root.display()
            );
        }
        Ok(())
    }

    /// The effective configuration: flags over `PACKFED_<SECTION>_<KEY>`
    /// over `config.toml` over defaults ([`crate::settings`]).
    pub fn load_config(&self) -> Result<Config> {
        Ok(self.load_settings()?.config)
    }

    /// [`Home::load_config`], with where each value came from.
    pub fn load_settings(&self) -> Result<crate::settings::Effective<Config>> {
        let text = fs::read_to_string(self.config()).with_context(|| format!("reading {}", self.config().display()))?;
        crate::settings::resolve(&text, &Config::sections())
    }
}

/// Writes a file only the owner can read (keys, tokens), atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a file atomically (temp file + rename), synced.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // Mode first: a key is never readable by others, not even briefly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // The rename is durable only once the directory entry is.
    sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Makes renames and new entries in `dir` durable (a no-op off unix).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_config_parses() {
        let c = Config::parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.node.role, NodeRole::Public);
        assert!(c.api.listen.starts_with("127.0.0.1:"));
    }
}

/// The contents of `HOME/node.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeJson {
    pub peer_id: String,
    pub api: String,
    pub listen_addrs: Vec<String>,
    pub pid: u32,
}

/// Rewrites node.json with the libp2p addresses once they are known.
pub fn update_listen_addrs<'a>(home: &Home, addrs: impl Iterator<Item = &'a libp2p::Multiaddr>) -> anyhow::Result<()> {
    let path = home.node_json();
    let mut info: NodeJson = serde_json::from_slice(&std::fs::read(&path)?)?;
    let peer = info.peer_id.clone();
    info.listen_addrs = addrs.map(|a| format!("{a}/p2p/{peer}")).collect();
    write_atomic(&path, serde_json::to_string_pretty(&info)?.as_bytes())
}
