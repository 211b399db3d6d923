//! erofs read by hand, because erofs-utils 1.5 can only extract whole trees (trusting the names
//! it writes: a crafted `../` or `/` in a name writes anywhere on the host). This reads only the
//! directories on the way and the first bytes of a file, from the image file, in memory:
//!
//! - the superblock at 1024: block size, the root's nid, where inodes start (`meta_blkaddr`);
//! - inodes (32-byte compact or 64-byte extended) at `meta_blkaddr * block + nid * 32`;
//! - directories and links stored plain or with an inline tail (erofs-utils never compresses
//!   them): blocks of 12-byte dirents (nid, name offset, type) followed by the names;
//! - a compressed file's first bytes: its first logical cluster's index (full or compacted)
//!   gives the physical block, whose LZ4 stream is decoded only as far as needed.
//!
//! Layout as in Linux's `fs/erofs/erofs_fs.h` and `zmap.c`. Anything else (chunked files,
//! LZMA, tail packing, fragments) is refused as unsupported: erofs-utils 1.5 with our options
//! (`-zlz4hc -C131072`) never writes it.
//!
//! The kernel's lookup (`namei.c`) binary-searches a directory's blocks by their first names,
//! then the entries of one block, comparing names up to a NUL: it finds only what is sorted.
//! So every directory on the way is read whole, and its names must sort strictly (no
//! duplicates) across the directory, hold no NUL, `/` or newline: then the binary search and
//! our reading agree. Like the kernel, the superblock's checksum is verified where the image
//! has one, and inline data may not cross its block.

use std::fs::File;

use anyhow::{bail, ensure, Context};

use super::{bad_name, crc32c, directory_within_limit, read_within, Lookup, Node, Tree};
use crate::util::le::{u16_at, u32_at, u64_at};

mod compressed;
mod lz4;

const SUPERBLOCK: u64 = 1024;

/// Superblock `feature_compat`: the superblock's block carries a crc32c.
const SB_CHECKSUM: u32 = 0x1;

/// `i_format`'s data layouts.
const FLAT_PLAIN: u16 = 0;
const COMPRESSED_FULL: u16 = 1;
const FLAT_INLINE: u16 = 2;
const COMPRESSED_COMPACT: u16 = 3;
/// Chunk-based, the last layout there is.
const LAST_LAYOUT: u16 = 4;
/// `i_format`'s bits every kernel reads the same: the version (bit 0) and the layout (1-3).
const I_FORMAT_KNOWN: u16 = 0xF;

/// Superblock `feature_incompat`: LZ4 streams end-aligned in their physical cluster.
const ZERO_PADDING: u32 = 0x1;
/// Superblock `feature_incompat`: compression configurations follow the superblock (and big
/// physical clusters may be used).
const COMPRESSION_CONFIGS: u32 = 0x2;
/// The bit of LZ4 in the superblock's available algorithms, and its configuration's length.
const LZ4: u16 = 0;
const LZ4_CONFIG_LEN: u16 = 14;
/// `Z_EROFS_PCLUSTER_MAX_SIZE` (1 MiB) in 4 KiB blocks.
const MAX_PCLUSTER_BLOCKS: u16 = 256;

pub struct Erofs {
    file: File,
    len: u64,
    block_bits: u32,
    meta_offset: u64,
    root_nid: u64,
    zero_padding: bool,
}

/// One inode as stored.
#[derive(Clone, Debug)]
struct Inode {
    /// Where it starts in the image.
    offset: u64,
    layout: u16,
    /// Inode plus inline xattrs: where inline data (or a compressed file's map) starts.
    header_len: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    /// `raw_blkaddr` for flat files, unused for compressed ones.
    blkaddr: u32,
}

impl Erofs {
    pub fn open(file: File) -> anyhow::Result<Erofs> {
        let len = file.metadata().context("reading the image's size")?.len();
        let mut erofs = Erofs {
            file,
            len,
            block_bits: 12,
            meta_offset: 0,
            root_nid: 0,
            zero_padding: false,
        };
        let sb = erofs.read(SUPERBLOCK, 128)?;
        ensure!(u32_at(&sb, 0) == 0xE0F5_E1E2, "no erofs superblock");
        let block_bits = u32::from(sb[12]);
        ensure!(
            block_bits == 12,
            "the superblock says blocks of 2^{block_bits} bytes (ours have 4 KiB, which every \
             host's kernel reads)"
        );
        erofs.block_bits = block_bits;
        if u32_at(&sb, 8) & SB_CHECKSUM != 0 {
            erofs.check_superblock_checksum(u32_at(&sb, 4))?;
        }
        erofs.check_layout_fields(&sb)?;
        erofs.root_nid = u64::from(u16_at(&sb, 14));
        erofs.meta_offset = u64::from(u32_at(&sb, 40)) << block_bits;
        erofs.zero_padding = u32_at(&sb, 80) & ZERO_PADDING != 0;
        Ok(erofs)
    }

