//! `cargo xtask publish` and `cargo xtask verify` against a real S3 server process (s3s-fs) on
//! loopback, with the bucket's files served over HTTP as the public domain would serve them.

mod s3;
#[path = "../../xtask/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use s3::{CuttingProxy, ACCESS_KEY, BUCKET, S3, SECRET_KEY};
use support::fixture::{sha256_hex, Release};
use support::mirror::Mirror;
use support::{Run, Workspace, XTASK};

/// The publish binary, which `cargo xtask publish ARGS` builds and runs with ARGS.
const PUBLISH: &str = env!("CARGO_BIN_EXE_xtask-publish");

/// `xtask publish ARGS` with the test server's keys, nothing inherited that matters.
fn publish_command(endpoint: &str, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(PUBLISH);
    command
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("R2_ENDPOINT", endpoint)
        .env("R2_BUCKET", BUCKET)
        .env("R2_ACCESS_KEY_ID", ACCESS_KEY)
        .env("R2_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .env_remove("R2_ACCOUNT_ID")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("ALLOY_SYSEXT_MULTIPART_THRESHOLD")
        .env_remove("ALLOY_SYSEXT_PART_SIZE");
    command
}

/// Runs a command and checks that the secret key appears nowhere in what it printed.
fn run(command: &mut Command) -> Run {
    let run = Run::from_command(command);
    assert_no_secret(&run);
    run
}

fn assert_no_secret(run: &Run) {
    assert!(
        !run.stdout.contains(SECRET_KEY) && !run.stderr.contains(SECRET_KEY),
        "the secret key was printed\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
}

fn publish(s3: &S3, dir: &Path, args: &[&str]) -> Run {
    run(&mut publish_command(&s3.endpoint, dir, args))
}

fn verify(base_url: &str, args: &[&str]) -> Run {
    Run::from_command(
        Command::new(XTASK)
            .arg("verify")
            .args(args)
            .arg("--base-url")
            .arg(base_url)
            .env_remove("SYSEXT_BASE_URL"),
    )
}

/// A file that stands in for an image where the test is about bucket semantics.
fn fabricate(dir: &Path, version: &str, arch: &str, size: usize, seed: u8) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let name = format!("alloy-{version}-{arch}.raw");
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    std::fs::write(dir.join(&name), &bytes).unwrap();
    std::fs::write(
        dir.join(format!("{name}.sha256")),
        format!("{}  {name}\n", sha256_hex(&bytes)),
    )
    .unwrap();
    bytes
}

/// Real images, built by `xtask build` from a fixture release.
fn build_images(version: &str) -> Workspace {
    let mirror = Mirror::start();
    mirror.add_release(&Release::new(version));
    let ws = Workspace::new();
    ws.build(&mirror.base_url, version, &["--arch", "amd64"])
        .assert_ok();
    ws
}

/// Every line of the bucket's SHA256SUMS names an object that exists with exactly that digest,
/// and so does every .raw.sha256.
fn assert_no_dangling_checksum(s3: &S3) {
    if let Some(index) = s3.object("SHA256SUMS") {
        for line in String::from_utf8(index).unwrap().lines() {
            let (digest, name) = line.split_once("  ").unwrap();
            let image = s3
                .object(name)
                .unwrap_or_else(|| panic!("SHA256SUMS lists {name}, which is not in the bucket"));
            assert_eq!(
                sha256_hex(&image),
                digest,
                "{name} is not what SHA256SUMS says"
            );
        }
    }
    for key in s3.keys().iter().filter(|k| k.ends_with(".raw.sha256")) {
        let text = String::from_utf8(s3.object(key).unwrap()).unwrap();
        let (digest, name) = text.trim_end().split_once("  ").unwrap();
        let image = s3
            .object(name)
            .unwrap_or_else(|| panic!("{key} exists but {name} does not"));
        assert_eq!(sha256_hex(&image), digest, "{key} does not describe {name}");
    }
}

#[test]
fn publish_then_verify_from_the_public_url_and_republishing_changes_nothing() {
    let ws = build_images("1.10.2");
    let s3 = S3::start();
    let image = "alloy-1.10.2-amd64.raw";

    let first = publish(&s3, &ws.out, &["1.10.2"]);
    first.assert_ok();
    let local = std::fs::read(ws.out.join(image)).unwrap();
    let digest = sha256_hex(&local);
    assert_eq!(s3.object(image).as_deref(), Some(&local[..]));
    assert_eq!(
        s3.object(&format!("{image}.sha256")).unwrap(),
        format!("{digest}  {image}\n").into_bytes()
    );
    assert_eq!(
        s3.object("SHA256SUMS").unwrap(),
        format!("{digest}  {image}\n").into_bytes()
    );
    assert!(first.stdout.contains(&digest) && first.stdout.contains("uploaded"));
    // How the objects are served.
    let image_meta = s3.metadata(image);
    assert!(
        image_meta.contains("application/octet-stream"),
        "{image_meta}"
    );
    assert!(image_meta.contains("immutable"), "{image_meta}");
    let index_meta = s3.metadata("SHA256SUMS");
    assert!(index_meta.contains("text/plain"), "{index_meta}");
    assert!(index_meta.contains("max-age=60"), "{index_meta}");
    assert!(!index_meta.contains("immutable"), "{index_meta}");
    assert_no_dangling_checksum(&s3);

    // verify, by version and from the index.
    let checked = verify(&s3.public_url, &["1.10.2"]);
    checked.assert_ok();
    let row = checked
        .stdout
        .lines()
        .find(|l| l.starts_with(image))
        .unwrap();
    assert!(
        row.contains(&digest) && row.trim_end().ends_with("ok"),
        "{row}"
    );
    verify(&s3.public_url, &[]).assert_ok();
    // No arm64 image is listed: verifying arm64 from the index fails, saying so.
    verify(&s3.public_url, &["--arch", "arm64"]).assert_fails_with(&["lists no arm64 image"]);

    // Again: nothing is rewritten.
    let mtime = |key: &str| {
        std::fs::metadata(s3.bucket_dir().join(key))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before: Vec<_> = s3.keys().iter().map(|k| mtime(k)).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = publish(&s3, &ws.out, &["1.10.2"]);
    again.assert_ok();
    assert!(
        again.stdout.contains("already published"),
        "{}",
        again.stdout
    );
    let after: Vec<_> = s3.keys().iter().map(|k| mtime(k)).collect();
    assert_eq!(before, after, "a re-publish rewrote an object");
}

#[test]
fn squashfs_and_erofs_images_publish_and_verify_without_mounting() {
    let s3 = S3::start();
    for (version, format) in [("1.10.3", "squashfs"), ("1.11.0", "erofs")] {
        let mirror = Mirror::start();
        mirror.add_release(&Release::new(version));
        let ws = Workspace::new();
        ws.build(&mirror.base_url, version, &["--format", format])
            .assert_ok();
        publish(&s3, &ws.out, &[version]).assert_ok();
    }
    let checked = verify(&s3.public_url, &[]);
    checked.assert_ok();
    for image in ["alloy-1.10.3-amd64.raw", "alloy-1.11.0-amd64.raw"] {
        let row = checked.stdout.lines().find(|l| l.starts_with(image));
        assert!(
            row.is_some_and(|r| r.trim_end().ends_with("ok")),
            "{image}:\n{}",
            checked.stdout
        );
    }
    // A squashfs image whose binary is for the wrong machine is caught inside the image.
    let mirror = Mirror::start();
    let arm = support::fixture::fake_alloy("1.12.0", "arm64");
    mirror.add_release(&Release::new("1.12.0").with_zip(
        "arm64",
        support::fixture::zip_of(&[("alloy-linux-arm64", &arm, 0o755)]),
    ));
    let ws = Workspace::new();
    ws.build(
        &mirror.base_url,
        "1.12.0",
        &["--format", "squashfs", "--arch", "arm64"],
    )
    .assert_ok();
    // Publish it under the amd64 name: verify must see ARCHITECTURE=arm64 and an AArch64 ELF.
    std::fs::rename(
        ws.out.join("alloy-1.12.0-arm64.raw"),
        ws.out.join("alloy-1.12.0-amd64.raw"),
    )
    .unwrap();
    let digest = sha256_hex(&std::fs::read(ws.out.join("alloy-1.12.0-amd64.raw")).unwrap());
    std::fs::write(
        ws.out.join("alloy-1.12.0-amd64.raw.sha256"),
        format!("{digest}  alloy-1.12.0-amd64.raw\n"),
    )
    .unwrap();
    std::fs::remove_file(ws.out.join("alloy-1.12.0-arm64.raw.sha256")).unwrap();
    publish(&s3, &ws.out, &["1.12.0"]).assert_ok();
    let failed = verify(&s3.public_url, &["1.12.0"]);
    failed.assert_fails_with(&[]);
    assert!(
        failed.stdout.contains("ARCHITECTURE=arm64") && failed.stdout.contains("AArch64"),
        "verify names what is wrong inside the squashfs image:\n{}",
        failed.stdout
    );
}

#[test]
fn different_bytes_for_a_published_version_are_refused_and_the_bucket_is_unchanged() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let original = fabricate(dir.path(), "1.10.2", "amd64", 300_000, 1);
    publish(&s3, dir.path(), &[]).assert_ok();
    let index_before = s3.object("SHA256SUMS").unwrap();

    let other = fabricate(dir.path(), "1.10.2", "amd64", 300_000, 2);
    let refused = publish(&s3, dir.path(), &["1.10.2"]);
    refused.assert_fails_with(&[&sha256_hex(&original), &sha256_hex(&other)]);
    assert_eq!(s3.object("alloy-1.10.2-amd64.raw"), Some(original));
    assert_eq!(s3.object("SHA256SUMS"), Some(index_before));

    // Even when the index does not list it (say, a publish that died before the index): the
    // image itself is refused, and nothing changes.
    std::fs::remove_file(s3.bucket_dir().join("SHA256SUMS")).unwrap();
    let refused = publish(&s3, dir.path(), &["1.10.2"]);
    refused.assert_fails_with(&["refusing to overwrite", "Nothing was changed"]);
    assert_eq!(s3.object("SHA256SUMS"), None);
}

#[test]
fn a_local_image_that_does_not_match_its_checksum_is_not_uploaded() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    fabricate(dir.path(), "1.10.2", "amd64", 1000, 1);
    std::fs::write(dir.path().join("alloy-1.10.2-amd64.raw"), b"changed").unwrap();
    publish(&s3, dir.path(), &[]).assert_fails_with(&["rebuild", "Nothing was uploaded"]);
    std::fs::remove_file(dir.path().join("alloy-1.10.2-amd64.raw.sha256")).unwrap();
    publish(&s3, dir.path(), &[]).assert_fails_with(&["alloy-1.10.2-amd64.raw.sha256"]);
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
}

