//! A compressed file's first bytes, read as the kernel's `fs/erofs/zmap.c` maps them: its index
//! of logical clusters (4 KiB of the file each) gives the first extent's physical cluster
//! (where, how many blocks) and its length (up to the next head cluster). The whole extent is
//! decoded, not only the bytes wanted: a host's kernel decodes as much of it as a read (with
//! read-ahead) covers and refuses the read where the data is damaged, so inspect refuses any
//! damage in it.

use anyhow::{bail, ensure, Context};

use super::lz4::decode_block;
use super::{Erofs, Inode, COMPRESSED_COMPACT, COMPRESSED_FULL};
use crate::util::le::{u16_at, u32_at};

/// `h_advise` bits of a compressed inode's map header.
const ADVISE_COMPACTED_2B: u16 = 0x1;
const ADVISE_BIG_PCLUSTER_1: u16 = 0x2;
const ADVISE_BIG_PCLUSTER_2: u16 = 0x4;
/// The options read here; tail packing, fragments, interlaced clusters and extents are not
/// (erofs-utils 1.5 with our options writes none).
const ADVISE_KNOWN: u16 = ADVISE_COMPACTED_2B | ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2;

/// Logical cluster types.
const CLUSTER_PLAIN: u32 = 0;
const CLUSTER_HEAD1: u32 = 1;
const CLUSTER_NONHEAD: u32 = 2;
const CLUSTER_HEAD2: u32 = 3;

/// In a non-head cluster right after a head: the head's physical cluster's block count follows
/// (`Z_EROFS_LI_D0_CBLKCNT`).
const BLOCK_COUNT_FLAG: u32 = 1 << 11;
/// The bits of an entry below its type (`lobits`: the cluster offset, or a distance).
const LOW_BITS: u32 = 12;
/// Logical clusters are 4 KiB (`z_logical_clusterbits`); mkfs.erofs makes no others.
const CLUSTER_BITS: u32 = 12;

/// The most blocks one physical cluster may take here: ours take 32 (128 KiB).
const PCLUSTER_BLOCKS_LIMIT: u32 = 256;
/// The most bytes the first extent may decode to here: erofs-utils 1.5 makes them under 1 MiB.
const EXTENT_LIMIT: u64 = 4 << 20;

/// A compressed inode's index of logical clusters.
struct Index {
    layout: u16,
    advise: u16,
    /// Where the entries start (for the full layout, where entry 0 is).
    entries: u64,
    /// Compact layout: how many 4-byte entries come first, then how many 2-byte ones.
    initial_4b: u64,
    packed_2b: u64,
    /// How many logical clusters the file has.
    total: u64,
}

/// One logical cluster's entry.
#[derive(Clone, Copy)]
struct Cluster {
    kind: u32,
    /// A head's offset in its cluster, or a non-head's distance (or block count).
    low: u32,
    /// Where a head's physical cluster starts, for the first cluster of a pack.
    block: u32,
}

impl Erofs {
    /// The first `want` bytes of a compressed file, from its first extent decoded whole.
    pub(super) fn read_compressed_head(
        &self,
        inode: &Inode,
        want: usize,
    ) -> anyhow::Result<Vec<u8>> {
        ensure!(
            self.zero_padding,
            "compressed data without the 0padding feature (ours always have it)"
        );
        let index = self.index(inode)?;
        let head = self.cluster(&index, 0)?;
        ensure!(
            head.low == 0,
            "the first logical cluster starts {} bytes in (the kernel refuses it)",
            head.low
        );
        let big = match head.kind {
            CLUSTER_HEAD1 => index.advise & ADVISE_BIG_PCLUSTER_1 != 0,
            CLUSTER_PLAIN | CLUSTER_HEAD2 => index.advise & ADVISE_BIG_PCLUSTER_2 != 0,
            other => bail!("the first logical cluster has type {other}, not a head"),
        };
        let (blocks, extent_len) = self.first_extent(&index, inode.size, big)?;
        let start = u64::from(head.block) << self.block_bits;
        let len = u64::from(blocks) << self.block_bits;
        ensure!(
            start.checked_add(len).is_some_and(|end| end <= self.len),
            "the first physical cluster ({blocks} blocks at {start}) lies past the image's end"
        );
        let input = self.read(start, len as usize)?;
        let decoded = if head.kind == CLUSTER_PLAIN {
            input
        } else {
            // LZ4, whichever head type: `index` allows no other algorithm.
            let block = self.block_size() as usize;
            let skip = input[..block.min(input.len())]
                .iter()
                .position(|b| *b != 0)
                .context("the first compressed cluster starts with a block of zeros")?;
            decode_block(&input[skip..], extent_len as usize)?
        };
        Ok(decoded[..want.min(decoded.len())].to_vec())
    }

