//! Looking inside a built image without mounting it: which filesystem it is, its
//! extension-release, and `/usr/bin/alloy`'s owner, mode, size and first bytes. Used by
//! `verify`; works as any user, on any machine: no external tool is run (no debugfs,
//! unsquashfs or fsck.erofs).
//!
//! The image is untrusted: anyone who can write to the bucket may have crafted it. So
//! inspection reads the filesystem's own structures from the superblock on, resolving the two
//! paths it needs the way the kernel does, one directory at a time: every step must be a real
//! directory in the image, the end a regular file; no link is followed; at most
//! [`RELEASE_LIMIT`] bytes of extension-release and [`HEAD_BYTES`] of the binary are read, and
//! at most [`DIRECTORY_LIMIT`] bytes of any directory on the way. Anything else standing on the
//! way (a link, a FIFO, a device, a directory where a file belongs, a file over budget) is
//! refused, named, as an error; so is anything the kernel might read differently from us: a
//! directory holding a name no directory may hold (empty, with `/`, NUL or a newline, a second
//! `.` or `..`), the name sought twice, names out of the order the kernel's lookup relies on,
//! an index that leads elsewhere than the listing, an entry whose type is not its inode's.
//! Every number read from the image is checked before it is used: no input panics.
//!
//! ext4 is read by a reader of our own on the way to each file, with ext4-view agreeing and
//! reading the files; squashfs and erofs by readers of our own (see each module for what it
//! checks).

mod erofs;
mod ext4;
mod squashfs;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::{bail, ensure, Context};

use super::ImageFormat;
use crate::payload::{ALLOY_PATH, EXTENSION_RELEASE_PATH};

/// How many bytes of the binary [`inspect`] reads: enough for the ELF header.
pub const HEAD_BYTES: usize = 64;

/// The most extension-release may hold: ours is a few hundred bytes.
pub const RELEASE_LIMIT: u64 = 16 << 10;

/// How long inspecting one image may take: ours take milliseconds. Every structure read is
/// bounded, but a crafted ext4 extent tree may name the same node many times over.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The largest directory on the way that is read: ours hold a few entries.
pub const DIRECTORY_LIMIT: usize = 4 << 20;

/// Fails when the directory `dir` is larger than [`DIRECTORY_LIMIT`].
fn directory_within_limit(dir: &Node) -> anyhow::Result<()> {
    ensure!(
        dir.size <= DIRECTORY_LIMIT as u64,
        "the directory /{} is {} bytes, over the {DIRECTORY_LIMIT}-byte limit for a directory \
         on the way (a crafted image?)",
        dir.path,
        dir.size
    );
    Ok(())
}

/// `crc32c` as the kernel's metadata checksums compute it (`ext4_chksum`, erofs's superblock):
/// from a seed, without the final inversion.
const CRC32C_RAW: crc::Algorithm<u32> = crc::Algorithm {
    xorout: 0,
    ..crc::CRC_32_ISCSI
};
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&CRC32C_RAW);

fn crc32c(seed: u32, parts: &[&[u8]]) -> u32 {
    // The crate takes its initial value unreflected; the kernel's seed is the raw register.
    let mut digest = CRC32C.digest_with_initial(seed.reverse_bits());
    for part in parts {
        digest.update(part);
    }
    digest.finalize()
}

/// `len` bytes at `offset` of an image `file`, which must lie within the `end` bytes its format
/// says it uses (`end_is` says how, for errors: "in the image", "used").
fn read_within(
    file: &File,
    offset: u64,
    len: usize,
    end: u64,
    end_is: &str,
) -> anyhow::Result<Vec<u8>> {
    ensure!(
        offset
            .checked_add(len as u64)
            .is_some_and(|last| last <= end),
        "the image points past its end ({len} bytes at offset {offset}, {end} bytes {end_is})"
    );
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, offset)
        .with_context(|| format!("reading {len} bytes at offset {offset}"))?;
    Ok(bytes)
}