#[test]
fn verify_fails_on_a_tampered_image_or_a_missing_checksum() {
    let ws = build_images("1.10.2");
    let s3 = S3::start();
    publish(&s3, &ws.out, &[]).assert_ok();
    verify(&s3.public_url, &["1.10.2"]).assert_ok();
    let image = s3.bucket_dir().join("alloy-1.10.2-amd64.raw");
    let original = std::fs::read(&image).unwrap();

    // A good amd64 image published under an arm64 name: the inside gives it away.
    let arm64 = "alloy-1.10.2-arm64.raw";
    let digest = sha256_hex(&original);
    std::fs::write(s3.bucket_dir().join(arm64), &original).unwrap();
    std::fs::write(
        s3.bucket_dir().join(format!("{arm64}.sha256")),
        format!("{digest}  {arm64}\n"),
    )
    .unwrap();
    let mut index = s3.object("SHA256SUMS").unwrap();
    index.extend_from_slice(format!("{digest}  {arm64}\n").as_bytes());
    std::fs::write(s3.bucket_dir().join("SHA256SUMS"), index).unwrap();
    let failed = verify(&s3.public_url, &["--arch", "arm64"]);
    failed.assert_fails_with(&["failed verification"]);
    for needle in [
        "ARCHITECTURE=x86-64, expected ARCHITECTURE=arm64",
        "ELF executable for x86-64, not for AArch64",
    ] {
        assert!(
            failed.stdout.contains(needle),
            "{needle}\n{}",
            failed.stdout
        );
    }
    verify(&s3.public_url, &["--arch", "amd64"]).assert_ok();

    // One flipped byte at rest.
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    std::fs::write(&image, &tampered).unwrap();
    let failed = verify(&s3.public_url, &["1.10.2"]);
    failed.assert_fails_with(&["failed verification"]);
    assert!(
        failed.stdout.contains("FAILED") && failed.stdout.contains(&sha256_hex(&tampered)),
        "{}",
        failed.stdout
    );

    // The right bytes, but no .sha256 beside them.
    std::fs::write(&image, &original).unwrap();
    std::fs::remove_file(s3.bucket_dir().join("alloy-1.10.2-amd64.raw.sha256")).unwrap();
    let failed = verify(&s3.public_url, &[]);
    failed.assert_fails_with(&["failed verification"]);
    assert!(
        failed.stdout.contains("no alloy-1.10.2-amd64.raw.sha256"),
        "{}",
        failed.stdout
    );

    // An image that is not an Alloy sysext at all, consistently checksummed.
    let junk = b"not a filesystem".to_vec();
    std::fs::write(&image, &junk).unwrap();
    let digest = sha256_hex(&junk);
    std::fs::write(
        s3.bucket_dir().join("alloy-1.10.2-amd64.raw.sha256"),
        format!("{digest}  alloy-1.10.2-amd64.raw\n"),
    )
    .unwrap();
    std::fs::write(
        s3.bucket_dir().join("SHA256SUMS"),
        format!("{digest}  alloy-1.10.2-amd64.raw\n"),
    )
    .unwrap();
    let failed = verify(&s3.public_url, &["1.10.2"]);
    failed.assert_fails_with(&["failed verification"]);
    assert!(
        failed
            .stdout
            .contains("not an ext4, squashfs or erofs image"),
        "{}",
        failed.stdout
    );

    // A version that was never published.
    verify(&s3.public_url, &["9.9.9"]).assert_fails_with(&["failed verification"]);
}

