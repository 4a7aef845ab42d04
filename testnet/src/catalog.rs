//! Deterministic synthetic catalog of code-generation packs, and the labelled
//! query set the search-quality check measures (NDCG@10) against.
//!
//! [`generate`] makes `packages` distinct packs from a seed: about sixty topics
//! (REST APIs, Terraform modules, Kubernetes operators, ...) each with its own
//! vocabulary, a few hundred namespaces (company-like names, generated names
//! and personal handles, Zipf-like in size), names built from topic words,
//! alternate stems, brand words and qualifiers, one-sentence descriptions,
//! keywords with some noise, and a quality score. Topics deliberately share
//! words ("api" is in REST, GraphQL, gateway and docs topics, "app" in several
//! mobile ones, "schema" in three), and some names are forks or near
//! duplicates of earlier ones, so that ranking is not trivial. Each pack's
//! `topic` is the hidden ground truth: it is not part of a manifest and a search
//! engine must not index it.
//!
//! Only integer arithmetic goes into generation (a splitmix64 PRNG, no floats),
//! so a `(packages, seed)` pair gives the same catalog on every platform, and a
//! smaller catalog is a prefix of a larger one with the same seed.
//!
//! [`labelled_queries`] is the committed set of 100 queries over
//! `generate(10_000, SEARCH_QUALITY_SEED)` (`testnet/data/search_queries.json`).
//! It was produced once by [`build_labelled_queries`], from the catalog's ground
//! truth (topic, name words, keywords, category), never from a search engine;
//! see that function for the grading rules.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

/// One pack of the synthetic catalog: the manifest fields a search engine may
/// index, plus `quality` (a popularity/quality signal, 0..=100) and `topic`
/// (hidden ground truth, not indexed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackSpec {
    pub name: String,
    pub version: String,
    pub description: String,
    pub license: String,
    pub keywords: Vec<String>,
    pub category: String,
    pub quality: u32,
    pub topic: String,
}

impl PackSpec {
    /// The release record of this pack under `name` (benches rename packs
    /// into fresh namespaces), published at `published_at_ms`; the content
    /// hash stands for an archive that is never built.
    pub fn release(&self, name: &str, published_at_ms: u64) -> packfed_protocol::pb::Release {
        use packfed_protocol::pb;
        pb::Release {
            name: name.to_string(),
            version: self.version.clone(),
            content_hash: blake3::hash(format!("{name}@{}", self.version).as_bytes())
                .as_bytes()
                .to_vec(),
            size: 10_000,
            description: self.description.clone(),
            license: self.license.clone(),
            keywords: self.keywords.clone(),
            category: self.category.clone(),
            quality: Some(pb::QualityReport {
                score: self.quality,
                tier: packfed_protocol::quality::Tier::from_score(self.quality)
                    .as_str()
                    .into(),
                ..Default::default()
            }),
            published_at_ms,
            ..Default::default()
        }
    }
}

/// A query with graded relevance labels: package name -> grade 1..=3
/// (3 = exactly what was asked for, 2 = relevant, 1 = partially relevant).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelledQuery {
    pub query: String,
    pub kind: String,
    pub relevant: BTreeMap<String, u8>,
}

/// The catalog the labelled set refers to is `generate(10_000, SEARCH_QUALITY_SEED)`.
pub const SEARCH_QUALITY_SEED: u64 = 0x5EA4_C4C0_2026_0001;

/// Size of the catalog the labelled set refers to.
pub const SEARCH_QUALITY_PACKAGES: usize = 10_000;

/// Where the committed labelled set lives, relative to the repository root.
pub const SEARCH_QUERIES_PATH: &str = "testnet/data/search_queries.json";

const SEARCH_QUERIES_JSON: &str = include_str!("../data/search_queries.json");

/// The committed labelled set (100 queries over `generate(10_000, SEARCH_QUALITY_SEED)`).
pub fn labelled_queries() -> Vec<LabelledQuery> {
    serde_json::from_str(SEARCH_QUERIES_JSON).expect("testnet/data/search_queries.json is committed, valid JSON")
}

/// NDCG@k of `ranked` (best first) against graded labels: gain `2^grade - 1`,
/// discount `log2(i + 2)` for 0-based position `i`, the ideal ordering taken from
/// the labels themselves. A name repeated in `ranked` counts once (its first
/// position). 0.0 when there are no labels (or no positive grade) or `k == 0`.
pub fn ndcg_at(k: usize, ranked: &[String], relevant: &BTreeMap<String, u8>) -> f64 {
    let gain = |g: u8| f64::from((1u32 << u32::from(g.min(31))) - 1);
    let discount = |i: usize| (i as f64 + 2.0).log2();
    let mut seen = HashSet::new();
    let mut dcg = 0.0;
    for (i, name) in ranked.iter().take(k).enumerate() {
        if seen.insert(name.as_str())
            && let Some(&g) = relevant.get(name)
        {
            dcg += gain(g) / discount(i);
        }
    }
    let mut grades: Vec<u8> = relevant.values().copied().collect();
    grades.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = grades
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| gain(g) / discount(i))
        .sum();
    if idcg > 0.0 { dcg / idcg } else { 0.0 }
}

// ---------------------------------------------------------------------------
// PRNG

/// splitmix64: tiny, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn word(&mut self, words: &[&'static str]) -> &'static str {
        words[self.below(words.len())]
    }

    /// An index drawn with probability proportional to `weights[i]` (`cumulative` is their running sum).
    fn weighted(&mut self, cumulative: &[u64]) -> usize {
        let total = cumulative.last().copied().unwrap_or(0).max(1);
        let r = self.next_u64() % total;
        cumulative
            .partition_point(|&c| c <= r)
            .min(cumulative.len().saturating_sub(1))
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Mixes a few numbers into one seed (for per-pack, per-version streams).
fn mix(parts: &[u64]) -> u64 {
    let mut r = Rng::new(0x243F_6A88_85A3_08D3);
    for &p in parts {
        r.0 ^= p;
        r.next_u64();
    }
    r.next_u64()
}

// ---------------------------------------------------------------------------
// Vocabulary

struct Topic {
    /// The topic phrase; always `core.join(" ")`.
    name: &'static str,
    category: &'static str,
    /// Relative popularity.
    weight: u64,
    /// The words that name the topic.
    core: &'static [&'static str],
    /// Alternate name stems (hyphenated) people use for the same thing.
    alt: &'static [&'static str],
    /// Feature words: keywords, name parts and description features.
    vocab: &'static [&'static str],
    /// Noun phrases for descriptions.
    phrases: &'static [&'static str],
    /// Language keys from [`LANGS`] a pack of this topic may target.
    langs: &'static [&'static str],
    /// Names of related topics.
    related: &'static [&'static str],
}

