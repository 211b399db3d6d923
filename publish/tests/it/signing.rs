//! SHA256SUMS.gpg: publish signs with SYSEXT_GPG_KEY, verify --keyring checks it; a bad key
//! fails before any upload and is never shown.

use std::path::Path;

use xtask_testkit::gpg::TestKey;
use xtask_testkit::s3::S3;
use xtask_testkit::Run;

use crate::support::{
    assert_no_key_material, assert_signed_by, build_images, fabricate, publish, publish_command,
    row, run, verify,
};

fn publish_signed(s3: &S3, dir: &Path, args: &[&str], key: &TestKey) -> Run {
    let mut command = publish_command(&s3.endpoint, dir, args);
    command.env("SYSEXT_GPG_KEY", &key.secret);
    let run = run(&mut command);
    assert_no_key_material(&run, &key.secret);
    run
}

/// A signed publish that signs SHA256SUMS anew, with `key`.
fn assert_signs(s3: &S3, dir: &Path, args: &[&str], key: &TestKey) -> Run {
    let run = publish_signed(s3, dir, args, key);
    run.assert_ok();
    assert!(run.stdout.contains("signed and uploaded"), "{}", run.stdout);
    assert_signed_by(s3, key);
    run
}

#[test]
fn a_signing_key_makes_publish_sign_sha256sums_and_verify_keyring_checks_it() {
    let key = TestKey::new("signer");
    let other = TestKey::new("other");
    let ws = build_images("1.10.2");
    let s3 = S3::start();
    let keyring = key.public.to_str().unwrap();

    let first = assert_signs(&s3, &ws.out, &["1.10.2"], &key);
    assert!(
        !other.signed(
            &s3.object("SHA256SUMS").unwrap(),
            &s3.object("SHA256SUMS.gpg").unwrap()
        ),
        "gpgv accepts any key"
    );
    assert!(first.stdout.contains(&key.fingerprint), "{}", first.stdout);
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
    assert_signs(&s3, next.path(), &[], &key);
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
    assert_signs(&s3, dir.path(), &[], &key);
    // A new key replaces a signature made by the old one.
    let rotated = TestKey::new("rotated");
    publish_signed(&s3, dir.path(), &[], &rotated).assert_ok();
    assert_signed_by(&s3, &rotated);
}