/// Fabricates an image for each version, then publishes them two at a time, each pair at once
/// (the second pair meets an index that exists already); `env` is added to every publish.
/// Returns every run, each already checked to succeed and to print no secret.
fn publish_in_concurrent_pairs(
    s3: &S3,
    versions: &[&str],
    size: usize,
    env: &[(&str, &str)],
) -> Vec<Run> {
    let dirs: Vec<tempfile::TempDir> = versions
        .iter()
        .enumerate()
        .map(|(i, version)| {
            let dir = tempfile::tempdir().unwrap();
            fabricate(dir.path(), version, "amd64", size, i as u8 + 1);
            dir
        })
        .collect();
    let mut runs = Vec::new();
    for pair in dirs.chunks(2) {
        let children: Vec<_> = pair
            .iter()
            .map(|dir| {
                publish_command(&s3.endpoint, dir.path(), &[])
                    .envs(env.iter().copied())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            let run = Run {
                success: output.status.success(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            };
            assert_no_secret(&run);
            run.assert_ok();
            runs.push(run);
        }
    }
    runs
}

#[test]
fn two_publishes_of_different_versions_at_once_both_end_up_in_the_index() {
    let s3 = S3::start();
    publish_in_concurrent_pairs(&s3, &["1.10.0", "1.10.1", "1.11.0", "1.9.5"], 200_000, &[]);
    let index = String::from_utf8(s3.object("SHA256SUMS").unwrap()).unwrap();
    let names: Vec<&str> = index.lines().map(|l| &l[66..]).collect();
    assert_eq!(
        names,
        [
            "alloy-1.9.5-amd64.raw",
            "alloy-1.10.0-amd64.raw",
            "alloy-1.10.1-amd64.raw",
            "alloy-1.11.0-amd64.raw",
        ],
        "every version, sorted by version"
    );
    assert_no_dangling_checksum(&s3);
}

#[test]
fn release_candidates_go_to_the_rc_channel_and_never_into_the_stable_index() {
    let s3 = S3::start();
    let stable = tempfile::tempdir().unwrap();
    fabricate(stable.path(), "1.10.2", "amd64", 100_000, 1);
    publish(&s3, stable.path(), &[]).assert_ok();
    let rc = tempfile::tempdir().unwrap();
    fabricate(rc.path(), "1.11.0-rc.1", "amd64", 100_000, 2);
    publish(&s3, rc.path(), &[]).assert_ok();

    let stable_index = String::from_utf8(s3.object("SHA256SUMS").unwrap()).unwrap();
    assert!(!stable_index.contains("rc"), "{stable_index}");
    assert!(
        stable_index.contains("alloy-1.10.2-amd64.raw"),
        "{stable_index}"
    );
    let rc_index = String::from_utf8(s3.object("rc/SHA256SUMS").unwrap()).unwrap();
    assert_eq!(
        rc_index.lines().map(|l| &l[66..]).collect::<Vec<_>>(),
        ["alloy-1.11.0-rc.1-amd64.raw"]
    );
    assert!(s3.object("rc/alloy-1.11.0-rc.1-amd64.raw").is_some());
    assert!(s3.object("rc/alloy-1.11.0-rc.1-amd64.raw.sha256").is_some());
    assert!(s3.object("alloy-1.11.0-rc.1-amd64.raw").is_none());

    // Both versions in one directory: refused, since they belong in different indexes.
    let both = tempfile::tempdir().unwrap();
    fabricate(both.path(), "1.10.3", "amd64", 1000, 3);
    fabricate(both.path(), "1.12.0-rc.1", "amd64", 1000, 4);
    publish(&s3, both.path(), &[])
        .assert_fails_with(&["release candidates and releases", "Nothing was uploaded"]);
    assert!(s3.object("alloy-1.10.3-amd64.raw").is_none());
}

#[test]
fn missing_settings_or_a_wrong_bucket_or_key_give_clear_errors_before_any_upload() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    fabricate(dir.path(), "1.10.2", "amd64", 1000, 1);

    let mut no_credentials = publish_command(&s3.endpoint, dir.path(), &[]);
    no_credentials
        .env_remove("R2_ACCESS_KEY_ID")
        .env_remove("R2_SECRET_ACCESS_KEY")
        .env_remove("R2_BUCKET");
    run(&mut no_credentials).assert_fails_with(&[
        "R2_ACCESS_KEY_ID",
        "R2_SECRET_ACCESS_KEY",
        "R2_BUCKET",
        "nothing was uploaded",
    ]);

    // The standard AWS variables are the fallback.
    let mut aws_keys = publish_command(&s3.endpoint, dir.path(), &[]);
    aws_keys
        .env_remove("R2_ACCESS_KEY_ID")
        .env_remove("R2_SECRET_ACCESS_KEY")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    run(&mut aws_keys).assert_ok();
    std::fs::remove_dir_all(s3.bucket_dir()).unwrap();
    std::fs::create_dir(s3.bucket_dir()).unwrap();

    let mut wrong_bucket = publish_command(&s3.endpoint, dir.path(), &["--bucket", "nosuch"]);
    run(&mut wrong_bucket).assert_fails_with(&["404", "NoSuchBucket", "nosuch"]);

    let wrong_secret = "not-the-secret-but-also-secret-1234";
    let mut wrong_key = publish_command(&s3.endpoint, dir.path(), &["-v"]);
    wrong_key.env("R2_SECRET_ACCESS_KEY", wrong_secret);
    let denied = run(&mut wrong_key);
    denied.assert_fails_with(&["403", "access key"]);
    assert!(!denied.stderr.contains(wrong_secret) && !denied.stdout.contains(wrong_secret));
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
}

#[test]
fn the_secret_key_never_appears_in_any_output_even_verbose() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    fabricate(dir.path(), "1.10.2", "amd64", 12 << 20, 1);
    let args = ["-v"];
    let mut verbose = publish_command(&s3.endpoint, dir.path(), &args);
    verbose
        .env("ALLOY_SYSEXT_MULTIPART_THRESHOLD", "1048576")
        .env("ALLOY_SYSEXT_PART_SIZE", "5242880")
        .env("AWS_LOG_LEVEL", "trace")
        .env("RUST_LOG", "trace,aws=trace,aws_smithy_runtime=trace");
    let first = run(&mut verbose);
    first.assert_ok();
    assert!(
        first.stderr.contains("credentials from R2_ACCESS_KEY_ID")
            && first.stderr.contains("3 parts"),
        "{}",
        first.stderr
    );
    // A refusal, an error, and --help all keep it to themselves too.
    fabricate(dir.path(), "1.10.2", "amd64", 1000, 2);
    run(&mut publish_command(&s3.endpoint, dir.path(), &args))
        .assert_fails_with(&["never changes"]);
    run(&mut publish_command(&s3.endpoint, dir.path(), &["--help"])).assert_ok();
}

