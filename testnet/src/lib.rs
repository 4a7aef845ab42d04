//! Local federation harness: starts real `packfed` node processes on
//! 127.0.0.1 with their own homes, runs CLI commands against them, and makes
//! pack directories to publish. Used by the end-to-end tests in `tests/` and
//! by the benches; the `testnet` command (`src/main.rs`) builds on it, and
//! [`sim`] is the in-process large-N gossip simulation.

pub mod adversary;
pub mod catalog;
pub mod sim;
pub mod swarm_sim;
pub mod timing;
pub mod torsion;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Runs `packfed` with `--home home` and the given arguments.
pub fn packfed(bin: &Path, home: &Path, args: &[&str]) -> Result<Output> {
    Command::new(bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("PACKFED_HOME")
        .output()
        .with_context(|| format!("running {}", bin.display()))
}

/// Runs `packfed --json ...` and parses stdout; errors if the exit is non-zero.
pub fn packfed_json(bin: &Path, home: &Path, args: &[&str]) -> Result<Value> {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = packfed(bin, home, &full)?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "packfed {args:?} printed no JSON: stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if !out.status.success() {
        bail!("packfed {args:?} failed: {v}");
    }
    Ok(v)
}

/// What a running daemon writes to `HOME/node.json`.
#[derive(Debug, Clone, Default)]
pub struct NodeJson {
    pub peer_id: String,
    pub api: String,
    pub pid: u32,
    pub listen_addrs: Vec<String>,
}

impl NodeJson {
    /// Reads `HOME/node.json`; None while it is missing or half written.
    pub fn read(home: &Path) -> Option<NodeJson> {
        let v: Value = serde_json::from_slice(&std::fs::read(home.join("node.json")).ok()?).ok()?;
        Some(NodeJson {
            peer_id: v["peer_id"].as_str()?.to_string(),
            api: v["api"].as_str()?.to_string(),
            pid: u32::try_from(v["pid"].as_u64()?).ok()?,
            listen_addrs: v["listen_addrs"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        })
    }
}

/// POSTs JSON to the API at `api` with `token` as the bearer; the raw HTTP answer.
pub fn post_json_with_token(api: &str, path: &str, token: &str, body: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(api)?;
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    Ok(out)
}

/// `GET path` on a node's API (no token: public routes), its JSON body.
pub fn get_json(api: &str, path: &str) -> Result<Value> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(api)?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response from {api}"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    Ok(serde_json::from_str(body)?)
}

/// Spawns `packfed node run` on an initialized home, stdout and stderr to
/// `HOME/node.log`. With `detach` the node gets its own process group, so
/// it outlives the caller and a Ctrl-C in the caller's terminal.
pub fn spawn_node(bin: &Path, home: &Path, env: &[(&str, &str)], detach: bool) -> Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.arg("--home").arg(home).args(["node", "run"]);
    spawn_logged(cmd, home, env, detach)
}

/// Spawns `testnet adversary --home HOME` (the `testnet` binary at `bin`),
/// logged like [`spawn_node`].
pub fn spawn_adversary(bin: &Path, home: &Path, env: &[(&str, &str)]) -> Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.arg("adversary").arg("--home").arg(home);
    spawn_logged(cmd, home, env, false)
}

