//! A directory on the way, read whole and checked block by block as the kernel checks what it
//! reads (`fs/ext4/namei.c`, `dir.c`):
//!
//! - with metadata checksums, every leaf block ends in the 12-byte tail `get_dirent_tail`
//!   requires (inode 0, `rec_len` 12, name length 0, file type 0xDE) holding the crc32c of the
//!   block before it (`ext4_dirblock_csum_verify`); the kernel refuses any other block with
//!   EBADMSG;
//! - every entry passes `__ext4_check_dir_entry`: `rec_len` at least 12, a multiple of 4, room
//!   for its name, not past the block's end nor ending within 12 bytes of it, an inode number
//!   the filesystem has. The kernel checks the entry it finds (and `readdir` every one); every
//!   one is checked here;
//! - a hash-indexed directory's root and nodes pass `dx_probe`'s checks and, with checksums,
//!   `ext4_dx_csum_verify`: a known hash, no unknown flag, no more levels than the kernel
//!   follows, `limit` what the block holds, `count` within it; and, more strictly than the
//!   kernel, hashes in order and every block named once as what it is (a node or a leaf)
//!   within the directory. Where the kernel would fall back to a linear search, the directory
//!   is refused instead: then both of its lookups find the same.
//!
//! A directory must be whole blocks, without holes or unwritten extents (the kernel skips some
//! holes, and refuses others).

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context};

use super::volume::{Inode, Mapped, Volume, FLAG_INDEX};
use crate::image::inspect::bad_name;
use crate::image::inspect::crc32c;
use crate::util::le::{u16_at, u32_at};

/// The checksum tail of a leaf block (`struct ext4_dir_entry_tail`), and its file type
/// (`EXT4_FT_DIR_CSUM`).
const TAIL_LEN: usize = 12;
const FT_DIR_CSUM: u8 = 0xDE;
/// An entry's header: inode, `rec_len`, name length, file type.
const ENTRY_HEADER: usize = 8;
/// `ext4_dir_rec_len(1)`: the smallest entry.
const MIN_REC_LEN: usize = 12;
/// The hash root's `dx_root_info` after `.` and `..`, and its entries after it.
const ROOT_INFO: usize = 0x18;
const ROOT_ENTRIES: usize = 0x20;
/// A node's entries after its empty entry.
const NODE_ENTRIES: usize = 8;
/// `dx_tail`: a reserved word and the checksum, after `limit` entries.
const DX_TAIL_LEN: usize = 8;
const DX_ENTRY: usize = 8;

/// `EXT4_DIR_REC_LEN`: an entry's header and name, rounded to 4 bytes.
fn rec_len_for(name_len: usize) -> usize {
    (ENTRY_HEADER + name_len + 3) & !3
}

/// What a directory holds under the name looked up.
pub struct Listed {
    pub count: usize,
    /// The inode and file type of the (last) entry of that name.
    pub entry: Option<(u32, u8)>,
}

pub enum Listing {
    Listed(Listed),
    /// An entry whose name no directory may hold (see [`bad_name`]).
    BadName(Vec<u8>),
}

/// One entry of a block.
#[derive(Debug)]
struct Entry<'a> {
    inode: u32,
    name: &'a [u8],
    file_type: u8,
}

/// What the checks of one directory's blocks need.
struct Checks {
    block_size: usize,
    checksum_seed: Option<u32>,
    inodes_count: u32,
}

