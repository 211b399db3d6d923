//! What the kernel's ext4 driver reads on the way to a file, read the way it reads it: the
//! superblock's geometry, the group descriptors, an inode with every check `__ext4_iget` makes
//! (`fs/ext4/inode.c`), and the extent tree a read goes through with every check the kernel
//! makes of its nodes (`__ext4_ext_check` in `extents.c`, `ext4_inode_block_valid` in
//! `block_validity.c`). What the kernel would refuse is refused, named. So is what it reads in
//! ways inspect does not (inline data, extended attributes in the inode, block maps, a directory
//! with holes or unwritten extents), and where it checks a little less (which of the group's
//! metadata blocks it protects), the check here is the stricter: that can only refuse an image
//! the kernel reads, never answer for one it does not. Every number from the image is checked
//! before use, and every read stays within the blocks the superblock gives the image.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context};

use crate::image::inspect::crc32c;
use crate::util::le::{u16_at, u32_at};

/// Offsets in `struct ext4_super_block` (`fs/ext4/ext4.h`).
const SUPERBLOCK: u64 = 1024;
const SB_INODES_COUNT: usize = 0x0;
const SB_BLOCKS_COUNT_LO: usize = 0x4;
const SB_FIRST_DATA_BLOCK: usize = 0x14;
const SB_LOG_BLOCK_SIZE: usize = 0x18;
const SB_LOG_CLUSTER_SIZE: usize = 0x1C;
const SB_BLOCKS_PER_GROUP: usize = 0x20;
const SB_CLUSTERS_PER_GROUP: usize = 0x24;
const SB_INODES_PER_GROUP: usize = 0x28;
const SB_REV_LEVEL: usize = 0x4C;
const SB_FIRST_INO: usize = 0x54;
const SB_INODE_SIZE: usize = 0x58;
const SB_FEATURE_COMPAT: usize = 0x5C;
const SB_FEATURE_INCOMPAT: usize = 0x60;
const SB_FEATURE_RO_COMPAT: usize = 0x64;
const SB_UUID: usize = 0x68;
const SB_RESERVED_GDT_BLOCKS: usize = 0xCE;
const SB_LAST_ORPHAN: usize = 0xE8;
const SB_DEF_HASH_VERSION: usize = 0xFC;
const SB_LOG_GROUPS_PER_FLEX: usize = 0x174;
const SB_DESC_SIZE: usize = 0xFE;
const SB_BLOCKS_COUNT_HI: usize = 0x150;
const SB_MIN_EXTRA_ISIZE: usize = 0x15C;
const SB_WANT_EXTRA_ISIZE: usize = 0x15E;
const SB_BACKUP_BGS: usize = 0x24C;
const SB_CHECKSUM_TYPE: usize = 0x175;
const SB_CHECKSUM_SEED: usize = 0x270;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_DIR_INDEX: u32 = 0x20;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
/// The incompatible features inspect reads as the kernel does; a kernel refuses to mount an
/// image with one it does not know, and others (MMP, compression) are not ours.
const INCOMPAT_READ: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_FLEX_BG
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR;
/// Compatible features a mount acts on even read-only, which ours never have: lazy or
/// excluded bitmaps, fast commits, an orphan file (read at mount).
const COMPAT_ACTED_ON: u32 = 0x40 | 0x100 | 0x400 | 0x1000;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// The most block groups an image may have: their descriptors are read into memory (and
/// ext4-view keeps all of them too). A 2 GiB image of 4 KiB blocks has 16; of 1 KiB blocks, 256.
pub const MAX_GROUPS: u64 = 1 << 16;

/// The last default directory hash a mount accepts (`DX_HASH_LAST` is SipHash, which it refuses
/// as a default).
const LAST_DEFAULT_HASH: u8 = 5;

/// The first inodes are the filesystem's own; 2 is the root (`EXT4_ROOT_INO`).
pub const ROOT_INODE: u32 = 2;
const GOOD_OLD_FIRST_INO: u32 = 11;
const GOOD_OLD_INODE_SIZE: usize = 128;

/// Offsets in `struct ext4_inode`.
const I_MODE: usize = 0x0;
const I_UID: usize = 0x2;
const I_SIZE_LO: usize = 0x4;
const I_GID: usize = 0x18;
const I_LINKS_COUNT: usize = 0x1A;
const I_FLAGS: usize = 0x20;
const I_BLOCK: usize = 0x28;
const I_BLOCK_LEN: usize = 60;
const I_GENERATION: usize = 0x64;
const I_FILE_ACL_LO: usize = 0x68;
const I_SIZE_HIGH: usize = 0x6C;
const I_FILE_ACL_HIGH: usize = 0x76;
const I_UID_HIGH: usize = 0x78;
const I_GID_HIGH: usize = 0x7A;
const I_CHECKSUM_LO: usize = 0x7C;
const I_EXTRA_ISIZE: usize = 0x80;
const I_CHECKSUM_HI: usize = 0x82;

/// Inode flags (`EXT4_*_FL`).
pub const FLAG_INDEX: u32 = 0x1000;
const FLAG_ENCRYPT: u32 = 0x800;
const FLAG_EXTENTS: u32 = 0x80000;
const FLAG_VERITY: u32 = 0x100000;
const FLAG_EA_INODE: u32 = 0x200000;
const FLAG_INLINE_DATA: u32 = 0x1000_0000;
const FLAG_CASEFOLD: u32 = 0x4000_0000;

