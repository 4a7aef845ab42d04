//! The web UI's routes: read-only pages on the API address, rendered by
//! [`crate::web`]. Org packs show only to visitors with the token, given
//! once on `/login` and kept in an HttpOnly, SameSite=Strict cookie that
//! only these pages read (the JSON API's writes still need the bearer
//! token, so a page elsewhere cannot act through the cookie).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState, has_token, is_org, pack_name, token_matches};
use crate::web;

/// The cookie the login page sets.
const COOKIE: &str = "packfed_token";

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(search))
        .route("/packs/{ns}/{name}", get(pack))
        .route("/quarantine", get(quarantine))
        .route("/peers", get(peers))
        .route("/governance", get(governance))
        .route("/policy", get(policy))
        .route("/learn", get(learn))
        .route("/login", get(login_form).post(login))
}

/// The bearer token, or the login cookie: this node's own users.
fn org_visitor(s: &ApiState, headers: &HeaderMap) -> bool {
    if has_token(s, headers) {
        return true;
    }
    if s.node.config.api.exposed() {
        return false;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))
        .any(|t| token_matches(t.as_bytes(), s.token.as_bytes()))
}

fn page(html: String) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(html),
    )
        .into_response()
}

async fn search(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(form): Query<web::SearchForm>,
) -> ApiResult<Response> {
    use crate::search::{self, catalog::Filters, federated::Fanout};
    let org = org_visitor(&s, &headers);
    let lower = |v: &str| (!v.is_empty()).then(|| v.to_ascii_lowercase());
    let hits = if form.q.is_empty()
        && form.category.is_empty()
        && form.license.is_empty()
        && form.tier.is_empty()
        && form.attested.is_empty()
    {
        Vec::new()
    } else {
        let query = search::LocalQuery {
            text: form.q.clone(),
            limit: 25,
            filters: Filters {
                category: lower(&form.category),
                license: lower(&form.license),
                tier: lower(&form.tier),
                attested: search::catalog::kind_bit(&form.attested),
                include_quarantined: form.include_quarantined.is_some(),
                all_versions: false,
                include_org: org,
            },
        };
        let resp = search::federated::search(
            &s.node,
            s.search.as_ref(),
            None,
            query,
            Fanout::Local,
            search::federated::DEFAULT_TIMEOUT,
            false,
        )
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "search_unavailable", e.to_string()))?;
        let mut hits = resp.results;
        for h in &mut hits {
            h.deprecated = s.node.deprecation(&h.name, &h.version)?.map(|d| d.message);
        }
        hits
    };
    let results = web::results(&form.q, &hits);
    if form.fragment.is_some() {
        return Ok(page(results.into_string()));
    }
    Ok(page(web::search_page(&form, results, org)))
}

async fn pack(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let full = pack_name(&ns, &name)?;
    let org = org_visitor(&s, &headers);
    let state = s.clone();
    let html = tokio::task::spawn_blocking(move || -> ApiResult<Option<String>> {
        let node = &state.node;
        let entries: Vec<_> = node
            .versions(&full)?
            .into_iter()
            .filter(|e| org || !is_org(e))
            .collect();
        let Some(latest) = entries.iter().find(|e| !e.yanked).or(entries.first()) else {
            return Ok(None);
        };
        let versions: Vec<_> = entries
            .iter()
            .map(|e| crate::node::ReleaseView::judged(node, e))
            .collect();
        let attestations = node.attestation_views(latest)?;
        let hash =
            packfed_protocol::ContentHash::from_slice(&latest.release.content_hash).map_err(ApiError::internal)?;
        let readme = readme_of(&state, &hash);
        let providers = if node.store.has_blob(&hash)? {
            vec![node.peer_id.clone()]
        } else {
            Vec::new()
        };
        let dependents = state
            .dependents
            .of(node, &full, state.search.as_ref().map(|x| x.changes_seen()), org)?;
        let owner = node
            .store
            .namespace_owner(full.split('/').next().unwrap_or_default())?
            .map(|o| o.key().to_hex());
        Ok(Some(web::pack_page(
            &web::PackPage {
                name: &full,
                versions: &versions,
                attestations: &attestations,
                readme,
                dependents: &dependents,
                providers: &providers,
                owner,
            },
            org,
        )))
    })
    .await
    .map_err(ApiError::internal)??;
    match html {
        Some(h) => Ok(page(h)),
        None => Ok((
            StatusCode::NOT_FOUND,
            Html(web::layout(
                "Not found",
                org,
                maud::html! { p { "No pack of that name on this node." } },
            )),
        )
            .into_response()),
    }
}

/// Largest README shown.
const MAX_README_BYTES: u64 = 512 * 1024;

/// The README of an archive this node holds.
fn readme_of(s: &ApiState, hash: &packfed_protocol::ContentHash) -> Option<String> {
    use packfed_protocol::archive::{ReadLimits, read_files};
    let (meta, reader) = s.node.store.blob_reader(hash).ok()?;
    let files = read_files(
        std::io::BufReader::new(reader),
        ReadLimits::for_archive(meta.size),
        |p| {
            ["README.md", "README", "README.txt"]
                .iter()
                .any(|r| p.eq_ignore_ascii_case(r))
        },
        MAX_README_BYTES,
    )
    .ok()?;
    files
        .into_iter()
        .next()
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
}