/// Reads the directory `dir` whole, checking every block, and counts `name` in it.
pub fn list(volume: &Volume, dir: &Inode, name: &[u8]) -> anyhow::Result<Listing> {
    let blocks = read_blocks(volume, dir)?;
    let checks = Checks {
        block_size: volume.sb.block_size as usize,
        checksum_seed: dir.checksum_seed,
        inodes_count: volume.sb.inodes_count,
    };
    let indexed = volume.sb.dir_index && dir.flags & FLAG_INDEX != 0;
    let roles = match indexed {
        true => hash_tree(&blocks, &checks, volume.sb.largedir).context("its hash index")?,
        false => BTreeMap::new(),
    };
    let mut dots = [0; 2];
    let mut listed = Listed {
        count: 0,
        entry: None,
    };
    for (index, (physical, block)) in blocks.iter().enumerate() {
        let entries = match roles.get(&index) {
            Some(Role::Node) => continue,
            // `.` and `..`, the second spanning the index.
            Some(Role::Root) => entries(block, &checks),
            _ => leaf_entries(block, &checks),
        };
        let entries =
            entries.with_context(|| format!("its block {index} (image block {physical})"))?;
        for entry in entries.iter().filter(|e| e.inode != 0) {
            if bad_name(entry.name, &mut dots) {
                return Ok(Listing::BadName(entry.name.to_vec()));
            }
            if entry.name == name {
                listed.count += 1;
                listed.entry = Some((entry.inode, entry.file_type));
            }
        }
    }
    Ok(Listing::Listed(listed))
}

/// Every block of `dir`, with where it lies.
fn read_blocks(volume: &Volume, dir: &Inode) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
    let block_size = volume.sb.block_size;
    ensure!(
        dir.size > 0 && dir.size.is_multiple_of(block_size),
        "is {} bytes, not a whole number of {block_size}-byte blocks",
        dir.size
    );
    let count = u32::try_from(dir.size / block_size).context("has too many blocks")?;
    let mapped = volume.map(dir, 0..count).context("its extent tree")?;
    let mut blocks = Vec::with_capacity(mapped.len());
    for (index, mapped) in mapped.into_iter().enumerate() {
        match mapped {
            Mapped::Block(physical) => blocks.push((physical, volume.read_block(physical)?)),
            Mapped::Hole => bail!("has a hole at its block {index}"),
            Mapped::Unwritten => bail!("has an unwritten extent at its block {index}"),
        }
    }
    Ok(blocks)
}

/// A leaf block's entries, after its checksum tail where the filesystem has checksums.
fn leaf_entries<'a>(block: &'a [u8], checks: &Checks) -> anyhow::Result<Vec<Entry<'a>>> {
    if let Some(seed) = checks.checksum_seed {
        let tail_at = block.len() - TAIL_LEN;
        let tail = &block[tail_at..];
        let (inode, rec_len, name_len, file_type) =
            (u32_at(tail, 0), u16_at(tail, 4), tail[6], tail[7]);
        ensure!(
            (inode, rec_len, name_len, file_type) == (0, TAIL_LEN as u16, 0, FT_DIR_CSUM),
            "its checksum tail has inode {inode}, rec_len {rec_len}, name length {name_len} \
             and file type {file_type:#x}, not 0, 12, 0 and 0xde: the kernel finds no checksum \
             there and will not read the block (EBADMSG)"
        );
        let computed = crc32c(seed, &[&block[..tail_at]]);
        let stored = u32_at(tail, 8);
        ensure!(
            computed == stored,
            "its checksum is {stored:#x}, not the {computed:#x} of its entries: the kernel \
             will not read the block (EBADMSG)"
        );
    }
    entries(block, checks)
}

/// The entries of a block, each checked as `__ext4_check_dir_entry` checks it.
fn entries<'a>(block: &'a [u8], checks: &Checks) -> anyhow::Result<Vec<Entry<'a>>> {
    let size = checks.block_size;
    let mut found = Vec::new();
    let mut offset = 0;
    while offset < size {
        // The checks below leave at least 12 bytes after an entry that does not end the block.
        let inode = u32_at(block, offset);
        let rec_len = usize::from(u16_at(block, offset + 4));
        let name_len = usize::from(block[offset + 6]);
        let next = offset + rec_len;
        let why = if rec_len < MIN_REC_LEN {
            "is smaller than the smallest entry"
        } else if rec_len % 4 != 0 {
            "is not a multiple of 4"
        } else if rec_len < rec_len_for(name_len) {
            "leaves no room for its name"
        } else if next > size {
            "runs past the block's end"
        } else if next > size - MIN_REC_LEN && next != size {
            "ends too close to the block's end"
        } else if inode > checks.inodes_count {
            "belongs to an entry naming an inode past the last"
        } else {
            found.push(Entry {
                inode,
                name: &block[offset + ENTRY_HEADER..offset + ENTRY_HEADER + name_len],
                file_type: block[offset + 7],
            });
            offset = next;
            continue;
        };
        bail!(
            "the entry at byte {offset} (inode {inode}, rec_len {rec_len}, name length \
             {name_len}): its rec_len {why}; the kernel refuses it"
        );
    }
    Ok(found)
}

