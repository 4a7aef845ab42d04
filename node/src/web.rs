//! The web UI's pages, rendered on the server from data the API handlers
//! gather (this module does no I/O). Every value goes through maud's
//! escaping; a pack's README is Markdown with its raw HTML shown as text,
//! links limited to http(s), mail and relative targets, and images shown
//! as links (a page loads nothing from anywhere but this node). The only
//! script is the search box's: it asks this node for the results fragment
//! as you type.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use crate::node::{AttestationView, ReleaseView};
use crate::search::fanout::SearchHit;

const STYLE: &str = "
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f7f8fa}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#cfd8ea;text-decoration:none}header a.brand{color:#fff;font-weight:700}
main{max-width:980px;margin:1.2em auto;padding:0 1em}
table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:.35em .6em;border-bottom:1px solid #e3e6ec;text-align:left;vertical-align:top}
.tag{display:inline-block;padding:0 .45em;border-radius:3px;font-size:.85em;background:#e8ecf4}
.bad{background:#fde2e1;color:#8a1c17}.good{background:#dff3e4;color:#1b5e2b}.warn{background:#fff1d6;color:#7a4b00}
code,pre{background:#eef0f4;padding:.1em .3em;border-radius:3px}pre{padding:.6em;overflow:auto}
.hit{background:#fff;padding:.6em .8em;margin:.5em 0;border:1px solid #e3e6ec;border-radius:4px}
.bar{background:#e3e6ec;height:12px;position:relative;width:320px;display:inline-block}
.bar span{position:absolute;top:0;bottom:0;left:0}.mark{position:absolute;top:-3px;bottom:-3px;width:2px;background:#1d2330}
form.filters{display:flex;flex-wrap:wrap;gap:.5em;align-items:center}input[type=search]{flex:1 1 320px;font-size:1.05em;padding:.35em}
.readme{background:#fff;padding:.4em 1.2em;border:1px solid #e3e6ec}
";

/// The page frame: navigation, title, body.
pub fn layout(title: &str, org_visitor: bool, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · packfed" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/" { "packfed" }
                    a href="/" { "Search" }
                    a href="/quarantine" { "Quarantine" }
                    a href="/peers" { "Peers" }
                    a href="/governance" { "Governance" }
                    a href="/policy" { "Policy" }
                    a href="/learn" { "Learning" }
                    @if org_visitor { span.tag.good { "org visitor" } } @else { a href="/login" { "Log in" } }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
    .into_string()
}

/// What the search form holds.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub attested: String,
    #[serde(default)]
    pub include_quarantined: Option<String>,
    /// Only the results (the search box asks for these as you type).
    #[serde(default)]
    pub fragment: Option<String>,
}

const TIERS: [&str; 4] = ["experimental", "beta", "production", "enterprise"];

/// The search page: the form, and the results under it.
pub fn search_page(form: &SearchForm, results: Markup, org_visitor: bool) -> String {
    let kinds = packfed_protocol::records::ATTESTATION_KINDS;
    let body = html! {
        form.filters #search method="get" action="/" {
            input type="search" name="q" value=(form.q) placeholder="Search packs: a name, its first letters, keywords" autofocus autocomplete="off";
            input name="category" value=(form.category) placeholder="category" size="10";
            input name="license" value=(form.license) placeholder="license" size="10";
            select name="tier" {
                option value="" { "any tier" }
                @for t in TIERS { option value=(t) selected[form.tier == t] { (t) } }
            }
            select name="attested" {
                option value="" { "attested by any" }
                @for k in kinds { option value=(k) selected[form.attested == k] { (k) } }
            }
            label { input type="checkbox" name="include_quarantined" value="1" checked[form.include_quarantined.is_some()]; " quarantined too" }
            button { "Search" }
        }
        div #results { (results) }
        script { (PreEscaped(SEARCH_SCRIPT)) }
    };
    layout("Search", org_visitor, body)
}

/// Fetches the results fragment as the user types (debounced) and swaps it in.
const SEARCH_SCRIPT: &str = r#"
(function(){
  var f=document.getElementById('search'),r=document.getElementById('results'),t=null,n=0;
  function go(){
    var p=new URLSearchParams(new FormData(f));p.set('fragment','1');var mine=++n;
    fetch('/?'+p.toString(),{credentials:'same-origin'}).then(function(x){return x.text()}).then(function(h){
      if(mine===n){r.innerHTML=h;p.delete('fragment');history.replaceState(null,'','/?'+p.toString());}
    });
  }
  f.addEventListener('input',function(){clearTimeout(t);t=setTimeout(go,120);});
  f.addEventListener('submit',function(e){e.preventDefault();go();});
})();
"#;

/// Search results (the fragment the script swaps in).
pub fn results(query: &str, hits: &[SearchHit]) -> Markup {
    html! {
        @if hits.is_empty() {
            @if !query.is_empty() { p { "No pack matches " code { (query) } "." } }
        } @else {
            p { (hits.len()) " results" }
            @for h in hits {
                div.hit data-id=(h.id) {
                    a href={ "/packs/" (h.name) } { strong { (h.name) } } " " (h.version) " "
                    span.tag { (h.tier) " · quality " (h.quality) }
                    @if h.status != "accepted" { " " span.tag.bad { (h.status) } }
                    @if h.attestations > 0 { " " span.tag.good { (h.attestations) " attesters" } }
                    @if let Some(d) = &h.deprecated { " " span.tag.warn { "deprecated: " (d) } }
                    br;
                    (h.description)
                    br;
                    small { (h.category) " · " (h.license) }
                }
            }
        }
    }
}

/// A pack's README as safe HTML: raw HTML becomes text, links keep only
/// safe schemes, images become links.
pub fn markdown(text: &str) -> Markup {
    use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};
    let safe = |url: &CowStr<'_>| -> CowStr<'static> {
        let lower = url.trim().to_ascii_lowercase();
        let scheme = lower.split_once(':').map(|(s, _)| s);
        match scheme {
            None | Some("http" | "https" | "mailto") => CowStr::from(url.to_string()),
            // A colon after a slash or '#' is a path, not a scheme.
            Some(s) if s.contains('/') || s.contains('#') || s.contains('?') => CowStr::from(url.to_string()),
            Some(_) => CowStr::from("#".to_string()),
        }
    };
    let events = Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe(&dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            dest_url, title, id, ..
        }) => Event::Start(Tag::Link {
            link_type: pulldown_cmark::LinkType::Inline,
            dest_url: safe(&dest_url),
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        other => other,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    PreEscaped(out)
}

/// Everything the pack page shows.
pub struct PackPage<'a> {
    pub name: &'a str,
    /// Newest first.
    pub versions: &'a [ReleaseView],
    pub attestations: &'a [AttestationView],
    pub readme: Option<String>,
    pub dependents: &'a [String],
    pub providers: &'a [String],
    pub owner: Option<String>,
}

pub fn pack_page(p: &PackPage<'_>, org_visitor: bool) -> String {
    let Some(latest) = p.versions.iter().find(|v| !v.yanked).or(p.versions.first()) else {
        return layout(
            p.name,
            org_visitor,
            html! { p { "No release of this pack on this node." } },
        );
    };
    let body = html! {
        p { (latest.description) }
        p {
            span.tag { (latest.quality.tier) " · quality " (latest.quality.score) }
            " " span.tag { (latest.license) }
            @if latest.status != "accepted" { " " span.tag.bad { "quarantined" } }
            @if let Some(d) = &latest.deprecated { " " span.tag.warn { "deprecated: " (d.message) @if let Some(r) = &d.replacement { " (use " (r) ")" } } }
        }
        p { "Install: " code #install { "packfed install " (latest.name) "@" (latest.version) " --to DIR" } }
        p { small { "Signed record " code { (latest.record_id.to_hex()) } " · archive BLAKE3 " code { (latest.hash.to_hex()) } } }
        @if let Some(o) = &p.owner { p { small { "Namespace owner " code { (o) } } } }
        h2 { "Versions" }
        table #versions {
            tr { th { "version" } th { "status" } th { "published (publisher's clock)" } th { "size" } th { "" } }
            @for v in p.versions {
                tr {
                    td { (v.version) }
                    td { @if v.status == "accepted" { span.tag.good { "accepted" } } @else { span.tag.bad { "quarantined" } br; small { (v.reasons.join("; ")) } } }
                    td { (crate::project::rfc3339(v.published_at_ms)) }
                    td { (v.size) " bytes" }
                    td {
                        @if v.yanked { span.tag.bad { "yanked" } " " }
                        @if let Some(d) = &v.deprecated { span.tag.warn { "deprecated: " (d.message) } }
                    }
                }
            }
        }
        h2 { "Dependencies" }
        @if latest.dependencies.is_empty() { p { "None." } } @else {
            ul { @for d in &latest.dependencies { li { a href={ "/packs/" (d.name) } { (d.name) } " " code { (d.requirement) } } } }
        }
        h2 { "Dependents" }
        @if p.dependents.is_empty() { p { "None on this node." } } @else {
            ul { @for d in p.dependents { li { a href={ "/packs/" (d) } { (d) } } } }
        }
        h2 { "Quality guards" }
        table { @for g in &latest.quality.guards {
            tr { td { @if g.passed { span.tag.good { "pass" } } @else { span.tag.bad { "fail" } } } td { (g.name) " (" (g.weight) ")" } td { (g.detail) } }
        } }
        h2 { "Attestations" }
        @if p.attestations.is_empty() { p { "None." } } @else {
            table { tr { th { "kind" } th { "result" } th { "attester" } th { "role" } th { "counts" } }
                @for a in p.attestations {
                    tr { td { (a.kind) } td { @if a.result == "pass" { span.tag.good { "pass" } } @else { span.tag.bad { "fail" } } }
                         td { code { (&a.attester[..16.min(a.attester.len())]) } } td { (a.role.unwrap_or("none")) }
                         td { @if a.current && a.witnessed_at.is_some() { "yes" } @else { "no" } } }
                }
            }
        }
        h2 { "Providers" }
        @if p.providers.is_empty() { p { "No node known to hold the archive." } } @else { ul { @for pr in p.providers { li { code { (pr) } } } } }
        h2 { "README" }
        @match &p.readme {
            Some(text) => div.readme #readme { (markdown(text)) },
            None => p { "This node does not hold the archive, so the README is not shown." },
        }
    };
    layout(p.name, org_visitor, body)
}

/// Releases the policy quarantines, each with the rules that hold it.
pub fn quarantine_page(rows: &[(String, Vec<String>)], org_visitor: bool) -> String {
    let body = html! {
        @if rows.is_empty() { p { "Nothing is quarantined." } } @else {
            table #quarantine { tr { th { "release" } th { "held by" } }
                @for (id, reasons) in rows {
                    tr { td { a href={ "/packs/" (id.split('@').next().unwrap_or_default()) } { (id) } }
                         td { ul { @for r in reasons { li { (r) } } } } }
                }
            }
        }
    };
    layout("Quarantine", org_visitor, body)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The peers table from `/v1/peers` JSON.
pub fn peers_page(peers: &Value, org_peers: &[String], org_visitor: bool) -> String {
    let list = peers.as_array().cloned().unwrap_or_default();
    let body = html! {
        @if list.is_empty() { p { "No peers." } } @else {
            table #peers { tr { th { "peer" } th { "name" } th { "role" } th { "catalog" } th { "addresses" } th { "last seen" } }
                @for p in &list {
                    @let id = text(&p["peer_id"]);
                    tr { td { code { (&id[..id.len().min(20)]) "…" } } td { (text(&p["name"])) } td { (text(&p["role"])) }
                         td { @if org_peers.contains(&id) { span.tag.good { "org" } } @else { "public" } }
                         td { @for a in p["addrs"].as_array().cloned().unwrap_or_default() { small { (text(&a)) } br; } }
                         td { (text(&p["last_seen"])) } }
                }
            }
        }
    };
    layout("Peers", org_visitor, body)
}

/// A line diff of `old` to `new`: (' ', '-' or '+', line), by longest
/// common subsequence (policies are short).
pub fn line_diff(old: &str, new: &str) -> Vec<(char, String)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: common lines of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((' ', a[i].to_string()));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(('+', b[j].to_string()));
            j += 1;
        } else {
            out.push(('-', a[i].to_string()));
            i += 1;
        }
    }
    out
}