/// Whether a name is one no directory may hold, or one that reads differently in different
/// places: empty, with `/`, NUL or a newline, or a second `.` or `..` (counted in `dots` across
/// the directory).
fn bad_name(name: &[u8], dots: &mut [u32; 2]) -> bool {
    match name {
        b"." => dots[0] = dots[0].saturating_add(1),
        b".." => dots[1] = dots[1].saturating_add(1),
        _ => {}
    }
    name.is_empty()
        || name.iter().any(|b| matches!(b, b'/' | 0 | b'\n'))
        || dots.iter().any(|d| *d > 1)
}

/// What an image holds, as far as verifying it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageContents {
    pub format: ImageFormat,
    /// `usr/lib/extension-release.d/extension-release.alloy`, if the image has it.
    pub extension_release: Option<String>,
    /// `usr/bin/alloy`, if the image has it.
    pub alloy: Option<AlloyInode>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlloyInode {
    /// The whole `st_mode`: file type and permissions (0o100755 for a regular 0755 file).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// The first [`HEAD_BYTES`] bytes (fewer if the file is shorter).
    pub head: Vec<u8>,
}

impl ImageContents {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "format": self.format.name(),
            "extension_release": self.extension_release,
            "alloy": self.alloy.as_ref().map(|a| serde_json::json!({
                "mode": format!("{:o}", a.mode),
                "uid": a.uid,
                "gid": a.gid,
                "size": a.size,
                "head_hex": a.head.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })),
        })
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut text = format!("format: {}\n", self.format);
        match &self.extension_release {
            Some(release) => {
                text.push_str("extension-release.alloy:\n");
                for line in release.lines() {
                    text.push_str(&format!("    {line}\n"));
                }
            }
            None => text.push_str("extension-release.alloy: missing\n"),
        }
        match &self.alloy {
            Some(a) => text.push_str(&format!(
                "/usr/bin/alloy: mode {:o}, owner {}:{}, {} bytes, starts {}\n",
                a.mode,
                a.uid,
                a.gid,
                a.size,
                a.head
                    .iter()
                    .take(16)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )),
            None => text.push_str("/usr/bin/alloy: missing\n"),
        }
        text
    }
}

/// The filesystem whose superblock magic the first 1084 bytes of an image carry: squashfs
/// `hsqs` at 0, erofs 0xE0F5E1E2 (little-endian) at 1024, ext4 0xEF53 at 1080.
pub fn detect_format(head: &[u8]) -> Option<ImageFormat> {
    if head.starts_with(b"hsqs") {
        return Some(ImageFormat::Squashfs);
    }
    if head.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()[..]) {
        return Some(ImageFormat::Erofs);
    }
    if head.get(1080..1082) == Some(&0xEF53u16.to_le_bytes()[..]) {
        return Some(ImageFormat::Ext4);
    }
    None
}

/// Inspects the image at `path`. Fails, naming each, when something other than a directory
/// stands on the way to extension-release or the binary, or other than a regular file (within
/// budget) at their place: see [`Refused`]. Gives up after [`DEADLINE`].
pub fn inspect(path: &Path) -> anyhow::Result<ImageContents> {
    let owned = path.to_path_buf();
    let what = format!("inspecting {}", path.display());
    within(DEADLINE, &what, move || inspect_now(&owned))
}

/// Runs `work` on a thread of its own and waits at most `deadline` for it: then gives up
/// (the thread goes on until the process ends; it holds only a file and bounded buffers).
/// A panic in `work` is an error here, not a crash.
fn within<T: Send + 'static>(
    deadline: Duration,
    what: &str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("inspect".into())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .with_context(|| format!("starting a thread for {what}"))?;
    match receiver.recv_timeout(deadline) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => bail!(
            "{what} took over {} s; gave up (a crafted image?)",
            deadline.as_secs_f32()
        ),
        Err(RecvTimeoutError::Disconnected) => {
            bail!("{what} stopped without an answer (a bug: please report it)")
        }
    }
}

