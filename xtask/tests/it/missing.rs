//! `cargo xtask missing` against a loopback fake of GitHub's releases API (three pages linked by
//! Link headers, drafts, prereleases, a backport on an older line, release candidates, a
//! release whose assets are not all uploaded) and a bucket's public domain holding some of
//! them in each channel's SHA256SUMS.

use std::process::Command;

use xtask_testkit::http::{Answer, Server};
use xtask_testkit::Run;

use crate::support::XTASK;

const FIRST: &str = "/repos/grafana/alloy/releases?per_page=100";
const BOTH: &[&str] = &[
    "alloy-linux-amd64.zip",
    "alloy-linux-arm64.zip",
    "SHA256SUMS",
];

/// (tag, draft, prerelease, assets), newest first as GitHub lists them, over three pages.
type Listed = (&'static str, bool, bool, &'static [&'static str]);
const PAGES: [&[Listed]; 3] = [
    &[
        ("v1.13.0", false, false, &["alloy-linux-amd64.zip"]), // assets still uploading
        ("v1.15.0-rc.1", false, true, BOTH),                   // its release is not out
        ("v1.13.0-rc.1", false, true, BOTH),                   // superseded by 1.13.0
        ("v1.12.0-rc.0", false, true, BOTH),                   // superseded by 1.12.0
        ("v2.0.0", true, false, BOTH),                         // a draft
        ("v1.10.5", false, false, BOTH),                       // backport, after 1.12.0
    ],
    &[
        ("v1.12.0", false, false, BOTH),
        ("v1.14.0-rc.2", false, true, BOTH),
        ("v1.11.3", false, true, BOTH), // a prerelease that is no candidate
        ("helm-chart-3.0.0", false, false, BOTH),
        ("v1.11.2", false, false, BOTH),
    ],
    &[
        ("v1.11.1", false, false, BOTH),
        ("v1.10.4", false, false, BOTH),
        ("v1.9.9", false, false, BOTH), // below the floor
    ],
];

fn release(listed: &Listed) -> serde_json::Value {
    let (tag, draft, prerelease, assets) = listed;
    let assets: Vec<serde_json::Value> = assets
        .iter()
        .map(|name| serde_json::json!({"name": name, "digest": "sha256:00", "size": 1}))
        .collect();
    serde_json::json!({
        "tag_name": tag, "name": tag, "draft": draft, "prerelease": prerelease,
        "published_at": "2026-01-01T00:00:00Z", "assets": assets,
    })
}

fn fake_github() -> Server {
    let api = Server::start();
    let page = |n: usize| match n {
        1 => FIRST.to_string(),
        n => format!("{FIRST}&page={n}"),
    };
    for (i, releases) in PAGES.iter().enumerate() {
        let n = i + 1;
        let body: Vec<serde_json::Value> = releases.iter().map(release).collect();
        let mut answer = Answer::ok(serde_json::to_vec(&body).unwrap());
        if n < PAGES.len() {
            let link = format!("<{}{}>; rel=\"next\"", api.url, page(n + 1));
            answer = answer.header("Link", &link);
        }
        api.answer(&page(n), answer);
    }
    api
}

fn sums(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{}  {name}\n", "ab".repeat(32)))
        .collect()
}

/// A bucket with 1.11.1 and 1.12.0 published, 1.11.2 for amd64 only, and in rc/ one candidate.
fn bucket() -> Server {
    let bucket = Server::start();
    let stable = sums(&[
        "alloy-1.11.1-amd64.raw",
        "alloy-1.11.1-arm64.raw",
        "alloy-1.11.2-amd64.raw",
        "alloy-1.12.0-amd64.raw",
        "alloy-1.12.0-arm64.raw",
    ]);
    bucket.answer("/SHA256SUMS", Answer::ok(stable));
    let rc = sums(&["alloy-1.14.0-rc.2-amd64.raw", "alloy-1.14.0-rc.2-arm64.raw"]);
    bucket.answer("/rc/SHA256SUMS", Answer::ok(rc));
    bucket
}

fn missing(api: &Server, base_url: &str, args: &[&str]) -> Run {
    Run::from_command(
        Command::new(XTASK)
            .arg("missing")
            .args(args)
            .env("GITHUB_API_URL", &api.url)
            .env("SYSEXT_BASE_URL", base_url)
            .env("GITHUB_TOKEN", "ghs_missingTOKEN42"),
    )
}

fn rows(json: &serde_json::Value, key: &str) -> Vec<String> {
    json[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let detail = m.get("archs").or(m.get("lacks")).unwrap();
            let detail: Vec<&str> = detail
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            format!(
                "{} {} {}",
                m["channel"].as_str().unwrap(),
                m["version"].as_str().unwrap(),
                detail.join("+")
            )
        })
        .collect()
}

#[test]
fn lists_exactly_the_releases_the_bucket_lacks_per_channel() {
    let (api, bucket) = (fake_github(), bucket());
    let run = missing(&api, &bucket.url, &["--json"]);
    run.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        rows(&json, "missing"),
        [
            "rc 1.15.0-rc.1 amd64+arm64",
            "stable 1.11.2 arm64",
            "stable 1.10.5 amd64+arm64",
            "stable 1.10.4 amd64+arm64",
        ]
    );
    assert_eq!(
        rows(&json, "waiting"),
        ["stable 1.13.0 alloy-linux-arm64.zip+SHA256SUMS"]
    );
    assert_eq!(json["since"], "1.10.0");
    assert_eq!(json["published"][0]["versions"], 3);
    assert_eq!(json["published"][1]["versions"], 1);
    // Every page, each once, and both indexes; the token on every API page, never shown.
    let pages: Vec<String> = api.log().iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        pages,
        [
            FIRST.to_string(),
            format!("{FIRST}&page=2"),
            format!("{FIRST}&page=3")
        ]
    );
    for seen in api.log() {
        assert_eq!(seen.headers["authorization"], "Bearer ghs_missingTOKEN42");
    }
    let asked: Vec<String> = bucket.log().iter().map(|s| s.path.clone()).collect();
    assert_eq!(asked, ["/SHA256SUMS", "/rc/SHA256SUMS"]);
    for seen in bucket.log() {
        assert!(!seen.headers.contains_key("authorization"), "{seen:?}");
    }
    assert!(
        !run.stdout.contains("ghs_missingTOKEN42") && !run.stderr.contains("ghs_missingTOKEN42")
    );
}

