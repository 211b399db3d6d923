//! Settings and secrets: what is missing or wrong is named before any upload, and the secret
//! key is never printed.

use xtask_testkit::s3::{ACCESS_KEY, S3, SECRET_KEY};

use crate::support::{fabricate, publish_command, run, SMALL_PARTS};

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
        .envs(SMALL_PARTS)
        .env("AWS_LOG_LEVEL", "trace")
        .env("RUST_LOG", "trace,aws=trace,aws_smithy_runtime=trace");
    let first = run(&mut verbose);
    first.assert_ok_saying(&["credentials from R2_ACCESS_KEY_ID", "3 parts"]);
    // A refusal, an error, and --help all keep it to themselves too.
    fabricate(dir.path(), "1.10.2", "amd64", 1000, 2);
    run(&mut publish_command(&s3.endpoint, dir.path(), &args))
        .assert_fails_with(&["never changes"]);
    run(&mut publish_command(&s3.endpoint, dir.path(), &["--help"])).assert_ok();
}
