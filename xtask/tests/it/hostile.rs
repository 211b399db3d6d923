//! Crafted images against `xtask inspect` and `xtask verify`: links to host files and to
//! `/dev/zero`, FIFOs, devices, a linked `usr/lib`, directories where files belong, sparse
//! multi-GiB files, wide and deep trees, names with `/`, `..` or NUL patched in after mkfs,
//! and the two forgeries that once made `verify` say `ok` (an ext4 directory slot whose name
//! forges a debugfs listing line; an erofs or squashfs directory whose names are out of order).
//! Each runs under a memory limit, a deadline and a private TMPDIR, and must fail cleanly
//! naming the problem (or, where nothing is wrong on the way, succeed with the right answer),
//! print nothing from the host, never panic, stay within [`PEAK_LIMIT_KIB`] of memory, write
//! nothing outside and leave TMPDIR empty. Every crafted image is also loop-mounted and what
//! inspect reports compared with what the kernel shows ([`crate::kernel_view`]).

mod ext4_damage;

use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use xtask_testkit::fixture::{fake_alloy, sha256_hex, Release};
use xtask_testkit::http::{Answer, Server};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::process::{path_with_first, require_root, write_script};

use crate::kernel_view::{compare, Kernel, Tally};
use ext4_damage::Damage;
use xtask_testkit::{checked_output, tool, Run, XorShift};

use crate::support::{
    packer, root_test_per_format, workspace, EXTENSION_RELEASE, FORMATS, IMAGE, RELEASE_FILE,
    VERSION, XTASK,
};

const RELEASE_DIR: &str = "usr/lib/extension-release.d";
/// What xtask runs under: far below what an unbounded read of a 3 GiB file would take.
const MEMORY_LIMIT: &str = "--as=536870912";
const DEADLINE_SECONDS: &str = "60";
/// The most memory (peak resident set) xtask may take on any image: the issue's budget.
const PEAK_LIMIT_KIB: u64 = 64 << 10;

/// The largest peak resident set seen of any xtask run in this process, and what it ran on.
static WORST_PEAK: Mutex<(u64, String)> = Mutex::new((0, String::new()));
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
/// notes what must hold whatever the image: no hang, no crash or panic, nothing from the host,
/// at most [`PEAK_LIMIT_KIB`] of memory, nothing left in TMPDIR.
fn bounded(args: &[&str], host: &Host) -> Bounded {
    let tmp = tempfile::tempdir().unwrap();
    let (output, peak_kib) = measured(limited(args).env("TMPDIR", tmp.path()));
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
    if all.contains("panicked") {
        broken.push(format!("xtask {args:?} panicked:\n{all}"));
    }
    if peak_kib > PEAK_LIMIT_KIB {
        broken.push(format!(
            "xtask {args:?} took {peak_kib} KiB of memory, over {PEAK_LIMIT_KIB} KiB"
        ));
    }
    let mut worst = WORST_PEAK.lock().unwrap_or_else(|e| e.into_inner());
    if peak_kib > worst.0 {
        *worst = (peak_kib, format!("{args:?}"));
    }
    drop(worst);
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

/// Runs `command` (from [`limited`]) to its end: its output, and xtask's peak resident set
/// in KiB, as GNU time measured it. (Not `wait4` from here: a child's peak counts the copy of
/// this process it was before it ran a program, and this process holds whole images.)
fn measured(command: &mut Command) -> (std::process::Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let output = command.env(PEAK_REPORT, report.path()).output().unwrap();
    // `time -o` writes the peak last, after any line on how the command ended; nothing when
    // the deadline killed time itself (a hang, which the exit status reports).
    let text = std::fs::read_to_string(report.path()).unwrap();
    let peak = text
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok());
    (output, peak.unwrap_or(0))
}

/// Says the largest peak memory any xtask run of this process took so far, and on what.
fn report_worst_peak() {
    let worst = WORST_PEAK.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "peak memory of xtask, worst run so far: {:.1} MiB ({})",
        worst.0 as f64 / 1024.0,
        worst.1
    );
}