#[test]
fn a_connection_cut_mid_upload_is_retried_and_never_leaves_a_dangling_checksum() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = fabricate(dir.path(), "1.10.2", "amd64", 3 << 20, 1);

    // Cut once, in the middle of the image's body: the upload is retried and lands whole.
    let proxy = CuttingProxy::start(&s3.endpoint, 1 << 20, false);
    run(&mut publish_command(&proxy.url, dir.path(), &[])).assert_ok();
    assert_eq!(proxy.cuts(), 1, "the proxy never cut the upload");
    assert_eq!(s3.object("alloy-1.10.2-amd64.raw"), Some(bytes));
    assert_no_dangling_checksum(&s3);

    // Cut every time: the publish fails, and no checksum points at a missing or partial image.
    fabricate(dir.path(), "1.10.3", "amd64", 3 << 20, 2);
    let always = CuttingProxy::start(&s3.endpoint, 1 << 20, true);
    let failed = run(&mut publish_command(&always.url, dir.path(), &["1.10.3"]));
    assert!(!failed.success, "{}", failed.stderr);
    assert!(always.cuts() >= 2, "retried: {} cuts", always.cuts());
    assert_eq!(s3.object("alloy-1.10.3-amd64.raw"), None);
    assert_eq!(s3.object("alloy-1.10.3-amd64.raw.sha256"), None);
    assert_no_dangling_checksum(&s3);

    // The same through multipart: parts are cut, the upload is aborted, nothing is left.
    fabricate(dir.path(), "1.10.4", "amd64", 12 << 20, 3);
    let mut multipart = publish_command(&always.url, dir.path(), &["1.10.4"]);
    multipart
        .env("ALLOY_SYSEXT_MULTIPART_THRESHOLD", "1048576")
        .env("ALLOY_SYSEXT_PART_SIZE", "5242880");
    let failed = run(&mut multipart);
    assert!(!failed.success, "{}", failed.stderr);
    assert!(failed.stderr.contains("in 3 parts"), "{}", failed.stderr);
    assert_eq!(s3.object("alloy-1.10.4-amd64.raw"), None);
    assert!(s3.pending_parts().is_empty(), "{:?}", s3.pending_parts());
    assert_no_dangling_checksum(&s3);
}

#[test]
fn large_images_go_up_in_equal_parts_and_arrive_whole() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = fabricate(dir.path(), "1.10.2", "amd64", 12 << 20, 7);
    // One cut along the way: a part is retried.
    let proxy = CuttingProxy::start(&s3.endpoint, 7 << 20, false);
    let mut command = publish_command(&proxy.url, dir.path(), &["-v"]);
    command
        .env("ALLOY_SYSEXT_MULTIPART_THRESHOLD", "1048576")
        .env("ALLOY_SYSEXT_PART_SIZE", "5242880");
    let published = run(&mut command);
    published.assert_ok();
    assert!(
        published.stderr.contains("3 parts of 5242880 bytes"),
        "{}",
        published.stderr
    );
    assert_eq!(s3.object("alloy-1.10.2-amd64.raw"), Some(bytes));
    assert!(s3.pending_parts().is_empty(), "{:?}", s3.pending_parts());
    assert_no_dangling_checksum(&s3);
}

#[test]
fn a_body_corrupted_on_the_way_is_refused_by_the_server_and_nothing_is_stored() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = fabricate(dir.path(), "1.10.2", "amd64", 3 << 20, 1);
    let proxy = CuttingProxy::corrupting(&s3.endpoint, 2 << 20);
    let failed = run(&mut publish_command(&proxy.url, dir.path(), &[]));
    assert_eq!(proxy.cuts(), 1, "the proxy never flipped a bit");
    failed.assert_fails_with(&["BadDigest", "run publish again"]);
    assert_eq!(s3.object("alloy-1.10.2-amd64.raw"), None);
    assert_no_dangling_checksum(&s3);
    // The proxy flips only once: the next run gets the bytes through.
    run(&mut publish_command(&proxy.url, dir.path(), &[])).assert_ok();
    assert_eq!(s3.object("alloy-1.10.2-amd64.raw"), Some(bytes));
    assert_no_dangling_checksum(&s3);
}

