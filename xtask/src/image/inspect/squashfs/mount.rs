//! The checks Linux's `squashfs_fill_super` makes of the tables at the end of an image before
//! it mounts it (`fs/squashfs/super.c`, `id.c`, `export.c`, `fragment.c`): an image the kernel
//! will not mount must not pass inspect, though nothing else reads these tables. Each table is
//! an index of 8-byte pointers to metadata blocks; the kernel checks the index's length against
//! where the next table starts, and that the pointers rise by at most one metadata block and
//! end before the index.

use anyhow::{ensure, Context};

use super::{Squashfs, METADATA_SIZE};
use crate::util::le::u64_at;

/// "No table": the lookup (export) and xattr tables' start when absent.
const ABSENT: u64 = u64::MAX;
/// The most an index the kernel reads whole may take here: ours are a few pointers; an image
/// declaring millions of ids or inodes is refused rather than read.
const INDEX_LIMIT: u64 = 64 << 10;
/// How far apart two metadata blocks may start: one whole block and its 2-byte header.
const BLOCK_STRIDE: u64 = METADATA_SIZE as u64 + 2;

/// Where the tables start and what they hold, from the superblock.
pub(super) struct Tables {
    pub inodes: u32,
    pub ids: u16,
    pub fragments: u32,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
    pub lookup_table: u64,
}

impl Squashfs {
    /// Refuses what `squashfs_fill_super` refuses, walking the tables from the end backwards as
    /// it does: each must end where the next one starts.
    pub(super) fn check_mountable(&self, t: &Tables) -> anyhow::Result<()> {
        // Ours are packed with -no-xattrs.
        ensure!(
            t.xattr_table == ABSENT,
            "the squashfs image carries extended attributes (a table at {}), ours never do",
            t.xattr_table
        );
        ensure!(t.ids > 0, "the squashfs superblock says 0 ids");
        let id_len = index_len(u64::from(t.ids), 4);
        ensure!(
            self.bytes_used.checked_sub(t.id_table) == Some(id_len),
            "the squashfs id table's index at {} is not the {id_len} bytes before the end",
            t.id_table
        );
        let mut next = self.rising_index(t.id_table, id_len, "id")?;
        if t.lookup_table != ABSENT {
            ensure!(t.inodes > 0, "the squashfs superblock says 0 inodes");
            let len = index_len(u64::from(t.inodes), 8);
            ensure!(
                next.checked_sub(t.lookup_table) == Some(len),
                "the squashfs inode lookup table's index at {} is not the {len} bytes before \
                 the id table",
                t.lookup_table
            );
            next = self.rising_index(t.lookup_table, len, "inode lookup")?;
        }
        if t.fragments > 0 {
            let len = index_len(u64::from(t.fragments), 16);
            ensure!(
                t.fragment_table
                    .checked_add(len)
                    .is_some_and(|end| end <= next),
                "the squashfs fragment table's index at {} runs into the table after it",
                t.fragment_table
            );
            let first = u64_at(&self.read(t.fragment_table, 8)?, 0);
            ensure!(
                first < t.fragment_table,
                "the squashfs fragment table's first block ({first}) is not before its index"
            );
            next = first;
        }
        ensure!(
            t.directory_table <= next && t.inode_table < t.directory_table,
            "the squashfs tables are out of order (inodes at {}, directories at {}, the next \
             table at {next})",
            t.inode_table,
            t.directory_table
        );
        Ok(())
    }

    /// Reads the index of `len` bytes at `start` and checks it as the kernel does; returns the
    /// first block it points to, where the table before it must end.
    fn rising_index(&self, start: u64, len: u64, what: &str) -> anyhow::Result<u64> {
        ensure!(
            len <= INDEX_LIMIT,
            "the squashfs {what} table's index takes {len} bytes, more than inspect reads"
        );
        let index = self.read(start, usize::try_from(len).context("an index too large")?)?;
        let pointers: Vec<u64> = (0..index.len() / 8)
            .map(|i| u64_at(&index, i * 8))
            .collect();
        let ends = pointers.iter().skip(1).chain(std::iter::once(&start));
        for (block, end) in pointers.iter().zip(ends) {
            ensure!(
                block < end && end - block <= BLOCK_STRIDE,
                "the squashfs {what} table points to a block at {block}, not within one \
                 metadata block before {end}"
            );
        }
        pointers
            .first()
            .copied()
            .with_context(|| format!("the squashfs {what} table's index is empty"))
    }
}

/// The bytes of the index of a table of `count` entries of `size` bytes: one pointer per
/// metadata block the entries fill.
fn index_len(count: u64, size: u64) -> u64 {
    (count * size).div_ceil(METADATA_SIZE as u64) * 8
}
