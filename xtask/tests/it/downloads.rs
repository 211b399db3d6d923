//! Hostile servers against the real `xtask build` and `xtask verify`: endless, crawling, stalled
//! and wrongly-ranged bodies, redirects off loopback, files that are no checksum list, and cache
//! entries that are not files. Each must end promptly and cleanly, with a message that says
//! what happened, without a retry storm for what retrying cannot fix, and leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xtask_testkit::fixture::{self, Release};
use xtask_testkit::mirror::{Fault, Mirror};
use xtask_testkit::{ext4, link_to_dev_zero, mkfifo, Run, Workspace};

use crate::support::{cached_zip, files_under, workspace, Make, CHECKSUM, IMAGE, VERSION, XTASK};

const ZIP: &str = "alloy-linux-amd64.zip";
const ZIP_OBJECT: &str = "/objects/v1.10.2/alloy-linux-amd64.zip";

/// A body that never ends, with no Content-Length.
const ENDLESS: Fault = Fault::Endless {
    claimed_length: None,
};

/// Short enough for tests, long enough for a loaded machine: a second per progress window.
const WINDOW_MS: &str = "1000";

/// The fixture release, its `asset` misbehaving as `fault`.
fn mirror_with_fault(asset: &str, fault: Fault) -> Mirror {
    let mirror = Mirror::with_release(&Release::new(VERSION));
    mirror.fault(VERSION, asset, fault);
    mirror
}

/// Runs `command` with a private TMPDIR and the short progress window, killing it after
/// `deadline` (a hang is a failure of its own). Returns the run and how long it took.
pub(crate) fn run_within(command: &mut Command, tmp: &Path, deadline: Duration) -> (Run, Duration) {
    std::fs::create_dir_all(tmp).unwrap();
    command
        .env("TMPDIR", tmp)
        .env("ALLOY_SYSEXT_PROGRESS_WINDOW_MS", WINDOW_MS)
        .env("ALLOY_SYSEXT_MIN_BYTES_PER_SEC", "1024");
    Run::within(command, deadline)
}

/// A bucket holding one small image of [`VERSION`] with its `.sha256` and SHA256SUMS, its
/// `asset` misbehaving as `fault`, and `xtask verify VERSION` of it.
pub(crate) fn verify_with_fault(asset: &str, fault: &Fault) -> (Mirror, Command) {
    let mirror = Mirror::start();
    let image = vec![0u8; 64 << 10];
    let line = format!("{}  {IMAGE}\n", fixture::sha256_hex(&image));
    mirror.add(VERSION, IMAGE, image);
    mirror.add(VERSION, CHECKSUM, line.clone().into_bytes());
    mirror.add(VERSION, "SHA256SUMS", line.into_bytes());
    mirror.fault(VERSION, asset, fault.clone());
    let mut command = Command::new(XTASK);
    command
        .args(["verify", VERSION, "--base-url"])
        .arg(format!("{}/v{VERSION}", mirror.base_url));
    (mirror, command)
}

fn build(ws: &Workspace, mirror: &Mirror, args: &[&str], deadline: Duration) -> (Run, Duration) {
    let mut command = ws.build_command(&mirror.base_url, VERSION, args);
    run_within(&mut command, &ws.tmp.path().join("tmp"), deadline)
}

fn statuses(mirror: &Mirror, suffix: &str) -> Vec<u16> {
    mirror
        .requests_for(suffix)
        .iter()
        .map(|r| r.status)
        .collect()
}

/// How a build must end when retrying cannot help: what it says, the one answer the mirror
/// gave for a path (it did not retry), and the most seconds it may take.
struct Refused<'a> {
    says: &'a [&'a str],
    path: &'a str,
    statuses: &'a [u16],
    within: u64,
}