/// A throwaway OpenPGP key made by gpg in its own GNUPGHOME, whose agent stops on drop.
struct TestKey {
    home: tempfile::TempDir,
    /// The armored private key, as SYSEXT_GPG_KEY holds it.
    secret: String,
    /// Binary public keyring (`gpg --export`), as hosts install it.
    public: PathBuf,
    /// The same public key, armored.
    armored_public: PathBuf,
    fingerprint: String,
}

impl TestKey {
    fn new(name: &str) -> TestKey {
        TestKey::generate(name, "")
    }

    fn generate(name: &str, passphrase: &str) -> TestKey {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::Builder::new()
            .prefix("gnupg.")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .unwrap();
        let gpg = |args: &[&str]| -> String {
            let output = Command::new("gpg")
                .env("GNUPGHOME", home.path())
                .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
                .args(["--passphrase", passphrase])
                .args(args)
                .output()
                .expect("running gpg (install gnupg: bash scripts/install-deps.sh --test)");
            assert!(
                output.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        };
        let uid = format!("{name} <{name}@alloy-sysext.invalid>");
        gpg(&["--quick-gen-key", &uid, "ed25519", "sign", "never"]);
        let secret = gpg(&["--armor", "--export-secret-keys"]);
        let public = home.path().join(format!("{name}.gpg"));
        let armored_public = home.path().join(format!("{name}.asc"));
        gpg(&["--output", public.to_str().unwrap(), "--export"]);
        gpg(&[
            "--armor",
            "--output",
            armored_public.to_str().unwrap(),
            "--export",
        ]);
        let fingerprint = gpg(&["--with-colons", "--list-keys"])
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_string())
            .unwrap();
        assert!(secret.contains("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
        assert_eq!(fingerprint.len(), 40, "{fingerprint}");
        TestKey {
            home,
            secret,
            public,
            armored_public,
            fingerprint,
        }
    }

    /// Whether gpgv, with this key's public keyring, accepts `signature` of `data`.
    fn signed(&self, data: &[u8], signature: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let (data_path, signature_path) = (dir.path().join("data"), dir.path().join("data.gpg"));
        std::fs::write(&data_path, data).unwrap();
        std::fs::write(&signature_path, signature).unwrap();
        Command::new("gpgv")
            .arg("--homedir")
            .arg(dir.path())
            .arg("--keyring")
            .arg(&self.public)
            .arg(&signature_path)
            .arg(&data_path)
            .output()
            .expect("running gpgv")
            .status
            .success()
    }
}

impl Drop for TestKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// Neither the armored key nor any line of its key material (not the armor header) was printed.
fn assert_no_key_material(run: &Run, secret: &str) {
    let lines: Vec<&str> = secret
        .lines()
        .filter(|l| l.len() > 20 && !l.starts_with("-----"))
        .collect();
    assert!(lines.len() > 1, "{secret:?} is not an armored key");
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains(secret.trim()),
            "the key was printed:\n{text}"
        );
        for line in &lines {
            assert!(
                !text.contains(line),
                "a line of the key was printed: {line}\n{text}"
            );
        }
    }
}

fn publish_signed(s3: &S3, dir: &Path, args: &[&str], key: &TestKey) -> Run {
    let mut command = publish_command(&s3.endpoint, dir, args);
    command.env("SYSEXT_GPG_KEY", &key.secret);
    let run = run(&mut command);
    assert_no_key_material(&run, &key.secret);
    run
}

/// The bucket's SHA256SUMS.gpg is a good signature of its SHA256SUMS by `key`.
fn assert_signed_by(s3: &S3, key: &TestKey) {
    let index = s3.object("SHA256SUMS").expect("no SHA256SUMS");
    let signature = s3.object("SHA256SUMS.gpg").expect("no SHA256SUMS.gpg");
    assert!(
        key.signed(&index, &signature),
        "SHA256SUMS.gpg is not a good signature of SHA256SUMS:\n{}",
        String::from_utf8_lossy(&index)
    );
}

/// The row of verify's table for `name`.
fn row<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name}:\n{}", run.stdout))
}

