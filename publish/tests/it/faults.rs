//! A bucket or a network that misbehaves: cut and corrupted uploads, multipart, endless
//! objects and server errors. Nothing dangling is left, and what failed is said plainly.

use xtask_testkit::http::{Answer, Server};
use xtask_testkit::s3::{CuttingProxy, BUCKET, S3};

use crate::support::{assert_no_dangling_checksum, fabricate, publish_command, run, SMALL_PARTS};

/// A bucket, and an image of 1.10.2 to publish: `size` bytes made from `seed`.
fn bucket_and_image(size: usize, seed: u8) -> (S3, tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = fabricate(dir.path(), "1.10.2", "amd64", size, seed);
    (S3::start(), dir, bytes)
}

/// No multipart upload is left pending, and no checksum points at a missing or other image.
fn assert_clean(s3: &S3) {
    assert!(s3.pending_parts().is_empty(), "{:?}", s3.pending_parts());
    assert_no_dangling_checksum(s3);
}

#[test]
fn a_connection_cut_mid_upload_is_retried_and_never_leaves_a_dangling_checksum() {
    let (s3, dir, bytes) = bucket_and_image(3 << 20, 1);

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
    run(multipart.envs(SMALL_PARTS)).assert_fails_with(&["in 3 parts"]);
    assert_eq!(s3.object("alloy-1.10.4-amd64.raw"), None);
    assert_clean(&s3);
}

#[test]
fn large_images_go_up_in_equal_parts_and_arrive_whole() {
    let (s3, dir, bytes) = bucket_and_image(12 << 20, 7);
    // One cut along the way: a part is retried.
    let proxy = CuttingProxy::start(&s3.endpoint, 7 << 20, false);
    let mut command = publish_command(&proxy.url, dir.path(), &["-v"]);
    let published = run(command.envs(SMALL_PARTS));
    published.assert_ok_saying(&["3 parts of 5242880 bytes"]);
    assert_eq!(s3.object("alloy-1.10.2-amd64.raw"), Some(bytes));
    assert_clean(&s3);
}

#[test]
fn a_body_corrupted_on_the_way_is_refused_by_the_server_and_nothing_is_stored() {
    let (s3, dir, bytes) = bucket_and_image(3 << 20, 1);
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

/// A fake S3 endpoint on loopback: the bucket exists, `SHA256SUMS` and `.gpg` do not (unless
/// `answers` says otherwise), and `answers` decide the rest.
fn fake_bucket(answers: &[(&str, Answer)]) -> Server {
    let server = Server::start();
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
