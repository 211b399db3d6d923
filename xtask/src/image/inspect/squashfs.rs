//! squashfs 4.0 read by hand, the way Linux's `fs/squashfs` reads it (layout and lookup as in
//! `squashfs_fs.h`, `namei.c`, `inode.c`): the superblock, metadata blocks of at most 8 KiB
//! (each inflated into a fixed 8 KiB buffer), inodes by reference, a directory's listing, and a
//! file's first data block or fragment (inflated into a buffer of one block).
//!
//! The kernel looks a name up by jumping through the directory's index to the last indexed
//! name not after it, then reading on until an entry whose first byte is greater: it relies on
//! the names being sorted. So each directory on the way is read twice: whole, where every
//! name must be one a directory may hold and sort strictly after the one before it (which also
//! rules out duplicates), and the kernel's way; both must find the same entry, and the entry's
//! type must be its inode's. Compressed with zlib (mksquashfs's default) or zstd (ours); the
//! other compressors are refused as unsupported.
//!
//! Not taken from `backhand`: it reads every inode and directory of an image into memory up
//! front (as much as the image declares), keeps entries whatever their order, accepts `/` as
//! a name, and adds an entry's inode offset to its header's base with an `i32` addition that
//! overflows (a panic in the dev profile `cargo xtask` runs) on crafted numbers.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use anyhow::{ensure, Context};

use super::{bad_name, directory_within_limit, read_within, Lookup, Node, Tree};
use crate::util::le::{u16_at, u32_at, u64_at};

const MAGIC: u32 = 0x7371_7368;
const SUPERBLOCK_LEN: usize = 96;
/// Superblock flag: compressor options follow the superblock (ours carry zstd's level).
const COMPRESSOR_OPTIONS: u16 = 0x400;
/// A metadata block's most bytes, inflated.
const METADATA_SIZE: usize = 8192;
/// A metadata block's header: bit 15 set when stored uncompressed, the rest its stored length.
const METADATA_UNCOMPRESSED: u16 = 0x8000;
/// A data block's or fragment's size word: bit 24 set when stored uncompressed.
const DATA_UNCOMPRESSED: u32 = 1 << 24;
const NO_FRAGMENT: u32 = 0xFFFF_FFFF;
/// Entries under one directory header, and bytes in a name: at most 256 each.
const DIR_COUNT: u32 = 256;
const NAME_LEN: usize = 256;
/// How many inflated metadata blocks are kept: 2 MiB.
const CACHED_BLOCKS: usize = 256;

const ZLIB: u16 = 1;
const ZSTD: u16 = 6;

/// Inode types; the extended ones are the basic ones plus 7.
const DIRECTORY: u16 = 1;
const REGULAR: u16 = 2;
const SYMLINK: u16 = 3;
const EXTENDED_DIRECTORY: u16 = 8;
const EXTENDED_REGULAR: u16 = 9;
const TYPE_BITS: [u32; 7] = [
    0o040000, 0o100000, 0o120000, 0o060000, 0o020000, 0o010000, 0o140000,
];

pub struct Squashfs {
    file: File,
    compressor: u16,
    block_size: u32,
    bytes_used: u64,
    root: u64,
    inode_table: u64,
    directory_table: u64,
    fragment_table: u64,
    fragments: u32,
    id_table: u64,
    ids: u16,
    cache: HashMap<u64, Rc<(Vec<u8>, u64)>>,
}

/// Where metadata is read from: a block's position in the image, and an offset in it inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    block: u64,
    offset: usize,
}

/// An inode as the kernel makes it.
#[derive(Clone, Debug)]
struct Inode {
    /// The type as stored (1-14).
    kind: u16,
    /// The inode number stored in it.
    number: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    /// Where what follows the fixed fields starts: a file's block sizes, a directory's index.
    rest: Position,
    /// Directories: where the listing starts, and (extended) how many index entries follow.
    listing: Position,
    index_count: u16,
    /// Regular files: the first data block, the fragment (or [`NO_FRAGMENT`]) and the offset in it.
    blocks_start: u64,
    fragment: u32,
    fragment_offset: u32,
}

