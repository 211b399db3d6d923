//! ext4, one path step at a time, so that no link is ever followed, by two readers that must
//! agree:
//!
//! - [`volume`] and [`directory`], ours: the way the kernel goes. The superblock (a journal,
//!   which a read-only mount would not replay where ext4-view does, case-folded or encrypted
//!   directories, and features ours never have are refused), every inode on the way with the
//!   checks `ext4_iget` makes (its checksum, `i_extra_isize`, links, flags, the root of its
//!   extent tree), the extent nodes a read goes through, and every block of every directory
//!   on the way with the checks the kernel makes (the checksum tail, every entry, the hash
//!   index). Our own because ext4-view reads none of this raw, and checks less: it verified a
//!   directory block's checksum but not the tail's shape, where the kernel refuses the block.
//!   It finds the entry as the kernel's linear search does: the name must appear once in the
//!   whole listing (unused slots, inode 0, skipped as `ext4_match` skips them), every name in
//!   it one a directory may hold, its file type its inode's;
//! - `ext4-view`, a read-only reader made for untrusted images: the hash index (the kernel
//!   follows it when the filesystem has `dir_index`; both ways must find the same entry, and
//!   our checks of the index make its descent the kernel's), each inode's metadata (which
//!   must be ours), and the content of files and links, through its own extent walk; the
//!   first bytes of a file must be what ours reads through the kernel's.

mod directory;
mod volume;

use std::fs::File;

use anyhow::{ensure, Context};
use ext4_view::{Ext4Error, Metadata};

use super::{directory_within_limit, Lookup, Node, Tree};
use directory::Listing;
use volume::{Inode, Mapped, Volume, ROOT_INODE};

/// What a read of a file's first bytes brings in whole, at most: the kernel reads whole folios
/// (and may read ahead), so the extent nodes and blocks of the first 64 KiB are checked.
const READ_IN: u64 = 64 << 10;

pub struct Ext4 {
    fs: ext4_view::Ext4,
    volume: Volume,
}

impl Ext4 {
    pub fn open(file: File) -> anyhow::Result<Ext4> {
        let ours = file.try_clone().context("reading the ext4 image")?;
        // First: it refuses what ext4-view would read differently from a host.
        let volume = Volume::open(ours)?;
        let fs = ext4_view::Ext4::load(Box::new(file)).map_err(reader_error)?;
        Ok(Ext4 { fs, volume })
    }

    fn metadata(&self, path: &str) -> Result<Metadata, Ext4Error> {
        self.fs.symlink_metadata(absolute(path).as_str())
    }

    /// The inode behind `node`, which ours found.
    fn inode(&self, node: &Node) -> anyhow::Result<Inode> {
        let number = u32::try_from(node.id).context("an inode number out of range")?;
        self.volume.inode(number)
    }
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
    use ext4_view::FileType;
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

fn node(inode: &Inode, path: String) -> Node {
    Node {
        mode: inode.mode,
        uid: inode.uid,
        gid: inode.gid,
        size: inode.size,
        id: u64::from(inode.number),
        path,
        link: None,
    }
}

/// How ext4-view's metadata of a node differs from ours, if it does.
fn differs(node: &Node, metadata: &Metadata) -> Option<String> {
    let theirs = (
        st_mode(metadata),
        metadata.uid(),
        metadata.gid(),
        metadata.len(),
    );
    let ours = (node.mode, node.uid, node.gid, node.size);
    (theirs != ours).then(|| {
        format!(
            "mode {:o}, owner {}:{} and size {} where the kernel's way reads mode {:o}, owner \
             {}:{} and size {}",
            theirs.0, theirs.1, theirs.2, theirs.3, ours.0, ours.1, ours.2, ours.3
        )
    })
}

/// The file type a directory entry gives an inode of `mode` (`EXT4_FT_*`); 0 for none.
fn entry_type(mode: u32) -> u8 {
    match mode & 0o170000 {
        0o100000 => 1,
        0o040000 => 2,
        0o020000 => 3,
        0o060000 => 4,
        0o010000 => 5,
        0o140000 => 6,
        0o120000 => 7,
        _ => 0,
    }
}

impl Tree for Ext4 {
    fn root(&mut self) -> anyhow::Result<Node> {
        let inode = self
            .volume
            .inode(ROOT_INODE)
            .context("the root directory")?;
        let root = node(&inode, String::new());
        let metadata = self.metadata("").map_err(reader_error)?;
        if let Some(why) = differs(&root, &metadata) {
            anyhow::bail!("ext4-view reads the root directory with {why}");
        }
        Ok(root)
    }

