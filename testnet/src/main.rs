//! `testnet`: launches a local N-node packfed federation on loopback as
//! detached `packfed node run` processes, reports on it, and stops it.
//!
//! ```text
//! testnet up 5 [--dir DIR] [--roles company,regional,public]   # DIR defaults to ./testnet-run
//! testnet status [--dir DIR]
//! testnet down [--dir DIR]
//! testnet adversary --home DIR     # a hostile node; see packfed_testnet::adversary
//! ```
//!
//! `up` records every node it starts in `DIR/pids` (one `pid<TAB>name<TAB>home`
//! line each) as soon as it is spawned. `down` signals exactly those pids and
//! only while `/proc/PID/cmdline` still shows `packfed --home HOME node run`
//! for the recorded home, so a pid reused by another process is left alone.
//! Node logs are in `DIR/<name>/node.log`.
//!
//! The `packfed` binary is looked up next to this executable, then in
//! `$PACKFED_BIN`, then on `PATH`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use packfed_testnet::{Federation, NodeJson, p2p_addr, packfed_json, spawn_node, wait_for, wait_node_json};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "testnet", about = "Run a local packfed federation on loopback")]
struct Cli {
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a genesis and N node homes, start the nodes, wait until they all see each other.
    Up {
        /// Number of nodes.
        n: usize,
        #[arg(long, default_value = "testnet-run")]
        dir: PathBuf,
        /// Roles of the nodes in order, repeated cyclically when shorter than N.
        #[arg(long, value_delimiter = ',', default_value = "company,regional,public",
              value_parser = ["company", "regional", "public"])]
        roles: Vec<String>,
        /// Seconds to wait for the nodes to start and connect.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Show, for every recorded node: alive, peers, releases, blobs.
    Status {
        #[arg(long, default_value = "testnet-run")]
        dir: PathBuf,
    },
    /// Run a hostile node from a home made by `packfed init`: a full node
    /// (like `packfed node run`) whose API adds the /v1/test/* controls.
    Adversary {
        #[arg(long)]
        home: PathBuf,
    },
    /// Stop the recorded nodes (SIGTERM, then SIGKILL after the timeout).
    Down {
        #[arg(long, default_value = "testnet-run")]
        dir: PathBuf,
        /// Seconds to wait for a clean exit before SIGKILL.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up { n, dir, roles, timeout } => up(n, &dir, &roles, Duration::from_secs(timeout), cli.json),
        Cmd::Status { dir } => status(&dir, cli.json),
        Cmd::Down { dir, timeout } => down(&dir, Duration::from_secs(timeout), cli.json),
        Cmd::Adversary { home } => adversary(home),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if cli.json {
                println!("{}", json!({ "error": format!("{e:#}") }));
            } else {
                eprintln!("testnet: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The `packfed` binary: next to this executable, else `$PACKFED_BIN`, else on `PATH`.
fn adversary(home: PathBuf) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Plain text in a log file, as `packfed node run` writes it (tests and
    // benches read fields such as via="iroh" from the log).
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(packfed_testnet::adversary::run(home))
}

fn packfed_bin() -> Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
        && dir.join("packfed").is_file()
    {
        return Ok(dir.join("packfed"));
    }
    if let Some(p) = std::env::var_os("PACKFED_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("packfed").is_file() {
                return Ok(dir.join("packfed"));
            }
        }
    }
    bail!("cannot find the packfed binary: build it next to testnet (cargo build --bin packfed), or set PACKFED_BIN")
}

/// One line of `DIR/pids`.
#[derive(Debug, Clone)]
struct Entry {
    pid: u32,
    name: String,
    home: PathBuf,
}

fn pids_file(dir: &Path) -> PathBuf {
    dir.join("pids")
}

fn append_entry(dir: &Path, e: &Entry) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(pids_file(dir))
        .context("opening the pids file")?;
    writeln!(f, "{}\t{}\t{}", e.pid, e.name, e.home.display())?;
    f.sync_all()?;
    Ok(())
}

fn read_entries(dir: &Path) -> Result<Vec<Entry>> {
    let path = pids_file(dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no testnet recorded in {} (no {})", dir.display(), path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (Some(pid), Some(name), Some(home)) = (parts.next(), parts.next(), parts.next()) else {
                bail!("bad line in {}: {line:?}", path.display());
            };
            Ok(Entry {
                pid: pid
                    .parse()
                    .with_context(|| format!("bad pid in {}: {line:?}", path.display()))?,
                name: name.to_string(),
                home: PathBuf::from(home),
            })
        })
        .collect()
}