/// Extended attributes stored in the inode, after `i_extra_isize`, start with this magic.
const XATTR_MAGIC: u32 = 0xEA02_0000;

/// Extent trees (`ext4_extents.h`): a 12-byte header, 12-byte entries.
const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENT_ENTRY: usize = 12;
/// `EXT4_MAX_EXTENT_DEPTH`: `ext4_find_extent` refuses deeper trees.
const MAX_EXTENT_DEPTH: u16 = 5;
/// `EXT_INIT_MAX_LEN`: a longer `ee_len` marks an unwritten extent of `ee_len - 32768` blocks.
const EXTENT_INIT_MAX_LEN: u16 = 1 << 15;
/// The most extent-tree nodes read for one inode: a crafted tree may name the same node from
/// many parents. Ours have one or two.
const MAX_EXTENT_NODES: usize = 4096;

/// The superblock's fields that say where things are, checked as the kernel checks them at
/// mount, or more strictly.
#[derive(Debug)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks_count: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    pub inodes_count: u32,
    inodes_per_group: u32,
    first_ino: u32,
    inode_size: usize,
    desc_size: usize,
    groups: u64,
    /// Blocks of group descriptors (`s_gdb_count`), and those reserved after them for growth.
    gdt_blocks: u64,
    reserved_gdt_blocks: u64,
    sparse_super: bool,
    /// `s_backup_bgs` when the image has `sparse_super2`.
    backup_groups: Option<[u32; 2]>,
    wide_descriptors: bool,
    /// Group metadata may lie in any group, not only its own.
    flex_bg: bool,
    pub dir_index: bool,
    pub largedir: bool,
    /// The seed of every metadata checksum, when the image has `metadata_csum`.
    pub checksum_seed: Option<u32>,
}

impl Superblock {
    /// The superblock `sb` of an image of `image_len` bytes.
    pub fn parse(sb: &[u8; 1024], image_len: u64) -> anyhow::Result<Superblock> {
        let compat = u32_at(sb, SB_FEATURE_COMPAT);
        let incompat = u32_at(sb, SB_FEATURE_INCOMPAT);
        let ro_compat = u32_at(sb, SB_FEATURE_RO_COMPAT);
        check_features(compat, incompat, ro_compat)?;
        let log_block_size = u32_at(sb, SB_LOG_BLOCK_SIZE);
        ensure!(
            log_block_size <= 2,
            "the ext4 superblock says blocks of 2^(10+{log_block_size}) bytes"
        );
        let block_size = 1024u64 << log_block_size;
        let wide_descriptors = incompat & INCOMPAT_64BIT != 0;
        let mut blocks_count = u64::from(u32_at(sb, SB_BLOCKS_COUNT_LO));
        if wide_descriptors {
            blocks_count |= u64::from(u32_at(sb, SB_BLOCKS_COUNT_HI)) << 32;
        }
        let claimed = blocks_count.checked_mul(block_size);
        if claimed.is_none_or(|claimed| claimed > image_len) {
            bail!(
                "the ext4 superblock says {blocks_count} blocks of {block_size} bytes, more \
                 than the image's {image_len} bytes (a host's kernel will not mount it)"
            );
        }
        let (first_ino, inode_size) = match u32_at(sb, SB_REV_LEVEL) {
            0 => (GOOD_OLD_FIRST_INO, GOOD_OLD_INODE_SIZE),
            _ => (
                u32_at(sb, SB_FIRST_INO),
                usize::from(u16_at(sb, SB_INODE_SIZE)),
            ),
        };
        ensure!(
            (GOOD_OLD_INODE_SIZE..=block_size as usize).contains(&inode_size)
                && inode_size.is_power_of_two()
                && first_ino >= GOOD_OLD_FIRST_INO,
            "the ext4 superblock says inodes of {inode_size} bytes from inode {first_ino}"
        );
        // As `ext4_inode_info_init` (with extra_isize, which ours have; stricter without):
        // the room inodes should keep past the old 128 bytes must fit in them.
        let extra_room = inode_size - GOOD_OLD_INODE_SIZE;
        for (field, name) in [
            (SB_MIN_EXTRA_ISIZE, "s_min_extra_isize"),
            (SB_WANT_EXTRA_ISIZE, "s_want_extra_isize"),
        ] {
            let value = usize::from(u16_at(sb, field));
            ensure!(
                value <= extra_room,
                "the ext4 superblock's {name} is {value}, more than the {extra_room} bytes an \
                 inode has past 128 (a host's kernel will not mount it)"
            );
        }
        let desc_size = if wide_descriptors {
            usize::from(u16_at(sb, SB_DESC_SIZE))
        } else {
            32
        };
        ensure!(
            (32..=1024).contains(&desc_size)
                && desc_size.is_power_of_two()
                && (!wide_descriptors || desc_size >= 64),
            "the ext4 superblock says group descriptors of {desc_size} bytes"
        );
        let geometry = Geometry::parse(sb, block_size, blocks_count, desc_size)?;
        check_mount_fields(sb, &geometry, inode_size, block_size)?;
        let checksum_seed = checksum_seed(sb, incompat, ro_compat)?;
        Ok(Superblock {
            block_size,
            blocks_count,
            first_data_block: geometry.first_data_block,
            blocks_per_group: geometry.blocks_per_group,
            inodes_count: u32_at(sb, SB_INODES_COUNT),
            inodes_per_group: geometry.inodes_per_group,
            first_ino,
            inode_size,
            desc_size,
            groups: geometry.groups,
            gdt_blocks: geometry.gdt_blocks,
            reserved_gdt_blocks: u64::from(u16_at(sb, SB_RESERVED_GDT_BLOCKS)),
            sparse_super: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
            backup_groups: (compat & COMPAT_SPARSE_SUPER2 != 0)
                .then(|| [u32_at(sb, SB_BACKUP_BGS), u32_at(sb, SB_BACKUP_BGS + 4)]),
            wide_descriptors,
            flex_bg: incompat & INCOMPAT_FLEX_BG != 0,
            dir_index: compat & COMPAT_DIR_INDEX != 0,
            largedir: incompat & INCOMPAT_LARGEDIR != 0,
            checksum_seed,
        })
    }

