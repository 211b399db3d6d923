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

use crate::build::stage::StagedTree;
use crate::util::checksums::hash_bytes;
use crate::util::tools::{self, Tool, Toolbox};

pub use inspect::inspect;

/// The filesystem of a sysext image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ImageFormat {
    /// Uncompressed ext4: largest download, no decompression on the host
    Ext4,
    /// squashfs with zstd: a fraction of ext4's size
    Squashfs,
    /// erofs with lz4hc: larger than squashfs, fastest to read on the host
    Erofs,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Ext4 => "ext4",
            ImageFormat::Squashfs => "squashfs",
            ImageFormat::Erofs => "erofs",
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

/// Finds this format's programs (and, for ext4, loads libext2fs), before any download starts.
pub fn preflight(sh: &Shell, format: ImageFormat) -> anyhow::Result<Toolbox> {
    let found = tools::preflight(sh, format.tools())?;
    if format == ImageFormat::Ext4 {
        ext4::check_library()?;
    }
    Ok(found)
}

/// A staged file whose bytes are read while packing instead of from the tree on disk: the
/// binary, inflated from the release zip straight into an ext4 image.
pub struct Streamed<'a> {
    /// Its path in the tree (an entry of kind `File` with the size the reader will give).
    pub path: &'a str,
    pub reader: &'a mut dyn Read,
}

/// Packs `tree` into the image file `dest` (which must not exist yet).
/// `tools` must come from [`preflight`]. Only ext4 takes a `streamed` file
/// ([`ImageFormat::streams`]); for the others every file must be on disk.
pub fn pack(
    sh: &Shell,
    tools: &Toolbox,
    format: ImageFormat,
    tree: &StagedTree,
    dest: &Path,
    params: &ImageParams,
    streamed: Option<Streamed<'_>>,
) -> anyhow::Result<()> {
    if streamed.is_some() && !format.streams() {
        bail!("{format} images are packed from files on disk only");
    }
    match format {
        ImageFormat::Ext4 => ext4::pack(sh, tools, tree, dest, params, streamed),
        ImageFormat::Squashfs => {
            set_times(tree, params.epoch)?;
            squashfs::pack(sh, tools, tree, dest, params)
        }
        ImageFormat::Erofs => {
            set_times(tree, params.epoch)?;
            erofs::pack(sh, tools, tree, dest, params)
        }
    }
}

/// Checks a packed image's consistency before it is kept (ext4: `e2fsck -fn`; mksquashfs and
/// mkfs.erofs check what they write themselves). May run alongside hashing the image.
pub fn check(tools: &Toolbox, format: ImageFormat, image: &Path) -> anyhow::Result<()> {
    match format {
        ImageFormat::Ext4 => ext4::check(tools, image),
        ImageFormat::Squashfs | ImageFormat::Erofs => Ok(()),
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