#[test]
fn a_signing_key_makes_publish_sign_sha256sums_and_verify_keyring_checks_it() {
    let key = TestKey::new("signer");
    let other = TestKey::new("other");
    let ws = build_images("1.10.2");
    let s3 = S3::start();
    let keyring = key.public.to_str().unwrap();

    let first = publish_signed(&s3, &ws.out, &["1.10.2"], &key);
    first.assert_ok();
    assert_signed_by(&s3, &key);
    assert!(
        !other.signed(
            &s3.object("SHA256SUMS").unwrap(),
            &s3.object("SHA256SUMS.gpg").unwrap()
        ),
        "gpgv accepts any key"
    );
    assert!(
        first.stdout.contains(&key.fingerprint) && first.stdout.contains("signed and uploaded"),
        "{}",
        first.stdout
    );
    let meta = s3.metadata("SHA256SUMS.gpg");
    assert!(meta.contains("application/pgp-signature"), "{meta}");
    assert!(
        meta.contains("max-age=60") && !meta.contains("immutable"),
        "{meta}"
    );

    // verify --keyring, binary or armored, names the signer; without it, says it is unchecked.
    for ring in [&key.public, &key.armored_public] {
        let checked = verify(
            &s3.public_url,
            &["1.10.2", "--keyring", ring.to_str().unwrap()],
        );
        checked.assert_ok();
        let signature = row(&checked, "SHA256SUMS.gpg");
        assert!(
            signature.ends_with(&format!("ok, signed by {}", key.fingerprint)),
            "{signature}"
        );
        assert!(row(&checked, "alloy-1.10.2-amd64.raw").ends_with("ok"));
    }
    let unchecked = verify(&s3.public_url, &["1.10.2"]);
    unchecked.assert_ok();
    assert!(
        unchecked
            .stdout
            .contains("SHA256SUMS.gpg is published but was not checked"),
        "{}",
        unchecked.stdout
    );
    // Another key's keyring: the signature row fails, and so does verify.
    let wrong = verify(
        &s3.public_url,
        &["1.10.2", "--keyring", other.public.to_str().unwrap()],
    );
    wrong.assert_fails_with(&["failed verification", "SHA256SUMS.gpg"]);
    assert!(
        row(&wrong, "SHA256SUMS.gpg").contains("FAILED"),
        "{}",
        wrong.stdout
    );
    assert!(row(&wrong, "alloy-1.10.2-amd64.raw").ends_with("ok"));

    // Another version: SHA256SUMS changes, and the signature with it.
    let signature_before = s3.object("SHA256SUMS.gpg").unwrap();
    let next = tempfile::tempdir().unwrap();
    fabricate(next.path(), "1.10.3", "amd64", 1000, 3);
    publish_signed(&s3, next.path(), &[], &key).assert_ok();
    let index = String::from_utf8(s3.object("SHA256SUMS").unwrap()).unwrap();
    assert!(
        index.contains("alloy-1.10.2-amd64.raw") && index.contains("alloy-1.10.3-amd64.raw"),
        "{index}"
    );
    assert_ne!(s3.object("SHA256SUMS.gpg").unwrap(), signature_before);
    assert_signed_by(&s3, &key);
    verify(&s3.public_url, &["1.10.2", "--keyring", keyring]).assert_ok();

    // Nothing new: the signature is left as it is.
    let again = publish_signed(&s3, next.path(), &[], &key);
    again.assert_ok();
    assert!(
        again.stdout.contains("already a valid signature"),
        "{}",
        again.stdout
    );

    // A tampered signature fails verify; publishing again, with nothing new, repairs it.
    let mut tampered = s3.object("SHA256SUMS.gpg").unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    std::fs::write(s3.bucket_dir().join("SHA256SUMS.gpg"), &tampered).unwrap();
    let failed = verify(&s3.public_url, &["1.10.2", "--keyring", keyring]);
    failed.assert_fails_with(&["failed verification: SHA256SUMS.gpg"]);
    assert!(row(&failed, "SHA256SUMS.gpg").contains("FAILED"));
    let repaired = publish_signed(&s3, next.path(), &[], &key);
    repaired.assert_ok();
    assert!(
        repaired.stdout.contains("signed and uploaded"),
        "{}",
        repaired.stdout
    );
    assert_signed_by(&s3, &key);
    verify(&s3.public_url, &["1.10.2", "--keyring", keyring]).assert_ok();

    // SHA256SUMS changed without signing it again: verify --keyring fails on the signature
    // alone; a publish that adds nothing signs it again.
    let shortened: String = index
        .lines()
        .filter(|l| l.ends_with("alloy-1.10.2-amd64.raw"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(s3.bucket_dir().join("SHA256SUMS"), &shortened).unwrap();
    let failed = verify(&s3.public_url, &["1.10.2", "--keyring", keyring]);
    failed.assert_fails_with(&["1 of 2 artifact(s)", "SHA256SUMS.gpg"]);
    assert!(row(&failed, "alloy-1.10.2-amd64.raw").ends_with("ok"));
    verify(&s3.public_url, &["1.10.2"]).assert_ok();
    publish_signed(&s3, &ws.out, &["1.10.2"], &key).assert_ok();
    assert_eq!(s3.object("SHA256SUMS").unwrap(), shortened.as_bytes());
    assert_signed_by(&s3, &key);

    // A publish without the key that would change a signed SHA256SUMS is refused up front.
    let unsigned = tempfile::tempdir().unwrap();
    fabricate(unsigned.path(), "1.10.4", "amd64", 1000, 4);
    publish(&s3, unsigned.path(), &[]).assert_fails_with(&[
        "SHA256SUMS.gpg exists",
        "SYSEXT_GPG_KEY",
        "Nothing was changed",
    ]);
    assert_eq!(s3.object("alloy-1.10.4-amd64.raw"), None);
    assert_signed_by(&s3, &key);

    // No signature at all.
    std::fs::remove_file(s3.bucket_dir().join("SHA256SUMS.gpg")).unwrap();
    let failed = verify(&s3.public_url, &["1.10.2", "--keyring", keyring]);
    failed.assert_fails_with(&["SHA256SUMS.gpg"]);
    assert!(
        row(&failed, "SHA256SUMS.gpg").contains("missing") && failed.stdout.contains("404"),
        "{}",
        failed.stdout
    );
    // A keyring that does not exist is named before anything is downloaded.
    verify(
        &s3.public_url,
        &["1.10.2", "--keyring", "/nonexistent/pub.gpg"],
    )
    .assert_fails_with(&["--keyring /nonexistent/pub.gpg"]);
}

#[test]
fn a_bad_signing_key_fails_before_any_upload_and_is_never_shown() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    fabricate(dir.path(), "1.10.2", "amd64", 1000, 1);
    let key = TestKey::new("signer");
    let with_key = |value: &str| {
        let mut command = publish_command(&s3.endpoint, dir.path(), &[]);
        command.env("SYSEXT_GPG_KEY", value);
        run(&mut command)
    };

    // Not a key at all.
    let not_a_key = "hunter2-Zq8LmN4vXw-definitely-secret";
    let failed = with_key(not_a_key);
    failed.assert_fails_with(&[
        "SYSEXT_GPG_KEY",
        "armored OpenPGP private key",
        "nothing was uploaded",
    ]);
    assert!(
        !failed.stdout.contains(not_a_key) && !failed.stderr.contains(not_a_key),
        "{}",
        failed.stderr
    );
    // A damaged key: a line of it missing.
    let mut lines: Vec<&str> = key.secret.lines().collect();
    lines.remove(lines.len() / 2);
    let damaged = lines.join("\n");
    let failed = with_key(&damaged);
    failed.assert_fails_with(&["could not import", "SYSEXT_GPG_KEY", "nothing was uploaded"]);
    assert_no_key_material(&failed, &key.secret);
    // A public key only.
    let public = std::fs::read_to_string(&key.armored_public).unwrap();
    with_key(&public).assert_fails_with(&["SYSEXT_GPG_KEY", "nothing was uploaded"]);
    // A key with a passphrase cannot sign unattended.
    let locked = TestKey::generate("locked", "pass-phrase-7Hq2");
    let failed = with_key(&locked.secret);
    failed.assert_fails_with(&["passphrase", "nothing was uploaded"]);
    assert_no_key_material(&failed, &locked.secret);
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());

    // Empty is unset: published, not signed.
    with_key("").assert_ok();
    assert!(s3.object("SHA256SUMS").is_some());
    assert_eq!(s3.object("SHA256SUMS.gpg"), None);
    // With the key, a publish with nothing new adds the missing signature.
    let signed = publish_signed(&s3, dir.path(), &[], &key);
    signed.assert_ok();
    assert!(
        signed.stdout.contains("signed and uploaded"),
        "{}",
        signed.stdout
    );
    assert_signed_by(&s3, &key);
    // A new key replaces a signature made by the old one.
    let rotated = TestKey::new("rotated");
    publish_signed(&s3, dir.path(), &[], &rotated).assert_ok();
    assert_signed_by(&s3, &rotated);
}