/// A build with `args` against `mirror` ends as `refused` says, and leaves nothing in the
/// output directory, the cache or TMPDIR.
fn assert_refused(case: &str, mirror: &Mirror, args: &[&str], refused: Refused) {
    let ws = workspace();
    let (run, took) = build(&ws, mirror, args, Duration::from_secs(60));
    run.case(case).assert_fails_with(refused.says);
    let statuses = statuses(mirror, refused.path);
    assert_eq!(statuses, refused.statuses, "{case}: not retried");
    let within = Duration::from_secs(refused.within);
    assert!(took < within, "{case} took {took:?}");
    assert_eq!(
        ws.out_names(),
        Vec::<String>::new(),
        "{case}: output directory"
    );
    assert_eq!(
        files_under(&ws.cache),
        Vec::<PathBuf>::new(),
        "{case}: cache"
    );
    let tmp = files_under(&ws.tmp.path().join("tmp"));
    assert_eq!(tmp, Vec::<PathBuf>::new(), "{case}: TMPDIR");
}

#[test]
fn an_endless_zip_is_cut_at_the_ceiling_and_not_retried() {
    let mirror = mirror_with_fault(ZIP, ENDLESS);
    let refused = Refused {
        says: &[
            "sends more than 1048576 bytes",
            "--max-download-bytes",
            "refusing it",
        ],
        path: ZIP_OBJECT,
        statuses: &[200],
        within: 20,
    };
    let args = ["--max-download-bytes", "1MiB"];
    assert_refused("an endless zip", &mirror, &args, refused);
}

#[test]
fn a_claimed_length_over_the_ceiling_is_refused_before_reading() {
    // 3 GiB claimed, over the default 2 GiB ceiling: refused on the headers alone.
    let claimed_length = Some(3 << 30);
    let mirror = mirror_with_fault(ZIP, Fault::Endless { claimed_length });
    let refused = Refused {
        says: &[
            "announces 3221225472 bytes (Content-Length), more than the 2147483648-byte ceiling",
            "ALLOY_SYSEXT_MAX_DOWNLOAD",
        ],
        path: ZIP_OBJECT,
        statuses: &[200],
        within: 20,
    };
    assert_refused("a 3 GiB Content-Length", &mirror, &[], refused);
}