fn inspect_now(path: &Path) -> anyhow::Result<ImageContents> {
    let mut head = Vec::new();
    // Checked before opening: opening a FIFO would wait for a writer.
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file: an image is a file",
            path.display()
        );
    }
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    (&file)
        .take(4096)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    let Some(format) = detect_format(&head) else {
        bail!(
            "{} is not an ext4, squashfs or erofs image (no superblock magic found); is it a sysext image?",
            path.display()
        );
    };
    let contents = match format {
        ImageFormat::Ext4 => ext4::Ext4::open(file).and_then(|mut t| read_contents(&mut t)),
        ImageFormat::Squashfs => {
            squashfs::Squashfs::open(file).and_then(|mut t| read_contents(&mut t))
        }
        ImageFormat::Erofs => erofs::Erofs::open(file).and_then(|mut t| read_contents(&mut t)),
    };
    let (extension_release, alloy) =
        contents.with_context(|| format!("inspecting the {format} image {}", path.display()))?;
    Ok(ImageContents {
        format,
        extension_release,
        alloy,
    })
}

/// What kind of inode something is, from its `st_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    /// A file type no filesystem defines.
    Unknown,
}

impl Kind {
    pub fn of_mode(mode: u32) -> Kind {
        match mode & 0o170000 {
            0o100000 => Kind::Regular,
            0o040000 => Kind::Directory,
            0o120000 => Kind::Symlink,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            0o020000 => Kind::CharDevice,
            0o060000 => Kind::BlockDevice,
            _ => Kind::Unknown,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Regular => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Unknown => "of an unknown file type",
        }
    }
}

/// One inode found in an image, and how its reader finds it again (inode number, nid, path).
#[derive(Clone, Debug)]
pub struct Node {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// ext4's inode number or erofs's nid; unused for squashfs, which goes by path.
    pub id: u64,
    /// The path inside the image, without a leading `/` (`""` is the root).
    pub path: String,
    /// A link's target as the listing gave it, when the reader learns it that way.
    pub link: Option<String>,
}

impl Node {
    pub fn kind(&self) -> Kind {
        Kind::of_mode(self.mode)
    }
}

/// What a directory holds under one name.
#[derive(Debug)]
pub enum Lookup {
    Missing,
    Found(Node),
    /// The directory holds an entry whose name no filesystem may hold (with `/`, NUL, or an
    /// extra `.`/`..`): the image was crafted, and its directory is refused as a whole.
    BadName(Vec<u8>),
    /// The directory may read differently to the kernel than to us: why (`holds "alloy" 2
    /// times`).
    Ambiguous(String),
}

/// What a format's reader answers: the walk and the budgets are the same for every format.
pub trait Tree {
    fn root(&mut self) -> anyhow::Result<Node>;
    /// The entry `name` of the directory `dir`.
    fn lookup(&mut self, dir: &Node, name: &str) -> anyhow::Result<Lookup>;
    /// A link's target, as text (at most a page: Linux's limit).
    fn link_target(&mut self, link: &Node) -> anyhow::Result<Vec<u8>>;
    /// The first `limit` bytes of a regular file (fewer if it is shorter).
    fn read_head(&mut self, file: &Node, limit: usize) -> anyhow::Result<Vec<u8>>;
}

/// Why inspection would not read a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// Something other than what belongs there: a link (with its target), FIFO, device, ...
    Is {
        kind: Kind,
        link: Option<String>,
    },
    TooLarge {
        size: u64,
        limit: u64,
    },
    /// The directory holds an entry with a name no filesystem may hold.
    BadName {
        name: String,
    },
    /// The directory may read differently to the kernel: why.
    Ambiguous {
        why: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `/usr/lib`: the path, as a host would see it.
    pub path: String,
    /// `a directory` or `a regular file`: what belongs there.
    pub expected: &'static str,
    pub what: What,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = &self.path;
        match &self.what {
            What::Is { kind, link } => {
                write!(f, "{path} is {}", kind.describe())?;
                if let Some(target) = link {
                    write!(f, " to {target:?}")?;
                }
                let refused = if link.is_some() { "followed" } else { "read" };
                write!(f, ", not {}; not {refused}", self.expected)
            }
            What::TooLarge { size, limit } => write!(
                f,
                "{path} is {size} bytes, over the {limit}-byte limit for it; not read"
            ),
            What::BadName { name } => write!(
                f,
                "the directory {path} holds an entry named {name:?}, which no filesystem may \
                 hold (a crafted image?)"
            ),
            What::Ambiguous { why } => write!(
                f,
                "the directory {path} {why}; a host's kernel may read it differently from \
                 inspect, so it is refused (a crafted image?)"
            ),
        }
    }
}