    fn lookup(&mut self, dir: &Node, name: &str) -> anyhow::Result<Lookup> {
        directory_within_limit(dir)?;
        let inode = self.inode(dir)?;
        let listed = match directory::list(&self.volume, &inode, name.as_bytes())
            .with_context(|| format!("the directory /{} (inode {})", dir.path, dir.id))?
        {
            Listing::BadName(bad) => return Ok(Lookup::BadName(bad)),
            Listing::Listed(listed) => listed,
        };
        let path = match dir.path.is_empty() {
            true => name.to_string(),
            false => format!("{}/{name}", dir.path),
        };
        // The entry the kernel's linear search finds, checked as `ext4_lookup` checks it.
        let found = match (listed.count, listed.entry) {
            (1, Some((number, file_type))) => {
                let child = self
                    .volume
                    .child(inode.number, number)
                    .with_context(|| format!("the directory /{}'s entry {name:?}", dir.path))?;
                if file_type != entry_type(child.mode) {
                    return Ok(Lookup::Ambiguous(format!(
                        "lists {name:?} as file type {file_type} but its inode has mode {:o}",
                        child.mode
                    )));
                }
                Some(node(&child, path.clone()))
            }
            _ => None,
        };
        // The lookup ext4-view makes: through the hash index where the directory has one.
        let looked_up = match self.metadata(&path) {
            Ok(metadata) => Some(metadata),
            Err(Ext4Error::NotFound) => None,
            Err(error) => return Err(reader_error(error)),
        };
        Ok(match (listed.count, found, looked_up) {
            (0, _, None) => Lookup::Missing,
            (1, Some(found), Some(metadata)) => match differs(&found, &metadata) {
                None => Lookup::Found(found),
                Some(why) => Lookup::Ambiguous(format!("leads ext4-view to {name:?} with {why}")),
            },
            (1, _, None) => Lookup::Ambiguous(format!(
                "lists {name:?}, but its hash index does not lead to it"
            )),
            (0, _, Some(_)) => Lookup::Ambiguous(format!(
                "leads to {name:?} through its hash index, but does not list it"
            )),
            (count, ..) => Lookup::Ambiguous(format!("holds {name:?} {count} times")),
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
        let kernels = self.kernels_head(file, want)?;
        ensure!(
            head == kernels,
            "ext4-view reads other bytes at the start of /{} than the kernel's way does",
            file.path
        );
        Ok(head)
    }
}

impl Ext4 {
    /// The first `want` bytes of `file` as the kernel reads them: through the extent nodes and
    /// blocks of the first [`READ_IN`] bytes, every node checked; holes and unwritten extents
    /// read as zeros.
    fn kernels_head(&self, file: &Node, want: usize) -> anyhow::Result<Vec<u8>> {
        let inode = self.inode(file)?;
        let block_size = self.volume.sb.block_size;
        let read_in = file.size.min(READ_IN.max(want as u64));
        let blocks = u32::try_from(read_in.div_ceil(block_size)).context("a file too large")?;
        let mapped = self
            .volume
            .map(&inode, 0..blocks)
            .with_context(|| format!("/{}'s extent tree (inode {})", file.path, file.id))?;
        let mut head = Vec::with_capacity(want);
        for mapped in mapped {
            if head.len() >= want {
                break;
            }
            match mapped {
                Mapped::Block(physical) => head.extend(self.volume.read_block(physical)?),
                Mapped::Hole | Mapped::Unwritten => {
                    head.resize(head.len() + block_size as usize, 0)
                }
            }
        }
        head.truncate(want);
        Ok(head)
    }
}