    /// Whether group `group` holds a copy of the superblock and descriptors
    /// (`ext4_bg_has_super`).
    fn has_super(&self, group: u64) -> bool {
        if group == 0 {
            return true;
        }
        if let Some(backups) = self.backup_groups {
            return backups.iter().any(|b| u64::from(*b) == group);
        }
        if group <= 1 || !self.sparse_super {
            return true;
        }
        let power_of = |base: u64| {
            let mut n = group;
            while n.is_multiple_of(base) {
                n /= base;
            }
            n == 1
        };
        group % 2 == 1 && (power_of(3) || power_of(5) || power_of(7))
    }

    /// How many blocks of inodes each group has (`s_itb_per_group`).
    fn inode_table_blocks(&self) -> u64 {
        (u64::from(self.inodes_per_group) * self.inode_size as u64).div_ceil(self.block_size)
    }
}

/// What `ext4_fill_super` refuses to mount, among the fields inspect reads no further
/// (`ext4_handle_clustersize`, `ext4_check_geometry`, `ext4_hash_info_init`).
fn check_mount_fields(
    sb: &[u8; 1024],
    geometry: &Geometry,
    inode_size: usize,
    block_size: u64,
) -> anyhow::Result<()> {
    let (log_cluster, log_block) = (
        u32_at(sb, SB_LOG_CLUSTER_SIZE),
        u32_at(sb, SB_LOG_BLOCK_SIZE),
    );
    let clusters_per_group = u64::from(u32_at(sb, SB_CLUSTERS_PER_GROUP));
    ensure!(
        log_cluster == log_block && clusters_per_group == geometry.blocks_per_group,
        "the ext4 superblock's clusters (2^(10+{log_cluster}) bytes, {clusters_per_group} a \
         group) are not its blocks (a host's kernel will not mount it)"
    );
    let inodes = u64::from(u32_at(sb, SB_INODES_COUNT));
    let per_group = u64::from(geometry.inodes_per_group);
    ensure!(
        inodes == per_group * geometry.groups && per_group >= block_size / inode_size as u64,
        "the ext4 superblock says {inodes} inodes, {per_group} in each of {} groups (a \
         host's kernel will not mount it)",
        geometry.groups
    );
    ensure!(
        geometry.first_data_block > 0 || block_size > 1024,
        "the ext4 superblock says data from block 0 with 1 KiB blocks (a host's kernel will \
         not mount it)"
    );
    let reserved = u64::from(u16_at(sb, SB_RESERVED_GDT_BLOCKS));
    ensure!(
        reserved <= block_size / 4,
        "the ext4 superblock reserves {reserved} descriptor blocks (a host's kernel will not \
         mount it)"
    );
    // Orphans are processed at mount, even a read-only one on a writable device.
    let orphan = u32_at(sb, SB_LAST_ORPHAN);
    ensure!(
        orphan == 0,
        "the ext4 image lists orphan inodes (from {orphan}), which a mount may delete or cut"
    );
    // `ext4_mb_init`: "too many log groups per flexible block group".
    let log_flex = sb[SB_LOG_GROUPS_PER_FLEX];
    ensure!(
        log_flex < 32,
        "the ext4 superblock says 2^{log_flex} groups per flexible group (a host's kernel will \
         not mount it)"
    );
    let hash = sb[SB_DEF_HASH_VERSION];
    ensure!(
        hash <= LAST_DEFAULT_HASH,
        "the ext4 superblock's default directory hash is {hash} (a host's kernel will not \
         mount it)"
    );
    Ok(())
}

/// The features that make a host read the image differently from inspect, or that inspect does
/// not read: refused.
fn check_features(compat: u32, incompat: u32, ro_compat: u32) -> anyhow::Result<()> {
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
    let unread = INCOMPAT_META_BG | INCOMPAT_EA_INODE | INCOMPAT_DIRDATA | INCOMPAT_INLINE_DATA;
    ensure!(
        incompat & unread == 0 && ro_compat & RO_COMPAT_BIGALLOC == 0,
        "the ext4 image has meta_bg, ea_inode, dirdata, inline_data or bigalloc (features \
         {incompat:#x}/{ro_compat:#x}), which ours never have and inspect does not read"
    );
    ensure!(
        incompat & !INCOMPAT_READ == 0 && compat & COMPAT_ACTED_ON == 0,
        "the ext4 image has features {:#x}/{:#x} that ours never have and a host's kernel acts \
         on at mount (or refuses)",
        compat & COMPAT_ACTED_ON,
        incompat & !INCOMPAT_READ
    );
    Ok(())
}

