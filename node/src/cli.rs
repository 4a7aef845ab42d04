//! The `packfed` command line (the contract is `shared/CLI.md`). Every data
//! command takes `--json` and then prints exactly one JSON document; errors go
//! to stderr as one sentence (or as `{"error","code"}` on stdout with
//! `--json`) with a non-zero exit.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use packfed_governance::{Genesis, Member, Parameters, Policy};
use packfed_protocol::manifest::Visibility;
use packfed_protocol::records::PackId;
use packfed_protocol::{FederationId, Signed, pb};
use serde_json::{Value, json};

use crate::client::{Client, UserError};
use crate::config::{Home, NodeRole, write_atomic};
use crate::init::{self, InitOptions};
use crate::install::{self, Spec};
use crate::{daemon, generate, keys, lifecycle, packing, project};

#[derive(Parser)]
#[command(
    name = "packfed",
    version,
    about = "A federated marketplace node for code-generation packs"
)]
struct Cli {
    /// Node home (default: $PACKFED_HOME, else ~/.packfed).
    #[arg(long, global = true, env = "PACKFED_HOME")]
    home: Option<PathBuf>,
    /// Print exactly one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publisher and member keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Federations.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Create a node home: node key, config, empty store.
    Init {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: NodeRole,
        /// The genesis file (from `packfed federation new`).
        #[arg(long)]
        federation: PathBuf,
        #[arg(long)]
        listen: Vec<String>,
        #[arg(long)]
        bootstrap: Vec<String>,
        /// API address, HOST:PORT (port 0: any free port).
        #[arg(long)]
        api: Option<String>,
        /// Peers that share this node's org catalog.
        #[arg(long)]
        org: Vec<String>,
    },
    /// The daemon.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The node's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// This node's status.
    Status,
    /// Known peers.
    Peers,
    /// Build the deterministic archive of a pack directory (no daemon needed).
    Pack {
        dir: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Validate, pack, sign and publish a pack directory.
    Publish {
        dir: PathBuf,
        #[arg(long)]
        key: String,
        #[arg(long)]
        visibility: Option<Visibility>,
    },
    /// Mark a release as not to be resolved anew.
    Yank {
        /// NAME@VERSION
        id: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Shell completion script for bash, zsh or fish, on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (packfed.1 and one per command) into DIR.
    Man {
        #[arg(long)]
        out: PathBuf,
    },
    /// Read-only SPARQL 1.1 over the node's catalog graph (see the README's vocabulary).
    Sparql {
        query: String,
        /// json (SPARQL results JSON), csv or table (default: table on a terminal, else json).
        #[arg(long, value_enum)]
        format: Option<SparqlFormat>,
        /// Query one pack's own ontologies (fetched and verified like an install) instead.
        #[arg(long, value_name = "NAME@VERSION")]
        pack: Option<String>,
        #[arg(long)]
        allow_stale: bool,
    },
    /// Sign and gossip a deprecation (namespace owner only): installs warn with the message.
    Deprecate {
        /// NAME (every version) or NAME@REQ (e.g. acme/old@<2).
        spec: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        message: String,
        /// A pack to use instead.
        #[arg(long = "use", value_name = "OTHER")]
        replacement: Option<String>,
    },
    /// Every version of a pack: status, yanked, deprecated, publish time, size.
    Versions {
        /// NAME
        name: String,
    },
    /// Search packs on this node and the peers holding catalogs it lacks.
    Search {
        /// Words to look for (typos in names are tolerated); "" lists everything.
        query: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only this node's catalog.
        #[arg(long, conflicts_with = "all_peers")]
        local: bool,
        /// Ask every connected peer, not only those holding catalogs this node lacks.
        #[arg(long)]
        all_peers: bool,
        /// How long to wait for peers (e.g. 300ms, 2s); slower peers are listed as unanswered.
        #[arg(long, default_value = "300ms", value_parser = parse_timeout)]
        timeout: std::time::Duration,
        /// List every version, not only the newest.
        #[arg(long)]
        all_versions: bool,
        /// Also list releases the acceptance policy quarantines.
        #[arg(long)]
        include_quarantined: bool,
        /// Only packs in this category.
        #[arg(long)]
        category: Option<String>,
        /// Only packs whose license expression names this SPDX id.
        #[arg(long)]
        license: Option<String>,
        /// Only packs of this quality tier.
        #[arg(long)]
        tier: Option<String>,
        /// Only packs with a passing attestation of KIND by a federation member.
        #[arg(long, value_name = "KIND")]
        attested: Option<String>,
        /// Show each result's score parts.
        #[arg(long)]
        explain: bool,
    },
    /// Show a release.
    Info {
        /// NAME or NAME@VERSION
        spec: String,
    },
    /// Resolve, fetch, verify and install packs into DIR.
    Install {
        #[arg(required_unless_present = "locked")]
        specs: Vec<String>,
        /// Install exactly what DIR/packfed.lock pins (same bytes), no resolving.
        #[arg(long, conflicts_with = "specs")]
        locked: bool,
        #[arg(long)]
        to: PathBuf,
        /// Install trust policy (TOML, `[trust]`): M-of-N attestations,
        /// trusted publishers, licenses. Default: `[trust] file` in config.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Install even if the node holds no recent checkpoints from a
        /// witness quorum (recorded in the lockfile).
        #[arg(long)]
        allow_stale: bool,
        /// Install a lower version than the lockfile pins.
        #[arg(long)]
        allow_downgrade: bool,
        /// Print the plan (added, upgraded, downgraded, with sizes); change nothing.
        #[arg(long, conflicts_with = "locked")]
        dry_run: bool,
        /// When dependents need incompatible majors of a pack: fail (explained)
        /// or side-by-side (each major under DIR/ns/name@MAJOR).
        #[arg(long, value_enum, default_value = "fail")]
        conflicts: install::Conflicts,
    },
    /// Installed packs with newer versions allowed or available.
    Outdated {
        #[arg(long = "in", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Re-resolve installed packs to the newest versions their requirements allow.
    Upgrade {
        /// Only these packs (default: all).
        names: Vec<String>,
        #[arg(long = "in", value_name = "DIR")]
        dir: PathBuf,
        /// Cross major versions (requirements are rewritten to the new major).
        #[arg(long)]
        latest: bool,
        #[arg(long)]
        trust: Option<PathBuf>,
        #[arg(long)]
        allow_stale: bool,
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Remove installed packs (and dependencies nothing else needs).
    Uninstall {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long = "in", value_name = "DIR")]
        dir: PathBuf,
        /// Remove even if an installed pack depends on it.
        #[arg(long)]
        force: bool,
    },
    /// The transactions of an install directory, newest first.
    History {
        #[arg(long = "in", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Restore the tree and lockfile of before a transaction (default: the last one).
    Rollback {
        transaction: Option<String>,
        #[arg(long = "in", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check an installed tree against its lockfile.
    Verify { dir: PathBuf },
    /// Fetch and verify a pack like install, then render its templates into DIR.
    Generate {
        /// NAME or NAME@REQ
        spec: String,
        #[arg(long)]
        to: PathBuf,
        /// A variable's value, NAME=VALUE (repeatable; wins over --vars).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Values from a TOML table or JSON object.
        #[arg(long = "vars", value_name = "FILE")]
        vars_file: Option<PathBuf>,
        /// Print the files it would write; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite files that already exist.
        #[arg(long)]
        force: bool,
        /// Install trust policy, as for install.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Generate even if the node's view of the federation is stale.
        #[arg(long)]
        allow_stale: bool,
    },
    /// Sign and gossip an attestation about a release.
    Attest {
        /// NAME@VERSION
        id: String,
        /// audit, reproducible-build, license, vuln-scan, review, benchmark or quality.
        #[arg(long)]
        kind: String,
        /// pass or fail.
        #[arg(long)]
        result: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// The attestations of a release.
    Attestations {
        /// NAME@VERSION
        id: String,
    },
    /// The acceptance policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Governance: members, proposals and votes.
    #[command(subcommand)]
    Gov(GovCommand),
    /// Federated learning of the search ranking.
    #[command(subcommand)]
    Learn(LearnCommand),
    /// Witnesses: the checkpoint logs that order the federation.
    #[command(subcommand)]
    Witness(WitnessCommand),
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Witnesses, their latest checkpoints, and this node's freshness.
    Status,
}

#[derive(Subcommand)]
enum LearnCommand {
    /// The round, the model in force, who contributed, what was rejected.
    Status,
}

#[derive(Subcommand)]
enum GovCommand {
    /// The members in force.
    Members,
    /// Propose a change; exactly one action.
    Propose {
        #[arg(long)]
        key: String,
        #[arg(long)]
        title: String,
        /// Replace the acceptance policy with this file.
        #[arg(long, group = "action")]
        policy: Option<PathBuf>,
        /// PUBKEY:ROLE:WEIGHT (PUBKEY may name a key in this home).
        #[arg(long, group = "action")]
        add_member: Option<String>,
        /// PUBKEY (or a key name in this home).
        #[arg(long, group = "action")]
        remove_member: Option<String>,
        /// NAME=VALUE, e.g. quorum=0.6 or voting_period=48h.
        #[arg(long, group = "action")]
        set: Option<String>,
        /// NAMESPACE=PUBKEY: give a namespace to another key.
        #[arg(long, group = "action")]
        reassign: Option<String>,
    },
    /// Vote on an active proposal; a later vote replaces an earlier one.
    Vote {
        proposal_id: String,
        /// for, against or abstain.
        choice: String,
        #[arg(long)]
        key: String,
    },
    /// Withdraw your own proposal before its vote ends.
    Cancel {
        proposal_id: String,
        #[arg(long)]
        key: String,
    },
    /// Every proposal with its state and tally.
    List,
    /// One proposal with its counted votes.
    Show { proposal_id: String },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// The rules in force and where each set comes from.
    Show,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an ed25519 key in the home.
    New { name: String },
    /// List keys in the home.
    List,
}

#[derive(Subcommand)]
enum FederationCommand {
    /// Write a genesis file.
    New {
        #[arg(long)]
        name: String,
        /// PUBKEY:ROLE:WEIGHT (role: maintainer, core, community, security);
        /// PUBKEY may also name a key in this home.
        #[arg(long = "member")]
        members: Vec<String>,
        /// Initial acceptance policy (TOML).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        quorum: Option<f64>,
        #[arg(long)]
        threshold: Option<f64>,
        #[arg(long)]
        voting_delay: Option<packfed_governance::duration::Duration>,
        #[arg(long)]
        voting_period: Option<packfed_governance::duration::Duration>,
        #[arg(long)]
        timelock: Option<packfed_governance::duration::Duration>,
        #[arg(long)]
        grace_period: Option<packfed_governance::duration::Duration>,
        #[arg(long)]
        proposal_threshold: Option<u64>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SparqlFormat {
    Json,
    Csv,
    Table,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run the daemon in the foreground until SIGINT/SIGTERM.
    Run(SettingFlags),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The effective configuration, and where each value came from
    /// (flag > PACKFED_<SECTION>_<KEY> > config.toml > default).
    Show(SettingFlags),
}

/// Configuration given as flags (they win over the environment and the file).
#[derive(clap::Args, Default)]
struct SettingFlags {
    /// The API address (`[api] listen`).
    #[arg(long, value_name = "ADDR")]
    api: Option<String>,
    /// Any key: SECTION.KEY=VALUE (repeatable), e.g. --set net.mdns=true.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<crate::settings::Override>,
}

impl SettingFlags {
    fn install(self) {
        let mut flags = self.set;
        if let Some(api) = self.api {
            flags.push(crate::settings::Override {
                section: "api".into(),
                key: "listen".into(),
                value: api,
            });
        }
        crate::settings::set_flags(flags);
    }
}

/// A failure whose JSON document was already printed.
#[derive(Debug, thiserror::Error)]
#[error("already reported")]
struct Reported;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Before any thread starts: every thread that allocates would otherwise
    // get its own glibc arena, each keeping its freed pages fragmented.
    crate::memory::limit_arenas();
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Node(_)));
    let json_mode = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Reported>().is_some() => ExitCode::FAILURE,
        Err(e) => {
            let code = e
                .downcast_ref::<UserError>()
                .map(|u| u.code.clone())
                .unwrap_or_else(|| "error".into());
            let message = format!("{e:#}");
            if json_mode {
                println!("{}", json!({"error": message, "code": code}));
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Prints `value` as JSON, or `human` otherwise.
fn output(json_mode: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_mode {
        println!("{value}");
    } else {
        let text = human();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

fn read_federation_id(home: &Home) -> Result<FederationId> {
    home.require_initialized()?;
    let bytes = std::fs::read(home.genesis())?;
    Ok(Genesis::parse(&bytes)?.id)
}

async fn run(cli: Cli) -> Result<()> {
    let home = Home::resolve(cli.home)?;
    let j = cli.json;
    match cli.command {
        Command::Key(KeyCommand::New { name }) => {
            let key = keys::new_key(&home, &name)?;
            let v = json!({"name": name, "public_key": key.public().to_hex()});
            output(j, &v, || format!("created key {name}: {}", key.public()));
        }
        Command::Key(KeyCommand::List) => {
            let list = keys::list_keys(&home)?;
            let v: Vec<Value> = list
                .iter()
                .map(|(n, k)| json!({"name": n, "public_key": k.public().to_hex()}))
                .collect();
            output(j, &Value::Array(v), || {
                list.iter()
                    .map(|(n, k)| format!("{n}\t{}", k.public()))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Federation(FederationCommand::New {
            name,
            members,
            policy,
            quorum,
            threshold,
            voting_delay,
            voting_period,
            timelock,
            grace_period,
            proposal_threshold,
            out,
        }) => {
            let policy = match policy {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                    Policy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                }
                None => Policy::default(),
            };
            let members = members
                .iter()
                .map(|m| resolve_member(&home, m))
                .collect::<Result<Vec<Member>>>()?;
            let d = Parameters::default();
            let params = Parameters {
                quorum: quorum.unwrap_or(d.quorum),
                threshold: threshold.unwrap_or(d.threshold),
                voting_delay: voting_delay.unwrap_or(d.voting_delay),
                voting_period: voting_period.unwrap_or(d.voting_period),
                timelock: timelock.unwrap_or(d.timelock),
                grace_period: grace_period.unwrap_or(d.grace_period),
                proposal_threshold: proposal_threshold.unwrap_or(d.proposal_threshold),
                ..d.clone()
            };
            let text = Genesis::render(&name, &init::random_hex(16)?, members, params, policy)?;
            let id = FederationId::of(text.as_bytes());
            write_atomic(&out, text.as_bytes())?;
            let v = json!({"federation_id": id.to_hex(), "path": out.display().to_string()});
            output(j, &v, || {
                format!("federation {name}: {id}\nwritten to {}", out.display())
            });
        }
        Command::Init {
            name,
            role,
            federation,
            listen,
            bootstrap,
            api,
            org,
        } => {
            let genesis = std::fs::read(&federation).with_context(|| format!("reading {}", federation.display()))?;
            let created = init::init_home(
                &home,
                InitOptions {
                    name,
                    role,
                    genesis,
                    listen,
                    bootstrap,
                    api,
                    org,
                },
            )?;
            let v = json!({"peer_id": created.peer_id, "home": home.root.display().to_string(), "federation_id": created.federation_id});
            output(j, &v, || {
                format!(
                    "initialized {} (peer {}, federation {})\nstart it with: packfed --home {} node run",
                    home.root.display(),
                    created.peer_id,
                    created.federation_id,
                    home.root.display()
                )
            });
        }
        Command::Node(NodeCommand::Run(flags)) => {
            flags.install();
            daemon::run(home).await?
        }
        Command::Config(ConfigCommand::Show(flags)) => {
            flags.install();
            home.require_initialized()?;
            let effective = home.load_settings()?;
            let v: serde_json::Map<String, Value> = effective
                .sources
                .iter()
                .map(|(k, (value, source))| {
                    let value = serde_json::to_value(value).unwrap_or(Value::Null);
                    (k.clone(), json!({"value": value, "source": source}))
                })
                .collect();
            output(j, &Value::Object(v), || {
                effective
                    .sources
                    .iter()
                    .map(|(k, (value, source))| {
                        format!(
                            "{k} = {value}  ({})",
                            serde_json::to_value(source)
                                .ok()
                                .and_then(|s| s.as_str().map(String::from))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Status => {
            let client = Client::connect(&home)?;
            let v: Value = client.get("/v1/status").await?;
            output(j, &v, || {
                format!(
                    "peer      {}\nname      {} ({})\nfederation {}\npeers     {}\nreleases  {}\nblobs     {}\npolicy    v{}\nfresh     {} (view age {} ms)",
                    v["peer_id"].as_str().unwrap_or(""),
                    v["name"].as_str().unwrap_or(""),
                    v["role"].as_str().unwrap_or(""),
                    v["federation_id"].as_str().unwrap_or(""),
                    v["peers"],
                    v["releases"],
                    v["blobs"],
                    v["policy_version"],
                    v["fresh"],
                    v["view_age_ms"]
                )
            });
        }
        Command::Witness(WitnessCommand::Status) => {
            let client = Client::connect(&home)?;
            let v: Value = client.get("/v1/witness").await?;
            output(j, &v, || {
                let mut lines: Vec<String> = v["witnesses"]
                    .as_array()
                    .map(|ws| {
                        ws.iter()
                            .map(|w| {
                                format!(
                                    "{}  weight {}  seq {}  time {}{}{}",
                                    w["public_key"].as_str().unwrap_or("").get(..16).unwrap_or(""),
                                    w["weight"],
                                    w["seq"],
                                    w["time"],
                                    if w["local"] == true { "  (this node)" } else { "" },
                                    if w["equivocated"] == true {
                                        "  EQUIVOCATED: not counted"
                                    } else {
                                        ""
                                    }
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                lines.push(format!(
                    "fresh {}  view age {} ms  quorum weight {}",
                    v["fresh"], v["view_age_ms"], v["quorum"]
                ));
                lines.join("\n")
            });
        }
        Command::Peers => {
            let client = Client::connect(&home)?;
            let v: Value = client.get("/v1/peers").await?;
            output(j, &v, || match v.as_array() {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .map(|p| {
                        format!(
                            "{}\t{}",
                            p["peer_id"].as_str().unwrap_or(""),
                            p["name"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => "no peers".into(),
            });
        }
        Command::Pack { dir, out } => {
            let _ = packing::read_manifest(&dir)?;
            let out = match out {
                Some(o) => o,
                None => {
                    let m = packing::read_manifest(&dir)?;
                    PathBuf::from(format!("{}-{}.pack", m.name.as_str().replace('/', "-"), m.version))
                }
            };
            let summary = pack_to(&dir, &out)?;
            let v = json!({"hash": summary.hash.to_hex(), "size": summary.size, "path": out.display().to_string()});
            output(j, &v, || {
                format!("{} ({} bytes) -> {}", summary.hash, summary.size, out.display())
            });
        }
        Command::Publish { dir, key, visibility } => {
            let key = keys::load_key(&home, &key)?;
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let prepared = packing::prepare(&dir, &home.root.join("tmp"))?;
            let now = packing::now_ms();
            let release = packing::release_record(
                &prepared.manifest,
                &prepared.summary,
                &prepared.quality,
                visibility,
                now,
            );
            let req = packing::sign_publish(&release, &key, &fed, now);
            let header = hex::encode(prost::Message::encode_to_vec(&req.to_pb()));
            let file = tokio::fs::File::open(prepared.file.path()).await?;
            let v: Value = client
                .post_stream(
                    "/v1/publish",
                    &[(crate::api::PUBLISH_HEADER, header)],
                    reqwest::Body::from(file),
                )
                .await?;
            output(j, &v, || {
                format!(
                    "published {} ({})\nquality {} ({})",
                    v["id"].as_str().unwrap_or(""),
                    v["hash"].as_str().unwrap_or(""),
                    v["quality"]["score"],
                    v["quality"]["tier"].as_str().unwrap_or("")
                )
            });
        }
        Command::Yank { id, key, reason } => {
            let pid: PackId = id
                .parse()
                .map_err(|e| UserError::new("bad_id", format!("{id:?}: {e}; write NAME@VERSION")))?;
            let key = keys::load_key(&home, &key)?;
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let info: Value = client
                .get(&format!("/v1/info/{}?version={}", pid.name, pid.version))
                .await?;
            let hash = hex::decode(info["hash"].as_str().unwrap_or_default()).context("node sent a bad hash")?;
            let yank = pb::Yank {
                name: pid.name.to_string(),
                version: pid.version.to_string(),
                content_hash: hash,
                reason,
                yanked_at_ms: packing::now_ms(),
            };
            let env = Signed::sign(&yank, &key, &fed);
            let v: Value = client
                .post_json("/v1/yank", &json!({"envelope": hex::encode(env.encoded())}))
                .await?;
            output(j, &v, || format!("yanked {pid}"));
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: the generator panics on a closed pipe (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "packfed", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        }
        Command::Man { out } => {
            let files = write_man_pages(&out)?;
            output(j, &json!({"files": files}), || {
                format!("wrote {} man pages to {}", files.len(), out.display())
            });
        }
        Command::Sparql {
            query,
            format,
            pack,
            allow_stale,
        } => {
            let format = format.unwrap_or(if !j && std::io::stdout().is_terminal() {
                SparqlFormat::Table
            } else {
                SparqlFormat::Json
            });
            let wire = if format == SparqlFormat::Csv {
                crate::sparql::Format::Csv
            } else {
                crate::sparql::Format::Json
            };
            let limits = crate::sparql::Limits::from(&home.load_config()?.sparql);
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let (body, truncated) = match pack {
                Some(p) => {
                    let spec = exact_spec(&p)?;
                    let guards = install::Guards {
                        allow_stale,
                        allow_downgrade: false,
                    };
                    let fetched = install::fetch_unpacked(&client, &fed, &spec, guards, None, false).await?;
                    let store = crate::sparql::pack_graph(&fetched.root())?;
                    let a = crate::sparql::run(&store, &query, wire, limits)
                        .map_err(|e| UserError::new("sparql_error", e.to_string()))?;
                    (a.body, a.truncated)
                }
                None => {
                    let resp = client
                        .post_json_raw(
                            "/v1/sparql",
                            &json!({"query": query, "format": if wire == crate::sparql::Format::Csv { "csv" } else { "json" }}),
                        )
                        .await?;
                    let truncated = resp.headers().get("packfed-truncated").is_some_and(|v| v == "true");
                    (resp.bytes().await?.to_vec(), truncated)
                }
            };
            if truncated {
                eprintln!("warning: more results than [sparql] max_results; the rest were left out");
            }
            match format {
                SparqlFormat::Table => println!("{}", sparql_table(&body)?),
                _ => println!("{}", String::from_utf8_lossy(&body).trim_end()),
            }
        }
        Command::Deprecate {
            spec,
            key,
            message,
            replacement,
        } => {
            let spec: Spec = spec
                .parse()
                .map_err(|e: anyhow::Error| UserError::new("bad_spec", e.to_string()))?;
            if let Some(r) = &replacement {
                r.parse::<packfed_protocol::records::PackName>()
                    .map_err(|e| UserError::new("bad_name", format!("--use {r:?}: {e}")))?;
            }
            let key = keys::load_key(&home, &key)?;
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let record = pb::Deprecation {
                name: spec.name.to_string(),
                requirement: spec.req.to_string(),
                message,
                replacement: replacement.unwrap_or_default(),
                deprecated_at_ms: packing::now_ms(),
            };
            let env = Signed::sign(&record, &key, &fed);
            let v: Value = client
                .post_json("/v1/deprecate", &json!({"envelope": hex::encode(env.encoded())}))
                .await?;
            output(j, &json!({"deprecation_id": v["deprecation_id"]}), || {
                format!(
                    "deprecated {} ({})",
                    spec.to_requirement(),
                    v["deprecation_id"].as_str().unwrap_or_default()
                )
            });
        }
        Command::Versions { name } => {
            let name: packfed_protocol::records::PackName = name
                .parse()
                .map_err(|e| UserError::new("bad_name", format!("{name:?}: {e}")))?;
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let found = install::candidates(&client, &fed, &name).await?;
            if found.is_empty() {
                return Err(UserError::new("not_found", format!("no pack named {name} on this node")).into());
            }
            let rows: Vec<Value> = found
                .iter()
                .map(|c| {
                    json!({
                        "version": c.version.to_string(),
                        "status": if c.quarantine.is_empty() { "accepted" } else { "quarantined" },
                        "yanked": c.yanked,
                        "deprecated": c.deprecated,
                        "published_at": project::rfc3339(c.release.published_at_ms),
                        "size": c.release.size,
                    })
                })
                .collect();
            output(j, &Value::Array(rows.clone()), || {
                rows.iter()
                    .map(|r| {
                        let mut line = format!(
                            "{:<12} {:<11} {} {:>10} bytes",
                            r["version"].as_str().unwrap_or_default(),
                            r["status"].as_str().unwrap_or_default(),
                            r["published_at"].as_str().unwrap_or_default(),
                            r["size"]
                        );
                        if r["yanked"] == true {
                            line.push_str("  yanked");
                        }
                        if let Some(d) = r["deprecated"].as_str() {
                            line.push_str(&format!("  deprecated: {d}"));
                        }
                        line
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Search {
            query,
            limit,
            local,
            all_peers,
            timeout,
            all_versions,
            include_quarantined,
            category,
            license,
            tier,
            attested,
            explain,
        } => {
            let client = Client::connect(&home)?;
            let peers = if local {
                "local"
            } else if all_peers {
                "all"
            } else {
                "lacking"
            };
            let mut params: Vec<(&str, String)> = vec![
                ("q", query.clone()),
                ("limit", limit.to_string()),
                ("all_versions", all_versions.to_string()),
                ("include_quarantined", include_quarantined.to_string()),
                ("peers", peers.to_string()),
                ("timeout_ms", timeout.as_millis().to_string()),
                ("explain", explain.to_string()),
            ];
            for (k, v) in [
                ("category", category),
                ("license", license),
                ("tier", tier),
                ("attested", attested),
            ] {
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            // With the token: this node's own user sees its org catalog.
            let resp = client
                .authed(client.http.get(format!("{}/v1/search", client.base)))
                .query(&params)
                .send()
                .await
                .context("the node does not answer")?;
            let v: Value = Client::check(resp).await?.json().await?;
            output(j, &v, || {
                let rows = v["results"].as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    return format!("no packs match {query:?}");
                }
                rows.iter()
                    .map(|r| {
                        format!(
                            "{:<40} {:>6.2}  {}{}",
                            r["id"].as_str().unwrap_or(""),
                            r["score"].as_f64().unwrap_or(0.0),
                            r["description"].as_str().unwrap_or(""),
                            if r["status"] == "quarantined" {
                                "  [quarantined]"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Info { spec } => {
            let (name, version) = match spec.split_once('@') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (spec.clone(), None),
            };
            let name: packfed_protocol::records::PackName =
                name.parse().map_err(|e| UserError::new("bad_name", format!("{e}")))?;
            let client = Client::connect(&home)?;
            let path = match &version {
                Some(v) => format!("/v1/info/{name}?version={v}"),
                None => format!("/v1/info/{name}"),
            };
            let v: Value = client.get(&path).await?;
            output(j, &v, || {
                let mut out = format!(
                    "{}\n  {}\n  hash      {}\n  license   {}\n  status    {}{}\n  quality   {} ({})\n  publisher {}",
                    v["id"].as_str().unwrap_or(""),
                    v["description"].as_str().unwrap_or(""),
                    v["hash"].as_str().unwrap_or(""),
                    v["license"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or(""),
                    if v["yanked"].as_bool() == Some(true) {
                        " (yanked)"
                    } else {
                        ""
                    },
                    v["quality"]["score"],
                    v["quality"]["tier"].as_str().unwrap_or(""),
                    v["publisher"].as_str().unwrap_or("")
                );
                for r in v["reasons"].as_array().into_iter().flatten() {
                    out.push_str(&format!("\n  failed    {}", r.as_str().unwrap_or("")));
                }
                for d in v["quality_disputes"].as_array().into_iter().flatten() {
                    out.push_str(&format!("\n  disputed  {}", d.as_str().unwrap_or("")));
                }
                for a in v["attestations"].as_array().into_iter().flatten() {
                    out.push_str(&format!("\n  attested  {}", attestation_line(a)));
                }
                out
            });
        }
        Command::Attest {
            id,
            kind,
            result,
            key,
            note,
        } => {
            let pid: PackId = id
                .parse()
                .map_err(|e| UserError::new("bad_id", format!("{id:?}: {e}; write NAME@VERSION")))?;
            kind.parse::<packfed_governance::policy::AttestationKind>()
                .map_err(|e| UserError::new("bad_kind", e))?;
            let pass = match result.as_str() {
                "pass" => true,
                "fail" => false,
                other => {
                    return Err(
                        UserError::new("bad_result", format!("--result {other:?} must be pass or fail")).into(),
                    );
                }
            };
            let key = keys::load_key(&home, &key)?;
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let info: Value = client
                .get(&format!("/v1/info/{}?version={}", pid.name, pid.version))
                .await?;
            let release = verified_release(&info, &fed)?;
            let env = crate::core::verdict::sign_attestation(
                &release,
                &crate::core::verdict::Statement {
                    kind: &kind,
                    pass,
                    note: &note,
                    score: 0,
                },
                &key,
                &fed,
                packing::now_ms(),
            );
            let v: Value = client
                .post_json("/v1/attest", &json!({"envelope": hex::encode(env.encoded())}))
                .await?;
            output(j, &v, || {
                format!(
                    "attested {pid}: {kind} {result} ({})",
                    v["attestation_id"].as_str().unwrap_or("")
                )
            });
        }
        Command::Attestations { id } => {
            let pid: PackId = id
                .parse()
                .map_err(|e| UserError::new("bad_id", format!("{id:?}: {e}; write NAME@VERSION")))?;
            let client = Client::connect(&home)?;
            let v: Value = client
                .get(&format!("/v1/attestations/{}?version={}", pid.name, pid.version))
                .await?;
            output(j, &v, || match v.as_array() {
                Some(a) if !a.is_empty() => a.iter().map(attestation_line).collect::<Vec<_>>().join("\n"),
                _ => format!("no attestations of {pid}"),
            });
        }
        Command::Policy(PolicyCommand::Show) => {
            let client = Client::connect(&home)?;
            let v: Value = client.get("/v1/policy").await?;
            output(j, &v, || {
                format!(
                    "policy v{}{} from {}\n{}",
                    v["version"],
                    v["set_by"]
                        .as_str()
                        .map(|p| format!(" (set by proposal {p})"))
                        .unwrap_or_default(),
                    v["source"].as_str().unwrap_or(""),
                    serde_json::to_string_pretty(&v["rules"]).unwrap_or_default()
                )
            });
        }
        Command::Gov(cmd) => gov_command(&home, j, cmd).await?,
        Command::Learn(LearnCommand::Status) => {
            let client = Client::connect(&home)?;
            let v: Value = client.get("/v1/learn").await?;
            output(j, &v, || {
                let weights = v["weights"]
                    .as_array()
                    .map(|w| {
                        w.iter()
                            .zip(v["features"].as_array().cloned().unwrap_or_default())
                            .map(|(x, n)| format!("{}={:.3}", n.as_str().unwrap_or("?"), x.as_f64().unwrap_or(0.0)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                format!(
                    "round {}  model version {}  local samples {}\nweights {weights}\ncontributors of the last round: {}\nrejected: {}",
                    v["round"],
                    v["model_version"],
                    v["local_samples"],
                    v["contributors"].as_array().map(|c| c.len()).unwrap_or(0),
                    v["rejected"]
                )
            });
        }
        Command::Install {
            specs,
            locked,
            to,
            trust,
            allow_stale,
            allow_downgrade,
            dry_run,
            conflicts,
        } => {
            let guards = install::Guards {
                allow_stale,
                allow_downgrade,
            };
            let specs: Vec<Spec> = specs
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|e: anyhow::Error| UserError::new("bad_spec", e.to_string()).into())
                })
                .collect::<Result<_>>()?;
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            if dry_run {
                let plan = install::install_plan(&client, &fed, &specs, &to, conflicts).await?;
                output(j, &json!({"plan": plan}), || {
                    if plan.is_empty() {
                        return format!("nothing to do: {} already holds these versions", to.display());
                    }
                    plan.iter()
                        .map(|p| {
                            format!(
                                "{:<9} {} {}{}",
                                p.action,
                                p.id.split('@').next().unwrap_or_default(),
                                p.from.as_deref().map(|f| format!("{f} -> ")).unwrap_or_default(),
                                p.to.as_deref()
                                    .map(|t| format!("{t} ({} bytes)", p.size))
                                    .unwrap_or_default()
                            )
                        })
                        .chain(std::iter::once("(dry run: nothing changed)".to_string()))
                        .collect::<Vec<_>>()
                        .join("\n")
                });
                return Ok(());
            }
            let show = !j && std::io::stderr().is_terminal();
            let trust = install::load_trust(&home, trust.as_deref())?;
            let done = if locked {
                install::install_locked(&client, &fed, &to, show, trust.as_ref(), guards).await?
            } else {
                install::install(&client, &fed, &specs, &to, show, trust.as_ref(), guards, conflicts).await?
            };
            let v = serde_json::to_value(&done)?;
            if !j {
                for w in &done.warnings {
                    eprintln!("warning: {w}");
                }
            }
            output(j, &v, || {
                let mut s: Vec<String> = done
                    .installed
                    .iter()
                    .map(|p| format!("installed {} ({})", p.id, &p.hash[..16]))
                    .collect();
                s.push(format!("lockfile {}", done.lockfile));
                if let Some(t) = &done.transaction {
                    s.push(format!(
                        "transaction {t} (undo with `packfed rollback --in {}`)",
                        to.display()
                    ));
                }
                s.join("\n")
            });
        }
        Command::Outdated { dir } => {
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let rows = lifecycle::outdated(&client, &fed, &dir).await?;
            output(j, &serde_json::to_value(&rows)?, || {
                if rows.is_empty() {
                    return "every installed pack is at its newest version".into();
                }
                let mut s = vec![format!(
                    "{:<32} {:<12} {:<12} {:<12}",
                    "name", "installed", "wanted", "latest"
                )];
                for r in &rows {
                    s.push(format!(
                        "{:<32} {:<12} {:<12} {:<12}",
                        r.name,
                        r.installed,
                        r.wanted.as_deref().unwrap_or("-"),
                        r.latest.as_deref().unwrap_or("-")
                    ));
                }
                s.join("\n")
            });
        }
        Command::Upgrade {
            names,
            dir,
            latest,
            trust,
            allow_stale,
            allow_downgrade,
        } => {
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let trust = install::load_trust(&home, trust.as_deref())?;
            let done = lifecycle::upgrade(
                &client,
                &fed,
                &dir,
                lifecycle::UpgradeOptions {
                    names: &names,
                    latest,
                    show_progress: !j && std::io::stderr().is_terminal(),
                    trust: trust.as_ref(),
                    guards: install::Guards {
                        allow_stale,
                        allow_downgrade,
                    },
                },
            )
            .await?;
            output(j, &serde_json::to_value(&done)?, || {
                let mut s: Vec<String> = done
                    .crossed_majors
                    .iter()
                    .map(|c| format!("crossing a major version: {c}"))
                    .collect();
                s.extend(done.installed.installed.iter().map(|p| format!("now {}", p.id)));
                s.extend(done.installed.removed.iter().map(|p| format!("removed {p}")));
                s.push(match &done.installed.transaction {
                    Some(t) => format!("transaction {t}"),
                    None => "nothing to upgrade".into(),
                });
                s.join("\n")
            });
        }
        Command::Uninstall { names, dir, force } => {
            let done = lifecycle::uninstall(&dir, &names, force)?;
            output(j, &serde_json::to_value(&done)?, || {
                let mut s: Vec<String> = done.removed.iter().map(|r| format!("removed {r}")).collect();
                s.push(format!("transaction {}", done.transaction));
                s.join("\n")
            });
        }
        Command::History { dir } => {
            let rows = lifecycle::history(&dir)?;
            output(j, &serde_json::to_value(&rows)?, || {
                rows.iter()
                    .map(|t| {
                        format!(
                            "{} {} {:<9} {}",
                            t.transaction,
                            t.time,
                            serde_json::to_value(t.action)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default(),
                            t.after.join(", ")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Rollback { transaction, dir } => {
            let done = lifecycle::rollback(&dir, transaction.as_deref())?;
            output(j, &serde_json::to_value(&done)?, || {
                format!(
                    "restored {} to before transaction {} ({} packs); recorded as transaction {}",
                    dir.display(),
                    done.restored_to,
                    done.packs.len(),
                    done.transaction
                )
            });
        }
        Command::Generate {
            spec,
            to,
            vars,
            vars_file,
            dry_run,
            force,
            trust,
            allow_stale,
        } => {
            let spec: Spec = spec
                .parse()
                .map_err(|e: anyhow::Error| UserError::new("bad_spec", e.to_string()))?;
            let fed = read_federation_id(&home)?;
            let client = Client::connect(&home)?;
            let trust = install::load_trust(&home, trust.as_deref())?;
            let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
            let done = generate::generate(
                &client,
                &fed,
                &spec,
                generate::GenerateOptions {
                    to: &to,
                    vars: &vars,
                    vars_file: vars_file.as_deref(),
                    dry_run,
                    force,
                    interactive: terminal && !j,
                    show_progress: terminal && !j,
                    trust: trust.as_ref(),
                    guards: install::Guards {
                        allow_stale,
                        allow_downgrade: false,
                    },
                },
            )
            .await?;
            let v = serde_json::to_value(&done)?;
            output(j, &v, || {
                let verb = if done.dry_run { "would write" } else { "wrote" };
                let mut s: Vec<String> = done.warnings.iter().map(|w| format!("warning: {w}")).collect();
                s.extend(done.files.iter().map(|f| format!("{verb} {}", to.join(f).display())));
                let n = done.files.len();
                s.push(format!("{n} file{} from {}", if n == 1 { "" } else { "s" }, done.pack));
                s.join("\n")
            });
        }
        Command::Verify { dir } => {
            let result = install::verify(&dir)?;
            let v = serde_json::to_value(&result)?;
            output(j, &v, || {
                if result.ok {
                    format!("ok: {} packs match {}", result.packs, install::LOCKFILE)
                } else {
                    result
                        .mismatches
                        .iter()
                        .map(|m| format!("{}: {}", m.path, m.problem))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            });
            if !result.ok {
                if j {
                    // The result document above already says what differs.
                    return Err(Reported.into());
                }
                return Err(UserError::new(
                    "verify_failed",
                    format!("{} file(s) differ from {}", result.mismatches.len(), install::LOCKFILE),
                )
                .into());
            }
        }
    }
    Ok(())
}

/// `packfed.1`, and `packfed-CMD.1` (`packfed-CMD-SUB.1`) for every command.
fn write_man_pages(dir: &Path) -> Result<Vec<String>> {
    fn walk(cmd: clap::Command, name: String, dir: &Path, files: &mut Vec<String>) -> Result<()> {
        let cmd = cmd.name(name.clone());
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        write_atomic(&path, &page)?;
        files.push(path.display().to_string());
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub.clone(), format!("{name}-{}", sub.get_name()), dir, files)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    walk(
        <Cli as clap::CommandFactory>::command(),
        "packfed".into(),
        dir,
        &mut files,
    )?;
    Ok(files)
}

/// `NAME@VERSION` as a requirement for exactly that version (`NAME@REQ`
/// and `NAME` as usual).
fn exact_spec(s: &str) -> Result<Spec> {
    let pinned = match s.split_once('@') {
        Some((n, v)) if semver::Version::parse(v).is_ok() => format!("{n}@={v}"),
        _ => s.to_string(),
    };
    pinned
        .parse()
        .map_err(|e: anyhow::Error| UserError::new("bad_spec", e.to_string()).into())
}

/// SPARQL results JSON as an aligned text table.
fn sparql_table(body: &[u8]) -> Result<String> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        // CONSTRUCT answers N-Triples: shown as they are.
        Err(_) => return Ok(String::from_utf8_lossy(body).trim_end().to_string()),
    };
    if let Some(b) = v["boolean"].as_bool() {
        return Ok(b.to_string());
    }
    let vars: Vec<String> = v["head"]["vars"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = v["results"]["bindings"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|row| {
                    vars.iter()
                        .map(|var| row[var]["value"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    let widths: Vec<usize> = vars
        .iter()
        .enumerate()
        .map(|(i, v)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([v.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(&vars)];
    out.extend(rows.iter().map(|r| line(r)));
    out.push(format!("({} rows)", rows.len()));
    Ok(out.join("\n"))
}

/// A key given as 64 hex digits or as the name of a key in this home.
fn key_arg(home: &Home, who: &str) -> Result<packfed_protocol::PublicKey> {
    if who.len() == 64 && who.bytes().all(|b| b.is_ascii_hexdigit()) {
        return who
            .parse()
            .map_err(|e| UserError::new("bad_key", format!("{who}: {e}")).into());
    }
    Ok(keys::load_key(home, who)
        .with_context(|| format!("{who:?} is neither a 64-hex public key nor a key in this home"))?
        .public())
}

fn proposal_id_arg(id: &str) -> Result<Vec<u8>> {
    let bytes = hex::decode(id).ok().filter(|b| b.len() == 32).ok_or_else(|| {
        UserError::new(
            "bad_id",
            format!("{id:?} is not a proposal id (64 hex digits, see `packfed gov list`)"),
        )
    })?;
    Ok(bytes)
}

async fn gov_command(home: &Home, j: bool, cmd: GovCommand) -> Result<()> {
    let client = Client::connect(home)?;
    let submit = |env: Signed| {
        let client = &client;
        async move {
            let v: Value = client
                .post_json("/v1/gov/submit", &json!({"envelope": hex::encode(env.encoded())}))
                .await?;
            let witnessed = v["witnessed"] == true;
            Ok::<_, anyhow::Error>((v["id"].as_str().unwrap_or_default().to_string(), witnessed))
        }
    };
    // What a record waiting for witnesses means to the user.
    let pending = |witnessed: bool| {
        if witnessed {
            ""
        } else {
            " (not yet witnessed: it counts once a witness quorum has seen it)"
        }
    };
    match cmd {
        GovCommand::Members => {
            let v: Value = client.get("/v1/gov/members").await?;
            output(j, &v, || {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        format!(
                            "{}  {:<10} {}",
                            m["public_key"].as_str().unwrap_or(""),
                            m["role"].as_str().unwrap_or(""),
                            m["weight"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        GovCommand::Propose {
            key,
            title,
            policy,
            add_member,
            remove_member,
            set,
            reassign,
        } => {
            use pb::proposal::Action as A;
            let action = if let Some(file) = policy {
                let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                Policy::parse(&text).map_err(|e| UserError::new("bad_policy", format!("{}: {e}", file.display())))?;
                A::PolicyToml(text)
            } else if let Some(spec) = add_member {
                let m = resolve_member(home, &spec)?;
                A::AddMember(pb::MemberSpec {
                    public_key: m.public_key.as_bytes().to_vec(),
                    role: m.role.as_str().to_string(),
                    weight: m.weight,
                })
            } else if let Some(who) = remove_member {
                A::RemoveMember(key_arg(home, &who)?.as_bytes().to_vec())
            } else if let Some(kv) = set {
                let (name, value) = kv
                    .split_once('=')
                    .ok_or_else(|| UserError::new("bad_parameter", format!("--set {kv:?}: write NAME=VALUE")))?;
                let mut check = Parameters::default();
                check
                    .set(name, value)
                    .map_err(|e| UserError::new("bad_parameter", format!("--set {kv}: {e}")))?;
                A::SetParameter(pb::ParameterChange {
                    name: name.into(),
                    value: value.into(),
                })
            } else if let Some(kv) = reassign {
                let (ns, who) = kv.split_once('=').ok_or_else(|| {
                    UserError::new("bad_reassign", format!("--reassign {kv:?}: write NAMESPACE=PUBKEY"))
                })?;
                A::ReassignNamespace(pb::NamespaceReassignment {
                    namespace: ns.into(),
                    owner: key_arg(home, who)?.as_bytes().to_vec(),
                })
            } else {
                return Err(UserError::new(
                    "no_action",
                    "say what the proposal does: --policy FILE, --add-member, --remove-member, --set or --reassign",
                )
                .into());
            };
            let key = keys::load_key(home, &key)?;
            let fed = read_federation_id(home)?;
            let p = pb::Proposal {
                title,
                created_at_ms: packing::now_ms(),
                action: Some(action),
            };
            let (id, witnessed) = submit(Signed::sign(&p, &key, &fed)).await?;
            let v = json!({"proposal_id": id, "witnessed": witnessed});
            output(j, &v, || format!("proposed {id}{}", pending(witnessed)));
        }
        GovCommand::Vote {
            proposal_id,
            choice,
            key,
        } => {
            choice
                .parse::<packfed_governance::proposals::Choice>()
                .map_err(|e| UserError::new("bad_choice", e))?;
            let key = keys::load_key(home, &key)?;
            let fed = read_federation_id(home)?;
            let vote = pb::Vote {
                proposal_id: proposal_id_arg(&proposal_id)?,
                choice: choice.clone(),
                cast_at_ms: packing::now_ms(),
            };
            let (id, witnessed) = submit(Signed::sign(&vote, &key, &fed)).await?;
            let v = json!({"vote_id": id, "witnessed": witnessed});
            output(j, &v, || {
                format!("voted {choice} on {proposal_id} ({id}){}", pending(witnessed))
            });
        }
        GovCommand::Cancel { proposal_id, key } => {
            let key = keys::load_key(home, &key)?;
            let fed = read_federation_id(home)?;
            let c = pb::ProposalCancel {
                proposal_id: proposal_id_arg(&proposal_id)?,
                canceled_at_ms: packing::now_ms(),
            };
            let (id, witnessed) = submit(Signed::sign(&c, &key, &fed)).await?;
            let v = json!({"cancel_id": id, "witnessed": witnessed});
            output(j, &v, || format!("canceled {proposal_id}"));
        }
        GovCommand::List => {
            let v: Value = client.get("/v1/gov/proposals").await?;
            output(j, &v, || match v.as_array() {
                Some(a) if !a.is_empty() => a.iter().map(proposal_line).collect::<Vec<_>>().join("\n"),
                _ => "no proposals".into(),
            });
        }
        GovCommand::Show { proposal_id } => {
            let v: Value = client.get(&format!("/v1/gov/proposals/{proposal_id}")).await?;
            output(j, &v, || {
                let mut out = proposal_line(&v);
                for vote in v["votes"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n  {} {} (weight {})",
                        vote["voter"].as_str().unwrap_or(""),
                        vote["choice"].as_str().unwrap_or(""),
                        vote["weight"]
                    ));
                }
                out
            });
        }
    }
    Ok(())
}

fn proposal_line(p: &Value) -> String {
    format!(
        "{}  {:<9} for {} against {} abstain {}  {}",
        p["proposal_id"].as_str().unwrap_or(""),
        p["state"].as_str().unwrap_or(""),
        p["for"],
        p["against"],
        p["abstain"],
        p["title"].as_str().unwrap_or("")
    )
}

/// One attestation as a line of text.
fn attestation_line(a: &Value) -> String {
    format!(
        "{} {} by {}{}{}{}",
        a["kind"].as_str().unwrap_or(""),
        a["result"].as_str().unwrap_or(""),
        &a["attester"].as_str().unwrap_or("")[..16.min(a["attester"].as_str().unwrap_or("").len())],
        a["role"].as_str().map(|r| format!(" ({r})")).unwrap_or_default(),
        if a["current"] == false { " [superseded]" } else { "" },
        a["note"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(|n| format!(": {n}"))
            .unwrap_or_default()
    )
}

/// The release in an info answer, its signature checked here.
fn verified_release(info: &Value, fed: &FederationId) -> Result<pb::Release> {
    let bytes =
        hex::decode(info["envelope"].as_str().unwrap_or_default()).context("node sent a release that is not hex")?;
    let env = Signed::decode(&bytes)?;
    let v = env
        .verify::<pb::Release>(fed)
        .context("the node sent a release whose signature does not verify")?;
    Ok(v.record().clone())
}

/// `PUBKEY:ROLE:WEIGHT`, where PUBKEY may be the name of a key in the home.
fn resolve_member(home: &Home, spec: &str) -> Result<Member> {
    let (who, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let is_hex_key = who.len() == 64 && who.bytes().all(|b| b.is_ascii_hexdigit());
    let full = if is_hex_key {
        spec.to_string()
    } else {
        let key = keys::load_key(home, who).with_context(|| {
            format!("member {spec:?}: {who:?} is neither a 64-hex public key nor a key in this home")
        })?;
        format!("{}:{rest}", key.public())
    };
    full.parse::<Member>()
        .map_err(|e| UserError::new("bad_member", e).into())
}

fn pack_to(dir: &Path, out: &Path) -> Result<packfed_protocol::archive::PackSummary> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent)?;
    let (w, summary) = packfed_protocol::archive::pack_dir(dir, std::io::BufWriter::new(tmp.reopen()?))?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    tmp.persist(out).with_context(|| format!("writing {}", out.display()))?;
    crate::config::sync_dir(parent).with_context(|| format!("syncing {}", parent.display()))?;
    Ok(summary)
}

/// `--timeout`: `300ms`, `2s`, or a bare number of milliseconds.
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let err = || format!("{s:?} is not a timeout: write e.g. 300ms or 2s");
    let (n, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else {
        (s, 1)
    };
    let n: u64 = n.parse().map_err(|_| err())?;
    Ok(std::time::Duration::from_millis(n.checked_mul(mul).ok_or_else(err)?))
}