/// What a block of a hash-indexed directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Root,
    Node,
    Leaf,
}

/// Checks the hash index from its root (block 0) down to the leaves; says what each block it
/// names is (unnamed blocks are leaves the index does not reach).
fn hash_tree(
    blocks: &[(u64, Vec<u8>)],
    checks: &Checks,
    largedir: bool,
) -> anyhow::Result<BTreeMap<usize, Role>> {
    let size = checks.block_size;
    let root = &blocks[0].1;
    let info = &root[ROOT_INFO..ROOT_ENTRIES];
    let (reserved, version, info_len, levels, flags) =
        (u32_at(info, 0), info[4], info[5], info[6], info[7]);
    ensure!(
        u16_at(root, 4) == 12 && usize::from(u16_at(root, 16)) == size - 12,
        "the root does not begin with `.` and a `..` spanning the block"
    );
    ensure!(
        reserved == 0 && info_len == 8 && flags & 1 == 0,
        "the root's info says reserved {reserved:#x}, length {info_len}, flags {flags:#x}"
    );
    // Legacy, half MD4 and TEA; SipHash only for encrypted case-folded directories.
    ensure!(version <= 2, "the root names hash {version}");
    let max_levels = if largedir { 3 } else { 2 };
    ensure!(
        levels < max_levels,
        "the root says {levels} levels below it; the kernel follows {}",
        max_levels - 1
    );
    let tail = if checks.checksum_seed.is_some() {
        DX_TAIL_LEN
    } else {
        0
    };
    let root_limit = (size - 2 * MIN_REC_LEN - 8 - tail) / DX_ENTRY;
    let node_limit = (size - ENTRY_HEADER - tail) / DX_ENTRY;
    let mut roles = BTreeMap::from([(0, Role::Root)]);
    let mut level =
        index_children(root, ROOT_ENTRIES, root_limit, checks, blocks.len()).context("the root")?;
    for _ in 0..levels {
        let mut below = Vec::new();
        for child in level {
            if !claim(&mut roles, child, Role::Node)? {
                continue;
            }
            let node = &blocks[child].1;
            let empty = (
                u32_at(node, 0),
                usize::from(u16_at(node, 4)),
                node[6],
                node[7],
            );
            ensure!(
                empty == (0, size, 0, 0),
                "block {child} is named as a node but does not begin as one"
            );
            let children = index_children(node, NODE_ENTRIES, node_limit, checks, blocks.len());
            below.extend(children.with_context(|| format!("node {child}"))?);
        }
        level = below;
    }
    for leaf in level {
        claim(&mut roles, leaf, Role::Leaf)?;
        ensure!(
            usize::from(u16_at(&blocks[leaf].1, 4)) != size,
            "leaf {leaf} begins as a node would"
        );
    }
    Ok(roles)
}

/// Records that `block` is a `role`; false when it was already recorded so.
fn claim(roles: &mut BTreeMap<usize, Role>, block: usize, role: Role) -> anyhow::Result<bool> {
    match roles.insert(block, role) {
        None => Ok(true),
        Some(was) if was == role => Ok(false),
        Some(was) => bail!("block {block} is named as a {role:?} and a {was:?}"),
    }
}

