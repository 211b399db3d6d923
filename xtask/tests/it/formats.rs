//! `cargo xtask build --format squashfs|erofs`: images checked with their own tools, without
//! mounting; every format reproducible; and `cargo xtask inspect` reading all three.

use std::path::Path;
use std::process::Command;

use xtask_testkit::fixture::Release;
use xtask_testkit::mirror::Mirror;
use xtask_testkit::{checked_output as output, tool, Run, Workspace};

use crate::support::{workspace, EXTENSION_RELEASE, FORMATS, IMAGE, RELEASE_FILE, VERSION, XTASK};

fn mirror() -> (Release, Mirror) {
    let release = Release::new(VERSION);
    (release.clone(), Mirror::with_release(&release))
}

fn build(mirror: &Mirror, format: &str) -> Workspace {
    let ws = workspace();
    ws.build(&mirror.base_url, VERSION, &["--format", format])
        .assert_ok();
    assert_eq!(ws.out_names(), [IMAGE, &format!("{IMAGE}.sha256")]);
    ws
}

fn magic(image: &Path) -> Vec<u8> {
    std::fs::read(image).unwrap()[..1084].to_vec()
}

#[test]
fn squashfs_images_are_root_owned_zstd_and_hold_the_release() {
    let (release, mirror) = mirror();
    let ws = build(&mirror, "squashfs");
    let image = ws.image(IMAGE);
    assert_eq!(&magic(&image)[..4], b"hsqs");

    let listing = output(Command::new(tool("unsquashfs")).arg("-lln").arg(&image));
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines.len() >= 6, "{listing}");
    for line in &lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], "0/0", "every inode is root's: {line}");
        assert_eq!(fields[3..5], ["2024-01-01", "00:00"], "fixed times: {line}");
        let path = fields[5];
        assert!(
            path == "squashfs-root" || path.starts_with("squashfs-root/usr"),
            "{line}"
        );
        assert!(!path.starts_with("squashfs-root/usr/sbin"), "{line}");
    }
    let alloy = lines
        .iter()
        .find(|l| l.ends_with(" squashfs-root/usr/bin/alloy"))
        .unwrap_or_else(|| panic!("no /usr/bin/alloy in\n{listing}"));
    assert!(alloy.starts_with("-rwxr-xr-x 0/0"), "{alloy}");
    let size = release.binary("amd64").len().to_string();
    assert!(alloy.split_whitespace().any(|f| f == size), "{alloy}");

    let cat = |path: &str| {
        let out = Command::new(tool("unsquashfs"))
            .arg("-cat")
            .arg(&image)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let text = String::from_utf8(cat(RELEASE_FILE)).unwrap();
    assert!(text.starts_with(EXTENSION_RELEASE), "{text:?}");
    assert_eq!(cat("usr/bin/alloy"), release.binary("amd64"));

    let superblock = output(Command::new(tool("unsquashfs")).arg("-s").arg(&image));
    assert!(superblock.contains("Compression zstd"), "{superblock}");
    assert!(superblock.contains("Block size 1048576"), "{superblock}");
    assert!(
        superblock.contains("Xattrs are not stored") || !superblock.contains("xattr ids"),
        "{superblock}"
    );
}

#[test]
fn erofs_images_are_root_owned_lz4hc_with_a_fixed_uuid_and_check_clean() {
    let (release, mirror) = mirror();
    let ws = build(&mirror, "erofs");
    let image = ws.image(IMAGE);
    assert_eq!(&magic(&image)[1024..1028], &[0xE2, 0xE1, 0xF5, 0xE0]);

    // fsck.erofs decodes every file; extracted, the tree is what we staged.
    let extracted = ws.tmp.path().join("extracted");
    output(
        Command::new(tool("fsck.erofs"))
            .arg(format!("--extract={}", extracted.display()))
            .arg(&image),
    );
    assert_eq!(
        std::fs::read(extracted.join("usr/bin/alloy")).unwrap(),
        release.binary("amd64")
    );
    let text = std::fs::read_to_string(extracted.join(RELEASE_FILE)).unwrap();
    assert!(text.starts_with(EXTENSION_RELEASE), "{text:?}");

    for path in [
        "/",
        "/usr",
        "/usr/bin",
        "/usr/bin/alloy",
        &format!("/{RELEASE_FILE}"),
    ] {
        let info = output(
            Command::new(tool("dump.erofs"))
                .arg(format!("--path={path}"))
                .arg(&image),
        );
        assert!(info.contains("Uid: 0   Gid: 0"), "{path}:\n{info}");
        assert!(
            info.contains("Timestamp: 2024-01-01 00:00:00"),
            "{path}:\n{info}"
        );
        if path == "/usr/bin/alloy" {
            assert!(info.contains("Access: 0755/rwxr-xr-x"), "{info}");
        }
    }
    let superblock = output(Command::new(tool("dump.erofs")).arg("-s").arg(&image));
    assert!(superblock.contains("big_pcluster"), "{superblock}");
    assert!(
        superblock.contains("Mon Jan  1 00:00:00 2024"),
        "{superblock}"
    );
    // The UUID (16 bytes at superblock offset 48) is derived from the image name: set, and the
    // same in every build of this release.
    let uuid = |image: &Path| std::fs::read(image).unwrap()[1024 + 48..1024 + 64].to_vec();
    assert_ne!(uuid(&image), vec![0u8; 16]);
    let again = build(&mirror, "erofs");
    assert_eq!(uuid(&image), uuid(&again.image(IMAGE)));
}

