//! `packfed generate`: resolve and fetch a pack exactly like an install
//! (signed hash, size, trust policy), collect its variables' values (flags,
//! a vars file, defaults, prompts on a terminal), check each against its
//! rule, render every template into memory, then write: into a staging
//! directory first and moved into place only when everything is there, so
//! a failure of any kind leaves the target as it was.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use packfed_protocol::FederationId;
use packfed_protocol::manifest::{MANIFEST_FILE, Manifest};
use packfed_protocol::variables::{RawValue, Value, Variable};
use serde::Serialize;

use crate::client::{Client, UserError};
use crate::install::{self, Guards, Spec, TrustContext};
use crate::templates::{Content, RenderedFile, TemplateSet};

/// Largest vars file read.
const MAX_VARS_FILE_BYTES: u64 = 1024 * 1024;

/// What the user asked for.
pub struct GenerateOptions<'a> {
    pub to: &'a Path,
    /// `--var NAME=VALUE`, in order (a later one wins).
    pub vars: &'a [String],
    pub vars_file: Option<&'a Path>,
    pub dry_run: bool,
    pub force: bool,
    /// Prompt for missing values (stdin and stderr are a terminal, no --json).
    pub interactive: bool,
    pub show_progress: bool,
    pub trust: Option<&'a TrustContext>,
    pub guards: Guards,
}

/// The outcome, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Generated {
    pub pack: String,
    /// Relative to the target, sorted.
    pub files: Vec<String>,
    pub dry_run: bool,
    /// Existing files replaced (`--force`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overwritten: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Resolves, fetches, verifies and renders `spec` into `opts.to`.
pub async fn generate(
    client: &Client,
    fed: &FederationId,
    spec: &Spec,
    opts: GenerateOptions<'_>,
) -> Result<Generated> {
    let fetched = install::fetch_unpacked(client, fed, spec, opts.guards, opts.trust, opts.show_progress).await?;
    let (pick, root) = (&fetched.pick, fetched.root());
    let id = format!("{}@{}", pick.release.name, pick.version);
    let warnings = install::deprecation_warnings(std::slice::from_ref(pick));
    let manifest_text = fs::read_to_string(root.join(MANIFEST_FILE))
        .with_context(|| format!("{id} has no readable {MANIFEST_FILE}"))?;
    let manifest = Manifest::parse(&manifest_text).with_context(|| format!("{id}'s {MANIFEST_FILE}"))?;
    let set = TemplateSet::load(&root).with_context(|| format!("{id}'s templates"))?;
    if set.is_empty() {
        return Err(UserError::new(
            "no_templates",
            format!("{id} has no templates/ directory, so there is nothing to generate; `packfed install` it instead"),
        )
        .into());
    }

    let values = collect_values(&id, &manifest.variables, &opts)?;
    let rendered = set
        .render(&values)
        .map_err(|e| UserError::new("template_error", format!("{id}: {e:#}; nothing was written")))?;
    let mut files: Vec<String> = rendered.iter().map(|f| f.path.clone()).collect();
    files.sort();

    let existing: Vec<String> = rendered
        .iter()
        .filter(|f| fs::symlink_metadata(opts.to.join(&f.path)).is_ok())
        .map(|f| f.path.clone())
        .collect();
    if !existing.is_empty() && !opts.force {
        return Err(UserError::new(
            "file_exists",
            format!(
                "{} already holds {}; nothing was written. Pass --force to overwrite, or generate into another directory",
                opts.to.display(),
                existing.join(", ")
            ),
        )
        .into());
    }
    if !opts.dry_run {
        write_all(opts.to, &rendered)?;
    }
    Ok(Generated {
        pack: id,
        files,
        dry_run: opts.dry_run,
        overwritten: existing,
        warnings,
    })
}