/// What a SHA256SUMS that is no checksum list is made of.
enum Sums {
    /// A body that never ends.
    Endless,
    /// 70,000 well-formed lines: far more than a release lists.
    Oversized,
    Bytes(&'static [u8]),
}

#[test]
fn sha256sums_that_are_endless_oversized_or_not_text_are_refused_at_once() {
    let cases: [(&str, Sums, &str); 4] = [
        ("endless", Sums::Endless, "is larger than 4194304 bytes"),
        (
            "oversized",
            Sums::Oversized,
            "bytes (Content-Length), far more than the small file it should be (at most 4194304)",
        ),
        (
            "not UTF-8",
            Sums::Bytes(b"\xff\xfe binary \x00\x9f"),
            "is not UTF-8 text",
        ),
        (
            "not a checksum list",
            Sums::Bytes(b"<html>hi</html>\n"),
            "is not in sha256sum format",
        ),
    ];
    for (name, sums, needle) in cases {
        let mirror = Mirror::with_release(&Release::new(VERSION));
        match sums {
            Sums::Endless => mirror.fault(VERSION, "SHA256SUMS", ENDLESS),
            Sums::Oversized => {
                let line = format!("{}  filler\n", fixture::sha256_hex(b""));
                mirror.add(VERSION, "SHA256SUMS", line.repeat(70_000).into_bytes());
            }
            Sums::Bytes(bytes) => mirror.add(VERSION, "SHA256SUMS", bytes.to_vec()),
        }
        let refused = Refused {
            says: &[needle, "SHA256SUMS"],
            path: "/objects/v1.10.2/SHA256SUMS",
            statuses: &[200],
            within: 20,
        };
        assert_refused(name, &mirror, &[], refused);
        assert!(mirror.requests_for(ZIP_OBJECT).is_empty(), "{name}");
    }
}

/// A transfer that makes no progress for a window is tried again, from what it had, and given
/// up after the attempts run out, saying so.
#[test]
fn a_crawling_or_stalled_zip_is_retried_then_abandoned() {
    for fault in [Fault::Crawl { every_ms: 20 }, Fault::Stall] {
        let name = format!("{fault:?}");
        let refused = Refused {
            says: &[
                "made no real progress",
                "under 1024 bytes/s",
                "after 6 attempts",
            ],
            path: ZIP_OBJECT,
            statuses: &[200, 200, 200, 200, 200, 200],
            // Six windows and the backoff between them: nowhere near what real ones take.
            within: 60,
        };
        assert_refused(&name, &mirror_with_fault(ZIP, fault), &[], refused);
    }
}

#[test]
fn a_206_from_the_wrong_offset_is_never_appended() {
    let release = Release::new(VERSION);
    let zip_len = release.assets[ZIP].len();
    let half = zip_len / 2;
    for start in [0, half + 1, 7] {
        let mirror = Mirror::with_release(&release);
        mirror.fault(VERSION, ZIP, Fault::CutOnceThenWrongRange { start });
        let ws = workspace();
        let (run, _) = build(&ws, &mirror, &[], Duration::from_secs(60));
        run.assert_ok_saying(&["starting over without a range"]);
        let requests = mirror.requests_for(ZIP_OBJECT);
        let seen: Vec<(u16, Option<String>)> = requests
            .iter()
            .map(|r| (r.status, r.range.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                (200, None),
                (206, Some(format!("bytes={half}-"))),
                (200, None)
            ],
            "start {start}"
        );
        assert_eq!(
            ext4::cat(&ws.image(IMAGE), "/usr/bin/alloy"),
            release.binary("amd64")
        );
        assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);
    }
}

#[test]
fn a_redirect_off_loopback_to_plain_http_is_refused_before_connecting() {
    // 192.0.2.1 is TEST-NET-1: nothing answers there, so connecting would hang for 30 s.
    for asset in [ZIP, "SHA256SUMS"] {
        let fault = Fault::RedirectTo("http://192.0.2.1/alloy.zip".into());
        let mirror = mirror_with_fault(asset, fault);
        let from = format!(
            "refusing the redirect from {}/v1.10.2/{asset}",
            mirror.base_url
        );
        let refused = Refused {
            says: &[
                &from,
                "to http://192.0.2.1/alloy.zip",
                "refusing plain http://",
            ],
            path: &format!("/download/v1.10.2/{asset}"),
            statuses: &[302],
            within: 10,
        };
        assert_refused(asset, &mirror, &[], refused);
    }
}

/// A FIFO or a link where the cached zip belongs is neither read nor followed: the build
/// downloads afresh, promptly, and the cache holds a real file afterwards.
#[test]
fn a_cache_entry_that_is_not_a_file_is_replaced_by_a_fresh_download() {
    let release = Release::new(VERSION);
    let cases: [(&str, Make, &str); 4] = [
        ("fifo", mkfifo, "is a FIFO, not a file"),
        (
            "link to /dev/zero",
            link_to_dev_zero,
            "is a symbolic link, not a file",
        ),
        (
            "dangling link",
            |p| std::os::unix::fs::symlink("/nonexistent/alloy.zip", p).unwrap(),
            "is a symbolic link, not a file",
        ),
        (
            "empty directory",
            |p| std::fs::create_dir(p).unwrap(),
            "is a directory, not a file",
        ),
    ];
    for (name, make, said) in cases {
        let mirror = Mirror::with_release(&release);
        let ws = workspace();
        let cached = cached_zip(&ws);
        std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
        make(&cached);
        let (run, _) = build(&ws, &mirror, &[], Duration::from_secs(60));
        run.case(name).assert_ok_saying(&[said]);
        assert_eq!(statuses(&mirror, ZIP_OBJECT), [200], "{name}");
        let meta = std::fs::symlink_metadata(&cached).unwrap();
        assert!(meta.file_type().is_file(), "{name}: {meta:?}");
        assert_eq!(std::fs::read(&cached).unwrap(), release.assets[ZIP]);
    }
}