/// The counts that place groups, checked against each other.
struct Geometry {
    first_data_block: u64,
    blocks_per_group: u64,
    inodes_per_group: u32,
    groups: u64,
    gdt_blocks: u64,
}

impl Geometry {
    fn parse(
        sb: &[u8; 1024],
        block_size: u64,
        blocks_count: u64,
        desc_size: usize,
    ) -> anyhow::Result<Geometry> {
        let first_data_block = u64::from(u32_at(sb, SB_FIRST_DATA_BLOCK));
        let blocks_per_group = u64::from(u32_at(sb, SB_BLOCKS_PER_GROUP));
        let inodes_per_group = u32_at(sb, SB_INODES_PER_GROUP);
        let bits_per_block = block_size * 8;
        ensure!(
            (1..=bits_per_block).contains(&blocks_per_group)
                && (1..=bits_per_block).contains(&u64::from(inodes_per_group))
                && first_data_block < blocks_count,
            "the ext4 superblock's group geometry is out of range ({blocks_per_group} blocks \
             and {inodes_per_group} inodes a group, data from block {first_data_block} of \
             {blocks_count})"
        );
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        ensure!(
            groups <= MAX_GROUPS,
            "the ext4 image has {groups} block groups, over the {} inspect reads",
            MAX_GROUPS
        );
        let per_block = block_size / desc_size as u64;
        Ok(Geometry {
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            groups,
            gdt_blocks: groups.div_ceil(per_block),
        })
    }
}

/// The seed of metadata checksums: `s_checksum_seed`, or the crc32c of the UUID.
fn checksum_seed(sb: &[u8; 1024], incompat: u32, ro_compat: u32) -> anyhow::Result<Option<u32>> {
    if ro_compat & RO_COMPAT_METADATA_CSUM == 0 {
        return Ok(None);
    }
    ensure!(
        sb[SB_CHECKSUM_TYPE] == 1,
        "the ext4 superblock names checksum type {}, not crc32c",
        sb[SB_CHECKSUM_TYPE]
    );
    Ok(Some(if incompat & INCOMPAT_CSUM_SEED != 0 {
        u32_at(sb, SB_CHECKSUM_SEED)
    } else {
        crc32c(!0, &[&sb[SB_UUID..SB_UUID + 16]])
    }))
}

/// Where a group's own metadata lies.
struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
}

/// An ext4 image, read as the kernel reads the inodes and directories on a path.
pub struct Volume {
    file: File,
    pub sb: Superblock,
    groups: Vec<Group>,
    /// The blocks no file's extent may name, sorted by start, with the largest end so far.
    system: Vec<(u64, u64, u64)>,
}

impl Volume {
    /// Reads the superblock and every group descriptor; the image must hold every block the
    /// superblock counts.
    pub fn open(file: File) -> anyhow::Result<Volume> {
        let mut raw = [0u8; 1024];
        file.read_exact_at(&mut raw, SUPERBLOCK)
            .context("reading the ext4 superblock")?;
        let len = file.metadata().context("reading the image's size")?.len();
        let sb = Superblock::parse(&raw, len)?;
        let mut volume = Volume {
            file,
            sb,
            groups: Vec::new(),
            system: Vec::new(),
        };
        volume.read_groups()?;
        volume.system = volume.system_zones()?;
        Ok(volume)
    }

    /// Reads `len` bytes at byte `offset`, which must lie within the filesystem's blocks.
    fn read(&self, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
        let end = offset.checked_add(len as u64);
        ensure!(
            end.is_some_and(|end| end <= self.sb.blocks_count * self.sb.block_size),
            "the ext4 image points past its last block (byte {offset})"
        );
        let mut bytes = vec![0u8; len];
        self.file
            .read_exact_at(&mut bytes, offset)
            .with_context(|| format!("reading the ext4 image at byte {offset}"))?;
        Ok(bytes)
    }

    pub fn read_block(&self, block: u64) -> anyhow::Result<Vec<u8>> {
        let offset = block.checked_mul(self.sb.block_size);
        let offset = offset.context("an ext4 block number overflows")?;
        self.read(offset, self.sb.block_size as usize)
    }

    /// Every group descriptor, from the blocks after the superblock's.
    fn read_groups(&mut self) -> anyhow::Result<()> {
        let sb = &self.sb;
        let per_block = (sb.block_size / sb.desc_size as u64) as usize;
        let wide = sb.wide_descriptors && sb.desc_size >= 64;
        let mut groups = Vec::with_capacity(sb.groups as usize);
        for index in 0..sb.gdt_blocks {
            let block = self.read_block(sb.first_data_block + 1 + index)?;
            for desc in block.chunks_exact(sb.desc_size).take(per_block) {
                if groups.len() as u64 == sb.groups {
                    break;
                }
                let at = |lo: usize, hi: usize| {
                    let high = if wide { u64::from(u32_at(desc, hi)) } else { 0 };
                    u64::from(u32_at(desc, lo)) | high << 32
                };
                groups.push(Group {
                    block_bitmap: at(0x0, 0x20),
                    inode_bitmap: at(0x4, 0x24),
                    inode_table: at(0x8, 0x28),
                });
            }
        }
        self.groups = groups;
        self.check_descriptors()
    }

