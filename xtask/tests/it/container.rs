//! The Containerfile builds the same ext4 bytes as `xtask build` on the host, although its tools
//! come from another Debian release (the container: Debian 13, e2fsprogs 1.47.2; a Debian 12 host:
//! 1.47.0).
//!
//! No container registry is reachable here, so the base image is the debootstrap root of Debian 13
//! (cached, xtask_testkit::debian) imported into podman; the crates come vendored (`cargo vendor`,
//! cached per Cargo.lock) and the release from a loopback mirror. `podman build
//! --isolation=chroot` needs no container runtime, only root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use xtask_testkit::debian::cache_dir;
use xtask_testkit::fixture::{sha256_hex, Release};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::process::require_root;
use xtask_testkit::{checked_output as run, ext4, Run};

use crate::support::{workspace, CHECKSUM, IMAGE, VERSION};

/// The Containerfile's default base is debian:13.
const SUITE: &str = "trixie";
/// Not the default epoch, so that the build argument is seen to reach the build.
const EPOCH: &str = "1735689600";
/// A cold build compiles xtask and its dependencies in the container: 25 minutes on a busy 2-core
/// machine (most of it the S3 stack).
const BUILD_TIMEOUT_SECS: &str = "2700";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn podman() -> PathBuf {
    xtask_testkit::tool("podman")
}

/// The base image: the Debian 13 root imported into podman, tagged after the root and the
/// packages in it (its dpkg status), so that it is imported once per root. Then podman's layer
/// cache keeps the Containerfile's package step on top of it until install-deps.sh changes.
fn base_image() -> String {
    let root = xtask_testkit::debian::root(SUITE, &[]);
    let status = std::fs::read(root.join("var/lib/dpkg/status")).unwrap();
    let tag = format!(
        "localhost/alloy-sysext-test-base:{}-{}",
        root.file_name().unwrap().to_string_lossy(),
        &sha256_hex(&status)[..12]
    );
    let exists = Command::new(podman())
        .args(["image", "exists", &tag])
        .status()
        .expect("running podman (bash scripts/install-deps.sh --test installs it)");
    if !exists.success() {
        let started = Instant::now();
        let mut tar = Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        run(Command::new(podman())
            .args(["import", "-", &tag])
            .stdin(tar.stdout.take().unwrap()));
        assert!(tar.wait().unwrap().success(), "tar of {}", root.display());
        eprintln!("podman import {tag}: {:.1?}", started.elapsed());
    }
    tag
}

/// Vendored crates of another Cargo.lock (a few hundred MB each) are removed once unused for this
/// long: other worktrees on the machine may be building with theirs.
const VENDOR_UNUSED: Duration = Duration::from_secs(7 * 24 * 3600);

