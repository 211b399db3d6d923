//! ext4 through `ext4-view`, a read-only reader made for untrusted images (no `unsafe`, checked
//! arithmetic, metadata checksums verified), one path step at a time, so that no link is ever
//! followed. What ext4-view and the kernel could read differently is refused:
//!
//! - before ext4-view sees the image, the superblock: a journal (ext4-view replays one where
//!   a read-only mount would not; ours have none), case-folded or encrypted directories (the
//!   kernel's lookup is then not a byte comparison), more blocks than the file holds (the
//!   kernel will not mount it), more block groups than [`MAX_GROUPS`] (ext4-view reads every
//!   group descriptor into memory);
//! - in each directory on the way: its whole listing is read (unused slots, inode 0, skipped
//!   as the kernel's `ext4_match` skips them), and the name must appear once, found the same
//!   by that linear read and by the lookup (which goes through the hash index where the
//!   directory has one: the kernel uses the index when the filesystem has `dir_index`, reads
//!   linearly otherwise or when the index is broken, so both must agree); every name in it
//!   must be one a directory may hold, and each entry's file type must be its inode's.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context};
use ext4_view::{Ext4Error, FileType, Metadata};

use super::{bad_name, directory_within_limit, Lookup, Node, Tree};
use crate::util::le;

/// Where the superblock starts, and the fields read from it (offsets as in Linux's
/// `fs/ext4/ext4.h`, `struct ext4_super_block`).
const SUPERBLOCK: u64 = 1024;
const SB_BLOCKS_COUNT_LO: usize = 0x4;
const SB_FIRST_DATA_BLOCK: usize = 0x14;
const SB_LOG_BLOCK_SIZE: usize = 0x18;
const SB_BLOCKS_PER_GROUP: usize = 0x20;
const SB_FEATURE_COMPAT: usize = 0x5C;
const SB_FEATURE_INCOMPAT: usize = 0x60;
const SB_BLOCKS_COUNT_HI: usize = 0x150;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;

/// The most block groups an image may have: ext4-view keeps every descriptor in memory (64
/// bytes each). A 2 GiB image of 4 KiB blocks has 16; of 1 KiB blocks, 256.
pub const MAX_GROUPS: u64 = 1 << 16;

/// The most entries read from one directory: far more than [`super::DIRECTORY_LIMIT`] bytes of
/// directory can hold (each takes at least 12 bytes), a bound on time whatever the image says.
const MAX_ENTRIES: usize = super::DIRECTORY_LIMIT / 12 + 2;

pub struct Ext4 {
    fs: ext4_view::Ext4,
}

impl Ext4 {
    pub fn open(file: File) -> anyhow::Result<Ext4> {
        let len = file.metadata().context("reading the image's size")?.len();
        let mut superblock = [0u8; 1024];
        file.read_exact_at(&mut superblock, SUPERBLOCK)
            .context("reading the ext4 superblock")?;
        check_superblock(&superblock, len)?;
        let fs = ext4_view::Ext4::load(Box::new(file)).map_err(reader_error)?;
        Ok(Ext4 { fs })
    }

    fn metadata(&self, path: &str) -> Result<Metadata, Ext4Error> {
        self.fs.symlink_metadata(absolute(path).as_str())
    }
}