    /// What `ext4_check_descriptors` refuses: a group's bitmaps or inode table outside the
    /// group (with flex_bg, outside the filesystem), or over the superblock or the descriptors.
    fn check_descriptors(&self) -> anyhow::Result<()> {
        let sb = &self.sb;
        let descriptors = sb.first_data_block..=sb.first_data_block + sb.gdt_blocks;
        for (index, group) in self.groups.iter().enumerate() {
            let index = index as u64;
            let first = if sb.flex_bg {
                sb.first_data_block
            } else {
                sb.first_data_block + index * sb.blocks_per_group
            };
            let last = if sb.flex_bg || index + 1 == sb.groups {
                sb.blocks_count - 1
            } else {
                first + sb.blocks_per_group - 1
            };
            for (what, start, count) in [
                ("block bitmap", group.block_bitmap, 1),
                ("inode bitmap", group.inode_bitmap, 1),
                ("inode table", group.inode_table, sb.inode_table_blocks()),
            ] {
                let end = start.saturating_add(count - 1);
                ensure!(
                    start >= first && end <= last && !descriptors.contains(&start),
                    "group {index}'s {what} (block {start}) is not in its place (blocks {first} \
                     to {last}, clear of the superblock and descriptors); a host's kernel will \
                     not mount it"
                );
            }
        }
        Ok(())
    }

    /// Every group's superblock copy, descriptors and reserved descriptor blocks, bitmaps and
    /// inode table: more than `ext4_setup_system_zone` protects (it leaves out the reserved
    /// blocks, and with flex_bg some copies), never less.
    fn system_zones(&self) -> anyhow::Result<Vec<(u64, u64, u64)>> {
        let sb = &self.sb;
        let mut zones: Vec<(u64, u64)> = Vec::new();
        let mut add = |start: u64, count: u64| zones.push((start, start.saturating_add(count)));
        for (index, group) in self.groups.iter().enumerate() {
            let index = index as u64;
            if sb.has_super(index) {
                let first = index * sb.blocks_per_group + sb.first_data_block;
                add(first, 1 + sb.gdt_blocks + sb.reserved_gdt_blocks);
            }
            add(group.block_bitmap, 1);
            add(group.inode_bitmap, 1);
            add(group.inode_table, sb.inode_table_blocks());
        }
        zones.sort_unstable();
        let mut furthest = 0;
        let mut system = Vec::with_capacity(zones.len());
        for (start, end) in zones {
            // `ext4_setup_system_zone` fails the mount where two zones overlap.
            ensure!(
                start >= furthest,
                "the ext4 image's own blocks overlap at block {start} (bitmaps, inode tables \
                 and descriptors); a host's kernel will not mount it"
            );
            furthest = furthest.max(end);
            system.push((start, end, furthest));
        }
        Ok(system)
    }

    /// Whether `count` blocks from `start` are ones a file may hold (`ext4_inode_block_valid`):
    /// after the first data block, within the filesystem, clear of its own metadata.
    fn blocks_valid(&self, start: u64, count: u64) -> bool {
        let Some(end) = start.checked_add(count) else {
            return false;
        };
        if start <= self.sb.first_data_block || end > self.sb.blocks_count {
            return false;
        }
        // Zones starting before `end`; one of them overlaps if any reaches past `start`.
        let before = self.system.partition_point(|(zone, _, _)| *zone < end);
        before == 0 || self.system[before - 1].2 <= start
    }
}

/// One inode, as `__ext4_iget` accepts it.
#[derive(Clone, Debug)]
pub struct Inode {
    pub number: u32,
    /// The whole `i_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `i_size` as the kernel takes it (a directory's high word only with `largedir`).
    pub size: u64,
    pub flags: u32,
    i_block: [u8; I_BLOCK_LEN],
    /// The seed of this inode's checksums (its directory blocks' and extent nodes'), when the
    /// image has metadata checksums.
    pub checksum_seed: Option<u32>,
}