/// True while `pid` is a live (not zombie) `packfed --home HOME node run`
/// for this entry's home. Reads /proc, so a reused pid never matches.
fn runs_our_node(e: &Entry) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{}/cmdline", e.pid)) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let is_packfed = args
        .first()
        .and_then(|a| Path::new(std::str::from_utf8(a).ok()?).file_name()?.to_str())
        .is_some_and(|n| n.contains("packfed"));
    let node_run = args.windows(2).any(|w| w[0] == b"node" && w[1] == b"run");
    let home = e.home.as_os_str().as_encoded_bytes();
    let our_home = args.windows(2).any(|w| w[0] == b"--home" && w[1] == home);
    is_packfed && node_run && our_home && !is_zombie(e.pid)
}

/// A zombie has exited; only its parent has yet to reap it.
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may hold spaces or parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s == "Z")
}

fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).context(format!("kill -{sig} {pid}"));
        }
    }
    Ok(())
}

/// SIGTERM to every entry still running our node, wait up to `deadline`,
/// then SIGKILL the ones left (same check). Returns one outcome per entry.
fn stop_entries(entries: &[Entry], deadline: Duration) -> Result<Vec<(&Entry, &'static str)>> {
    let mut outcome: Vec<(&Entry, &'static str)> = Vec::new();
    let mut signalled = Vec::new();
    for e in entries {
        if runs_our_node(e) {
            signal(e.pid, libc::SIGTERM)?;
            signalled.push(e);
        } else {
            outcome.push((e, "not running (left alone)"));
        }
    }
    let all_gone = |list: &[&Entry]| list.iter().all(|e| !runs_our_node(e));
    if wait_for(deadline, "the nodes to exit after SIGTERM", || {
        all_gone(&signalled).then_some(())
    })
    .is_ok()
    {
        outcome.extend(signalled.iter().map(|e| (*e, "stopped")));
        return Ok(outcome);
    }
    for e in &signalled {
        if runs_our_node(e) {
            signal(e.pid, libc::SIGKILL)?;
            outcome.push((e, "killed"));
        } else {
            outcome.push((e, "stopped"));
        }
    }
    wait_for(Duration::from_secs(10), "the nodes to exit after SIGKILL", || {
        all_gone(&signalled).then_some(())
    })?;
    Ok(outcome)
}

/// Nodes started by an `up` that has not finished: stopped again if it fails.
struct Started {
    entries: Vec<Entry>,
    children: Vec<Child>,
}

impl Started {
    fn abort(mut self, dir: &Path) {
        let _ = stop_entries(&self.entries, Duration::from_secs(10));
        for c in &mut self.children {
            let _ = c.wait(); // reap: they are our children
        }
        let _ = std::fs::remove_file(pids_file(dir));
    }
}

fn up(n: usize, dir: &Path, roles: &[String], deadline: Duration, as_json: bool) -> Result<()> {
    if n == 0 {
        bail!("a testnet needs at least one node");
    }
    let dir = std::path::absolute(dir).context("resolving --dir")?;
    if pids_file(&dir).exists() {
        bail!(
            "a testnet is already recorded in {}; run `testnet down --dir {}` first",
            pids_file(&dir).display(),
            dir.display()
        );
    }
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} is not empty; remove it or choose another --dir", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = packfed_bin()?;
    let mut started = Started {
        entries: Vec::new(),
        children: Vec::new(),
    };
    match launch(&bin, &dir, n, roles, deadline, &mut started) {
        Ok(nodes) => {
            print_up(&nodes, &started.entries, as_json);
            Ok(()) // the children keep running: dropping a Child neither kills nor waits
        }
        Err(e) => {
            started.abort(&dir);
            Err(e.context(format!(
                "the nodes were stopped again; homes and logs are in {}",
                dir.display()
            )))
        }
    }
}