/// The variable [`limited`] takes the file for GNU time's report from.
const PEAK_REPORT: &str = "ALLOY_SYSEXT_TEST_PEAK_REPORT";

/// xtask with `args`, killed at the deadline, under the memory limit, its peak memory reported
/// by GNU time into the file `$ALLOY_SYSEXT_TEST_PEAK_REPORT` (`/dev/null` unless set).
fn limited(args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            r#"deadline=$1 limit=$2; shift 2
            report=${ALLOY_SYSEXT_TEST_PEAK_REPORT:-/dev/null}
            exec timeout -s KILL "$deadline" /usr/bin/time -f %M -o "$report" prlimit "$limit" -- "$@""#,
            "sh",
            DEADLINE_SECONDS,
            MEMORY_LIMIT,
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
        // No journal, as ours: inspect refuses one.
        "ext4" => (
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-N",
                "40000",
                "-O",
                "^has_journal",
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
            drop_erofs_checksum(format, image);
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
    /// Success, with the true extension-release and no `/usr/bin/alloy`, as the kernel shows.
    NoBinary,
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
    /// Forgery 1 (ext4): no usr/bin/alloy, but an unused slot (inode 0) in usr/bin whose name
    /// is a debugfs `ls -p` line for an ELF hidden elsewhere in the image; what debugfs listed,
    /// and inspect believed.
    ForgedListing,
    /// Forgery 2 (erofs, squashfs): usr/bin holds `m1`, `m2` and then `alloy`, out of order:
    /// a front-to-back scan finds it, the kernel's lookup does not.
    Unsorted,
    /// An ext4 structure on the way damaged where the kernel checks it (see [`Damage`]).
    Ext4(Damage),
    /// (squashfs) usr/bin's entry for `alloy` says this type, which no inode has (found by the
    /// differential test, as an overflow).
    SquashfsEntryType(u16),
    /// (squashfs) usr/bin's entry for `alloy` gives the next inode number, not its inode's:
    /// the kernel's inode cache finds inodes by number.
    SquashfsEntryNumber,
}

/// The hidden ELF the forged listing line points at, and the placeholder of the slot's name.
const HIDDEN: &str = "usr/share/hidden/alloy";
const FORGED_PLACEHOLDER: u8 = b'F';
/// The unsorted entry's name as packed, patched to `alloy` after.
const UNSORTED_PLACEHOLDER: &[u8] = b"zlloy";

/// The slot's name that forges a listing line: `/inode/mode/uid/gid/name/size/` between
/// newlines, the inode zero-padded so its length is known before packing.
fn forged_name(inode: u64) -> Vec<u8> {
    let size = fake_alloy(VERSION, "amd64").len();
    format!("\n/{inode:06}/100755/0/0/alloy/{size}/\n/0////").into_bytes()
}

/// A crafted image: what it is called, how it is made, what inspect must make of it, and
/// whether verify is tried on it too, and must fail saying what (the cases that once leaked a
/// host file or passed).
struct Case {
    name: &'static str,
    craft: Craft,
    expect: Expect,
    verify_says: Option<&'static str>,
}

const fn case(name: &'static str, craft: Craft, expect: Expect) -> Case {
    Case {
        name,
        craft,
        expect,
        verify_says: None,
    }
}

const LINK_REFUSED: Option<&str> = Some("is a symbolic link to");

const CASES: &[Case] = &[
    case(
        "extension-release links to /etc/shadow",
        Craft::Link(RELEASE_FILE, Target::Host("/etc/shadow")),
        Expect::Fails(&[
            "extension-release.alloy is a symbolic link to \"/etc/shadow\", not a regular file",
        ]),
    ),
    Case {
        verify_says: LINK_REFUSED,
        ..case(
            "extension-release links to the host's /etc/os-release",
            Craft::Link(RELEASE_FILE, Target::Host("/etc/os-release")),
            Expect::Fails(&["is a symbolic link to \"/etc/os-release\""]),
        )
    },
    Case {
        verify_says: LINK_REFUSED,
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
        verify_says: LINK_REFUSED,
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
    // Read whole (its order and names checked), so over the budget for a directory.
    case(
        "usr/bin holding 20000 long names",
        Craft::Wide,
        Expect::Fails(&["/usr/bin is", "over the 4194304-byte limit"]),
    ),
    Case {
        verify_says: Some("no /usr/bin/alloy"),
        ..case(
            "forgery 1: an unused ext4 slot named like a listing line",
            Craft::ForgedListing,
            Expect::ByFormat(&[("ext4", Expect::NoBinary)]),
        )
    },
    Case {
        verify_says: Some("its names are not in order"),
        ..case(
            "forgery 2: usr/bin's names out of order",
            Craft::Unsorted,
            Expect::ByFormat(&[
                (
                    "erofs",
                    Expect::Fails(&[
                        "/usr/bin lists \"alloy\" after \"m2\": its names are not in order",
                    ]),
                ),
                (
                    "squashfs",
                    Expect::Fails(&[
                        "/usr/bin lists \"alloy\" after \"m2\": its names are not in order",
                    ]),
                ),
            ]),
        )
    },
    case(
        "squashfs: usr/bin's entry for alloy has type 0",
        Craft::SquashfsEntryType(0),
        Expect::ByFormat(&[(
            "squashfs",
            Expect::Fails(&["lists \"alloy\" as type 0 but its inode is type 2"]),
        )]),
    ),
    case(
        "squashfs: usr/bin's entry for alloy gives another inode's number",
        Craft::SquashfsEntryNumber,
        Expect::ByFormat(&[(
            "squashfs",
            Expect::Fails(&["a squashfs directory entry gives inode number"]),
        )]),
    ),
    case(
        "squashfs: usr/bin's entry for alloy has type 15",
        Craft::SquashfsEntryType(15),
        Expect::ByFormat(&[(
            "squashfs",
            Expect::Fails(&["lists \"alloy\" as type 15 but its inode is type 2"]),
        )]),
    ), // Read whole: its index checked as the kernel checks it, and followed by ext4-view.
    case(
        "ext4: usr/bin hash-indexed, intact",
        Craft::Ext4(Damage::HashIndexed),
        Expect::ByFormat(&[("ext4", Expect::Reads(Size::Binary))]),
    ),
    case(
        "ext4: usr/bin's checksum tail has rec_len 44, not 12",
        Craft::Ext4(Damage::TailRecLen),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["its checksum tail has inode 0, rec_len 44", "EBADMSG"]),
        )]),
    ),
    case(
        "ext4: usr/bin's checksum tail has a reserved field set",
        Craft::Ext4(Damage::TailReserved),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["its checksum tail has inode 7, rec_len 12"]),
        )]),
    ),
    case(
        "ext4: usr/bin's checksum tail has file type 0xdf, not 0xde",
        Craft::Ext4(Damage::TailFileType),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["and file type 0xdf, not 0, 12, 0 and 0xde"]),
        )]),
    ),
    case(
        "ext4: alloy's entry has a rec_len that is not a multiple of 4",
        Craft::Ext4(Damage::RecLenUnaligned),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["its rec_len is not a multiple of 4"]),
        )]),
    ),
    case(
        "ext4: alloy's entry ends inside the checksum tail",
        Craft::Ext4(Damage::EndsInTail),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["its rec_len ends too close to the block's end"]),
        )]),
    ),
    case(
        "ext4: alloy's entry names an inode past the last",
        Craft::Ext4(Damage::InodePastLast),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["naming an inode past the last"]))]),
    ),
    case(
        "ext4: ..'s entry has a name longer than its rec_len holds",
        Craft::Ext4(Damage::NameTooLong),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["its rec_len leaves no room for its name"]),
        )]),
    ),
    case(
        "ext4: .'s entry has rec_len 8",
        Craft::Ext4(Damage::RecLenTooSmall),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["its rec_len is smaller than the smallest entry"]),
        )]),
    ),
    case(
        "ext4: alloy's entry names the reserved resize inode",
        Craft::Ext4(Damage::ReservedInode),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["names inode 7, which is none a directory may name"]),
        )]),
    ),
    case(
        "ext4: /usr's entry bin names /usr itself",
        Craft::Ext4(Damage::NamesItsDirectory),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["names itself as inode"]))]),
    ),
    case(
        "ext4: alloy's inode has no links",
        Craft::Ext4(Damage::NoLinks),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["has no links: it is deleted"]))]),
    ),
    case(
        "ext4: alloy's inode has i_extra_isize 30",
        Craft::Ext4(Damage::ExtraIsize),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["has i_extra_isize 30"]))]),
    ),
    case(
        "ext4: usr/bin's inode checksum is wrong",
        Craft::Ext4(Damage::InodeChecksum),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["has checksum 0x", "EBADMSG"]))]),
    ),
    case(
        "ext4: usr/bin's extent root says 5 entries fit in 4",
        Craft::Ext4(Damage::ExtentRootMax),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["a node says 1 of 5 entries where 4 fit"]),
        )]),
    ),
    case(
        "ext4: alloy's extent starts in the inode table",
        Craft::Ext4(Damage::ExtentInInodeTable),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["which no file may hold"]))]),
    ),
    case(
        "ext4: usr/bin's hash root names hash 7",
        Craft::Ext4(Damage::HashUnknown),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["the root names hash 7"]))]),
    ),
    case(
        "ext4: usr/bin's hash root says a level of nodes it does not have",
        Craft::Ext4(Damage::HashLevels),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["is named as a node but does not begin as one"]),
        )]),
    ),
    case(
        "ext4: usr/bin's hash root names a block past the directory's end",
        Craft::Ext4(Damage::HashPastEnd),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["it names block 99 of a directory of"]),
        )]),
    ),
    case(
        "ext4: usr/bin is hash-indexed on a filesystem without dir_index",
        Craft::Ext4(Damage::HashWithoutDirIndex),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["hash-indexed directory on a filesystem without dir_index"]),
        )]),
    ),
    case(
        "ext4: directories held inline in their inodes",
        Craft::Ext4(Damage::InlineData),
        Expect::ByFormat(&[(
            "ext4",
            Expect::Fails(&["inline_data or bigalloc", "inspect does not read"]),
        )]),
    ),
    case(
        "ext4: usr/bin's inode says its data is inline",
        Craft::Ext4(Damage::InlineFlag),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["is its data inline"]))]),
    ),
    case(
        "ext4: alloy's owner is -1",
        Craft::Ext4(Damage::OwnerMinusOne),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["is owned by 4294967295:0"]))]),
    ),
    case(
        "ext4: usr/bin's inode holds an extended attribute",
        Craft::Ext4(Damage::InodeXattr),
        Expect::ByFormat(&[("ext4", Expect::Fails(&["holds extended attributes"]))]),
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
            Craft::ForgedListing => {
                let hidden = root.join(HIDDEN);
                std::fs::create_dir_all(hidden.parent().unwrap()).unwrap();
                std::fs::rename(root.join("usr/bin/alloy"), &hidden).unwrap();
                let placeholder = vec![FORGED_PLACEHOLDER; forged_name(0).len()];
                let placeholder = String::from_utf8(placeholder).unwrap();
                std::fs::write(root.join("usr/bin").join(placeholder), "x").unwrap();
            }
            Craft::Unsorted => {
                let bin = root.join("usr/bin");
                let packed = std::str::from_utf8(UNSORTED_PLACEHOLDER).unwrap();
                std::fs::rename(bin.join("alloy"), bin.join(packed)).unwrap();
                std::fs::write(bin.join("m1"), "1").unwrap();
                std::fs::write(bin.join("m2"), "2").unwrap();
            }
            Craft::Ext4(damage) => damage.before_packing(root),
            Craft::Huge(_)
            | Craft::Wide
            | Craft::SquashfsEntryType(_)
            | Craft::SquashfsEntryNumber => {}
        }
    }

    /// Whether the image is patched byte by byte after packing: then packed without metadata
    /// checksums and compression, as an attacker would (see [`pack_plain`]).
    fn patched(self) -> bool {
        matches!(
            self,
            Craft::ForgedListing
                | Craft::Unsorted
                | Craft::SquashfsEntryType(_)
                | Craft::SquashfsEntryNumber
        )
    }

    /// Changes the packed `image` where its tool could not make the change from the tree.
    fn after_packing(self, format: &str, image: &Path, work: &Path) {
        match self {
            Craft::Huge(path) if format != "squashfs" => set_size(format, image, path, THREE_GIB),
            Craft::Wide if format == "ext4" => fill_wide_ext4(image, &work.join("mnt")),
            Craft::ForgedListing => forge_listing(image),
            Craft::Unsorted => {
                patch_name(image, (b"", UNSORTED_PLACEHOLDER, b""), b"alloy");
                drop_erofs_checksum(format, image);
            }
            Craft::Ext4(damage) => damage.after_packing(image),
            // An entry: inode offset, inode number difference, type, name length - 1, name.
            Craft::SquashfsEntryType(kind) => edit_alloy_entry(image, |entry| {
                entry[4..6].copy_from_slice(&kind.to_le_bytes())
            }),
            Craft::SquashfsEntryNumber => edit_alloy_entry(image, |entry| {
                let delta = i16::from_le_bytes([entry[2], entry[3]]) + 1;
                entry[2..4].copy_from_slice(&delta.to_le_bytes());
            }),
            _ => {}
        }
    }
}