fn spawn_logged(mut cmd: Command, home: &Path, env: &[(&str, &str)], detach: bool) -> Result<Child> {
    let _ = std::fs::remove_file(home.join("node.json")); // stale after a kill -9
    // Appended, so a restarted node's log follows the one before it.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("node.log"))
        .with_context(|| format!("opening {}", home.join("node.log").display()))?;
    cmd.env_remove("PACKFED_HOME")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if detach {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.spawn().with_context(|| format!("spawning {:?}", cmd.get_program()))
}

/// Waits until `HOME/node.json` is written by process `pid` and names a
/// listening API; on timeout the error carries the node log.
pub fn wait_node_json(home: &Path, pid: u32, deadline: Duration) -> Result<NodeJson> {
    wait_for(deadline, "node.json", || {
        NodeJson::read(home).filter(|n| n.pid == pid && !n.api.is_empty())
    })
    .map_err(|e| {
        let log = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
        anyhow::anyhow!("{e}; node log:\n{log}")
    })
}

/// The first libp2p listen address in `HOME/node.json` (waits until the
/// network has written it).
pub fn p2p_addr(home: &Path, deadline: Duration) -> Result<String> {
    wait_for(deadline, "libp2p listen address", || {
        NodeJson::read(home)?.listen_addrs.into_iter().next()
    })
}

/// A node process with its own home.
pub struct TestNode {
    /// The `packfed` binary, for CLI commands against this node.
    pub bin: PathBuf,
    pub home: PathBuf,
    pub child: Option<Child>,
    pub api: String,
    /// Set for an adversary: the `testnet` binary that runs it.
    adversary: Option<PathBuf>,
}

impl TestNode {
    /// Starts `packfed node run` on an initialized home and waits until
    /// `node.json` names a listening API.
    pub fn start(bin: &Path, home: &Path) -> Result<TestNode> {
        Self::start_with_env(bin, home, &[])
    }

    /// Starts with extra environment variables (`RUST_LOG`, say).
    pub fn start_with_env(bin: &Path, home: &Path, env: &[(&str, &str)]) -> Result<TestNode> {
        let child = spawn_node(bin, home, env, false)?;
        Self::started(bin, home, child, None)
    }

    /// Starts the adversary ([`adversary`]) on an initialized home: a full
    /// node with hostile controls on its API. `testnet` is the `testnet`
    /// binary, `bin` the `packfed` one (for CLI commands against it).
    pub fn start_adversary(bin: &Path, testnet: &Path, home: &Path) -> Result<TestNode> {
        let child = spawn_adversary(testnet, home, &[])?;
        Self::started(bin, home, child, Some(testnet.to_path_buf()))
    }

    fn started(bin: &Path, home: &Path, child: Child, adversary: Option<PathBuf>) -> Result<TestNode> {
        let pid = child.id();
        let mut node = TestNode {
            bin: bin.to_path_buf(),
            home: home.to_path_buf(),
            child: Some(child),
            api: String::new(),
            adversary,
        };
        node.api = wait_node_json(home, pid, Duration::from_secs(30))?.api;
        Ok(node)
    }

    /// POSTs one of the adversary's controls and checks it succeeded: the
    /// JSON answer.
    pub fn control(&self, path: &str, body: &Value) -> Result<Value> {
        let raw = self.post_json(path, &body.to_string())?;
        let (head, json) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{path} answered {raw}");
        }
        serde_json::from_str(json).with_context(|| format!("{path} answered {raw}"))
    }

    /// Asks this node to fetch a blob into its store
    /// (`GET /v1/blobs/HASH/fetch`), reading its progress events until the
    /// last one, or until `stop` says so; returns that event.
    pub fn prefetch(&self, hash: &str, size: u64, mut stop: impl FnMut(&Value) -> bool) -> Result<Value> {
        use std::io::{BufRead, Write};
        let token = std::fs::read_to_string(self.home.join("api-token"))?;
        let mut c = std::net::TcpStream::connect(&self.api)?;
        write!(
            c,
            "GET /v1/blobs/{hash}/fetch?size={size} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.api,
            token.trim()
        )?;
        let mut last = Value::Null;
        // Chunk-size lines and headers are not JSON objects: skipped.
        for line in std::io::BufReader::new(c).lines() {
            let Ok(v) = serde_json::from_str::<Value>(&line?) else {
                continue;
            };
            if !v.is_object() {
                continue;
            }
            let end = v.get("done").is_some() || v.get("error").is_some();
            if end || stop(&v) {
                return Ok(v);
            }
            last = v;
        }
        bail!("the fetch stream ended without a result (last event {last})")
    }

    /// The blob `hash` as this node serves it from its store (`GET
    /// /v1/blobs`) hashes to `hash`: nothing corrupt was stored.
    pub fn holds_verified(&self, hash: &str) -> bool {
        use std::io::{Read, Write};
        let Ok(token) = std::fs::read_to_string(self.home.join("api-token")) else {
            return false;
        };
        let Ok(mut c) = std::net::TcpStream::connect(&self.api) else {
            return false;
        };
        let mut raw = Vec::new();
        let asked = write!(
            c,
            "GET /v1/blobs/{hash} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.api,
            token.trim()
        );
        if asked.and_then(|_| c.read_to_end(&mut raw)).is_err() {
            return false;
        }
        let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return false;
        }
        let mut body = &raw[at + 4..];
        if !head.contains("transfer-encoding: chunked") {
            return blake3::hash(body).to_hex().as_str() == hash;
        }
        let mut hasher = blake3::Hasher::new();
        loop {
            let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
                return false;
            };
            let Ok(n) = usize::from_str_radix(String::from_utf8_lossy(&body[..eol]).trim(), 16) else {
                return false;
            };
            if n == 0 {
                break;
            }
            let Some(chunk) = body.get(eol + 2..eol + 2 + n) else {
                return false;
            };
            hasher.update(chunk);
            body = &body[eol + 4 + n..];
        }
        hasher.finalize().to_hex().as_str() == hash
    }

    /// A counter or gauge from this node's `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&self.api).ok()?;
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.api
        )
        .ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The adversary fetches a blob by hash from the federation, as a node
    /// that learnt the hash out of band would.
    pub fn fetch_by_hash(&self, hash: &str, size: u64) -> Result<()> {
        self.control("/v1/test/fetch", &serde_json::json!({"hash": hash, "size": size}))
            .map(drop)
    }

    /// Gossips `bytes` exactly as given on a topic ("" is the records topic).
    pub fn gossip(&self, topic: &str, bytes: &[u8]) -> Result<()> {
        self.control(
            "/v1/test/gossip",
            &serde_json::json!({"topic": topic, "hex": hex::encode(bytes)}),
        )
        .map(drop)
    }

    /// Waits until the node's search catalog and index hold at least `n`
    /// releases: benches measure their baselines on a settled node, not
    /// beside the indexer working off a backlog.
    pub fn wait_indexed(&self, n: u64, deadline: Duration) -> Result<()> {
        wait_for(deadline, "the search index to hold every release", || {
            let status = get_json(&self.api, "/v1/status").ok()?;
            let s = &status["search"];
            (s["catalog"].as_u64()? >= n && s["documents"].as_u64()? >= n).then_some(())
        })
    }

    /// The libp2p address to bootstrap from (waits until it is known).
    pub fn p2p_addr(&self) -> Result<String> {
        p2p_addr(&self.home, Duration::from_secs(30))
    }

    pub fn json(&self, args: &[&str]) -> Result<Value> {
        packfed_json(&self.bin, &self.home, args)
    }

    /// POSTs JSON to this node's API with its token; the raw HTTP answer.
    pub fn post_json(&self, path: &str, body: &str) -> std::io::Result<String> {
        let token = std::fs::read_to_string(self.home.join("api-token"))?;
        post_json_with_token(&self.api, path, token.trim(), body)
    }

    pub fn run(&self, args: &[&str]) -> Result<Output> {
        packfed(&self.bin, &self.home, args)
    }

    /// Starts the node again on its home, after [`TestNode::stop`] or
    /// [`TestNode::kill9`].
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("node is still running");
        }
        let child = match &self.adversary {
            Some(testnet) => spawn_adversary(testnet, &self.home, &[])?,
            None => spawn_node(&self.bin, &self.home, &[], false)?,
        };
        let pid = child.id();
        self.child = Some(child);
        self.api = wait_node_json(&self.home, pid, Duration::from_secs(30))?.api;
        Ok(())
    }

    /// Whether this node shows release `id` (`name@version`).
    pub fn has_release(&self, id: &str) -> bool {
        self.json(&["info", id]).is_ok()
    }

    /// Whether this node holds attestation `attestation` of release `id`.
    pub fn has_attestation(&self, id: &str, attestation: &str) -> bool {
        self.json(&["attestations", id])
            .ok()
            .and_then(|v| {
                v.as_array()
                    .map(|a| a.iter().any(|x| x["id"].as_str() == Some(attestation)))
            })
            .unwrap_or(false)
    }

    /// The process id of the running node.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait: the clean shutdown path.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("node already stopped");
        };
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = wait_for(Duration::from_secs(30), "node exit", || c.try_wait().ok().flatten())?;
        Ok(status)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates a genesis (one maintainer member: a key named `key` in `home`)