/// One directory entry: its name, the inode it refers to, and the type it gives.
struct Entry {
    name: Vec<u8>,
    inode: u64,
    kind: u16,
    /// The inode number the entry gives (its header's base plus its own difference): the
    /// kernel's inode cache finds the inode by this number, not by where it is stored.
    number: u32,
}

impl Squashfs {
    pub fn open(file: File) -> anyhow::Result<Squashfs> {
        let len = file.metadata().context("reading the image's size")?.len();
        let mut sb = [0u8; SUPERBLOCK_LEN];
        file.read_exact_at(&mut sb, 0)
            .context("reading the squashfs superblock")?;
        ensure!(u32_at(&sb, 0) == MAGIC, "no squashfs superblock");
        let (major, minor) = (u16_at(&sb, 28), u16_at(&sb, 30));
        ensure!(
            (major, minor) == (4, 0),
            "squashfs {major}.{minor}: only 4.0 is read"
        );
        let block_size = u32_at(&sb, 12);
        let block_log = u16_at(&sb, 22);
        ensure!(
            block_size.is_power_of_two()
                && (4096..=1 << 20).contains(&block_size)
                && u32::from(block_log) == block_size.trailing_zeros(),
            "the squashfs superblock says blocks of {block_size} bytes (2^{block_log})"
        );
        let compressor = u16_at(&sb, 20);
        ensure!(
            compressor == ZLIB || compressor == ZSTD,
            "squashfs compressed with {} is not read here: only zlib and zstd (ours are zstd)",
            compressor_name(compressor)
        );
        let bytes_used = u64_at(&sb, 40);
        ensure!(
            bytes_used <= len,
            "the squashfs superblock says {bytes_used} bytes used, more than the image's {len}"
        );
        let mut squashfs = Squashfs {
            file,
            compressor,
            block_size,
            bytes_used,
            root: u64_at(&sb, 32),
            id_table: u64_at(&sb, 48),
            inode_table: u64_at(&sb, 64),
            directory_table: u64_at(&sb, 72),
            fragment_table: u64_at(&sb, 80),
            fragments: u32_at(&sb, 16),
            ids: u16_at(&sb, 26),
            cache: HashMap::new(),
        };
        squashfs.check_mountable(&Tables {
            inodes: u32_at(&sb, 4),
            ids: squashfs.ids,
            fragments: squashfs.fragments,
            id_table: squashfs.id_table,
            xattr_table: u64_at(&sb, 56),
            inode_table: squashfs.inode_table,
            directory_table: squashfs.directory_table,
            fragment_table: squashfs.fragment_table,
            lookup_table: u64_at(&sb, 88),
        })?;
        if u16_at(&sb, 24) & COMPRESSOR_OPTIONS != 0 {
            // The kernel reads the options as a metadata block right after the superblock,
            // and refuses to mount where it cannot.
            squashfs.metadata_block(SUPERBLOCK_LEN as u64)?;
        }
        squashfs.check_inode_numbers()?;
        Ok(squashfs)
    }

    /// `len` bytes at `offset`, which must lie within the bytes used.
    fn read(&self, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
        read_within(&self.file, offset, len, self.bytes_used, "used")
    }