impl Inode {
    pub fn is_directory(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    fn is_regular(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

/// A `(logical block, what it maps to)` of a file, as `ext4_map_blocks` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapped {
    Hole,
    Block(u64),
    /// Allocated, not written: reads as zeros.
    Unwritten,
}

impl Volume {
    /// Inode `number` as `ext4_lookup` reaches it from the directory `parent`: a number
    /// `ext4_valid_inum` accepts, not the directory itself, then every check of
    /// [`Volume::inode`].
    pub fn child(&self, parent: u32, number: u32) -> anyhow::Result<Inode> {
        let valid =
            number == ROOT_INODE || (self.sb.first_ino..=self.sb.inodes_count).contains(&number);
        ensure!(
            valid,
            "names inode {number}, which is none a directory may name (the kernel refuses it)"
        );
        ensure!(
            number != parent,
            "names itself as inode {number} (the kernel refuses such a link)"
        );
        self.inode(number)
    }

    /// Inode `number`, with the checks `__ext4_iget` makes, and the refusals of this reader.
    pub fn inode(&self, number: u32) -> anyhow::Result<Inode> {
        let sb = &self.sb;
        ensure!(
            (ROOT_INODE..=sb.inodes_count).contains(&number),
            "inode {number} is out of range (the image has {})",
            sb.inodes_count
        );
        let index = number - 1;
        let group = self
            .groups
            .get((index / sb.inodes_per_group) as usize)
            .with_context(|| format!("inode {number} lies in no block group"))?;
        let table = group.inode_table;
        ensure!(
            table > sb.first_data_block && table < sb.blocks_count,
            "inode {number}'s group puts its inode table at block {table}"
        );
        let within = u64::from(index % sb.inodes_per_group) * sb.inode_size as u64;
        let offset = table
            .checked_mul(sb.block_size)
            .and_then(|start| start.checked_add(within))
            .with_context(|| format!("inode {number}'s place overflows"))?;
        let raw = self.read(offset, sb.inode_size)?;
        let inode = self
            .parse_inode(number, &raw)
            .with_context(|| format!("inode {number}"))?;
        if inode.is_directory() || inode.is_regular() {
            self.check_extent_root(&inode)
                .with_context(|| format!("inode {number}'s extent tree"))?;
        }
        Ok(inode)
    }

    /// The checks of `__ext4_iget` on the raw inode, in its order.
    fn parse_inode(&self, number: u32, raw: &[u8]) -> anyhow::Result<Inode> {
        let sb = &self.sb;
        let extra_isize = if sb.inode_size > GOOD_OLD_INODE_SIZE {
            let extra = usize::from(u16_at(raw, I_EXTRA_ISIZE));
            ensure!(
                GOOD_OLD_INODE_SIZE + extra <= sb.inode_size && extra % 4 == 0,
                "has i_extra_isize {extra} in an inode of {} bytes (the kernel refuses it)",
                sb.inode_size
            );
            extra
        } else {
            0
        };
        let checksum_seed = sb.checksum_seed.map(|seed| {
            let seed = crc32c(seed, &[&number.to_le_bytes()]);
            crc32c(seed, &[&raw[I_GENERATION..I_GENERATION + 4]])
        });
        if let Some(seed) = checksum_seed {
            verify_inode_checksum(raw, seed, extra_isize)?;
        }
        let mode = u32::from(u16_at(raw, I_MODE));
        ensure!(
            u16_at(raw, I_LINKS_COUNT) != 0,
            "has no links: it is deleted (the kernel refuses to read it)"
        );
        let flags = u32_at(raw, I_FLAGS);
        check_flags(flags)?;
        let xattrs = GOOD_OLD_INODE_SIZE + extra_isize;
        ensure!(
            xattrs + 4 > sb.inode_size || u32_at(raw, xattrs) != XATTR_MAGIC,
            "holds extended attributes, which the kernel checks and inspect does not read \
             (ours have none)"
        );
        self.check_xattr_block(raw)?;
        let mut size = u64::from(u32_at(raw, I_SIZE_LO));
        let is_directory = mode & 0o170000 == 0o040000;
        if !is_directory || sb.largedir {
            size |= u64::from(u32_at(raw, I_SIZE_HIGH)) << 32;
        }
        ensure!(size <= i64::MAX as u64, "has a negative size");
        if is_directory && flags & FLAG_INDEX != 0 && !sb.dir_index {
            ensure!(
                sb.checksum_seed.is_none(),
                "is a hash-indexed directory on a filesystem without dir_index (the kernel \
                 refuses it)"
            );
        }
        Ok(Inode {
            number,
            mode,
            uid: u32::from(u16_at(raw, I_UID)) | u32::from(u16_at(raw, I_UID_HIGH)) << 16,
            gid: u32::from(u16_at(raw, I_GID)) | u32::from(u16_at(raw, I_GID_HIGH)) << 16,
            size,
            flags,
            i_block: raw[I_BLOCK..I_BLOCK + I_BLOCK_LEN]
                .try_into()
                .expect("60 bytes"),
            checksum_seed,
        })
    }

    /// `i_file_acl`, the block of extended attributes, must be a block a file may hold.
    fn check_xattr_block(&self, raw: &[u8]) -> anyhow::Result<()> {
        let mut block = u64::from(u32_at(raw, I_FILE_ACL_LO));
        if self.sb.wide_descriptors {
            block |= u64::from(u16_at(raw, I_FILE_ACL_HIGH)) << 32;
        }
        ensure!(
            block == 0 || self.blocks_valid(block, 1),
            "keeps its extended attributes in block {block}, which no file may hold (the \
             kernel refuses it)"
        );
        Ok(())
    }
}

/// `ext4_inode_csum_verify`: crc32c of the inode with its checksum fields as zeros; only the low
/// 16 bits where `i_extra_isize` leaves no room for the high ones.
fn verify_inode_checksum(raw: &[u8], seed: u32, extra_isize: usize) -> anyhow::Result<()> {
    let zero = [0u8; 2];
    let mut parts: Vec<&[u8]> = vec![
        &raw[..I_CHECKSUM_LO],
        &zero,
        &raw[I_CHECKSUM_LO + 2..GOOD_OLD_INODE_SIZE],
    ];
    let mut stored = u32::from(u16_at(raw, I_CHECKSUM_LO));
    let wide = GOOD_OLD_INODE_SIZE + extra_isize >= I_CHECKSUM_HI + 2;
    if raw.len() > GOOD_OLD_INODE_SIZE {
        parts.push(&raw[GOOD_OLD_INODE_SIZE..I_CHECKSUM_HI]);
        if wide {
            parts.push(&zero);
            parts.push(&raw[I_CHECKSUM_HI + 2..]);
            stored |= u32::from(u16_at(raw, I_CHECKSUM_HI)) << 16;
        } else {
            parts.push(&raw[I_CHECKSUM_HI..]);
        }
    }
    let mut computed = crc32c(seed, &parts);
    if raw.len() <= GOOD_OLD_INODE_SIZE || !wide {
        computed &= 0xFFFF;
    }
    ensure!(
        computed == stored,
        "has checksum {stored:#x}, not the {computed:#x} of its bytes (the kernel refuses it: \
         EBADMSG)"
    );
    Ok(())
}

/// Flags on an inode on the way that make the kernel refuse it (`EA_INODE`), or read it in
/// ways inspect does not.
fn check_flags(flags: u32) -> anyhow::Result<()> {
    let refused = [
        (FLAG_INLINE_DATA, "its data inline"),
        (FLAG_ENCRYPT, "encrypted"),
        (FLAG_CASEFOLD, "case-insensitive"),
        (FLAG_VERITY, "under fs-verity"),
        (FLAG_EA_INODE, "an extended attribute's value"),
    ];
    for (flag, what) in refused {
        ensure!(
            flags & flag == 0,
            "is {what} (flags {flags:#x}): ours are never, and inspect does not read such an \
             inode as the kernel does"
        );
    }
    Ok(())
}

/// One node of an extent tree: its header, checked.
struct ExtentNode<'a> {
    bytes: &'a [u8],
    entries: usize,
    depth: u16,
}

impl ExtentNode<'_> {
    fn entry(&self, index: usize) -> &[u8] {
        let at = EXTENT_ENTRY * (index + 1);
        &self.bytes[at..at + EXTENT_ENTRY]
    }
}

