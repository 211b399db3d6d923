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
use xtask_testkit::process::{path_with_first, require_root, write_script};
use xtask_testkit::{checked_output, tool, Run};

use crate::support::{workspace, EXTENSION_RELEASE, FORMATS, IMAGE, RELEASE_FILE, VERSION, XTASK};

const RELEASE_DIR: &str = "usr/lib/extension-release.d";
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
            format!("{EXTENSION_RELEASE}SECRET={marker}\n"),
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
    let output = limited(args).env("TMPDIR", tmp.path()).output().unwrap();
    let run = Run::from_output(&output);
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

/// xtask with `args`, killed at the deadline, under the memory limit.
fn limited(args: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command
        .args([
            "-s",
            "KILL",
            DEADLINE_SECONDS,
            "prlimit",
            MEMORY_LIMIT,
            "--",
        ])
        .arg(XTASK)
        .args(args);
    command
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

/// A good sysext tree: the fake Alloy and a true extension-release.
fn good_tree(root: &Path) {
    std::fs::create_dir_all(root.join(RELEASE_DIR)).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join(RELEASE_FILE), EXTENSION_RELEASE).unwrap();
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
    checked_output(&mut command);
}

/// Packs `tree` into `image` the way each format's tool does.
fn pack(format: &str, tree: &Path, image: &Path) {
    let _ = std::fs::remove_file(image);
    let (tool_name, args): (&str, &[&str]) = match format {
        // 4 KiB blocks whatever the host's mke2fs.conf says for small filesystems (1 KiB): the
        // 20,000 long names of the wide directory then fit its hash tree with room to spare.
        "ext4" => (
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-N",
                "40000",
                "-E",
                "root_owner=0:0",
            ],
        ),
        "squashfs" => (
            "mksquashfs",
            &["-quiet", "-no-progress", "-all-root", "-noappend"],
        ),
        "erofs" => (
            "mkfs.erofs",
            &["--quiet", "--all-root", "-zlz4hc", "-C131072"],
        ),
        other => panic!("no format {other}"),
    };
    checked_output(&mut packer(tool_name, args, tree, image, "96M"));
}

/// `tool_name` with `args` packing `tree` into `image`, each tool's way round (mkfs.ext4 makes
/// an image of `size`; mksquashfs takes its options last).
fn packer(tool_name: &str, args: &[&str], tree: &Path, image: &Path, size: &str) -> Command {
    let mut command = Command::new(tool(tool_name));
    match tool_name {
        "mkfs.ext4" => command.args(args).arg("-d").arg(tree).arg(image).arg(size),
        "mksquashfs" => command.arg(tree).arg(image).args(args),
        _ => command.args(args).arg(image).arg(tree),
    };
    command
}

/// Sets the size of the file at `path` inside `image` to `size`, leaving its data as it is:
/// a sparse multi-GiB file without writing one.
fn set_size(format: &str, image: &Path, path: &str, size: u64) {
    match format {
        "ext4" => {
            let request = format!("sif /{path} size {size}");
            checked_output(
                Command::new(tool("debugfs"))
                    .args(["-w", "-R", &request])
                    .arg(image),
            );
        }
        "erofs" => {
            let info = checked_output(
                Command::new(tool("dump.erofs"))
                    .arg(format!("--path=/{path}"))
                    .arg(image),
            );
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
#[derive(Clone, Copy)]
enum Expect {
    /// A clean failure whose message holds every one of these.
    Fails(&'static [&'static str]),
    /// Success, with `/usr/bin/alloy` of this size: nothing wrong stands on the way (the rest
    /// of the tree is never walked).
    Reads(Size),
    /// Another outcome for each format; a format not listed does not try the case.
    ByFormat(&'static [(&'static str, Expect)]),
}

#[derive(Clone, Copy)]
enum Size {
    /// The fake Alloy's own size.
    Binary,
    ThreeGib,
}

const THREE_GIB: u64 = 3 << 30;

