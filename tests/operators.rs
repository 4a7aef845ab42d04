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

// ---------------------------------------------------------------------------
// The web UI in headless Chromium, driven over the DevTools protocol.

/// A page of headless Chromium.
struct Browser {
    child: std::process::Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET; the status line, headers and body (read to its
/// Content-Length: DevTools keeps connections open).
fn http_get_text(addr: &str, path: &str, host: &str) -> String {
    use std::io::{BufRead, Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(c);
    let mut head = String::new();
    let mut length = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).unwrap();
        }
        None => {
            let _ = r.read_to_end(&mut body);
        }
    }
    format!("{head}{}", String::from_utf8_lossy(&body))
}

impl Browser {
    fn start() -> Browser {
        use std::io::BufRead;
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("Debian's chromium must be installed for the browser test (.ci/run installs it)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let ws_url = loop {
            let line = lines.next().expect("chromium exited before listening").unwrap();
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                break url.trim().to_string();
            }
        };
        // Keep draining chromium's stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let list = http_get_text(&addr, "/json/list", &addr);
        let body = &list[list.find("\r\n\r\n").unwrap() + 4..];
        let targets: Value = serde_json::from_str(body).unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let (ws, _) = tungstenite::connect(page["webSocketDebuggerUrl"].as_str().unwrap()).unwrap();
        let mut b = Browser {
            child,
            ws,
            next: 0,
            _profile: profile,
        };
        b.call("Page.enable", serde_json::json!({}));
        // Any alert a page raises is recorded instead of shown.
        b.call(
            "Page.addScriptToEvaluateOnNewDocument",
            serde_json::json!({"source": "window.__alerts=[];window.alert=function(m){window.__alerts.push(String(m))};"}),
        );
        b
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::Text(msg.to_string().into()))
            .unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let tungstenite::Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is true (a deadline, not a fixed sleep).
    fn wait(&mut self, expr: &str, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.eval(expr) != Value::Bool(true) {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url}));
        self.wait(
            &format!(
                "document.readyState==='complete' && location.href.startsWith({:?})",
                url.split('?').next().unwrap()
            ),
            url,
        );
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", serde_json::json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(path, png).unwrap();
    }
}

const README_ATTACK: &str = "# http-core\n\nThe HTTP core every service here builds on.\n\n<script>alert(1)</script>\n\n<img src=x onerror=\"alert(2)\">\n\n[a link](javascript:alert(3))\n";

/// Whether Debian's chromium is installed. CI installs it and must run the
/// browser test; elsewhere a missing browser skips it, saying so.
fn chromium_present() -> bool {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: .ci/run installs Debian's chromium"
        );
        eprintln!(
            "SKIPPED the_web_ui_in_a_real_browser: install Debian's chromium (apt-get install chromium) to run it"
        );
    }
    found
}