#[test]
fn signed_publishes_at_once_leave_a_signature_of_the_final_sha256sums() {
    let key = TestKey::new("signer");
    let s3 = S3::start();
    let runs = publish_in_concurrent_pairs(
        &s3,
        &["1.10.0", "1.10.1", "1.11.0", "1.9.5"],
        20_000,
        &[("SYSEXT_GPG_KEY", key.secret.as_str())],
    );
    for run in &runs {
        assert_no_key_material(run, &key.secret);
    }
    let index = String::from_utf8(s3.object("SHA256SUMS").unwrap()).unwrap();
    assert_eq!(index.lines().count(), 4, "{index}");
    assert_signed_by(&s3, &key);
}

/// A fake S3 endpoint on loopback: the bucket exists, `SHA256SUMS` and `.gpg` do not (unless
/// `answers` says otherwise), and `answers` decide the rest.
fn fake_bucket(answers: &[(&str, support::http::Answer)]) -> support::http::Server {
    use support::http::Answer;
    let server = support::http::Server::start();
    let no_such_key = Answer::status(
        404,
        "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
    )
    .header("Content-Type", "application/xml");
    server.answer_prefix(&format!("/{BUCKET}/SHA256SUMS"), no_such_key);
    server.answer_prefix("/", Answer::ok(""));
    for (prefix, answer) in answers {
        server.answer_prefix(prefix, answer.clone());
    }
    server
}

/// A bucket that sends an endless `SHA256SUMS`, or an endless object where our image should
/// be, without a Content-Length: publish stops at its limit, says so, and uploads nothing.
#[test]
fn endless_objects_without_a_length_are_cut_at_the_limit_and_nothing_is_uploaded() {
    use support::http::Answer;
    let dir = tempfile::tempdir().unwrap();
    fabricate(dir.path(), "1.10.2", "amd64", 4096, 1);
    let cases = [
        (
            format!("/{BUCKET}/SHA256SUMS?"),
            "reading s3://images/SHA256SUMS: it is larger than 16777216 bytes",
        ),
        (
            format!("/{BUCKET}/alloy-1.10.2-amd64.raw?"),
            "reading s3://images/alloy-1.10.2-amd64.raw: it holds more than 4096 bytes",
        ),
    ];
    for (path, needle) in cases {
        let endless = Answer::endless(vec![b'x'; 64 << 10]).header("ETag", "\"e\"");
        let server = fake_bucket(&[(&path, endless)]);
        let started = std::time::Instant::now();
        let run = run(&mut publish_command(&server.url, dir.path(), &[]));
        run.assert_fails_with(&[needle]);
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        let writes: Vec<String> = server
            .log()
            .iter()
            .filter(|s| s.method == "PUT" || s.method == "POST")
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert!(writes.is_empty(), "{path}: {writes:?}");
    }
}

/// A 5xx from the bucket is one readable line with what to do, not the SDK's debug dump.
#[test]
fn a_server_error_is_said_in_one_line() {
    use support::http::Answer;
    let dir = tempfile::tempdir().unwrap();
    fabricate(dir.path(), "1.10.2", "amd64", 4096, 1);
    let error = Answer::status(
        500,
        "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>",
    )
    .header("Content-Type", "application/xml");
    let server = fake_bucket(&[(&format!("/{BUCKET}/SHA256SUMS?"), error)]);
    let run = run(&mut publish_command(&server.url, dir.path(), &[]));
    run.assert_fails_with(&[
        "error: reading s3://images/SHA256SUMS: the server answered 500 InternalError: We encountered an internal error. Please try again. The storage service failed or is overloaded: wait a little and run publish again\n",
    ]);
    let error_lines: Vec<&str> = run
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .collect();
    assert_eq!(error_lines.len(), 1, "{}", run.stderr);
    for dump in ["ServiceError", "ErrorMetadata", "source:", "Response {"] {
        assert!(!run.stderr.contains(dump), "{dump}: {}", run.stderr);
    }
}