/// Cargo.lock's crates, vendored once per Cargo.lock (by the cargo running this test).
fn vendored_crates() -> PathBuf {
    let lock = std::fs::read(repository().join("Cargo.lock")).unwrap();
    let name = format!("vendor-{}", &sha256_hex(&lock)[..16]);
    let cache = cache_dir();
    let vendor = cache.join(&name);
    if vendor.exists() {
        // Marks it used (its mtime) for the pruning below.
        let _ = std::fs::File::open(&vendor).and_then(|dir| dir.set_modified(SystemTime::now()));
    } else {
        std::fs::create_dir_all(&cache).unwrap();
        let started = Instant::now();
        let building = cache.join(format!(".vendor.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        run(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["vendor", "--locked", "--quiet", "--manifest-path"])
                .arg(repository().join("Cargo.toml"))
                .arg(&building),
        );
        if std::fs::rename(&building, &vendor).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        eprintln!("cargo vendor: {:.1?}", started.elapsed());
    }
    for entry in std::fs::read_dir(&cache).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name().to_string_lossy().into_owned();
        let unused = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > VENDOR_UNUSED);
        if file.starts_with("vendor-") && file != name && unused {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    vendor
}

/// Sorted names in a directory.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_containerfile_builds_the_same_ext4_bytes_as_the_host() {
    if !require_root("podman build (--isolation=chroot) of the Containerfile") {
        return;
    }
    let started = Instant::now();
    let release = Release::new(VERSION);
    let mirror = Mirror::start();
    mirror.add_release(&release);

    // On the host, with the host's e2fsprogs.
    let ws = workspace();
    Run::from_command(
        ws.command(&mirror.base_url)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", VERSION, "--out-dir"])
            .arg(&ws.out),
    )
    .assert_ok();
    let host_image = std::fs::read(ws.image(IMAGE)).unwrap();
    let host_digest = sha256_hex(&host_image);
    let downloads_on_host = mirror.log().len();

    // In the container, exactly as the README says, plus what this machine needs: the imported
    // base, the vendored crates, and the host's network for the loopback mirror.
    let base = base_image();
    let vendor = vendored_crates();
    let dist = ws.tmp.path().join("dist");
    let log_path = ws.tmp.path().join("podman-build.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let build_started = Instant::now();
    let status = Command::new("timeout")
        .args(["--kill-after=30", BUILD_TIMEOUT_SECS])
        .arg(podman())
        .args([
            "build",
            "--isolation=chroot",
            "--network=host",
            "--pull=never",
        ])
        .arg("--file")
        .arg(repository().join("Containerfile"))
        .arg(format!("--volume={}:/src/vendor:ro", vendor.display()))
        .arg(format!("--build-arg=BASE_IMAGE={base}"))
        .arg(format!("--build-arg=VERSION={VERSION}"))
        .arg("--build-arg=ARCH=amd64")
        .arg("--build-arg=FORMAT=ext4")
        .arg(format!(
            "--build-arg=ALLOY_RELEASES_URL={}",
            mirror.base_url
        ))
        .arg(format!("--build-arg=SOURCE_DATE_EPOCH={EPOCH}"))
        .arg(format!("--output=type=local,dest={}", dist.display()))
        .arg(repository())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let build_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = build_log.lines().rev().take(80).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    assert!(
        status.success(),
        "podman build: {status}\n--- last lines of its output\n{}",
        tail.join("\n")
    );
    eprintln!(
        "podman build: {:.1?} (whole test so far {:.1?})",
        build_started.elapsed(),
        started.elapsed()
    );

    // The build step ran in this run (not a cached layer) against the mirror: it read
    // SHA256SUMS, as every build does (the zip may come from the build's download cache).
    let in_container: Vec<String> = mirror.log()[downloads_on_host..]
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.path.clone())
        .collect();
    assert!(
        in_container.iter().any(|p| p.ends_with("/SHA256SUMS")),
        "the container's build did not ask the mirror: {in_container:?}"
    );

    // dist/ holds the image and its checksum, nothing else, and the bytes are the host's.
    assert_eq!(names(&dist), [IMAGE, CHECKSUM]);
    let image = std::fs::read(dist.join(IMAGE)).unwrap();
    let digest = sha256_hex(&image);
    assert!(
        digest == host_digest,
        "the container's image differs from the host's: {} bytes, sha256 {digest}; host: {} bytes, sha256 {host_digest}",
        image.len(),
        host_image.len()
    );
    let checksum = std::fs::read_to_string(dist.join(CHECKSUM)).unwrap();
    assert_eq!(checksum, format!("{digest}  {IMAGE}\n"));
    assert_eq!(
        checksum,
        std::fs::read_to_string(ws.image(CHECKSUM)).unwrap()
    );
    // SOURCE_DATE_EPOCH reached the build: 1735689600 is 0x67748580.
    let stat = ext4::stat(&dist.join(IMAGE), "/usr/bin/alloy");
    assert!(stat.contains("ctime: 0x67748580:00000000"), "{stat}");
    eprintln!("container test: {:.1?}", started.elapsed());
}
