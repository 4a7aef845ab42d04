//! Template variables a pack declares in `pack.toml` (`[variables.NAME]`):
//! their schema, validated when the manifest is parsed, and the check every
//! value goes through before a template sees it.
//!
//! A value arrives as text (a `--var` flag or a prompt) or as a TOML/JSON
//! value (a vars file, a default); both end as a [`Value`] of the declared
//! type, or as one error that names the variable and its rule.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::limits::{MAX_DESCRIPTION_BYTES, MAX_LIST_ITEMS, MAX_NAME_BYTES};

/// Most variables one pack may declare.
pub const MAX_VARIABLES: usize = 128;

/// Largest compiled `pattern` (the regex crate's own size limit), so a
/// manifest cannot make a generator build a huge automaton.
const MAX_PATTERN_PROGRAM_BYTES: usize = 256 * 1024;

/// Longest value of a string or path variable.
pub const MAX_VALUE_BYTES: usize = 4096;

/// A variable's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    String,
    Integer,
    Boolean,
    Choice,
    Path,
}

impl VarType {
    pub fn as_str(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Integer => "integer",
            VarType::Boolean => "boolean",
            VarType::Choice => "choice",
            VarType::Path => "path",
        }
    }
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// A value as it arrives, before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// From a flag or a prompt: parsed by the variable's type.
    Text(String),
    /// From a vars file or a default: must already have the right type.
    Toml(toml::Value),
}

/// A declared variable.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub kind: VarType,
    pub description: String,
    pub default: Option<Value>,
    pub pattern: Option<regex::Regex>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub choices: Vec<String>,
    /// A required variable without a default must be given a value.
    pub required: bool,
}

impl PartialEq for Variable {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.description == other.description
            && self.default == other.default
            && self.pattern.as_ref().map(|p| p.as_str()) == other.pattern.as_ref().map(|p| p.as_str())
            && self.min == other.min
            && self.max == other.max
            && self.choices == other.choices
            && self.required == other.required
    }
}
impl Eq for Variable {}

/// `[variables.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVariable {
    #[serde(rename = "type")]
    kind: VarType,
    #[serde(default)]
    description: String,
    default: Option<toml::Value>,
    pattern: Option<String>,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(default)]
    choices: Vec<String>,
    #[serde(default)]
    required: bool,
}

/// A name templates can use as a plain identifier.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_BYTES
}

/// Validates the `[variables]` table: names, types, the rules' own
/// consistency, and that each default passes its own rule.
pub(crate) fn parse_all(raw: BTreeMap<String, RawVariable>) -> Result<Vec<Variable>, (String, String)> {
    if raw.len() > MAX_VARIABLES {
        return Err(("variables".into(), format!("at most {MAX_VARIABLES} variables")));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (name, r) in raw {
        let at = format!("variables.{name}");
        let fail = |problem: String| (at.clone(), problem);
        if !valid_name(&name) {
            return Err(fail(
                "a variable name is a letter or '_' followed by letters, digits or '_' (templates use it as {{ name }})"
                    .into(),
            ));
        }
        if r.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(fail(format!("description: at most {MAX_DESCRIPTION_BYTES} bytes")));
        }
        let pattern = match r.pattern {
            Some(p) if !matches!(r.kind, VarType::String | VarType::Path) => {
                return Err(fail(format!(
                    "pattern {p:?} applies to string and path variables, not {}",
                    r.kind.as_str()
                )));
            }
            Some(p) => Some(
                regex::RegexBuilder::new(&p)
                    .size_limit(MAX_PATTERN_PROGRAM_BYTES)
                    .build()
                    .map_err(|e| fail(format!("pattern {p:?} is not a valid regular expression: {e}")))?,
            ),
            None => None,
        };
        if (r.min.is_some() || r.max.is_some()) && r.kind != VarType::Integer {
            return Err(fail(format!(
                "min and max apply to integer variables, not {}",
                r.kind.as_str()
            )));
        }
        if let (Some(lo), Some(hi)) = (r.min, r.max)
            && lo > hi
        {
            return Err(fail(format!("min {lo} is greater than max {hi}")));
        }
        match (r.kind, r.choices.is_empty()) {
            (VarType::Choice, true) => return Err(fail("a choice variable needs a non-empty `choices` list".into())),
            (VarType::Choice, false) => {}
            (other, false) => {
                return Err(fail(format!(
                    "choices apply to choice variables, not {}",
                    other.as_str()
                )));
            }
            _ => {}
        }
        if r.choices.len() > MAX_LIST_ITEMS || r.choices.iter().any(|c| c.len() > MAX_NAME_BYTES) {
            return Err(fail(format!(
                "at most {MAX_LIST_ITEMS} choices of at most {MAX_NAME_BYTES} bytes"
            )));
        }
        let mut var = Variable {
            name: name.clone(),
            kind: r.kind,
            description: r.description,
            default: None,
            pattern,
            min: r.min,
            max: r.max,
            choices: r.choices,
            required: r.required,
        };
        if let Some(d) = r.default {
            let checked = var
                .check(RawValue::Toml(d))
                .map_err(|e| fail(format!("the default fails its own rule: {e}")))?;
            var.default = Some(checked);
        }
        out.push(var);
    }
    Ok(out)
}

