//! The page publish writes in each channel's folder: `index.html` for people and `index.json`
//! for scripts, made from the bucket's SHA256SUMS, rewritten with conditional writes, every
//! value escaped; and how it looks in a real browser (headless Chromium from Debian's packages),
//! on a phone and on a desktop, with every script forbidden by the page's own policy.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask_testkit::fixture::sha256_hex;
use xtask_testkit::s3::{PausingProxy, S3};
use xtask_testkit::Run;

use xtask_testkit::gpg::TestKey;

use crate::support::{
    build_images, fabricate, fabricated, publish_command, publish_in_concurrent_pairs, run,
};

fn text(s3: &S3, key: &str) -> String {
    String::from_utf8(
        s3.object(key)
            .unwrap_or_else(|| panic!("no {key} in the bucket")),
    )
    .unwrap()
}

fn json(s3: &S3, key: &str) -> serde_json::Value {
    serde_json::from_str(&text(s3, key)).unwrap()
}

/// The versions `index.json` lists, in its order.
fn versions(page: &serde_json::Value) -> Vec<String> {
    page["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_string())
        .collect()
}

/// Publishes what `dir` holds with `base_url` as the public base URL.
fn publish_at(s3: &S3, dir: &Path, base_url: &str) -> Run {
    run(publish_command(&s3.endpoint, dir, &[]).env("SYSEXT_BASE_URL", base_url))
}

#[test]
fn publish_writes_the_page_and_its_data_in_each_channel() {
    let s3 = S3::start();
    let ws = build_images("1.10.2");
    let rc = tempfile::tempdir().unwrap();
    fabricate(rc.path(), "1.11.0-rc.1", "arm64", 3000, 7);
    publish_at(&s3, &ws.out, &s3.public_url).assert_ok();
    let first = publish_at(&s3, rc.path(), &s3.public_url);
    first.assert_ok();
    assert!(
        first
            .stdout
            .contains(&format!("page: {}/rc/index.html (updated)", s3.public_url)),
        "{}",
        first.stdout
    );

    let page = json(&s3, "index.json");
    assert_eq!(versions(&page), ["1.10.2"]);
    assert_eq!(page["signed"], false);
    let image = &page["releases"][0]["images"][0];
    let bytes = s3.object("alloy-1.10.2-amd64.raw").unwrap();
    assert_eq!(image["sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(image["size"], bytes.len() as u64);
    assert_eq!(
        image["url"],
        format!("{}/alloy-1.10.2-amd64.raw", s3.public_url).as_str()
    );
    assert!(
        image["published"].as_str().unwrap().ends_with('Z'),
        "{image}"
    );
    let index = text(&s3, "SHA256SUMS");
    assert!(index.contains(image["sha256"].as_str().unwrap()), "{index}");

    let rc_page = json(&s3, "rc/index.json");
    assert_eq!(versions(&rc_page), ["1.11.0-rc.1"]);
    assert_eq!(rc_page["url"], format!("{}/rc/", s3.public_url).as_str());
    assert!(text(&s3, "rc/index.html").contains("Alloy 1.11.0-rc.1"));
    assert!(!text(&s3, "index.html").contains("1.11.0-rc.1"));
    for (key, content_type) in [
        ("index.html", "text/html; charset=utf-8"),
        ("index.json", "application/json"),
        ("rc/index.html", "text/html; charset=utf-8"),
    ] {
        let meta = s3.metadata(key);
        assert!(
            meta.contains(content_type) && meta.contains("max-age=60"),
            "{key}: {meta}"
        );
    }

    // Publishing again changes nothing, the page included.
    let before = s3.object("index.html");
    let again = publish_at(&s3, &ws.out, &s3.public_url);
    again.assert_ok();
    assert!(
        again.stdout.contains("(already up to date)"),
        "{}",
        again.stdout
    );
    assert_eq!(s3.object("index.html"), before);
}

#[test]
fn two_publishers_racing_both_appear_on_the_page() {
    let s3 = S3::start();
    publish_in_concurrent_pairs(
        &s3,
        &["1.10.0", "1.10.1", "1.9.5", "1.11.0"],
        50_000,
        &[("SYSEXT_BASE_URL", &s3.public_url)],
    );
    let page = json(&s3, "index.json");
    assert_eq!(versions(&page), ["1.11.0", "1.10.1", "1.10.0", "1.9.5"]);
    let html = text(&s3, "index.html");
    let positions: Vec<usize> = ["1.11.0", "1.10.1", "1.10.0", "1.9.5"]
        .iter()
        .map(|v| {
            html.find(&format!("<h2>Alloy {v}"))
                .unwrap_or_else(|| panic!("{v} not on the page"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

/// The lost update, made to happen: publisher A has added its version to SHA256SUMS and read it
/// for the page, and is held (by a proxy) just before it reads the page's ETag; meanwhile B
/// publishes another version, page and all. A's page, made from the index before B's line,
/// would then replace B's with a matching ETag: A must notice the index changed and make the
/// page again.
#[test]
fn a_publisher_held_between_reading_the_index_and_writing_the_page_loses_nothing() {
    let s3 = S3::start();
    let dirs = fabricated(&["1.10.0", "1.10.1", "1.10.2"], 20_000);
    publish_at(&s3, dirs[0].path(), &s3.public_url).assert_ok();

    let proxy = PausingProxy::start(&s3.endpoint, "GET /images/index.json");
    let held = publish_command(&proxy.url, dirs[1].path(), &[])
        .env("SYSEXT_BASE_URL", &s3.public_url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    proxy.wait_until_holding(120);
    publish_at(&s3, dirs[2].path(), &s3.public_url).assert_ok();
    assert_eq!(
        versions(&json(&s3, "index.json")),
        ["1.10.2", "1.10.1", "1.10.0"]
    );
    proxy.release();
    let held = Run::from_output(&held.wait_with_output().unwrap());
    held.assert_ok();

    assert_eq!(
        versions(&json(&s3, "index.json")),
        ["1.10.2", "1.10.1", "1.10.0"]
    );
    let html = text(&s3, "index.html");
    for version in ["1.10.2", "1.10.1", "1.10.0"] {
        assert!(
            html.contains(&format!("<h2>Alloy {version}")),
            "{version}:\n{html}"
        );
    }
    // And it was the held publisher that noticed, as the race was set up for.
    held.assert_ok_saying(&["SHA256SUMS changed while the page was written"]);
}

#[test]
fn html_in_an_index_entry_or_the_base_url_is_escaped() {
    let s3 = S3::start();
    // A line someone put in SHA256SUMS by hand, and a base URL that would close an attribute.
    let hostile = "alloy-<img src=x onerror=alert(1)>-amd64.raw";
    std::fs::write(
        s3.bucket_dir().join("SHA256SUMS"),
        format!("{}  {hostile}\n", "cd".repeat(32)),
    )
    .unwrap();
    let base = format!("{}/x\"onmouseover=\"alert(2)", s3.public_url);
    let dir = tempfile::tempdir().unwrap();
    fabricate(dir.path(), "1.10.2", "amd64", 1000, 1);
    publish_at(&s3, dir.path(), &base).assert_ok();

    let html = text(&s3, "index.html");
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("alloy-&lt;img src=x onerror=alert(1)&gt;-amd64.raw"),
        "{html}"
    );
    assert!(!html.contains("\"onmouseover"), "{html}");
    assert!(
        html.contains("x&quot;onmouseover=&quot;alert(2)/alloy-1.10.2-amd64.raw"),
        "{html}"
    );
    let page = json(&s3, "index.json");
    assert_eq!(page["other_entries"][0]["name"], hostile);
    assert_eq!(versions(&page), ["1.10.2"]);
}

/// Chromium from Debian's packages, or `None` (skipping, saying so) outside CI.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file());
    if found.is_none() {
        let reason = "chromium is not installed: run bash scripts/install-deps.sh --test";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("SKIPPED: {reason}");
    }
    found
}

/// Where this test keeps what it shows a person: `target/test-artifacts/page/`.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts/page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium on `url`, in a fresh profile, with what keeps it off the network (the
/// closed network here would make it hang): `args` says what to produce. The page's own
/// Content-Security-Policy forbids every script, so what it shows needs none.
fn chromium_run(chromium: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("timeout")
        .args(["120", chromium.to_str().unwrap()])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chromium failed:\n{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

#[test]
fn chromium_shows_the_newest_release_first_on_a_phone_and_a_desktop() {
    let Some(chromium) = chromium() else { return };
    let s3 = S3::start();
    let key = TestKey::new("project");
    for (i, version) in ["1.9.5", "1.10.0", "1.10.1"].iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        for (j, arch) in ["amd64", "arm64"].iter().enumerate() {
            let (size, seed) = (300_000 + 1000 * i, (2 * i + j) as u8);
            fabricate(dir.path(), version, arch, size, seed);
        }
        let mut command = publish_command(&s3.endpoint, dir.path(), &[]);
        command.env("SYSEXT_BASE_URL", &s3.public_url);
        run(command.env("SYSEXT_GPG_KEY", &key.secret)).assert_ok();
    }
    let url = format!("{}/index.html", s3.public_url);

    // What the browser made of the page, which forbids itself scripts: every release, the
    // newest first.
    let dom = chromium_run(&chromium, &url, &["--dump-dom"]);
    let order: Vec<usize> = ["Alloy 1.10.1", "Alloy 1.10.0", "Alloy 1.9.5"]
        .iter()
        .map(|h| {
            dom.find(h)
                .unwrap_or_else(|| panic!("{h} is not on the page:\n{dom}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{dom}");
    assert!(
        dom.contains("newest</span>") && dom.contains("class=\"signed\""),
        "{dom}"
    );
    assert!(dom.matches("<details").count() == 6, "{dom}");

    let dir = artifacts();
    for (name, size) in [("phone", (390, 844)), ("desktop", (1280, 900))] {
        let shot = dir.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&shot);
        chromium_run(
            &chromium,
            &url,
            &[
                &format!("--screenshot={}", shot.display()),
                &format!("--window-size={},{}", size.0, size.1),
            ],
        );
        let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
        assert_eq!(png_size(&png), size, "{}", shot.display());
        assert!(
            png.len() > 10_000,
            "{} looks blank: {} bytes",
            shot.display(),
            png.len()
        );
        eprintln!("screenshot: {}", shot.display());
    }
}