/// A directory that cannot be removed where the zip belongs, or a cache root that cannot be
/// created: the build still succeeds, from a private temporary download, and says so once.
#[test]
fn an_unusable_cache_is_bypassed_and_said_once() {
    let release = Release::new(VERSION);
    let mirror = Mirror::with_release(&release);

    let blocked = workspace();
    let cached = cached_zip(&blocked);
    std::fs::create_dir_all(cached.join("inside")).unwrap();
    let (run, _) = build(&blocked, &mirror, &[], Duration::from_secs(60));
    run.assert_ok_saying(&["cannot remove"]);
    assert!(cached.join("inside").is_dir(), "nothing inside is removed");

    // The cache root is a file: no directory can be made there (even by root).
    let unwritable = workspace();
    std::fs::create_dir_all(unwritable.cache.parent().unwrap()).unwrap();
    std::fs::write(&unwritable.cache, b"not a directory").unwrap();
    let (run, _) = build(
        &unwritable,
        &mirror,
        &["--arch", "amd64", "--arch", "arm64"],
        Duration::from_secs(90),
    );
    run.assert_ok();
    assert_eq!(
        run.stderr.matches("the cache is optional").count(),
        1,
        "said once for both architectures:\n{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&unwritable.cache).unwrap(),
        b"not a directory"
    );
    assert_eq!(
        files_under(&unwritable.tmp.path().join("tmp")),
        Vec::<PathBuf>::new(),
        "the temporary download is gone"
    );
    assert_eq!(
        unwritable.out_names(),
        [
            IMAGE,
            CHECKSUM,
            "alloy-1.10.2-arm64.raw",
            "alloy-1.10.2-arm64.raw.sha256"
        ]
    );
}

/// `verify` downloads the image with the same ceiling and deadline, and says which failed.
#[test]
fn verify_refuses_endless_and_crawling_images_and_leaves_nothing_in_tmpdir() {
    let cases: Vec<(Fault, Vec<&str>, &str)> = vec![
        (
            ENDLESS,
            vec!["--max-download-bytes", "1MiB"],
            "sends more than 1048576 bytes",
        ),
        (
            Fault::Crawl { every_ms: 20 },
            vec![],
            "made no real progress",
        ),
        (
            Fault::RedirectTo("http://192.0.2.1/image.raw".into()),
            vec![],
            "refusing the redirect",
        ),
    ];
    for (fault, args, needle) in cases {
        let (mirror, mut command) = verify_with_fault(IMAGE, &fault);
        command.args(&args);
        let tmp = tempfile::tempdir().unwrap();
        let (run, took) = run_within(
            &mut command,
            &tmp.path().join("tmp"),
            Duration::from_secs(60),
        );
        run.assert_fails_with(&["failed verification"]);
        assert!(run.stdout.contains(needle), "{fault:?}:\n{}", run.stdout);
        let object = format!("/objects/v{VERSION}/{IMAGE}");
        let expected: &[u16] = match fault {
            Fault::RedirectTo(_) => &[],
            // A crawl is retried (from what it had, were ranges answered), then given up.
            Fault::Crawl { .. } => &[200, 200, 200, 200, 200, 200],
            _ => &[200],
        };
        assert_eq!(statuses(&mirror, &object), expected, "{fault:?}");
        assert!(took < Duration::from_secs(60), "{fault:?} took {took:?}");
        assert_eq!(
            files_under(&tmp.path().join("tmp")),
            Vec::<PathBuf>::new(),
            "{fault:?}: TMPDIR"
        );
    }
}