/// A leaf entry's logical start, length, physical start and whether it is unwritten.
fn extent(entry: &[u8]) -> (u32, u32, u64, bool) {
    let raw_len = u16_at(entry, 4);
    let unwritten = raw_len > EXTENT_INIT_MAX_LEN;
    let len = if unwritten {
        raw_len - EXTENT_INIT_MAX_LEN
    } else {
        raw_len
    };
    let start = u64::from(u32_at(entry, 8)) | u64::from(u16_at(entry, 6)) << 32;
    (u32_at(entry, 0), u32::from(len), start, unwritten)
}

/// An index entry's logical start and the block of its child.
fn extent_index(entry: &[u8]) -> (u32, u64) {
    let child = u64::from(u32_at(entry, 4)) | u64::from(u16_at(entry, 8)) << 32;
    (u32_at(entry, 0), child)
}

impl Volume {
    /// `ext4_ext_check_inode`: the root in `i_block`, as `__ext4_iget` checks it.
    fn check_extent_root(&self, inode: &Inode) -> anyhow::Result<()> {
        ensure!(
            inode.flags & FLAG_EXTENTS != 0,
            "maps its blocks without extents, which ours always have and inspect does not read"
        );
        let depth = u16_at(&inode.i_block, 6);
        self.check_extent_node(inode, &inode.i_block, depth, None)?;
        Ok(())
    }

