//! Publishes at once: SHA256SUMS (and its signature) end up listing everyone's images.

use xtask_testkit::gpg::TestKey;
use xtask_testkit::s3::S3;

use crate::support::{
    assert_no_dangling_checksum, assert_no_key_material, assert_signed_by,
    publish_in_concurrent_pairs,
};

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