/// Proposals with state, tally bars against quorum and threshold,
/// deadlines, and the change each would make (`diffs`: for a policy
/// proposal, its diff against the policy in force, by proposal id).
pub fn governance_page(
    proposals: &[Value],
    diffs: &std::collections::HashMap<String, Vec<(char, String)>>,
    quorum: f64,
    threshold: f64,
    org_visitor: bool,
) -> String {
    let body = html! {
        p { "Quorum " (format!("{:.0}%", quorum * 100.0)) " of the total weight; threshold " (format!("{:.0}%", threshold * 100.0)) " of for + against." }
        @if proposals.is_empty() { p { "No proposals." } }
        @for p in proposals {
            @let total = p["total_weight"].as_f64().unwrap_or(0.0).max(1.0);
            @let (f, a, ab) = (p["for"].as_f64().unwrap_or(0.0), p["against"].as_f64().unwrap_or(0.0), p["abstain"].as_f64().unwrap_or(0.0));
            div.hit.proposal data-state=(text(&p["state"])) {
                strong { (text(&p["title"])) } " " span.tag { (text(&p["state"])) } " " small { (text(&p["kind"])) }
                br; small { "id " code { (text(&p["proposal_id"])) } }
                p {
                    "turnout " span.bar title="turnout against quorum" {
                        span style={ "width:" (format!("{:.1}", 100.0 * (f + a + ab) / total)) "%;background:#7b8db5" } {}
                        span.mark style={ "left:" (format!("{:.1}", 100.0 * quorum)) "%" } {}
                    }
                    " " (f + a + ab) " / " (total)
                    br;
                    "for    " span.bar title="for against threshold" {
                        span style={ "width:" (format!("{:.1}", if f + a > 0.0 { 100.0 * f / (f + a) } else { 0.0 })) "%;background:#3c9a5f" } {}
                        span.mark style={ "left:" (format!("{:.1}", 100.0 * threshold)) "%" } {}
                    }
                    " for " (f) ", against " (a) ", abstain " (ab)
                }
                p { small { "voting " (crate::project::rfc3339(p["voting_starts"].as_u64().unwrap_or(0))) " to " (crate::project::rfc3339(p["voting_ends"].as_u64().unwrap_or(0)))
                    @if let Some(x) = p["executable_at"].as_u64() { "; executable from " (crate::project::rfc3339(x)) } } }
                @if !text(&p["reason"]).is_empty() { p { (text(&p["reason"])) } }
                @if let Some(diff) = diffs.get(&text(&p["proposal_id"])) {
                    p { "The policy it would apply, against the one in force:" }
                    pre.diff { @for (mark, line) in diff {
                        @let color = match mark { '+' => "background:#dff3e4", '-' => "background:#fde2e1", _ => "" };
                        span style=(color) { (mark) " " (line) } "\n"
                    } }
                } @else {
                    details { summary { "What it would change" } pre { (serde_json::to_string_pretty(&p["action"]).unwrap_or_default()) } }
                }
            }
        }
    };
    layout("Governance", org_visitor, body)
}

