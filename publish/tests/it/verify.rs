//! `cargo xtask verify` on what it must refuse: tampered images, missing checksums, images
//! under the wrong architecture's name, and files that are no image.

use xtask_testkit::fixture::sha256_hex;
use xtask_testkit::s3::S3;

use crate::support::{build_images, publish, verify};

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