/// The checks ext4-view does not make, from the superblock's raw bytes (see the module's
/// documentation).
fn check_superblock(sb: &[u8; 1024], image_len: u64) -> anyhow::Result<()> {
    let u32_at = |at: usize| le::u32_at(sb, at);
    let compat = u32_at(SB_FEATURE_COMPAT);
    let incompat = u32_at(SB_FEATURE_INCOMPAT);
    if compat & COMPAT_HAS_JOURNAL != 0 || incompat & (INCOMPAT_RECOVER | INCOMPAT_JOURNAL_DEV) != 0
    {
        bail!(
            "the ext4 image has a journal (features {compat:#x}/{incompat:#x}): ours have none, \
             and replaying one may change what a host sees; refused"
        );
    }
    if incompat & (INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD) != 0 {
        bail!(
            "the ext4 image has encrypted or case-insensitive directories (features \
             {incompat:#x}), where a host's lookup is not a plain name comparison; refused"
        );
    }
    let log_block_size = u32_at(SB_LOG_BLOCK_SIZE);
    ensure!(
        log_block_size <= 6,
        "the ext4 superblock says blocks of 2^(10+{log_block_size}) bytes"
    );
    let block_size = 1024u64 << log_block_size;
    let mut blocks = u64::from(u32_at(SB_BLOCKS_COUNT_LO));
    if incompat & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(SB_BLOCKS_COUNT_HI)) << 32;
    }
    let claimed = blocks.checked_mul(block_size);
    if claimed.is_none_or(|claimed| claimed > image_len) {
        bail!(
            "the ext4 superblock says {blocks} blocks of {block_size} bytes, more than the \
             image's {image_len} bytes (a host's kernel will not mount it)"
        );
    }
    let per_group = u64::from(u32_at(SB_BLOCKS_PER_GROUP));
    let first = u64::from(u32_at(SB_FIRST_DATA_BLOCK));
    ensure!(per_group > 0, "the ext4 superblock says 0 blocks per group");
    let groups = blocks.saturating_sub(first).div_ceil(per_group);
    ensure!(
        groups <= MAX_GROUPS,
        "the ext4 image has {groups} block groups, over the {MAX_GROUPS} inspect reads"
    );
    Ok(())
}

/// `path` (relative, `""` for the root) as ext4-view's absolute path.
fn absolute(path: &str) -> String {
    format!("/{path}")
}

fn reader_error(error: Ext4Error) -> anyhow::Error {
    anyhow::anyhow!("the ext4 reader refused the image: {error}")
}

/// The `st_mode` of what `metadata` describes: its type's bits and its permissions.
fn st_mode(metadata: &Metadata) -> u32 {
    let kind = match metadata.file_type() {
        FileType::Regular => 0o100000,
        FileType::Directory => 0o040000,
        FileType::Symlink => 0o120000,
        FileType::Fifo => 0o010000,
        FileType::Socket => 0o140000,
        FileType::CharacterDevice => 0o020000,
        FileType::BlockDevice => 0o060000,
    };
    kind | u32::from(metadata.mode())
}

fn node(metadata: &Metadata, path: String) -> Node {
    Node {
        mode: st_mode(metadata),
        uid: metadata.uid(),
        gid: metadata.gid(),
        size: metadata.len(),
        id: 0,
        path,
        link: None,
    }
}

/// What a linear read of a directory finds under one name.
struct Listed {
    count: usize,
    file_type: Option<FileType>,
}

impl Ext4 {
    /// Reads the whole directory `dir` in order, checking every name, and counts `name`.
    fn list(&self, dir: &Node, name: &[u8]) -> anyhow::Result<Result<Listed, Lookup>> {
        let entries = self
            .fs
            .read_dir(absolute(&dir.path).as_str())
            .map_err(reader_error)?;
        let mut dots = [0; 2];
        let mut listed = Listed {
            count: 0,
            file_type: None,
        };
        for (read, entry) in entries.enumerate() {
            ensure!(
                read < MAX_ENTRIES,
                "the directory /{} holds more than {MAX_ENTRIES} entries",
                dir.path
            );
            let entry = entry.map_err(reader_error)?;
            let entry_name = entry.file_name();
            if bad_name(entry_name.as_ref(), &mut dots) {
                return Ok(Err(Lookup::BadName(entry_name.as_ref().to_vec())));
            }
            if entry_name.as_ref() == name {
                listed.count += 1;
                listed.file_type = Some(entry.file_type().map_err(reader_error)?);
            }
        }
        Ok(Ok(listed))
    }
}

impl Tree for Ext4 {
    fn root(&mut self) -> anyhow::Result<Node> {
        let metadata = self.metadata("").map_err(reader_error)?;
        Ok(node(&metadata, String::new()))
    }