#[rustfmt::skip]
const TOPICS: &[Topic] = &[
    // ---- web
    Topic {
        name: "rest api",
        category: "web",
        weight: 6,
        core: &["rest", "api"],
        alt: &["restful-api", "http-api", "rest-server", "json-api"],
        vocab: &[
            "http", "json", "crud", "routing", "endpoints", "server", "handlers", "pagination", "validation", "openapi",
            "middleware",
        ],
        phrases: &["REST API server", "RESTful HTTP API", "JSON REST backend", "REST API service"],
        langs: &["rust", "go", "python", "typescript", "java", "kotlin", "ruby"],
        related: &["graphql schema", "grpc service", "openapi ontology", "api gateway", "api docs", "go service"],
    },
    Topic {
        name: "graphql schema",
        category: "web",
        weight: 4,
        core: &["graphql", "schema"],
        alt: &["gql-schema", "graphql-sdl", "graphql-types"],
        vocab: &[
            "resolvers", "query", "mutations", "subscriptions", "federation", "sdl", "api", "types", "apollo",
            "directives",
        ],
        phrases: &["GraphQL schema", "GraphQL SDL schema", "federated GraphQL API schema"],
        langs: &["typescript", "javascript", "go", "rust", "python"],
        related: &["graphql client", "rest api", "json schema"],
    },
    Topic {
        name: "graphql client",
        category: "web",
        weight: 3,
        core: &["graphql", "client"],
        alt: &["gql-client", "graphql-hooks"],
        vocab: &["query", "codegen", "hooks", "cache", "apollo", "urql", "api", "fragments", "typed"],
        phrases: &["GraphQL client", "typed GraphQL client", "GraphQL query client"],
        langs: &["typescript", "javascript", "kotlin", "swift", "rust"],
        related: &["graphql schema", "react component", "rest api"],
    },
    Topic {
        name: "react component",
        category: "web",
        weight: 6,
        core: &["react", "component"],
        alt: &["react-ui", "jsx-component", "react-widgets"],
        vocab: &[
            "jsx", "hooks", "props", "storybook", "form", "button", "modal", "table", "ui", "accessibility",
            "datepicker",
        ],
        phrases: &["React component", "reusable React UI component", "React component library"],
        langs: &["typescript", "javascript"],
        related: &["vue component", "design system", "nextjs app", "react native app"],
    },
    Topic {
        name: "vue component",
        category: "web",
        weight: 3,
        core: &["vue", "component"],
        alt: &["vue-ui", "vue-sfc"],
        vocab: &["sfc", "composition", "vite", "pinia", "ui", "form", "table", "modal", "directives"],
        phrases: &["Vue component", "Vue 3 single-file component", "Vue UI component"],
        langs: &["typescript", "javascript"],
        related: &["react component", "design system"],
    },
    Topic {
        name: "nextjs app",
        category: "web",
        weight: 3,
        core: &["nextjs", "app"],
        alt: &["next-starter", "next-app"],
        vocab: &["ssr", "react", "routing", "vercel", "pages", "tailwind", "middleware", "seo"],
        phrases: &["NextJS app", "server-rendered NextJS application", "NextJS starter app"],
        langs: &["typescript", "javascript"],
        related: &["react component", "static site"],
    },
    Topic {
        name: "static site",
        category: "web",
        weight: 3,
        core: &["static", "site"],
        alt: &["ssg-site", "blog-starter"],
        vocab: &["markdown", "blog", "hugo", "astro", "pages", "rss", "seo", "ssg", "jamstack"],
        phrases: &["static site", "static blog site", "Markdown-driven static website"],
        langs: &["javascript", "go"],
        related: &["nextjs app", "api docs", "readme template"],
    },
    Topic {
        name: "websocket server",
        category: "web",
        weight: 2,
        core: &["websocket", "server"],
        alt: &["ws-server", "realtime-server"],
        vocab: &["realtime", "chat", "events", "pubsub", "broadcast", "socket", "presence"],
        phrases: &["WebSocket server", "realtime WebSocket service", "WebSocket chat server"],
        langs: &["rust", "go", "typescript", "elixir", "python"],
        related: &["rest api", "stream processing", "redis cache"],
    },
    Topic {
        name: "api gateway",
        category: "web",
        weight: 3,
        core: &["api", "gateway"],
        alt: &["edge-proxy", "api-proxy"],
        vocab: &["proxy", "routing", "ratelimit", "envoy", "ingress", "tls", "auth", "plugins"],
        phrases: &["API gateway", "edge API gateway", "API gateway configuration"],
        langs: &["go", "rust"],
        related: &["rest api", "nginx config", "auth middleware", "kubernetes operator"],
    },
    Topic {
        name: "design system",
        category: "web",
        weight: 3,
        core: &["design", "system"],
        alt: &["design-tokens", "ui-kit"],
        vocab: &["tokens", "theme", "typography", "colors", "ui", "figma", "components", "css", "icons"],
        phrases: &["design system", "design system starter", "design token set"],
        langs: &["typescript", "javascript"],
        related: &["react component", "vue component", "flutter widget"],
    },
    Topic {
        name: "grpc service",
        category: "web",
        weight: 4,
        core: &["grpc", "service"],
        alt: &["grpc-server", "protobuf-service", "rpc-service"],
        vocab: &["protobuf", "proto", "rpc", "streaming", "api", "stubs", "codegen", "interceptors"],
        phrases: &["gRPC service", "gRPC microservice", "protobuf gRPC service"],
        langs: &["go", "rust", "java", "python", "kotlin"],
        related: &["rest api", "go service", "api gateway"],
    },
    Topic {
        name: "go service",
        category: "web",
        weight: 3,
        core: &["go", "service"],
        alt: &["golang-service", "go-microservice"],
        vocab: &["golang", "microservice", "http", "grpc", "modules", "docker", "handlers"],
        phrases: &["Go service", "Go microservice", "Go HTTP service"],
        langs: &[],
        related: &["grpc service", "rest api", "docker image"],
    },
    // ---- data
    Topic {
        name: "openapi ontology",
        category: "data",
        weight: 3,
        core: &["openapi", "ontology"],
        alt: &["openapi-spec", "api-ontology", "openapi-vocabulary"],
        vocab: &["schema", "spec", "swagger", "rdf", "api", "owl", "vocabulary", "shapes"],
        phrases: &["OpenAPI ontology", "ontology for OpenAPI specs", "OpenAPI vocabulary"],
        langs: &[],
        related: &["rdf ontology", "json schema", "rest api", "api docs"],
    },
    Topic {
        name: "json schema",
        category: "data",
        weight: 3,
        core: &["json", "schema"],
        alt: &["jsonschema", "schema-validation"],
        vocab: &["validation", "draft", "types", "codegen", "spec", "ajv", "refs"],
        phrases: &["JSON Schema", "JSON Schema bundle", "JSON Schema definition set"],
        langs: &["typescript", "python", "rust", "go"],
        related: &["openapi ontology", "graphql schema", "mongo schema"],
    },
    Topic {
        name: "rdf ontology",
        category: "data",
        weight: 3,
        core: &["rdf", "ontology"],
        alt: &["owl-ontology", "knowledge-graph", "linked-data"],
        vocab: &["owl", "sparql", "turtle", "triples", "shacl", "vocabulary", "linked", "semantic"],
        phrases: &["RDF ontology", "OWL ontology", "RDF knowledge graph ontology"],
        langs: &[],
        related: &["openapi ontology", "json schema"],
    },
    Topic {
        name: "data pipeline",
        category: "data",
        weight: 5,
        core: &["data", "pipeline"],
        alt: &["etl-pipeline", "etl-jobs", "ingestion-pipeline"],
        vocab: &["etl", "batch", "airflow", "ingestion", "transform", "parquet", "warehouse", "dag", "spark"],
        phrases: &["data pipeline", "ETL data pipeline", "batch data pipeline"],
        langs: &["python", "scala", "java", "rust"],
        related: &["stream processing", "dbt models", "jupyter notebook", "ci pipeline"],
    },
    Topic {
        name: "stream processing",
        category: "data",
        weight: 3,
        core: &["stream", "processing"],
        alt: &["kafka-streams", "event-streaming"],
        vocab: &["kafka", "events", "consumer", "producer", "flink", "realtime", "topics", "windowing"],
        phrases: &["stream processing job", "Kafka stream processor", "event stream processing app"],
        langs: &["java", "scala", "rust", "go", "python"],
        related: &["data pipeline", "websocket server"],
    },
    Topic {
        name: "dbt models",
        category: "data",
        weight: 2,
        core: &["dbt", "models"],
        alt: &["dbt-project", "analytics-models"],
        vocab: &["sql", "warehouse", "analytics", "snowflake", "transform", "metrics", "bigquery"],
        phrases: &["dbt project", "set of dbt models", "dbt analytics project"],
        langs: &[],
        related: &["data pipeline", "sql migration"],
    },
    // ---- db
    Topic {
        name: "sql migration",
        category: "db",
        weight: 5,
        core: &["sql", "migration"],
        alt: &["db-migrations", "schema-migrations"],
        vocab: &["postgres", "mysql", "sqlite", "schema", "rollback", "versioned", "ddl", "flyway"],
        phrases: &["SQL migration set", "SQL schema migration", "versioned SQL migration"],
        langs: &["rust", "go", "python", "java", "typescript"],
        related: &["orm models", "dbt models", "mongo schema"],
    },
    Topic {
        name: "orm models",
        category: "db",
        weight: 3,
        core: &["orm", "models"],
        alt: &["entity-models", "data-models"],
        vocab: &["entity", "relations", "postgres", "query", "schema", "repository", "prisma", "diesel"],
        phrases: &["ORM model layer", "ORM entity model set", "ORM models package"],
        langs: &["rust", "typescript", "python", "java", "go"],
        related: &["sql migration", "mongo schema"],
    },
    Topic {
        name: "redis cache",
        category: "db",
        weight: 3,
        core: &["redis", "cache"],
        alt: &["cache-layer", "kv-cache"],
        vocab: &["ttl", "eviction", "session", "pubsub", "keys", "memoize", "cluster"],
        phrases: &["Redis cache layer", "Redis caching setup", "Redis-backed cache"],
        langs: &["go", "rust", "python", "typescript", "java"],
        related: &["websocket server", "orm models"],
    },
    Topic {
        name: "mongo schema",
        category: "db",
        weight: 2,
        core: &["mongo", "schema"],
        alt: &["mongodb-models", "document-schema"],
        vocab: &["mongodb", "documents", "collections", "mongoose", "indexes", "aggregation"],
        phrases: &["MongoDB schema", "Mongo document schema", "Mongoose schema set"],
        langs: &["typescript", "javascript", "python"],
        related: &["json schema", "orm models", "sql migration"],
    },
    // ---- cloud
    Topic {
        name: "terraform module",
        category: "cloud",
        weight: 6,
        core: &["terraform", "module"],
        alt: &["tf-module", "terraform-stack"],
        vocab: &["aws", "gcp", "azure", "vpc", "iac", "provider", "infrastructure", "hcl", "networking", "s3"],
        phrases: &["Terraform module", "reusable Terraform module", "Terraform infrastructure module"],
        langs: &[],
        related: &["pulumi program", "kubernetes operator", "helm chart", "serverless function"],
    },
    Topic {
        name: "kubernetes operator",
        category: "cloud",
        weight: 5,
        core: &["kubernetes", "operator"],
        alt: &["k8s-operator", "kube-controller", "crd-controller"],
        vocab: &["crd", "controller", "reconcile", "k8s", "cluster", "helm", "kubebuilder", "webhook"],
        phrases: &["Kubernetes operator", "Kubernetes controller and operator", "K8s operator"],
        langs: &["go", "rust", "java"],
        related: &["helm chart", "terraform module", "docker image"],
    },
    Topic {
        name: "serverless function",
        category: "cloud",
        weight: 4,
        core: &["serverless", "function"],
        alt: &["lambda-function", "faas-handler", "edge-function"],
        vocab: &["lambda", "aws", "handler", "cloudflare", "workers", "edge", "events", "triggers"],
        phrases: &["serverless function", "AWS Lambda function", "serverless edge function"],
        langs: &["typescript", "python", "go", "rust", "javascript"],
        related: &["terraform module", "rest api", "api gateway"],
    },
    Topic {
        name: "pulumi program",
        category: "cloud",
        weight: 2,
        core: &["pulumi", "program"],
        alt: &["pulumi-stack", "pulumi-infra"],
        vocab: &["iac", "aws", "azure", "gcp", "infrastructure", "stack", "components"],
        phrases: &["Pulumi program", "Pulumi infrastructure program", "Pulumi stack program"],
        langs: &["typescript", "python", "go"],
        related: &["terraform module", "kubernetes operator"],
    },
    // ---- devops
    Topic {
        name: "helm chart",
        category: "devops",
        weight: 5,
        core: &["helm", "chart"],
        alt: &["helm-charts", "k8s-chart"],
        vocab: &["kubernetes", "k8s", "values", "deployment", "ingress", "release", "templates"],
        phrases: &["Helm chart", "Kubernetes Helm chart", "Helm chart bundle"],
        langs: &[],
        related: &["kubernetes operator", "docker image", "terraform module"],
    },
    Topic {
        name: "docker image",
        category: "devops",
        weight: 5,
        core: &["docker", "image"],
        alt: &["dockerfile", "container-image"],
        vocab: &["dockerfile", "container", "alpine", "multistage", "registry", "distroless", "compose"],
        phrases: &["Docker image", "Dockerfile and container image", "slim Docker image"],
        langs: &["rust", "go", "python", "java", "typescript"],
        related: &["helm chart", "ci pipeline", "go service"],
    },
    Topic {
        name: "github actions",
        category: "devops",
        weight: 5,
        core: &["github", "actions"],
        alt: &["gh-workflow", "ci-workflow", "actions-workflow"],
        vocab: &["ci", "workflow", "yaml", "release", "matrix", "cache", "pipeline", "deploy"],
        phrases: &["GitHub Actions workflow", "GitHub Actions CI workflow", "reusable GitHub Actions workflow"],
        langs: &["rust", "go", "python", "typescript"],
        related: &["ci pipeline", "docker image"],
    },
    Topic {
        name: "ci pipeline",
        category: "devops",
        weight: 4,
        core: &["ci", "pipeline"],
        alt: &["gitlab-ci", "build-pipeline", "jenkins-pipeline"],
        vocab: &["gitlab", "jenkins", "build", "deploy", "stages", "artifacts", "yaml", "cache"],
        phrases: &["CI pipeline", "CI/CD pipeline", "CI build pipeline"],
        langs: &[],
        related: &["github actions", "docker image", "data pipeline"],
    },
    Topic {
        name: "logging config",
        category: "devops",
        weight: 3,
        core: &["logging", "config"],
        alt: &["log-config", "structured-logging"],
        vocab: &["logs", "json", "tracing", "levels", "appender", "rotation", "fluentd", "syslog"],
        phrases: &["logging configuration", "structured logging config", "logging config preset"],
        langs: &["rust", "java", "python", "go"],
        related: &["opentelemetry tracing", "metrics dashboard"],
    },
    Topic {
        name: "metrics dashboard",
        category: "devops",
        weight: 3,
        core: &["metrics", "dashboard"],
        alt: &["grafana-dashboard", "monitoring-dashboard"],
        vocab: &["grafana", "prometheus", "alerts", "panels", "observability", "monitoring", "slo"],
        phrases: &["metrics dashboard", "Grafana metrics dashboard", "Prometheus metrics dashboard"],
        langs: &[],
        related: &["opentelemetry tracing", "logging config"],
    },
    Topic {
        name: "ansible playbook",
        category: "devops",
        weight: 3,
        core: &["ansible", "playbook"],
        alt: &["ansible-role", "ansible-roles"],
        vocab: &["roles", "inventory", "yaml", "provisioning", "servers", "tasks", "hardening"],
        phrases: &["Ansible playbook", "Ansible playbook and roles", "server provisioning playbook"],
        langs: &[],
        related: &["terraform module", "docker image", "nginx config"],
    },
    Topic {
        name: "nginx config",
        category: "devops",
        weight: 3,
        core: &["nginx", "config"],
        alt: &["reverse-proxy", "nginx-conf"],
        vocab: &["proxy", "tls", "vhost", "caching", "loadbalancer", "ratelimit", "gzip"],
        phrases: &["nginx configuration", "nginx reverse proxy config", "nginx config bundle"],
        langs: &[],
        related: &["api gateway", "tls certificates", "docker image"],
    },
    Topic {
        name: "opentelemetry tracing",
        category: "devops",
        weight: 3,
        core: &["opentelemetry", "tracing"],
        alt: &["otel-tracing", "distributed-tracing"],
        vocab: &["otel", "spans", "traces", "jaeger", "exporter", "observability", "instrumentation"],
        phrases: &[
            "OpenTelemetry tracing setup", "distributed tracing setup with OpenTelemetry",
            "OpenTelemetry instrumentation",
        ],
        langs: &["rust", "go", "java", "python", "typescript"],
        related: &["logging config", "metrics dashboard"],
    },
    // ---- cli
    Topic {
        name: "cli scaffold",
        category: "cli",
        weight: 5,
        core: &["cli", "scaffold"],
        alt: &["cli-app", "command-line", "cli-tool"],
        vocab: &["commands", "flags", "args", "subcommands", "completion", "terminal", "prompts", "colors"],
        phrases: &["CLI scaffold", "command-line app scaffold", "CLI application skeleton"],
        langs: &["rust", "go", "python", "typescript"],
        related: &["shell scripts", "rust crate"],
    },
    Topic {
        name: "shell scripts",
        category: "cli",
        weight: 2,
        core: &["shell", "scripts"],
        alt: &["bash-scripts", "dotfiles"],
        vocab: &["bash", "zsh", "posix", "automation", "dotfiles", "aliases"],
        phrases: &["shell script collection", "set of shell scripts", "bash shell script kit"],
        langs: &[],
        related: &["cli scaffold", "ansible playbook"],
    },
    // ---- tooling
    Topic {
        name: "rust crate",
        category: "tooling",
        weight: 4,
        core: &["rust", "crate"],
        alt: &["cargo-template", "rust-lib", "cargo-crate"],
        vocab: &["cargo", "clippy", "rustfmt", "workspace", "library", "ci", "docs", "nostd"],
        phrases: &["Rust crate template", "Cargo crate template", "Rust library crate"],
        langs: &[],
        related: &["cli scaffold", "python package", "monorepo workspace"],
    },
    Topic {
        name: "python package",
        category: "tooling",
        weight: 4,
        core: &["python", "package"],
        alt: &["pypi-package", "py-lib"],
        vocab: &["pypi", "poetry", "pytest", "typing", "setuptools", "library", "ruff", "docs"],
        phrases: &["Python package", "PyPI-ready Python package", "Python library package"],
        langs: &[],
        related: &["rust crate", "jupyter notebook", "monorepo workspace"],
    },
    Topic {
        name: "monorepo workspace",
        category: "tooling",
        weight: 2,
        core: &["monorepo", "workspace"],
        alt: &["monorepo-tools", "workspace-setup"],
        vocab: &["nx", "turborepo", "pnpm", "lerna", "workspaces", "build", "bazel"],
        phrases: &["monorepo workspace", "monorepo setup", "monorepo workspace layout"],
        langs: &["typescript", "javascript", "go", "rust"],
        related: &["rust crate", "python package", "ci pipeline"],
    },
    // ---- ml
    Topic {
        name: "ml training loop",
        category: "ml",
        weight: 4,
        core: &["ml", "training", "loop"],
        alt: &["model-trainer", "training-loop"],
        vocab: &["pytorch", "model", "gpu", "epochs", "optimizer", "checkpoint", "tensorflow", "lightning"],
        phrases: &["ML training loop", "PyTorch training loop", "model training loop"],
        langs: &["python"],
        related: &["model serving", "jupyter notebook"],
    },
    Topic {
        name: "model serving",
        category: "ml",
        weight: 3,
        core: &["model", "serving"],
        alt: &["inference-server", "ml-serving"],
        vocab: &["inference", "onnx", "gpu", "batching", "api", "ml", "latency", "triton"],
        phrases: &["model serving API", "ML model serving stack", "inference server for model serving"],
        langs: &["python", "rust", "go"],
        related: &["ml training loop", "rest api", "llm prompt templates"],
    },
    Topic {
        name: "llm prompt templates",
        category: "ml",
        weight: 4,
        core: &["llm", "prompt", "templates"],
        alt: &["llm-prompts", "prompt-library"],
        vocab: &["gpt", "chat", "rag", "agents", "embeddings", "evals", "fewshot"],
        phrases: &["LLM prompt templates", "prompt template library", "collection of LLM prompt templates"],
        langs: &["python", "typescript"],
        related: &["model serving", "jupyter notebook"],
    },
    Topic {
        name: "jupyter notebook",
        category: "ml",
        weight: 3,
        core: &["jupyter", "notebook"],
        alt: &["notebooks", "ipynb-notebook"],
        vocab: &["pandas", "analysis", "plots", "python", "datascience", "ml", "visualization"],
        phrases: &["Jupyter notebook", "Jupyter analysis notebook", "Jupyter notebook collection"],
        langs: &[],
        related: &["ml training loop", "data pipeline"],
    },
    // ---- mobile
    Topic {
        name: "flutter widget",
        category: "mobile",
        weight: 4,
        core: &["flutter", "widget"],
        alt: &["dart-widget", "flutter-ui"],
        vocab: &["dart", "material", "ios", "android", "ui", "animation", "cupertino"],
        phrases: &["Flutter widget", "Flutter UI widget", "reusable Flutter widget"],
        langs: &["dart"],
        related: &["android app", "ios app", "react native app", "design system"],
    },
    Topic {
        name: "android app",
        category: "mobile",
        weight: 4,
        core: &["android", "app"],
        alt: &["kotlin-app", "android-starter"],
        vocab: &["kotlin", "jetpack", "compose", "gradle", "mobile", "room", "material"],
        phrases: &["Android app", "Android app starter", "Jetpack Compose Android app"],
        langs: &["kotlin", "java"],
        related: &["ios app", "flutter widget", "react native app"],
    },
    Topic {
        name: "ios app",
        category: "mobile",
        weight: 3,
        core: &["ios", "app"],
        alt: &["swiftui-app", "iphone-app"],
        vocab: &["swift", "swiftui", "xcode", "cocoapods", "mobile", "uikit"],
        phrases: &["iOS app", "SwiftUI iOS app", "iOS app starter"],
        langs: &["swift"],
        related: &["android app", "flutter widget", "react native app"],
    },
    Topic {
        name: "react native app",
        category: "mobile",
        weight: 3,
        core: &["react", "native", "app"],
        alt: &["expo-app", "rn-app"],
        vocab: &["expo", "mobile", "ios", "android", "navigation", "javascript"],
        phrases: &["React Native app", "Expo React Native app", "cross-platform React Native app"],
        langs: &["typescript", "javascript"],
        related: &["react component", "android app", "ios app"],
    },
    // ---- testing
    Topic {
        name: "e2e tests",
        category: "testing",
        weight: 4,
        core: &["e2e", "tests"],
        alt: &["end-to-end", "browser-tests"],
        vocab: &["playwright", "cypress", "browser", "selenium", "fixtures", "ci", "screenshots"],
        phrases: &["end-to-end test suite", "e2e test suite", "browser e2e test setup"],
        langs: &["typescript", "javascript", "python", "java"],
        related: &["test fixtures", "load testing"],
    },
    Topic {
        name: "test fixtures",
        category: "testing",
        weight: 3,
        core: &["test", "fixtures"],
        alt: &["testing-helpers", "mock-library", "test-mocks"],
        vocab: &["mocks", "stubs", "assertions", "snapshot", "factories", "jest", "pytest"],
        phrases: &["unit test fixture set", "test fixture and mock set", "test fixture library"],
        langs: &["rust", "python", "typescript", "java", "go"],
        related: &["e2e tests", "load testing"],
    },
    Topic {
        name: "load testing",
        category: "testing",
        weight: 3,
        core: &["load", "testing"],
        alt: &["benchmark-suite", "perf-tests", "stress-tests"],
        vocab: &["k6", "locust", "benchmark", "latency", "throughput", "stress", "gatling"],
        phrases: &["load testing suite", "load testing script set", "HTTP load testing setup"],
        langs: &["javascript", "python", "go"],
        related: &["e2e tests", "metrics dashboard"],
    },
    // ---- security
    Topic {
        name: "auth middleware",
        category: "security",
        weight: 5,
        core: &["auth", "middleware"],
        alt: &["oauth-middleware", "jwt-auth", "session-auth"],
        vocab: &["jwt", "oauth", "session", "login", "token", "rbac", "sso", "oidc"],
        phrases: &["authentication middleware", "auth middleware", "OAuth and JWT auth middleware"],
        langs: &["rust", "go", "typescript", "python", "java"],
        related: &["rbac policy", "api gateway", "rest api", "secrets management"],
    },
    Topic {
        name: "security scanner",
        category: "security",
        weight: 3,
        core: &["security", "scanner"],
        alt: &["vuln-scanner", "sast-scanner", "dependency-audit"],
        vocab: &["vulnerability", "cve", "audit", "sast", "dependencies", "secrets", "sbom"],
        phrases: &["security scanner", "vulnerability security scanner", "SAST security scanner config"],
        langs: &["go", "rust", "python"],
        related: &["secrets management", "ci pipeline", "docker image"],
    },
    Topic {
        name: "secrets management",
        category: "security",
        weight: 3,
        core: &["secrets", "management"],
        alt: &["secret-manager", "vault-secrets"],
        vocab: &["vault", "kms", "encryption", "rotation", "credentials", "env", "sops"],
        phrases: &["secrets management setup", "Vault secrets management config", "secrets management toolkit"],
        langs: &[],
        related: &["tls certificates", "auth middleware", "kubernetes operator"],
    },
    Topic {
        name: "rbac policy",
        category: "security",
        weight: 2,
        core: &["rbac", "policy"],
        alt: &["opa-policy", "access-policy"],
        vocab: &["opa", "rego", "permissions", "roles", "authorization", "abac"],
        phrases: &["RBAC policy set", "OPA RBAC policy bundle", "RBAC access policy"],
        langs: &[],
        related: &["auth middleware", "kubernetes operator"],
    },
    Topic {
        name: "tls certificates",
        category: "security",
        weight: 2,
        core: &["tls", "certificates"],
        alt: &["cert-manager", "letsencrypt-certs"],
        vocab: &["letsencrypt", "x509", "https", "renewal", "mtls", "pki"],
        phrases: &["TLS certificate setup", "TLS certificates automation", "mTLS certificate bundle"],
        langs: &[],
        related: &["nginx config", "secrets management"],
    },
    // ---- docs
    Topic {
        name: "api docs",
        category: "docs",
        weight: 3,
        core: &["api", "docs"],
        alt: &["api-reference", "docs-portal"],
        vocab: &["documentation", "reference", "markdown", "openapi", "swagger", "mdx", "redoc"],
        phrases: &["API documentation site", "API docs generator setup", "API reference docs"],
        langs: &[],
        related: &["openapi ontology", "static site", "rest api"],
    },
    Topic {
        name: "readme template",
        category: "docs",
        weight: 2,
        core: &["readme", "template"],
        alt: &["readme-generator", "project-readme"],
        vocab: &["markdown", "badges", "changelog", "contributing", "license", "docs"],
        phrases: &["README template", "project README template", "README generator template"],
        langs: &[],
        related: &["api docs", "static site"],
    },
    // ---- embedded
    Topic {
        name: "embedded driver",
        category: "embedded",
        weight: 3,
        core: &["embedded", "driver"],
        alt: &["hal-driver", "sensor-driver"],
        vocab: &["hal", "i2c", "spi", "gpio", "sensor", "nostd", "mcu", "uart"],
        phrases: &["embedded HAL driver", "embedded sensor driver", "no-std embedded driver"],
        langs: &["rust"],
        related: &["firmware project"],
    },
    Topic {
        name: "firmware project",
        category: "embedded",
        weight: 3,
        core: &["firmware", "project"],
        alt: &["mcu-firmware", "rtos-firmware"],
        vocab: &["rtos", "stm32", "esp32", "bootloader", "arduino", "flash", "ota"],
        phrases: &["firmware project", "RTOS firmware project", "microcontroller firmware project"],
        langs: &["rust"],
        related: &["embedded driver"],
    },
];

