//! squashfs inode numbers, as the kernel's inode cache uses them. `squashfs_lookup` asks the
//! cache for the number a directory entry gives (`iget_locked`), and reads the inode from
//! where the entry points only when no inode of that number is cached yet. So an entry whose
//! number is another inode's leads to whichever of the two a host read first: a file shown in
//! place of another, or a directory met twice ("would have caused loop"). Every entry of the
//! image must give the number stored in the inode it points to, and each number must belong to
//! one inode: the whole tree is walked once, when the image is opened.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use anyhow::{bail, ensure};

use super::lookup::DOTS;
use super::{Squashfs, DIRECTORY, EXTENDED_DIRECTORY};

/// The most entries walked: ours have a dozen; a crafted image is refused past this.
const ENTRY_LIMIT: usize = 1 << 16;

impl Squashfs {
    pub(super) fn check_inode_numbers(&mut self) -> anyhow::Result<()> {
        let root = self.inode(self.root)?;
        let mut owners: HashMap<u32, u64> = HashMap::from([(root.number, self.root)]);
        let mut directories = vec![self.root];
        let mut walked = HashSet::from([self.root]);
        let mut seen = 0usize;
        while let Some(reference) = directories.pop() {
            let dir = self.inode(reference)?;
            let mut entries = Vec::new();
            self.entries(&dir, dir.listing, DOTS, |entry| {
                entries.push((entry.inode, entry.number));
                ControlFlow::<()>::Continue(())
            })?;
            seen += entries.len();
            ensure!(
                seen <= ENTRY_LIMIT,
                "the squashfs image has over {ENTRY_LIMIT} directory entries, more than \
                 inspect walks"
            );
            for (reference, number) in entries {
                let inode = self.inode(reference)?;
                if inode.number != number {
                    bail!(
                        "a squashfs directory entry gives inode number {number}, but the inode \
                         it points to is number {}: a host's kernel may show another file there",
                        inode.number
                    );
                }
                if let Some(owner) = owners.insert(number, reference) {
                    ensure!(
                        owner == reference && !is_directory(inode.kind),
                        "two squashfs inodes (or a directory twice) have number {number}: a \
                         host's kernel shows whichever it read first"
                    );
                }
                if is_directory(inode.kind) && walked.insert(reference) {
                    directories.push(reference);
                }
            }
        }
        Ok(())
    }
}

fn is_directory(kind: u16) -> bool {
    kind == DIRECTORY || kind == EXTENDED_DIRECTORY
}
