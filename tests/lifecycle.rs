//! The life of a project that uses packs, end to end with a real node
//! process on 127.0.0.1: generate code from a pack's templates, plan,
//! upgrade, uninstall and roll back installs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use packfed_testnet::{TestNode, init_single, make_pack};
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

fn p(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs a command expected to fail and returns its `--json` error document.
fn json_error(node: &TestNode, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = node.run(&full).unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Makes and publishes `name@version` (with `extra` bytes of data) as alice.
fn publish_pack(s: &Setup, name: &str, version: &str, deps: &[(&str, &str)], extra: usize) {
    let dir = s.root.join(format!("{}-{version}", name.replace('/', "-")));
    make_pack(&dir, name, version, deps, extra).unwrap();
    s.node.json(&["publish", &p(&dir), "--key", "alice"]).unwrap();
}

/// Every file under `dir` (relative path -> bytes), `.packfed/` excluded.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(at) else { return };
        for e in entries {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".packfed" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

const SERVICE_MANIFEST: &str = r#"[pack]
name = "acme/service"
version = "1.0.0"
description = "A service skeleton with a configurable port and database"
license = "MIT"
keywords = ["service"]
category = "web"
authors = ["Acme <dev@acme.test>"]

[variables.service_name]
type = "string"
description = "Name of the generated service"
pattern = "^[a-z][a-z0-9-]*$"
required = true
[variables.port]
type = "integer"
description = "Port it listens on"
default = 8080
min = 1
max = 65535
[variables.tls]
type = "boolean"
description = "Serve TLS"
default = false
[variables.db]
type = "choice"
description = "Database"
choices = ["postgres", "sqlite"]
default = "sqlite"
[variables.src_dir]
type = "path"
description = "Where the sources go"
default = "src"
"#;

/// Publishes `acme/service` with every variable type, and a pack whose
/// template fails at render time (a filter on the wrong type).
fn publish_service_packs(s: &Setup) {
    let dir = s.root.join("service");
    fs::create_dir_all(dir.join("templates/{{ src_dir }}")).unwrap();
    fs::write(dir.join("pack.toml"), SERVICE_MANIFEST).unwrap();
    fs::write(dir.join("README.md"), "# service\n\nGenerate a service.\n").unwrap();
    fs::write(
        dir.join("templates/{{ src_dir }}/main.rs.tera"),
        "// {{ service_name }}\nconst PORT: u16 = {{ port }};\nconst TLS: bool = {{ tls }};\nconst DB: &str = \"{{ db }}\";\n",
    )
    .unwrap();
    fs::write(
        dir.join("templates/{{ service_name }}.toml"),
        "name = \"{{ service_name }}\"\n",
    )
    .unwrap();
    s.node.json(&["publish", &p(&dir), "--key", "alice"]).unwrap();

    let broken = s.root.join("broken");
    fs::create_dir_all(broken.join("templates")).unwrap();
    fs::write(
        broken.join("pack.toml"),
        "[pack]\nname = \"acme/broken\"\nversion = \"1.0.0\"\ndescription = \"d\"\nlicense = \"MIT\"\n\
         [variables.port]\ntype = \"integer\"\ndescription = \"p\"\ndefault = 1\n",
    )
    .unwrap();
    fs::write(broken.join("templates/ok.txt"), "fine\n").unwrap();
    fs::write(
        broken.join("templates/bad.txt"),
        "line one\nline two\n{{ port | upper }}\n",
    )
    .unwrap();
    s.node.json(&["publish", &p(&broken), "--key", "alice"]).unwrap();
}

#[test]
fn publish_refuses_templates_with_undeclared_variables_or_bad_syntax() {
    let s = setup();
    let dir = s.root.join("p");
    make_pack(&dir, "acme/p", "1.0.0", &[], 0).unwrap();
    fs::write(dir.join("templates/x.txt"), "{{ name }} {{ undeclared_thing }}\n").unwrap();
    let e = json_error(&s.node, &["publish", &p(&dir), "--key", "alice"]);
    assert_eq!(e["code"], "bad_templates", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("undeclared_thing (in templates/x.txt)"),
        "{e}"
    );

    fs::write(dir.join("templates/x.txt"), "ok\n{% if %}\n").unwrap();
    let e = json_error(&s.node, &["publish", &p(&dir), "--key", "alice"]);
    assert!(e["error"].as_str().unwrap().contains("templates/x.txt:2:"), "{e}");

    fs::write(
        dir.join("pack.toml"),
        fs::read_to_string(dir.join("pack.toml")).unwrap()
            + "[variables.port]\ntype = \"integer\"\ndefault = 0\nmin = 1\n",
    )
    .unwrap();
    let e = json_error(&s.node, &["publish", &p(&dir), "--key", "alice"]);
    assert!(e["error"].as_str().unwrap().contains("variables.port"), "{e}");

    // Positive control: the same pack with its templates fixed publishes.
    fs::remove_file(dir.join("templates/x.txt")).unwrap();
    let toml = fs::read_to_string(dir.join("pack.toml"))
        .unwrap()
        .replace("default = 0", "default = 1");
    fs::write(dir.join("pack.toml"), toml).unwrap();
    let p = s.node.json(&["publish", &p(&dir), "--key", "alice"]).unwrap();
    assert_eq!(p["status"], "accepted", "{p}");
}

#[test]
fn generate_renders_every_variable_type_and_refuses_bad_input_writing_nothing() {
    let s = setup();
    publish_service_packs(&s);
    let out = s.root.join("out");
    let vars = s.root.join("vars.toml");
    fs::write(&vars, "port = 9090\ndb = \"postgres\"\nservice_name = \"from-file\"\n").unwrap();

    // Flags win over the file; the file over defaults; defaults fill the rest.
    let g = s
        .node
        .json(&[
            "generate",
            "acme/service",
            "--to",
            &p(&out),
            "--vars",
            &p(&vars),
            "--var",
            "service_name=billing",
            "--var",
            "tls=true",
        ])
        .unwrap();
    assert_eq!(g["pack"], "acme/service@1.0.0");
    assert_eq!(g["dry_run"], false);
    assert_eq!(g["files"], serde_json::json!(["billing.toml", "src/main.rs"]));
    assert_eq!(
        fs::read_to_string(out.join("src/main.rs")).unwrap(),
        "// billing\nconst PORT: u16 = 9090;\nconst TLS: bool = true;\nconst DB: &str = \"postgres\";\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("billing.toml")).unwrap(),
        "name = \"billing\"\n"
    );

    // A JSON vars file works the same way.
    let json_vars = s.root.join("vars.json");
    fs::write(&json_vars, r#"{"service_name": "jsonsvc", "src_dir": "lib/code"}"#).unwrap();
    let out2 = s.root.join("out2");
    s.node
        .json(&["generate", "acme/service", "--to", &p(&out2), "--vars", &p(&json_vars)])
        .unwrap();
    assert!(
        fs::read_to_string(out2.join("lib/code/main.rs"))
            .unwrap()
            .contains("PORT: u16 = 8080;")
    );

    // --dry-run lists the files and writes none.
    let dry = s.root.join("dry");
    let g = s
        .node
        .json(&[
            "generate",
            "acme/service",
            "--to",
            &p(&dry),
            "--var",
            "service_name=x",
            "--dry-run",
        ])
        .unwrap();
    assert_eq!(g["dry_run"], true);
    assert_eq!(g["files"].as_array().unwrap().len(), 2);
    assert!(tree(&dry).is_empty());

    // A required variable missing without a terminal: named with its rule.
    let none = s.root.join("none");
    let e = json_error(&s.node, &["generate", "acme/service", "--to", &p(&none)]);
    assert_eq!(e["code"], "missing_var", "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("service_name (string, matching ^[a-z][a-z0-9-]*$)"), "{e}");
    assert!(tree(&none).is_empty());

    // A value failing its pattern, and one failing its range.
    let e = json_error(
        &s.node,
        &[
            "generate",
            "acme/service",
            "--to",
            &p(&none),
            "--var",
            "service_name=Bad Name",
            "--var",
            "port=70000",
        ],
    );
    assert_eq!(e["code"], "bad_var", "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("does not match the pattern") && msg.contains("above the maximum 65535"),
        "{e}"
    );
    assert!(tree(&none).is_empty());

    // Existing files are listed and kept without --force, replaced with it.
    let before = tree(&out);
    let e = json_error(
        &s.node,
        &[
            "generate",
            "acme/service",
            "--to",
            &p(&out),
            "--var",
            "service_name=billing",
        ],
    );
    assert_eq!(e["code"], "file_exists", "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("billing.toml, src/main.rs"),
        "{e}"
    );
    assert_eq!(tree(&out), before);
    let g = s
        .node
        .json(&[
            "generate",
            "acme/service",
            "--to",
            &p(&out),
            "--var",
            "service_name=billing",
            "--force",
        ])
        .unwrap();
    assert_eq!(g["overwritten"].as_array().unwrap().len(), 2);
    assert!(
        fs::read_to_string(out.join("src/main.rs"))
            .unwrap()
            .contains("PORT: u16 = 8080;")
    );

    // A template error names the file and line; not even the good file is written.
    let broken = s.root.join("broken-out");
    let e = json_error(&s.node, &["generate", "acme/broken", "--to", &p(&broken)]);
    assert_eq!(e["code"], "template_error", "{e}");
    assert!(e["error"].as_str().unwrap().contains("templates/bad.txt:3:"), "{e}");
    assert!(tree(&broken).is_empty());
}

/// Runs `packfed generate` on a pseudo-terminal and answers its prompt.
#[test]
fn generate_prompts_for_missing_values_on_a_terminal() {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::process::{Command, Stdio};

    let s = setup();
    publish_service_packs(&s);
    let out = s.root.join("tty-out");

    let (mut master, slave) = unsafe {
        let (mut m, mut sl) = (0, 0);
        assert_eq!(
            libc::openpty(
                &mut m,
                &mut sl,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null()
            ),
            0
        );
        (fs::File::from_raw_fd(m), fs::File::from_raw_fd(sl))
    };
    let mut child = Command::new(bin())
        .args(["--home", &p(&s.node.home), "generate", "acme/service", "--to", &p(&out)])
        .env_remove("PACKFED_HOME")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // The terminal's output, read on a thread so the child never blocks.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |needle: &str, seen: &mut String| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!("no {needle:?} on the terminal; saw {seen:?}"),
            }
        }
    };
    wait_for("service_name (string", &mut seen);
    // A wrong answer is explained and asked again.
    master.write_all(b"Not Valid\n").unwrap();
    wait_for("does not match the pattern", &mut seen);
    master.write_all(b"tty-svc\n").unwrap();
    wait_for("files from acme/service@1.0.0", &mut seen);
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}");
    assert_eq!(
        fs::read_to_string(out.join("tty-svc.toml")).unwrap(),
        "name = \"tty-svc\"\n"
    );
}

/// The tree and the lockfile's bytes, to compare states exactly.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(dir)
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|i| {
            i.as_str()
                .map(String::from)
                .unwrap_or_else(|| i["id"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn plan_upgrade_uninstall_and_rollback_twice_restore_exact_trees() {
    let s = setup();
    let publish = |name: &str, version: &str, deps: &[(&str, &str)]| publish_pack(&s, name, version, deps, 100);
    publish("acme/core", "1.0.0", &[]);
    publish("acme/app", "1.0.0", &[("acme/core", "^1")]);
    let dir = s.root.join("project");
    let d = p(&dir);

    let i = s.node.json(&["install", "acme/app@^1", "--to", &d]).unwrap();
    assert_eq!(i["transaction"], "000001", "{i}");
    let t1 = snapshot(&dir);
    assert!(t1.contains_key("acme/core/pack.toml") && t1.contains_key("packfed.lock"));

    publish("acme/core", "1.1.0", &[]);
    publish("acme/core", "2.0.0", &[]);

    // The plan says what would change and changes nothing.
    let plan = s
        .node
        .json(&["install", "acme/core@^1", "--to", &d, "--dry-run"])
        .unwrap();
    assert_eq!(
        plan["plan"],
        serde_json::json!([{"id": "acme/core@1.1.0", "action": "upgrade", "from": "1.0.0", "to": "1.1.0",
            "size": plan["plan"][0]["size"]}])
    );
    assert!(plan["plan"][0]["size"].as_u64().unwrap() > 100);
    let plan = s
        .node
        .json(&["install", "acme/core@=1.0.0", "--to", &d, "--dry-run"])
        .unwrap();
    assert_eq!(plan["plan"], serde_json::json!([]));
    assert_eq!(snapshot(&dir), t1);

    // outdated: core may go to 1.1.0 under app's ^1; 2.0.0 exists.
    let o = s.node.json(&["outdated", "--in", &d]).unwrap();
    assert_eq!(
        o,
        serde_json::json!([{"name": "acme/core", "installed": "1.0.0", "wanted": "1.1.0", "latest": "2.0.0"}])
    );

    let u = s.node.json(&["upgrade", "--in", &d]).unwrap();
    assert_eq!(u["transaction"], "000002", "{u}");
    assert!(ids(&u, "installed").contains(&"acme/core@1.1.0".to_string()), "{u}");
    let t2 = snapshot(&dir);
    assert_ne!(t2, t1);
    assert!(s.node.json(&["verify", &d]).unwrap()["ok"] == true);

    // Uninstalling what another pack needs is refused, naming it.
    let e = json_error(&s.node, &["uninstall", "acme/core", "--in", &d]);
    assert_eq!(e["code"], "has_dependents", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("acme/app@1.0.0 depends on acme/core"),
        "{e}"
    );
    assert_eq!(snapshot(&dir), t2);

    // Uninstalling the app takes its now unneeded dependency with it.
    let un = s.node.json(&["uninstall", "acme/app", "--in", &d]).unwrap();
    assert_eq!(ids(&un, "removed"), ["acme/app@1.0.0", "acme/core@1.1.0"]);
    assert_eq!(un["transaction"], "000003");
    let t3 = snapshot(&dir);
    assert!(!t3.keys().any(|k| k.starts_with("acme/")), "{:?}", t3.keys());

    // Rolling back twice walks back through the uninstall and the upgrade,
    // byte for byte, even without the node.
    let mut node = s.node;
    node.stop().unwrap();
    let r = node.json(&["rollback", "--in", &d]).unwrap();
    assert_eq!(
        (r["restored_to"].as_str(), r["transaction"].as_str()),
        (Some("000003"), Some("000004"))
    );
    assert_eq!(snapshot(&dir), t2);
    let r = node.json(&["rollback", "--in", &d]).unwrap();
    assert_eq!(r["restored_to"], "000002");
    assert_eq!(snapshot(&dir), t1);
    assert!(node.json(&["verify", &d]).unwrap()["ok"] == true);

    // A file changed by hand is put back by a rollback to that state.
    fs::write(dir.join("acme/core/README.md"), "edited").unwrap();
    let r = node.json(&["rollback", "--in", &d, "4"]).unwrap();
    assert_eq!(r["restored_to"], "000004");
    assert_eq!(snapshot(&dir), t3);
    let r = node.json(&["rollback", "--in", &d, "000002"]).unwrap();
    assert_eq!(r["restored_to"], "000002");
    assert_eq!(snapshot(&dir), t1);

    let h = node.json(&["history", "--in", &d]).unwrap();
    let actions: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "rollback",
            "rollback",
            "rollback",
            "rollback",
            "uninstall",
            "upgrade",
            "install"
        ]
    );
    assert_eq!(h[6]["after"], serde_json::json!(["acme/app@1.0.0", "acme/core@1.0.0"]));
    assert!(h[0]["time"].as_str().unwrap().ends_with('Z'));

    // --latest crosses the major, and says so.
    node.restart().unwrap();
    let u = node.json(&["install", "acme/core@^1", "--to", &d]).unwrap();
    assert!(u["transaction"].is_string());
    // app still requires core ^1: --latest lifts only the user's own limit.
    let u = node.json(&["upgrade", "acme/core", "--in", &d, "--latest"]).unwrap();
    assert!(u.get("crossed_majors").is_none(), "{u}");
    assert!(
        fs::read_to_string(dir.join("packfed.lock"))
            .unwrap()
            .contains("acme/core@1.1.0")
    );
    node.json(&["uninstall", "acme/app", "--in", &d]).unwrap();
    let u = node.json(&["upgrade", "acme/core", "--in", &d, "--latest"]).unwrap();
    assert_eq!(
        u["crossed_majors"],
        serde_json::json!(["acme/core 1.1.0 -> 2.0.0"]),
        "{u}"
    );
    let lock = fs::read_to_string(dir.join("packfed.lock")).unwrap();
    assert!(lock.contains("\"acme/core@^2.0.0\""), "{lock}");
}

#[test]
fn concurrent_installs_into_one_directory_never_mix() {
    let s = setup();
    for (name, v) in [("acme/left", "1.0.0"), ("acme/right", "1.0.0")] {
        let dir = s.root.join(name.replace('/', "-"));
        make_pack(&dir, name, v, &[], 200_000).unwrap();
        s.node.json(&["publish", &p(&dir), "--key", "alice"]).unwrap();
    }
    for round in 0..20 {
        let dir = s.root.join(format!("target-{round}"));
        let d = p(&dir);
        let spawn = |name: &str| {
            std::process::Command::new(bin())
                .args(["--home", &p(&s.node.home), "--json", "install", name, "--to", &d])
                .env_remove("PACKFED_HOME")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn("acme/left"), spawn("acme/right"));
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let lock = fs::read_to_string(dir.join("packfed.lock")).unwrap();
        assert!(
            lock.contains("acme/left@1.0.0") && lock.contains("acme/right@1.0.0"),
            "round {round}: {lock}"
        );
        let v = s.node.json(&["verify", &d]).unwrap();
        assert_eq!(v["ok"], true, "round {round}: {v}");
        assert_eq!(v["packs"], 2);
        let h = s.node.json(&["history", "--in", &d]).unwrap();
        assert_eq!(h.as_array().unwrap().len(), 2, "round {round}: {h}");
    }
}

/// Runs `packfed sparql --format csv QUERY` and returns its output.
fn sparql_csv(node: &TestNode, query: &str) -> String {
    let out = node.run(&["sparql", "--format", "csv", query]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const PF: &str = "PREFIX pf: <https://packfed.dev/ns#> PREFIX owl: <http://www.w3.org/2002/07/owl#>\n";

#[test]
fn sparql_answers_the_readme_examples_and_refuses_updates_and_runaway_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let home = root.join("home");
    init_single(&bin(), &home, "alice").unwrap();
    // A short time limit, so a runaway query is stopped quickly.
    let config = fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(config.contains("timeout_ms = 5000"), "{config}");
    fs::write(
        home.join("config.toml"),
        config.replace("timeout_ms = 5000", "timeout_ms = 300"),
    )
    .unwrap();
    let node = TestNode::start(&bin(), &home).unwrap();

    let publish = |name: &str, deps: &[(&str, &str)], ontology: Option<&str>| {
        let dir = root.join(name.replace('/', "-"));
        make_pack(&dir, name, "1.0.0", deps, 0).unwrap();
        if let Some(ttl) = ontology {
            fs::create_dir_all(dir.join("ontologies")).unwrap();
            fs::write(dir.join("ontologies/api.ttl"), ttl).unwrap();
        }
        node.json(&["publish", &p(&dir), "--key", "alice"]).unwrap();
    };
    publish("acme/http-core", &[], None);
    publish(
        "acme/rest-api",
        &[("acme/http-core", "^1.0")],
        Some("@prefix owl: <http://www.w3.org/2002/07/owl#> .\n<#Endpoint> a owl:Class .\n<#Route> a owl:Class .\n"),
    );
    publish("acme/grpc", &[("acme/http-core", "^1")], None);
    publish("acme/legacy", &[("acme/http-core", "^0.9")], None);
    for (id, result) in [
        ("acme/rest-api@1.0.0", "pass"),
        ("acme/grpc@1.0.0", "fail"),
        ("acme/legacy@1.0.0", "pass"),
    ] {
        node.json(&["attest", id, "--kind", "audit", "--result", result, "--key", "alice"])
            .unwrap();
    }

    // "Packs whose audit passed and that depend on acme/http-core ^1".
    let q = format!(
        "{PF}SELECT ?id WHERE {{
           ?r pf:id ?id ; pf:attestation ?a ; pf:dependency ?d .
           ?a pf:kind \"audit\" ; pf:result \"pass\" .
           ?d pf:dependsOn/pf:name \"acme/http-core\" ; pf:requirement ?req .
           FILTER(STRSTARTS(?req, \"^1\"))
         }} ORDER BY ?id"
    );
    let got = packfed_testnet::wait_for(std::time::Duration::from_secs(30), "the audits to count", || {
        let out = sparql_csv(&node, &q);
        out.contains("acme/rest-api").then_some(out)
    })
    .unwrap();
    assert_eq!(got, "id\r\nacme/rest-api@1.0.0\n");

    // "Which ontologies define a class named Endpoint".
    let q = format!(
        "{PF}SELECT ?id ?class WHERE {{
           GRAPH ?g {{ ?class a owl:Class . FILTER(STRENDS(STR(?class), \"#Endpoint\")) }}
           ?g pf:id ?id .
         }}"
    );
    assert_eq!(
        sparql_csv(&node, &q),
        "id,class\r\nacme/rest-api@1.0.0,https://packfed.dev/pack/acme/rest-api/1.0.0/ontologies/api.ttl#Endpoint\n"
    );

    // The JSON form is SPARQL 1.1 results JSON; --pack reads one pack's own ontologies.
    let v = node
        .json(&[
            "sparql",
            &format!("{PF}SELECT (COUNT(?r) AS ?n) WHERE {{ ?r a pf:Release }}"),
        ])
        .unwrap();
    assert_eq!(v["results"]["bindings"][0]["n"]["value"], "4", "{v}");
    let v = node
        .json(&[
            "sparql",
            "--pack",
            "acme/rest-api@1.0.0",
            &format!("{PF}SELECT ?c WHERE {{ ?c a owl:Class }} ORDER BY ?c"),
        ])
        .unwrap();
    assert_eq!(v["results"]["bindings"].as_array().unwrap().len(), 2, "{v}");

    let e = json_error(&node, &["sparql", "INSERT DATA { <urn:a> <urn:b> <urn:c> }"]);
    assert_eq!(e["code"], "sparql_refused", "{e}");
    assert!(e["error"].as_str().unwrap().contains("read-only"), "{e}");
    let e = json_error(&node, &["sparql", "SELECT ?x WHERE { ?x ?y }"]);
    assert_eq!(e["code"], "sparql_error", "{e}");
    assert!(e["error"].as_str().unwrap().contains("1:"), "{e}");
    let e = json_error(
        &node,
        &[
            "sparql",
            "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }",
        ],
    );
    assert_eq!(e["code"], "sparql_timeout", "{e}");
    assert!(e["error"].as_str().unwrap().contains("time limit of 300ms"), "{e}");
}

#[test]
fn incompatible_majors_fail_explained_or_install_side_by_side() {
    let s = setup();
    let publish = |name: &str, version: &str, deps: &[(&str, &str)]| publish_pack(&s, name, version, deps, 0);
    publish("acme/core", "1.3.0", &[]);
    publish("acme/core", "2.1.0", &[]);
    publish("acme/a", "1.0.0", &[("acme/core", "^1")]);
    publish("acme/b", "1.0.0", &[("acme/core", "^2")]);
    let dir = s.root.join("proj");
    let d = p(&dir);

    let e = json_error(&s.node, &["install", "acme/a", "acme/b", "--to", &d]);
    assert_eq!(e["code"], "unresolvable", "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("acme/core") && msg.contains("--conflicts side-by-side"),
        "{e}"
    );
    assert!(!dir.join("packfed.lock").exists());

    let plan = s
        .node
        .json(&[
            "install",
            "acme/a",
            "acme/b",
            "--to",
            &d,
            "--conflicts",
            "side-by-side",
            "--dry-run",
        ])
        .unwrap();
    assert_eq!(plan["plan"].as_array().unwrap().len(), 4, "{plan}");
    let done = s
        .node
        .json(&["install", "acme/a", "acme/b", "--to", &d, "--conflicts", "side-by-side"])
        .unwrap();
    let mut ids = ids(&done, "installed");
    ids.sort();
    assert_eq!(
        ids,
        ["acme/a@1.0.0", "acme/b@1.0.0", "acme/core@1.3.0", "acme/core@2.1.0"]
    );
    assert!(dir.join("acme/core@1/pack.toml").is_file() && dir.join("acme/core@2/pack.toml").is_file());
    assert!(!dir.join("acme/core").exists());
    assert_eq!(s.node.json(&["verify", &d]).unwrap()["ok"], true);
    // An upgrade keeps both majors; nothing newer exists, so nothing changes.
    let u = s.node.json(&["upgrade", "--in", &d]).unwrap();
    assert_eq!(u["transaction"], Value::Null, "{u}");
}
