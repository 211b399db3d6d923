//! squashfs inodes as `squashfs_read_inode` makes them, and a file's first bytes.

use anyhow::ensure;

use super::{
    Inode, Node, Squashfs, DATA_UNCOMPRESSED, DIRECTORY, EXTENDED_DIRECTORY, EXTENDED_REGULAR,
    NO_FRAGMENT, REGULAR, SYMLINK, TYPE_BITS,
};
use crate::util::le::{u16_at, u32_at, u64_at};

const EXTENDED_SYMLINK: u16 = SYMLINK + 7;
/// `S_IFMT`: a mode's file type bits.
const TYPE_MASK: u32 = 0o170000;
/// The longest link target the kernel reads: a page.
const LINK_LIMIT: u64 = 4096;

impl Squashfs {
    /// The inode at `reference` (its metadata block, relative to the inode table, above bit
    /// 16; its offset in that block below). The mode is the stored one with the type's bits
    /// added, as the kernel makes it; owners come from the id table.
    pub(super) fn inode(&mut self, reference: u64) -> anyhow::Result<Inode> {
        let offset = usize::try_from(reference & 0xFFFF).unwrap_or(usize::MAX);
        let mut at = self.position(self.inode_table, reference >> 16, offset)?;
        let header = self.metadata(&mut at, 16)?;
        let kind = u16_at(&header, 0);
        ensure!((1..=14).contains(&kind), "an inode of type {kind}");
        // mksquashfs stores the permission bits alone; the type comes from `kind`. Kernels
        // before 6.16 add the type's bits to whatever is stored (a directory stored as
        // 0o100755 turns into a socket), later ones refuse the inode: either way not ours.
        let stored = u16_at(&header, 2);
        ensure!(
            u32::from(stored) & TYPE_MASK == 0,
            "an inode's mode {stored:#o} holds a file type, which the kernels read differently"
        );
        // As `squashfs_new_inode`: inode number 0 is refused.
        let number = u32_at(&header, 12);
        ensure!(number != 0, "an inode numbered 0");
        let mut inode = Inode {
            kind,
            number,
            mode: u32::from(stored) | TYPE_BITS[usize::from((kind - 1) % 7)],
            uid: self.id(u16_at(&header, 4))?,
            gid: self.id(u16_at(&header, 6))?,
            size: 0,
            rest: at,
            listing: at,
            index_count: 0,
            blocks_start: 0,
            fragment: NO_FRAGMENT,
            fragment_offset: 0,
        };
        match kind {
            DIRECTORY => {
                // start_block u32, nlink u32, file_size u16, offset u16, parent u32
                let fields = self.metadata(&mut at, 16)?;
                inode.size = u64::from(u16_at(&fields, 8));
                let start = u64::from(u32_at(&fields, 0));
                let offset = usize::from(u16_at(&fields, 10));
                inode.listing = self.position(self.directory_table, start, offset)?;
            }
            EXTENDED_DIRECTORY => {
                // nlink u32, file_size u32, start_block u32, parent u32, index_count u16,
                // offset u16, xattr u32; the index follows
                let fields = self.metadata(&mut at, 24)?;
                inode.size = u64::from(u32_at(&fields, 4));
                let start = u64::from(u32_at(&fields, 8));
                let offset = usize::from(u16_at(&fields, 18));
                inode.listing = self.position(self.directory_table, start, offset)?;
                inode.index_count = u16_at(&fields, 16);
            }
            REGULAR => {
                // blocks_start u32, fragment u32, offset u32, file_size u32; block sizes follow
                let fields = self.metadata(&mut at, 16)?;
                inode.blocks_start = u64::from(u32_at(&fields, 0));
                inode.fragment = u32_at(&fields, 4);
                inode.fragment_offset = u32_at(&fields, 8);
                inode.size = u64::from(u32_at(&fields, 12));
            }
            EXTENDED_REGULAR => {
                // blocks_start u64, file_size u64, sparse u64, nlink u32, fragment u32,
                // offset u32, xattr u32; block sizes follow
                let fields = self.metadata(&mut at, 40)?;
                inode.blocks_start = u64_at(&fields, 0);
                inode.size = u64_at(&fields, 8);
                inode.fragment = u32_at(&fields, 28);
                inode.fragment_offset = u32_at(&fields, 32);
            }
            SYMLINK | EXTENDED_SYMLINK => {
                // nlink u32, target size u32; the target follows
                let fields = self.metadata(&mut at, 8)?;
                inode.size = u64::from(u32_at(&fields, 4));
                ensure!(
                    inode.size <= LINK_LIMIT,
                    "a link target of {} bytes",
                    inode.size
                );
            }
            // Devices, FIFOs and sockets: nothing more is read of them.
            _ => {}
        }
        inode.rest = at;
        if inode.fragment != NO_FRAGMENT {
            // As the kernel: a file whose size is whole blocks has no tail to keep apart.
            ensure!(
                !inode.size.is_multiple_of(u64::from(self.block_size)),
                "a file of {} bytes (whole blocks) with a fragment",
                inode.size
            );
            self.fragment(inode.fragment)?;
        }
        Ok(inode)
    }

