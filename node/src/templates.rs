//! A pack's templates: every file under `templates/`, rendered with Tera.
//! Used on both sides: `packfed publish` refuses templates that do not parse
//! or use a variable the manifest does not declare; `packfed generate`
//! renders them into memory, so a template error writes nothing.
//!
//! Files that are not UTF-8 or are over 4 MiB are data: copied as they
//! are (their names are still rendered).
//!
//! Templates are sandboxed: Tera's `get_env` is replaced by a refusal,
//! builtins that read the clock or randomness are not compiled in, and
//! `include` / `extends` / `import` only reach templates of the same pack.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Result, bail};
use packfed_protocol::variables::{Value, Variable};
use tera::ast::{Expr, ExprVal, Node};

/// The directory of a pack that holds its templates.
pub const TEMPLATE_DIR: &str = "templates";

/// Suffix dropped from a rendered file's name.
const TEMPLATE_SUFFIX: &str = ".tera";

/// Most bytes of text templates one pack may hold (all together).
const MAX_TEMPLATE_BYTES: u64 = 64 * 1024 * 1024;

/// Files larger than this are data, copied as they are, never parsed or
/// held in memory.
const MAX_TEMPLATE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Most bytes one rendered file may grow to: a loop in a template can
/// expand without bound.
const MAX_RENDERED_BYTES: usize = 64 * 1024 * 1024;

/// Names templates may use without declaring them.
const TERA_NAMES: &[&str] = &["loop", "__tera_context"];

/// A file under `templates/`.
struct Source {
    /// Relative to `templates/`, '/'-separated.
    path: String,
    /// `None` for files that are not UTF-8 or are large: copied as they are.
    text: Option<String>,
    origin: std::path::PathBuf,
    executable: bool,
}

/// A pack's templates, parsed.
pub struct TemplateSet {
    sources: Vec<Source>,
    /// Contents, keyed by the source path.
    tera: tera::Tera,
    /// File names, keyed by the source path (names are templates too).
    names: tera::Tera,
}

/// A file ready to be written.
#[derive(Debug, Clone)]
pub struct RenderedFile {
    /// Relative to the output directory, '/'-separated.
    pub path: String,
    pub content: Content,
    pub executable: bool,
}

/// What a rendered file holds.
#[derive(Debug, Clone)]
pub enum Content {
    Rendered(Vec<u8>),
    /// A data file, copied from the unpacked pack.
    Copy(std::path::PathBuf),
}

/// A Tera instance that cannot reach outside the pack.
fn sandbox() -> tera::Tera {
    let mut t = tera::Tera::default();
    // Generated code is not HTML: never escape.
    t.autoescape_on(Vec::new());
    t.register_function(
        "get_env",
        |_: &std::collections::HashMap<String, tera::Value>| -> tera::Result<tera::Value> {
            Err(tera::Error::msg(
                "templates cannot read the environment; declare a variable instead",
            ))
        },
    );
    t
}

/// Reads every file under `dir`, recursively, '/'-separated and sorted.
fn read_tree(root: &Path, prefix: &str, out: &mut Vec<Source>, total: &mut u64) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            read_tree(&entry.path(), &rel, out, total)?;
        } else if meta.is_file() {
            let text = if meta.len() <= MAX_TEMPLATE_FILE_BYTES {
                String::from_utf8(fs::read(entry.path())?).ok()
            } else {
                None
            };
            if let Some(t) = &text {
                *total += t.len() as u64;
                if *total > MAX_TEMPLATE_BYTES {
                    bail!(
                        "the text templates are larger than {} MiB together",
                        MAX_TEMPLATE_BYTES >> 20
                    );
                }
            }
            #[cfg(unix)]
            let executable = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
            #[cfg(not(unix))]
            let executable = false;
            out.push(Source {
                text,
                origin: entry.path(),
                path: rel,
                executable,
            });
        }
        // Links are skipped: a template is a file of the pack.
    }
    Ok(())
}

