//! Packing a staged tree into a filesystem image that systemd-sysext can merge.
//! Every format is reproducible: same tree, same epoch, same bytes.
//!
//! Every format keeps the `.raw` file name: systemd-sysext and sysupdate find images by name
//! (`alloy.raw`, `alloy-@v-<arch>.raw`) and tell the filesystem by probing its superblock, as
//! Flatcar's sysext-bakery does for its squashfs and erofs images.

mod erofs;
mod ext4;
pub mod inspect;
mod squashfs;

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

use xshell::Shell;

use crate::payload::stage::StagedTree;
use crate::util::checksums::hash_bytes;
use crate::util::tools::{self, Tool, Toolbox};

pub use inspect::inspect;

/// The filesystem of a sysext image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Ext4,
    Squashfs,
    Erofs,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 3] =
        [ImageFormat::Ext4, ImageFormat::Squashfs, ImageFormat::Erofs];

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Ext4 => "ext4",
            ImageFormat::Squashfs => "squashfs",
            ImageFormat::Erofs => "erofs",
        }
    }

    /// What choosing it means, in a line (`--help` shows it).
    pub fn summary(self) -> &'static str {
        match self {
            ImageFormat::Ext4 => {
                "Uncompressed ext4: largest download, no decompression on the host"
            }
            ImageFormat::Squashfs => "squashfs with zstd: a fraction of ext4's size",
            ImageFormat::Erofs => {
                "erofs with lz4hc: larger than squashfs, fastest to read on the host"
            }
        }
    }

    /// Whether [`pack`] can read a file's bytes while it packs ([`Streamed`]): ext4, which we
    /// fill ourselves; mksquashfs and mkfs.erofs read a finished tree.
    pub fn streams(self) -> bool {
        self == ImageFormat::Ext4
    }

    /// The programs that pack this format, checked before any download starts.
    pub fn tools(self) -> &'static [Tool] {
        match self {
            ImageFormat::Ext4 => &[tools::MKFS_EXT4, tools::E2FSCK],
            ImageFormat::Squashfs => &[tools::MKSQUASHFS],
            ImageFormat::Erofs => &[tools::MKFS_EROFS],
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Timestamps in images when `SOURCE_DATE_EPOCH` is not set: 2024-01-01T00:00:00Z.
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;

/// The latest time every format can store: squashfs keeps seconds in 32 bits (2106-02-07).
pub const MAX_EPOCH: u64 = u32::MAX as u64;

/// `SOURCE_DATE_EPOCH`: a whole number of seconds that every format can store; empty means
/// the default.
pub fn parse_epoch(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(DEFAULT_EPOCH);
    }
    match text.parse::<u64>() {
        Ok(epoch) if epoch > 0 && epoch <= MAX_EPOCH => Ok(epoch),
        Ok(epoch) if epoch > MAX_EPOCH => bail!(
            "SOURCE_DATE_EPOCH={text} is after {MAX_EPOCH} (2106-02-07), the latest time a squashfs image can store"
        ),
        _ => bail!("SOURCE_DATE_EPOCH={text:?} is not a positive whole number of seconds since 1970"),
    }
}

/// What makes an image reproducible besides its content.
#[derive(Clone, Debug)]
pub struct ImageParams {
    /// Every timestamp in the image (`SOURCE_DATE_EPOCH`).
    pub epoch: u64,
    /// Seeds the filesystem UUID and hash seeds, e.g. `alloy-1.10.2-amd64`.
    pub identity: String,
}

impl ImageParams {
    /// A UUID derived from the identity (and a purpose, so UUID and hash seed differ): fixed
    /// for a given image, different between images.
    pub fn derived_uuid(&self, purpose: &str) -> String {
        let digest = hash_bytes(format!("alloy-sysext {purpose} {}", self.identity).as_bytes());
        let mut b: [u8; 16] = digest.0[..16].try_into().unwrap();
        b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout, as tools expect
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

/// A staged file whose bytes are read while packing instead of from the tree on disk: the
/// binary, inflated from the release zip straight into an ext4 image.
pub struct Streamed<'a> {
    /// Its path in the tree (an entry of kind `File` with the size the reader will give).
    pub path: &'a str,
    pub reader: &'a mut dyn Read,
}

/// How an ext4 image is filled. Both give the same bytes (a test compares them); the bench
/// times one against the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ext4Fill {
    /// From our own process through libext2fs, the binary inflated straight into the image.
    #[default]
    InProcess,
    /// With the real `debugfs -n -w` from the staged tree on disk: the reference.
    Debugfs,
}

/// Packs staged trees into images of one format, with one epoch: the format's programs (and,
/// for ext4, libext2fs) are found once, before any download starts.
pub struct Packer<'sh> {
    sh: &'sh Shell,
    tools: Toolbox,
    pub format: ImageFormat,
    pub epoch: u64,
    pub ext4_fill: Ext4Fill,
}

/// One image to pack: what each format's packer reads.
struct Job<'a> {
    sh: &'a Shell,
    tools: &'a Toolbox,
    tree: &'a StagedTree,
    /// The image file, which must not exist yet.
    dest: &'a Path,
    params: ImageParams,
}