impl Variable {
    /// The rule a value must follow, in words (shown when one is missing or
    /// wrong).
    pub fn rule(&self) -> String {
        let mut parts = vec![self.kind.as_str().to_string()];
        if let Some(p) = &self.pattern {
            parts.push(format!("matching {}", p.as_str()));
        }
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => parts.push(format!("from {lo} to {hi}")),
            (Some(lo), None) => parts.push(format!("at least {lo}")),
            (None, Some(hi)) => parts.push(format!("at most {hi}")),
            (None, None) => {}
        }
        if !self.choices.is_empty() {
            parts.push(format!("one of {}", self.choices.join(", ")));
        }
        parts.join(", ")
    }

    /// Checks a value against the declared type and rule.
    pub fn check(&self, raw: RawValue) -> Result<Value, String> {
        let value = match (self.kind, raw) {
            (VarType::Integer, RawValue::Text(t)) => {
                Value::Integer(t.trim().parse().map_err(|_| format!("{t:?} is not an integer"))?)
            }
            (VarType::Integer, RawValue::Toml(toml::Value::Integer(i))) => Value::Integer(i),
            (VarType::Boolean, RawValue::Text(t)) => Value::Boolean(match t.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "1" => true,
                "false" | "no" | "n" | "0" => false,
                _ => return Err(format!("{t:?} is not a boolean (true or false)")),
            }),
            (VarType::Boolean, RawValue::Toml(toml::Value::Boolean(b))) => Value::Boolean(b),
            (VarType::String | VarType::Path | VarType::Choice, RawValue::Text(t))
            | (VarType::String | VarType::Path | VarType::Choice, RawValue::Toml(toml::Value::String(t))) => {
                Value::Text(t)
            }
            (kind, RawValue::Toml(other)) => {
                return Err(format!("{other} is a {}, not a {}", other.type_str(), kind.as_str()));
            }
        };
        match &value {
            Value::Integer(i) => {
                if let Some(lo) = self.min
                    && *i < lo
                {
                    return Err(format!("{i} is below the minimum {lo}"));
                }
                if let Some(hi) = self.max
                    && *i > hi
                {
                    return Err(format!("{i} is above the maximum {hi}"));
                }
            }
            Value::Text(t) => {
                if t.len() > MAX_VALUE_BYTES {
                    return Err(format!(
                        "a value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
                        t.len()
                    ));
                }
                if self.kind == VarType::Choice && !self.choices.iter().any(|c| c == t) {
                    return Err(format!("{t:?} is not one of {}", self.choices.join(", ")));
                }
                if self.kind == VarType::Path {
                    check_relative_path(t)?;
                }
                if let Some(p) = &self.pattern
                    && !p.is_match(t)
                {
                    return Err(format!("{t:?} does not match the pattern {}", p.as_str()));
                }
            }
            Value::Boolean(_) => {}
        }
        Ok(value)
    }
}

/// A path variable names a place inside the generated project: relative,
/// without `..`, so a value cannot steer a file name out of the target.
fn check_relative_path(t: &str) -> Result<(), String> {
    let p = std::path::Path::new(t);
    if t.is_empty() || p.is_absolute() || t.starts_with('/') || t.starts_with('\\') {
        return Err(format!("{t:?} must be a relative path inside the project"));
    }
    if p.components()
        .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
        || t.contains('\0')
    {
        return Err(format!("{t:?} must not contain '..' or a root"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Variable>, (String, String)> {
        let raw: BTreeMap<String, RawVariable> = toml::from_str(text).unwrap();
        parse_all(raw)
    }

    #[test]
    fn each_type_checks_its_values() {
        let vars = parse(
            r#"
[name]
type = "string"
pattern = "^[a-z][a-z0-9-]*$"
required = true
[port]
type = "integer"
default = 8080
min = 1
max = 65535
[tls]
type = "boolean"
default = false
[db]
type = "choice"
choices = ["postgres", "sqlite"]
default = "sqlite"
[out]
type = "path"
default = "src/gen"
"#,
        )
        .unwrap();
        let by = |n: &str| vars.iter().find(|v| v.name == n).unwrap();
        let text = |s: &str| RawValue::Text(s.into());
        assert_eq!(by("name").check(text("svc-1")), Ok(Value::Text("svc-1".into())));
        assert!(by("name").check(text("Svc")).unwrap_err().contains("pattern"));
        assert_eq!(by("port").check(text("443")), Ok(Value::Integer(443)));
        assert!(by("port").check(text("0")).unwrap_err().contains("minimum"));
        assert!(by("port").check(text("http")).unwrap_err().contains("not an integer"));
        assert!(
            by("port")
                .check(RawValue::Toml(toml::Value::String("80".into())))
                .is_err()
        );
        assert_eq!(by("tls").check(text("yes")), Ok(Value::Boolean(true)));
        assert!(by("db").check(text("mysql")).unwrap_err().contains("postgres, sqlite"));
        assert!(by("out").check(text("../etc")).is_err());
        assert!(by("out").check(text("/etc")).is_err());
        assert_eq!(by("port").default, Some(Value::Integer(8080)));
    }

    #[test]
    fn inconsistent_schemas_are_refused_naming_the_variable() {
        let err = |t: &str| parse(t).unwrap_err();
        assert_eq!(err("[p]\ntype=\"integer\"\ndefault=0\nmin=1\n").0, "variables.p");
        assert!(
            err("[p]\ntype=\"integer\"\ndefault=0\nmin=1\n")
                .1
                .contains("default fails")
        );
        assert!(err("[c]\ntype=\"choice\"\n").1.contains("choices"));
        assert!(
            err("[c]\ntype=\"string\"\npattern=\"(\"\n")
                .1
                .contains("regular expression")
        );
        assert!(err("[c]\ntype=\"boolean\"\nmin=1\n").1.contains("integer"));
        assert!(err("[\"bad-name\"]\ntype=\"string\"\n").1.contains("letter"));
        assert!(
            err("[d]\ntype=\"choice\"\nchoices=[\"a\"]\ndefault=\"b\"\n")
                .1
                .contains("default")
        );
    }
}