struct Lang {
    key: &'static str,
    display: &'static str,
    suffix: &'static str,
    nouns: &'static [&'static str],
}

#[rustfmt::skip]
const LANGS: &[Lang] = &[
    Lang { key: "rust", display: "Rust", suffix: "rs", nouns: &["services", "crates", "projects"] },
    Lang { key: "python", display: "Python", suffix: "py", nouns: &["projects", "services", "apps"] },
    Lang { key: "typescript", display: "TypeScript", suffix: "ts", nouns: &["apps", "projects", "services"] },
    Lang { key: "javascript", display: "JavaScript", suffix: "js", nouns: &["apps", "projects"] },
    Lang { key: "go", display: "Go", suffix: "go", nouns: &["services", "microservices"] },
    Lang { key: "java", display: "Java", suffix: "java", nouns: &["services", "apps"] },
    Lang { key: "kotlin", display: "Kotlin", suffix: "kt", nouns: &["apps", "services"] },
    Lang { key: "swift", display: "Swift", suffix: "swift", nouns: &["apps"] },
    Lang { key: "dart", display: "Dart", suffix: "dart", nouns: &["apps"] },
    Lang { key: "scala", display: "Scala", suffix: "scala", nouns: &["jobs", "services"] },
    Lang { key: "elixir", display: "Elixir", suffix: "ex", nouns: &["services", "apps"] },
    Lang { key: "ruby", display: "Ruby", suffix: "rb", nouns: &["apps", "services"] },
];