/// and initializes `home` with an API on a free port.
pub fn init_single(bin: &Path, home: &Path, key: &str) -> Result<Value> {
    let k = packfed_json(bin, home, &["key", "new", key])?;
    let member = format!("{}:maintainer:1", k["public_key"].as_str().context("public_key")?);
    let genesis = home.with_extension("genesis.toml");
    packfed_json(
        bin,
        home,
        &[
            "federation",
            "new",
            "--name",
            "test",
            "--member",
            &member,
            "--out",
            &genesis.to_string_lossy(),
        ],
    )?;
    packfed_json(
        bin,
        home,
        &[
            "init",
            "--name",
            "n1",
            "--role",
            "company",
            "--federation",
            &genesis.to_string_lossy(),
            "--api",
            "127.0.0.1:0",
        ],
    )
}

/// Writes a pack directory with a manifest, a README, a LICENSE, a template
/// and `extra_bytes` of incompressible data.
pub fn make_pack(dir: &Path, name: &str, version: &str, deps: &[(&str, &str)], extra_bytes: usize) -> Result<()> {
    std::fs::create_dir_all(dir.join("templates"))?;
    let mut manifest = format!(
        "[pack]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"Templates for {name}, generated for tests\"\nlicense = \"MIT\"\nkeywords = [\"test\", \"templates\"]\ncategory = \"web\"\nauthors = [\"Test <t@example.test>\"]\n\n[variables.name]\ntype = \"string\"\ndescription = \"Who the template greets\"\ndefault = \"world\"\n"
    );
    if !deps.is_empty() {
        manifest.push_str("\n[dependencies]\n");
        for (d, r) in deps {
            manifest.push_str(&format!("\"{d}\" = \"{r}\"\n"));
        }
    }
    std::fs::write(dir.join("pack.toml"), manifest)?;
    std::fs::write(
        dir.join("README.md"),
        format!("# {name}\n\n{}", "A pack used in tests. ".repeat(8)),
    )?;
    std::fs::write(dir.join("LICENSE"), "MIT License\n")?;
    std::fs::write(
        dir.join("templates/main.tmpl"),
        format!("hello {{{{name}}}} from {name}@{version}\n"),
    )?;
    if extra_bytes > 0 {
        std::fs::write(
            dir.join("templates/data.bin"),
            pseudo_random_bytes(extra_bytes, name.len() as u64),
        )?;
    }
    Ok(())
}