    fn index(&self, inode: &Inode) -> anyhow::Result<Index> {
        let map_at = (inode.offset + inode.header_len).next_multiple_of(8);
        let map = self.read(map_at, 8)?;
        let advise = u16_at(&map, 4);
        ensure!(
            advise & !ADVISE_KNOWN == 0,
            "compression options {advise:#x} are not supported (tail packing, fragments, \
             interlaced clusters or extents)"
        );
        // `z_erofs_fill_inode_lazy`: a compact index has big physical clusters for both heads
        // or for neither.
        let big = [ADVISE_BIG_PCLUSTER_1, ADVISE_BIG_PCLUSTER_2].map(|bit| advise & bit != 0);
        ensure!(
            inode.layout != COMPRESSED_COMPACT || big[0] == big[1],
            "a compact index with big physical clusters for one head only (the kernel refuses it)"
        );
        // Logical clusters of one block, as ours; the high bit would say the whole file lies
        // in the packed inode (fragments).
        ensure!(
            map[7] == 0,
            "logical cluster bits {:#x} are not supported (4 KiB clusters only)",
            map[7]
        );
        // LZ4 for both head types, the one algorithm the image offers.
        ensure!(
            map[6] == 0,
            "compression algorithms {:#x} for the heads, not LZ4",
            map[6]
        );
        let after_map = map_at + 8;
        let total = inode.size.div_ceil(1 << CLUSTER_BITS);
        let (entries, initial_4b, packed_2b) = match inode.layout {
            // 8 bytes per logical cluster, after 8 more bytes of padding.
            COMPRESSED_FULL => (after_map + 8, 0, 0),
            // 4-byte entries in packs of 2 until the 32-byte alignment that packs of 16
            // 2-byte entries need; then those; then 4-byte ones again.
            COMPRESSED_COMPACT => {
                let mut initial_4b = (32 - after_map % 32) / 4;
                if initial_4b == 8 {
                    initial_4b = 0;
                }
                let packed_2b = if advise & ADVISE_COMPACTED_2B != 0 && initial_4b < total {
                    (total - initial_4b) / 16 * 16
                } else {
                    0
                };
                (after_map, initial_4b, packed_2b)
            }
            other => bail!("data layout {other} is not a compressed one"),
        };
        Ok(Index {
            layout: inode.layout,
            advise,
            entries,
            initial_4b,
            packed_2b,
            total,
        })
    }

    /// Logical cluster `n`'s entry (`z_erofs_load_full_lcluster`,
    /// `z_erofs_load_compact_lcluster`).
    fn cluster(&self, index: &Index, n: u64) -> anyhow::Result<Cluster> {
        ensure!(n < index.total, "logical cluster {n} past the file's end");
        if index.layout == COMPRESSED_FULL {
            // advise (type in bits 0-1), cluster offset, then a block address or distances.
            let entry = self.read(index.entries + n * 8, 8)?;
            let kind = u32::from(u16_at(&entry, 0)) & 3;
            let low = if kind == CLUSTER_NONHEAD {
                u32::from(u16_at(&entry, 4))
            } else {
                u32::from(u16_at(&entry, 2))
            };
            return Ok(Cluster {
                kind,
                low,
                block: u32_at(&entry, 4),
            });
        }
        let (at, shift) = if n < index.initial_4b {
            (index.entries + n * 4, 2)
        } else if n < index.initial_4b + index.packed_2b {
            let past = index.entries + index.initial_4b * 4;
            (past + (n - index.initial_4b) * 2, 1)
        } else {
            let past = index.entries + index.initial_4b * 4 + index.packed_2b * 2;
            (past + (n - index.initial_4b - index.packed_2b) * 4, 2)
        };
        // A pack: `count` entries of `bits` bits each, then its first head's block address.
        let (count, bits) = if shift == 2 { (2u64, 16u64) } else { (16, 14) };
        let pack_len = count << shift;
        // Packs are aligned to their length in the image (the 4-byte region starts 8-aligned,
        // the 2-byte one 32-aligned), as the kernel finds them.
        let pack_at = at - at % pack_len;
        let pack = self.read(pack_at, pack_len as usize)?;
        let i = (at - pack_at) >> shift;
        let bit = (bits * i) as usize;
        let word = u32_at(&pack, bit / 8) >> (bit % 8);
        let big = index.advise & ADVISE_BIG_PCLUSTER_1 != 0;
        Ok(Cluster {
            kind: (word >> LOW_BITS) & 3,
            low: word & ((1 << LOW_BITS) - 1),
            // For the pack's first entry; ours reads no other head's.
            block: u32_at(&pack, pack_len as usize - 4).wrapping_add(u32::from(!big)),
        })
    }

    /// The first extent's physical cluster size in blocks and its length once decoded
    /// (`z_erofs_get_extent_compressedlen`, and the distance to the next head).
    fn first_extent(&self, index: &Index, size: u64, big: bool) -> anyhow::Result<(u32, u64)> {
        ensure!(
            index.total > 1,
            "a compressed file of one logical cluster (mkfs.erofs stores those plainly)"
        );
        let next = self.cluster(index, 1)?;
        let blocks = if !big || next.kind != CLUSTER_NONHEAD {
            1
        } else {
            ensure!(
                next.low & BLOCK_COUNT_FLAG != 0,
                "the second logical cluster does not give the first physical cluster's size"
            );
            next.low & !BLOCK_COUNT_FLAG
        };
        ensure!(
            (1..=PCLUSTER_BLOCKS_LIMIT).contains(&blocks),
            "the first physical cluster takes {blocks} blocks (1 to {PCLUSTER_BLOCKS_LIMIT} \
             are read)"
        );
        let mut end = size;
        for n in 1..index.total {
            ensure!(
                n << CLUSTER_BITS <= EXTENT_LIMIT,
                "the first extent decodes to more than {EXTENT_LIMIT} bytes"
            );
            let cluster = if n == 1 {
                next
            } else {
                self.cluster(index, n)?
            };
            if cluster.kind != CLUSTER_NONHEAD {
                end = (n << CLUSTER_BITS) | u64::from(cluster.low);
                break;
            }
        }
        ensure!(
            end <= size && end <= EXTENT_LIMIT,
            "the first extent ends at {end}, past the file's {size} bytes or what is read"
        );
        Ok((blocks, end))
    }
}