/// The error [`inspect`] returns when the image holds something it will not read: every
/// refusal, in one message.
#[derive(Debug)]
pub struct Refused(pub Vec<Refusal>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<String> = self.0.iter().map(|r| r.to_string()).collect();
        f.write_str(&texts.join("; "))
    }
}

impl std::error::Error for Refused {}

/// Link targets are shown, never used: a page is Linux's limit, and plenty to see the intent.
const LINK_LIMIT: usize = 4096;

/// Walks `path` from the root: `Ok(None)` when a step is missing, `Err` with the refusal when
/// something other than a directory (on the way) or a regular file (at the end) stands there.
fn walk(
    tree: &mut dyn Tree,
    path: &str,
    size_limit: Option<u64>,
) -> anyhow::Result<Result<Option<Node>, Refusal>> {
    let mut node = tree.root()?;
    if node.kind() != Kind::Directory {
        return Ok(Err(refusal(tree, &node, "a directory")?));
    }
    let names: Vec<&str> = path.split('/').collect();
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let child = match tree.lookup(&node, name)? {
            Lookup::Missing => return Ok(Ok(None)),
            Lookup::BadName(bad) => {
                return Ok(Err(Refusal {
                    path: format!("/{}", node.path),
                    expected: "a directory",
                    what: What::BadName {
                        name: String::from_utf8_lossy(&bad).into_owned(),
                    },
                }))
            }
            Lookup::Ambiguous(why) => {
                return Ok(Err(Refusal {
                    path: format!("/{}", node.path),
                    expected: "a directory",
                    what: What::Ambiguous { why },
                }))
            }
            Lookup::Found(child) => child,
        };
        let (want, expected) = if last {
            (Kind::Regular, "a regular file")
        } else {
            (Kind::Directory, "a directory")
        };
        if child.kind() != want {
            return Ok(Err(refusal(tree, &child, expected)?));
        }
        // Id -1 is no id to the kernel: it shows the overflow id (65534) instead.
        ensure!(
            child.uid != u32::MAX && child.gid != u32::MAX,
            "/{} is owned by {}:{}, where -1 is shown as another id on a host",
            child.path,
            child.uid,
            child.gid
        );
        node = child;
    }
    if let Some(limit) = size_limit.filter(|limit| node.size > *limit) {
        return Ok(Err(Refusal {
            path: format!("/{}", node.path),
            expected: "a regular file",
            what: What::TooLarge {
                size: node.size,
                limit,
            },
        }));
    }
    Ok(Ok(Some(node)))
}

fn refusal(tree: &mut dyn Tree, node: &Node, expected: &'static str) -> anyhow::Result<Refusal> {
    let link = match node.kind() {
        Kind::Symlink => {
            let mut target = tree.link_target(node)?;
            target.truncate(LINK_LIMIT);
            Some(String::from_utf8_lossy(&target).into_owned())
        }
        _ => None,
    };
    Ok(Refusal {
        path: format!("/{}", node.path),
        expected,
        what: What::Is {
            kind: node.kind(),
            link,
        },
    })
}

type Contents = (Option<String>, Option<AlloyInode>);

