//! ext4 structures on the way to `/usr/bin/alloy` changed after packing, each where the kernel
//! checks more than ext4-view (or reads what inspect does not), with every checksum recomputed
//! so that only the change is wrong: the checksum tail of a directory block, its entries, the
//! inode an entry names, the inode itself (links, `i_extra_isize`, checksum, extent root), the
//! hash index, and inline data and extended attributes, which inspect does not read.

use std::path::Path;
use std::process::Command;

use xtask_testkit::{checked_output, tool};

/// How `/usr/bin` (or what leads to it) is damaged.
#[derive(Clone, Copy, Debug)]
pub enum Damage {
    /// The checksum tail of `/usr/bin`'s block: `rec_len` 44, not 12.
    TailRecLen,
    /// Its first reserved field (where an entry has its inode) is 7, not 0.
    TailReserved,
    /// Its file type is 0xDF, not 0xDE.
    TailFileType,
    /// `alloy`'s entry: `rec_len` 2 bytes shorter, not a multiple of 4.
    RecLenUnaligned,
    /// `alloy`'s entry: `rec_len` 4 bytes longer, ending within the tail.
    EndsInTail,
    /// `alloy`'s entry names an inode past the filesystem's last.
    InodePastLast,
    /// `..`'s entry says a name of 9 bytes, which its 12 bytes cannot hold.
    NameTooLong,
    /// `.`'s entry: `rec_len` 8.
    RecLenTooSmall,
    /// `alloy`'s entry names inode 7, the resize inode: a regular file, reserved.
    ReservedInode,
    /// `/usr`'s entry `bin` names `/usr` itself.
    NamesItsDirectory,
    /// `alloy`'s inode has no links (deleted).
    NoLinks,
    /// `alloy`'s inode says `i_extra_isize` 30.
    ExtraIsize,
    /// `/usr/bin`'s inode checksum is wrong.
    InodeChecksum,
    /// `/usr/bin`'s extent root says 5 entries fit in its 4 places.
    ExtentRootMax,
    /// `alloy`'s extent starts at group 0's inode table.
    ExtentInInodeTable,
    /// `/usr/bin` holds 200 more names and is hash-indexed (by `e2fsck -D`): nothing wrong.
    HashIndexed,
    /// ... and its root names hash 7.
    HashUnknown,
    /// ... and its root says one level of nodes below it, where there is none.
    HashLevels,
    /// ... and its root names a block past the directory's end.
    HashPastEnd,
    /// ... on a filesystem without `dir_index`.
    HashWithoutDirIndex,
    /// Packed with `inline_data`: the root and `/usr/bin` are held in their inodes.
    InlineData,
    /// `/usr/bin`'s inode says its data is inline (without the feature: the kernel then reads
    /// its extents).
    InlineFlag,
    /// `/usr/bin`'s inode holds an extended attribute.
    InodeXattr,
    /// `alloy`'s owner is -1 (0xFFFFFFFF), which the kernel shows as the overflow id.
    OwnerMinusOne,
}

impl Damage {
    fn hashed(self) -> bool {
        matches!(
            self,
            Damage::HashIndexed
                | Damage::HashUnknown
                | Damage::HashLevels
                | Damage::HashPastEnd
                | Damage::HashWithoutDirIndex
        )
    }

    /// Changes the good tree at `root` before it is packed.
    pub fn before_packing(self, root: &Path) {
        if self.hashed() {
            for i in 0..200 {
                std::fs::write(root.join("usr/bin").join(format!("{i:0>100}")), "x").unwrap();
            }
        }
    }

    /// Packs `root` into `image` as `pack` does, with inline data where asked.
    pub fn pack(self, root: &Path, image: &Path) {
        if let Damage::InlineData = self {
            let args = [
                "-q",
                "-F",
                "-b",
                "4096",
                "-O",
                "^has_journal,inline_data",
                "-E",
                "root_owner=0:0",
            ];
            checked_output(&mut super::packer("mkfs.ext4", &args, root, image, "96M"));
        } else {
            super::pack("ext4", root, image);
        }
    }