/// Any JSON document as a titled page (the policy in force, learning status).
pub fn json_page(title: &str, intro: &str, doc: &Value, org_visitor: bool) -> String {
    let body = html! {
        p { (intro) }
        pre #doc { (serde_json::to_string_pretty(doc).unwrap_or_default()) }
    };
    layout(title, org_visitor, body)
}

/// The token form (sets a cookie that only the UI's pages read).
pub fn login_page(failed: bool) -> String {
    let body = html! {
        @if failed { p { span.tag.bad { "That is not this node's token." } } }
        p { "Org visitors paste the node's API token (" code { "HOME/api-token" } ") to see org packs." }
        form method="post" action="/login" {
            input type="password" name="token" size="70" autocomplete="off";
            " " button { "Log in" }
        }
    };
    layout("Log in", false, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_diff_marks_what_goes_and_what_comes() {
        let d = line_diff(
            "[accept]\nlicenses = [\"MIT\"]\n",
            "[accept]\nlicenses = [\"MIT\"]\nmin_quality = 30\n",
        );
        assert_eq!(
            d,
            vec![
                (' ', "[accept]".to_string()),
                (' ', "licenses = [\"MIT\"]".to_string()),
                ('+', "min_quality = 30".to_string())
            ]
        );
        let d = line_diff("a\nb\n", "a\nc\n");
        assert_eq!(d.iter().filter(|(m, _)| *m != ' ').count(), 2);
    }

    #[test]
    fn readme_html_and_scripts_render_as_text() {
        let html = markdown(
            "# Hi\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n[x](javascript:alert(3)) [ok](https://example.com) ![i](http://evil/x.png)",
        )
        .into_string();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("href=\"https://example.com\""), "{html}");
        assert!(html.contains("<h1>Hi</h1>"), "{html}");
    }
}
