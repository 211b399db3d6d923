//! A squashfs directory read whole, and looked up in the kernel's way (`squashfs_lookup`).

use std::ops::ControlFlow;

use anyhow::{ensure, Context};

use super::{
    bad_name, c_string, Entry, Inode, Lookup, Position, Squashfs, DIR_COUNT, METADATA_SIZE,
    NAME_LEN,
};
use crate::util::le::{u16_at, u32_at};

/// The bytes a directory's size counts for `.` and `..`, which are not stored.
pub(super) const DOTS: u64 = 3;

/// A directory header: how many entries follow, and the inode block they share.
struct Header {
    count: u32,
    start: u32,
    base: u32,
}

impl Squashfs {
    fn header(&mut self, at: &mut Position) -> anyhow::Result<Header> {
        // count - 1 u32, inode block u32, base inode number u32
        let bytes = self.metadata(at, 12)?;
        let count = u32_at(&bytes, 0)
            .checked_add(1)
            .filter(|count| *count <= DIR_COUNT)
            .context("a directory header of over 256 entries")?;
        Ok(Header {
            count,
            start: u32_at(&bytes, 4),
            base: u32_at(&bytes, 8),
        })
    }

    fn entry(&mut self, at: &mut Position, header: &Header) -> anyhow::Result<Entry> {
        // offset u16, inode number delta i16, type u16, name length - 1 u16; the name follows
        let bytes = self.metadata(at, 8)?;
        let len = usize::from(u16_at(&bytes, 6)) + 1;
        ensure!(len <= NAME_LEN, "a directory entry name of {len} bytes");
        let name = self.metadata(at, len)?;
        Ok(Entry {
            name,
            inode: (u64::from(header.start) << 16) | u64::from(u16_at(&bytes, 0)),
            kind: u16_at(&bytes, 4),
            // As `squashfs_lookup`: unsigned, wrapping, the difference a signed 16-bit one.
            number: header
                .base
                .wrapping_add_signed(i32::from(u16_at(&bytes, 2) as i16)),
        })
    }

    /// Reads the whole listing of `dir`: every name must be one a directory may hold, and sort
    /// strictly after the one before it. The entry named `name`, if any.
    pub(super) fn list(
        &mut self,
        dir: &Inode,
        name: &[u8],
    ) -> anyhow::Result<Result<Option<Entry>, Lookup>> {
        let mut previous: Vec<u8> = Vec::new();
        let mut found = None;
        let refused = self.entries(dir, dir.listing, DOTS, |entry| {
            // `.` and `..` are not stored: any is a crafted one.
            if bad_name(&entry.name, &mut [1, 1]) {
                return ControlFlow::Break(Lookup::BadName(entry.name));
            }
            if entry.name <= previous {
                return ControlFlow::Break(Lookup::Ambiguous(format!(
                    "lists {:?} after {:?}: its names are not in order, and a host's kernel \
                     looks names up expecting them to be",
                    String::from_utf8_lossy(&entry.name),
                    String::from_utf8_lossy(&previous)
                )));
            }
            previous.clone_from(&entry.name);
            if entry.name == name {
                found = Some(entry);
            }
            ControlFlow::Continue(())
        })?;
        Ok(match refused {
            Some(refusal) => Err(refusal),
            None => Ok(found),
        })
    }

    /// The inode `name` leads to as the kernel looks it up: through the directory's index to
    /// the last indexed name not after it, then on until it is found or an entry's first byte
    /// is greater than its first.
    pub(super) fn kernel_lookup(
        &mut self,
        dir: &Inode,
        name: &[u8],
    ) -> anyhow::Result<Option<u64>> {
        let mut at = dir.listing;
        let mut length = DOTS;
        let mut index_at = dir.rest;
        for _ in 0..dir.index_count {
            // index u32 (bytes into the listing), start block u32, name length - 1 u32
            let bytes = self.metadata(&mut index_at, 12)?;
            let len = usize::try_from(u32_at(&bytes, 8)).unwrap_or(usize::MAX);
            if len >= NAME_LEN {
                break;
            }
            let indexed = self.metadata(&mut index_at, len + 1)?;
            if c_string(&indexed) > name {
                break;
            }
            let index = u32_at(&bytes, 0);
            length = u64::from(index) + DOTS;
            let offset = (index as usize + dir.listing.offset) % METADATA_SIZE;
            at = self.position(self.directory_table, u64::from(u32_at(&bytes, 4)), offset)?;
        }
        let found = self.entries(dir, at, length, |entry| {
            if name[0] < entry.name[0] {
                return ControlFlow::Break(None);
            }
            if entry.name == name {
                return ControlFlow::Break(Some(entry.inode));
            }
            ControlFlow::Continue(())
        })?;
        Ok(found.flatten())
    }

    /// Hands each entry of `dir`'s listing from `at` on (`length` bytes of the listing counted
    /// before it) to `visit`, until the listing ends or `visit` breaks: what it broke with.
    pub(super) fn entries<T>(
        &mut self,
        dir: &Inode,
        mut at: Position,
        mut length: u64,
        mut visit: impl FnMut(Entry) -> ControlFlow<T>,
    ) -> anyhow::Result<Option<T>> {
        while length < dir.size {
            let header = self.header(&mut at)?;
            length += 12;
            for _ in 0..header.count {
                let entry = self.entry(&mut at, &header)?;
                length += 8 + entry.name.len() as u64;
                if let ControlFlow::Break(stop) = visit(entry) {
                    return Ok(Some(stop));
                }
            }
        }
        Ok(None)
    }
}