#[test]
fn the_web_ui_in_a_real_browser() {
    use packfed_testnet::{Federation, make_pack, wait_for};
    if !chromium_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let policy = root.join("policy.toml");
    std::fs::write(&policy, "[accept]\nlicenses = [\"MIT\"]\n").unwrap();
    let fed = Federation::up_with(&bin(), root, &["company"], &["--policy", &policy.to_string_lossy()]).unwrap();
    let node = &fed.nodes[0];
    let publish = |name: &str, deps: &[(&str, &str)], edit: &dyn Fn(&Path), extra: &[&str]| {
        let dir = root.join(name.replace('/', "-"));
        make_pack(&dir, name, "1.0.0", deps, 0).unwrap();
        edit(&dir);
        let mut args = vec!["publish", dir.to_str().unwrap(), "--key", "k0"];
        args.extend_from_slice(extra);
        node.json(&args).unwrap();
    };
    publish(
        "acme/http-core",
        &[],
        &|d| std::fs::write(d.join("README.md"), README_ATTACK).unwrap(),
        &[],
    );
    publish("acme/rest-api", &[("acme/http-core", "^1")], &|_| {}, &[]);
    publish(
        "acme/gpl-thing",
        &[],
        &|d| {
            let t = std::fs::read_to_string(d.join("pack.toml")).unwrap();
            std::fs::write(
                d.join("pack.toml"),
                t.replace("license = \"MIT\"", "license = \"GPL-3.0-only\""),
            )
            .unwrap();
        },
        &[],
    );
    publish("acme/secret-sauce", &[], &|_| {}, &["--visibility", "org"]);
    let proposal_policy = root.join("stricter.toml");
    std::fs::write(&proposal_policy, "[accept]\nlicenses = [\"MIT\"]\nmin_quality = 30\n").unwrap();
    node.json(&[
        "gov",
        "propose",
        "--key",
        "k0",
        "--title",
        "Require quality 30",
        "--policy",
        &proposal_policy.to_string_lossy(),
    ])
    .unwrap();
    wait_for(Duration::from_secs(30), "the GPL pack to be quarantined", || {
        (node.json(&["info", "acme/gpl-thing"]).ok()?["status"] == "quarantined").then_some(())
    })
    .unwrap();

    // Requests naming another host are refused (DNS rebinding).
    let foreign = http_get_text(&node.api, "/", "evil.example");
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://{}", node.api);
    let mut b = Browser::start();

    // Search as you type: the results change without a page load.
    b.open(&format!("{base}/"));
    b.eval("window.__marker = 1; true");
    b.eval(
        "(function(){var i=document.querySelector('input[name=q]');i.value='http';i.dispatchEvent(new Event('input',{bubbles:true}));return true})()",
    );
    b.wait(
        "[...document.querySelectorAll('#results .hit')].some(h=>h.dataset.id==='acme/http-core@1.0.0')",
        "results for 'http'",
    );
    assert_eq!(b.eval("window.__marker"), 1, "the page reloaded instead of updating");
    b.screenshot(&shots.join("search.png"));
    // Org packs are invisible without the token.
    b.eval("(function(){var i=document.querySelector('input[name=q]');i.value='secret sauce';i.dispatchEvent(new Event('input',{bubbles:true}));return true})()");
    b.wait(
        "document.querySelector('#results').innerText.includes('No pack matches')",
        "no org results",
    );

    // The pack page: README as text, dependents, install command.
    b.open(&format!("{base}/packs/acme/http-core"));
    let readme = b.eval("document.querySelector('#readme').innerText");
    let readme = readme.as_str().unwrap();
    assert!(
        readme.contains("<script>alert(1)</script>") && readme.contains("onerror"),
        "{readme}"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#readme script, #readme img, [onerror]').length"),
        0
    );
    assert_eq!(
        b.eval("[...document.querySelectorAll('#readme a')].some(a=>a.href.startsWith('javascript'))"),
        false
    );
    assert_eq!(b.eval("window.__alerts.length"), 0, "a README script ran");
    assert!(
        b.eval("document.body.innerText.includes('acme/rest-api')") == true,
        "dependents"
    );
    assert_eq!(
        b.eval("document.querySelector('#install').innerText"),
        "packfed install acme/http-core@1.0.0 --to DIR"
    );
    b.screenshot(&shots.join("pack.png"));

    b.open(&format!("{base}/quarantine"));
    let q = b.eval("document.querySelector('#quarantine').innerText");
    assert!(
        q.as_str().unwrap().contains("acme/gpl-thing@1.0.0") && q.as_str().unwrap().contains("licenses"),
        "{q}"
    );
    b.screenshot(&shots.join("quarantine.png"));

    b.open(&format!("{base}/governance"));
    b.wait("document.querySelectorAll('.proposal').length === 1", "the proposal");
    let g = b.eval("document.querySelector('.proposal').innerText");
    assert!(g.as_str().unwrap().contains("Require quality 30"), "{g}");
    assert_eq!(b.eval("document.querySelectorAll('.proposal .bar').length"), 2);
    // The policy diff: the proposed rule added, the rest unchanged.
    let diff = b.eval("document.querySelector('.proposal pre.diff').innerText");
    assert!(diff.as_str().unwrap().contains("+ min_quality = 30"), "{diff}");
    assert!(diff.as_str().unwrap().contains("  licenses = [\"MIT\"]"), "{diff}");
    b.screenshot(&shots.join("governance.png"));

    for page in ["peers", "policy", "learn"] {
        b.open(&format!("{base}/{page}"));
        b.screenshot(&shots.join(format!("{page}.png")));
    }
    assert!(b.eval("document.querySelector('#doc').innerText.length > 10") == true);

    // Logged in with the token, the org pack appears.
    let token = std::fs::read_to_string(node.home.join("api-token")).unwrap();
    b.open(&format!("{base}/login"));
    b.eval(&format!(
        "(function(){{document.querySelector('input[name=token]').value={:?};document.querySelector('form').submit();return true}})()",
        token.trim()
    ));
    b.wait("location.pathname==='/' && document.readyState==='complete' && document.body.innerText.includes('org visitor')", "the login");
    b.open(&format!("{base}/?q=secret+sauce"));
    b.wait(
        "[...document.querySelectorAll('#results .hit')].some(h=>h.dataset.id==='acme/secret-sauce@1.0.0')",
        "the org pack after login",
    );
    b.screenshot(&shots.join("search-logged-in.png"));
    eprintln!("screenshots in {}", shots.display());
}