/// Reads extension-release and the binary's head through `tree`, refusing what is not safe.
fn read_contents(tree: &mut dyn Tree) -> anyhow::Result<Contents> {
    let mut refused = Vec::new();
    let release_path = EXTENSION_RELEASE_PATH;
    let extension_release = match walk(tree, release_path, Some(RELEASE_LIMIT))? {
        Ok(None) => None,
        Err(why) => {
            refused.push(why);
            None
        }
        Ok(Some(node)) => {
            let bytes = tree.read_head(&node, RELEASE_LIMIT as usize)?;
            if bytes.len() as u64 != node.size {
                bail!(
                    "/{release_path} is {} bytes long, but reading it gave {}",
                    node.size,
                    bytes.len()
                );
            }
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("/{release_path} is not UTF-8 text; not read"))?;
            Some(text)
        }
    };
    let alloy = match walk(tree, ALLOY_PATH, None)? {
        Ok(None) => None,
        Err(why) => {
            refused.push(why);
            None
        }
        Ok(Some(node)) => {
            let head = tree.read_head(&node, HEAD_BYTES)?;
            let want = HEAD_BYTES.min(usize::try_from(node.size).unwrap_or(usize::MAX));
            if head.len() != want {
                bail!(
                    "/{ALLOY_PATH} is {} bytes long, but reading its start gave {} of {want} bytes",
                    node.size,
                    head.len()
                );
            }
            Some(AlloyInode {
                mode: node.mode,
                uid: node.uid,
                gid: node.gid,
                size: node.size,
                head,
            })
        }
    };
    if !refused.is_empty() {
        return Err(Refused(refused).into());
    }
    Ok((extension_release, alloy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_the_kernels() {
        // The kernel's crc32c(~0, data), uninverted, is the usual CRC-32C inverted.
        let usual = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(b"123456789");
        assert_eq!(usual, 0xE306_9283);
        assert_eq!(crc32c(!0, &[b"123456789"]), !usual);
        assert_eq!(
            crc32c(crc32c(!0, &[b"1234"]), &[b"56789"]),
            crc32c(!0, &[b"12", b"3456789"])
        );
    }

    #[test]
    fn formats_are_told_by_their_magic() {
        let mut ext4 = vec![0u8; 2048];
        ext4[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        assert_eq!(detect_format(&ext4), Some(ImageFormat::Ext4));
        let mut erofs = vec![0u8; 2048];
        erofs[1024..1028].copy_from_slice(&[0xE2, 0xE1, 0xF5, 0xE0]);
        assert_eq!(detect_format(&erofs), Some(ImageFormat::Erofs));
        let mut squashfs = b"hsqs".to_vec();
        squashfs.resize(2048, 0);
        assert_eq!(detect_format(&squashfs), Some(ImageFormat::Squashfs));
        assert_eq!(detect_format(&[0u8; 2048]), None);
        assert_eq!(detect_format(b"PK\x03\x04"), None);
        assert_eq!(
            detect_format(&ext4[..1081]),
            None,
            "short reads are not ext4"
        );
    }

    #[test]
    fn inspection_gives_up_at_its_deadline_and_survives_a_panic() {
        let started = std::time::Instant::now();
        let slow = within(Duration::from_millis(100), "sleeping", || {
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        });
        let error = slow.unwrap_err().to_string();
        assert!(
            error.contains("sleeping took over 0.1 s; gave up"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let broken = within(
            Duration::from_secs(5),
            "breaking",
            || -> anyhow::Result<()> { panic!("on purpose") },
        );
        let error = broken.unwrap_err().to_string();
        assert!(
            error.contains("breaking stopped without an answer"),
            "{error}"
        );
        assert_eq!(
            within(Duration::from_secs(5), "adding", || Ok(1 + 1)).unwrap(),
            2
        );
    }

    #[test]
    fn modes_tell_kinds() {
        assert_eq!(Kind::of_mode(0o100755), Kind::Regular);
        assert_eq!(Kind::of_mode(0o040755), Kind::Directory);
        assert_eq!(Kind::of_mode(0o120777), Kind::Symlink);
        assert_eq!(Kind::of_mode(0o010644), Kind::Fifo);
        assert_eq!(Kind::of_mode(0o020644), Kind::CharDevice);
        assert_eq!(Kind::of_mode(0o060644), Kind::BlockDevice);
        assert_eq!(Kind::of_mode(0o140755), Kind::Socket);
        assert_eq!(Kind::of_mode(0o170755), Kind::Unknown);
    }

    #[test]
    fn refusals_say_what_stands_there() {
        let link = Refusal {
            path: "/usr/lib".into(),
            expected: "a directory",
            what: What::Is {
                kind: Kind::Symlink,
                link: Some("/etc\n".into()),
            },
        };
        assert_eq!(
            link.to_string(),
            "/usr/lib is a symbolic link to \"/etc\\n\", not a directory; not followed"
        );
        let big = Refusal {
            path: "/x".into(),
            expected: "a regular file",
            what: What::TooLarge {
                size: 3 << 30,
                limit: RELEASE_LIMIT,
            },
        };
        assert_eq!(
            big.to_string(),
            "/x is 3221225472 bytes, over the 16384-byte limit for it; not read"
        );
        let both = Refused(vec![link, big]).to_string();
        assert!(both.contains("not followed; /x is"), "{both}");
    }

    /// A tree made of fixed nodes, to test the walk without an image.
    struct Fixed(Vec<Node>);

    fn node(path: &str, mode: u32, size: u64) -> Node {
        Node {
            mode,
            uid: 0,
            gid: 0,
            size,
            id: 0,
            path: path.into(),
            link: (mode & 0o170000 == 0o120000).then(|| "/etc/shadow".to_string()),
        }
    }

    impl Tree for Fixed {
        fn root(&mut self) -> anyhow::Result<Node> {
            Ok(node("", 0o040755, 0))
        }
        fn lookup(&mut self, dir: &Node, name: &str) -> anyhow::Result<Lookup> {
            if name == "bad" {
                return Ok(Lookup::BadName(b"../x".to_vec()));
            }
            let path = if dir.path.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", dir.path)
            };
            Ok(match self.0.iter().find(|n| n.path == path) {
                Some(n) => Lookup::Found(n.clone()),
                None => Lookup::Missing,
            })
        }
        fn link_target(&mut self, link: &Node) -> anyhow::Result<Vec<u8>> {
            Ok(link.link.clone().unwrap().into_bytes())
        }
        fn read_head(&mut self, file: &Node, limit: usize) -> anyhow::Result<Vec<u8>> {
            Ok(vec![b'x'; limit.min(file.size as usize)])
        }
    }

    #[test]
    fn the_walk_refuses_anything_but_directories_then_a_file() {
        let mut tree = Fixed(vec![
            node("usr", 0o040755, 0),
            node("usr/lib", 0o120777, 4),
            node("usr/bin", 0o040755, 0),
            node("usr/bin/alloy", 0o010644, 0),
            node("usr/bin/big", 0o100644, 1 << 40),
            node("usr/bin/ok", 0o100755, 10),
        ]);
        let refused = |tree: &mut Fixed, path| walk(tree, path, Some(100)).unwrap().unwrap_err();
        assert_eq!(
            refused(&mut tree, "usr/lib/extension-release.d/x").to_string(),
            "/usr/lib is a symbolic link to \"/etc/shadow\", not a directory; not followed"
        );
        assert_eq!(
            refused(&mut tree, "usr/bin/alloy").to_string(),
            "/usr/bin/alloy is a FIFO, not a regular file; not read"
        );
        assert_eq!(
            refused(&mut tree, "usr/bin").to_string(),
            "/usr/bin is a directory, not a regular file; not read"
        );
        assert!(refused(&mut tree, "usr/bin/big")
            .to_string()
            .contains("over the 100-byte limit"));
        assert!(refused(&mut tree, "usr/bad/x")
            .to_string()
            .contains("/usr holds an entry named \"../x\""));
        assert!(walk(&mut tree, "usr/share/x", None)
            .unwrap()
            .unwrap()
            .is_none());
        let ok = walk(&mut tree, "usr/bin/ok", Some(100)).unwrap().unwrap();
        assert_eq!(ok.unwrap().size, 10);
    }
}