    pub(super) fn node(&mut self, reference: u64, path: String) -> anyhow::Result<Node> {
        let inode = self.inode(reference)?;
        Ok(Node {
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            id: reference,
            path,
            link: None,
        })
    }

    /// The first `limit` bytes of a regular file: from its first data block, or (a file
    /// shorter than a block) from its fragment. A block must inflate to exactly what the file's
    /// size says it holds.
    pub(super) fn file_head(&mut self, inode: &Inode, limit: usize) -> anyhow::Result<Vec<u8>> {
        let want = usize::try_from(inode.size).unwrap_or(usize::MAX).min(limit);
        if want == 0 {
            return Ok(Vec::new());
        }
        let block_size = u64::from(self.block_size);
        let blocks = if inode.fragment == NO_FRAGMENT {
            inode.size.div_ceil(block_size)
        } else {
            inode.size / block_size
        };
        let data = if blocks > 0 {
            let mut at = inode.rest;
            let word = u32_at(&self.metadata(&mut at, 4)?, 0);
            let expected = usize::try_from(inode.size.min(block_size)).unwrap_or(usize::MAX);
            self.data_block(inode.blocks_start, word, Some(expected))?
        } else {
            let (start, word) = self.fragment(inode.fragment)?;
            let block = self.data_block(start, word, None)?;
            let from = usize::try_from(inode.fragment_offset).unwrap_or(usize::MAX);
            let end = from.checked_add(usize::try_from(inode.size).unwrap_or(usize::MAX));
            let Some(tail) = end.and_then(|end| block.get(from..end)) else {
                anyhow::bail!(
                    "a file's tail at {from} (+{} bytes) lies outside its {}-byte fragment",
                    inode.size,
                    block.len()
                );
            };
            tail.to_vec()
        };
        Ok(data[..want.min(data.len())].to_vec())
    }

    /// The data block at `start` whose size word is `word` (0: a hole, all zeros): inflated
    /// within one block, and `expected` bytes long when that is known.
    fn data_block(
        &mut self,
        start: u64,
        word: u32,
        expected: Option<usize>,
    ) -> anyhow::Result<Vec<u8>> {
        let block_size = usize::try_from(self.block_size).unwrap_or(usize::MAX);
        let stored = usize::try_from(word & !DATA_UNCOMPRESSED).unwrap_or(usize::MAX);
        // The kernel reads a hole only where the whole word is 0; an "uncompressed" block of
        // 0 bytes is an error to it.
        ensure!(
            word != DATA_UNCOMPRESSED,
            "a data block of 0 bytes marked uncompressed (a host's kernel cannot read it)"
        );
        if stored == 0 {
            let Some(expected) = expected else {
                anyhow::bail!("an empty fragment block");
            };
            return Ok(vec![0; expected]);
        }
        ensure!(
            stored <= block_size,
            "a data block of {stored} bytes stored, over the {block_size}-byte block size"
        );
        let raw = self.read(start, stored)?;
        let data = if word & DATA_UNCOMPRESSED != 0 {
            raw
        } else {
            self.inflate(&raw, block_size)?
        };
        if let Some(expected) = expected {
            ensure!(
                data.len() == expected,
                "a file's first block holds {} bytes, where its size says {expected}",
                data.len()
            );
        }
        Ok(data)
    }
}