impl<'sh> Packer<'sh> {
    /// Finds this format's programs (and, for ext4, loads libext2fs): a missing one is named
    /// with its package before any download.
    pub fn new(
        sh: &'sh Shell,
        format: ImageFormat,
        epoch: u64,
        ext4_fill: Ext4Fill,
    ) -> anyhow::Result<Packer<'sh>> {
        let mut needed = format.tools().to_vec();
        if format == ImageFormat::Ext4 && ext4_fill == Ext4Fill::Debugfs {
            needed.push(tools::DEBUGFS);
        }
        let tools = tools::preflight(sh, &needed)?;
        if format == ImageFormat::Ext4 {
            ext4::check_library()?;
        }
        Ok(Packer {
            sh,
            tools,
            format,
            epoch,
            ext4_fill,
        })
    }

    /// Whether [`Packer::pack`] can read a file's bytes while it packs ([`Streamed`]): ext4
    /// filled in process; mksquashfs, mkfs.erofs and debugfs read a finished tree.
    pub fn streams(&self) -> bool {
        self.format == ImageFormat::Ext4 && self.ext4_fill == Ext4Fill::InProcess
    }

    /// Packs `tree` into the image file `dest` (which must not exist yet); `identity` (the
    /// image's name without `.raw`) seeds its UUIDs. Only ext4 takes a `streamed` file
    /// ([`Packer::streams`]); for the others every file must be on disk.
    pub fn pack(
        &self,
        tree: &StagedTree,
        dest: &Path,
        identity: &str,
        streamed: Option<Streamed<'_>>,
    ) -> anyhow::Result<()> {
        if streamed.is_some() && !self.streams() {
            bail!(
                "{} images ({:?} fill) are packed from files on disk only",
                self.format,
                self.ext4_fill
            );
        }
        let job = Job {
            sh: self.sh,
            tools: &self.tools,
            tree,
            dest,
            params: ImageParams {
                epoch: self.epoch,
                identity: identity.to_string(),
            },
        };
        match self.format {
            ImageFormat::Ext4 if self.ext4_fill == Ext4Fill::Debugfs => {
                ext4::fill_with_debugfs(&job)
            }
            ImageFormat::Ext4 => ext4::fill_image(&job, streamed),
            ImageFormat::Squashfs => {
                set_times(tree, self.epoch)?;
                squashfs::mksquashfs(&job)
            }
            ImageFormat::Erofs => {
                set_times(tree, self.epoch)?;
                erofs::mkfs_erofs(&job)
            }
        }
    }

    /// What checks the images this packer makes, to run on another thread.
    pub fn checker(&self) -> Checker {
        Checker {
            format: self.format,
            tools: self.tools.clone(),
        }
    }
}

/// Checks packed images of one format: see [`Checker::check`].
pub struct Checker {
    format: ImageFormat,
    tools: Toolbox,
}

impl Checker {
    /// Checks a packed image's consistency before it is kept (ext4: `e2fsck -fn`; mksquashfs
    /// and mkfs.erofs check what they write themselves). May run alongside hashing the image.
    pub fn check(&self, image: &Path) -> anyhow::Result<()> {
        match self.format {
            ImageFormat::Ext4 => ext4::check(&self.tools, image),
            ImageFormat::Squashfs | ImageFormat::Erofs => Ok(()),
        }
    }
}

/// Sets every staged file's and directory's mtime and atime to the epoch. The packers are told
/// the epoch too; this makes the tree itself say the same, whatever a tool version reads.
fn set_times(tree: &StagedTree, epoch: u64) -> anyhow::Result<()> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let times = std::fs::FileTimes::new()
        .set_accessed(time)
        .set_modified(time);
    let paths = std::iter::once(tree.root.clone())
        .chain(tree.entries.iter().map(|e| tree.disk_path(&e.path)));
    for path in paths {
        // Never follow a link: its target may lie outside the tree. The packers set link times.
        if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            continue;
        }
        std::fs::File::open(&path)
            .and_then(|f| f.set_times(times))
            .with_context(|| format!("setting the times of {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_defaults_to_a_fixed_date_and_refuses_nonsense() {
        assert_eq!(parse_epoch("").unwrap(), DEFAULT_EPOCH);
        assert_eq!(
            parse_epoch(&DEFAULT_EPOCH.to_string()).unwrap(),
            DEFAULT_EPOCH
        );
        assert_eq!(parse_epoch("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_epoch("4294967295").unwrap(), MAX_EPOCH);
        for bad in ["yesterday", "-5", "0", "1.5"] {
            let err = parse_epoch(bad).unwrap_err().to_string();
            assert!(err.contains("SOURCE_DATE_EPOCH"), "{bad}: {err}");
        }
        for too_late in ["4294967296", "18446744073709551615"] {
            let err = parse_epoch(too_late).unwrap_err().to_string();
            assert!(err.contains("2106"), "{too_late}: {err}");
        }
    }

    #[test]
    fn staged_times_become_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = StagedTree::new(&dir.path().join("t")).unwrap();
        tree.add_file("usr/bin/alloy", b"x", 0o755).unwrap();
        set_times(&tree, 1_704_067_200).unwrap();
        let expected = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200);
        for path in ["", "usr", "usr/bin", "usr/bin/alloy"] {
            let modified = std::fs::metadata(tree.root.join(path))
                .unwrap()
                .modified()
                .unwrap();
            assert_eq!(modified, expected, "{path:?}");
        }
    }

    #[test]
    fn derived_uuids_are_stable_valid_and_distinct() {
        let params = ImageParams {
            epoch: 1,
            identity: "alloy-1.10.2-amd64".into(),
        };
        let uuid = params.derived_uuid("fs");
        assert_eq!(uuid, params.derived_uuid("fs"));
        assert_ne!(uuid, params.derived_uuid("hash"));
        assert_ne!(
            uuid,
            ImageParams {
                epoch: 1,
                identity: "alloy-1.10.2-arm64".into()
            }
            .derived_uuid("fs")
        );
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!("89ab".contains(&uuid[19..20]));
    }
}
