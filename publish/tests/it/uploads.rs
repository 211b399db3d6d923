//! Publishing: the order of uploads, objects never changed once published, channels, and
//! images of every format verified from the public URL.

use xtask_testkit::fixture::{fake_alloy, sha256_hex, Release};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::s3::S3;
use xtask_testkit::Workspace;

use crate::support::{
    assert_no_dangling_checksum, build_images, fabricate, publish, verify, XTASK,
};

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
        let ws = Workspace::new(&*XTASK);
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
    let arm = fake_alloy("1.12.0", "arm64");
    mirror.add_release(&Release::new("1.12.0").with_zip(
        "arm64",
        xtask_testkit::fixture::zip_of(&[("alloy-linux-arm64", &arm, 0o755)]),
    ));
    let ws = Workspace::new(&*XTASK);
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