#[rustfmt::skip]
const CATEGORIES: &[&str] = &[
    "web", "data", "db", "cloud", "devops", "cli", "tooling", "ml", "mobile", "testing", "security", "docs", "embedded",
];

#[rustfmt::skip]
const QUALIFIERS: &[&str] = &[
    "kit", "starter", "template", "scaffold", "toolkit", "gen", "boilerplate", "core", "utils", "helpers", "blueprint",
    "skeleton", "lib", "pack", "base", "quickstart", "generator", "presets", "recipes", "sdk", "tools", "stack",
];

#[rustfmt::skip]
const NAME_ADJECTIVES: &[&str] = &[
    "tiny", "fast", "simple", "smart", "easy", "micro", "mini", "super", "auto", "open", "quick", "lean", "modern",
    "awesome", "better",
];

#[rustfmt::skip]
const BRANDS: &[&str] = &[
    "nimbus", "atlas", "orbit", "pulse", "nova", "bolt", "prism", "vertex", "echo", "helix", "ember", "quartz",
    "cobalt", "falcon", "otter", "maple", "cedar", "tide", "comet", "lumen", "onyx", "pico", "hydra", "aurora",
    "zephyr", "kestrel", "lynx", "sable", "tundra", "basalt", "cinder", "drift", "harbor", "iris", "jade", "koi",
    "lotus", "mesa", "nimble", "opal",
];

const NEAR_DUP_SUFFIXES: &[&str] = &["ng", "next", "plus", "lite", "fork", "2", "v2", "x"];

#[rustfmt::skip]
const DESC_ADJECTIVES: &[&str] = &[
    "minimal", "opinionated", "production-ready", "lightweight", "batteries-included", "small", "fast", "modular",
    "well-tested", "simple", "extensible", "type-safe", "zero-config", "idiomatic", "experimental", "pragmatic",
];

#[rustfmt::skip]
const DESC_FILLERS: &[&str] = &[
    "ready to customize", "generated from a single manifest", "kept small on purpose", "tested in CI on every commit",
    "with sensible defaults", "easy to extend", "maintained by a small team", "used in production",
];

const GENERIC_KEYWORDS: &[&str] = &["template", "starter", "codegen", "scaffold", "boilerplate", "generator"];

const LICENSES: &[(&str, u64)] = &[
    ("MIT", 40),
    ("Apache-2.0", 30),
    ("BSD-3-Clause", 8),
    ("MPL-2.0", 6),
    ("GPL-3.0-only", 5),
    ("ISC", 6),
    ("BSD-2-Clause", 3),
    ("Unlicense", 2),
];

#[rustfmt::skip]
const COMPANIES: &[&str] = &[
    "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "wonka", "stark", "wayne", "tyrell", "cyberdyne",
    "soylent", "oscorp", "aperture", "blackmesa", "massive-dynamic", "pied-piper", "dunder-mifflin", "prestige",
    "monarch", "nakatomi", "gringotts", "wernham-hogg", "bluth", "krusty", "planet-express", "momcorp", "sirius",
    "weyland", "yoyodyne", "duff", "sterling-cooper", "virtucon", "gekko", "dharma", "rekall", "omni-consumer",
    "ollivander", "lacuna", "veridian", "mooby", "bubba-gump", "los-pollos", "paper-street", "strickland", "zorg",
    "abstergo", "kaiba", "shinra", "vault-tec", "spacely", "cogswell", "northwind", "contoso", "fabrikam", "tailspin",
    "adventure-works", "woodgrove", "litware", "proseware", "fourth-coffee", "wingtip", "coho", "lamna",
    "trey-research", "humongous", "wide-world", "blue-yonder", "southridge", "relecloud", "initrode", "chotchkies",
    "intertrode", "gizmonic", "frobozz", "mega-lo-mart", "buy-n-large", "ingen", "tricell", "sarif", "hanso",
    "jupiter-mining", "axiom", "blue-sun", "kerbal", "mombasa", "nostromo", "probe-corp", "quasar", "roxxon",
    "serenity", "tessier", "ultor", "veidt", "xanatos", "zenith-labs", "brawndo", "cheers", "dinoco", "encom",
    "fleximart", "genco", "hyperion", "izon",
];

#[rustfmt::skip]
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "ven", "tor", "zu", "qi", "xan", "bel", "dor", "fen", "gal", "hux", "jin", "kor", "lum",
    "mor", "nex", "pra", "quo", "rin", "sol", "tav", "ulm", "vor", "wex", "yal", "zan", "bri", "cal", "del", "ev",
    "fro", "gri", "hal", "isk", "jor",
];

const NS_SUFFIXES: &[&str] = &[
    "labs", "io", "dev", "hq", "oss", "works", "systems", "soft", "tech", "studio",
];

#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar", "peggy",
    "rupert", "sybil", "trent", "victor", "walter", "yuki", "zara", "mei", "omar", "lena", "tariq", "ines", "kofi",
    "priya", "sven", "noor", "diego",
];

/// How many namespaces a catalog draws from.
const NAMESPACE_COUNT: usize = 300;

fn topic_by_name(name: &str) -> Option<&'static Topic> {
    TOPICS.iter().find(|t| t.name == name)
}

fn lang_by_key(key: &str) -> Option<&'static Lang> {
    LANGS.iter().find(|l| l.key == key)
}

/// Every word the generator can put into a pack's name, keywords or
/// description on purpose; generated namespaces avoid these.
fn vocabulary_words() -> BTreeSet<&'static str> {
    let mut v = BTreeSet::new();
    for t in TOPICS {
        v.extend(t.core.iter().copied());
        v.extend(t.vocab.iter().copied());
        v.extend(t.alt.iter().flat_map(|a| a.split('-')));
    }
    for l in LANGS {
        v.insert(l.key);
        v.insert(l.suffix);
    }
    v.extend(CATEGORIES.iter().copied());
    v.extend(QUALIFIERS.iter().copied());
    v.extend(NAME_ADJECTIVES.iter().copied());
    v.extend(BRANDS.iter().copied());
    v.extend(GENERIC_KEYWORDS.iter().copied());
    v
}

