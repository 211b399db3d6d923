//! Crafted images against `xtask inspect` and `xtask verify`: links to host files and to
//! `/dev/zero`, FIFOs, devices, a linked `usr/lib`, directories where files belong, sparse
//! multi-GiB files, wide and deep trees, and (erofs) names with `/`, `..` or NUL patched in
//! after mkfs. Each runs under a memory limit, a deadline and a private TMPDIR, and must fail
//! cleanly naming the problem (or, where nothing is wrong on the way, succeed with the right
//! answer), print nothing from the host, write nothing outside and leave TMPDIR empty.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use xtask_testkit::fixture::{fake_alloy, sha256_hex, Release};
use xtask_testkit::http::{Answer, Server};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::process::require_root;
use xtask_testkit::{tool, Run};

use crate::support::{workspace, FORMATS, IMAGE, VERSION, XTASK};

const RELEASE_DIR: &str = "usr/lib/extension-release.d";
const RELEASE_FILE: &str = "usr/lib/extension-release.d/extension-release.alloy";
const GOOD_RELEASE: &str = "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n";
/// What xtask runs under: far below what an unbounded read of a 3 GiB file would take.
const MEMORY_LIMIT: &str = "--as=536870912";
const DEADLINE_SECONDS: &str = "60";

/// Host files a hostile image points at. The secret ones hold a marker that must never show,
/// and look right: following them would make a bad image pass.
struct Host {
    dir: tempfile::TempDir,
    marker: String,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("HOST-SECRET-{}", std::process::id());
        let release = dir.path().join("lib/extension-release.d");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(
            release.join("extension-release.alloy"),
            format!("{GOOD_RELEASE}SECRET={marker}\n"),
        )
        .unwrap();
        Host { dir, marker }
    }

    fn secret_lib(&self) -> PathBuf {
        self.dir.path().join("lib")
    }

    fn secret_release(&self) -> PathBuf {
        self.secret_lib()
            .join("extension-release.d/extension-release.alloy")
    }

    /// Lines of host files that must not appear in any output.
    fn forbidden(&self) -> Vec<String> {
        let mut lines = vec![self.marker.clone()];
        for file in ["/etc/shadow", "/etc/os-release"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            lines.extend(
                text.lines()
                    .filter(|l| l.len() > 8)
                    .map(str::to_string)
                    .take(3),
            );
        }
        lines
    }
}

/// The outcome of a bounded run: what it printed, and what went wrong whatever the image.
struct Bounded {
    run: Run,
    /// A hang, a crash, host content printed, files left in TMPDIR.
    broken: Vec<String>,
}

impl Bounded {
    /// Panics when anything went wrong whatever the image.
    fn assert_sound(&self) -> &Run {
        assert!(self.broken.is_empty(), "{}", self.broken.join("\n"));
        &self.run
    }
}

/// Runs xtask with `args` under `prlimit --as`, `timeout`, and an empty private TMPDIR, and
/// notes what must hold whatever the image: no hang, no crash, nothing from the host, nothing
/// left in TMPDIR.
fn bounded(args: &[&str], host: &Host) -> Bounded {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            DEADLINE_SECONDS,
            "prlimit",
            MEMORY_LIMIT,
            "--",
        ])
        .arg(XTASK)
        .args(args)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let run = Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let all = format!("{}{}", run.stdout, run.stderr);
    let mut broken = Vec::new();
    let code = output.status.code();
    if code != Some(0) && code != Some(1) {
        broken.push(format!(
            "xtask {args:?} ended with {:?} (a hang, a crash or an allocation failure)",
            output.status
        ));
    }
    for line in host.forbidden() {
        if all.contains(&line) {
            broken.push(format!("xtask {args:?} printed host content {line:?}"));
        }
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    if !left.is_empty() {
        broken.push(format!("xtask {args:?} left {left:?} in TMPDIR"));
    }
    Bounded { run, broken }
}

fn inspect(image: &Path, host: &Host) -> Bounded {
    bounded(&["inspect", "--json", image.to_str().unwrap()], host)
}