    /// `input` inflated into at most `limit` bytes: more is an error, never an allocation.
    fn inflate(&self, input: &[u8], limit: usize) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(limit);
        if self.compressor == ZSTD {
            one_zstd_frame(input)?;
            zstd::bulk::Decompressor::new()
                .and_then(|mut z| z.decompress_to_buffer(input, &mut out))
                .with_context(|| format!("inflating a zstd block (to at most {limit} bytes)"))?;
            return Ok(out);
        }
        out.resize(limit, 0);
        let mut zlib = flate2::Decompress::new(true);
        let status = zlib
            .decompress(input, &mut out, flate2::FlushDecompress::Finish)
            .context("inflating a zlib block")?;
        ensure!(
            status == flate2::Status::StreamEnd,
            "a zlib block does not end within {limit} bytes"
        );
        out.truncate(usize::try_from(zlib.total_out()).unwrap_or(limit));
        Ok(out)
    }

    /// The metadata block at `at`, inflated, and where the next one starts.
    fn metadata_block(&mut self, at: u64) -> anyhow::Result<Rc<(Vec<u8>, u64)>> {
        if let Some(block) = self.cache.get(&at) {
            return Ok(block.clone());
        }
        let header = u16_at(&self.read(at, 2)?, 0);
        let stored = usize::from(header & !METADATA_UNCOMPRESSED);
        ensure!(
            (1..=METADATA_SIZE).contains(&stored),
            "a metadata block at {at} of {stored} bytes"
        );
        let data_at = at + 2;
        let raw = self.read(data_at, stored)?;
        let data = if header & METADATA_UNCOMPRESSED != 0 {
            raw
        } else {
            self.inflate(&raw, METADATA_SIZE)?
        };
        let block = Rc::new((data, data_at + stored as u64));
        if self.cache.len() >= CACHED_BLOCKS {
            self.cache.clear();
        }
        self.cache.insert(at, block.clone());
        Ok(block)
    }

    /// `len` bytes of metadata from `at` on, across blocks; moves `at` past them.
    fn metadata(&mut self, at: &mut Position, len: usize) -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let block = self.metadata_block(at.block)?;
            let (data, next) = (&block.0, block.1);
            ensure!(
                at.offset < data.len(),
                "metadata read at offset {} of a {}-byte block",
                at.offset,
                data.len()
            );
            let take = (len - bytes.len()).min(data.len() - at.offset);
            bytes.extend_from_slice(&data[at.offset..at.offset + take]);
            at.offset += take;
            if at.offset == data.len() {
                *at = Position {
                    block: next,
                    offset: 0,
                };
            }
        }
        Ok(bytes)
    }

    /// Where a table-relative block and offset are.
    fn position(&self, table: u64, block: u64, offset: usize) -> anyhow::Result<Position> {
        let block = table
            .checked_add(block)
            .context("a metadata reference past any image")?;
        ensure!(
            offset < METADATA_SIZE,
            "a metadata reference at offset {offset}"
        );
        Ok(Position { block, offset })
    }

    /// The uid or gid at `index` of the id table (a table of metadata block positions, each
    /// block holding 2048 ids).
    fn id(&mut self, index: u16) -> anyhow::Result<u32> {
        ensure!(
            index < self.ids,
            "an owner id {index} past the {} ids",
            self.ids
        );
        let entry = self.table_entry(self.id_table, u64::from(index), 4, "an id table")?;
        Ok(u32_at(&entry, 0))
    }

    /// The fragment `index`'s block position and size word (16-byte entries, 512 a block).
    fn fragment(&mut self, index: u32) -> anyhow::Result<(u64, u32)> {
        ensure!(
            index < self.fragments,
            "fragment {index} past the {} fragments",
            self.fragments
        );
        let entry = self.table_entry(
            self.fragment_table,
            u64::from(index),
            16,
            "a fragment table",
        )?;
        Ok((u64_at(&entry, 0), u32_at(&entry, 8)))
    }

    /// Entry `index`, of `size` bytes, of the lookup table at `table` (`what`, for errors): the
    /// table lists the positions of the metadata blocks that hold the entries, packed.
    fn table_entry(
        &mut self,
        table: u64,
        index: u64,
        size: usize,
        what: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let byte = index * size as u64;
        let pointer = table
            .checked_add(byte / METADATA_SIZE as u64 * 8)
            .with_context(|| format!("{what} past any image"))?;
        let block = u64_at(&self.read(pointer, 8)?, 0);
        let mut at = Position {
            block,
            offset: (byte % METADATA_SIZE as u64) as usize,
        };
        self.metadata(&mut at, size)
    }
}

