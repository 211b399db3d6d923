//! Alloy's release list on GitHub, and the highest stable release by version rather than by
//! date (GitHub's `releases/latest` is the newest by date: v1.3.4 came out after v1.4.0).

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::contract::Channel;
use crate::util::http::Http;
use crate::util::progress::detail;
use crate::version::Version;

pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// Alloy has a few hundred releases: 100 a page keeps this to a handful of requests.
const PER_PAGE: u32 = 100;
/// A Link chain longer than this is a loop or a broken server, not Alloy's release list.
const MAX_PAGES: usize = 100;
/// One page of 100 releases with their notes and assets is a few MB at most.
const PAGE_LIMIT: u64 = 64 << 20;

/// The fields of a GitHub release that matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct ReleaseInfo {
    pub tag_name: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    /// What is attached so far: GitHub lists a release before its assets are all uploaded.
    #[serde(default)]
    pub assets: Vec<AssetInfo>,
}

/// The fields of a release asset that matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct AssetInfo {
    pub name: String,
}

/// The version of a published stable release: not a draft, not a prerelease, tagged `vX.Y.Z`.
pub fn stable_version(release: &ReleaseInfo) -> Option<Version> {
    channel_of(release)
        .filter(|(_, channel)| *channel == Channel::Stable)
        .map(|(version, _)| version)
}

/// The channel a release belongs to, or `None` when it is none of ours: a draft, a tag that is
/// not `vX.Y.Z[-rc.N]`, or an `X.Y.Z` marked as a prerelease.
pub fn channel_of(release: &ReleaseInfo) -> Option<(Version, Channel)> {
    if release.draft || !release.tag_name.starts_with('v') {
        return None;
    }
    let version: Version = release.tag_name.parse().ok()?;
    match Channel::of(&version) {
        Channel::Rc => Some((version, Channel::Rc)),
        Channel::Stable if release.prerelease => None,
        Channel::Stable => Some((version, Channel::Stable)),
    }
}

/// The highest stable version among `releases`, whatever order they were published in.
pub fn pick_latest(releases: &[ReleaseInfo]) -> Option<Version> {
    releases.iter().filter_map(stable_version).max()
}

/// The `rel="next"` target of an RFC 8288 `Link` header, as GitHub sends for pagination:
/// `<https://api.github.com/...&page=2>; rel="next", <...>; rel="last"`.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        is_next.then(|| target.to_string())
    })
}

/// `scheme://host[:port]` of a URL, to keep the token on the API's own origin.
fn origin(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find('/').unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

/// The first page of Alloy's release list at `api_url`.
pub fn releases_url(api_url: &str) -> String {
    format!(
        "{}/repos/grafana/alloy/releases?per_page={PER_PAGE}",
        api_url.trim_end_matches('/')
    )
}

/// Every release of grafana/alloy, following pagination. `token` (GITHUB_TOKEN) raises the rate
/// limit; it is sent only to the API's own origin and never shown.
pub fn list_releases(
    http: &Http,
    api_url: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<ReleaseInfo>> {
    let first = releases_url(api_url);
    let api_origin = origin(&first).with_context(|| format!("{api_url:?} is not a URL"))?;
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Accept", "application/vnd.github+json"),
        ("X-GitHub-Api-Version", "2022-11-28"),
    ];
    if let Some(value) = &authorization {
        headers.push(("Authorization", value.as_str()));
    }

    let mut releases = Vec::new();
    let mut next = Some(first.clone());
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        if pages > MAX_PAGES {
            bail!("{first} still has a next page after {MAX_PAGES} pages: is GITHUB_API_URL a GitHub API?");
        }
        if origin(&url) != Some(api_origin) {
            bail!(
                "the release list at {first} points its next page to another site ({}); refusing to follow it",
                crate::util::http::shown_url(&url)
            );
        }
        let (body, response_headers) = http
            .get_bytes_with_headers(&url, &headers, PAGE_LIMIT)
            .with_context(|| {
                format!("listing Alloy releases (check GITHUB_API_URL={api_url}; set GITHUB_TOKEN if rate-limited)")
            })?;
        let page: Vec<ReleaseInfo> = serde_json::from_slice(&body)
            .with_context(|| format!("{url} did not answer with a JSON list of releases"))?;
        detail(format!("{url}: {} releases", page.len()));
        releases.extend(page);
        next = response_headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
    }
    Ok(releases)
}

