//! `cargo xtask build` end to end, against a fixture release on a loopback mirror that behaves
//! like GitHub and can misbehave.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use xtask_testkit::fixture::{self, Release};
use xtask_testkit::mirror::{Fault, Mirror};
use xtask_testkit::process::{require_root, wait_for};
use xtask_testkit::{ext4, Run, Workspace};

use crate::support::{
    assert_sha256sum_accepts, cached_zip, files_under, workspace, CHECKSUM, IMAGE, VERSION, XTASK,
};

const ZIP_OBJECT: &str = "/objects/v1.10.2/alloy-linux-amd64.zip";

/// The fixture release, a mirror serving it, and a workspace to build it in.
fn fixture() -> (Release, Mirror, Workspace) {
    let release = Release::new(VERSION);
    (release.clone(), Mirror::with_release(&release), workspace())
}

/// The statuses the mirror answered the zip's object with, in order.
fn zip_statuses(mirror: &Mirror) -> Vec<u16> {
    let requests = mirror.requests_for(ZIP_OBJECT);
    requests.iter().map(|r| r.status).collect()
}

#[test]
fn builds_a_verified_root_owned_image_that_sha256sum_accepts() {
    let (release, mirror, ws) = fixture();
    let run = ws.build(&mirror.base_url, "v1.10.2", &[]);
    run.assert_ok();
    assert_eq!(
        ws.out_names(),
        [IMAGE, CHECKSUM],
        "exactly the image and its checksum, no leftovers"
    );

    // The closing summary names the file, its size and its digest.
    let image = ws.image(IMAGE);
    let bytes = std::fs::read(&image).unwrap();
    let digest = fixture::sha256_hex(&bytes);
    assert!(
        run.stdout.contains(IMAGE) && run.stdout.contains(&digest),
        "{}",
        run.stdout
    );
    // GitHub redirects; the download followed.
    assert!(mirror.log().iter().any(|r| r.status == 302));

    // The .sha256 is in sha256sum's own format: `sha256sum -c` accepts it in the out dir.
    assert_eq!(
        std::fs::read_to_string(ws.image(CHECKSUM)).unwrap(),
        format!("{digest}  {IMAGE}\n")
    );
    assert_sha256sum_accepts(&ws);

    // Inside: the binary (whatever mode the zip gave it) as 0755, the metadata, and all of it 0:0.
    assert_eq!(ext4::cat(&image, "/usr/bin/alloy"), release.binary("amd64"));
    assert_eq!(
        String::from_utf8(ext4::cat(
            &image,
            "/usr/lib/extension-release.d/extension-release.alloy"
        ))
        .unwrap(),
        "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n"
    );
    let inodes = ext4::inodes(&image);
    let paths: Vec<&str> = inodes.iter().map(|i| i.path.as_str()).collect();
    for expected in [
        "/",
        "/usr",
        "/usr/bin",
        "/usr/bin/alloy",
        "/usr/lib/extension-release.d/extension-release.alloy",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    for inode in &inodes {
        assert_eq!((inode.uid, inode.gid), (0, 0), "{inode:?}");
        assert!(
            inode.path == "/" || inode.path == "/lost+found" || inode.path.starts_with("/usr"),
            "{inode:?} outside /usr"
        );
        assert!(!inode.path.starts_with("/usr/sbin"), "{inode:?}");
    }
    let alloy = inodes.iter().find(|i| i.path == "/usr/bin/alloy").unwrap();
    assert_eq!(alloy.mode, 0o100755);

    // Read-only image: no journal, no reserved blocks; sized to its content.
    let stat = ext4::stat(&image, "/usr/bin/alloy");
    assert!(
        stat.contains("ctime: 0x65920080:00000000"),
        "every time is 2024-01-01 by default:\n{stat}"
    );
    let super_block = ext4::superblock(&image);
    assert!(!super_block.contains("has_journal"), "{super_block}");
    assert!(
        super_block.contains("Reserved block count:     0"),
        "{super_block}"
    );
    let staged = (release.binary("amd64").len() + 64) as f64;
    assert!(
        (bytes.len() as f64) <= staged * 1.03 + 4.0 * 1024.0 * 1024.0,
        "{} bytes for {staged}",
        bytes.len()
    );
}

#[test]
fn same_release_gives_the_same_bytes_across_directories_times_and_users() {
    let (_, mirror, first) = fixture();
    first.build(&mirror.base_url, VERSION, &[]).assert_ok();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a different clock second

    // The second build: another directory, an empty cache, and (when we can) another user.
    let second = workspace();
    let mut command = second.command(&mirror.base_url);
    if require_root("building as an unprivileged user") {
        std::fs::set_permissions(second.tmp.path(), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        // setpriv from util-linux: run as nobody, with no supplementary groups.
        let mut as_nobody = Command::new("setpriv");
        as_nobody
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(XTASK);
        as_nobody
            .env("XDG_CACHE_HOME", &second.cache)
            .env("ALLOY_RELEASES_URL", &mirror.base_url)
            .env("HOME", "/nonexistent");
        as_nobody.env_remove("SOURCE_DATE_EPOCH");
        command = as_nobody;
    }
    Run::from_command(
        command
            .arg("build")
            .arg(VERSION)
            .arg("--out-dir")
            .arg(&second.out),
    )
    .assert_ok();
    let a = std::fs::read(first.image(IMAGE)).unwrap();
    let b = std::fs::read(second.image(IMAGE)).unwrap();
    assert!(
        a == b,
        "images differ between two builds of the same release"
    );
    for inode in ext4::inodes(&second.image(IMAGE)) {
        assert_eq!((inode.uid, inode.gid), (0, 0), "{inode:?}");
    }

    // SOURCE_DATE_EPOCH is honoured: another epoch, other timestamps, other bytes.
    let third = workspace();
    let run = Run::from_command(
        third
            .command(&mirror.base_url)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", VERSION, "--out-dir"])
            .arg(&third.out),
    );
    run.assert_ok();
    let c = std::fs::read(third.image(IMAGE)).unwrap();
    assert!(a != c, "SOURCE_DATE_EPOCH had no effect");
    let stat = ext4::stat(&third.image(IMAGE), "/usr/bin/alloy");
    assert!(stat.contains("mtime: 0x6553f100:00000000"), "{stat}");
}

#[test]
fn both_architectures_in_one_run() {
    let (_, mirror, ws) = fixture();
    ws.build(
        &mirror.base_url,
        VERSION,
        &["--arch", "amd64", "--arch", "arm64"],
    )
    .assert_ok();
    assert_eq!(
        ws.out_names(),
        [
            "alloy-1.10.2-amd64.raw",
            "alloy-1.10.2-amd64.raw.sha256",
            "alloy-1.10.2-arm64.raw",
            "alloy-1.10.2-arm64.raw.sha256"
        ]
    );
    let metadata = ext4::cat(
        &ws.image("alloy-1.10.2-arm64.raw"),
        "/usr/lib/extension-release.d/extension-release.alloy",
    );
    assert!(String::from_utf8(metadata)
        .unwrap()
        .contains("ARCHITECTURE=arm64\n"));
}

#[test]
fn retries_server_errors_then_succeeds() {
    let (_, mirror, ws) = fixture();
    mirror.fault(VERSION, "alloy-linux-amd64.zip", Fault::ServerErrors(3));
    mirror.fault(VERSION, "SHA256SUMS", Fault::ServerErrors(2));
    // The retries are reported.
    ws.build(&mirror.base_url, VERSION, &[])
        .assert_ok_saying(&["500"]);
    assert_eq!(zip_statuses(&mirror), [500, 500, 500, 200]);
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);
}

#[test]
fn resumes_a_body_cut_short_with_a_range_request() {
    let (release, mirror, ws) = fixture();
    mirror.fault(VERSION, "alloy-linux-amd64.zip", Fault::CutOnce);
    ws.build(&mirror.base_url, VERSION, &[]).assert_ok();
    let requests = mirror.requests_for(ZIP_OBJECT);
    assert_eq!(requests.len(), 2, "{requests:?}");
    let half = release.assets["alloy-linux-amd64.zip"].len() / 2;
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    assert_eq!(requests[1].status, 206);
    assert_eq!(
        ext4::cat(&ws.image(IMAGE), "/usr/bin/alloy"),
        release.binary("amd64")
    );
}

#[test]
fn starts_over_when_the_server_cannot_resume() {
    let (release, mirror, ws) = fixture();
    mirror.fault(VERSION, "alloy-linux-amd64.zip", Fault::CutOnceNoRanges);
    ws.build(&mirror.base_url, VERSION, &[]).assert_ok();
    assert_eq!(zip_statuses(&mirror), [200, 200]);
    assert_eq!(
        ext4::cat(&ws.image(IMAGE), "/usr/bin/alloy"),
        release.binary("amd64")
    );
}

/// How a broken release differs from the good fixture release.
enum Broken {
    /// The mirror answers for this asset with this fault.
    Fault(&'static str, Fault),
    /// The mirror does not have this asset.
    Missing(&'static str),
    /// The zip holds other bytes; SHA256SUMS still lists the good zip.
    Tampered,
    /// SHA256SUMS has no line for the zip.
    Unlisted,
    /// The zip holds these entries (name, content), and SHA256SUMS is true to it.
    Zip(&'static [(&'static str, Entry)]),
}

/// What an entry of a [`Broken::Zip`] holds.
enum Entry {
    /// The fixture's Alloy for amd64.
    Alloy,
    /// The fixture's Alloy for arm64.
    AlloyForArm64,
    Bytes(&'static [u8]),
}

/// The digest of the good release's zip, where a message must name it.
const GOOD_ZIP_DIGEST: &str = "<the good zip's sha256>";

/// Each broken release: its name, how it is broken, and what the build must say.
const BROKEN_RELEASES: &[(&str, Broken, &[&str])] = &[
    (
        "version that does not exist",
        Broken::Fault("SHA256SUMS", Fault::NotFound),
        &["404 Not Found", "does not exist", "v1.10.2"],
    ),
    (
        "asset that does not exist",
        Broken::Missing("alloy-linux-amd64.zip"),
        &["404 Not Found", "alloy-linux-amd64.zip does not exist"],
    ),
    (
        "server that keeps failing",
        Broken::Fault("alloy-linux-amd64.zip", Fault::ServerErrors(100)),
        &["giving up", "after 6 attempts", "500 Internal Server Error"],
    ),
    (
        "wrong checksum",
        Broken::Tampered,
        &[
            "checksum mismatch",
            "expected sha256 <the good zip's sha256>",
        ],
    ),
    (
        "missing SHA256SUMS line",
        Broken::Unlisted,
        &["has no line for alloy-linux-amd64.zip"],
    ),
    (
        "archive with an extra entry",
        Broken::Zip(&[
            ("alloy-linux-amd64", Entry::Alloy),
            ("install.sh", Entry::Bytes(b"curl | sh")),
        ]),
        &["must hold exactly one file", "\"install.sh\""],
    ),
    (
        "archive with a path traversal",
        Broken::Zip(&[("../../alloy-linux-amd64", Entry::Alloy)]),
        &["must hold exactly one file", "../../alloy-linux-amd64"],
    ),
    (
        "binary for the wrong architecture",
        Broken::Zip(&[("alloy-linux-amd64", Entry::AlloyForArm64)]),
        &[
            "not an Alloy binary for amd64",
            "for AArch64, not for x86-64",
        ],
    ),
    (
        "not an executable at all",
        Broken::Zip(&[(
            "alloy-linux-amd64",
            Entry::Bytes(b"<html>Bad gateway</html>"),
        )]),
        &["not an ELF file"],
    ),
];

impl Broken {
    /// Makes `mirror`, which serves the good release, serve this broken one.
    fn apply(&self, mirror: &Mirror) {
        let mut release = Release::new(VERSION);
        let zip = "alloy-linux-amd64.zip";
        match self {
            Broken::Fault(asset, fault) => return mirror.fault(VERSION, asset, fault.clone()),
            Broken::Missing(asset) => return mirror.remove(VERSION, asset),
            Broken::Tampered => {
                let bytes = fixture::zip_of(&[("alloy-linux-amd64", b"tampered", 0o755)]);
                release.assets.insert(zip.into(), bytes);
            }
            Broken::Unlisted => {
                let mut listed = release.assets.clone();
                listed.remove(zip);
                let sums = fixture::sha256sums(&listed);
                release
                    .assets
                    .insert("SHA256SUMS".into(), sums.into_bytes());
            }
            Broken::Zip(entries) => {
                let contents: Vec<(&str, Vec<u8>)> = entries
                    .iter()
                    .map(|(name, entry)| match entry {
                        Entry::Alloy => (*name, fixture::fake_alloy(VERSION, "amd64")),
                        Entry::AlloyForArm64 => (*name, fixture::fake_alloy(VERSION, "arm64")),
                        Entry::Bytes(bytes) => (*name, bytes.to_vec()),
                    })
                    .collect();
                let entries: Vec<(&str, &[u8], u32)> = contents
                    .iter()
                    .map(|(name, bytes)| (*name, bytes.as_slice(), 0o755))
                    .collect();
                release = release.with_zip("amd64", fixture::zip_of(&entries));
            }
        }
        mirror.add_release(&release);
    }
}

/// Each broken release fails with a message that says what is wrong, and leaves nothing behind.
#[test]
fn each_failure_mode_has_a_clear_error_and_leaves_no_output() {
    let good = Release::new(VERSION);
    let zip_sum = fixture::sha256_hex(&good.assets["alloy-linux-amd64.zip"]);
    for (name, broken, needles) in BROKEN_RELEASES {
        let mirror = Mirror::with_release(&good);
        broken.apply(&mirror);
        let ws = workspace();
        let run = ws.build(&mirror.base_url, VERSION, &[]).case(name);
        let needles: Vec<String> = needles
            .iter()
            .map(|n| n.replace(GOOD_ZIP_DIGEST, &zip_sum))
            .collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        run.assert_fails_with(&needles);
        assert!(
            ws.out_names().is_empty(),
            "{name}: left {:?}",
            ws.out_names()
        );
        // Nothing half-downloaded or unverified is left in the cache either: only zips that
        // match their SHA256SUMS line (a well-formed zip with the wrong content is still the
        // release asset, and it is refused again at extraction on the next build).
        for cached in files_under(&ws.cache) {
            let name_in_cache = cached.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                name_in_cache, "alloy-linux-amd64.zip",
                "{name}: cache holds {cached:?}"
            );
            let sums = String::from_utf8(mirror_sums(&mirror)).unwrap();
            let digest = fixture::sha256_hex(&std::fs::read(&cached).unwrap());
            assert!(
                sums.contains(&format!("{digest}  alloy-linux-amd64.zip")),
                "{name}: unverified {cached:?}"
            );
        }
    }
}

fn mirror_sums(mirror: &Mirror) -> Vec<u8> {
    mirror.file(VERSION, "SHA256SUMS").unwrap_or_default()
}

#[test]
fn a_failed_build_never_replaces_a_good_earlier_output() {
    let (_, mirror, ws) = fixture();
    ws.build(&mirror.base_url, VERSION, &[]).assert_ok();
    let image_before = std::fs::read(ws.image(IMAGE)).unwrap();
    let sum_before = std::fs::read(ws.image(CHECKSUM)).unwrap();

    // The release now carries the wrong binary, and the cache is gone.
    std::fs::remove_dir_all(&ws.cache).unwrap();
    let arm = fixture::fake_alloy(VERSION, "arm64");
    mirror.add_release(&Release::new(VERSION).with_zip(
        "amd64",
        fixture::zip_of(&[("alloy-linux-amd64", &arm, 0o755)]),
    ));
    ws.build(&mirror.base_url, VERSION, &[])
        .assert_fails_with(&["not an Alloy binary for amd64"]);
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);
    assert!(std::fs::read(ws.image(IMAGE)).unwrap() == image_before);
    assert_eq!(std::fs::read(ws.image(CHECKSUM)).unwrap(), sum_before);
}