/// Values by precedence: `--var` > vars file > default > prompt. Every
/// problem is reported at once, and nothing is prompted when any value
/// given is wrong.
fn collect_values(id: &str, declared: &[Variable], opts: &GenerateOptions<'_>) -> Result<BTreeMap<String, Value>> {
    let mut given: BTreeMap<String, RawValue> = BTreeMap::new();
    if let Some(path) = opts.vars_file {
        given.extend(read_vars_file(path)?);
    }
    for v in opts.vars {
        let (name, value) = v.split_once('=').ok_or_else(|| {
            UserError::new(
                "bad_var",
                format!("--var {v:?} must be NAME=VALUE (e.g. --var port=8080)"),
            )
        })?;
        given.insert(name.trim().to_string(), RawValue::Text(value.to_string()));
    }
    let names: Vec<&str> = declared.iter().map(|v| v.name.as_str()).collect();
    let mut problems = Vec::new();
    for name in given.keys() {
        if !names.contains(&name.as_str()) {
            problems.push(format!(
                "{name}: {id} declares no such variable (it declares: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
    }
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for var in declared {
        match given.remove(&var.name) {
            Some(raw) => match var.check(raw) {
                Ok(v) => {
                    values.insert(var.name.clone(), v);
                }
                Err(e) => problems.push(format!("{}: {e} (expected {})", var.name, var.rule())),
            },
            None => match &var.default {
                Some(d) => {
                    values.insert(var.name.clone(), d.clone());
                }
                None if var.required => missing.push(var),
                // Optional without a default: templates test `is defined`.
                None => {}
            },
        }
    }
    if !problems.is_empty() {
        return Err(UserError::new("bad_var", format!("{}; nothing was written", problems.join("; "))).into());
    }
    if !missing.is_empty() {
        if !opts.interactive {
            return Err(UserError::new(
                "missing_var",
                format!(
                    "{id} needs values for: {}. Give each with --var NAME=VALUE or in a --vars file; nothing was written",
                    missing.iter().map(|v| describe(v)).collect::<Vec<_>>().join("; ")
                ),
            )
            .into());
        }
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        for var in missing {
            values.insert(var.name.clone(), prompt(var, &mut input, &mut std::io::stderr())?);
        }
    }
    Ok(values)
}

/// `name (type, rule): description`.
fn describe(var: &Variable) -> String {
    if var.description.is_empty() {
        format!("{} ({})", var.name, var.rule())
    } else {
        format!("{} ({}): {}", var.name, var.rule(), var.description)
    }
}

/// Asks for one value until it passes its rule.
fn prompt(var: &Variable, input: &mut impl BufRead, out: &mut impl Write) -> Result<Value> {
    loop {
        write!(out, "{}: ", describe(var))?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            bail!("input ended before {} was given; nothing was written", var.name);
        }
        let answer = line.trim_end_matches(['\r', '\n']);
        if answer.is_empty() {
            writeln!(out, "  {} is required", var.name)?;
            continue;
        }
        match var.check(RawValue::Text(answer.to_string())) {
            Ok(v) => return Ok(v),
            Err(e) => writeln!(out, "  {e}")?,
        }
    }
}

/// A vars file: a TOML table or a JSON object of scalars.
fn read_vars_file(path: &Path) -> Result<BTreeMap<String, RawValue>> {
    let bad =
        |why: String| -> anyhow::Error { UserError::new("bad_vars_file", format!("{}: {why}", path.display())).into() };
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_VARS_FILE_BYTES {
        return Err(bad(format!("larger than {} KiB", MAX_VARS_FILE_BYTES >> 10)));
    }
    let text = fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let is_json =
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) || text.trim_start().starts_with('{');
    let table: BTreeMap<String, toml::Value> = if is_json {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        obj.into_iter()
            .map(|(k, v)| {
                let t = match &v {
                    serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
                    serde_json::Value::String(s) => toml::Value::String(s.clone()),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => toml::Value::Integer(i),
                        None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    _ => return Err(bad(format!("{k}: only strings, numbers and booleans are values"))),
                };
                Ok((k, t))
            })
            .collect::<Result<_>>()?
    } else {
        toml::from_str(&text).map_err(|e| bad(format!("not a TOML table: {e}")))?
    };
    Ok(table.into_iter().map(|(k, v)| (k, RawValue::Toml(v))).collect())
}

/// Refuses a path through a symbolic link inside the target: writing
/// through it would land outside.
fn refuse_links_inside(target: &Path, rel: &str) -> Result<()> {
    let mut at = target.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(UserError::new(
                "symlink_in_target",
                format!(
                    "{} is a symbolic link; generate never writes through a link. Remove it and retry",
                    at.display()
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Writes every file into a staging directory inside the target, then moves
/// each into place; replaced files wait aside until all moves succeeded,
/// so a failure puts everything back.
fn write_all(target: &Path, files: &[RenderedFile]) -> Result<()> {
    fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    for f in files {
        refuse_links_inside(target, &f.path)?;
    }
    let staging = tempfile::Builder::new()
        .prefix(".packfed-generate-")
        .tempdir_in(target)
        .with_context(|| format!("creating a staging directory in {}", target.display()))?;
    let new = staging.path().join("new");
    for f in files {
        let at = new.join(&f.path);
        fs::create_dir_all(at.parent().context("path")?)?;
        let mut out = fs::File::create(&at)?;
        match &f.content {
            Content::Rendered(bytes) => out.write_all(bytes)?,
            Content::Copy(from) => {
                std::io::copy(&mut fs::File::open(from)?, &mut out)?;
            }
        }
        #[cfg(unix)]
        if f.executable {
            use std::os::unix::fs::PermissionsExt;
            out.set_permissions(fs::Permissions::from_mode(0o755))?;
        }
        out.sync_all()?;
    }
    let old = staging.path().join("old");
    let mut moved: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    let result = (|| -> Result<()> {
        for f in files {
            let dest = target.join(&f.path);
            let aside = if fs::symlink_metadata(&dest).is_ok() {
                let a = old.join(&f.path);
                fs::create_dir_all(a.parent().context("path")?)?;
                fs::rename(&dest, &a)?;
                Some(a)
            } else {
                None
            };
            moved.push((dest.clone(), aside));
            fs::create_dir_all(dest.parent().context("path")?)?;
            fs::rename(new.join(&f.path), &dest).with_context(|| format!("writing {}", dest.display()))?;
        }
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| target.join(&f.path).parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            crate::config::sync_dir(&d)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (dest, aside) in moved.into_iter().rev() {
            let _ = fs::remove_file(&dest);
            if let Some(a) = aside {
                let _ = fs::rename(a, &dest);
            }
        }
        return Err(e.context("generate failed while moving files into place; the target was restored"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_asks_again_until_the_rule_holds() {
        let m = Manifest::parse(
            "[pack]\nname=\"a/b\"\nversion=\"1.0.0\"\ndescription=\"d\"\nlicense=\"MIT\"\n\
             [variables.port]\ntype=\"integer\"\nmin=1\ndescription=\"listen port\"\nrequired=true\n",
        )
        .unwrap();
        let mut input = std::io::Cursor::new(b"\nhttp\n0\n8080\n".to_vec());
        let mut out = Vec::new();
        let v = prompt(&m.variables[0], &mut input, &mut out).unwrap();
        assert_eq!(v, Value::Integer(8080));
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("port (integer, at least 1): listen port: "), "{shown}");
        assert!(
            shown.contains("not an integer") && shown.contains("below the minimum"),
            "{shown}"
        );
    }
}