    /// What mkfs.erofs 1.5 writes for ours, and a kernel refuses or reads in a way inspect
    /// does not (`erofs_read_superblock`, `z_erofs_parse_cfgs`): extra superblock slots,
    /// directory blocks larger than a block, any incompatible feature but LZ4's zero padding and
    /// compression configurations (48-bit layouts move the root, fragments and packed inodes
    /// serve a file from elsewhere, a metabox moves the metadata), and a configuration other
    /// than LZ4 alone with physical clusters the kernel accepts.
    fn check_layout_fields(&self, sb: &[u8]) -> anyhow::Result<()> {
        let (extra_slots, dir_block_bits) = (sb[13], sb[90]);
        ensure!(
            extra_slots == 0 && dir_block_bits == 0,
            "the superblock has {extra_slots} extra slots and directory blocks of 2^{dir_block_bits} \
             blocks (ours have neither)"
        );
        let incompat = u32_at(sb, 80);
        ensure!(
            incompat & !(ZERO_PADDING | COMPRESSION_CONFIGS) == 0,
            "the image has incompatible features {incompat:#x}, more than ours (zero padding \
             and compression configurations) and read differently by a host's kernel"
        );
        if incompat & COMPRESSION_CONFIGS == 0 {
            return Ok(());
        }
        let algorithms = u16_at(sb, 84);
        ensure!(
            algorithms == 1 << LZ4,
            "the image's compression algorithms are {algorithms:#x}, not LZ4 alone"
        );
        // Right after the 128-byte superblock: a 2-byte length, then LZ4's configuration.
        let config = self.read(SUPERBLOCK + 128, 6)?;
        let (len, max_blocks) = (u16_at(&config, 0), u16_at(&config, 4));
        ensure!(
            len >= LZ4_CONFIG_LEN && max_blocks <= MAX_PCLUSTER_BLOCKS,
            "the image's LZ4 configuration ({len} bytes, physical clusters of up to {max_blocks} \
             blocks) is one a host's kernel refuses"
        );
        Ok(())
    }

    fn block_size(&self) -> u64 {
        1 << self.block_bits
    }

    /// The kernel's check: crc32c (seeded with all ones, not inverted at the end) of the
    /// superblock's block from the superblock on, with the checksum field zeroed.
    fn check_superblock_checksum(&self, expected: u32) -> anyhow::Result<()> {
        let len = self.block_size().saturating_sub(SUPERBLOCK).max(128);
        let mut bytes = self.read(SUPERBLOCK, len as usize)?;
        bytes[4..8].fill(0);
        let crc = crc32c(!0, &[&bytes]);
        ensure!(
            crc == expected,
            "the erofs superblock's checksum is {crc:#010x}, not the {expected:#010x} it says \
             (a host's kernel will not mount it)"
        );
        Ok(())
    }

    /// `len` bytes at `offset`, which must lie inside the image.
    fn read(&self, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
        read_within(&self.file, offset, len, self.len, "in the image")
    }

    fn inode(&self, nid: u64) -> anyhow::Result<Inode> {
        let offset = nid
            .checked_mul(32)
            .and_then(|o| o.checked_add(self.meta_offset))
            .context("an inode number past any image")?;
        let compact = self.read(offset, 32)?;
        let format = u16_at(&compact, 0);
        // As the kernel's `erofs_read_inode`, which answers EOPNOTSUPP for a bit it does not
        // know or a layout past the last; stricter, as bit 4 (one link, and on 6.15+ the high
        // bits of a 48-bit block address) means one thing to newer kernels and EOPNOTSUPP to
        // older ones, and our packer never sets it.
        ensure!(
            format & !I_FORMAT_KNOWN == 0,
            "inode {nid}: i_format {format:#x} has bits a host's kernel may not read as here"
        );
        let extended = format & 1 == 1;
        let layout = (format >> 1) & 0x7;
        ensure!(
            layout <= LAST_LAYOUT,
            "inode {nid}: data layout {layout} is none a host's kernel knows"
        );
        let xattr_count = u64::from(u16_at(&compact, 2));
        let xattr_len = if xattr_count == 0 {
            0
        } else {
            12 + (xattr_count - 1) * 4
        };
        let mode = u32::from(u16_at(&compact, 4));
        let blkaddr = u32_at(&compact, 16);
        let (inode_len, size, uid, gid) = if extended {
            let b = self.read(offset, 64)?;
            (64, u64_at(&b, 8), u32_at(&b, 24), u32_at(&b, 28))
        } else {
            (
                32,
                u64::from(u32_at(&compact, 8)),
                u32::from(u16_at(&compact, 24)),
                u32::from(u16_at(&compact, 26)),
            )
        };
        let header_len = inode_len + xattr_len;
        Ok(Inode {
            offset,
            layout,
            header_len,
            mode,
            uid,
            gid,
            size,
            blkaddr,
        })
    }