/// Turns the placeholder slot in usr/bin into an unused one (inode 0) named like a listing line
/// for the hidden ELF: the name after its length and type (1, a regular file), the inode
/// number in the 4 bytes 8 before the name.
fn forge_listing(image: &Path) {
    let listing = checked_output(
        Command::new(tool("debugfs"))
            .args(["-R", "ls -p /usr/share/hidden"])
            .arg(image),
    );
    let inode: u64 = listing
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split('/').collect();
            (fields.get(5) == Some(&"alloy")).then(|| fields[1].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no hidden alloy in {listing}"));
    let name = forged_name(inode);
    let placeholder = vec![FORGED_PLACEHOLDER; name.len()];
    patch_name(image, (&[name.len() as u8, 1], &placeholder, b""), &name);
    let mut bytes = std::fs::read(image).unwrap();
    let at = bytes
        .windows(name.len())
        .position(|w| w == name.as_slice())
        .unwrap();
    bytes[at - 8..at - 4].fill(0);
    std::fs::write(image, bytes).unwrap();
}

/// Drops an erofs image's superblock checksum (feature_compat bit 0, covering the block the
/// names may sit in), as an attacker would: erofs-utils and the kernel then read the patch.
fn drop_erofs_checksum(format: &str, image: &Path) {
    if format == "erofs" {
        let mut bytes = std::fs::read(image).unwrap();
        bytes[1024 + 8] &= !1;
        std::fs::write(image, bytes).unwrap();
    }
}

/// Packs `tree` for bytes to be patched after: ext4 without journal or metadata checksums,
/// squashfs with its directory and inode tables uncompressed (`-noI`), erofs as usual (its
/// checksum is dropped after patching).
fn pack_plain(format: &str, tree: &Path, image: &Path) {
    let _ = std::fs::remove_file(image);
    let mut command = match format {
        "ext4" => {
            let args = ["-q", "-F", "-O", "^metadata_csum,^has_journal"];
            packer("mkfs.ext4", &args, tree, image, "16M")
        }
        "squashfs" => {
            let args = ["-quiet", "-no-progress", "-all-root", "-noappend", "-noI"];
            packer("mksquashfs", &args, tree, image, "")
        }
        _ => return pack(format, tree, image),
    };
    checked_output(&mut command);
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
fn crafted_images(
    format: &str,
    host: &Host,
    work: &Path,
) -> Vec<(String, PathBuf, Expect, Option<&'static str>)> {
    let mut images = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let Some(expect) = case.expect.for_format(format) else {
            continue;
        };
        let root = work.join(format!("tree-{i}"));
        good_tree(&root);
        case.craft.before_packing(format, &root, host);
        let image = work.join(format!("{format}-{i}.raw"));
        match case.craft {
            Craft::Ext4(damage) => damage.pack(&root, &image),
            craft if craft.patched() => pack_plain(format, &root, &image),
            _ => pack(format, &root, &image),
        }
        std::fs::remove_dir_all(&root).unwrap();
        case.craft.after_packing(format, &image, work);
        let name = format!("{format}: {}", case.name);
        images.push((name, image, expect, case.verify_says));
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
        Expect::NoBinary => {
            if !run.success {
                return Err(format!("{name}: inspect failed:\n{}", run.stderr));
            }
            let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            if !value["alloy"].is_null() || value["extension_release"] != EXTENSION_RELEASE {
                return Err(format!("{name}: read wrong: {value}"));
            }
            Ok(())
        }
        Expect::ByFormat(_) => unreachable!("{name}: resolved by Expect::for_format"),
    }
}

/// Every crafted image of `format` through inspect, and against what the kernel shows of it;
/// verify on the ones that leaked or passed before.
fn hostile_images_are_refused(format: &str) {
    let host = Host::new();
    let work = tempfile::tempdir().unwrap();
    let images = crafted_images(format, &host, work.path());
    let mut kernel = Kernel::start();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for (name, image, expect, verify_says) in &images {
        let mut problems = Vec::new();
        if let Err(why) = check(name, &inspect(image, &host), expect) {
            problems.push(why);
        }
        if let Some(needle) = verify_says {
            let verified = verify(image, &host);
            if !verified.broken.is_empty()
                || verified.run.success
                || !verified.run.stdout.contains(needle)
            {
                problems.push(format!(
                    "{name}: verify did not fail saying {needle:?}: {}\n{}\n{}",
                    verified.broken.join("; "),
                    verified.run.stdout,
                    verified.run.stderr
                ));
            }
        }
        tally.add(name, compare(&mut kernel, image, format));
        if !problems.is_empty() {
            failures.push(problems.join("\n"));
        }
    }
    failures.extend(tally.differences.iter().cloned());
    eprintln!(
        "{format}: crafted images against the kernel: {}",
        tally.summary()
    );
    report_worst_peak();
    let what = format!("{format}: crafted images inspected");
    assert_all_handled(&what, images.len(), &failures);
}

root_test_per_format!(hostile_images_are_refused =>
    hostile_ext4_images_are_refused: "ext4",
    hostile_squashfs_images_are_refused: "squashfs",
    hostile_erofs_images_are_refused: "erofs",
);

/// Changes the 8 bytes of a squashfs image's one directory entry for `alloy`, a regular file:
/// inode offset, inode number difference, type (2), name length - 1 (4).
fn edit_alloy_entry(image: &Path, edit: impl FnOnce(&mut [u8])) {
    let mut bytes = std::fs::read(image).unwrap();
    let entry = [&[2u8, 0, 4, 0][..], b"alloy"].concat();
    let hits: Vec<usize> = (0..bytes.len().saturating_sub(entry.len()))
        .filter(|at| bytes[*at..].starts_with(&entry))
        .collect();
    assert_eq!(hits.len(), 1, "alloy's entry in {}", image.display());
    edit(&mut bytes[hits[0] - 4..hits[0] + 4]);
    std::fs::write(image, bytes).unwrap();
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
            pack_plain(format, root, image);
            (vec![name.len() as u8, 1], Vec::new(), named)
        }
        _ => {
            // Directory tables uncompressed (-noI): a name follows its length - 1.
            pack_plain(format, root, image);
            (vec![name.len() as u8 - 1, 0], Vec::new(), named)
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
    let mut kernel = Kernel::start();
    let mut tally = Tally::default();
    for format in ["erofs", "squashfs", "ext4"] {
        for (i, (what, name)) in cases.iter().enumerate() {
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
            drop_erofs_checksum(format, &image);
            tally.add(
                &format!("{format} name with {what}"),
                compare(&mut kernel, &image, format),
            );

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
    eprintln!("names: against the kernel: {}", tally.summary());
    failures.extend(tally.differences.iter().cloned());
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
    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut broken = Vec::new();
    let mut tried = 0;
    // As root, each damaged image is also loop-mounted: inspect must agree or refuse.
    let test = "images_with_random_damage_never_crash_or_hang, against the kernel";
    let mut kernel = require_root(test).then(Kernel::start);
    let mut tally = Tally::default();
    for (format, runs) in [("erofs", 300), ("squashfs", 100), ("ext4", 100)] {
        let image = work.path().join(format!("good.{format}"));
        if format == "ext4" {
            let args = ["-q", "-F", "-O", "^has_journal"];
            checked_output(&mut packer("mkfs.ext4", &args, &root, &image, "4M"));
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
            for _ in 0..1 + random.next_u64() % 4 {
                let at = region.start + (random.next_u64() as usize) % region.len();
                bytes[at] = random.next_u64() as u8;
                changes.push(at);
            }
            std::fs::write(&damaged, &bytes).unwrap();
            tried += 1;
            if let Some(kernel) = kernel.as_mut() {
                let name = format!("{format} with bytes {changes:?} changed");
                tally.add(&name, compare(kernel, &damaged, format));
            }
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
    report_worst_peak();
    assert_all_handled("random damage: damaged images inspected", tried, &broken);
    if kernel.is_some() {
        eprintln!("random damage: against the kernel: {}", tally.summary());
        assert!(
            tally.differences.is_empty(),
            "random damage: inspect and the kernel differ:\n{}",
            tally.differences.join("\n")
        );
    }
}

/// inspect and verify run no filesystem tool: with a debugfs, unsquashfs, fsck.erofs and
/// dump.erofs first in PATH that only note they ran and fail, both still read an image of each
/// format, and none of them ran. (So a machine without them, a Mac, can verify a bucket.)
#[test]
fn inspect_and_verify_need_no_filesystem_tool() {
    let host = Host::new();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("tree");
    good_tree(&root);
    let fakes = work.path().join("bin");
    let ran = work.path().join("ran");
    for tool_name in ["debugfs", "unsquashfs", "fsck.erofs", "dump.erofs"] {
        let script = format!(
            "#!/bin/sh\necho {tool_name} >> '{}'\nexit 1\n",
            ran.display()
        );
        write_script(&fakes, tool_name, &script);
    }
    for format in FORMATS {
        let image = work.path().join(format!("good.{format}"));
        pack(format, &root, &image);
        let output = limited(&["inspect", image.to_str().unwrap()])
            .env("PATH", path_with_first(&fakes))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{format}: {stderr}");
        let verified = {
            let bytes = std::fs::read(&image).unwrap();
            let digest = sha256_hex(&bytes);
            let bucket = Server::start();
            let line = format!("{digest}  {IMAGE}\n").into_bytes();
            bucket.answer("/SHA256SUMS", Answer::ok(line.clone()));
            bucket.answer(&format!("/{IMAGE}.sha256"), Answer::ok(line));
            bucket.answer(&format!("/{IMAGE}"), Answer::ok(bytes));
            limited(&["verify", VERSION, "--base-url", &bucket.url])
                .env("PATH", path_with_first(&fakes))
                .output()
                .unwrap()
        };
        let said = String::from_utf8_lossy(&verified.stdout);
        // As another user, mkfs.ext4 -d gives the files that user: verify then fails, but on
        // the owner, having read the image.
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let expected = if as_root || format != "ext4" {
            " ok"
        } else {
            ", not root"
        };
        assert!(
            said.contains(expected),
            "{format}: {said}{}",
            String::from_utf8_lossy(&verified.stderr)
        );
        assert!(!host.forbidden().iter().any(|l| stderr.contains(l.as_str())));
    }
    let ran = std::fs::read_to_string(&ran).unwrap_or_default();
    assert!(ran.is_empty(), "filesystem tools ran: {ran}");
}
