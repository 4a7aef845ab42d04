//! Where each configuration value comes from: a flag, then a
//! `PACKFED_<SECTION>_<KEY>` environment variable, then `config.toml`,
//! then the built-in default. Layers are merged as TOML before the typed
//! configuration is read, so every key of every section takes part, and
//! `packfed config show` can say which layer each value came from.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which layer a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// One setting given on the command line (`--api`, `--set SECTION.KEY=VALUE`).
#[derive(Debug, Clone)]
pub struct Override {
    pub section: String,
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> Result<Override, String> {
        let (path, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: write SECTION.KEY=VALUE (e.g. api.listen=127.0.0.1:7420)"))?;
        let (section, key) = path
            .split_once('.')
            .ok_or_else(|| format!("{path:?}: write SECTION.KEY (e.g. net.mdns)"))?;
        Ok(Override {
            section: section.trim().to_string(),
            key: key.trim().to_string(),
            value: value.to_string(),
        })
    }
}

/// The flags of this process (set once, by the command line, before any
/// configuration is read).
static FLAGS: OnceLock<Vec<Override>> = OnceLock::new();

pub fn set_flags(flags: Vec<Override>) {
    let _ = FLAGS.set(flags);
}

fn flags() -> &'static [Override] {
    FLAGS.get().map(Vec::as_slice).unwrap_or(&[])
}

/// `PACKFED_<SECTION>_<KEY>` variables naming one of `sections`.
fn env_overrides(sections: &[String]) -> Vec<(Override, String)> {
    let mut out = Vec::new();
    for (name, value) in std::env::vars() {
        let Some(rest) = name.strip_prefix("PACKFED_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some(section) = sections.iter().find(|s| lower.starts_with(&format!("{s}_"))) else {
            continue;
        };
        let key = lower[section.len() + 1..].to_string();
        out.push((
            Override {
                section: section.clone(),
                key,
                value,
            },
            name,
        ));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// A flag's or variable's text as the TOML value of the key it sets: its
/// TOML reading when that has the type the key holds now, else a string;
/// `a,b` for a list key that is not written as a TOML array.
fn typed(raw: &str, current: Option<&toml::Value>) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    match (current, parsed) {
        (Some(toml::Value::Array(_)), Some(v @ toml::Value::Array(_))) => v,
        (Some(toml::Value::Array(_)), _) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        (Some(toml::Value::String(_)), _) => toml::Value::String(raw.to_string()),
        (_, Some(v)) => v,
        (_, None) => toml::Value::String(raw.to_string()),
    }
}

fn set(table: &mut toml::Table, o: &Override) {
    let section = table
        .entry(o.section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(s) = section {
        let v = typed(&o.value, s.get(&o.key));
        s.insert(o.key.clone(), v);
    }
}

/// The effective configuration and the layer of each `section.key`.
pub struct Effective<T> {
    pub config: T,
    pub sources: BTreeMap<String, (toml::Value, Source)>,
}

/// Merges default < file < environment < flags and reads the result as
/// `T`. `sections`: the sections an environment variable may name.
pub fn resolve<T: DeserializeOwned + Serialize>(file_text: &str, sections: &[String]) -> Result<Effective<T>> {
    let file: toml::Table = toml::from_str(file_text).map_err(|e| anyhow::anyhow!("config.toml: {e}"))?;
    let mut merged = file.clone();
    let mut origin: BTreeMap<String, Source> = BTreeMap::new();
    for (o, var) in env_overrides(sections) {
        set(&mut merged, &o);
        origin.insert(format!("{}.{}", o.section, o.key), Source::Env);
        // An unknown key is reported with the variable that set it.
        let probe = toml::to_string(&merged)?;
        if let Err(e) = toml::from_str::<T>(&probe) {
            bail!("environment variable {var}: {e}");
        }
    }
    for o in flags() {
        set(&mut merged, o);
        origin.insert(format!("{}.{}", o.section, o.key), Source::Flag);
    }
    let config: T = toml::from_str(&toml::to_string(&merged)?)
        .map_err(|e| anyhow::anyhow!("configuration (config.toml, PACKFED_* variables, flags): {e}"))?;
    let mut sources = BTreeMap::new();
    if let toml::Value::Table(effective) = toml::Value::try_from(&config).context("serializing the configuration")? {
        for (section, values) in effective {
            let toml::Value::Table(values) = values else { continue };
            for (key, value) in values {
                let path = format!("{section}.{key}");
                let in_file = file
                    .get(&section)
                    .and_then(|s| s.as_table())
                    .is_some_and(|s| s.contains_key(&key));
                let source = origin
                    .get(&path)
                    .copied()
                    .unwrap_or(if in_file { Source::File } else { Source::Default });
                sources.insert(path, (value, source));
            }
        }
    }
    Ok(Effective { config, sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_the_type_of_their_key() {
        let s = toml::Value::String("x".into());
        let a = toml::Value::Array(vec![]);
        let i = toml::Value::Integer(1);
        assert_eq!(
            typed("127.0.0.1:0", Some(&s)),
            toml::Value::String("127.0.0.1:0".into())
        );
        assert_eq!(typed("123", Some(&s)), toml::Value::String("123".into()));
        assert_eq!(typed("42", Some(&i)), toml::Value::Integer(42));
        assert_eq!(typed("true", None), toml::Value::Boolean(true));
        assert_eq!(
            typed("/ip4/1.2.3.4/tcp/1,/ip4/5.6.7.8/tcp/2", Some(&a)),
            toml::Value::Array(vec![
                toml::Value::String("/ip4/1.2.3.4/tcp/1".into()),
                toml::Value::String("/ip4/5.6.7.8/tcp/2".into())
            ])
        );
        assert_eq!(
            typed("[\"a\"]", Some(&a)),
            toml::Value::Array(vec![toml::Value::String("a".into())])
        );
        assert!("api.listen=1.2.3.4:5".parse::<Override>().is_ok());
        assert!("listen=1".parse::<Override>().is_err());
    }

    #[derive(serde::Deserialize, Serialize)]
    struct Cfg {
        node: Node,
    }
    #[derive(serde::Deserialize, Serialize)]
    struct Node {
        name: String,
        #[serde(default)]
        port: u16,
    }

    #[test]
    fn the_file_beats_the_default() {
        let e: Effective<Cfg> = resolve("[node]\nname = \"mine\"\n", &["node".into()]).unwrap();
        assert_eq!(e.config.node.name, "mine");
        assert_eq!(e.sources["node.name"].1, Source::File);
        assert_eq!(e.sources["node.port"].1, Source::Default);
        assert!(resolve::<Cfg>("[node]\nname = 1\n", &["node".into()]).is_err());
    }
}