fn launch(
    bin: &Path,
    dir: &Path,
    n: usize,
    roles: &[String],
    deadline: Duration,
    started: &mut Started,
) -> Result<Vec<NodeJson>> {
    let genesis = Federation::genesis(bin, dir, n, &[])?;
    let fed = Federation {
        bin: bin.to_path_buf(),
        root: dir.to_path_buf(),
        genesis,
        nodes: Vec::new(),
        witnessing: Default::default(),
        planned: std::sync::atomic::AtomicUsize::new(n),
    };
    let mut boot: Option<String> = None;
    for i in 0..n {
        let name = format!("n{i}");
        let role = roles.get(i % roles.len().max(1)).map_or("public", String::as_str);
        let home = fed.init_home(&name, role, boot.as_deref(), &[])?;
        let child = spawn_node(bin, &home, &[], true)?;
        let entry = Entry {
            pid: child.id(),
            name,
            home: home.clone(),
        };
        started.children.push(child);
        append_entry(dir, &entry)?;
        started.entries.push(entry);
        if i == 0 {
            wait_node_json(&home, started.entries[0].pid, deadline)?;
            boot = Some(p2p_addr(&home, deadline)?);
        }
    }
    let mut nodes = Vec::new();
    for e in &started.entries {
        nodes.push(wait_node_json(&e.home, e.pid, deadline)?);
    }
    for e in &started.entries {
        wait_for(deadline, &format!("{} to see {} peers", e.name, n - 1), || {
            let peers = packfed_json(bin, &e.home, &["peers"]).ok()?;
            (peers.as_array()?.len() + 1 >= n).then_some(())
        })?;
    }
    // Read again: the libp2p addresses are added to node.json after the API.
    for (node, e) in nodes.iter_mut().zip(&started.entries) {
        if let Some(now) = NodeJson::read(&e.home).filter(|j| j.pid == e.pid) {
            *node = now;
        }
    }
    Ok(nodes)
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_up(nodes: &[NodeJson], entries: &[Entry], as_json: bool) {
    if as_json {
        let v: Vec<Value> = nodes
            .iter()
            .zip(entries)
            .map(|(n, e)| {
                json!({"name": e.name, "peer_id": n.peer_id, "api": n.api, "pid": e.pid,
                       "home": e.home.display().to_string(), "listen_addrs": n.listen_addrs})
            })
            .collect();
        println!("{}", Value::Array(v));
        return;
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .zip(entries)
        .map(|(n, e)| vec![e.name.clone(), n.peer_id.clone(), n.api.clone(), e.pid.to_string()])
        .collect();
    print_table(&["NAME", "PEER ID", "API", "PID"], &rows);
}

fn status(dir: &Path, as_json: bool) -> Result<()> {
    let entries = read_entries(dir)?;
    let bin = packfed_bin()?;
    let mut out = Vec::new();
    for e in &entries {
        let alive = runs_our_node(e);
        let st = if alive {
            packfed_json(&bin, &e.home, &["status"]).map_err(|e| format!("{e:#}"))
        } else {
            Err("not running".to_string())
        };
        let mut v = json!({"name": e.name, "pid": e.pid, "alive": alive});
        match st {
            Ok(s) => {
                for k in ["peer_id", "peers", "releases", "blobs"] {
                    v[k] = s[k].clone();
                }
            }
            Err(err) => v["error"] = json!(err),
        }
        out.push(v);
    }
    if as_json {
        println!("{}", Value::Array(out));
        return Ok(());
    }
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|v| {
            vec![
                cell(&v["name"]),
                cell(&v["pid"]),
                if v["alive"] == true { "yes" } else { "no" }.to_string(),
                cell(&v["peers"]),
                cell(&v["releases"]),
                cell(&v["blobs"]),
                cell(&v["peer_id"]),
            ]
        })
        .collect();
    print_table(
        &["NAME", "PID", "ALIVE", "PEERS", "RELEASES", "BLOBS", "PEER ID"],
        &rows,
    );
    Ok(())
}

fn down(dir: &Path, deadline: Duration, as_json: bool) -> Result<()> {
    let entries = read_entries(dir)?;
    let outcome = stop_entries(&entries, deadline)?;
    std::fs::remove_file(pids_file(dir)).context("removing the pids file")?;
    if as_json {
        let v: Vec<Value> = outcome
            .iter()
            .map(|(e, what)| json!({"name": e.name, "pid": e.pid, "result": what}))
            .collect();
        println!("{}", Value::Array(v));
    } else {
        let rows: Vec<Vec<String>> = outcome
            .iter()
            .map(|(e, what)| vec![e.name.clone(), e.pid.to_string(), what.to_string()])
            .collect();
        print_table(&["NAME", "PID", "RESULT"], &rows);
    }
    Ok(())
}