// ---------------------------------------------------------------------------
// Generation

struct Namespace {
    name: String,
    /// Topics this namespace publishes most.
    favourites: Vec<usize>,
}

fn namespaces(seed: u64) -> Vec<Namespace> {
    let mut rng = Rng::new(mix(&[seed, 0x4E41_4D45]));
    let avoid = vocabulary_words();
    let mut names: Vec<String> = COMPANIES.iter().map(|s| s.to_string()).collect();
    let mut seen: BTreeSet<String> = names.iter().cloned().collect();
    while names.len() < NAMESPACE_COUNT {
        let stem = |rng: &mut Rng| {
            let mut s = String::new();
            for _ in 0..2 + rng.below(2) {
                s.push_str(rng.word(SYLLABLES));
            }
            s
        };
        let candidate = match rng.below(10) {
            0..=3 => stem(&mut rng),
            4..=6 => format!("{}-{}", stem(&mut rng), rng.pick(NS_SUFFIXES)),
            7 | 8 => format!("{}-{}", rng.pick(FIRST_NAMES), stem(&mut rng)),
            _ => format!("{}{}", rng.pick(FIRST_NAMES), 2 + rng.below(98)),
        };
        if candidate.len() > 64 || candidate.split('-').any(|w| avoid.contains(w)) || !seen.insert(candidate.clone()) {
            continue;
        }
        names.push(candidate);
    }
    rng.shuffle(&mut names);
    names
        .into_iter()
        .map(|name| {
            let favourites = (0..1 + rng.below(3)).map(|_| rng.below(TOPICS.len())).collect();
            Namespace { name, favourites }
        })
        .collect()
}

fn cumulative(weights: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut total = 0;
    weights
        .map(|w| {
            total += w;
            total
        })
        .collect()
}

/// Draws `n` distinct feature words of a topic, earlier words more often
/// (weight `120 / (i + 1)`), so that every topic has common and long-tail words.
fn features(rng: &mut Rng, vocab: &[&'static str], n: usize) -> Vec<&'static str> {
    let mut pool: Vec<(usize, &'static str)> = vocab.iter().copied().enumerate().collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !pool.is_empty() {
        let cumulative = cumulative(pool.iter().map(|&(i, _)| 120 / (i as u64 + 1)));
        let (_, w) = pool.remove(rng.weighted(&cumulative));
        out.push(w);
    }
    out
}

/// Draws `n` distinct items of `items` (fewer if there are not that many).
fn distinct<'a>(rng: &mut Rng, items: &[&'a str], n: usize, exclude: &[&str]) -> Vec<&'a str> {
    let mut pool: Vec<&'a str> = items.iter().copied().filter(|w| !exclude.contains(w)).collect();
    rng.shuffle(&mut pool);
    pool.truncate(n);
    pool
}

fn is_valid_part(part: &str) -> bool {
    (1..=64).contains(&part.len())
        && part.starts_with(|c: char| c.is_ascii_lowercase())
        && part
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `name` satisfies the pack-name rule: `namespace/name`, each part
/// 1-64 chars of lowercase letters, digits and '-', starting with a letter.
pub fn is_valid_pack_name(name: &str) -> bool {
    match name.split_once('/') {
        Some((ns, part)) => is_valid_part(ns) && is_valid_part(part),
        None => false,
    }
}

/// A fresh name part for a pack of `topic` (no near-duplicate logic here).
fn name_part(rng: &mut Rng, topic: &Topic, ns: &str, features: &[&str], lang: Option<&Lang>) -> String {
    let core = topic.core.join("-");
    let one_core = *rng.pick(topic.core);
    let last_core = topic.core[topic.core.len() - 1];
    let feature = |rng: &mut Rng| *rng.pick(features);
    let mut words: Vec<String> = match rng.below(100) {
        // The full topic phrase in the name (about 16%).
        0..=7 => vec![core, rng.pick(QUALIFIERS).to_string()],
        8..=11 => {
            let f = feature(rng);
            if rng.chance(50) {
                vec![core, f.to_string()]
            } else {
                vec![f.to_string(), core]
            }
        }
        12 => vec![core],
        13..=15 => vec![rng.pick(NAME_ADJECTIVES).to_string(), core],
        // An alternate stem.
        16..=35 => {
            let stem = rng.pick(topic.alt).to_string();
            if rng.chance(50) {
                vec![stem, rng.pick(QUALIFIERS).to_string()]
            } else {
                vec![stem, feature(rng).to_string()]
            }
        }
        // A brand word and one topic word.
        36..=50 => {
            let brand = rng.pick(BRANDS).to_string();
            if rng.chance(60) {
                vec![brand, one_core.to_string()]
            } else {
                vec![one_core.to_string(), brand]
            }
        }
        // A feature word and one topic word.
        51..=70 => vec![feature(rng).to_string(), one_core.to_string()],
        // One topic word, a feature word and a qualifier.
        71..=88 => vec![
            one_core.to_string(),
            feature(rng).to_string(),
            rng.pick(QUALIFIERS).to_string(),
        ],
        // Feature words only.
        89..=95 => {
            let fs = distinct(rng, features, 2, &[]);
            let mut v: Vec<String> = fs.iter().map(|s| s.to_string()).collect();
            v.push(rng.pick(QUALIFIERS).to_string());
            v
        }
        // The namespace's own prefix.
        96..=98 => {
            let first = ns.split('-').next().unwrap_or(ns);
            vec![first.to_string(), last_core.to_string()]
        }
        // The category word.
        _ => vec![
            topic.category.to_string(),
            last_core.to_string(),
            rng.pick(QUALIFIERS).to_string(),
        ],
    };
    if let Some(lang) = lang
        && rng.chance(20)
    {
        words.push(lang.suffix.to_string());
    }
    // No word twice ("gh-workflow-workflow").
    let mut seen = BTreeSet::new();
    let part = words
        .iter()
        .flat_map(|w| w.split('-'))
        .filter(|w| seen.insert(*w))
        .collect::<Vec<_>>()
        .join("-");
    // A leading digit cannot happen (every word list starts with a letter), but keep the rule explicit.
    if part.starts_with(|c: char| c.is_ascii_digit()) {
        format!("pack-{part}")
    } else {
        part
    }
}

/// A near-duplicate of an existing name part: plural, joined words or a suffix.
fn near_duplicate(rng: &mut Rng, part: &str) -> String {
    match rng.below(3) {
        0 if !part.ends_with('s') => format!("{part}s"),
        1 if part.contains('-') => {
            let i = part.find('-').unwrap_or(0);
            format!("{}{}", &part[..i], &part[i + 1..])
        }
        _ => format!("{part}-{}", rng.pick(NEAR_DUP_SUFFIXES)),
    }
}

/// "a" or "an" before `phrase` (by its first word, with the acronyms the tables use).
fn article(phrase: &str) -> &'static str {
    let word = phrase.split(' ').next().unwrap_or(phrase);
    const AN: &[&str] = &["RDF", "SQL", "ML", "LLM", "HTTP", "RBAC", "RTOS", "mTLS", "nginx"];
    if AN.contains(&word) {
        "an"
    } else if word.starts_with("uni") {
        "a"
    } else if word.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [a] => a.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn description(rng: &mut Rng, topic: &Topic, features: &[&str], lang: Option<&Lang>, simple: bool) -> String {
    let phrase = *rng.pick(topic.phrases);
    let adj = *rng.pick(DESC_ADJECTIVES);
    let lang_part = lang
        .map(|l| format!(" for {} {}", l.display, rng.pick(l.nouns)))
        .unwrap_or_default();
    let two = list(&features[..features.len().min(2)]);
    let all = list(features);
    let mut s = if simple {
        format!("{} {adj} {phrase}{lang_part} with {two}", article(adj))
    } else {
        match rng.below(6) {
            0 => format!("{} {adj} {phrase}{lang_part} with {two}", article(adj)),
            1 => format!("{phrase}{lang_part} with {all} preconfigured"),
            2 => format!(
                "Generates {} {phrase}{lang_part} with {two} out of the box",
                article(phrase)
            ),
            3 => format!(
                "{adj} starter for {} {phrase}{lang_part}, including {two}",
                article(phrase)
            ),
            4 => format!(
                "Scaffolding for {} {adj} {phrase}{lang_part} that covers {all}",
                article(adj)
            ),
            _ => format!("{} {phrase} template{lang_part} focused on {two}", article(phrase)),
        }
    };
    if !simple {
        if rng.chance(12)
            && let Some(other) = topic_by_name(rng.word(topic.related))
        {
            s.push_str(&format!(", plus {} integration", rng.pick(other.phrases)));
        }
        if rng.chance(30) {
            s.push_str(", ");
            s.push_str(rng.word(DESC_FILLERS));
        }
    }
    s.push('.');
    capitalize(&s)
}

fn keywords(rng: &mut Rng, topic_index: usize, features: &[&str], lang: Option<&Lang>) -> Vec<String> {
    let topic = &TOPICS[topic_index];
    let cores = 1 + rng.below(topic.core.len());
    let mut kw: Vec<&str> = distinct(rng, topic.core, cores, &[]);
    kw.extend_from_slice(features);
    if let Some(l) = lang
        && rng.chance(70)
    {
        kw.push(l.key);
    }
    if rng.chance(50) {
        let extra = 1 + rng.below(2);
        kw.extend(distinct(rng, topic.vocab, extra, features));
    }
    if rng.chance(15) {
        kw.push(topic.category);
    }
    if rng.chance(10) {
        // Noise: a word from some other topic.
        let other = &TOPICS[(topic_index + 1 + rng.below(TOPICS.len() - 1)) % TOPICS.len()];
        kw.push(*rng.pick(other.vocab));
    }
    if rng.chance(20) {
        kw.push(*rng.pick(GENERIC_KEYWORDS));
    }
    let mut seen = BTreeSet::new();
    kw.retain(|w| seen.insert(*w));
    kw.truncate(8);
    kw.into_iter().map(str::to_string).collect()
}

fn varied_version(rng: &mut Rng) -> String {
    let major = match rng.below(100) {
        0..=29 => 0,
        30..=74 => 1,
        75..=89 => 2,
        _ => 3,
    };
    let minor = rng.below(16);
    let patch = rng.below(10);
    let minor = if major == 0 && minor == 0 { 1 } else { minor };
    format!("{major}.{minor}.{patch}")
}

/// Per-pack generation state that later versions need.
struct Generated {
    spec: PackSpec,
    topic: usize,
    lang: Option<&'static Lang>,
}

fn generate_inner(packages: usize, seed: u64) -> Vec<Generated> {
    let mut rng = Rng::new(mix(&[seed, 0x5041_434B]));
    let spaces = namespaces(seed);
    let ns_cumulative = cumulative((0..spaces.len() as u64).map(|i| 100_000 / (i + 10)));
    let topic_cumulative = cumulative(TOPICS.iter().map(|t| t.weight));
    let license_cumulative = cumulative(LICENSES.iter().map(|l| l.1));
    let mut taken: HashSet<String> = HashSet::with_capacity(packages);
    let mut parts_by_topic: Vec<Vec<String>> = vec![Vec::new(); TOPICS.len()];
    let mut out = Vec::with_capacity(packages);
    for _ in 0..packages {
        let ns = &spaces[rng.weighted(&ns_cumulative)];
        let topic_index = if rng.chance(40) {
            *rng.pick(&ns.favourites)
        } else {
            rng.weighted(&topic_cumulative)
        };
        let topic = &TOPICS[topic_index];
        let lang = if !topic.langs.is_empty() && rng.chance(55) {
            lang_by_key(rng.word(topic.langs))
        } else {
            None
        };
        let feature_count = 2 + rng.below(2);
        let features = features(&mut rng, topic.vocab, feature_count);
        let mut part = String::new();
        for attempt in 0..40 {
            let existing = &parts_by_topic[topic_index];
            part = if attempt < 30 && !existing.is_empty() && rng.chance(5) {
                // A fork (same name in another namespace) or a near duplicate.
                let base = rng.pick(existing).clone();
                if rng.chance(50) {
                    base
                } else {
                    near_duplicate(&mut rng, &base)
                }
            } else {
                name_part(&mut rng, topic, &ns.name, &features, lang)
            };
            if is_valid_part(&part) && !taken.contains(&format!("{}/{part}", ns.name)) {
                break;
            }
        }
        let mut name = format!("{}/{part}", ns.name);
        let mut n = 2;
        while !is_valid_part(&part) || taken.contains(&name) {
            part = format!("{}-{n}", topic.core.join("-"));
            name = format!("{}/{part}", ns.name);
            n += 1;
        }
        taken.insert(name.clone());
        parts_by_topic[topic_index].push(part);
        let mut desc = description(&mut rng, topic, &features, lang, false);
        if desc.len() > 200 {
            desc = description(&mut rng, topic, &features[..2], None, true);
        }
        let keywords = keywords(&mut rng, topic_index, &features, lang);
        let quality = 20 + ((rng.below(81) + rng.below(81)) / 2) as u32;
        let license = LICENSES[rng.weighted(&license_cumulative)].0.to_string();
        let version = varied_version(&mut rng);
        out.push(Generated {
            spec: PackSpec {
                name,
                version,
                description: desc,
                license,
                keywords,
                category: topic.category.to_string(),
                quality,
                topic: topic.name.to_string(),
            },
            topic: topic_index,
            lang,
        });
    }
    out
}

/// `packages` distinct packages, one version each (varied `x.y.z`), seeded:
/// the same `(packages, seed)` gives the same catalog on every run and
/// platform, and `generate(n, seed)` is a prefix of `generate(m, seed)` for `n <= m`.
pub fn generate(packages: usize, seed: u64) -> Vec<PackSpec> {
    generate_inner(packages, seed).into_iter().map(|g| g.spec).collect()
}

/// Releases for benches: the packages of `generate(packages, seed)`, each with
/// `versions` versions `1.0.0, 1.1.0, 1.2.0, ...`, grouped by package in
/// ascending version order. Version `1.0.0` has the generated description;
/// later versions may reword it slightly (a new feature, another adjective).
pub fn generate_releases(packages: usize, versions: usize, seed: u64) -> Vec<PackSpec> {
    let mut out = Vec::with_capacity(packages.saturating_mul(versions));
    for (i, g) in generate_inner(packages, seed).into_iter().enumerate() {
        let topic = &TOPICS[g.topic];
        for v in 0..versions {
            let mut spec = g.spec.clone();
            spec.version = format!("1.{v}.0");
            if v > 0 {
                let mut rng = Rng::new(mix(&[seed, i as u64, v as u64]));
                if rng.chance(60) {
                    let feature_count = 2 + rng.below(2);
                    let features = features(&mut rng, topic.vocab, feature_count);
                    let reworded = description(&mut rng, topic, &features, g.lang, false);
                    if reworded.len() <= 200 {
                        spec.description = reworded;
                    }
                }
            }
            out.push(spec);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Labels

/// At most this many labelled packs per query.
const MAX_LABELS: usize = 50;
/// A query is only used when at most this many packs are "strong" matches
/// (grade 3, or all query words in the name), so that none of them is cut by
/// [`MAX_LABELS`].
const MAX_STRONG: usize = 40;

const STOPWORDS: &[&str] = &["a", "an", "and", "for", "in", "of", "the", "to", "with"];

/// Seed of the query sampler (independent of the catalog seed).
const LABEL_SEED: u64 = 0x1ABE_11ED_0000_0100;

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

fn query_words(query: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    tokens(query)
        .into_iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()) && seen.insert(w.clone()))
        .collect()
}

/// A pack as the labeller sees it.
struct Doc<'a> {
    spec: &'a PackSpec,
    /// The name after the '/'.
    part: &'a str,
    name: BTreeSet<String>,
    keywords: BTreeSet<String>,
    description: BTreeSet<String>,
    topic: usize,
}

impl<'a> Doc<'a> {
    fn new(spec: &'a PackSpec) -> Self {
        let part = spec.name.split_once('/').map_or(spec.name.as_str(), |(_, p)| p);
        Doc {
            spec,
            part,
            name: tokens(part).into_iter().collect(),
            keywords: spec.keywords.iter().flat_map(|k| tokens(k)).collect(),
            description: tokens(&spec.description).into_iter().collect(),
            topic: TOPICS.iter().position(|t| t.name == spec.topic).unwrap_or(usize::MAX),
        }
    }

    fn hits(set: &BTreeSet<String>, words: &[String]) -> usize {
        words.iter().filter(|w| set.contains(*w)).count()
    }

    fn in_name(&self, words: &[String]) -> usize {
        Self::hits(&self.name, words)
    }

    fn in_name_or_keywords(&self, words: &[String]) -> usize {
        words
            .iter()
            .filter(|w| self.name.contains(*w) || self.keywords.contains(*w))
            .count()
    }

    fn anywhere(&self, words: &[String]) -> usize {
        words
            .iter()
            .filter(|w| self.name.contains(*w) || self.keywords.contains(*w) || self.description.contains(*w))
            .count()
    }

    /// Textual evidence, used only to order packs within a grade when capping.
    fn evidence(&self, words: &[String]) -> usize {
        4 * self.in_name(words) + 2 * Self::hits(&self.keywords, words) + Self::hits(&self.description, words)
    }

    fn related_to(&self, topic: usize) -> bool {
        self.topic < TOPICS.len()
            && topic < TOPICS.len()
            && (TOPICS[topic].related.contains(&TOPICS[self.topic].name)
                || TOPICS[self.topic].related.contains(&TOPICS[topic].name))
    }
}

struct Scored<'a> {
    doc: &'a Doc<'a>,
    grade: u8,
    /// Must be labelled whatever the cap: grade 3, or a full match on the name.
    strong: bool,
    evidence: usize,
}

