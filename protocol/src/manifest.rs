//! `pack.toml`: the pack manifest, parsed and validated with errors that name
//! the field at fault.

use serde::Deserialize;

use crate::limits::*;
use crate::pb;
use crate::records::PackName;

/// Name of the manifest file at a pack's root.
pub const MANIFEST_FILE: &str = "pack.toml";

/// Who may see and fetch a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    #[default]
    Public,
    Org,
}

impl Visibility {
    pub fn to_pb(self) -> pb::Visibility {
        match self {
            Visibility::Public => pb::Visibility::Public,
            Visibility::Org => pb::Visibility::Org,
        }
    }
    pub fn from_pb(v: i32) -> Visibility {
        if v == pb::Visibility::Org as i32 {
            Visibility::Org
        } else {
            Visibility::Public
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Org => "org",
        }
    }
}

impl std::str::FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "public" => Ok(Visibility::Public),
            "org" => Ok(Visibility::Org),
            _ => Err(format!("visibility must be \"public\" or \"org\", not {s:?}")),
        }
    }
}

/// A manifest problem; the message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("pack.toml is {0} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("pack.toml is not valid TOML: {0}")]
    Syntax(String),
    #[error("pack.toml: {field}: {problem}")]
    Field { field: String, problem: String },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    pack: Option<RawPack>,
    #[serde(default)]
    dependencies: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    variables: std::collections::BTreeMap<String, crate::variables::RawVariable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    license: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    category: String,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    visibility: Visibility,
}

/// A valid manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: PackName,
    pub version: semver::Version,
    pub description: String,
    pub license: String,
    pub keywords: Vec<String>,
    pub category: String,
    pub authors: Vec<String>,
    pub visibility: Visibility,
    /// Sorted by name (the TOML table is a map).
    pub dependencies: Vec<(PackName, semver::VersionReq)>,
    /// Template variables (`[variables.NAME]`), sorted by name.
    pub variables: Vec<crate::variables::Variable>,
}

fn required(v: Option<String>, name: &str) -> Result<String, ManifestError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(field(format!("pack.{name}"), "is required")),
    }
}

fn bounded_list(items: Vec<String>, name: &str) -> Result<Vec<String>, ManifestError> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(field(format!("pack.{name}"), format!("at most {MAX_LIST_ITEMS} items")));
    }
    if let Some(i) = items.iter().find(|i| i.len() > MAX_NAME_BYTES || i.trim().is_empty()) {
        return Err(field(
            format!("pack.{name}"),
            format!("item {i:?} must be 1-{MAX_NAME_BYTES} characters"),
        ));
    }
    Ok(items)
}

impl Manifest {
    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(text.len() as u64));
        }
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        let p = raw.pack.ok_or_else(|| field("[pack]", "the [pack] table is missing"))?;

        let name_s = required(p.name, "name")?;
        let name: PackName = name_s.parse().map_err(|_| {
            field(
                "pack.name",
                format!("{name_s:?} must be namespace/name: lowercase letters, digits and '-', e.g. acme/rest-api"),
            )
        })?;
        let version_s = required(p.version, "version")?;
        let version = semver::Version::parse(&version_s)
            .map_err(|e| field("pack.version", format!("{version_s:?} is not semver (e.g. 1.2.0): {e}")))?;
        let description = required(p.description, "description")?;
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(field(
                "pack.description",
                format!("at most {MAX_DESCRIPTION_BYTES} bytes"),
            ));
        }
        let license = required(p.license, "license")?;
        spdx::Expression::parse(&license).map_err(|e| {
            field(
                "pack.license",
                format!(
                    "{license:?} is not an SPDX license expression (e.g. MIT, Apache-2.0 OR MIT): {}",
                    e.reason
                ),
            )
        })?;
        if p.category.len() > MAX_NAME_BYTES {
            return Err(field("pack.category", format!("at most {MAX_NAME_BYTES} characters")));
        }
        if raw.dependencies.len() > MAX_DEPENDENCIES {
            return Err(field("dependencies", format!("at most {MAX_DEPENDENCIES} entries")));
        }
        let mut dependencies = Vec::with_capacity(raw.dependencies.len());
        for (dep, req) in raw.dependencies {
            let dep_name: PackName = dep
                .parse()
                .map_err(|_| field(format!("dependencies.{dep:?}"), "is not a pack name namespace/name"))?;
            if dep_name == name {
                return Err(field(format!("dependencies.{dep:?}"), "a pack cannot depend on itself"));
            }
            let req = semver::VersionReq::parse(&req).map_err(|e| {
                field(
                    format!("dependencies.{dep:?}"),
                    format!("{req:?} is not a semver requirement (e.g. \"^1.2\"): {e}"),
                )
            })?;
            dependencies.push((dep_name, req));
        }
        let variables = crate::variables::parse_all(raw.variables).map_err(|(at, problem)| field(at, problem))?;
        Ok(Manifest {
            name,
            version,
            description,
            license,
            keywords: bounded_list(p.keywords, "keywords")?,
            category: p.category,
            authors: bounded_list(p.authors, "authors")?,
            visibility: p.visibility,
            dependencies,
            variables,
        })
    }

    /// The release record fields the manifest determines; the caller adds the
    /// hash, size, quality and time.
    pub fn release_fields(&self) -> pb::Release {
        pb::Release {
            name: self.name.to_string(),
            version: self.version.to_string(),
            description: self.description.clone(),
            license: self.license.clone(),
            keywords: self.keywords.clone(),
            category: self.category.clone(),
            authors: self.authors.clone(),
            dependencies: self
                .dependencies
                .iter()
                .map(|(n, r)| pb::Dependency {
                    name: n.to_string(),
                    requirement: r.to_string(),
                })
                .collect(),
            visibility: self.visibility.to_pb() as i32,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pack]
name = "acme/rest-api"
version = "1.2.0"
description = "REST handler templates"
license = "MIT OR Apache-2.0"
keywords = ["rest", "api"]
category = "web"
authors = ["Acme Dev <dev@acme.test>"]

[dependencies]
"acme/http-core" = "^1.2"
"#;

    #[test]
    fn parses_good_manifest() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.name.as_str(), "acme/rest-api");
        assert_eq!(m.dependencies.len(), 1);
        assert_eq!(m.visibility, Visibility::Public);
    }

    fn err_of(text: &str) -> String {
        Manifest::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err_of(&GOOD.replace("1.2.0", "1.2")).contains("pack.version"));
        assert!(err_of(&GOOD.replace("acme/rest-api", "Acme")).contains("pack.name"));
        assert!(err_of(&GOOD.replace("MIT OR Apache-2.0", "Nope-1.0")).contains("pack.license"));
        assert!(err_of(&GOOD.replace("^1.2", "one")).contains("dependencies.\"acme/http-core\""));
        assert!(err_of(&GOOD.replace("description = \"REST handler templates\"\n", "")).contains("pack.description"));
        assert!(err_of(&GOOD.replace("category", "categroy")).contains("categroy"));
        assert!(err_of("[pack\n").contains("not valid TOML"));
        let bad_default = format!("{GOOD}\n[variables.port]\ntype = \"integer\"\ndefault = 0\nmin = 1\n");
        assert!(err_of(&bad_default).contains("variables.port"));
        let good_vars = format!("{GOOD}\n[variables.port]\ntype = \"integer\"\ndefault = 80\n");
        assert_eq!(Manifest::parse(&good_vars).unwrap().variables[0].name, "port");
    }
}