    fn node(&self, nid: u64, path: String) -> anyhow::Result<Node> {
        let inode = self.inode(nid)?;
        Ok(Node {
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            id: nid,
            path,
            link: None,
        })
    }

    /// Bytes `offset..offset + len` of an uncompressed inode's data: whole blocks from
    /// `raw_blkaddr`, and with an inline layout the last (partial) block right after the inode.
    fn read_flat(&self, inode: &Inode, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
        ensure!(
            inode.layout == FLAT_PLAIN || inode.layout == FLAT_INLINE,
            "data layout {} is not supported here (an uncompressed layout was expected)",
            inode.layout
        );
        let end = offset
            .checked_add(len as u64)
            .filter(|end| *end <= inode.size)
            .context("a read past the end of a file")?;
        let block = self.block_size();
        // Bytes stored in whole blocks (saturating: a crafted size may be near 2^64).
        let blocks = inode.size.div_ceil(block);
        let in_blocks = if inode.layout == FLAT_INLINE {
            blocks.saturating_sub(1).saturating_mul(block)
        } else {
            blocks.saturating_mul(block)
        };
        let mut bytes = Vec::with_capacity(len);
        if offset < in_blocks {
            let until = end.min(in_blocks);
            let start = (u64::from(inode.blkaddr) << self.block_bits).saturating_add(offset);
            bytes.extend(self.read(start, (until - offset) as usize)?);
        }
        if end > in_blocks {
            // As the kernel (`erofs_map_blocks_flatmode`): the inline tail must end within
            // the block it starts in.
            let tail_at = inode.offset.saturating_add(inode.header_len);
            let tail = inode.size - in_blocks;
            ensure!(
                tail_at % block + tail <= block,
                "an inode's inline data ({tail} bytes at {tail_at}) crosses its block"
            );
            let from = offset.max(in_blocks);
            let start = tail_at.saturating_add(from - in_blocks);
            bytes.extend(self.read(start, (end - from) as usize)?);
        }
        Ok(bytes)
    }

    /// Looks `name` up in `dir` (at most [`super::DIRECTORY_LIMIT`] bytes), reading it whole,
    /// a block at a time: every name must be one a directory may hold (see [`bad_name`]) and
    /// sort strictly after the one before it.
    fn find(&self, dir: &Inode, dir_node: &Node, name: &[u8]) -> anyhow::Result<Lookup> {
        directory_within_limit(dir_node)?;
        let block = self.block_size();
        let mut dots = [0; 2];
        let mut previous: Vec<u8> = Vec::new();
        let mut found = None;
        let mut offset = 0;
        while offset < dir.size {
            let len = block.min(dir.size - offset) as usize;
            let bytes = self.read_flat(dir, offset, len)?;
            for (entry, nid) in parse_dirents(&bytes)? {
                if bad_name(&entry, &mut dots) {
                    return Ok(Lookup::BadName(entry));
                }
                if entry <= previous {
                    return Ok(Lookup::Ambiguous(format!(
                        "lists {:?} after {:?}: its names are not in order, and a host's \
                         kernel finds names by binary search",
                        String::from_utf8_lossy(&entry),
                        String::from_utf8_lossy(&previous)
                    )));
                }
                if entry == name {
                    found = Some(nid);
                }
                previous = entry;
            }
            offset += block;
        }
        let path = if dir_node.path.is_empty() {
            String::from_utf8_lossy(name).into_owned()
        } else {
            format!("{}/{}", dir_node.path, String::from_utf8_lossy(name))
        };
        match found {
            None => Ok(Lookup::Missing),
            Some(nid) => Ok(Lookup::Found(self.node(nid, path)?)),
        }
    }
}

/// The entries of one directory block: 12-byte dirents (nid u64, name offset u16, type u8,
/// reserved u8), the first one's name offset telling how many; each name runs to the next
/// one's offset, the last to the end of the block or the first NUL.
fn parse_dirents(block: &[u8]) -> anyhow::Result<Vec<(Vec<u8>, u64)>> {
    ensure!(
        block.len() >= 12,
        "a directory block of {} bytes",
        block.len()
    );
    let first = usize::from(u16_at(block, 8));
    ensure!(
        first >= 12 && first % 12 == 0 && first <= block.len(),
        "a directory block whose first name starts at {first}"
    );
    let count = first / 12;
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let nid = u64_at(block, i * 12);
        let start = usize::from(u16_at(block, i * 12 + 8));
        let end = if i + 1 < count {
            usize::from(u16_at(block, (i + 1) * 12 + 8))
        } else {
            block.len()
        };
        ensure!(
            first <= start && start <= end && end <= block.len(),
            "a directory entry whose name lies at {start}..{end}"
        );
        let mut name = &block[start..end];
        if i + 1 == count {
            let nul = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            name = &name[..nul];
        }
        entries.push((name.to_vec(), nid));
    }
    Ok(entries)
}

