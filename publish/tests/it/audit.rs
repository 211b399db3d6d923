//! `cargo xtask verify --all`, the daily audit: the whole bucket (both channels, both
//! architectures) as publish left it, signature checked against the project's key, every object
//! that differs from what was published named.

use std::path::Path;

use xtask_testkit::fixture::Release;
use xtask_testkit::gpg::TestKey;
use xtask_testkit::mirror::Mirror;
use xtask_testkit::s3::S3;
use xtask_testkit::{Run, Workspace};

use crate::support::{publish_command, row, run, verify, XTASK};

/// Real images of `versions`, amd64 and arm64, built from fixture releases into one directory.
fn built(versions: &[&str]) -> Workspace {
    let mirror = Mirror::start();
    let ws = Workspace::new(&*XTASK);
    for version in versions {
        mirror.add_release(&Release::new(version));
        ws.build(
            &mirror.base_url,
            version,
            &["--arch", "amd64", "--arch", "arm64"],
        )
        .assert_ok();
    }
    ws
}

/// Publishes everything in `dir` (one channel), signed with `key`.
fn publish_signed(s3: &S3, dir: &Path, key: &TestKey) {
    let mut command = publish_command(&s3.endpoint, dir, &[]);
    command.env("SYSEXT_GPG_KEY", &key.secret);
    run(&mut command).assert_ok();
}

fn audit(s3: &S3, keyring: Option<&Path>) -> Run {
    let mut args = vec!["--all"];
    if let Some(keyring) = keyring {
        args.extend(["--keyring", keyring.to_str().unwrap()]);
    }
    verify(&s3.public_url, &args)
}

#[test]
fn a_replaced_image_a_deleted_checksum_and_a_bad_signature_are_each_named() {
    let key = TestKey::new("project");
    let s3 = S3::start();
    let stable = built(&["1.10.2", "1.10.3"]);
    let rc = built(&["1.11.0-rc.1"]);
    publish_signed(&s3, &stable.out, &key);
    publish_signed(&s3, &rc.out, &key);

    let intact = audit(&s3, Some(&key.armored_public));
    intact.assert_ok();
    for (name, result) in [
        (
            "SHA256SUMS.gpg",
            format!("ok, signed by {}", key.fingerprint),
        ),
        (
            "rc/SHA256SUMS.gpg",
            format!("ok, signed by {}", key.fingerprint),
        ),
        ("alloy-1.10.3-arm64.raw", "ok, as signed".to_string()),
        (
            "rc/alloy-1.11.0-rc.1-arm64.raw",
            "ok, as signed".to_string(),
        ),
    ] {
        assert!(row(&intact, name).ends_with(&result), "{}", intact.stdout);
    }
    assert_eq!(
        intact.stdout.matches(".raw ").count(),
        6,
        "{}",
        intact.stdout
    );

    // A good image of another version under this name; a deleted .sha256; rc's index signed
    // over other bytes.
    let bucket = s3.bucket_dir();
    std::fs::copy(
        bucket.join("alloy-1.10.2-arm64.raw"),
        bucket.join("alloy-1.10.3-arm64.raw"),
    )
    .unwrap();
    std::fs::remove_file(bucket.join("alloy-1.10.2-amd64.raw.sha256")).unwrap();
    std::fs::write(bucket.join("rc/SHA256SUMS.gpg"), key.sign(b"another index")).unwrap();

    let failed = audit(&s3, Some(&key.armored_public));
    failed.assert_fails_with(&[
        "3 of 8 artifact(s)",
        "failed verification",
        "  alloy-1.10.3-arm64.raw: alloy-1.10.3-arm64.raw.sha256 says",
        "  alloy-1.10.2-amd64.raw: no alloy-1.10.2-amd64.raw.sha256",
        "  rc/SHA256SUMS.gpg: ",
    ]);
    assert!(
        row(&failed, "alloy-1.10.3-arm64.raw").contains("FAILED"),
        "{}",
        failed.stdout
    );
    assert!(
        row(&failed, "SHA256SUMS.gpg").contains("ok, signed by"),
        "{}",
        failed.stdout
    );
    // Nothing vouches for rc/ now: its images are downloaded and looked inside instead.
    assert!(
        row(&failed, "rc/alloy-1.11.0-rc.1-amd64.raw").ends_with(" ok"),
        "{}",
        failed.stdout
    );
}

#[test]
fn an_intact_bucket_of_twenty_releases_passes_in_both_channels() {
    let key = TestKey::new("project");
    let s3 = S3::start();
    let versions: Vec<String> = (0..18).map(|patch| format!("1.10.{patch}")).collect();
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    publish_signed(&s3, &built(&versions).out, &key);
    publish_signed(&s3, &built(&["1.11.0-rc.1", "1.11.0-rc.2"]).out, &key);

    let signed = audit(&s3, Some(&key.public));
    signed.assert_ok();
    assert_eq!(
        signed.stdout.matches("ok, as signed").count(),
        40,
        "{}",
        signed.stdout
    );
    assert_eq!(
        signed.stdout.matches("ok, signed by").count(),
        2,
        "{}",
        signed.stdout
    );

    // Without the key nothing vouches for the indexes: every image is looked inside, and the
    // unchecked signatures are said.
    let unsigned = audit(&s3, None);
    unsigned.assert_ok();
    assert_eq!(
        unsigned.stdout.matches(".raw ").count(),
        40,
        "{}",
        unsigned.stdout
    );
    assert!(
        !unsigned.stdout.contains("as signed"),
        "{}",
        unsigned.stdout
    );
    assert!(
        unsigned
            .stdout
            .contains("SHA256SUMS.gpg and rc/SHA256SUMS.gpg are published but were not checked"),
        "{}",
        unsigned.stdout
    );
}

#[test]
fn a_bucket_without_release_candidates_is_said_and_without_an_index_fails() {
    let s3 = S3::start();
    let empty = audit(&s3, None);
    empty.assert_fails_with(&["1 of 1 artifact(s)", "  SHA256SUMS: "]);
    assert!(
        empty
            .stdout
            .contains("rc/SHA256SUMS: no release candidate is published"),
        "{}",
        empty.stdout
    );
    verify(&s3.public_url, &["--all", "1.10.2"]).assert_fails_with(&["cannot be used with"]);
}
