//! End-to-end tests of one node: real `packfed` processes on 127.0.0.1.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use packfed_testnet::{TestNode, init_single, make_pack, packfed_json};
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    node: TestNode,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let home = root.join("home");
    init_single(&bin(), &home, "alice").unwrap();
    let node = TestNode::start(&bin(), &home).unwrap();
    Setup { _tmp: tmp, root, node }
}

fn publish(node: &TestNode, dir: &Path, key: &str) -> Value {
    node.json(&["publish", &dir.to_string_lossy(), "--key", key]).unwrap()
}

/// Runs a command expected to fail and returns its `--json` error document.
fn json_error(node: &TestNode, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = node.run(&full).unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn publish_search_install_verify_and_tamper_detection() {
    let s = setup();
    let core = s.root.join("http-core");
    make_pack(&core, "acme/http-core", "1.2.3", &[], 0).unwrap();
    let api = s.root.join("rest-api");
    make_pack(&api, "acme/rest-api", "1.0.0", &[("acme/http-core", "^1.2")], 10_000).unwrap();

    let p = publish(&s.node, &core, "alice");
    assert_eq!(p["id"], "acme/http-core@1.2.3");
    assert_eq!(p["status"], "accepted");
    assert_eq!(p["hash"].as_str().unwrap().len(), 64);
    let p = publish(&s.node, &api, "alice");
    assert!(p["quality"]["score"].as_u64().unwrap() > 0);

    let found = s.node.json(&["search", "rest"]).unwrap();
    let ids: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.first(), Some(&"acme/rest-api@1.0.0"), "{found}");
    assert_eq!(found["partial"], false);

    let info = s.node.json(&["info", "acme/rest-api"]).unwrap();
    assert_eq!(info["hash"], p["hash"]);
    assert_eq!(info["status"], "accepted");
    assert!(info["reasons"].as_array().unwrap().is_empty());

    let target = s.root.join("installed");
    let done = s
        .node
        .json(&["install", "acme/rest-api", "--to", &target.to_string_lossy()])
        .unwrap();
    let installed: Vec<&str> = done["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(installed, ["acme/http-core@1.2.3", "acme/rest-api@1.0.0"]);
    assert!(target.join("packfed.lock").exists());
    assert_eq!(
        std::fs::read(target.join("acme/rest-api/templates/data.bin")).unwrap(),
        std::fs::read(api.join("templates/data.bin")).unwrap()
    );

    let v = s.node.json(&["verify", &target.to_string_lossy()]).unwrap();
    assert_eq!(v["ok"], true);

    std::fs::write(target.join("acme/http-core/README.md"), "tampered").unwrap();
    let out = s.node.run(&["--json", "verify", &target.to_string_lossy()]).unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let paths: Vec<&str> = v["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["acme/http-core/README.md"]);
}

#[test]
fn namespace_belongs_to_its_first_publisher_and_versions_are_immutable() {
    let s = setup();
    packfed_json(&bin(), &s.node.home, &["key", "new", "mallory"]).unwrap();
    let a = s.root.join("a");
    make_pack(&a, "acme/one", "1.0.0", &[], 0).unwrap();
    publish(&s.node, &a, "alice");

    let b = s.root.join("b");
    make_pack(&b, "acme/two", "1.0.0", &[], 0).unwrap();
    let err = json_error(&s.node, &["publish", &b.to_string_lossy(), "--key", "mallory"]);
    assert_eq!(err["code"], "namespace_owned", "{err}");
    assert!(err["error"].as_str().unwrap().contains("namespace acme is owned by"));

    // Same version, different bytes: refused. Same bytes again: idempotent.
    std::fs::write(a.join("templates/extra.tmpl"), "more").unwrap();
    let err = json_error(&s.node, &["publish", &a.to_string_lossy(), "--key", "alice"]);
    assert_eq!(err["code"], "version_exists", "{err}");

    // Another namespace is free for mallory.
    let c = s.root.join("c");
    make_pack(&c, "mallory/tools", "0.1.0", &[], 0).unwrap();
    publish(&s.node, &c, "mallory");
    let status = s.node.json(&["status"]).unwrap();
    assert_eq!(status["releases"], 2);
}

#[test]
fn yanked_versions_are_not_resolved_anew() {
    let s = setup();
    for v in ["1.0.0", "1.1.0"] {
        let d = s.root.join(v);
        make_pack(&d, "acme/lib", v, &[], 0).unwrap();
        publish(&s.node, &d, "alice");
    }
    let y = s.node.json(&["yank", "acme/lib@1.1.0", "--key", "alice"]).unwrap();
    assert_eq!(y["yanked"], true);
    let target = s.root.join("t");
    let done = s
        .node
        .json(&["install", "acme/lib@^1", "--to", &target.to_string_lossy()])
        .unwrap();
    assert_eq!(done["installed"][0]["id"], "acme/lib@1.0.0");
    let err = json_error(
        &s.node,
        &[
            "install",
            "acme/lib@=1.1.0",
            "--to",
            &s.root.join("t2").to_string_lossy(),
        ],
    );
    assert_eq!(err["code"], "unresolvable");
    assert!(err["error"].as_str().unwrap().contains("1.1.0 (yanked)"), "{err}");
}

#[test]
fn failed_install_leaves_the_target_as_it_was() {
    let s = setup();
    let d = s.root.join("p");
    make_pack(&d, "acme/lib", "1.0.0", &[("acme/missing", "^1")], 0).unwrap();
    publish(&s.node, &d, "alice");
    let target = s.root.join("t");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep.txt"), "mine").unwrap();
    let err = json_error(&s.node, &["install", "acme/lib", "--to", &target.to_string_lossy()]);
    assert_eq!(err["code"], "not_found", "{err}");
    let names: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep.txt"]);
}

/// One raw HTTP/1.1 request; returns the status code.
fn http_status(api: &str, request: &str) -> u16 {
    let mut conn = std::net::TcpStream::connect(api).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = conn.read_to_string(&mut resp);
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn mutating_calls_need_the_api_token_and_node_json_goes_on_clean_exit() {
    let mut s = setup();
    let req = format!(
        "POST /v1/yank HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{{\"envelope\":\"\"}}",
        s.node.api
    );
    assert_eq!(http_status(&s.node.api, &req), 401);
    let wrong = req.replace("Connection: close", "Authorization: Bearer nope\r\nConnection: close");
    assert_eq!(http_status(&s.node.api, &wrong), 401);
    let get = format!(
        "GET /v1/status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.node.api
    );
    assert_eq!(http_status(&s.node.api, &get), 200);
    // A web page that rebound its own name to 127.0.0.1 is refused.
    let rebound = get.replace(&format!("Host: {}", s.node.api), "Host: attacker.example:80");
    assert_eq!(http_status(&s.node.api, &rebound), 403);
    // Blob bytes (org and quarantined packs among them) need the token.
    let blob = format!(
        "GET /v1/blobs/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        "00".repeat(32),
        s.node.api
    );
    assert_eq!(http_status(&s.node.api, &blob), 401);
    let token = std::fs::read_to_string(s.node.home.join("api-token")).unwrap();
    let with_token = blob.replace(
        "Connection: close",
        &format!("Authorization: Bearer {}\r\nConnection: close", token.trim()),
    );
    assert_eq!(
        http_status(&s.node.api, &with_token),
        404,
        "authorized: the blob is simply unknown"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["api-token", "node.key", "keys/alice.key"] {
            let mode = std::fs::metadata(s.node.home.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    assert!(s.node.home.join("node.json").exists());
    assert!(s.node.stop().unwrap().success());
    assert!(!s.node.home.join("node.json").exists());
}

#[test]
fn acknowledged_publishes_survive_kill_9() {
    let mut s = setup();
    let mut published = Vec::new();
    for i in 0..12 {
        let d = s.root.join(format!("p{i}"));
        make_pack(&d, &format!("acme/crash-{i}"), "1.0.0", &[], 20_000 + i * 1000).unwrap();
        let p = publish(&s.node, &d, "alice");
        published.push((
            p["id"].as_str().unwrap().to_string(),
            p["hash"].as_str().unwrap().to_string(),
        ));
    }
    // Right after the last acknowledgement: no clean shutdown, no flush.
    s.node.kill9().unwrap();
    let node = TestNode::start(&bin(), &s.node.home).unwrap();
    let status = node.json(&["status"]).unwrap();
    assert_eq!(status["releases"], 12);
    assert_eq!(status["blobs"], 12);
    for (id, hash) in &published {
        let info = node.json(&["info", id]).unwrap();
        assert_eq!(info["hash"].as_str().unwrap(), hash);
    }
    let target = s.root.join("after-crash");
    let specs: Vec<String> = published
        .iter()
        .map(|(id, _)| id.split('@').next().unwrap().to_string())
        .collect();
    let mut args = vec!["install"];
    args.extend(specs.iter().map(String::as_str));
    let t = target.to_string_lossy().to_string();
    args.extend(["--to", &t]);
    let done = node.json(&args).unwrap();
    assert_eq!(done["installed"].as_array().unwrap().len(), 12);
    assert_eq!(node.json(&["verify", &t]).unwrap()["ok"], true);
}

#[test]
fn errors_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("nohome");
    let out = packfed_testnet::packfed(&bin(), &home, &["status"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("packfed init"), "{err}");

    let s = setup();
    let bad = s.root.join("bad");
    make_pack(&bad, "acme/bad", "1.0.0", &[], 0).unwrap();
    let manifest = std::fs::read_to_string(bad.join("pack.toml"))
        .unwrap()
        .replace("1.0.0", "one");
    std::fs::write(bad.join("pack.toml"), manifest).unwrap();
    let err = json_error(&s.node, &["publish", &bad.to_string_lossy(), "--key", "alice"]);
    assert!(err["error"].as_str().unwrap().contains("pack.version"), "{err}");
    let err = json_error(&s.node, &["publish", &bad.to_string_lossy(), "--key", "nobody"]);
    assert!(
        err["error"].as_str().unwrap().contains("packfed key new nobody"),
        "{err}"
    );
}

#[test]
fn install_never_follows_a_link_it_did_not_create() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    init_single(&bin(), &home, "alice").unwrap();
    let node = TestNode::start(&bin(), &home).unwrap();
    let pack = tmp.path().join("pack");
    make_pack(&pack, "evil/documents", "1.0.0", &[], 0).unwrap();
    node.json(&["publish", &pack.to_string_lossy(), "--key", "alice"])
        .unwrap();
    // `vendor/evil` points out of the target, at files that must survive.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("documents")).unwrap();
    std::fs::write(outside.join("documents/precious.txt"), "keep me").unwrap();
    let vendor = tmp.path().join("vendor");
    std::fs::create_dir_all(&vendor).unwrap();
    std::os::unix::fs::symlink(&outside, vendor.join("evil")).unwrap();
    let t = vendor.to_string_lossy().into_owned();
    let out = node.run(&["--json", "install", "evil/documents", "--to", &t]).unwrap();
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], "symlink_in_target", "{err}");
    assert_eq!(
        std::fs::read_to_string(outside.join("documents/precious.txt")).unwrap(),
        "keep me"
    );
    // Positive control: without the link the same install goes through.
    std::fs::remove_file(vendor.join("evil")).unwrap();
    let done = node.json(&["install", "evil/documents", "--to", &t]).unwrap();
    assert_eq!(done["installed"][0]["id"], "evil/documents@1.0.0");
    assert_eq!(
        std::fs::read_to_string(outside.join("documents/precious.txt")).unwrap(),
        "keep me"
    );
}

/// An API address beyond loopback is refused before anything listens,
/// unless `[api] public = true` says so (then only the read-only public
/// part is served: tested in-process in `api.rs`, without a socket).
#[test]
fn an_api_beyond_loopback_needs_public_true() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    init_single(&bin(), &home, "alice").unwrap();
    let cfg = std::fs::read_to_string(home.join("config.toml")).unwrap();
    let exposed = cfg.replacen("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"", 1);
    assert_ne!(cfg, exposed, "{cfg}");
    std::fs::write(home.join("config.toml"), exposed).unwrap();
    let out = std::process::Command::new(bin())
        .args(["--home", &home.to_string_lossy(), "--json", "node", "run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("api_not_loopback") && text.contains("public = true"),
        "{text}"
    );
    assert!(!home.join("node.json").exists(), "nothing listened");
}