/// An index node's entries from `at` (`limit`, `count` and the first block, then hash and
/// block pairs): checked, and the blocks they name.
fn index_children(
    block: &[u8],
    at: usize,
    limit: usize,
    checks: &Checks,
    blocks: usize,
) -> anyhow::Result<Vec<usize>> {
    let (stored_limit, count) = (
        usize::from(u16_at(block, at)),
        usize::from(u16_at(block, at + 2)),
    );
    ensure!(
        stored_limit == limit && count != 0 && count <= limit,
        "its limit {stored_limit} is not {limit}, or its count {count} is not within it"
    );
    if let Some(seed) = checks.checksum_seed {
        // `ext4_dx_csum`: the entries in use, then the tail's reserved word and a zero checksum.
        let tail = at + limit * DX_ENTRY;
        let used = &block[..at + count * DX_ENTRY];
        let computed = crc32c(seed, &[used, &block[tail..tail + 4], &[0; 4]]);
        let stored = u32_at(block, tail + 4);
        ensure!(
            computed == stored,
            "its checksum is {stored:#x}, not the {computed:#x} of its entries: the kernel \
             will not read it (EBADMSG)"
        );
    }
    let mut children = Vec::with_capacity(count);
    let mut previous = 0;
    for entry in (0..count).map(|i| at + i * DX_ENTRY) {
        let hash = if entry == at { 0 } else { u32_at(block, entry) };
        let child = u32_at(block, entry + 4) as usize;
        ensure!(
            hash >= previous,
            "its hashes are out of order ({hash:#x} after {previous:#x})"
        );
        ensure!(
            child != 0 && child < blocks,
            "it names block {child} of a directory of {blocks}"
        );
        previous = hash;
        children.push(child);
    }
    Ok(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKS: Checks = Checks {
        block_size: 1024,
        checksum_seed: None,
        inodes_count: 100,
    };

    /// An entry as written: inode, `rec_len`, name.
    type Raw<'a> = (u32, u16, &'a [u8]);

    /// A block of entries.
    fn block(entries: &[Raw]) -> Vec<u8> {
        let mut block = vec![0u8; 1024];
        let mut at = 0;
        for (inode, rec_len, name) in entries {
            block[at..at + 4].copy_from_slice(&inode.to_le_bytes());
            block[at + 4..at + 6].copy_from_slice(&rec_len.to_le_bytes());
            block[at + 6] = name.len() as u8;
            block[at + 7] = 1;
            block[at + 8..at + 8 + name.len()].copy_from_slice(name);
            at += usize::from(*rec_len);
        }
        block
    }

    fn refusal(entries_of: &[Raw]) -> String {
        let block = block(entries_of);
        match entries(&block, &CHECKS) {
            Ok(_) => panic!("accepted {entries_of:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn entries_pass_the_kernels_checks() {
        let good = block(&[(2, 12, b"."), (2, 12, b".."), (20, 1000, b"alloy")]);
        let names: Vec<&[u8]> = entries(&good, &CHECKS)
            .unwrap()
            .iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, [&b"."[..], b"..", b"alloy"]);
        let cases: [(&[Raw], &str); 6] = [
            (
                &[(2, 8, b"."), (2, 1016, b"..")],
                "smaller than the smallest entry",
            ),
            (&[(2, 14, b"."), (2, 1010, b"..")], "not a multiple of 4"),
            (
                &[(2, 12, b"abcdefgh"), (2, 1012, b"..")],
                "no room for its name",
            ),
            (&[(2, 1028, b".")], "runs past the block's end"),
            (
                &[(2, 1016, b"."), (0, 8, b"")],
                "too close to the block's end",
            ),
            (&[(101, 1024, b"x")], "naming an inode past the last"),
        ];
        for (entries, why) in cases {
            let said = refusal(entries);
            assert!(said.contains(why), "{entries:?}: {said}");
        }
    }

    #[test]
    fn a_leaf_needs_its_checksum_tail() {
        let seed = 0x1234_5678;
        let checks = Checks {
            checksum_seed: Some(seed),
            ..CHECKS
        };
        let mut good = block(&[(2, 12, b"."), (2, 1000, b".."), (0, 12, b"")]);
        good[1012 + 6] = 0;
        good[1012 + 7] = FT_DIR_CSUM;
        let sum = crc32c(seed, &[&good[..1012]]);
        good[1020..].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(leaf_entries(&good, &checks).unwrap().len(), 3);
        // rec_len, inode, name length, file type, checksum.
        for at in [1016, 1012, 1018, 1019, 1020] {
            let mut bad = good.clone();
            bad[at] ^= 0x21;
            let said = leaf_entries(&bad, &checks).unwrap_err().to_string();
            assert!(said.contains("EBADMSG"), "byte {at}: {said}");
        }
    }
}