#[test]
fn an_interrupted_build_leaves_no_output_and_the_next_build_cleans_up() {
    let (release, mirror, ws) = fixture();
    mirror.fault(VERSION, "alloy-linux-amd64.zip", Fault::Stall);
    // A good earlier output is there: the killed build must not touch it.
    std::fs::create_dir_all(&ws.out).unwrap();
    std::fs::write(ws.image(IMAGE), b"earlier image").unwrap();
    std::fs::write(ws.image(CHECKSUM), b"earlier checksum").unwrap();
    let mut child = ws
        .build_command(&mirror.base_url, VERSION, &[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(30, "the build reaching the download", || {
        !mirror.requests_for(ZIP_OBJECT).is_empty()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    assert_eq!(std::fs::read(ws.image(IMAGE)).unwrap(), b"earlier image");
    assert_eq!(
        std::fs::read(ws.image(CHECKSUM)).unwrap(),
        b"earlier checksum"
    );
    let visible: Vec<String> = ws
        .out_names()
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(visible, [IMAGE, CHECKSUM]);

    // The next build replaces the outputs whole and removes what the killed one left.
    mirror.add_release(&release);
    mirror.fault(VERSION, "alloy-linux-amd64.zip", Fault::ServerErrors(0));
    ws.build(&mirror.base_url, VERSION, &[]).assert_ok();
    assert_eq!(ws.out_names(), [IMAGE, CHECKSUM]);
    let cache_dir = ws.cache.join("alloy-sysext/v1.10.2");
    let cached: Vec<String> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        cached,
        ["alloy-linux-amd64.zip"],
        "the killed download's partial file is gone"
    );
}

#[test]
fn bad_versions_are_refused_before_any_network_access() {
    let mirror = Mirror::start();
    let ws = workspace();
    for version in [
        "1.10",
        "../x",
        "",
        "1.10.2;reboot",
        "$(id)",
        "1.10.2-beta.1",
        "latest!",
    ] {
        let run = ws.build(&mirror.base_url, version, &[]);
        run.assert_fails_with(&["invalid Alloy version", "expected X.Y.Z or X.Y.Z-rc.N"]);
    }
    assert!(
        mirror.log().is_empty(),
        "no request may be made: {:?}",
        mirror.log()
    );
    assert!(ws.out_names().is_empty());
}

#[test]
fn release_candidates_build_with_the_v_stripped_from_file_names() {
    let mirror = Mirror::with_release(&Release::new("1.11.0-rc.1"));
    let ws = workspace();
    ws.build(&mirror.base_url, "v1.11.0-rc.1", &[]).assert_ok();
    assert_eq!(
        ws.out_names(),
        [
            "alloy-1.11.0-rc.1-amd64.raw",
            "alloy-1.11.0-rc.1-amd64.raw.sha256"
        ]
    );
    assert!(
        mirror
            .requests_for("/download/v1.11.0-rc.1/SHA256SUMS")
            .len()
            == 1
    );
}

#[test]
fn plain_http_is_refused_unless_loopback() {
    let ws = workspace();
    let run = ws.build("http://example.com/releases", VERSION, &[]);
    run.assert_fails_with(&["refusing plain http://", "example.com"]);
    assert!(ws.out_names().is_empty());
}

#[test]
fn a_cached_zip_is_verified_again_and_reused_or_replaced() {
    let (release, mirror, ws) = fixture();
    ws.build(&mirror.base_url, VERSION, &[]).assert_ok();
    let zip_requests = || mirror.requests_for(ZIP_OBJECT).len();
    assert_eq!(zip_requests(), 1);
    let cached = cached_zip(&ws);
    assert!(cached.is_file());

    // Warm: SHA256SUMS is fetched again, the zip is not.
    ws.build(&mirror.base_url, VERSION, &[])
        .assert_ok_saying(&["using cached"]);
    assert_eq!(zip_requests(), 1);

    // A corrupted cache entry is noticed and replaced.
    let mut bytes = std::fs::read(&cached).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cached, &bytes).unwrap();
    ws.build(&mirror.base_url, VERSION, &[])
        .assert_ok_saying(&["does not match SHA256SUMS"]);
    assert_eq!(zip_requests(), 2);
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        release.assets["alloy-linux-amd64.zip"]
    );
}

#[test]
fn builds_offline_from_a_local_zip() {
    let (release, mirror, online) = fixture();
    online.build(&mirror.base_url, VERSION, &[]).assert_ok();

    let ws = workspace();
    std::fs::create_dir_all(ws.tmp.path().join("media")).unwrap();
    let zip = ws.tmp.path().join("media/alloy-linux-amd64.zip");
    std::fs::write(&zip, &release.assets["alloy-linux-amd64.zip"]).unwrap();
    let sums = ws.tmp.path().join("media/SHA256SUMS");
    std::fs::write(&sums, &release.assets["SHA256SUMS"]).unwrap();
    let digest = fixture::sha256_hex(&release.assets["alloy-linux-amd64.zip"]);
    // No mirror at all: nothing listens on port 9.
    let offline = "http://127.0.0.1:9/nothing";

    let zip_arg = zip.to_str().unwrap();
    ws.build(offline, VERSION, &["--zip", zip_arg, "--sha256", &digest])
        .assert_ok();
    assert!(std::fs::read(ws.image(IMAGE)).unwrap() == std::fs::read(online.image(IMAGE)).unwrap());

    let other = workspace();
    other
        .build(
            offline,
            VERSION,
            &["--zip", zip_arg, "--sha256sums", sums.to_str().unwrap()],
        )
        .assert_ok();
    assert_eq!(other.out_names(), [IMAGE, CHECKSUM]);

    let wrong = workspace();
    let bad_digest = fixture::sha256_hex(b"something else");
    wrong
        .build(
            offline,
            VERSION,
            &["--zip", zip_arg, "--sha256", &bad_digest],
        )
        .assert_fails_with(&["checksum mismatch", &bad_digest, &digest]);
    assert!(wrong.out_names().is_empty());

    let missing = workspace();
    missing
        .build(offline, VERSION, &["--zip", zip_arg])
        .assert_fails_with(&["--sha256"]);
}