fn compressor_name(id: u16) -> String {
    match id {
        1 => "zlib".into(),
        2 => "lzma".into(),
        3 => "lzo".into(),
        4 => "xz".into(),
        5 => "lz4".into(),
        6 => "zstd".into(),
        other => format!("compressor {other}"),
    }
}

/// The kernel's `zstd_uncompress` stops at the end of the first frame and reads on in the next
/// block: a block of more than one frame (or less) reads differently there.
fn one_zstd_frame(input: &[u8]) -> anyhow::Result<()> {
    let frame = zstd::zstd_safe::find_frame_compressed_size(input);
    ensure!(
        frame == Ok(input.len()),
        "a zstd block of {} bytes is not one frame",
        input.len()
    );
    Ok(())
}

/// `strcmp`'s view of a name: up to its first NUL.
fn c_string(name: &[u8]) -> &[u8] {
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    &name[..end]
}

mod inodes;
mod lookup;
mod mount;
mod numbers;

use mount::Tables;

impl Tree for Squashfs {
    fn root(&mut self) -> anyhow::Result<Node> {
        self.node(self.root, String::new())
    }

    fn lookup(&mut self, dir: &Node, name: &str) -> anyhow::Result<Lookup> {
        directory_within_limit(dir)?;
        let inode = self.inode(dir.id)?;
        let listed = match self.list(&inode, name.as_bytes())? {
            Ok(listed) => listed,
            Err(refused) => return Ok(refused),
        };
        let kernel = self.kernel_lookup(&inode, name.as_bytes())?;
        let path = if dir.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", dir.path)
        };
        match (listed, kernel) {
            (None, None) => Ok(Lookup::Missing),
            (Some(entry), Some(found)) if entry.inode == found => {
                let node = self.node(entry.inode, path)?;
                let inode = self.inode(entry.inode)?;
                // Types 1-7 are the basic ones, 8-14 the extended forms of the same; an entry's
                // type is the directory's word alone, so 0 or past 14 is refused.
                let basic = |kind: u16| kind.checked_sub(1).filter(|k| *k < 14).map(|k| k % 7);
                if basic(entry.kind).is_none() || basic(entry.kind) != basic(inode.kind) {
                    return Ok(Lookup::Ambiguous(format!(
                        "lists {name:?} as type {} but its inode is type {}",
                        entry.kind, inode.kind
                    )));
                }
                Ok(Lookup::Found(node))
            }
            (listed, _) => Ok(Lookup::Ambiguous(format!(
                "{} {name:?}, but its index and sorted order lead {}",
                if listed.is_some() {
                    "lists"
                } else {
                    "does not list"
                },
                if listed.is_some() {
                    "elsewhere"
                } else {
                    "to one"
                }
            ))),
        }
    }

    fn link_target(&mut self, link: &Node) -> anyhow::Result<Vec<u8>> {
        let inode = self.inode(link.id)?;
        let len = usize::try_from(inode.size.min(4096)).unwrap_or(4096);
        let mut at = inode.rest;
        self.metadata(&mut at, len)
    }

    fn read_head(&mut self, file: &Node, limit: usize) -> anyhow::Result<Vec<u8>> {
        let inode = self.inode(file.id)?;
        self.file_head(&inode, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zstd_block_is_one_whole_frame() {
        let frame = zstd::bulk::compress(b"the inode", 3).unwrap();
        one_zstd_frame(&frame).unwrap();
        let two = [zstd::bulk::compress(b"", 3).unwrap(), frame.clone()].concat();
        let refused = one_zstd_frame(&two).unwrap_err().to_string();
        assert!(refused.contains("is not one frame"), "{refused}");
        assert!(
            one_zstd_frame(&frame[..frame.len() - 1]).is_err(),
            "a cut frame"
        );
    }

    #[test]
    fn names_compare_as_c_strings() {
        assert_eq!(c_string(b"alloy\0x"), b"alloy");
        assert_eq!(c_string(b"alloy"), b"alloy");
        assert_eq!(compressor_name(4), "xz");
        assert_eq!(compressor_name(9), "compressor 9");
    }
}