impl Tree for Erofs {
    fn root(&mut self) -> anyhow::Result<Node> {
        self.node(self.root_nid, String::new())
    }

    fn lookup(&mut self, dir: &Node, name: &str) -> anyhow::Result<Lookup> {
        let inode = self.inode(dir.id)?;
        self.find(&inode, dir, name.as_bytes())
    }

    fn link_target(&mut self, link: &Node) -> anyhow::Result<Vec<u8>> {
        let inode = self.inode(link.id)?;
        let len = inode.size.min(4096) as usize;
        self.read_flat(&inode, 0, len)
    }

    fn read_head(&mut self, file: &Node, limit: usize) -> anyhow::Result<Vec<u8>> {
        let inode = self.inode(file.id)?;
        let want = usize::try_from(inode.size).unwrap_or(usize::MAX).min(limit);
        match inode.layout {
            FLAT_PLAIN | FLAT_INLINE => self.read_flat(&inode, 0, want),
            COMPRESSED_FULL | COMPRESSED_COMPACT => self.read_compressed_head(&inode, want),
            other => bail!(
                "/{}: data layout {other} (chunked) is not supported",
                file.path
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of one block whose superblock is ours but for `change`; what opening it says.
    fn open_with(change: impl FnOnce(&mut [u8])) -> anyhow::Result<Erofs> {
        let mut image = vec![0u8; 4096];
        let sb = &mut image[1024..1152];
        sb[..4].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        sb[12] = 12;
        sb[80] = 0x3;
        sb[84] = 1;
        // LZ4's configuration: 14 bytes, up to 32 blocks a physical cluster.
        image[1152..1158].copy_from_slice(&[14, 0, 0xff, 0xff, 32, 0]);
        change(&mut image[1024..1160]);
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &image).unwrap();
        Erofs::open(file)
    }

    #[test]
    fn only_our_layout_is_read() {
        open_with(|_| {}).unwrap();
        for (what, change, says) in [
            ("fragments", (80, 0x23), "incompatible features 0x23"),
            ("48-bit layout", (80, 0x83), "incompatible features 0x83"),
            ("8 KiB blocks", (12, 13), "blocks of 2^13 bytes"),
            ("extra slots", (13, 1), "1 extra slots"),
            ("no algorithm", (84, 0), "algorithms are 0x0"),
            ("an unknown one", (84, 0x11), "algorithms are 0x11"),
            ("huge clusters", (133, 0xff), "up to 65312 blocks"),
        ] {
            let refused = open_with(|sb| sb[change.0] = change.1).err();
            let refused = refused.map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains(says), "{what}: {refused:?}");
        }
    }

    fn dirent_block(names: &[&[u8]]) -> Vec<u8> {
        let mut block = Vec::new();
        let mut offset = names.len() * 12;
        for (i, name) in names.iter().enumerate() {
            block.extend((i as u64 + 36).to_le_bytes());
            block.extend((offset as u16).to_le_bytes());
            block.extend([1, 0]);
            offset += name.len();
        }
        for name in names {
            block.extend(*name);
        }
        block
    }

    #[test]
    fn directory_blocks_give_names_and_nids() {
        let mut block = dirent_block(&[b".", b"..", b"alloy"]);
        block.resize(64, 0);
        let entries = parse_dirents(&block).unwrap();
        let names: Vec<&[u8]> = entries.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, [&b"."[..], b"..", b"alloy"]);
        assert_eq!(entries[2].1, 38);
        let bad = |names: &[&[u8]]| {
            let mut dots = [0; 2];
            let entries = parse_dirents(&dirent_block(names)).unwrap();
            entries
                .into_iter()
                .find(|(name, _)| bad_name(name, &mut dots))
                .map(|(name, _)| name)
        };
        assert_eq!(bad(&[b".", b"..", b"alloy"]), None);
        assert_eq!(
            bad(&[b".", b"..", b"../../tmp/x"]),
            Some(b"../../tmp/x".to_vec())
        );
        assert_eq!(bad(&[b".", b"..", b".."]), Some(b"..".to_vec()));
        assert_eq!(bad(&[b".", b"a\0b", b"c"]), Some(b"a\0b".to_vec()));
        assert_eq!(bad(&[b".", b"", b"c"]), Some(Vec::new()));

        let mut broken = dirent_block(&[b".", b".."]);
        broken[8] = 200;
        assert!(parse_dirents(&broken).is_err());
    }
}