/// Redirects are followed by hand now: the token goes on to the same origin, never to another.
#[test]
fn a_redirect_carries_the_github_token_only_within_its_origin() {
    use xtask_testkit::http::{Answer, Server};
    let first = "/repos/grafana/alloy/releases?per_page=100";
    let list = serde_json::to_vec(&serde_json::json!([{
        "tag_name": "v1.10.2", "name": "v1.10.2", "draft": false, "prerelease": false,
        "published_at": "2025-01-01T00:00:00Z", "assets": [],
    }]))
    .unwrap();
    let token = "ghs_secretTOKEN0123456789";
    let bearer = format!("Bearer {token}");
    let elsewhere = Server::start(); // another port: another origin
    elsewhere.answer("/list", Answer::ok(list.clone()));
    let api = Server::start();
    api.answer(
        first,
        Answer::status(301, "").header("Location", "/moved?per_page=100"),
    );
    api.answer(
        "/moved?per_page=100",
        Answer::status(302, "").header("Location", &format!("{}/list", elsewhere.url)),
    );
    let run = Run::from_command(
        Command::new(XTASK)
            .arg("latest")
            .env("GITHUB_API_URL", &api.url)
            .env("GITHUB_TOKEN", token),
    );
    run.assert_ok();
    assert_eq!(run.stdout, "1.10.2\n");
    let sent: Vec<(String, Option<String>)> = api
        .log()
        .iter()
        .map(|s| (s.path.clone(), s.headers.get("authorization").cloned()))
        .collect();
    assert_eq!(
        sent,
        [
            (first.to_string(), Some(bearer.clone())),
            ("/moved?per_page=100".to_string(), Some(bearer.clone())),
        ]
    );
    let seen = elsewhere.log();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("authorization"), "{seen:?}");
    assert_eq!(
        seen[0].headers.get("accept").map(String::as_str),
        Some("application/vnd.github+json")
    );
}

/// A resume answered with `Content-Length: 18446744073709551615` (after the bytes already
/// had, beyond any size), for build and for verify: refused, not retried, not a panic (the
/// dev profile `cargo xtask` runs checks overflow). A ceiling of 18446744073709551615 bytes
/// is no overflow either: the build succeeds.
#[test]
fn a_content_length_or_a_ceiling_beyond_any_size_ends_cleanly() {
    let mirror = mirror_with_fault(ZIP, Fault::CutOnceThenHugeLength);
    let ws = workspace();
    let (run, _) = build(&ws, &mirror, &[], Duration::from_secs(60));
    run.assert_fails_with(&["is beyond any size", "refusing it"]);
    assert_eq!(statuses(&mirror, ZIP_OBJECT), [200, 206], "not retried");
    assert_eq!(ws.out_names(), Vec::<String>::new());

    let mirror = Mirror::start();
    let image = vec![7u8; 64 << 10];
    let line = format!("{}  {IMAGE}\n", fixture::sha256_hex(&image));
    mirror.add(VERSION, IMAGE, image);
    mirror.add(VERSION, CHECKSUM, line.clone().into_bytes());
    mirror.add(VERSION, "SHA256SUMS", line.into_bytes());
    mirror.fault(VERSION, IMAGE, Fault::CutOnceThenHugeLength);
    let tmp = tempfile::tempdir().unwrap();
    let mut command = Command::new(XTASK);
    command
        .args(["verify", VERSION, "--base-url"])
        .arg(format!("{}/v{VERSION}", mirror.base_url));
    let (run, _) = run_within(&mut command, tmp.path(), Duration::from_secs(60));
    run.assert_fails_with(&["failed verification"]);
    assert!(run.stdout.contains("is beyond any size"), "{}", run.stdout);

    let mirror = Mirror::with_release(&Release::new(VERSION));
    let ws = workspace();
    let most = u64::MAX.to_string();
    let (run, _) = build(
        &ws,
        &mirror,
        &["--max-download-bytes", &most],
        Duration::from_secs(60),
    );
    run.assert_ok();
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);
}