    /// Damages the packed `image`.
    pub fn after_packing(self, image: &Path) {
        if self.hashed() {
            index_directories(image);
        }
        let fs = Fs::read(image);
        match self {
            // The leaf checksum ends before the tail: anew, it is what it was.
            Damage::TailRecLen => fs.edit_tail(|tail| set16(tail, 4, 44)),
            Damage::TailReserved => fs.edit_tail(|tail| set32(tail, 0, 7)),
            Damage::TailFileType => fs.edit_tail(|tail| tail[7] = 0xDF),
            Damage::RecLenUnaligned => fs.edit_entry("/usr/bin", b"alloy", |e| add16(e, 4, -2)),
            Damage::EndsInTail => fs.edit_entry("/usr/bin", b"alloy", |e| add16(e, 4, 4)),
            Damage::InodePastLast => {
                let past = fs.inodes_count + 1;
                fs.edit_entry("/usr/bin", b"alloy", |e| set32(e, 0, past))
            }
            Damage::NameTooLong => fs.edit_entry("/usr/bin", b"..", |e| e[6] = 9),
            Damage::RecLenTooSmall => fs.edit_entry("/usr/bin", b".", |e| set16(e, 4, 8)),
            Damage::ReservedInode => fs.edit_entry("/usr/bin", b"alloy", |e| set32(e, 0, 7)),
            Damage::NamesItsDirectory => {
                let usr = fs.inode_number("/usr");
                fs.edit_entry("/usr", b"bin", |e| set32(e, 0, usr))
            }
            Damage::NoLinks => set_inode_field(image, "/usr/bin/alloy", "links_count", "0"),
            Damage::ExtraIsize => set_inode_field(image, "/usr/bin/alloy", "extra_isize", "30"),
            Damage::InodeChecksum => set_inode_field(image, "/usr/bin", "checksum", "0x1234"),
            Damage::ExtentRootMax => set_inode_field(image, "/usr/bin", "block[1]", "5"),
            Damage::ExtentInInodeTable => {
                let table = fs.inode_table();
                set_inode_field(image, "/usr/bin/alloy", "block[5]", &table.to_string())
            }
            Damage::HashIndexed => {}
            // dx_root_info's hash version and levels, the first entry's block.
            Damage::HashUnknown => fs.edit_block("/usr/bin", Checksum::HashRoot, |b| b[0x1C] = 7),
            Damage::HashLevels => fs.edit_block("/usr/bin", Checksum::HashRoot, |b| b[0x1E] = 1),
            Damage::HashPastEnd => {
                fs.edit_block("/usr/bin", Checksum::HashRoot, |b| set32(b, 0x24, 99))
            }
            Damage::HashWithoutDirIndex => debugfs_write(image, "feature -dir_index"),
            Damage::InlineData => {}
            Damage::InlineFlag => set_inode_field(image, "/usr/bin", "flags", "0x10080000"),
            Damage::InodeXattr => debugfs_write(image, "ea_set /usr/bin user.note hello"),
            Damage::OwnerMinusOne => set_inode_field(image, "/usr/bin/alloy", "uid", "0xffffffff"),
        }
    }
}

fn set16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn set32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn add16(bytes: &mut [u8], at: usize, by: i32) {
    let value = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    set16(bytes, at, (i32::from(value) + by) as u16);
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// `crc32c` as ext4 computes it: from a seed, without the final inversion.
fn crc32c(seed: u32, bytes: &[u8]) -> u32 {
    const RAW: crc::Algorithm<u32> = crc::Algorithm {
        xorout: 0,
        ..crc::CRC_32_ISCSI
    };
    let crc = crc::Crc::<u32>::new(&RAW);
    let mut digest = crc.digest_with_initial(seed.reverse_bits());
    digest.update(bytes);
    digest.finalize()
}

fn debugfs(image: &Path, request: &str) -> String {
    checked_output(
        Command::new(tool("debugfs"))
            .args(["-R", request])
            .arg(image),
    )
}

fn debugfs_write(image: &Path, request: &str) {
    checked_output(
        Command::new(tool("debugfs"))
            .args(["-w", "-R", request])
            .arg(image),
    );
}

/// Sets an inode's field with debugfs, which writes the inode's checksum anew.
fn set_inode_field(image: &Path, path: &str, field: &str, value: &str) {
    debugfs_write(image, &format!("sif {path} {field} {value}"));
}

/// Hash-indexes every directory of more than one block, as `e2fsck -D` does; it exits 1 for
/// having changed the image.
fn index_directories(image: &Path) {
    let status = Command::new(tool("e2fsck"))
        .args(["-f", "-y", "-D"])
        .arg(image)
        .output()
        .unwrap()
        .status;
    assert!(matches!(status.code(), Some(0 | 1)), "e2fsck -D: {status}");
}

/// A dx root's checksum anew (`ext4_dx_csum`): its entries in use, its tail's reserved word
/// and a zero checksum.
fn fix_dx_root_checksum(block: &mut [u8], seed: u32) {
    let limit = usize::from(u16::from_le_bytes([block[0x20], block[0x21]]));
    let count = usize::from(u16::from_le_bytes([block[0x22], block[0x23]]));
    let tail = 0x20 + limit * 8;
    let mut covered = block[..0x20 + count * 8].to_vec();
    covered.extend_from_slice(&block[tail..tail + 4]);
    covered.extend_from_slice(&[0; 4]);
    let sum = crc32c(seed, &covered);
    set32(block, tail + 4, sum);
}

/// Which checksum a changed directory block gets anew.
#[derive(Clone, Copy)]
enum Checksum {
    Leaf,
    HashRoot,
}

/// The image's bytes and what placing things in it takes.
struct Fs<'a> {
    image: &'a Path,
    block_size: usize,
    inodes_count: u32,
    /// The seed of every metadata checksum: the crc32c of the UUID.
    seed: u32,
}

