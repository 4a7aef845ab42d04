//! What operators run a node with: configuration layers and `config show`,
//! shell completions and man pages, and the web UI in a real browser.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use packfed_testnet::{NodeJson, init_single, packfed_json, wait_node_json};
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

fn home(root: &Path) -> PathBuf {
    let home = root.join("home");
    init_single(&bin(), &home, "alice").unwrap();
    home
}

/// Sets `[api] listen` in the home's config file.
fn file_listen(home: &Path, addr: &str) {
    let text = std::fs::read_to_string(home.join("config.toml")).unwrap();
    let text = text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
    assert!(text.contains(addr), "{text}");
    std::fs::write(home.join("config.toml"), text).unwrap();
}

/// `packfed config show --json` with `env` and extra arguments.
fn show(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Value {
    let out = Command::new(bin())
        .args(["--home", &home.to_string_lossy(), "--json", "config", "show"])
        .args(args)
        .env_remove("PACKFED_HOME")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `packfed node run` with `env` and `args` until its API listens;
/// returns where, and stops it.
fn api_of_a_run(home: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let _ = std::fs::remove_file(home.join("node.json"));
    let mut child = Command::new(bin())
        .args(["--home", &home.to_string_lossy(), "node", "run"])
        .args(args)
        .env_remove("PACKFED_HOME")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = wait_node_json(home, child.id(), Duration::from_secs(30)).map(|n: NodeJson| n.api);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    api.unwrap()
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(tmp.path());
    // A port nothing listens on: if the file won, the node would bind it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let file_addr = busy.local_addr().unwrap().to_string();
    drop(busy);
    file_listen(&home, &file_addr);

    let v = show(&home, &[], &[]);
    assert_eq!(v["api.listen"]["value"], file_addr.as_str(), "{v}");
    assert_eq!(v["api.listen"]["source"], "file");
    assert_eq!(v["net.mdns"]["source"], "file");
    assert_eq!(v["sparql.timeout_ms"]["value"], 5000);

    let env = [
        ("PACKFED_API_LISTEN", "127.0.0.1:0"),
        ("PACKFED_SPARQL_TIMEOUT_MS", "250"),
    ];
    let v = show(&home, &env, &[]);
    assert_eq!(
        v["api.listen"],
        serde_json::json!({"value": "127.0.0.1:0", "source": "env"})
    );
    assert_eq!(
        v["sparql.timeout_ms"],
        serde_json::json!({"value": 250, "source": "env"})
    );
    let ran = api_of_a_run(&home, &env, &[]);
    assert_ne!(ran, file_addr, "the environment was not honoured over the file");

    let env = [("PACKFED_API_LISTEN", "127.0.0.1:9")];
    let v = show(&home, &env, &["--api", "127.0.0.1:0", "--set", "net.mdns=false"]);
    assert_eq!(
        v["api.listen"],
        serde_json::json!({"value": "127.0.0.1:0", "source": "flag"})
    );
    assert_eq!(v["net.mdns"]["source"], "flag");
    let ran = api_of_a_run(&home, &env, &["--api", "127.0.0.1:0"]);
    assert!(!ran.ends_with(":9") && ran != file_addr, "{ran}");

    // A variable naming no key is one clear error.
    let out = Command::new(bin())
        .args(["--home", &home.to_string_lossy(), "config", "show"])
        .env("PACKFED_API_LISTNE", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PACKFED_API_LISTNE"),
        "{out:?}"
    );
}

#[test]
fn completions_and_man_pages_are_generated() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin()).args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("generate") && script.contains("sparql"), "{shell}");
        if shell == "bash" {
            let path = tmp.path().join("packfed.bash");
            std::fs::write(&path, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&path).status().unwrap();
            assert!(check.success(), "bash -n refused the completion script");
        }
    }
    let dir = tmp.path().join("man");
    let v = packfed_json(
        &bin(),
        &tmp.path().join("nohome"),
        &["man", "--out", &dir.to_string_lossy()],
    )
    .unwrap();
    let files: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.len() > 30, "{v}");
    for page in [
        "packfed.1",
        "packfed-install.1",
        "packfed-gov-vote.1",
        "packfed-config-show.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|_| panic!("no {page}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {}",
            &text[..80.min(text.len())]
        );
    }
}