/// What a symbolic link in a crafted image points at.
#[derive(Clone, Copy)]
enum Target {
    /// A path on the host running the test.
    Host(&'static str),
    /// The [`Host`]'s extension-release, which would pass.
    SecretRelease,
    /// The [`Host`]'s directory holding that extension-release.
    SecretLib,
}

/// How a crafted image differs from [`good_tree`].
#[derive(Clone, Copy)]
enum Craft {
    /// This path is a symbolic link.
    Link(&'static str, Target),
    /// This path is a node made by mknod: its type (`p`, `c`, `b`), major and minor.
    Node(&'static str, &'static str, &'static str, &'static str),
    /// This path is a directory (holding one).
    Directory(&'static str),
    /// This path is a regular file.
    File(&'static str),
    /// A tree this many directories deep beside the files.
    Deep(usize),
    /// This file is 3 GiB, sparse: squashfs packs the hole from the tree; ext4 and erofs get the
    /// size set in the inode after packing.
    Huge(&'static str),
    /// usr/bin holds 20,000 entries of 250 bytes, too many to list within budget. mke2fs -d
    /// takes minutes to fill one large directory: ext4 gets them through a loop mount after
    /// packing.
    Wide,
}

/// A crafted image: what it is called, how it is made, what inspect must make of it, and
/// whether verify is tried on it too (the cases that once leaked a host file).
struct Case {
    name: &'static str,
    craft: Craft,
    expect: Expect,
    verify_too: bool,
}

const fn case(name: &'static str, craft: Craft, expect: Expect) -> Case {
    Case {
        name,
        craft,
        expect,
        verify_too: false,
    }
}

const CASES: &[Case] = &[
    case(
        "extension-release links to /etc/shadow",
        Craft::Link(RELEASE_FILE, Target::Host("/etc/shadow")),
        Expect::Fails(&[
            "extension-release.alloy is a symbolic link to \"/etc/shadow\", not a regular file",
        ]),
    ),
    Case {
        verify_too: true,
        ..case(
            "extension-release links to the host's /etc/os-release",
            Craft::Link(RELEASE_FILE, Target::Host("/etc/os-release")),
            Expect::Fails(&["is a symbolic link to \"/etc/os-release\""]),
        )
    },
    Case {
        verify_too: true,
        ..case(
            "extension-release links to a host file that would pass",
            Craft::Link(RELEASE_FILE, Target::SecretRelease),
            Expect::Fails(&["extension-release.alloy is a symbolic link to"]),
        )
    },
    case(
        "extension-release links to /dev/zero",
        Craft::Link(RELEASE_FILE, Target::Host("/dev/zero")),
        Expect::Fails(&["is a symbolic link to \"/dev/zero\""]),
    ),
    case(
        "extension-release is a FIFO",
        Craft::Node(RELEASE_FILE, "p", "", ""),
        Expect::Fails(&["extension-release.alloy is a FIFO, not a regular file"]),
    ),
    case(
        "extension-release is /dev/zero's device node",
        Craft::Node(RELEASE_FILE, "c", "1", "5"),
        Expect::Fails(&["extension-release.alloy is a character device, not a regular file"]),
    ),
    case(
        "usr/lib links to a host directory holding a passing extension-release",
        Craft::Link("usr/lib", Target::SecretLib),
        Expect::Fails(&["/usr/lib is a symbolic link to", "not a directory"]),
    ),
    case(
        "usr/lib/extension-release.d is a FIFO",
        Craft::Node(RELEASE_DIR, "p", "", ""),
        Expect::Fails(&["/usr/lib/extension-release.d is a FIFO, not a directory"]),
    ),
    case(
        "extension-release is a directory",
        Craft::Directory(RELEASE_FILE),
        Expect::Fails(&["extension-release.alloy is a directory, not a regular file"]),
    ),
    Case {
        verify_too: true,
        ..case(
            "usr/bin/alloy links to the host's bash (an ELF that would pass)",
            Craft::Link("usr/bin/alloy", Target::Host("/usr/bin/bash")),
            Expect::Fails(&["/usr/bin/alloy is a symbolic link to \"/usr/bin/bash\""]),
        )
    },
    case(
        "usr/bin/alloy is a FIFO",
        Craft::Node("usr/bin/alloy", "p", "", ""),
        Expect::Fails(&["/usr/bin/alloy is a FIFO"]),
    ),
    case(
        "usr/bin/alloy is a block device",
        Craft::Node("usr/bin/alloy", "b", "7", "0"),
        Expect::Fails(&["/usr/bin/alloy is a block device"]),
    ),
    case(
        "usr/bin links to /usr/bin",
        Craft::Link("usr/bin", Target::Host("/usr/bin")),
        Expect::Fails(&["/usr/bin is a symbolic link to \"/usr/bin\", not a directory"]),
    ),
    case(
        "usr is a regular file",
        Craft::File("usr"),
        Expect::Fails(&["/usr is a regular file, not a directory"]),
    ),
    case(
        "a deep tree beside the files (1000 levels)",
        Craft::Deep(1000),
        Expect::Reads(Size::Binary),
    ),
    case(
        "extension-release of 3 GiB (sparse)",
        Craft::Huge(RELEASE_FILE),
        Expect::Fails(&["extension-release.alloy is 3221225472 bytes, over the 16384-byte limit"]),
    ),
    // Read as its first 64 bytes only.
    case(
        "usr/bin/alloy of 3 GiB (sparse)",
        Craft::Huge("usr/bin/alloy"),
        Expect::ByFormat(&[
            ("ext4", Expect::Reads(Size::ThreeGib)),
            ("squashfs", Expect::Reads(Size::ThreeGib)),
        ]),
    ),
    // unsquashfs lists only the path, so squashfs reads it.
    case(
        "usr/bin holding 20000 long names",
        Craft::Wide,
        Expect::ByFormat(&[
            ("ext4", Expect::Fails(&["printed more than 4194304 bytes"])),
            ("squashfs", Expect::Reads(Size::Binary)),
            ("erofs", Expect::Fails(&["over the 4194304-byte limit"])),
        ]),
    ),
];

impl Expect {
    /// What `format` must do, if it tries the case at all.
    fn for_format(self, format: &str) -> Option<Expect> {
        match self {
            Expect::ByFormat(outcomes) => outcomes
                .iter()
                .find(|(f, _)| *f == format)
                .and_then(|(_, expect)| expect.for_format(format)),
            expect => Some(expect),
        }
    }
}

impl Craft {
    /// Changes the good tree at `root` before `format` packs it.
    fn before_packing(self, format: &str, root: &Path, host: &Host) {
        match self {
            Craft::Link(path, target) => {
                clear(&root.join(path));
                let target = match target {
                    Target::Host(path) => PathBuf::from(path),
                    Target::SecretRelease => host.secret_release(),
                    Target::SecretLib => host.secret_lib(),
                };
                symlink(target, root.join(path)).unwrap();
            }
            Craft::Node(path, kind, major, minor) => {
                clear(&root.join(path));
                mknod(&root.join(path), kind, major, minor);
            }
            Craft::Directory(path) => {
                clear(&root.join(path));
                std::fs::create_dir_all(root.join(path).join("sub")).unwrap();
            }
            Craft::File(path) => {
                clear(&root.join(path));
                std::fs::write(root.join(path), "x").unwrap();
            }
            Craft::Deep(levels) => {
                let deep = root.join("usr/share").join("d/".repeat(levels));
                std::fs::create_dir_all(deep).unwrap();
            }
            Craft::Huge(path) if format == "squashfs" => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(root.join(path))
                    .unwrap();
                file.set_len(THREE_GIB).unwrap();
            }
            Craft::Wide if format != "ext4" => fill_wide(&root.join("usr/bin")),
            Craft::Huge(_) | Craft::Wide => {}
        }
    }

    /// Changes the packed `image` where its tool could not make the change from the tree.
    fn after_packing(self, format: &str, image: &Path, work: &Path) {
        match self {
            Craft::Huge(path) if format != "squashfs" => set_size(format, image, path, THREE_GIB),
            Craft::Wide if format == "ext4" => fill_wide_ext4(image, &work.join("mnt")),
            _ => {}
        }
    }
}

/// Removes whatever is at `path`, a directory with all it holds.
fn clear(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// Every case of [`CASES`] that `format` tries, crafted: (name, image, what must happen, whether
/// verify is tried too).
fn crafted_images(format: &str, host: &Host, work: &Path) -> Vec<(String, PathBuf, Expect, bool)> {
    let mut images = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let Some(expect) = case.expect.for_format(format) else {
            continue;
        };
        let root = work.join(format!("tree-{i}"));
        good_tree(&root);
        case.craft.before_packing(format, &root, host);
        let image = work.join(format!("{format}-{i}.raw"));
        pack(format, &root, &image);
        std::fs::remove_dir_all(&root).unwrap();
        case.craft.after_packing(format, &image, work);
        let name = format!("{format}: {}", case.name);
        images.push((name, image, expect, case.verify_too));
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
    checked_output(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(image)
            .arg(mountpoint),
    );
}

/// Says how many of the `tried` were handled as required, and fails with every one of
/// `failures` (each naming its case) if any was not.
fn assert_all_handled(what: &str, tried: usize, failures: &[String]) {
    let handled = tried - failures.len();
    eprintln!("{what}: {tried} tried, {handled} handled as required");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
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
            for needle in *needles {
                if !run.stderr.contains(needle) {
                    return Err(format!("{name}: stderr lacks {needle:?}:\n{}", run.stderr));
                }
            }
            Ok(())
        }
        Expect::Reads(size) => {
            let size = match size {
                Size::Binary => fake_alloy(VERSION, "amd64").len() as u64,
                Size::ThreeGib => THREE_GIB,
            };
            if !run.success {
                return Err(format!("{name}: inspect failed:\n{}", run.stderr));
            }
            let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            let head = value["alloy"]["head_hex"].as_str().unwrap_or_default();
            let release = value["extension_release"].as_str().unwrap_or_default();
            if value["alloy"]["size"].as_u64() != Some(size)
                || !head.starts_with("7f454c46")
                || head.len() != 128
                || release != EXTENSION_RELEASE
            {
                return Err(format!("{name}: read wrong: {value}"));
            }
            Ok(())
        }
        Expect::ByFormat(_) => unreachable!("{name}: resolved by Expect::for_format"),
    }
}

/// Every crafted image of `format` through inspect; verify on the ones that leaked before.
fn hostile_images_are_refused(format: &str) {
    let host = Host::new();
    let work = tempfile::tempdir().unwrap();
    let images = crafted_images(format, &host, work.path());
    let mut failures = Vec::new();
    for (name, image, expect, verify_too) in &images {
        let mut problems = Vec::new();
        if let Err(why) = check(name, &inspect(image, &host), expect) {
            problems.push(why);
        }
        if *verify_too {
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
    let what = format!("{format}: crafted images inspected");
    assert_all_handled(&what, images.len(), &failures);
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

/// Packs `root` into `image` for a name to be patched in after, and says what surrounds a name in
/// `format`'s directory entries (before it, after it) and what xtask must say of `name` there.
fn pack_for_patching(
    format: &str,
    root: &Path,
    image: &Path,
    name: &[u8],
) -> (Vec<u8>, Vec<u8>, String) {
    let named = format!(
        "the directory /usr/bin holds an entry named {:?}",
        String::from_utf8_lossy(name)
    );
    match format {
        "erofs" => {
            pack(format, root, image);
            (Vec::new(), b"alloy".to_vec(), named)
        }
        "ext4" => {
            // Without directory block checksums, which the patch would break; a name follows
            // its length and file type (1, regular).
            let args = ["-q", "-F", "-O", "^metadata_csum"];
            checked_output(&mut packer("mkfs.ext4", &args, root, image, "16M"));
            (vec![name.len() as u8, 1], Vec::new(), named)
        }
        _ => {
            // Directory tables uncompressed (-noI): a name follows its length - 1.
            let args = ["-quiet", "-no-progress", "-all-root", "-noappend", "-noI"];
            checked_output(&mut packer("mksquashfs", &args, root, image, ""));
            let refusal = "invalid characters in name".to_string();
            (vec![name.len() as u8 - 1, 0], Vec::new(), refusal)
        }
    }
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
                format!("{EXTENSION_RELEASE}SECRET={}\n", host.marker),
            )
            .unwrap();
            let image = work.path().join(format!("names-{format}-{i}.raw"));
            let (before, after, refusal) = pack_for_patching(format, &root, &image, name);
            patch_name(&image, (&before, &placeholder, &after), name);
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
    assert_all_handled("names: runs of inspect and verify", tried, &failures);
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
                .starts_with(EXTENSION_RELEASE),
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
            checked_output(&mut packer("mkfs.ext4", &["-q", "-F"], &root, &image, "4M"));
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
    assert_all_handled("random damage: damaged images inspected", tried, &broken);
}

/// A reader that hangs is stopped at the deadline, one that floods at the output cap: both
/// said, both within budget. (Fake debugfs and unsquashfs first in PATH stand in for a tool
/// that a crafted image sends astray.)
#[test]
fn a_hanging_or_flooding_tool_is_stopped_and_named() {
    let host = Host::new();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("tree");
    good_tree(&root);
    let fakes = work.path().join("bin");
    write_script(&fakes, "debugfs", "#!/bin/sh\nexec sleep 600\n");
    write_script(&fakes, "unsquashfs", "#!/bin/sh\nexec yes drwxr-xr-x\n");
    for (format, needle) in [
        ("ext4", "did not finish within 30 s; stopped it"),
        ("squashfs", "printed more than 4194304 bytes; stopped it"),
    ] {
        let image = work.path().join(format!("good.{format}"));
        pack(format, &root, &image);
        let started = std::time::Instant::now();
        let output = limited(&["inspect", image.to_str().unwrap()])
            .env("PATH", path_with_first(&fakes))
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
