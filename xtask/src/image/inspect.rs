//! Looking inside a built image without mounting it: which filesystem it is, its
//! extension-release, and `/usr/bin/alloy`'s owner, mode, size and first bytes. Used by
//! `verify`; works as any user, with the same tools that pack the images.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::ImageFormat;
use crate::contract::{ALLOY_PATH, EXTENSION_RELEASE_PATH};
use crate::util::tools::{self, Tool};

/// How many bytes of the binary [`inspect`] reads: enough for the ELF header.
pub const HEAD_BYTES: usize = 64;

/// The programs inspection uses, for every format: a command that inspects (verify) finds
/// them before downloading anything.
pub const TOOLS: &[Tool] = &[
    tools::DEBUGFS,
    tools::UNSQUASHFS,
    tools::DUMP_EROFS,
    tools::FSCK_EROFS,
];

/// Show what a built image holds, without mounting it: its filesystem, extension-release, and
/// /usr/bin/alloy's owner, mode, size and first bytes
#[derive(clap::Args, Debug)]
pub struct Inspect {
    /// The image (.raw) to look into
    pub image: std::path::PathBuf,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

impl Inspect {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let contents = inspect(&self.image)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&contents.to_json())?);
        } else {
            print!("{}", contents.summary());
        }
        Ok(())
    }
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

/// Inspects the image at `path`.
pub fn inspect(path: &Path) -> anyhow::Result<ImageContents> {
    let mut head = Vec::new();
    File::open(path)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    let Some(format) = detect_format(&head) else {
        bail!(
            "{} is not an ext4, squashfs or erofs image (no superblock magic found); is it a sysext image?",
            path.display()
        );
    };
    let contents = match format {
        ImageFormat::Ext4 => inspect_ext4(path, &head),
        ImageFormat::Squashfs => inspect_squashfs(path),
        ImageFormat::Erofs => inspect_erofs(path),
    };
    contents.with_context(|| format!("inspecting the {format} image {}", path.display()))
}

/// Permissions as `ls -l` shows them (`-rwxr-xr-x`, `drwxr-xr-x`) as an `st_mode`.
pub fn parse_mode_string(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 {
        return None;
    }
    let kind = match bytes[0] {
        b'-' => 0o100000,
        b'd' => 0o040000,
        b'l' => 0o120000,
        b'c' => 0o020000,
        b'b' => 0o060000,
        b'p' => 0o010000,
        b's' => 0o140000,
        _ => return None,
    };
    let mut mode = 0u32;
    for (i, &c) in bytes[1..].iter().enumerate() {
        let bit = 1 << (8 - i);
        let special = match i {
            2 => 0o4000,
            5 => 0o2000,
            8 => 0o1000,
            _ => 0,
        };
        match c {
            b'-' => {}
            b'r' | b'w' | b'x' => mode |= bit,
            b's' | b't' => mode |= bit | special,
            b'S' | b'T' => mode |= special,
            _ => return None,
        }
    }
    Some(kind | mode)
}

/// One line of `unsquashfs -lln`: (path inside the image without the leading `squashfs-root/`,
/// mode, uid, gid, size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedInode {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// Parses `unsquashfs -lln` (numeric owners):
/// `-rwxr-xr-x 0/0   100000 2024-01-01 00:00 squashfs-root/usr/bin/alloy`.
pub fn parse_unsquashfs_listing(text: &str) -> anyhow::Result<Vec<ListedInode>> {
    let mut inodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = (|| {
            let mut parts = line.split_whitespace();
            let mode = parse_mode_string(parts.next()?)?;
            let (uid, gid) = parts.next()?.split_once('/')?;
            let size = parts.next()?.parse().ok()?;
            let _date = parts.next()?;
            let _time = parts.next()?;
            let path = parts.collect::<Vec<_>>().join(" ");
            let path = path.strip_prefix("squashfs-root")?;
            Some(ListedInode {
                path: path.trim_start_matches('/').to_string(),
                mode,
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                size,
            })
        })();
        match parsed {
            Some(inode) => inodes.push(inode),
            None => bail!("unexpected line in `unsquashfs -lln` output: {line:?}"),
        }
    }
    Ok(inodes)
}

/// Parses `dump.erofs --path=X`; `None` when it names no file (dump.erofs 1.5 then exits 0
/// and complains on stderr only). Returns (mode, uid, gid, size).
pub fn parse_dump_erofs(text: &str) -> anyhow::Result<Option<(u32, u32, u32, u64)>> {
    if !text.contains("File :") {
        return Ok(None);
    }
    let field = |name: &str| -> Option<&str> {
        let mut words = text.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()
    };
    let parsed = (|| {
        let size = field("Size:")?.parse().ok()?;
        let uid = field("Uid:")?.parse().ok()?;
        let gid = field("Gid:")?.parse().ok()?;
        // `Access: 0755/rwxr-xr-x`: permissions only; the file type is in words (`regular file`).
        let permissions = u32::from_str_radix(field("Access:")?.split('/').next()?, 8).ok()?;
        let kind = if text.contains("regular file") {
            0o100000
        } else if text.contains("directory") {
            0o040000
        } else {
            0
        };
        Some((kind | permissions, uid, gid, size))
    })();
    match parsed {
        Some(found) => Ok(Some(found)),
        None => bail!("unexpected `dump.erofs` output:\n{text}"),
    }
}