/// The highest stable Alloy version published on GitHub.
pub fn latest(http: &Http, api_url: &str, token: Option<&str>) -> anyhow::Result<Version> {
    let releases = list_releases(http, api_url, token)?;
    match pick_latest(&releases) {
        Some(version) => Ok(version),
        None => bail!(
            "none of the {} releases listed at {} is a published vX.Y.Z release (drafts, prereleases and other tags are ignored)",
            releases.len(),
            releases_url(api_url)
        ),
    }
}

/// Where Alloy's releases are listed: the GitHub API root and, when set, the token that
/// raises its rate limit (sent only to the API's own origin, never shown).
#[derive(Clone)]
pub struct Github {
    pub api_url: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Github")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl Github {
    /// A blank token counts as none.
    pub fn new(api_url: impl Into<String>, token: Option<String>) -> Github {
        Github {
            api_url: api_url.into(),
            token: token.filter(|t| !t.trim().is_empty()),
        }
    }

    /// Every release of grafana/alloy, following pagination.
    pub fn releases(&self, http: &Http) -> anyhow::Result<Vec<ReleaseInfo>> {
        list_releases(http, &self.api_url, self.token.as_deref())
    }

    /// The highest stable Alloy version published on GitHub.
    pub fn latest(&self, http: &Http) -> anyhow::Result<Version> {
        latest(http, &self.api_url, self.token.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(tag: &str, draft: bool, prerelease: bool) -> ReleaseInfo {
        ReleaseInfo {
            tag_name: tag.into(),
            draft,
            prerelease,
            assets: Vec::new(),
        }
    }

    #[test]
    fn picks_the_highest_version_not_the_newest_release() {
        // Listed newest first, as GitHub does: v1.3.4 was published after v1.4.0.
        let releases = [
            release("v1.3.4", false, false),
            release("v1.4.0", false, false),
            release("v1.3.3", false, false),
        ];
        assert_eq!(pick_latest(&releases), Some("1.4.0".parse().unwrap()));
    }

    #[test]
    fn ignores_drafts_prereleases_candidates_and_other_tags() {
        let releases = [
            release("v1.10.2", false, false),
            release("v9.0.0", true, false),
            release("v1.11.0-rc.1", false, true),
            release("v1.11.0-rc.2", false, false),
            release("v1.12.0", false, true),
            release("1.13.0", false, false),
            release("helm-chart-2.0.0", false, false),
            release("v1.14", false, false),
            release("vnext", false, false),
        ];
        assert_eq!(pick_latest(&releases), Some("1.10.2".parse().unwrap()));
        assert_eq!(pick_latest(&releases[1..]), None);
        assert_eq!(pick_latest(&[]), None);
    }

    #[test]
    fn reads_github_release_json() {
        let json = r#"[{"tag_name":"v1.4.0","draft":false,"prerelease":false,"name":"v1.4.0","assets":[]},
                       {"tag_name":"v1.5.0-rc.0","draft":false,"prerelease":true}]"#;
        let releases: Vec<ReleaseInfo> = serde_json::from_str(json).unwrap();
        assert_eq!(releases.len(), 2);
        assert_eq!(pick_latest(&releases), Some("1.4.0".parse().unwrap()));
    }

    #[test]
    fn follows_rel_next_only() {
        let header = r#"<https://api.github.com/repositories/1/releases?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/releases?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some("https://api.github.com/repositories/1/releases?per_page=100&page=2")
        );
        let last_page = r#"<https://api.github.com/x?page=1>; rel="first", <https://api.github.com/x?page=4>; rel="prev""#;
        assert_eq!(next_link(last_page), None);
        assert_eq!(
            next_link("<http://127.0.0.1:9/p2>;rel=next").as_deref(),
            Some("http://127.0.0.1:9/p2")
        );
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn origin_is_scheme_and_authority() {
        assert_eq!(
            origin("https://api.github.com/repos/x?page=2"),
            Some("https://api.github.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/a"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin("nope"), None);
    }
}