/// Orders graded packs (strong first, then grade, evidence, quality, name),
/// caps them at [`MAX_LABELS`], and rejects the query when it would not make a
/// fair test: no pack at grade 3 (`need_top`) or 2, fewer than 3 labels, or more
/// strong matches than [`MAX_STRONG`].
fn finish(mut scored: Vec<Scored<'_>>, need_top: bool) -> Option<BTreeMap<String, u8>> {
    let strong = scored.iter().filter(|s| s.strong).count();
    let top = scored.iter().map(|s| s.grade).max().unwrap_or(0);
    if strong > MAX_STRONG || scored.len() < 3 || top < if need_top { 3 } else { 2 } {
        return None;
    }
    scored.sort_by(|a, b| {
        b.strong
            .cmp(&a.strong)
            .then(b.grade.cmp(&a.grade))
            .then(b.evidence.cmp(&a.evidence))
            .then(b.doc.spec.quality.cmp(&a.doc.spec.quality))
            .then(a.doc.spec.name.cmp(&b.doc.spec.name))
    });
    scored.truncate(MAX_LABELS);
    Some(scored.into_iter().map(|s| (s.doc.spec.name.clone(), s.grade)).collect())
}

/// Topic and multi-word queries: the query names topic `topic` (its phrase, an
/// alternate stem, or the phrase plus a feature word).
///
/// - 3: the pack is of the topic and every query word is in its name
///   (`name_or_keywords`: in its name or keywords; used for multi-word queries);
/// - 2: of the topic, and every query word appears somewhere (name, keywords, description);
/// - 1: of the topic otherwise; or of another topic with every query word in
///   its name or keywords (related topic: anywhere).
fn grade_topic<'a>(docs: &'a [Doc<'a>], words: &[String], topic: usize, name_or_keywords: bool) -> Vec<Scored<'a>> {
    let n = words.len();
    docs.iter()
        .filter_map(|d| {
            let full_name = d.in_name(words) == n;
            let grade = if d.topic == topic {
                let top = if name_or_keywords {
                    d.in_name_or_keywords(words) == n
                } else {
                    full_name
                };
                if top {
                    3
                } else if d.anywhere(words) == n {
                    2
                } else {
                    1
                }
            } else if d.in_name_or_keywords(words) == n || (d.related_to(topic) && d.anywhere(words) == n) {
                1
            } else {
                return None;
            };
            Some(Scored {
                doc: d,
                grade,
                strong: grade == 3 || full_name,
                evidence: d.evidence(words),
            })
        })
        .collect()
}

/// Name queries. With a namespace (`full`): that pack 3, the same name in
/// other namespaces 2. Without: every pack with that exact name 3. Then packs
/// whose name has all the name's words: 2 if of the same topic, else 1; and
/// packs of the same topic sharing at least half of them: 1.
fn grade_name<'a>(docs: &'a [Doc<'a>], target: &Doc<'_>, full: bool) -> Vec<Scored<'a>> {
    let words: Vec<String> = target.name.iter().cloned().collect();
    let n = words.len();
    docs.iter()
        .filter_map(|d| {
            let shared = d.in_name(&words);
            let (grade, strong) = if d.spec.name == target.spec.name {
                (3, true)
            } else if d.part == target.part {
                (if full { 2 } else { 3 }, true)
            } else if shared == n {
                (if d.topic == target.topic { 2 } else { 1 }, true)
            } else if d.topic == target.topic && shared > 0 && 2 * shared >= n {
                (1, false)
            } else {
                return None;
            };
            Some(Scored {
                doc: d,
                grade,
                strong,
                evidence: d.evidence(&words),
            })
        })
        .collect()
}