async fn quarantine(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let org = org_visitor(&s, &headers);
    let node = s.node.clone();
    let rows = tokio::task::spawn_blocking(move || -> ApiResult<Vec<(String, Vec<String>)>> {
        let mut rows = Vec::new();
        for (rid, status) in node.store.quarantined()? {
            let Some(env) = node.store.record(&rid)? else { continue };
            let Ok(r) = env.unchecked_record::<packfed_protocol::pb::Release>() else {
                continue;
            };
            if !org && r.visibility == packfed_protocol::pb::Visibility::Org as i32 {
                continue;
            }
            rows.push((format!("{}@{}", r.name, r.version), status.reasons));
        }
        rows.sort();
        Ok(rows)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(page(web::quarantine_page(&rows, org)))
}

async fn peers(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let org = org_visitor(&s, &headers);
    let connected = match s.net.as_ref() {
        Some(net) => net.peers().await,
        None => Vec::new(),
    };
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for k in s.node.store.known_peers()? {
        let live = connected.iter().find(|p| p.peer_id == k.peer_id);
        rows.push(serde_json::json!({
            "peer_id": k.peer_id,
            "name": live.map(|p| p.name.clone()).unwrap_or_default(),
            "role": live.map(|p| p.role.clone()).unwrap_or_default(),
            "addrs": k.addrs,
            "last_seen": if live.is_some() { "connected now".to_string() } else { crate::project::rfc3339(k.last_seen_ms) },
        }));
    }
    let unknown: Vec<_> = connected
        .iter()
        .filter(|p| !rows.iter().any(|r| r["peer_id"] == p.peer_id.as_str()))
        .collect();
    for p in unknown {
        rows.push(serde_json::json!({"peer_id": p.peer_id, "name": p.name, "role": p.role, "addrs": p.addrs, "last_seen": "connected now"}));
    }
    Ok(page(web::peers_page(
        &serde_json::Value::Array(rows),
        &s.node.config.org.peers,
        org,
    )))
}

async fn governance(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let org = org_visitor(&s, &headers);
    let st = s.node.gov_state(crate::packing::now_ms());
    let proposals: Vec<serde_json::Value> = st
        .proposals
        .iter()
        .rev()
        .map(|p| super::proposal_json(p, false))
        .collect();
    // A policy proposal shows as a diff against the policy in force.
    let current = toml::to_string_pretty(&st.policy).unwrap_or_default();
    let diffs = st
        .proposals
        .iter()
        .filter_map(|p| match &p.action {
            packfed_governance::proposals::Action::ReplacePolicy { policy, .. } => Some((
                hex::encode(p.id),
                web::line_diff(&current, &toml::to_string_pretty(policy).unwrap_or_default()),
            )),
            _ => None,
        })
        .collect();
    Ok(page(web::governance_page(
        &proposals,
        &diffs,
        st.parameters.quorum,
        st.parameters.threshold,
        org,
    )))
}

async fn policy(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let org = org_visitor(&s, &headers);
    let doc = super::policy_json(&s);
    Ok(page(web::json_page(
        "Policy in force",
        "The acceptance rules this node judges releases by: the federation's (changed by governance) plus this node's local restrictions.",
        &doc,
        org,
    )))
}

async fn learn(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let org = org_visitor(&s, &headers);
    let doc = s.node.learn_status(crate::packing::now_ms());
    Ok(page(web::json_page(
        "Learning",
        "Federated learning of search ranking: this node's model, its local samples and the summaries it took from others.",
        &doc,
        org,
    )))
}

async fn login_form() -> Response {
    page(web::login_page(false))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(s): State<Arc<ApiState>>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim();
    if s.node.config.api.exposed() || !token_matches(token.as_bytes(), s.token.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, Html(web::login_page(true))).into_response();
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
            ),
        ],
    )
        .into_response()
}

/// Pack name -> the packs whose visible releases depend on it.
type DependentsMap = std::collections::HashMap<String, Vec<String>>;

/// Who depends on each pack, rebuilt when the store changed.
#[derive(Default)]
pub struct Dependents {
    /// With the change count it was built at and whether org packs count.
    cache: std::sync::Mutex<Option<(u64, bool, DependentsMap)>>,
}

impl Dependents {
    fn of(
        &self,
        node: &crate::node::Node,
        name: &str,
        generation: Option<u64>,
        org: bool,
    ) -> Result<Vec<String>, crate::store::StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = matches!((&*cache, generation), (Some((g, o, _)), Some(now)) if *g == now && *o == org);
        if !fresh {
            let mut map = DependentsMap::new();
            for pack in node.store.package_names(None)? {
                for row in node.store.package_rows(&pack)? {
                    if !row.visible || (!org && row.release.visibility == packfed_protocol::pb::Visibility::Org as i32)
                    {
                        continue;
                    }
                    for d in &row.release.dependencies {
                        let list = map.entry(d.name.clone()).or_default();
                        if !list.contains(&row.release.name) {
                            list.push(row.release.name.clone());
                        }
                    }
                }
            }
            *cache = Some((generation.unwrap_or(0), org, map));
        }
        let mut out = cache
            .as_ref()
            .and_then(|(_, _, m)| m.get(name).cloned())
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }
}