/// A pack whose `templates/data.bin` holds `bytes` of incompressible data,
/// written in 8 MiB pieces (the caller never holds it whole).
pub fn make_big_pack(dir: &Path, name: &str, version: &str, bytes: usize) -> Result<()> {
    use std::io::Write;
    make_pack(dir, name, version, &[], 0)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("templates/data.bin"))?);
    let piece = pseudo_random_bytes(8 << 20, 99);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece.len() - 8);
        f.write_all(&piece[..n])?;
        left -= n;
        // Each piece differs, so zstd finds no long repeats.
        let mark = (left as u64).to_le_bytes();
        let m = left.min(8);
        f.write_all(&mark[..m])?;
        left -= m;
    }
    f.flush()?;
    Ok(())
}

/// A pack that fills the default `[node] max_pack_bytes` (1 GiB) as
/// closely as the archive's framing allows.
pub const ONE_GIB_PACK_BYTES: usize = (1 << 30) - (1 << 20);

/// Incompressible bytes from a fixed seed (xorshift), so benches are repeatable.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A local federation: one genesis, N homes under `root`, each with its own
/// key `k<i>` as a maintainer member.
pub struct Federation {
    pub bin: PathBuf,
    pub root: PathBuf,
    pub genesis: PathBuf,
    pub nodes: Vec<TestNode>,
    /// Whether a home already witnesses (see [`Federation::init_home`]).
    pub witnessing: std::sync::atomic::AtomicBool,
    /// Nodes `up` will start (0: not started by `up`).
    pub planned: std::sync::atomic::AtomicUsize,
}