    /// `__ext4_ext_check` on a node at `depth` (`first`: the logical block its parent's index
    /// entry names; `None` for the root), with the checksum of a node in a block.
    fn check_extent_node<'a>(
        &self,
        inode: &Inode,
        bytes: &'a [u8],
        depth: u16,
        first: Option<u32>,
    ) -> anyhow::Result<ExtentNode<'a>> {
        ensure!(
            u16_at(bytes, 0) == EXTENT_MAGIC,
            "a node has no extent magic"
        );
        let entries = usize::from(u16_at(bytes, 2));
        let max = usize::from(u16_at(bytes, 4));
        let room = bytes.len() / EXTENT_ENTRY - 1;
        ensure!(
            u16_at(bytes, 6) == depth && depth <= MAX_EXTENT_DEPTH,
            "a node says depth {}, not {depth}",
            u16_at(bytes, 6)
        );
        ensure!(
            max != 0 && max <= room && entries <= max && (entries != 0 || depth == 0),
            "a node says {entries} of {max} entries where {room} fit"
        );
        let node = ExtentNode {
            bytes,
            entries,
            depth,
        };
        self.check_extent_entries(&node, first)?;
        if let (Some(_), Some(seed)) = (first, inode.checksum_seed) {
            let tail = EXTENT_ENTRY * (max + 1);
            let computed = crc32c(seed, &[&bytes[..tail]]);
            ensure!(
                computed == u32_at(bytes, tail),
                "a node's checksum is wrong (the kernel refuses it: EBADMSG)"
            );
        }
        Ok(node)
    }

    /// `ext4_valid_extent_entries`: entries in order, none empty, wrapping or overlapping the
    /// one before, every block one a file may hold, the first where the parent says.
    fn check_extent_entries(&self, node: &ExtentNode, first: Option<u32>) -> anyhow::Result<()> {
        let mut next: u64 = 0;
        for index in 0..node.entries {
            let entry = node.entry(index);
            let (start, blocks_end, physical, count) = if node.depth == 0 {
                let (start, len, physical, _) = extent(entry);
                let end = start.checked_add(len).filter(|end| *end > start);
                let end = end.context("an extent is empty or wraps around")?;
                (start, u64::from(end), physical, u64::from(len))
            } else {
                let (start, child) = extent_index(entry);
                (start, u64::from(start) + 1, child, 1)
            };
            if index == 0 {
                if let Some(first) = first {
                    ensure!(
                        start == first,
                        "a node starts at block {start}, its parent says {first}"
                    );
                }
            }
            ensure!(
                u64::from(start) >= next,
                "entries overlap or are out of order at logical block {start}"
            );
            ensure!(
                self.blocks_valid(physical, count),
                "an entry names blocks {physical}..+{count}, which no file may hold (the \
                 kernel refuses it)"
            );
            next = blocks_end;
        }
        Ok(())
    }

    /// What each logical block in `wanted` maps to, walking the tree as `ext4_find_extent`
    /// does and checking every node it reads.
    pub fn map(&self, inode: &Inode, wanted: Range<u32>) -> anyhow::Result<Vec<Mapped>> {
        let mut mapped = vec![Mapped::Hole; wanted.len()];
        let depth = u16_at(&inode.i_block, 6);
        let mut budget = MAX_EXTENT_NODES;
        let root = self.check_extent_node(inode, &inode.i_block, depth, None)?;
        let all = 0..u32::MAX;
        self.map_node(inode, &root, all, &wanted, &mut mapped, &mut budget)?;
        Ok(mapped)
    }

    /// Maps the blocks of `wanted` that `node` covers (`covered`: what its parent sends it).
    fn map_node(
        &self,
        inode: &Inode,
        node: &ExtentNode,
        covered: Range<u32>,
        wanted: &Range<u32>,
        mapped: &mut [Mapped],
        budget: &mut usize,
    ) -> anyhow::Result<()> {
        for index in 0..node.entries {
            let entry = node.entry(index);
            if node.depth == 0 {
                let (start, len, physical, unwritten) = extent(entry);
                for block in start.max(wanted.start)..(start + len).min(wanted.end) {
                    let offset = u64::from(block - start);
                    mapped[(block - wanted.start) as usize] = match unwritten {
                        true => Mapped::Unwritten,
                        false => Mapped::Block(physical + offset),
                    };
                }
                continue;
            }
            // `ext4_ext_binsearch_idx` sends a block before the first entry to the first child.
            let (start, child) = extent_index(entry);
            let from = if index == 0 { covered.start } else { start };
            let to = match index + 1 < node.entries {
                true => extent_index(node.entry(index + 1)).0,
                false => covered.end,
            };
            if from >= to || to <= wanted.start || from >= wanted.end {
                continue;
            }
            ensure!(
                *budget > 0,
                "the extent tree has over {MAX_EXTENT_NODES} nodes"
            );
            *budget -= 1;
            let bytes = self.read_block(child)?;
            let child = self.check_extent_node(inode, &bytes, node.depth - 1, Some(start))?;
            self.map_node(inode, &child, from..to, wanted, mapped, budget)?;
        }
        Ok(())
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
        put(SB_LOG_CLUSTER_SIZE, log_block_size);
        put(SB_BLOCKS_PER_GROUP, 32768);
        put(SB_CLUSTERS_PER_GROUP, 32768);
        put(SB_INODES_PER_GROUP, 8192);
        put(SB_INODES_COUNT, blocks.div_ceil(32768).saturating_mul(8192));
        put(SB_FEATURE_COMPAT, compat);
        put(SB_FEATURE_INCOMPAT, incompat);
        put(SB_FEATURE_RO_COMPAT, RO_COMPAT_SPARSE_SUPER);
        sb
    }

    #[test]
    fn the_superblock_is_checked_before_anything_is_read() {
        // 0x2C2 has 64bit, with a zero high word; 64-byte descriptors.
        let mut fine = superblock(1024, 2, 0x38, 0x2C2);
        fine[SB_DESC_SIZE] = 64;
        Superblock::parse(&fine, 4 << 20).unwrap();
        let short = Superblock::parse(&fine, (4 << 20) - 1).unwrap_err();
        assert!(
            short.to_string().contains("more than the image's"),
            "{short}"
        );
        let journal = superblock(1024, 2, 0x3C, 0x2C2);
        let journal = Superblock::parse(&journal, 4 << 20).unwrap_err();
        assert!(journal.to_string().contains("has a journal"), "{journal}");
        let casefold = superblock(1024, 2, 0x38, 0x2C2 | INCOMPAT_CASEFOLD);
        let refused = Superblock::parse(&casefold, 4 << 20).unwrap_err();
        assert!(
            refused.to_string().contains("case-insensitive"),
            "{refused}"
        );
        let huge = Superblock::parse(&superblock(1024, 40, 0, 0), u64::MAX).unwrap_err();
        assert!(huge.to_string().contains("2^(10+40)"), "{huge}");
        // One byte of a field a mount checks, set to a value it refuses.
        for (at, value, says) in [
            (SB_DEF_HASH_VERSION, 6, "directory hash is 6"),
            (SB_CLUSTERS_PER_GROUP, 1, "are not its blocks"),
            (SB_INODES_COUNT, 1, "inodes, 8192 in each"),
            (SB_LOG_GROUPS_PER_FLEX, 32, "2^32 groups per flexible group"),
        ] {
            let mut damaged = fine;
            damaged[at] = value;
            let refused = Superblock::parse(&damaged, 4 << 20).unwrap_err();
            assert!(refused.to_string().contains(says), "{refused}");
        }
        let mut groups = superblock(u32::MAX, 0, 0, 0);
        groups[SB_BLOCKS_PER_GROUP..SB_BLOCKS_PER_GROUP + 4].copy_from_slice(&8u32.to_le_bytes());
        let many = Superblock::parse(&groups, u64::MAX).unwrap_err();
        assert!(many.to_string().contains("block groups"), "{many}");
    }

    #[test]
    fn groups_with_a_superblock_copy_are_the_kernels() {
        let sb = Superblock::parse(&superblock(1 << 22, 2, 0, 0), u64::MAX).unwrap();
        let with: Vec<u64> = (0..100).filter(|g| sb.has_super(*g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }
}