/// Serves `image` as the only published image, with true checksums, and runs verify on it.
fn verify(image: &Path, host: &Host) -> Bounded {
    let bytes = std::fs::read(image).unwrap();
    let digest = sha256_hex(&bytes);
    let bucket = Server::start();
    bucket.answer(
        "/SHA256SUMS",
        Answer::ok(format!("{digest}  {IMAGE}\n").into_bytes()),
    );
    bucket.answer(
        &format!("/{IMAGE}.sha256"),
        Answer::ok(format!("{digest}  {IMAGE}\n").into_bytes()),
    );
    bucket.answer(&format!("/{IMAGE}"), Answer::ok(bytes));
    bounded(&["verify", VERSION, "--base-url", &bucket.url], host)
}

fn run_tool(command: &mut Command) {
    let output = command.output().expect("running a tool");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A good sysext tree: the fake Alloy and a true extension-release.
fn good_tree(root: &Path) {
    std::fs::create_dir_all(root.join(RELEASE_DIR)).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join(RELEASE_FILE), GOOD_RELEASE).unwrap();
    std::fs::write(root.join("usr/bin/alloy"), fake_alloy(VERSION, "amd64")).unwrap();
    set_mode(&root.join("usr/bin/alloy"), 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mknod(path: &Path, kind: &str, major: &str, minor: &str) {
    let _ = std::fs::remove_file(path);
    let mut command = Command::new("mknod");
    command.arg(path).arg(kind);
    if kind != "p" {
        command.args([major, minor]);
    }
    run_tool(&mut command);
}

/// Packs `tree` into `image` the way each format's tool does.
fn pack(format: &str, tree: &Path, image: &Path) {
    let _ = std::fs::remove_file(image);
    match format {
        // 4 KiB blocks whatever the host's mke2fs.conf says for small filesystems (1 KiB): the
        // 20,000 long names of the wide directory then fit its hash tree with room to spare.
        "ext4" => run_tool(
            Command::new(tool("mkfs.ext4"))
                .args([
                    "-q",
                    "-F",
                    "-b",
                    "4096",
                    "-N",
                    "40000",
                    "-E",
                    "root_owner=0:0",
                    "-d",
                ])
                .arg(tree)
                .arg(image)
                .arg("96M"),
        ),
        "squashfs" => run_tool(Command::new(tool("mksquashfs")).arg(tree).arg(image).args([
            "-quiet",
            "-no-progress",
            "-all-root",
            "-noappend",
        ])),
        "erofs" => run_tool(
            Command::new(tool("mkfs.erofs"))
                .args(["--quiet", "--all-root", "-zlz4hc", "-C131072"])
                .arg(image)
                .arg(tree),
        ),
        other => panic!("no format {other}"),
    }
}

/// Sets the size of the file at `path` inside `image` to `size`, leaving its data as it is:
/// a sparse multi-GiB file without writing one.
fn set_size(format: &str, image: &Path, path: &str, size: u64) {
    match format {
        "ext4" => run_tool(
            Command::new(tool("debugfs"))
                .arg("-w")
                .arg("-R")
                .arg(format!("sif /{path} size {size}"))
                .arg(image),
        ),
        "erofs" => {
            let info = Command::new(tool("dump.erofs"))
                .arg(format!("--path=/{path}"))
                .arg(image)
                .output()
                .unwrap();
            let info = String::from_utf8(info.stdout).unwrap();
            let nid: u64 = info
                .split_whitespace()
                .skip_while(|w| *w != "NID:")
                .nth(1)
                .unwrap_or_else(|| panic!("no NID in {info}"))
                .parse()
                .unwrap();
            let mut bytes = std::fs::read(image).unwrap();
            let sb = 1024;
            let block_bits = bytes[sb + 12];
            let meta = u64::from(u32::from_le_bytes(
                bytes[sb + 40..sb + 44].try_into().unwrap(),
            )) << block_bits;
            let at = (meta + nid * 32) as usize;
            if bytes[at] & 1 == 0 {
                let size = u32::try_from(size).unwrap();
                bytes[at + 8..at + 12].copy_from_slice(&size.to_le_bytes());
            } else {
                bytes[at + 8..at + 16].copy_from_slice(&size.to_le_bytes());
            }
            std::fs::write(image, bytes).unwrap();
        }
        other => panic!("{other} images get their sparse files from the tree"),
    }
}

/// What a crafted image must lead to.
enum Expect {
    /// A clean failure whose message holds every one of these.
    Fails(Vec<String>),
    /// Success: nothing wrong stands on the way (the rest of the tree is never walked).
    Reads { size: u64 },
}

fn fails(needles: &[&str]) -> Expect {
    Expect::Fails(needles.iter().map(|n| n.to_string()).collect())
}

const THREE_GIB: u64 = 3 << 30;

/// One crafted image per case, for `format`: (name, image, what must happen).
fn crafted_images(
    format: &'static str,
    host: &Host,
    work: &Path,
) -> Vec<(String, PathBuf, Expect)> {
    let binary_len = fake_alloy(VERSION, "amd64").len() as u64;
    let release_link = |target: PathBuf| {
        move |root: &Path| {
            std::fs::remove_file(root.join(RELEASE_FILE)).unwrap();
            symlink(&target, root.join(RELEASE_FILE)).unwrap();
        }
    };
    type Craft = Box<dyn Fn(&Path)>;
    let secret = host.secret_release();
    let secret_lib = host.secret_lib();
    let mut cases: Vec<(&str, Craft, Expect)> = vec![
        (
            "extension-release links to /etc/shadow",
            Box::new(release_link("/etc/shadow".into())),
            fails(&[
                "extension-release.alloy is a symbolic link to \"/etc/shadow\", not a regular file",
            ]),
        ),
        (
            "extension-release links to the host's /etc/os-release",
            Box::new(release_link("/etc/os-release".into())),
            fails(&["is a symbolic link to \"/etc/os-release\""]),
        ),
        (
            "extension-release links to a host file that would pass",
            Box::new(release_link(secret)),
            fails(&["extension-release.alloy is a symbolic link to"]),
        ),
        (
            "extension-release links to /dev/zero",
            Box::new(release_link("/dev/zero".into())),
            fails(&["is a symbolic link to \"/dev/zero\""]),
        ),
        (
            "extension-release is a FIFO",
            Box::new(|root: &Path| mknod(&root.join(RELEASE_FILE), "p", "", "")),
            fails(&["extension-release.alloy is a FIFO, not a regular file"]),
        ),
        (
            "extension-release is /dev/zero's device node",
            Box::new(|root: &Path| mknod(&root.join(RELEASE_FILE), "c", "1", "5")),
            fails(&["extension-release.alloy is a character device, not a regular file"]),
        ),
        (
            "usr/lib links to a host directory holding a passing extension-release",
            Box::new(move |root: &Path| {
                std::fs::remove_dir_all(root.join("usr/lib")).unwrap();
                symlink(&secret_lib, root.join("usr/lib")).unwrap();
            }),
            fails(&["/usr/lib is a symbolic link to", "not a directory"]),
        ),
        (
            "usr/lib/extension-release.d is a FIFO",
            Box::new(|root: &Path| {
                std::fs::remove_dir_all(root.join(RELEASE_DIR)).unwrap();
                mknod(&root.join(RELEASE_DIR), "p", "", "");
            }),
            fails(&["/usr/lib/extension-release.d is a FIFO, not a directory"]),
        ),
        (
            "extension-release is a directory",
            Box::new(|root: &Path| {
                std::fs::remove_file(root.join(RELEASE_FILE)).unwrap();
                std::fs::create_dir_all(root.join(RELEASE_FILE).join("sub")).unwrap();
            }),
            fails(&["extension-release.alloy is a directory, not a regular file"]),
        ),
        (
            "usr/bin/alloy links to the host's bash (an ELF that would pass)",
            Box::new(|root: &Path| {
                std::fs::remove_file(root.join("usr/bin/alloy")).unwrap();
                symlink("/usr/bin/bash", root.join("usr/bin/alloy")).unwrap();
            }),
            fails(&["/usr/bin/alloy is a symbolic link to \"/usr/bin/bash\""]),
        ),
        (
            "usr/bin/alloy is a FIFO",
            Box::new(|root: &Path| mknod(&root.join("usr/bin/alloy"), "p", "", "")),
            fails(&["/usr/bin/alloy is a FIFO"]),
        ),
        (
            "usr/bin/alloy is a block device",
            Box::new(|root: &Path| mknod(&root.join("usr/bin/alloy"), "b", "7", "0")),
            fails(&["/usr/bin/alloy is a block device"]),
        ),
        (
            "usr/bin links to /usr/bin",
            Box::new(|root: &Path| {
                std::fs::remove_dir_all(root.join("usr/bin")).unwrap();
                symlink("/usr/bin", root.join("usr/bin")).unwrap();
            }),
            fails(&["/usr/bin is a symbolic link to \"/usr/bin\", not a directory"]),
        ),
        (
            "usr is a regular file",
            Box::new(|root: &Path| {
                std::fs::remove_dir_all(root.join("usr")).unwrap();
                std::fs::write(root.join("usr"), "x").unwrap();
            }),
            fails(&["/usr is a regular file, not a directory"]),
        ),
        (
            "a deep tree beside the files (1000 levels)",
            Box::new(|root: &Path| {
                let deep = root.join("usr/share").join("d/".repeat(1000));
                std::fs::create_dir_all(deep).unwrap();
            }),
            Expect::Reads { size: binary_len },
        ),
    ];
    // A 3 GiB sparse extension-release: squashfs packs holes from the tree; ext4 and erofs
    // get the size set in the inode after packing.
    cases.push((
        "extension-release of 3 GiB (sparse)",
        Box::new(move |root: &Path| {
            if format == "squashfs" {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(root.join(RELEASE_FILE))
                    .unwrap();
                file.set_len(THREE_GIB).unwrap();
            }
        }),
        fails(&["extension-release.alloy is 3221225472 bytes, over the 16384-byte limit"]),
    ));
    // A 3 GiB sparse binary is read as its first 64 bytes only.
    if format != "erofs" {
        cases.push((
            "usr/bin/alloy of 3 GiB (sparse)",
            Box::new(move |root: &Path| {
                if format == "squashfs" {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(root.join("usr/bin/alloy"))
                        .unwrap();
                    file.set_len(THREE_GIB).unwrap();
                }
            }),
            Expect::Reads { size: THREE_GIB },
        ));
    }
    // A directory on the way too large to list within budget: 20,000 entries of 250 bytes.
    // unsquashfs lists only the path, so squashfs reads it. mke2fs -d takes minutes to fill
    // one large directory: ext4 gets the entries through a loop mount after packing.
    cases.push((
        "usr/bin holding 20000 long names",
        Box::new(move |root: &Path| {
            if format != "ext4" {
                fill_wide(&root.join("usr/bin"));
            }
        }),
        match format {
            "ext4" => fails(&["printed more than 4194304 bytes"]),
            "erofs" => fails(&["over the 4194304-byte limit"]),
            _ => Expect::Reads { size: binary_len },
        },
    ));

    let mut images = Vec::new();
    for (i, (name, craft, expect)) in cases.into_iter().enumerate() {
        let root = work.join(format!("tree-{i}"));
        good_tree(&root);
        craft(&root);
        let image = work.join(format!("{format}-{i}.raw"));
        pack(format, &root, &image);
        std::fs::remove_dir_all(&root).unwrap();
        if format != "squashfs" && name.contains("3 GiB") {
            let path = if name.starts_with("usr/bin/alloy") {
                "usr/bin/alloy"
            } else {
                RELEASE_FILE
            };
            set_size(format, &image, path, THREE_GIB);
        }
        if format == "ext4" && name.contains("long names") {
            fill_wide_ext4(&image, &work.join("mnt"));
        }
        images.push((format!("{format}: {name}"), image, expect));
    }
    images
}

fn fill_wide(dir: &Path) {
    for i in 0..20_000 {
        std::fs::File::create(dir.join(format!("{i:0>250}"))).unwrap();
    }
}

/// [`fill_wide`] for `usr/bin` inside an ext4 image, through a loop mount in a private mount
/// namespace (the kernel indexes large directories; mke2fs does not).
fn fill_wide_ext4(image: &Path, mountpoint: &Path) {
    std::fs::create_dir_all(mountpoint).unwrap();
    // Loop devices are shared with whatever else runs: setting one up may race, so retry.
    let script = r#"set -e
        for try in 1 2 3 4 5; do mount -o loop "$1" "$2" && break; sleep 1; done
        mountpoint -q "$2"; cd "$2/usr/bin"
        i=0; while [ $i -lt 20000 ]; do printf '%0250d\n' $i; i=$((i+1)); done | xargs touch
        cd /; umount "$2""#;
    run_tool(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(image)
            .arg(mountpoint),
    );
}

/// Checks one bounded inspect against what it must lead to; `Err` says what went wrong.
fn check(name: &str, outcome: &Bounded, expect: &Expect) -> Result<(), String> {
    if !outcome.broken.is_empty() {
        return Err(format!("{name}: {}", outcome.broken.join("; ")));
    }
    let run = &outcome.run;
    match expect {
        Expect::Fails(needles) => {
            if run.success {
                return Err(format!("{name}: inspect succeeded:\n{}", run.stdout));
            }
            for needle in needles {
                if !run.stderr.contains(needle.as_str()) {
                    return Err(format!("{name}: stderr lacks {needle:?}:\n{}", run.stderr));
                }
            }
            Ok(())
        }
        Expect::Reads { size } => {
            if !run.success {
                return Err(format!("{name}: inspect failed:\n{}", run.stderr));
            }
            let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            let head = value["alloy"]["head_hex"].as_str().unwrap_or_default();
            let release = value["extension_release"].as_str().unwrap_or_default();
            if value["alloy"]["size"].as_u64() != Some(*size)
                || !head.starts_with("7f454c46")
                || head.len() != 128
                || release != GOOD_RELEASE
            {
                return Err(format!("{name}: read wrong: {value}"));
            }
            Ok(())
        }
    }
}

/// Every crafted image of `format` through inspect; verify on the ones that leaked before.
fn hostile_images_are_refused(format: &'static str) {
    let host = Host::new();
    let work = tempfile::tempdir().unwrap();
    let images = crafted_images(format, &host, work.path());
    let mut failures = Vec::new();
    for (name, image, expect) in &images {
        let mut problems = Vec::new();
        if let Err(why) = check(name, &inspect(image, &host), expect) {
            problems.push(why);
        }
        if name.contains("os-release") || name.contains("would pass") {
            let verified = verify(image, &host);
            if !verified.broken.is_empty()
                || verified.run.success
                || !verified.run.stdout.contains("is a symbolic link to")
            {
                problems.push(format!(
                    "{name}: verify did not fail naming the link: {}\n{}\n{}",
                    verified.broken.join("; "),
                    verified.run.stdout,
                    verified.run.stderr
                ));
            }
        }
        if !problems.is_empty() {
            failures.push(problems.join("\n"));
        }
    }
    eprintln!(
        "{format}: {} crafted images tried, {} handled as required",
        images.len(),
        images.len() - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn hostile_ext4_images_are_refused() {
    if require_root("hostile_ext4_images_are_refused") {
        hostile_images_are_refused("ext4");
    }
}

#[test]
fn hostile_squashfs_images_are_refused() {
    if require_root("hostile_squashfs_images_are_refused") {
        hostile_images_are_refused("squashfs");
    }
}

#[test]
fn hostile_erofs_images_are_refused() {
    if require_root("hostile_erofs_images_are_refused") {
        hostile_images_are_refused("erofs");
    }
}

/// Replaces the name `from` in `image` with `to` (same length): no mkfs tool will write such
/// names, so they are patched in after packing. The name is found with
/// what surrounds it (`before`, `after`), which must make it unique in the image.
fn patch_name(image: &Path, (before, from, after): (&[u8], &[u8], &[u8]), to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(image).unwrap();
    let needle = [before, from, after].concat();
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_slice())
        .map(|(i, _)| i + before.len())
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{:?} in {}",
        String::from_utf8_lossy(&needle),
        image.display()
    );
    bytes[hits[0]..hits[0] + from.len()].copy_from_slice(to);
    std::fs::write(image, bytes).unwrap();
}

/// Names with `/`, `..` or NUL, patched into erofs, squashfs and ext4 images: refused, and nothing
/// is written where such a name points (fsck.erofs --extract, which inspect used to run,
/// wrote there).
#[test]
fn names_with_slashes_dots_or_nul_are_refused() {
    if !require_root("names_with_slashes_dots_or_nul_are_refused") {
        return;
    }
    let host = Host::new();
    let work = tempfile::tempdir().unwrap();
    let outside = host.dir.path().join("written-by-inspect");
    let absolute = outside.to_str().unwrap().to_string();
    // Deep enough to climb out of any scratch directory under TMPDIR.
    let relative = format!("{}{}", "../".repeat(16), &absolute[1..]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an absolute path", absolute.clone().into_bytes()),
        ("a path out of the tree", relative.clone().into_bytes()),
        ("..", b"..".to_vec()),
        ("a NUL", b"A\0B".to_vec()),
    ];
    let mut tried = 0;
    let mut failures = Vec::new();
    for format in ["erofs", "squashfs", "ext4"] {
        for (i, (what, name)) in cases.iter().enumerate() {
            if format == "ext4" && name.contains(&0) {
                continue; // debugfs prints names up to a NUL: the cut name is harmless
            }
            let root = work.path().join(format!("tree-{format}-{i}"));
            good_tree(&root);
            // Upper case sorts before `alloy`: in erofs the crafted name is then never the
            // last in its block, and its name is followed by `alloy`'s.
            let placeholder = vec![b'A'; name.len()];
            std::fs::write(
                root.join("usr/bin")
                    .join(String::from_utf8(placeholder.clone()).unwrap()),
                format!("{GOOD_RELEASE}SECRET={}\n", host.marker),
            )
            .unwrap();
            let image = work.path().join(format!("names-{format}-{i}.raw"));
            let (surrounding, refusal) = if format == "erofs" {
                pack(format, &root, &image);
                let shown = format!("{:?}", String::from_utf8_lossy(name));
                (
                    (&b""[..], &placeholder[..], &b"alloy"[..]),
                    format!("the directory /usr/bin holds an entry named {shown}"),
                )
            } else if format == "ext4" {
                // Without directory block checksums, which the patch would break; a name
                // follows its length and file type (1, regular).
                run_tool(
                    Command::new(tool("mkfs.ext4"))
                        .args(["-q", "-F", "-O", "^metadata_csum", "-d"])
                        .arg(&root)
                        .arg(&image)
                        .arg("16M"),
                );
                let shown = format!("{:?}", String::from_utf8_lossy(name));
                (
                    (&[name.len() as u8, 1][..], &placeholder[..], &b""[..]),
                    format!("the directory /usr/bin holds an entry named {shown}"),
                )
            } else {
                // Directory tables uncompressed (-noI): a name follows its length - 1.
                run_tool(
                    Command::new(tool("mksquashfs"))
                        .arg(&root)
                        .arg(&image)
                        .args(["-quiet", "-no-progress", "-all-root", "-noappend", "-noI"]),
                );
                (
                    (&[name.len() as u8 - 1, 0][..], &placeholder[..], &b""[..]),
                    "invalid characters in name".to_string(),
                )
            };
            patch_name(&image, surrounding, name);
            if format == "erofs" {
                // Drop the superblock checksum (feature_compat bit 0, covering the block the
                // names sit in), as an attacker would: erofs-utils then reads the names.
                let mut bytes = std::fs::read(&image).unwrap();
                bytes[1024 + 8] &= !1;
                std::fs::write(&image, bytes).unwrap();
            }

            for (command, outcome) in [
                ("inspect", inspect(&image, &host)),
                ("verify", verify(&image, &host)),
            ] {
                tried += 1;
                let all = format!("{}{}", outcome.run.stdout, outcome.run.stderr);
                if !outcome.broken.is_empty() || outcome.run.success || !all.contains(&refusal) {
                    failures.push(format!(
                        "{format} name with {what}: {command} did not refuse it ({refusal:?}): \
                         {}\n{all}",
                        outcome.broken.join("; ")
                    ));
                }
                if outside.exists() {
                    failures.push(format!(
                        "{format} name with {what}: {command} wrote {absolute}"
                    ));
                    let _ = std::fs::remove_file(&outside);
                }
            }
        }
    }
    eprintln!(
        "names: {tried} runs of inspect and verify on crafted names, {} refused as required",
        tried - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Images built by `xtask build` still inspect and verify, under the same limits.
#[test]
fn built_images_pass_inspect_and_verify_within_the_limits() {
    let host = Host::new();
    let release = Release::new(VERSION);
    let mirror = Mirror::start();
    mirror.add_release(&release);
    let binary = release.binary("amd64");
    let head: String = binary[..64].iter().map(|b| format!("{b:02x}")).collect();
    for format in FORMATS {
        let ws = workspace();
        ws.build(&mirror.base_url, VERSION, &["--format", format])
            .assert_ok();
        let image = ws.image(IMAGE);
        let inspected = inspect(&image, &host);
        inspected.assert_sound().assert_ok();
        let value: serde_json::Value = serde_json::from_str(&inspected.run.stdout).unwrap();
        assert_eq!(value["format"], format);
        assert_eq!(value["alloy"]["head_hex"], head.as_str(), "{format}");
        assert_eq!(value["alloy"]["size"].as_u64(), Some(binary.len() as u64));
        assert!(
            value["extension_release"]
                .as_str()
                .unwrap()
                .starts_with(GOOD_RELEASE),
            "{value}"
        );
        let verified = verify(&image, &host);
        verified.assert_sound().assert_ok();
        assert!(
            verified.run.stdout.contains(" ok"),
            "{}",
            verified.run.stdout
        );
    }
}

/// A few bytes changed at random in a good image's metadata, hundreds of times: every run
/// ends in time with an answer or a clean error (exit 0 or 1: never a panic, an abort or a
/// hang), prints nothing from the host, and leaves TMPDIR empty. erofs is read by our own
/// code, so it gets the most runs.
#[test]
fn images_with_random_damage_never_crash_or_hang() {
    let host = Host::new();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("tree");
    good_tree(&root);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut broken = Vec::new();
    let mut tried = 0;
    for (format, runs) in [("erofs", 300), ("squashfs", 100), ("ext4", 100)] {
        let image = work.path().join(format!("good.{format}"));
        if format == "ext4" {
            run_tool(
                Command::new(tool("mkfs.ext4"))
                    .args(["-q", "-F", "-d"])
                    .arg(&root)
                    .arg(&image)
                    .arg("4M"),
            );
        } else {
            pack(format, &root, &image);
        }
        let good = std::fs::read(&image).unwrap();
        // Where the metadata lies: erofs and ext4 at the start, squashfs's tables at the end.
        let region = match format {
            "erofs" => 1024..good.len().min(16 << 10),
            "ext4" => 1024..good.len().min(512 << 10),
            _ => good.len().saturating_sub(8 << 10)..good.len(),
        };
        let damaged = work.path().join(format!("damaged.{format}"));
        for _ in 0..runs {
            let mut bytes = good.clone();
            let mut changes = Vec::new();
            for _ in 0..1 + random() % 4 {
                let at = region.start + (random() as usize) % region.len();
                bytes[at] = random() as u8;
                changes.push(at);
            }
            std::fs::write(&damaged, &bytes).unwrap();
            tried += 1;
            let outcome = inspect(&damaged, &host);
            if !outcome.broken.is_empty() {
                broken.push(format!(
                    "{format} with bytes {changes:?} changed: {}\n{}",
                    outcome.broken.join("; "),
                    outcome.run.stderr
                ));
            }
        }
    }
    eprintln!(
        "random damage: {tried} damaged images inspected, {} ended cleanly",
        tried - broken.len()
    );
    assert!(broken.is_empty(), "{}", broken.join("\n\n"));
}

/// A reader that hangs is stopped at the deadline, one that floods at the output cap: both
/// said, both within budget. (Fake debugfs and unsquashfs first in PATH stand in for a tool
/// that a crafted image sends astray.)
#[test]
fn a_hanging_or_flooding_tool_is_stopped_and_named() {
    use std::os::unix::fs::PermissionsExt;
    let host = Host::new();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("tree");
    good_tree(&root);
    let fakes = work.path().join("bin");
    std::fs::create_dir_all(&fakes).unwrap();
    for (name, script) in [
        ("debugfs", "#!/bin/sh\nexec sleep 600\n"),
        ("unsquashfs", "#!/bin/sh\nexec yes drwxr-xr-x\n"),
    ] {
        std::fs::write(fakes.join(name), script).unwrap();
        std::fs::set_permissions(fakes.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        fakes.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (format, needle) in [
        ("ext4", "did not finish within 30 s; stopped it"),
        ("squashfs", "printed more than 4194304 bytes; stopped it"),
    ] {
        let image = work.path().join(format!("good.{format}"));
        pack(format, &root, &image);
        let started = std::time::Instant::now();
        let output = Command::new("timeout")
            .args([
                "-s",
                "KILL",
                DEADLINE_SECONDS,
                "prlimit",
                MEMORY_LIMIT,
                "--",
            ])
            .arg(XTASK)
            .arg("inspect")
            .arg(&image)
            .env("PATH", &path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{format}: {stderr}");
        assert!(stderr.contains(needle), "{format}: {stderr}");
        // Stopped, not waited for: the fake sleeps for ten minutes.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(45),
            "{format}: took {:?}",
            started.elapsed()
        );
        assert!(!host.forbidden().iter().any(|l| stderr.contains(l.as_str())));
    }
}
