//! What the publish tests share: the binaries, a real S3 server on loopback with its public
//! domain (testkit's [`S3`]), running publish and verify, and images to publish.

use std::path::Path;
use std::process::Command;
use std::sync::LazyLock;

use xtask_testkit::fixture::{sha256_hex, Release};
use xtask_testkit::gpg::TestKey;
use xtask_testkit::mirror::Mirror;
use xtask_testkit::s3::{ACCESS_KEY, BUCKET, S3, SECRET_KEY};
use xtask_testkit::{beside_own_binary, Run, Workspace};

/// The publish binary, which `cargo xtask publish ARGS` builds and runs with ARGS.
pub const PUBLISH: &str = env!("CARGO_BIN_EXE_xtask-publish");

/// The `xtask` binary, which `cargo test --workspace` builds beside [`PUBLISH`].
pub static XTASK: LazyLock<std::path::PathBuf> =
    LazyLock::new(|| beside_own_binary(PUBLISH, "xtask"));

/// Multipart above 1 MiB, in parts of 5 MiB (the smallest S3 takes): large uploads, small tests.
pub const SMALL_PARTS: [(&str, &str); 2] = [
    ("ALLOY_SYSEXT_MULTIPART_THRESHOLD", "1048576"),
    ("ALLOY_SYSEXT_PART_SIZE", "5242880"),
];

/// `xtask publish ARGS` with the test server's keys, nothing inherited that matters.
pub fn publish_command(endpoint: &str, dir: &Path, args: &[&str]) -> Command {
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
pub fn run(command: &mut Command) -> Run {
    let run = Run::from_command(command);
    assert_no_secret(&run);
    run
}

pub fn assert_no_secret(run: &Run) {
    assert!(
        !run.stdout.contains(SECRET_KEY) && !run.stderr.contains(SECRET_KEY),
        "the secret key was printed\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
}

pub fn publish(s3: &S3, dir: &Path, args: &[&str]) -> Run {
    run(&mut publish_command(&s3.endpoint, dir, args))
}

pub fn verify(base_url: &str, args: &[&str]) -> Run {
    Run::from_command(
        Command::new(&*XTASK)
            .arg("verify")
            .args(args)
            .arg("--base-url")
            .arg(base_url)
            .env_remove("SYSEXT_BASE_URL"),
    )
}

/// The row of verify's table (or the audit's: `verify --all`) for `name`.
pub fn row<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name}:\n{}", run.stdout))
}

/// A file that stands in for an image where the test is about bucket semantics.
pub fn fabricate(dir: &Path, version: &str, arch: &str, size: usize, seed: u8) -> Vec<u8> {
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

/// A directory of its own for each of `versions`, holding an amd64 image of it fabricated with
/// `size` bytes (seeded by its place in `versions`).
pub fn fabricated(versions: &[&str], size: usize) -> Vec<tempfile::TempDir> {
    versions
        .iter()
        .enumerate()
        .map(|(i, version)| {
            let dir = tempfile::tempdir().unwrap();
            fabricate(dir.path(), version, "amd64", size, i as u8 + 1);
            dir
        })
        .collect()
}

/// Fabricates an image for each version, then publishes them two at a time, each pair at once
/// (the second pair meets an index that exists already); `env` is added to every publish.
/// Returns every run, each already checked to succeed and to print no secret.
pub fn publish_in_concurrent_pairs(
    s3: &S3,
    versions: &[&str],
    size: usize,
    env: &[(&str, &str)],
) -> Vec<Run> {
    let mut runs = Vec::new();
    for pair in fabricated(versions, size).chunks(2) {
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
            let run = Run::from_output(&output);
            assert_no_secret(&run);
            run.assert_ok();
            runs.push(run);
        }
    }
    runs
}

/// Real images, built by `xtask build` from a fixture release.
pub fn build_images(version: &str) -> Workspace {
    let mirror = Mirror::start();
    mirror.add_release(&Release::new(version));
    let ws = Workspace::new(&*XTASK);
    ws.build(&mirror.base_url, version, &["--arch", "amd64"])
        .assert_ok();
    ws
}

/// Every line of the bucket's SHA256SUMS names an object that exists with exactly that digest,
/// and so does every .raw.sha256.
pub fn assert_no_dangling_checksum(s3: &S3) {
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

/// Neither the armored key nor any line of its key material (not the armor header) was printed.
pub fn assert_no_key_material(run: &Run, secret: &str) {
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

/// The bucket's SHA256SUMS.gpg is a good signature of its SHA256SUMS by `key`.
pub fn assert_signed_by(s3: &S3, key: &TestKey) {
    let index = s3.object("SHA256SUMS").expect("no SHA256SUMS");
    let signature = s3.object("SHA256SUMS.gpg").expect("no SHA256SUMS.gpg");
    assert!(
        key.signed(&index, &signature),
        "SHA256SUMS.gpg is not a good signature of SHA256SUMS:\n{}",
        String::from_utf8_lossy(&index)
    );
}