/// The line of `source` a Tera error points at: the parser reports
/// `--> LINE:COL`; a render error names the variable, filter or function in
/// backticks, looked up in the source.
fn error_line(message: &str, source: &str) -> Option<usize> {
    if let Some(at) = message.find("--> ") {
        let rest = &message[at + 4..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        return digits.parse().ok();
    }
    let start = message.find('`')?;
    let end = message[start + 1..].find('`')? + start + 1;
    let token = &message[start + 1..end];
    let token = token.split(['.', '[']).next().unwrap_or(token);
    source
        .lines()
        .position(|l| l.contains(token) && (l.contains("{{") || l.contains("{%")))
        .map(|i| i + 1)
}

/// One sentence from a Tera error: its causes, innermost last, joined.
fn causes(e: &tera::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

/// A template problem, naming the file and line.
fn template_error(path: &str, source: &str, e: &tera::Error) -> anyhow::Error {
    let cause = causes(e);
    let line = error_line(&cause, source).map(|l| format!(":{l}")).unwrap_or_default();
    // Tera's parse errors span several lines of ASCII art; keep the cause.
    let cause = match cause.lines().find_map(|l| l.trim().strip_prefix("= ")) {
        Some(expected) if cause.contains("--> ") => format!("syntax error: {expected}"),
        _ => cause
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    };
    anyhow::anyhow!("{TEMPLATE_DIR}/{path}{line}: {cause}")
}

impl TemplateSet {
    /// Loads and parses the templates of the pack at `pack_root` (none if it
    /// has no `templates/`).
    pub fn load(pack_root: &Path) -> Result<TemplateSet> {
        let dir = pack_root.join(TEMPLATE_DIR);
        let mut sources = Vec::new();
        if dir.is_dir() {
            read_tree(&dir, "", &mut sources, &mut 0)?;
        }
        let mut tera = sandbox();
        let texts: Vec<(&str, &str)> = sources
            .iter()
            .filter_map(|s| s.text.as_deref().map(|t| (s.path.as_str(), t)))
            .collect();
        // Parse one at a time first, so an error names its own file.
        for (path, text) in &texts {
            if let Err(e) = sandbox().add_raw_template(path, text) {
                // A template that extends or includes a sibling fails alone
                // only for the missing sibling; that is checked together below.
                if !causes(&e).contains("not found") {
                    return Err(template_error(path, text, &e));
                }
            }
        }
        tera.add_raw_templates(texts.iter().copied()).map_err(|e| {
            let cause = causes(&e);
            let culprit = texts
                .iter()
                .find(|(p, _)| cause.contains(&format!("'{p}'")))
                .copied()
                .unwrap_or(("?", ""));
            template_error(culprit.0, culprit.1, &e)
        })?;
        let mut names = sandbox();
        for s in &sources {
            names
                .add_raw_template(&s.path, &s.path)
                .map_err(|e| template_error(&s.path, &s.path, &e).context("in the file name"))?;
        }
        Ok(TemplateSet { sources, tera, names })
    }

    /// How many files the set holds.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Variables the templates (contents and file names) use that `declared`
    /// does not list, with the first file that uses each.
    pub fn undeclared(&self, declared: &[Variable]) -> BTreeMap<String, String> {
        let mut bound: BTreeSet<String> = TERA_NAMES.iter().map(|s| s.to_string()).collect();
        let mut used: Vec<(String, String)> = Vec::new();
        for tera in [&self.tera, &self.names] {
            for s in &self.sources {
                if let Ok(t) = tera.get_template(&s.path) {
                    let mut uses = Vec::new();
                    walk_nodes(&t.ast, &mut uses, &mut bound);
                    for macro_def in t.macros.values() {
                        bound.extend(macro_def.args.keys().cloned());
                        walk_nodes(&macro_def.body, &mut uses, &mut bound);
                    }
                    used.extend(uses.into_iter().map(|u| (u, s.path.clone())));
                }
            }
        }
        let mut out = BTreeMap::new();
        for (name, file) in used {
            if !bound.contains(&name) && !declared.iter().any(|v| v.name == name) {
                out.entry(name).or_insert(file);
            }
        }
        out
    }

    /// Renders every file with `values`; the first error names its file and
    /// line and nothing is returned.
    pub fn render(&self, values: &BTreeMap<String, Value>) -> Result<Vec<RenderedFile>> {
        let mut ctx = tera::Context::new();
        for (k, v) in values {
            match v {
                Value::Text(s) => ctx.insert(k, s),
                Value::Integer(i) => ctx.insert(k, i),
                Value::Boolean(b) => ctx.insert(k, b),
            }
        }
        let mut out: Vec<RenderedFile> = Vec::with_capacity(self.sources.len());
        let mut seen = BTreeSet::new();
        for s in &self.sources {
            let name = self
                .names
                .render(&s.path, &ctx)
                .map_err(|e| template_error(&s.path, &s.path, &e).context("in the file name"))?;
            let name = name.strip_suffix(TEMPLATE_SUFFIX).unwrap_or(&name).to_string();
            check_output_path(&s.path, &name)?;
            if !seen.insert(name.clone()) {
                bail!(
                    "{TEMPLATE_DIR}/{}: renders to {name:?}, which another template also writes",
                    s.path
                );
            }
            let bytes = match &s.text {
                Some(text) => {
                    let rendered = self
                        .tera
                        .render(&s.path, &ctx)
                        .map_err(|e| template_error(&s.path, text, &e))?;
                    if rendered.len() > MAX_RENDERED_BYTES {
                        bail!(
                            "{TEMPLATE_DIR}/{}: renders to more than {} MiB",
                            s.path,
                            MAX_RENDERED_BYTES >> 20
                        );
                    }
                    Content::Rendered(rendered.into_bytes())
                }
                None => Content::Copy(s.origin.clone()),
            };
            out.push(RenderedFile {
                path: name,
                content: bytes,
                executable: s.executable,
            });
        }
        Ok(out)
    }
}

/// A rendered name stays a relative path inside the output directory.
fn check_output_path(source: &str, name: &str) -> Result<()> {
    let p = Path::new(name);
    let bad = name.is_empty()
        || p.is_absolute()
        || name.contains('\0')
        || name.contains('\\')
        || p.components().any(|c| !matches!(c, std::path::Component::Normal(_)));
    if bad {
        bail!("{TEMPLATE_DIR}/{source}: renders to the file name {name:?}, which is not a plain relative path");
    }
    Ok(())
}

/// The variable an identifier reads: `a.b[c]` reads `a` (and `c`, when it
/// is a name rather than a literal).
fn ident_roots(ident: &str, uses: &mut Vec<String>) {
    let root: String = ident.chars().take_while(|c| *c != '.' && *c != '[').collect();
    if !root.is_empty() {
        uses.push(root);
    }
    for part in ident.split('[').skip(1) {
        let inner = part.split(']').next().unwrap_or("").trim();
        let literal = inner.starts_with(['"', '\'', '`']) || inner.chars().next().is_some_and(|c| c.is_ascii_digit());
        if !inner.is_empty() && !literal {
            ident_roots(inner, uses);
        }
    }
}

fn walk_expr(e: &Expr, uses: &mut Vec<String>) {
    walk_val(&e.val, uses);
    for f in &e.filters {
        f.args.values().for_each(|a| walk_expr(a, uses));
    }
}

fn walk_val(v: &ExprVal, uses: &mut Vec<String>) {
    match v {
        ExprVal::Ident(i) => ident_roots(i, uses),
        ExprVal::Math(m) => {
            walk_expr(&m.lhs, uses);
            walk_expr(&m.rhs, uses);
        }
        ExprVal::Logic(l) => {
            walk_expr(&l.lhs, uses);
            walk_expr(&l.rhs, uses);
        }
        ExprVal::In(i) => {
            walk_expr(&i.lhs, uses);
            walk_expr(&i.rhs, uses);
        }
        ExprVal::Test(t) => {
            ident_roots(&t.ident, uses);
            t.args.iter().for_each(|a| walk_expr(a, uses));
        }
        ExprVal::MacroCall(m) => m.args.values().for_each(|a| walk_expr(a, uses)),
        ExprVal::FunctionCall(f) => f.args.values().for_each(|a| walk_expr(a, uses)),
        ExprVal::Array(items) => items.iter().for_each(|a| walk_expr(a, uses)),
        ExprVal::StringConcat(c) => c.values.iter().for_each(|v| walk_val(v, uses)),
        ExprVal::String(_) | ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) => {}
    }
}

/// Collects the names nodes read, and the names they bind (loop variables,
/// `set`, macro arguments). Binding is counted per pack, not per scope: a
/// lenient check, since Tera itself reports an unbound name at render time.
fn walk_nodes(nodes: &[Node], uses: &mut Vec<String>, bound: &mut BTreeSet<String>) {
    for n in nodes {
        match n {
            Node::VariableBlock(_, e) => walk_expr(e, uses),
            Node::MacroDefinition(_, m, _) => {
                bound.extend(m.args.keys().cloned());
                m.args.values().flatten().for_each(|d| walk_expr(d, uses));
                walk_nodes(&m.body, uses, bound);
            }
            Node::Set(_, s) => {
                bound.insert(s.key.clone());
                walk_expr(&s.value, uses);
            }
            Node::FilterSection(_, f, _) => {
                f.filter.args.values().for_each(|a| walk_expr(a, uses));
                walk_nodes(&f.body, uses, bound);
            }
            Node::Block(_, b, _) => walk_nodes(&b.body, uses, bound),
            Node::Forloop(_, f, _) => {
                bound.insert(f.value.clone());
                if let Some(k) = &f.key {
                    bound.insert(k.clone());
                }
                walk_expr(&f.container, uses);
                walk_nodes(&f.body, uses, bound);
                if let Some(empty) = &f.empty_body {
                    walk_nodes(empty, uses, bound);
                }
            }
            Node::If(i, _) => {
                for (_, cond, body) in &i.conditions {
                    walk_expr(cond, uses);
                    walk_nodes(body, uses, bound);
                }
                if let Some((_, body)) = &i.otherwise {
                    walk_nodes(body, uses, bound);
                }
            }
            Node::Super
            | Node::Text(_)
            | Node::Extends(..)
            | Node::Include(..)
            | Node::ImportMacro(..)
            | Node::Raw(..)
            | Node::Break(_)
            | Node::Continue(_)
            | Node::Comment(..) => {}
        }
    }
}

/// The publisher's check: templates parse, and use only declared variables.
pub fn check_pack(pack_root: &Path, declared: &[Variable]) -> Result<usize> {
    let set = TemplateSet::load(pack_root)?;
    let undeclared = set.undeclared(declared);
    if !undeclared.is_empty() {
        bail!(
            "templates use variables pack.toml does not declare: {}; add a [variables.NAME] table for each",
            undeclared
                .iter()
                .map(|(v, f)| format!("{v} (in {TEMPLATE_DIR}/{f})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(set.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use packfed_protocol::manifest::Manifest;

    fn pack(files: &[(&str, &str)], vars: &str) -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let at = dir.path().join(TEMPLATE_DIR).join(p);
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            fs::write(at, text).unwrap();
        }
        let m = Manifest::parse(&format!(
            "[pack]\nname=\"a/b\"\nversion=\"1.0.0\"\ndescription=\"d\"\nlicense=\"MIT\"\n{vars}"
        ))
        .unwrap();
        (dir, m)
    }

    const VARS: &str = "[variables.service]\ntype=\"string\"\n[variables.port]\ntype=\"integer\"\ndefault=80\n";

    #[test]
    fn renders_contents_and_names_and_drops_the_suffix() {
        let (dir, m) = pack(
            &[
                (
                    "{{ service }}/main.rs.tera",
                    "fn main() { serve({{ port }}); } // <{{ service }}>\n",
                ),
                (
                    "README.md",
                    "{% for i in [1, 2] %}{{ i }}{% endfor %}{% set x = service %}{{ x | upper }}",
                ),
            ],
            VARS,
        );
        let set = TemplateSet::load(dir.path()).unwrap();
        assert!(set.undeclared(&m.variables).is_empty());
        let mut values = BTreeMap::new();
        values.insert("service".to_string(), Value::Text("svc".into()));
        values.insert("port".to_string(), Value::Integer(8080));
        let files = set.render(&values).unwrap();
        let by: BTreeMap<_, _> = files
            .iter()
            .map(|f| match &f.content {
                Content::Rendered(b) => (f.path.as_str(), b.as_slice()),
                Content::Copy(_) => panic!("text copied"),
            })
            .collect();
        assert_eq!(by["svc/main.rs"], b"fn main() { serve(8080); } // <svc>\n");
        assert_eq!(by["README.md"], b"12SVC");
    }

    #[test]
    fn undeclared_variables_are_named_with_their_file() {
        let (dir, m) = pack(
            &[("a.txt", "{{ service }} {{ db.host }} {% if tls %}x{% endif %}")],
            VARS,
        );
        let err = check_pack(dir.path(), &m.variables).unwrap_err().to_string();
        assert!(err.contains("db (in templates/a.txt)"), "{err}");
        assert!(err.contains("tls"), "{err}");
        assert!(!err.contains("service"), "{err}");
    }

    #[test]
    fn errors_name_file_and_line_and_the_environment_is_closed() {
        let (dir, m) = pack(&[("x.txt", "one\ntwo {{ port | | }}\nthree\n")], VARS);
        let err = check_pack(dir.path(), &m.variables).unwrap_err().to_string();
        assert!(err.starts_with("templates/x.txt:2: syntax error: expected"), "{err}");

        let (dir, _) = pack(&[("y.txt", "a\nb\n{{ port | upper }}\n")], VARS);
        let set = TemplateSet::load(dir.path()).unwrap();
        let values = BTreeMap::from([("port".to_string(), Value::Integer(1))]);
        let err = set.render(&values).unwrap_err().to_string();
        assert!(err.starts_with("templates/y.txt:3:"), "{err}");

        let (dir, _) = pack(&[("z.txt", "{{ get_env(name=\"HOME\") }}")], VARS);
        let err = TemplateSet::load(dir.path())
            .unwrap()
            .render(&BTreeMap::new())
            .unwrap_err();
        assert!(err.to_string().contains("cannot read the environment"), "{err}");
    }

    #[test]
    fn names_that_leave_the_output_are_refused() {
        let (dir, _) = pack(&[("{{ service }}.txt", "x")], VARS);
        let set = TemplateSet::load(dir.path()).unwrap();
        for bad in ["../../etc/passwd", "/etc/x", "a/../../b"] {
            let values = BTreeMap::from([("service".to_string(), Value::Text(bad.into()))]);
            assert!(set.render(&values).is_err(), "{bad}");
        }
    }
}