impl Federation {
    /// Writes the genesis with `members` keys (created in `root/keys-home`).
    pub fn genesis(bin: &Path, root: &Path, members: usize, extra: &[&str]) -> Result<PathBuf> {
        let keys_home = Self::keys_home(root);
        let mut args: Vec<String> = vec!["federation".into(), "new".into(), "--name".into(), "testnet".into()];
        for i in 0..members {
            let name = format!("k{i}");
            packfed_json(bin, &keys_home, &["key", "new", &name])?;
            args.push("--member".into());
            args.push(format!("{name}:maintainer:1"));
        }
        let genesis = root.join("genesis.toml");
        args.push("--out".into());
        args.push(genesis.to_string_lossy().into_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        packfed_json(bin, &keys_home, &refs)?;
        Ok(genesis)
    }

    /// Where the member keys live before nodes exist (extra members named in
    /// `extra` genesis arguments must be created here first).
    pub fn keys_home(root: &Path) -> PathBuf {
        root.join("keys-home")
    }

    /// A federation with a fresh genesis (`members` keys) and no node yet.
    pub fn empty(bin: &Path, root: &Path, members: usize) -> Result<Federation> {
        Self::empty_with(bin, root, members, &[])
    }

    /// Same, with extra `federation new` arguments (members, policy).
    pub fn empty_with(bin: &Path, root: &Path, members: usize, extra: &[&str]) -> Result<Federation> {
        let genesis = Self::genesis(bin, root, members, extra)?;
        Ok(Federation {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            genesis,
            nodes: Vec::new(),
            witnessing: Default::default(),
            planned: Default::default(),
        })
    }

    /// Initializes a node home; copies every member key into it so tests
    /// can publish from any node.
    pub fn init_home(&self, name: &str, role: &str, bootstrap: Option<&str>, org: &[String]) -> Result<PathBuf> {
        let home = self.root.join(name);
        let genesis = self.genesis.to_string_lossy().into_owned();
        let mut args = vec![
            "init",
            "--name",
            name,
            "--role",
            role,
            "--federation",
            &genesis,
            "--api",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        for o in org {
            args.extend(["--org", o.as_str()]);
        }
        packfed_json(&self.bin, &home, &args)?;
        let keys = self.root.join("keys-home/keys");
        std::fs::create_dir_all(home.join("keys"))?;
        for entry in std::fs::read_dir(&keys)? {
            let entry = entry?;
            std::fs::copy(entry.path(), home.join("keys").join(entry.file_name()))?;
        }
        let witness = self.witness_keys_for(name, &keys)?;
        let cfg = std::fs::read_to_string(home.join("config.toml"))?;
        let list: Vec<String> = witness.iter().map(|k| format!("\"{k}\"")).collect();
        let keys_line = format!("[witness]\nkeys = [{}]\n", list.join(", "));
        let cfg = if cfg.contains("[witness]\n") {
            cfg.replacen("[witness]\n", &keys_line, 1)
        } else {
            format!("{cfg}\n{keys_line}")
        };
        std::fs::write(home.join("config.toml"), cfg)?;
        Ok(home)
    }

    /// Every home holds every member key, and one witness key must be used
    /// by one node only (two logs for one key are equivocation). So home
    /// `n<i>` witnesses with member key `k<i>`; otherwise the first home of
    /// the federation witnesses with every member key (it alone is the
    /// witness quorum) and later homes with none.
    fn witness_keys_for(&self, name: &str, keys: &Path) -> Result<Vec<String>> {
        use std::sync::atomic::Ordering;
        let members: Vec<String> = (0..)
            .map(|i| format!("k{i}"))
            .take_while(|k| keys.join(format!("{k}.key")).exists())
            .collect();
        if let Some(i) = name.strip_prefix('n').and_then(|i| i.parse::<usize>().ok())
            && i < members.len()
        {
            self.witnessing.store(true, Ordering::SeqCst);
            // With fewer nodes than members, the last node takes the rest,
            // so the nodes together hold every witness key.
            let planned = self.planned.load(Ordering::SeqCst);
            if planned > 0 && i + 1 == planned {
                return Ok(members[i..].to_vec());
            }
            return Ok(vec![members[i].clone()]);
        }
        if self.witnessing.swap(true, Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        Ok(members)
    }

    /// N nodes, the first one the bootstrap of the others; `roles[i]` per
    /// node. Waits until every node sees every other.
    pub fn up(bin: &Path, root: &Path, roles: &[&str]) -> Result<Federation> {
        Self::up_with(bin, root, roles, &[])
    }

    /// Same, with extra `federation new` arguments (members, policy).
    pub fn up_with(bin: &Path, root: &Path, roles: &[&str], extra: &[&str]) -> Result<Federation> {
        let mut fed = Self::empty_with(bin, root, 3, extra)?;
        fed.planned.store(roles.len(), std::sync::atomic::Ordering::SeqCst);
        let first = fed.init_home("n0", roles[0], None, &[])?;
        fed.nodes.push(TestNode::start(bin, &first)?);
        let boot = fed.nodes[0].p2p_addr()?;
        for (i, role) in roles.iter().enumerate().skip(1) {
            let home = fed.init_home(&format!("n{i}"), role, Some(&boot), &[])?;
            fed.nodes.push(TestNode::start(bin, &home)?);
        }
        fed.wait_connected(Duration::from_secs(30))?;
        Ok(fed)
    }

    /// Three company nodes: `a` and `b` share an org catalog, `c` is
    /// outside it; `b` and `c` bootstrap to `a`. With `c_adversary` (the
    /// `testnet` binary), `c` is the adversary.
    pub fn org_trio(bin: &Path, root: &Path, c_adversary: Option<&Path>) -> Result<Federation> {
        let mut fed = Federation::empty(bin, root, 3)?;
        let homes: Vec<PathBuf> = ["a", "b", "c"]
            .iter()
            .map(|n| fed.init_home(n, "company", None, &[]))
            .collect::<Result<_>>()?;
        // Learn each node's peer id by starting it once.
        let mut ids = Vec::new();
        for h in &homes {
            let n = TestNode::start(bin, h)?;
            let status = n.json(&["status"])?;
            ids.push(
                status["peer_id"]
                    .as_str()
                    .context("status without peer_id")?
                    .to_string(),
            );
        }
        let edit = |h: &PathBuf, from: &str, to: String| -> Result<()> {
            let cfg = std::fs::read_to_string(h.join("config.toml"))?;
            std::fs::write(h.join("config.toml"), cfg.replacen(from, &to, 1))?;
            Ok(())
        };
        edit(&homes[0], "peers = []", format!("peers = [\"{}\"]", ids[1]))?;
        edit(&homes[1], "peers = []", format!("peers = [\"{}\"]", ids[0]))?;
        fed.nodes.push(TestNode::start(bin, &homes[0])?);
        let boot = fed.nodes[0].p2p_addr()?;
        for h in &homes[1..] {
            edit(h, "bootstrap = []", format!("bootstrap = [\"{boot}\"]"))?;
        }
        fed.nodes.push(TestNode::start(bin, &homes[1])?);
        fed.nodes.push(match c_adversary {
            Some(testnet) => TestNode::start_adversary(bin, testnet, &homes[2])?,
            None => TestNode::start(bin, &homes[2])?,
        });
        fed.wait_connected(Duration::from_secs(30))?;
        Ok(fed)
    }

    /// Waits until every running node has every other as a peer.
    pub fn wait_connected(&self, deadline: Duration) -> Result<()> {
        let n = self.nodes.iter().filter(|n| n.child.is_some()).count();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_for(deadline, "peers to connect", || {
                let peers = node.json(&["peers"]).ok()?;
                (peers.as_array()?.len() + 1 >= n).then_some(())
            })?;
        }
        Ok(())
    }
}

/// A signed attestation, hex, for tests that play a hostile peer:
/// `corrupt_signature` flips a signature bit; the federation id is any hex.
pub fn sign_attestation_hex(
    key_file_text: &str,
    federation_hex: &str,
    name: &str,
    version: &str,
    hash_hex: &str,
    corrupt_signature: bool,
) -> Result<String> {
    use packfed_protocol::{FederationId, KeyPair, Signed, pb};
    let key = KeyPair::from_file_text(key_file_text)?;
    let fed = FederationId(
        hex::decode(federation_hex)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("federation id must be 32 bytes"))?,
    );
    let a = pb::Attestation {
        name: name.into(),
        version: version.into(),
        content_hash: hex::decode(hash_hex)?,
        kind: "audit".into(),
        result: "pass".into(),
        note: format!("{:?}", std::time::SystemTime::now()),
        attested_at_ms: 1,
        score: 0,
    };
    let env = Signed::sign(&a, &key, &fed);
    let mut pbs = env.to_pb();
    if corrupt_signature {
        pbs.signature[0] ^= 1;
    }
    Ok(hex::encode(prost::Message::encode_to_vec(&pbs)))
}

/// Fills `home`'s store with `n` signed releases `nsI/pack-J@1.0.0` (and
/// their claims) without a daemon, as if published over time; returns the
/// publisher key. For benches.
pub fn preload(home: &Path, n: usize) -> Result<packfed_protocol::KeyPair> {
    let node = packfed_node::node::Node::open(packfed_node::config::Home {
        root: home.to_path_buf(),
    })?;
    let fed: packfed_protocol::FederationId = *node.federation();
    let key = packfed_protocol::KeyPair::generate()?;
    for ns in 0..(n / 100).max(1) {
        let claim = packfed_protocol::pb::NamespaceClaim {
            namespace: format!("ns{ns}"),
            claimed_at_ms: 1,
        };
        node.ingest(
            packfed_protocol::Signed::sign(&claim, &key, &fed).encoded(),
            packfed_node::core::Channel::Public,
        );
    }
    for i in 0..n {
        let r = packfed_protocol::pb::Release {
            name: format!("ns{}/pack-{i}", i / 100),
            version: "1.0.0".into(),
            content_hash: blake3::hash(&i.to_le_bytes()).as_bytes().to_vec(),
            size: 1000 + i as u64,
            description: format!(
                "generated pack number {i} with some words {}",
                hex::encode(pseudo_random_bytes(24, i as u64))
            ),
            license: "MIT".into(),
            keywords: vec!["bench".into(), format!("k{}", i % 50)],
            category: "web".into(),
            ..Default::default()
        };
        node.ingest(
            packfed_protocol::Signed::sign(&r, &key, &fed).encoded(),
            packfed_node::core::Channel::Public,
        );
    }
    // A home that witnesses lists what it holds, so the claims own their
    // namespaces once a witness quorum has seen them.
    node.checkpoint_now();
    node.save_replica()?;
    node.store.flush()?;
    Ok(key)
}

/// Fills `home`'s store with one signed release per spec of a generated
/// catalog ([`catalog::generate`] / [`catalog::generate_releases`]), and a
/// namespace claim per distinct namespace, all by one fresh publisher key,
/// without a daemon. Quality reports carry each spec's score and its tier;
/// publication times are spread over the last two years (a package's later
/// versions later). For benches and search-quality runs.
pub fn preload_catalog(home: &Path, specs: &[catalog::PackSpec]) -> Result<()> {
    use packfed_node::core::Channel;
    use packfed_node::node::Ingested;
    use packfed_protocol::{KeyPair, Signed, pb};
    const DAY_MS: u64 = 86_400_000;
    const TWO_YEARS_MS: u64 = 730 * DAY_MS;

    let node = packfed_node::node::Node::open(packfed_node::config::Home {
        root: home.to_path_buf(),
    })?;
    let fed = *node.federation();
    let key = KeyPair::generate()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(TWO_YEARS_MS);
    let start = now.saturating_sub(TWO_YEARS_MS);

    let mut namespaces = std::collections::BTreeSet::new();
    for s in specs {
        let (ns, _) = s
            .name
            .split_once('/')
            .with_context(|| format!("pack name {:?} has no namespace", s.name))?;
        namespaces.insert(ns);
    }
    let mut envelopes: Vec<Vec<u8>> = namespaces
        .iter()
        .map(|ns| {
            let claim = pb::NamespaceClaim {
                namespace: (*ns).to_string(),
                claimed_at_ms: 1,
            };
            Signed::sign(&claim, &key, &fed).encoded().to_vec()
        })
        .collect();
    let mut seen: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for s in specs {
        // A package appears somewhere in the first 18 months; each further
        // version a month after the previous one, never in the future.
        let h = blake3::hash(s.name.as_bytes());
        let first = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8])) % (TWO_YEARS_MS / 4 * 3);
        let nth = seen.entry(s.name.as_str()).or_insert(0);
        let published = (start + first + *nth * 30 * DAY_MS).min(now);
        *nth += 1;
        let mut r = s.release(&s.name, published);
        r.size = 10_000 + u64::from(h.as_bytes()[8]) * 1000;
        envelopes.push(Signed::sign(&r, &key, &fed).encoded().to_vec());
    }
    for (i, e) in envelopes.iter().enumerate() {
        if let Ingested::Invalid(reason) = node.ingest(e, Channel::Public) {
            let what = match i.checked_sub(namespaces.len()) {
                Some(j) => format!("release {}@{}", specs[j].name, specs[j].version),
                None => "a namespace claim".to_string(),
            };
            bail!("preloading {what}: {reason}");
        }
    }
    node.checkpoint_now();
    node.save_replica()?;
    node.store.flush()?;
    Ok(())
}