/// A transfer that stalls once (half the body, then nothing) is tried again from what it had,
/// with a Range request, and the build succeeds.
#[test]
fn a_stall_that_happens_once_is_resumed_with_a_range_request() {
    let release = Release::new(VERSION);
    let mirror = Mirror::with_release(&release);
    mirror.fault(VERSION, ZIP, Fault::StallOnce);
    let ws = workspace();
    let (run, took) = build(&ws, &mirror, &[], Duration::from_secs(60));
    run.assert_ok_saying(&["retrying"]);
    let half = release.assets[ZIP].len() / 2;
    let seen: Vec<(u16, Option<String>)> = mirror
        .requests_for(ZIP_OBJECT)
        .iter()
        .map(|r| (r.status, r.range.clone()))
        .collect();
    assert_eq!(seen, [(200, None), (206, Some(format!("bytes={half}-")))]);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(
        ext4::cat(&ws.image(IMAGE), "/usr/bin/alloy"),
        release.binary("amd64")
    );
}

/// Every file under `dir` with the digest of its bytes, to see that nothing there was written
/// or removed.
fn contents_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = files_under(dir)
        .into_iter()
        .map(|f| {
            let digest = fixture::sha256_hex(&std::fs::read(&f).unwrap());
            (f, digest)
        })
        .collect();
    files.sort();
    files
}

/// A shared cache where our folder, or the version's folder in it, is a link elsewhere: the
/// build succeeds from a private download, says why the cache was not used, and writes or
/// removes nothing where the link points (there, a zip that does not verify and a leftover
/// that looks like ours would have been removed, and the download written).
#[test]
fn links_in_the_cache_are_never_followed() {
    let release = Release::new(VERSION);
    for linked in ["alloy-sysext", "alloy-sysext/v1.10.2"] {
        let mirror = Mirror::with_release(&release);
        let ws = workspace();
        let elsewhere = ws.tmp.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("v1.10.2")).unwrap();
        let planted = if linked == "alloy-sysext" {
            elsewhere.join("v1.10.2")
        } else {
            elsewhere.clone()
        };
        std::fs::write(planted.join(ZIP), b"not the release zip").unwrap();
        std::fs::write(planted.join(".alloy-sysext-tmp-1-x.partial"), b"half").unwrap();
        let before = contents_under(&elsewhere);
        let link = ws.cache.join(linked);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();

        let (run, _) = build(&ws, &mirror, &[], Duration::from_secs(60));
        let run = run.case(linked);
        run.assert_ok();
        assert_eq!(
            contents_under(&elsewhere),
            before,
            "{linked}: written or removed"
        );
        run.assert_ok_saying(&["is a symbolic link", "the cache is optional"]);
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(ws.out_names(), [IMAGE, CHECKSUM], "{linked}");
    }
}

/// A cached zip of 15 TiB (sparse): larger than any download may be, so never hashed (that
/// would take hours); removed, and the zip downloaded afresh, promptly.
#[test]
fn a_cached_zip_larger_than_any_download_is_not_hashed() {
    let release = Release::new(VERSION);
    let mirror = Mirror::with_release(&release);
    let ws = workspace();
    let cached = cached_zip(&ws);
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::File::create(&cached)
        .unwrap()
        .set_len(15 << 40)
        .unwrap();
    let (run, took) = build(&ws, &mirror, &[], Duration::from_secs(60));
    run.assert_ok_saying(&[
        "16492674416640 bytes, more than a download may bring",
        "downloading again",
    ]);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(statuses(&mirror, ZIP_OBJECT), [200]);
    assert_eq!(std::fs::read(&cached).unwrap(), release.assets[ZIP]);
}