/// Parses debugfs's `ls -p DIR` (`/inode/mode/uid/gid/name/size/`) for the entry `name`.
pub fn parse_debugfs_ls(text: &str, name: &str) -> Option<(u32, u32, u32, u64)> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split('/').collect();
        if fields.len() < 7 || fields[5] != name || fields[1] == "0" {
            return None;
        }
        Some((
            u32::from_str_radix(fields[2], 8).ok()?,
            fields[3].parse().ok()?,
            fields[4].parse().ok()?,
            fields[6].parse().ok()?,
        ))
    })
}

/// The ext4 block size from the superblock (at 1024): 1024 << s_log_block_size.
fn ext4_block_size(head: &[u8]) -> Option<u64> {
    let log = u32::from_le_bytes(head.get(1024 + 24..1024 + 28)?.try_into().ok()?);
    (log <= 6).then(|| 1024u64 << log)
}

fn read_at(path: &Path, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(len as u64)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

fn inspect_ext4(image: &Path, head: &[u8]) -> anyhow::Result<ImageContents> {
    let sh = Shell::new()?;
    let debugfs = tools::preflight(&sh, &[tools::DEBUGFS])?
        .path(tools::DEBUGFS)
        .to_path_buf();
    let request = |request: &str| -> anyhow::Result<(String, String)> {
        let output = cmd!(sh, "{debugfs} -R {request} {image}")
            .quiet()
            .ignore_status()
            .output()?;
        if !output.status.success() {
            bail!(
                "debugfs -R {request:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok((
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };
    let release_path = format!("/{EXTENSION_RELEASE_PATH}");
    let (text, stderr) = request(&format!("cat {release_path}"))?;
    // debugfs says "File not found by ext2_lookup" on stderr and exits 0.
    let extension_release = (!stderr.contains("not found")).then_some(text);

    let (listing, _) = request("ls -p /usr/bin")?;
    let alloy = match parse_debugfs_ls(&listing, "alloy") {
        None => None,
        Some((mode, uid, gid, size)) => {
            // The first bytes sit in the file's first block: ask where, and read them there,
            // instead of having debugfs cat hundreds of megabytes.
            let (bmap, _) = request(&format!("bmap /{ALLOY_PATH} 0"))?;
            let block: u64 = bmap
                .trim()
                .parse()
                .with_context(|| format!("debugfs bmap answered {bmap:?}"))?;
            let block_size = ext4_block_size(head).context("the superblock's block size")?;
            let want = HEAD_BYTES.min(size as usize);
            let head = if want == 0 {
                Vec::new()
            } else {
                read_at(image, block * block_size, want)?
            };
            Some(AlloyInode {
                mode,
                uid,
                gid,
                size,
                head,
            })
        }
    };
    Ok(ImageContents {
        format: ImageFormat::Ext4,
        extension_release,
        alloy,
    })
}

/// Runs `command` and keeps the first `limit` bytes of its output, then stops it: the binary is
/// hundreds of megabytes, of which we want the header.
fn first_bytes_of(mut command: Command, limit: usize) -> anyhow::Result<Vec<u8>> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {command:?}"))?;
    let mut bytes = Vec::new();
    child
        .stdout
        .take()
        .context("no stdout")?
        .take(limit as u64)
        .read_to_end(&mut bytes)?;
    let _ = child.kill();
    let _ = child.wait();
    Ok(bytes)
}

fn inspect_squashfs(image: &Path) -> anyhow::Result<ImageContents> {
    let sh = Shell::new()?;
    let unsquashfs = tools::preflight(&sh, &[tools::UNSQUASHFS])?
        .path(tools::UNSQUASHFS)
        .to_path_buf();
    let listing = cmd!(sh, "{unsquashfs} -lln {image}")
        .quiet()
        .read()
        .context("unsquashfs -lln failed")?;
    let inodes = parse_unsquashfs_listing(&listing)?;
    let release_path = EXTENSION_RELEASE_PATH;
    let extension_release = if inodes.iter().any(|i| i.path == release_path) {
        // .output(), not .read(): that trims the final newline.
        let output = cmd!(sh, "{unsquashfs} -cat {image} {release_path}")
            .quiet()
            .output()
            .with_context(|| format!("unsquashfs -cat {release_path} failed"))?;
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        None
    };
    let alloy = match inodes.iter().find(|i| i.path == ALLOY_PATH) {
        None => None,
        Some(inode) => {
            let head = first_bytes_of(
                cmd!(sh, "{unsquashfs} -cat {image} {ALLOY_PATH}").into(),
                HEAD_BYTES,
            )?;
            Some(AlloyInode {
                mode: inode.mode,
                uid: inode.uid,
                gid: inode.gid,
                size: inode.size,
                head,
            })
        }
    };
    Ok(ImageContents {
        format: ImageFormat::Squashfs,
        extension_release,
        alloy,
    })
}

fn inspect_erofs(image: &Path) -> anyhow::Result<ImageContents> {
    let sh = Shell::new()?;
    let found = tools::preflight(&sh, &[tools::FSCK_EROFS, tools::DUMP_EROFS])?;
    let (fsck, dump) = (found.path(tools::FSCK_EROFS), found.path(tools::DUMP_EROFS));
    let path_arg = format!("--path=/{ALLOY_PATH}");
    let info = cmd!(sh, "{dump} {path_arg} {image}")
        .quiet()
        .read()
        .context("dump.erofs failed")?;
    let alloy_inode = parse_dump_erofs(&info)?;

    // erofs-utils 1.5 has no way to print one file: check every file's encoding and extract
    // the tree to a scratch directory (fsck.erofs runs as any user and keeps no owners).
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let extract = format!("--extract={}", scratch.path().join("root").display());
    cmd!(sh, "{fsck} {extract} {image}")
        .quiet()
        .run()
        .context("fsck.erofs found a damaged image")?;
    let root = scratch.path().join("root");
    let release = root.join(EXTENSION_RELEASE_PATH);
    let extension_release = match std::fs::read_to_string(&release) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", release.display())),
    };
    let alloy = match alloy_inode {
        None => None,
        Some((mode, uid, gid, size)) => Some(AlloyInode {
            mode,
            uid,
            gid,
            size,
            head: read_at(&root.join(ALLOY_PATH), 0, HEAD_BYTES)?,
        }),
    };
    Ok(ImageContents {
        format: ImageFormat::Erofs,
        extension_release,
        alloy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn mode_strings_become_st_modes() {
        assert_eq!(parse_mode_string("-rwxr-xr-x"), Some(0o100755));
        assert_eq!(parse_mode_string("drwxr-xr-x"), Some(0o040755));
        assert_eq!(parse_mode_string("-rw-r--r--"), Some(0o100644));
        assert_eq!(parse_mode_string("-rwsr-xr-x"), Some(0o104755));
        assert_eq!(parse_mode_string("drwxrwxrwt"), Some(0o041777));
        assert_eq!(parse_mode_string("lrwxrwxrwx"), Some(0o120777));
        assert_eq!(parse_mode_string("-rwxr-xr-"), None);
        assert_eq!(parse_mode_string("?rwxr-xr-x"), None);
    }

    #[test]
    fn reads_unsquashfs_listings() {
        let text = "\
drwxr-xr-x 0/0                      26 2024-01-01 00:00 squashfs-root
drwxr-xr-x 0/0                      28 2024-01-01 00:00 squashfs-root/usr
-rwxr-xr-x 1000/100             100000 2024-01-01 00:00 squashfs-root/usr/bin/alloy
";
        let inodes = parse_unsquashfs_listing(text).unwrap();
        assert_eq!(inodes.len(), 3);
        assert_eq!(inodes[0].path, "");
        assert_eq!(
            inodes[2],
            ListedInode {
                path: "usr/bin/alloy".into(),
                mode: 0o100755,
                uid: 1000,
                gid: 100,
                size: 100000
            }
        );
        assert!(parse_unsquashfs_listing("Parallel unsquashfs: Using 2 processors\n").is_err());
    }

    #[test]
    fn reads_dump_erofs_inode_info() {
        let text = "\
File : /usr/bin/alloy
Size: 100000  On-disk size: 61440  regular file
NID: 48   Links: 1   Layout: 3   Compression ratio: 61.44%
Inode size: 64   Extent size: 0   Xattr size: 0
Uid: 0   Gid: 7  Access: 0755/rwxr-xr-x
Timestamp: 2024-01-01 00:00:00.000000000
";
        assert_eq!(
            parse_dump_erofs(text).unwrap(),
            Some((0o100755, 0, 7, 100000))
        );
        assert_eq!(parse_dump_erofs("").unwrap(), None);
        assert!(parse_dump_erofs("File : /x\nSize: many\n").is_err());
    }

    #[test]
    fn reads_debugfs_directory_listings() {
        let text = "/2/040755/0/0/./4096/\n/0/000000/0/0//\n/12/100755/0/0/alloy/734208/\n";
        assert_eq!(
            parse_debugfs_ls(text, "alloy"),
            Some((0o100755, 0, 0, 734208))
        );
        assert_eq!(parse_debugfs_ls(text, "other"), None);
    }

    #[test]
    fn ext4_block_size_comes_from_the_superblock() {
        let mut head = vec![0u8; 2048];
        head[1048] = 2;
        assert_eq!(ext4_block_size(&head), Some(4096));
        head[1048] = 0;
        assert_eq!(ext4_block_size(&head), Some(1024));
    }
}