/// A signed vote, hex, for tests that play a hostile peer.
pub fn sign_vote_hex(key_file_text: &str, federation_hex: &str, proposal_hex: &str, choice: &str) -> Result<String> {
    use packfed_protocol::{FederationId, KeyPair, Signed, pb};
    let key = KeyPair::from_file_text(key_file_text)?;
    let fed = FederationId(
        hex::decode(federation_hex)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("federation id must be 32 bytes"))?,
    );
    let v = pb::Vote {
        proposal_id: hex::decode(proposal_hex)?,
        choice: choice.into(),
        cast_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    Ok(hex::encode(Signed::sign(&v, &key, &fed).encoded()))
}

/// A signed learning summary for the current round, hex, for tests that play
/// a hostile peer: `schema` other than the node's is ignored by receivers;
/// `corrupt_signature` flips a signature bit.
pub fn sign_learning_summary_hex(
    federation_hex: &str,
    round_ms: u64,
    schema: u32,
    delta: [f64; 5],
    corrupt_signature: bool,
) -> Result<String> {
    use packfed_protocol::{FederationId, KeyPair, Signed, pb};
    let key = KeyPair::generate()?;
    let fed = FederationId(
        hex::decode(federation_hex)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("federation id must be 32 bytes"))?,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let s = pb::LearningSummary {
        round: now / round_ms,
        round_ms,
        schema,
        delta: delta.to_vec(),
        samples: 1_000_000,
        usage: Vec::new(),
    };
    let env = Signed::sign(&s, &key, &fed);
    let mut pbs = env.to_pb();
    if corrupt_signature {
        pbs.signature[0] ^= 1;
    }
    Ok(hex::encode(prost::Message::encode_to_vec(&pbs)))
}