/// A SHA256SUMS as GNU sha256sum writes and reads it: a comment, and a line whose name holds a
/// newline (escaped, the line starting with `\`). GNU `sha256sum -c` accepts it, and so does
/// the build. A malformed line of 4 MB (within the size limit) is named in a short error, cut
/// with its length said; a 5 MB one is refused for its size, shortly too.
#[test]
fn sha256sums_as_gnu_writes_it_build_and_malformed_lines_are_cut_short() {
    let release = Release::new(VERSION);
    let listed = std::str::from_utf8(&release.assets["SHA256SUMS"]).unwrap();
    let sums = format!(
        "# SHA-256 of Alloy's assets\n\\{}  odd\\nname\n{listed}",
        fixture::sha256_hex(b"odd")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("SHA256SUMS"), &sums).unwrap();
    std::fs::write(dir.path().join(ZIP), &release.assets[ZIP]).unwrap();
    std::fs::write(dir.path().join("odd\nname"), b"odd").unwrap();
    let checked = Run::from_command(
        Command::new("sha256sum")
            .args(["-c", "--ignore-missing", "SHA256SUMS"])
            .current_dir(dir.path()),
    );
    checked.assert_ok();
    assert!(
        checked.stdout.contains("alloy-linux-amd64.zip: OK"),
        "{}",
        checked.stdout
    );

    let mirror = Mirror::with_release(&release);
    mirror.add(VERSION, "SHA256SUMS", sums.into_bytes());
    let ws = workspace();
    let (run, _) = build(&ws, &mirror, &[], Duration::from_secs(60));
    run.assert_ok();
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);

    for (length, said) in [
        (4_000_000, "(4000000 bytes in all)"),
        (5_000_000, "far more than the small file it should be"),
    ] {
        let mirror = Mirror::with_release(&release);
        let malformed = format!("{listed}{}\n", "z".repeat(length));
        mirror.add(VERSION, "SHA256SUMS", malformed.into_bytes());
        let ws = workspace();
        let (run, _) = build(&ws, &mirror, &[], Duration::from_secs(60));
        run.assert_fails_with(&[said]);
        assert!(
            run.stderr.len() < 2000,
            "{length}: {} bytes of stderr",
            run.stderr.len()
        );
    }
}

/// `--sha256sums /dev/zero` (endless) and a FIFO (which blocks a reader until a writer
/// comes): refused at once, saying what they are, under an address-space cap so that a build
/// that read /dev/zero would fail rather than take the machine's memory.
#[test]
fn a_local_sha256sums_that_is_dev_zero_or_a_fifo_is_refused_at_once() {
    let release = Release::new(VERSION);
    let ws = workspace();
    std::fs::create_dir_all(ws.tmp.path().join("media")).unwrap();
    let zip = ws.tmp.path().join("media").join(ZIP);
    std::fs::write(&zip, &release.assets[ZIP]).unwrap();
    let fifo = ws.tmp.path().join("media/SHA256SUMS");
    mkfifo(&fifo);
    for (sums, said) in [
        (Path::new("/dev/zero"), "is a device, not a file"),
        (fifo.as_path(), "is a FIFO, not a file"),
    ] {
        let build = ws.build_command(
            "http://127.0.0.1:9/unused",
            VERSION,
            &[
                "--zip",
                zip.to_str().unwrap(),
                "--sha256sums",
                sums.to_str().unwrap(),
            ],
        );
        let mut capped = Command::new("prlimit");
        capped
            .arg(format!("--as={}", 2u64 << 30))
            .arg("--")
            .arg(build.get_program())
            .args(build.get_args())
            .envs(build.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let (run, took) = run_within(
            &mut capped,
            &ws.tmp.path().join("tmp"),
            Duration::from_secs(30),
        );
        run.assert_fails_with(&["--sha256sums", said]);
        assert!(took < Duration::from_secs(10), "{said}: took {took:?}");
        assert_eq!(ws.out_names(), Vec::<String>::new());
    }
}