/// Signals a signed publish while gpg signs (a wrapper that sleeps before the real gpg, first
/// in PATH), with the key imported and its agent running, then looks for what could be left:
/// the private GNUPGHOME in TMPDIR, gpg or gpg-agent processes, the R2 secret in their
/// environment. `group`: the whole process group, as a terminal's Ctrl-C; else publish alone.
fn interrupt_a_publish_while_it_signs(signal: &str, group: bool, expected_code: i32) {
    use std::os::unix::process::CommandExt;
    use support::{
        path_with_first, processes_mentioning, processes_with_env, send_signal, tool,
        wait_with_deadline, write_script, KillGroupOnDrop,
    };
    let s3 = S3::start();
    let key = TestKey::new("interrupted");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dist");
    fabricate(&dir, "1.10.2", "amd64", 4096, 1);
    let private_tmp = tmp.path().join("tmp");
    std::fs::create_dir(&private_tmp).unwrap();
    let bin = tmp.path().join("bin");
    let signing = tmp.path().join("signing");
    // gpg gets no variables of ours (not even this path), so the wrapper holds it literally.
    write_script(
        &bin,
        "gpg",
        &format!(
            "#!/bin/sh\ncase \" $* \" in *' --detach-sign '*) echo $$ > '{0}.new'; mv '{0}.new' '{0}'; sleep 60;; esac\nexec '{1}' \"$@\"\n",
            signing.display(),
            tool("gpg").display()
        ),
    );
    let log = std::fs::File::create(tmp.path().join("publish.log")).unwrap();
    let mut command = publish_command(&s3.endpoint, &dir, &[]);
    command
        .env("SYSEXT_GPG_KEY", &key.secret)
        .env("TMPDIR", &private_tmp)
        .env("PATH", path_with_first(&bin))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0);
    let mut publish = command.spawn().unwrap();
    let pid = publish.id() as i32;
    let _group = KillGroupOnDrop(pid);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !signing.exists() {
        if let Some(status) = publish.try_wait().unwrap() {
            let log = std::fs::read_to_string(tmp.path().join("publish.log")).unwrap();
            panic!("publish ended ({status}) before it signed:\n{log}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no signing within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let gpg_pid: i32 = std::fs::read_to_string(&signing)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let homes: Vec<PathBuf> = std::fs::read_dir(&private_tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("alloy-sysext-gnupg.")
        })
        .collect();
    assert_eq!(homes.len(), 1, "{homes:?}");
    let home = &homes[0];
    // The key is on disk and an agent holds it: what the signal must not leave behind.
    assert!(
        std::fs::read_dir(home.join("private-keys-v1.d"))
            .unwrap()
            .count()
            > 0,
        "the key is not imported yet"
    );
    let agents: Vec<(i32, String)> = processes_mentioning("gpg-agent")
        .into_iter()
        .filter(|(p, _)| {
            processes_with_env(&format!("GNUPGHOME={}", home.display()))
                .iter()
                .any(|(q, _)| q == p)
        })
        .collect();
    assert!(
        !agents.is_empty(),
        "no gpg-agent runs for {}",
        home.display()
    );
    // Neither gpg nor its agent has any variable but GNUPGHOME and PATH.
    for pid in std::iter::once(gpg_pid).chain(agents.iter().map(|(p, _)| *p)) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        for secret in [
            "R2_SECRET_ACCESS_KEY",
            SECRET_KEY,
            "SYSEXT_GPG_KEY",
            "R2_ACCESS_KEY_ID",
        ] {
            assert!(
                !environ.contains(secret),
                "{secret} in the environment of {pid}"
            );
        }
        let mut names: Vec<&str> = environ
            .split('\0')
            .filter_map(|v| v.split_once('=').map(|(n, _)| n))
            .collect();
        names.sort();
        names.retain(|n| *n != "PWD"); // sh sets it
        assert_eq!(names, ["GNUPGHOME", "PATH"], "environment of {pid}");
    }

    send_signal(signal, if group { -pid } else { pid });
    let status = wait_with_deadline(&mut publish, 30);
    let log = std::fs::read_to_string(tmp.path().join("publish.log")).unwrap();
    assert_eq!(status.code(), Some(expected_code), "{status}\n{log}");
    let left: Vec<PathBuf> = std::fs::read_dir(&private_tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let running = processes_mentioning(&home.display().to_string());
    assert!(running.is_empty(), "still running: {running:?}");
    let running = processes_with_env(&format!("GNUPGHOME={}", home.display()));
    assert!(running.is_empty(), "still running: {running:?}");
    assert!(!log.contains(SECRET_KEY), "{log}");
    assert_eq!(
        s3.keys(),
        Vec::<String>::new(),
        "uploaded despite the signal"
    );
}

#[test]
fn sigterm_during_signing_leaves_no_key_agent_or_secret_behind() {
    interrupt_a_publish_while_it_signs("TERM", false, 143);
}

#[test]
fn ctrl_c_during_signing_leaves_no_key_agent_or_secret_behind() {
    interrupt_a_publish_while_it_signs("INT", true, 130);
}

#[test]
fn sigterm_during_verify_stops_the_inspection_and_leaves_nothing_in_tmpdir() {
    use std::os::unix::process::CommandExt;
    use support::{
        path_with_first, processes_with_env, send_signal, tool, wait_with_deadline, write_script,
        KillGroupOnDrop,
    };
    let s3 = S3::start();
    let mirror = Mirror::start();
    mirror.add_release(&Release::new("1.10.3"));
    let ws = Workspace::new();
    ws.build(&mirror.base_url, "1.10.3", &["--format", "squashfs"])
        .assert_ok();
    publish(&s3, &ws.out, &["1.10.3"]).assert_ok();

    let tmp = tempfile::tempdir().unwrap();
    let private_tmp = tmp.path().join("tmp");
    std::fs::create_dir(&private_tmp).unwrap();
    let bin = tmp.path().join("bin");
    let inspecting = tmp.path().join("inspecting");
    write_script(
        &bin,
        "unsquashfs",
        &format!(
            "#!/bin/sh\ntouch '{}'\nsleep 60\nexec '{}' \"$@\"\n",
            inspecting.display(),
            tool("unsquashfs").display()
        ),
    );
    let mark = format!("ALLOY_SYSEXT_TEST_RUN={}", tmp.path().display());
    let (mark_name, mark_value) = mark.split_once('=').unwrap();
    let mut command = Command::new(XTASK);
    command
        .arg("verify")
        .arg("--base-url")
        .arg(&s3.public_url)
        .env_remove("SYSEXT_BASE_URL")
        .env("TMPDIR", &private_tmp)
        .env("PATH", path_with_first(&bin))
        .env(mark_name, mark_value)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut verify = command.spawn().unwrap();
    let pid = verify.id() as i32;
    let _group = KillGroupOnDrop(pid);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !inspecting.exists() {
        assert!(
            verify.try_wait().unwrap().is_none(),
            "verify ended before it inspected"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no inspection in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        std::fs::read_dir(&private_tmp).unwrap().count() > 0,
        "verify downloads into TMPDIR: nothing there to clean up?"
    );
    send_signal("TERM", pid);
    let status = wait_with_deadline(&mut verify, 30);

    assert_eq!(status.code(), Some(143), "{status}");
    let left: Vec<PathBuf> = std::fs::read_dir(&private_tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let running = processes_with_env(&mark);
    assert!(running.is_empty(), "still running: {running:?}");
}
