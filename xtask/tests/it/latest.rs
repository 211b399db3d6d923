//! `cargo xtask latest` and `cargo xtask build latest` against a loopback fake of GitHub's
//! releases API: paginated by Link headers, out of date order, with drafts, prereleases and tags
//! that are not versions.

use std::process::Command;

use xtask_testkit::fixture::Release;
use xtask_testkit::http::{Answer, Server};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::Run;

use crate::support::{workspace, XTASK};

const FIRST: &str = "/repos/grafana/alloy/releases?per_page=100";

fn release(tag: &str, draft: bool, prerelease: bool) -> serde_json::Value {
    serde_json::json!({
        "tag_name": tag,
        "name": tag,
        "draft": draft,
        "prerelease": prerelease,
        "published_at": "2025-01-01T00:00:00Z",
        "assets": [{"name": "alloy-linux-amd64.zip", "digest": "sha256:00"}],
    })
}

/// Releases as (tag, draft, prerelease), three pages, newest first as GitHub lists them: the
/// highest version (1.10.2) is on page 2, after a patch release of an older line published
/// later (1.9.9).
const PAGES: [&[(&str, bool, bool)]; 3] = [
    &[
        ("v2.0.0", true, false),
        ("v1.11.0-rc.1", false, true),
        ("v1.9.9", false, false),
        ("helm-chart-3.0.0", false, false),
    ],
    &[
        ("v1.10.2", false, false),
        ("v1.12.0", false, true),
        ("1.99.0", false, false),
    ],
    &[("v1.10.1", false, false), ("v1.3.4", false, false)],
];

/// A fake GitHub API serving [`PAGES`], linked by Link headers as GitHub links them.
fn fake_github() -> Server {
    let api = Server::start();
    let page = |n: usize| match n {
        1 => FIRST.to_string(),
        n => format!("{FIRST}&page={n}"),
    };
    let last = PAGES.len();
    for (i, releases) in PAGES.iter().enumerate() {
        let n = i + 1;
        let mut links = Vec::new();
        if n < last {
            links.push(format!("<{}{}>; rel=\"next\"", api.url, page(n + 1)));
        }
        links.push(format!("<{}{}>; rel=\"last\"", api.url, page(last)));
        let releases: Vec<serde_json::Value> = releases
            .iter()
            .map(|(tag, draft, prerelease)| release(tag, *draft, *prerelease))
            .collect();
        let body = serde_json::to_vec(&releases).unwrap();
        api.answer(&page(n), Answer::ok(body).header("Link", &links.join(", ")));
    }
    api
}

fn latest(api_url: &str, token: Option<&str>) -> Run {
    let mut command = Command::new(XTASK);
    command
        .arg("latest")
        .env("GITHUB_API_URL", api_url)
        .env_remove("GITHUB_TOKEN");
    if let Some(token) = token {
        command.env("GITHUB_TOKEN", token);
    }
    Run::from_command(&mut command)
}

#[test]
fn prints_the_highest_stable_version_across_pages() {
    let api = fake_github();
    let run = latest(&api.url, None);
    run.assert_ok();
    assert_eq!(run.stdout, "1.10.2\n");
    let paths: Vec<String> = api.log().iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        paths,
        [
            FIRST.to_string(),
            format!("{FIRST}&page=2"),
            format!("{FIRST}&page=3")
        ]
    );
    for seen in api.log() {
        assert!(!seen.headers.contains_key("authorization"), "{seen:?}");
        assert_eq!(
            seen.headers.get("accept").map(String::as_str),
            Some("application/vnd.github+json")
        );
    }
}

#[test]
fn sends_github_token_on_every_page_and_never_prints_it() {
    let api = fake_github();
    let token = "ghs_secretTOKEN0123456789";
    let run = latest(&api.url, Some(token));
    run.assert_ok();
    assert_eq!(run.stdout, "1.10.2\n");
    let log = api.log();
    assert_eq!(log.len(), 3);
    for seen in &log {
        assert_eq!(
            seen.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {token}").as_str()),
            "{}",
            seen.path
        );
    }
    assert!(!run.stdout.contains(token) && !run.stderr.contains(token));

    // A failing run does not show it either.
    let empty = Server::start();
    let run = latest(&empty.url, Some(token));
    run.assert_fails_with(&["404", "GITHUB_API_URL"]);
    assert!(!run.stdout.contains(token) && !run.stderr.contains(token));
}

#[test]
fn never_follows_a_next_page_to_another_site_with_the_token() {
    let api = Server::start();
    let elsewhere = Server::start();
    elsewhere.answer(
        "/steal?page=2",
        Answer::ok(serde_json::to_vec(&vec![release("v9.9.9", false, false)]).unwrap()),
    );
    api.answer(
        FIRST,
        Answer::ok(serde_json::to_vec(&vec![release("v1.10.2", false, false)]).unwrap()).header(
            "Link",
            &format!("<{}/steal?page=2>; rel=\"next\"", elsewhere.url),
        ),
    );
    let run = latest(&api.url, Some("ghs_secret"));
    run.assert_fails_with(&["another site", &elsewhere.url]);
    assert!(elsewhere.log().is_empty(), "{:?}", elsewhere.log());
}

#[test]
fn no_stable_release_and_non_json_answers_are_clear_errors() {
    let api = Server::start();
    api.answer(
        FIRST,
        Answer::ok(
            serde_json::to_vec(&vec![
                release("v2.0.0", true, false),
                release("v2.0.0-rc.1", false, true),
            ])
            .unwrap(),
        ),
    );
    latest(&api.url, None).assert_fails_with(&["none of the 2 releases", "vX.Y.Z"]);

    let html = Server::start();
    html.answer(FIRST, Answer::ok("<html>rate limited</html>"));
    latest(&html.url, None).assert_fails_with(&["did not answer with a JSON list of releases"]);

    latest("http://example.com", None).assert_fails_with(&["refusing plain http://"]);
}

#[test]
fn build_latest_builds_the_version_latest_finds() {
    let api = fake_github();
    let mirror = Mirror::start();
    mirror.add_release(&Release::new("1.10.2"));
    let ws = workspace();
    let run = Run::from_command(
        ws.command(&mirror.base_url)
            .env("GITHUB_API_URL", &api.url)
            .env_remove("GITHUB_TOKEN")
            .args(["build", "latest", "--out-dir"])
            .arg(&ws.out),
    );
    run.assert_ok_saying(&["latest is v1.10.2"]);
    assert_eq!(
        ws.out_names(),
        ["alloy-1.10.2-amd64.raw", "alloy-1.10.2-amd64.raw.sha256"]
    );

    // Anything else that is not a version is still refused before any network access.
    let run = ws.build(&mirror.base_url, "newest", &[]);
    run.assert_fails_with(&["invalid Alloy version \"newest\"", "`latest`"]);
}