/// Whether `word` belongs to the vocabulary of `topic` (core, features, languages).
fn owned_by(topic: usize, word: &str) -> bool {
    TOPICS
        .get(topic)
        .is_some_and(|t| t.core.contains(&word) || t.vocab.contains(&word) || t.langs.contains(&word))
}

/// Keyword queries (one word `k`): 3 when `k` is one of the pack's keywords and
/// in its name and belongs to its topic's vocabulary; 2 when it is a keyword or
/// in the name and belongs to the topic; 1 when it is a keyword or in the name
/// but foreign to the topic (noise), or only in the description.
fn grade_keyword<'a>(docs: &'a [Doc<'a>], k: &str) -> Vec<Scored<'a>> {
    let words = vec![k.to_string()];
    docs.iter()
        .filter_map(|d| {
            let in_kw = d.keywords.contains(k);
            let in_name = d.name.contains(k);
            let owned = owned_by(d.topic, k);
            let grade = match (in_kw, in_name, owned) {
                (true, true, true) => 3,
                (true, _, true) | (_, true, true) => 2,
                (true, _, false) | (_, true, false) => 1,
                _ if d.description.contains(k) => 1,
                _ => return None,
            };
            Some(Scored {
                doc: d,
                grade,
                strong: grade == 3 || in_name,
                evidence: d.evidence(&words),
            })
        })
        .collect()
}

/// Category queries (the category word `c`): packs of that category are 3 when
/// `c` is in the name, 2 when it is a keyword, 1 otherwise; packs of other
/// categories with `c` in the name or keywords are 1.
fn grade_category<'a>(docs: &'a [Doc<'a>], c: &str) -> Vec<Scored<'a>> {
    let words = vec![c.to_string()];
    docs.iter()
        .filter_map(|d| {
            let in_name = d.name.contains(c);
            let in_kw = d.keywords.contains(c);
            let grade = if d.spec.category == c {
                if in_name {
                    3
                } else if in_kw {
                    2
                } else {
                    1
                }
            } else if in_name || in_kw {
                1
            } else {
                return None;
            };
            Some(Scored {
                doc: d,
                grade,
                strong: grade == 3 || in_name,
                evidence: d.evidence(&words),
            })
        })
        .collect()
}

/// One edit (substitution, deletion or insertion, never on the first letter)
/// in one word of at least 5 letters; the misspelt word is not a word of the
/// catalog. None if the query has no such word.
fn misspell(rng: &mut Rng, query: &str, catalog_words: &BTreeSet<String>) -> Option<String> {
    let mut spans = Vec::new();
    let bytes = query.as_bytes();
    // In `namespace/name`, only the name is misspelt.
    let mut i = query.find('/').map_or(0, |slash| slash + 1);
    while i < bytes.len() {
        if bytes[i].is_ascii_lowercase() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if query[start..i].chars().all(|c| c.is_ascii_lowercase()) && i - start >= 5 {
                spans.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    if spans.is_empty() {
        return None;
    }
    for _ in 0..50 {
        let (start, end) = *rng.pick(&spans);
        let word: Vec<u8> = query.as_bytes()[start..end].to_vec();
        let pos = 1 + rng.below(word.len() - 1);
        let letter = b'a' + rng.below(26) as u8;
        let mut typo = word.clone();
        match rng.below(3) {
            0 => typo[pos] = letter,
            1 => {
                typo.remove(pos);
            }
            _ => typo.insert(pos, letter),
        }
        let typo = String::from_utf8(typo).ok()?;
        if typo.as_bytes() == word.as_slice() || catalog_words.contains(&typo) {
            continue;
        }
        return Some(format!("{}{typo}{}", &query[..start], &query[end..]));
    }
    None
}

struct Draft {
    query: String,
    kind: &'static str,
    relevant: BTreeMap<String, u8>,
}

impl Draft {
    fn labelled(self) -> LabelledQuery {
        LabelledQuery {
            query: self.query,
            kind: self.kind.to_string(),
            relevant: self.relevant,
        }
    }
}

/// How many queries of each kind the labelled set has.
const TOPIC_QUERIES: usize = 20;
const NAME_QUERIES: usize = 20;
const MULTI_WORD_QUERIES: usize = 18;
const KEYWORD_QUERIES: usize = 15;
const CATEGORY_QUERIES: usize = 7;
/// Typo queries, by the kind of their correctly spelt source.
const TYPO_TOPIC: usize = 7;
const TYPO_NAME: usize = 7;
const TYPO_MULTI_WORD: usize = 6;

/// Builds the labelled query set for `catalog` from its ground truth (the
/// hidden `topic`, name words, keywords, category), never from a search engine.
/// This is how `testnet/data/search_queries.json` was made, once, from
/// `generate(10_000, SEARCH_QUALITY_SEED)`; it returns 100 queries for that
/// catalog (fewer if a catalog cannot supply them).
///
/// Query kinds and grades (1..=3; at most 50 labelled packs per query; a query
/// is only used if it has at most 40 "strong" matches, so none is cut by the cap):
///
/// - `topic` (20): a topic phrase ("kubernetes operator") or one of its alternate
///   stems ("k8s operator"). 3 = of the topic with every query word in the name;
///   2 = of the topic with every word somewhere; 1 = rest of the topic, or other
///   packs with every word in name/keywords (related topics: anywhere).
/// - `multi-word` (18): topic words plus a feature or language word
///   ("react component form", "terraform module for aws"). As `topic`, but grade
///   3 needs every word in the name or keywords.
/// - `exact-name` (20): `namespace/name`, a bare name, or a name with spaces.
///   The pack itself (or every pack with that bare name) 3, forks 2, same-topic
///   packs containing the name's words 2, partial overlaps 1.
/// - `keyword` (15, plus the places categories leave): a keyword used by 4..=40 packs. 3 = keyword, in the name,
///   and part of the pack's topic vocabulary; 2 = keyword or in the name, of the
///   topic vocabulary; 1 = noise keyword or description only.
/// - `category-term` (up to 7): a category word. 3 = of the category with the
///   word in the name; 2 = as a keyword; 1 = rest of the category, or other packs
///   using the word. Categories whose word is also a topic word ("data", "cli",
///   "ml", ...) have too many strong matches and are skipped; for the committed
///   set that leaves 5 (web, db, cloud, devops, tooling).
/// - `typo` (20): one edit in a word of >= 5 letters of a topic (7), name (7) or
///   multi-word (6) query not otherwise in the set; same labels as the correctly
///   spelt query.
///
/// When the cap cuts, strong matches are kept first, then higher grades, then
/// packs with more query words in name, keywords and description, then higher
/// quality. Every pack a query labels with grade 3, and every pack with all the
/// query words in its name, is labelled.
pub fn build_labelled_queries(catalog: &[PackSpec]) -> Vec<LabelledQuery> {
    let docs: Vec<Doc<'_>> = catalog.iter().map(Doc::new).collect();
    let catalog_words: BTreeSet<String> = catalog
        .iter()
        .flat_map(|p| {
            tokens(&p.name)
                .into_iter()
                .chain(p.keywords.iter().flat_map(|k| tokens(k)))
                .chain(tokens(&p.description))
        })
        .collect();
    let mut rng = Rng::new(LABEL_SEED);
    let mut used: BTreeSet<String> = BTreeSet::new();

    // Topic queries: one per topic, in a shuffled order.
    let mut topic_order: Vec<usize> = (0..TOPICS.len()).collect();
    rng.shuffle(&mut topic_order);
    let mut topic_drafts = Vec::new();
    for &t in &topic_order {
        let topic = &TOPICS[t];
        let mut phrases: Vec<String> = topic
            .alt
            .iter()
            .filter(|a| a.contains('-'))
            .map(|a| a.replace('-', " "))
            .collect();
        rng.shuffle(&mut phrases);
        if rng.chance(70) {
            phrases.insert(0, topic.name.to_string());
        } else {
            phrases.push(topic.name.to_string());
        }
        for phrase in phrases {
            let words = query_words(&phrase);
            if let Some(relevant) = finish(grade_topic(&docs, &words, t, false), true)
                && used.insert(phrase.clone())
            {
                topic_drafts.push(Draft {
                    query: phrase,
                    kind: "topic",
                    relevant,
                });
                break;
            }
        }
    }

    // Multi-word queries: topic words plus a feature or language word.
    let mut multi_drafts = Vec::new();
    for _ in 0..5000 {
        if multi_drafts.len() >= MULTI_WORD_QUERIES + TYPO_MULTI_WORD {
            break;
        }
        let t = rng.below(TOPICS.len());
        let topic = &TOPICS[t];
        let mut extras: Vec<&str> = topic.vocab.to_vec();
        extras.extend_from_slice(topic.langs);
        let extra = *rng.pick(&extras);
        if topic.core.contains(&extra) {
            continue;
        }
        let core = topic.core.join(" ");
        let query = match rng.below(10) {
            0..=4 => format!("{core} {extra}"),
            5..=7 => format!("{extra} {core}"),
            _ => format!("{core} for {extra}"),
        };
        let words = query_words(&query);
        if used.contains(&query) {
            continue;
        }
        if let Some(relevant) = finish(grade_topic(&docs, &words, t, true), true) {
            used.insert(query.clone());
            multi_drafts.push(Draft {
                query,
                kind: "multi-word",
                relevant,
            });
        }
    }

    // Name queries: `namespace/name`, a bare name, or the bare name with spaces.
    let mut name_drafts = Vec::new();
    let mut name_shapes = 0usize;
    for _ in 0..5000 {
        if name_drafts.len() >= NAME_QUERIES + 3 * TYPO_NAME {
            break;
        }
        let target = &docs[rng.below(docs.len())];
        if target.name.len() < 2 {
            continue;
        }
        let shape = name_shapes % 3;
        let (query, full) = match shape {
            0 => (target.spec.name.clone(), true),
            1 => (target.part.to_string(), false),
            _ => (target.part.replace('-', " "), false),
        };
        if used.contains(&query) {
            continue;
        }
        let forks = docs.iter().filter(|d| d.part == target.part).count();
        if forks > 4 {
            continue;
        }
        if let Some(relevant) = finish(grade_name(&docs, target, full), true) {
            used.insert(query.clone());
            name_drafts.push(Draft {
                query,
                kind: "exact-name",
                relevant,
            });
            name_shapes += 1;
        }
    }

    // Category queries.
    let mut categories: Vec<&str> = CATEGORIES.to_vec();
    rng.shuffle(&mut categories);
    let mut category_drafts = Vec::new();
    for c in categories {
        if category_drafts.len() >= CATEGORY_QUERIES {
            break;
        }
        if used.contains(c) {
            continue;
        }
        if let Some(relevant) = finish(grade_category(&docs, c), true) {
            used.insert(c.to_string());
            category_drafts.push(Draft {
                query: c.to_string(),
                kind: "category-term",
                relevant,
            });
        }
    }

    // Keyword queries: keywords used by 4..=40 packs.
    let mut keyword_freq: BTreeMap<&str, usize> = BTreeMap::new();
    for p in catalog {
        for k in &p.keywords {
            *keyword_freq.entry(k.as_str()).or_default() += 1;
        }
    }
    let mut keyword_pool: Vec<&str> = keyword_freq
        .iter()
        .filter(|&(k, &n)| (4..=40).contains(&n) && k.len() >= 3)
        .map(|(k, _)| *k)
        .collect();
    rng.shuffle(&mut keyword_pool);
    // Categories that cannot make a fair query leave their places to keywords.
    let keyword_target = KEYWORD_QUERIES + CATEGORY_QUERIES - category_drafts.len();
    let mut keyword_drafts = Vec::new();
    for k in keyword_pool {
        if keyword_drafts.len() >= keyword_target {
            break;
        }
        if used.contains(k) {
            continue;
        }
        if let Some(relevant) = finish(grade_keyword(&docs, k), false) {
            used.insert(k.to_string());
            keyword_drafts.push(Draft {
                query: k.to_string(),
                kind: "keyword",
                relevant,
            });
        }
    }

    // Typo queries from sources not otherwise in the set.
    let mut typo_drafts = Vec::new();
    let mut typo_from = |pool: Vec<Draft>, want: usize, rng: &mut Rng| {
        let mut got = 0;
        for d in pool {
            if got == want {
                break;
            }
            if let Some(query) = misspell(rng, &d.query, &catalog_words)
                && !used.contains(&query)
            {
                used.insert(query.clone());
                typo_drafts.push(Draft {
                    query,
                    kind: "typo",
                    relevant: d.relevant,
                });
                got += 1;
            }
        }
    };
    let topic_rest = topic_drafts.split_off(TOPIC_QUERIES.min(topic_drafts.len()));
    let multi_rest = multi_drafts.split_off(MULTI_WORD_QUERIES.min(multi_drafts.len()));
    let name_rest = name_drafts.split_off(NAME_QUERIES.min(name_drafts.len()));
    typo_from(topic_rest, TYPO_TOPIC, &mut rng);
    typo_from(name_rest, TYPO_NAME, &mut rng);
    typo_from(multi_rest, TYPO_MULTI_WORD, &mut rng);

    topic_drafts
        .into_iter()
        .chain(name_drafts)
        .chain(multi_drafts)
        .chain(keyword_drafts)
        .chain(category_drafts)
        .chain(typo_drafts)
        .map(Draft::labelled)
        .collect()
}

/// The labelled set as committed: one query per line.
pub fn labelled_queries_json(queries: &[LabelledQuery]) -> String {
    let lines: Vec<String> = queries
        .iter()
        .map(|q| {
            format!(
                "  {}",
                serde_json::to_string(q).expect("a LabelledQuery always serializes")
            )
        })
        .collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, u8)]) -> BTreeMap<String, u8> {
        pairs.iter().map(|(n, g)| (n.to_string(), *g)).collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_seed_same_catalog() {
        let a = generate(2_000, 7);
        assert_eq!(a, generate(2_000, 7));
        assert_ne!(a, generate(2_000, 8));
        assert_eq!(generate(500, 7)[..], a[..500]);
        assert_eq!(generate_releases(300, 3, 7), generate_releases(300, 3, 7));
    }

    fn check_specs(specs: &[PackSpec]) {
        for p in specs {
            assert!(is_valid_pack_name(&p.name), "invalid name {}", p.name);
            assert!(
                !p.description.is_empty() && p.description.len() <= 200,
                "{}",
                p.description
            );
            assert!(p.description.ends_with('.'), "{}", p.description);
            assert_eq!(p.description.matches('.').count(), 1, "one sentence: {}", p.description);
            assert!(!p.keywords.is_empty() && p.keywords.len() <= 8, "{:?}", p.keywords);
            for k in &p.keywords {
                assert!(
                    k.starts_with(|c: char| c.is_ascii_lowercase())
                        && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                    "keyword {k}"
                );
            }
            assert!(CATEGORIES.contains(&p.category.as_str()));
            assert!((20..=100).contains(&p.quality));
            assert!(topic_by_name(&p.topic).is_some());
            assert!(LICENSES.iter().any(|l| l.0 == p.license));
            let v: Vec<&str> = p.version.split('.').collect();
            assert_eq!(v.len(), 3, "{}", p.version);
            assert!(v.iter().all(|n| n.parse::<u64>().is_ok()), "{}", p.version);
        }
    }

    #[test]
    fn names_valid_and_unique() {
        let c = generate(SEARCH_QUALITY_PACKAGES, SEARCH_QUALITY_SEED);
        assert_eq!(c.len(), SEARCH_QUALITY_PACKAGES);
        check_specs(&c);
        let unique: HashSet<&str> = c.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(unique.len(), c.len());
        let namespaces: HashSet<&str> = c.iter().filter_map(|p| p.name.split_once('/').map(|x| x.0)).collect();
        assert!(namespaces.len() >= 200, "{} namespaces", namespaces.len());
        let topics: HashSet<&str> = c.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics.len(), TOPICS.len());

        let r = generate_releases(1_000, 3, SEARCH_QUALITY_SEED);
        assert_eq!(r.len(), 3_000);
        check_specs(&r);
        let releases: HashSet<(&str, &str)> = r.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(releases.len(), r.len());
        let packages: HashSet<&str> = r.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(packages.len(), 1_000);
        for chunk in r.chunks(3) {
            assert!(chunk.iter().all(|p| p.name == chunk[0].name));
            assert_eq!(
                chunk.iter().map(|p| p.version.as_str()).collect::<Vec<_>>(),
                ["1.0.0", "1.1.0", "1.2.0"]
            );
        }
        assert!(r.chunks(3).any(|c| c[0].description != c[2].description));
    }

    #[test]
    fn tables_are_consistent() {
        for t in TOPICS {
            assert_eq!(t.name, t.core.join(" "));
            assert!(CATEGORIES.contains(&t.category), "{}", t.name);
            assert!(
                t.vocab.len() >= 5 && !t.phrases.is_empty() && !t.alt.is_empty(),
                "{}",
                t.name
            );
            for r in t.related {
                assert!(topic_by_name(r).is_some(), "{} -> {r}", t.name);
            }
            for l in t.langs {
                assert!(lang_by_key(l).is_some(), "{} -> {l}", t.name);
            }
            for a in t.alt {
                assert!(is_valid_part(a), "{a}");
            }
        }
        assert!((40..=60).contains(&TOPICS.len()));
        let ns = namespaces(SEARCH_QUALITY_SEED);
        assert_eq!(ns.len(), NAMESPACE_COUNT);
        assert!(ns.iter().all(|n| is_valid_part(&n.name)));
    }

    #[test]
    fn ndcg_hand_computed() {
        let rel = labels(&[("a", 3), ("b", 2), ("c", 1)]);
        assert!((ndcg_at(10, &names(&["a", "b", "c"]), &rel) - 1.0).abs() < 1e-12);
        // Reversed: DCG = 1/log2(2) + 3/log2(3) + 7/log2(4) = 1 + 1.8927892607 + 3.5;
        // IDCG = 7 + 3/log2(3) + 1/2 = 9.3927892607; NDCG = 0.68060606.
        let reversed = ndcg_at(10, &names(&["c", "b", "a"]), &rel);
        assert!(
            (reversed - 6.392_789_260_714_372 / 9.392_789_260_714_372).abs() < 1e-12,
            "{reversed}"
        );
        assert!((reversed - 0.680_606_06).abs() < 1e-8, "{reversed}");
        // Unlabelled results are worth nothing; k cuts the list and the ideal.
        let one = ndcg_at(1, &names(&["x", "a"]), &rel);
        assert_eq!(one, 0.0);
        let k2 = ndcg_at(2, &names(&["x", "a"]), &rel);
        assert!(
            (k2 - (7.0 / 3f64.log2()) / (7.0 + 3.0 / 3f64.log2())).abs() < 1e-12,
            "{k2}"
        );
        // A repeated name counts once.
        let dup = ndcg_at(10, &names(&["a", "a", "b", "c"]), &rel);
        assert!(dup < 1.0);
        assert_eq!(ndcg_at(10, &names(&["a"]), &BTreeMap::new()), 0.0);
        assert_eq!(ndcg_at(10, &[], &rel), 0.0);
        assert_eq!(ndcg_at(0, &names(&["a"]), &rel), 0.0);
    }

    #[test]
    fn labelled_set_parses_and_refers_to_the_catalog() {
        let queries = labelled_queries();
        assert_eq!(queries.len(), 100);
        let catalog = generate(SEARCH_QUALITY_PACKAGES, SEARCH_QUALITY_SEED);
        let names: HashSet<&str> = catalog.iter().map(|p| p.name.as_str()).collect();
        let mut seen = HashSet::new();
        for q in &queries {
            assert!(seen.insert(q.query.as_str()), "duplicate query {}", q.query);
            assert!(!q.relevant.is_empty() && q.relevant.len() <= MAX_LABELS, "{}", q.query);
            assert!(q.relevant.values().all(|g| (1..=3).contains(g)), "{}", q.query);
            for n in q.relevant.keys() {
                assert!(names.contains(n.as_str()), "{} labels unknown {n}", q.query);
            }
        }
        let typos = queries.iter().filter(|q| q.kind == "typo").count();
        assert_eq!(typos, 20);
        assert!(SEARCH_QUERIES_JSON.len() < 300_000);
    }

    #[test]
    fn labelled_set_is_reproducible() {
        let catalog = generate(SEARCH_QUALITY_PACKAGES, SEARCH_QUALITY_SEED);
        let built = build_labelled_queries(&catalog);
        assert_eq!(
            labelled_queries_json(&built),
            SEARCH_QUERIES_JSON,
            "rerun the write_search_queries test"
        );
    }

    /// Regenerates `testnet/data/search_queries.json` (or `$SEARCH_QUERIES_OUT`).
    /// Run once when the catalog generator changes; never to tune a search engine.
    #[test]
    #[ignore]
    fn write_search_queries() {
        let catalog = generate(SEARCH_QUALITY_PACKAGES, SEARCH_QUALITY_SEED);
        let built = build_labelled_queries(&catalog);
        assert_eq!(built.len(), 100);
        let path = std::env::var("SEARCH_QUERIES_OUT")
            .unwrap_or_else(|_| format!("{}/{SEARCH_QUERIES_PATH}", env!("CARGO_MANIFEST_DIR")));
        std::fs::write(&path, labelled_queries_json(&built)).expect("write the labelled set");
    }
}