/// Two builds, a second apart, in other directories with empty caches: the same bytes, for
/// every format; another SOURCE_DATE_EPOCH gives other bytes.
#[test]
fn every_format_is_reproducible() {
    let (_release, mirror) = mirror();
    for format in FORMATS {
        let first = build(&mirror, format);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let second = build(&mirror, format);
        let a = std::fs::read(first.image(IMAGE)).unwrap();
        let b = std::fs::read(second.image(IMAGE)).unwrap();
        assert!(a == b, "{format}: two builds differ");

        let third = workspace();
        Run::from_command(
            third
                .command(&mirror.base_url)
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["build", VERSION, "--format", format, "--out-dir"])
                .arg(&third.out),
        )
        .assert_ok();
        let c = std::fs::read(third.image(IMAGE)).unwrap();
        assert!(a != c, "{format}: SOURCE_DATE_EPOCH had no effect");
    }
}

#[test]
fn inspect_reads_every_format_without_mounting() {
    let (release, mirror) = mirror();
    let binary = release.binary("amd64");
    let head: String = binary[..64].iter().map(|b| format!("{b:02x}")).collect();
    let mut releases = Vec::new();
    for format in FORMATS {
        let ws = build(&mirror, format);
        let run = Run::from_command(
            Command::new(XTASK)
                .args(["inspect", "--json"])
                .arg(ws.image(IMAGE)),
        );
        run.assert_ok();
        let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(value["format"], format, "{value}");
        let text = value["extension_release"].as_str().unwrap_or_default();
        assert!(text.starts_with(EXTENSION_RELEASE), "{value}");
        releases.push(text.to_string());
        let alloy = &value["alloy"];
        assert_eq!(alloy["mode"], "100755", "{format}: {value}");
        assert_eq!(
            (alloy["uid"].as_u64(), alloy["gid"].as_u64()),
            (Some(0), Some(0))
        );
        assert_eq!(
            alloy["size"].as_u64(),
            Some(binary.len() as u64),
            "{format}"
        );
        assert_eq!(alloy["head_hex"], head.as_str(), "{format}");

        // Text for people says the same.
        let text = Run::from_command(Command::new(XTASK).arg("inspect").arg(ws.image(IMAGE)));
        text.assert_ok();
        assert!(
            text.stdout.contains(&format!("format: {format}")),
            "{}",
            text.stdout
        );
        assert!(
            text.stdout.contains("mode 100755, owner 0:0"),
            "{}",
            text.stdout
        );
    }

    assert!(
        releases.iter().all(|r| r == &releases[0]),
        "every format holds the same extension-release: {releases:?}"
    );

    // An image without the binary and metadata says so.
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("tree/usr/share")).unwrap();
    let image = empty.path().join("empty.raw");
    output(
        Command::new(tool("mksquashfs"))
            .arg(empty.path().join("tree"))
            .arg(&image)
            .args(["-quiet", "-no-progress", "-all-root"]),
    );
    let run = Run::from_command(Command::new(XTASK).args(["inspect", "--json"]).arg(&image));
    run.assert_ok();
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["format"], "squashfs");
    assert!(
        value["alloy"].is_null() && value["extension_release"].is_null(),
        "{value}"
    );

    // Something that is no image at all is refused, naming it.
    let zip = empty.path().join("alloy.zip");
    std::fs::write(&zip, &release.assets["alloy-linux-amd64.zip"]).unwrap();
    Run::from_command(Command::new(XTASK).arg("inspect").arg(&zip))
        .assert_fails_with(&["alloy.zip", "is not an ext4, squashfs or erofs image"]);
}

/// A missing packer is named with its package before anything is downloaded.
#[test]
fn a_missing_packer_is_named_with_its_package_before_downloading() {
    let (_release, mirror) = mirror();
    // An empty PATH: mksquashfs and mkfs.erofs live in /usr/bin, which is then not searched.
    let empty = tempfile::tempdir().unwrap();
    for (format, needle) in [
        ("squashfs", "mksquashfs (package squashfs-tools)"),
        ("erofs", "mkfs.erofs (package erofs-utils)"),
    ] {
        let ws = workspace();
        let run = Run::from_command(
            ws.command(&mirror.base_url)
                .env("PATH", empty.path())
                .args(["build", VERSION, "--format", format, "--out-dir"])
                .arg(&ws.out),
        );
        run.assert_fails_with(&[needle, "install-deps.sh"]);
    }
    assert!(mirror.log().is_empty(), "{:?}", mirror.log());
}