#[test]
fn people_get_a_table_and_the_floor_can_be_moved() {
    let (api, bucket) = (fake_github(), bucket());
    let run = missing(&api, &bucket.url, &["--since", "1.11.0"]);
    run.assert_ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].contains("from 1.11.0") && lines[0].contains(&bucket.url),
        "{}",
        run.stdout
    );
    for row in [
        "rc       1.15.0-rc.1      amd64 arm64",
        "stable   1.11.2           arm64",
        "stable   1.13.0           no alloy-linux-arm64.zip, SHA256SUMS yet",
    ] {
        assert!(lines.contains(&row), "{row:?} in\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("1.10.5"), "{}", run.stdout);

    let run = missing(&api, &bucket.url, &["--since", "1.99.0"]);
    run.assert_ok();
    assert!(run.stdout.contains("Nothing is missing."), "{}", run.stdout);
}

#[test]
fn a_new_bucket_lacks_everything_and_an_unreadable_one_is_an_error() {
    let api = fake_github();
    let empty = Server::start();
    let run = missing(&api, &empty.url, &["--json"]);
    run.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["missing"].as_array().unwrap().len(), 7, "{json:#}");

    // A bucket that answers 500, or HTML instead of an index: never "everything is missing".
    let broken = Server::start();
    broken.answer("/SHA256SUMS", Answer::ok("<html>not an index</html>"));
    missing(&api, &broken.url, &[]).assert_fails_with(&["not in sha256sum format"]);
    let failing = Server::start();
    failing.answer("/SHA256SUMS", Answer::status(403, "denied"));
    missing(&api, &failing.url, &[]).assert_fails_with(&["SHA256SUMS", "403"]);
    missing(&api, "http://example.com", &[]).assert_fails_with(&["refusing plain http://"]);
}