    fn lookup(&mut self, dir: &Node, name: &str) -> anyhow::Result<Lookup> {
        directory_within_limit(dir)?;
        let listed = match self.list(dir, name.as_bytes())? {
            Ok(listed) => listed,
            Err(refused) => return Ok(refused),
        };
        let path = if dir.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", dir.path)
        };
        // The lookup a host makes: through the hash index where the directory has one.
        let looked_up = match self.metadata(&path) {
            Ok(metadata) => Some(metadata),
            Err(Ext4Error::NotFound) => None,
            Err(error) => return Err(reader_error(error)),
        };
        Ok(match (listed.count, looked_up) {
            (0, None) => Lookup::Missing,
            (1, Some(metadata)) if listed.file_type == Some(metadata.file_type()) => {
                Lookup::Found(node(&metadata, path))
            }
            (1, Some(metadata)) => Lookup::Ambiguous(format!(
                "lists {name:?} as {:?} but its inode is {:?}",
                listed.file_type,
                metadata.file_type()
            )),
            (1, None) => Lookup::Ambiguous(format!(
                "lists {name:?}, but its hash index does not lead to it"
            )),
            (0, Some(_)) => Lookup::Ambiguous(format!(
                "leads to {name:?} through its hash index, but does not list it"
            )),
            (count, _) => Lookup::Ambiguous(format!("holds {name:?} {count} times")),
        })
    }

    fn link_target(&mut self, link: &Node) -> anyhow::Result<Vec<u8>> {
        let target = self
            .fs
            .read_link(absolute(&link.path).as_str())
            .map_err(reader_error)?;
        Ok(target.as_ref().to_vec())
    }

    fn read_head(&mut self, file: &Node, limit: usize) -> anyhow::Result<Vec<u8>> {
        let mut opened = self
            .fs
            .open(absolute(&file.path).as_str())
            .map_err(reader_error)?;
        let want = usize::try_from(file.size).unwrap_or(usize::MAX).min(limit);
        let mut head = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let read = opened
                .read_bytes(&mut head[filled..])
                .map_err(reader_error)?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        head.truncate(filled);
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(blocks: u32, log_block_size: u32, compat: u32, incompat: u32) -> [u8; 1024] {
        let mut sb = [0u8; 1024];
        let mut put = |at: usize, value: u32| sb[at..at + 4].copy_from_slice(&value.to_le_bytes());
        put(SB_BLOCKS_COUNT_LO, blocks);
        put(SB_LOG_BLOCK_SIZE, log_block_size);
        put(SB_BLOCKS_PER_GROUP, 32768);
        put(SB_FEATURE_COMPAT, compat);
        put(SB_FEATURE_INCOMPAT, incompat);
        sb
    }

    #[test]
    fn the_superblock_is_checked_before_the_reader_sees_it() {
        let fine = superblock(1024, 2, 0x38, 0x2C2);
        // 0x2C2 has 64bit, with a zero high word.
        check_superblock(&fine, 4 << 20).unwrap();
        let short = check_superblock(&fine, (4 << 20) - 1).unwrap_err();
        assert!(
            short.to_string().contains("more than the image's"),
            "{short}"
        );
        let journal = check_superblock(&superblock(1024, 2, 0x3C, 0x2C2), 4 << 20).unwrap_err();
        assert!(journal.to_string().contains("has a journal"), "{journal}");
        let casefold = superblock(1024, 2, 0x38, 0x2C2 | INCOMPAT_CASEFOLD);
        let refused = check_superblock(&casefold, 4 << 20).unwrap_err();
        assert!(
            refused.to_string().contains("case-insensitive"),
            "{refused}"
        );
        let huge = check_superblock(&superblock(1024, 40, 0, 0), u64::MAX).unwrap_err();
        assert!(huge.to_string().contains("2^(10+40)"), "{huge}");
        let mut groups = superblock(u32::MAX, 0, 0, 0);
        groups[SB_BLOCKS_PER_GROUP..SB_BLOCKS_PER_GROUP + 4].copy_from_slice(&8u32.to_le_bytes());
        let many = check_superblock(&groups, u64::MAX).unwrap_err();
        assert!(many.to_string().contains("block groups"), "{many}");
    }
}