impl<'a> Fs<'a> {
    fn read(image: &'a Path) -> Fs<'a> {
        let bytes = std::fs::read(image).unwrap();
        let sb = &bytes[1024..2048];
        Fs {
            image,
            block_size: 1024 << u32_at(sb, 0x18),
            inodes_count: u32_at(sb, 0),
            seed: crc32c(!0, &sb[0x68..0x78]),
        }
    }

    /// The number of the inode at `path`, and its generation.
    fn inode(&self, path: &str) -> (u32, u32) {
        let stat = debugfs(self.image, &format!("stat {path}"));
        let field = |name: &str| -> u32 {
            let after = stat.split(name).nth(1).unwrap_or_else(|| panic!("{stat}"));
            after.split_whitespace().next().unwrap().parse().unwrap()
        };
        (field("Inode:"), field("Generation:"))
    }

    fn inode_number(&self, path: &str) -> u32 {
        self.inode(path).0
    }

    /// Group 0's first inode-table block.
    fn inode_table(&self) -> u64 {
        let stats = debugfs(self.image, "stats");
        let after = stats.split("inode table at ").nth(1).unwrap();
        let digits = after.split(|c: char| !c.is_ascii_digit()).next().unwrap();
        digits.parse().unwrap()
    }

    /// Changes the first block of the directory at `path` with `edit`, then writes the
    /// block's checksum anew: a leaf's (which ends before its tail), or a hash root's.
    fn edit_block(&self, path: &str, checksum: Checksum, edit: impl FnOnce(&mut [u8])) {
        let block = debugfs(self.image, &format!("bmap {path} 0"));
        let block: usize = block.trim().parse().unwrap();
        let (number, generation) = self.inode(path);
        let seed = crc32c(self.seed, &number.to_le_bytes());
        let seed = crc32c(seed, &generation.to_le_bytes());
        let mut bytes = std::fs::read(self.image).unwrap();
        let start = block * self.block_size;
        let data = &mut bytes[start..start + self.block_size];
        edit(data);
        match checksum {
            Checksum::Leaf => {
                let tail = self.block_size - 12;
                let sum = crc32c(seed, &data[..tail]);
                set32(data, tail + 8, sum);
            }
            Checksum::HashRoot => fix_dx_root_checksum(data, seed),
        }
        std::fs::write(self.image, bytes).unwrap();
    }

    /// Changes the checksum tail of `/usr/bin`'s block with `edit`.
    fn edit_tail(&self, edit: impl FnOnce(&mut [u8])) {
        self.edit_block("/usr/bin", Checksum::Leaf, |block| {
            let at = block.len() - 12;
            edit(&mut block[at..])
        });
    }

    /// Changes the entry `name` in the first block of the directory at `path` with `edit`
    /// (which gets the entry's bytes to the block's end).
    fn edit_entry(&self, path: &str, name: &[u8], edit: impl FnOnce(&mut [u8])) {
        self.edit_block(path, Checksum::Leaf, |block| {
            let mut at = 0;
            loop {
                let rec_len = usize::from(u16::from_le_bytes([block[at + 4], block[at + 5]]));
                let len = usize::from(block[at + 6]);
                if &block[at + 8..at + 8 + len] == name {
                    return edit(&mut block[at..]);
                }
                at += rec_len;
                assert!(at < block.len(), "no {name:?} in {path}");
            }
        });
    }
}
