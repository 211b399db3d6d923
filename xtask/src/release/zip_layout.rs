//! The zip's own records, read before the zip crate parses anything and checked against each
//! other: how many entries the end records declare and how large the central directory is
//! (bounded: a zip of a million empty entries must not cost gigabytes of memory to refuse), and
//! whether the one entry's local header agrees with its central directory entry (method, name,
//! CRC, sizes): tools that read the local header (`unzip`, streaming readers) and tools that
//! read the directory would otherwise see different files.
//!
//! Offsets and signatures are APPNOTE.TXT's (PKWARE's zip specification), sections 4.3.7
//! (local file header), 4.3.9 (data descriptor), 4.3.12 (central directory header), 4.3.14-16
//! (zip64 end records and end of central directory) and 4.5.3 (zip64 extended information).

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context};

use crate::util::checksums::shown;
use crate::util::le::{u16_at, u32_at, u64_at};

const END_SIGNATURE: u32 = 0x0605_4b50;
const END_SIZE: usize = 22;
const MAX_COMMENT: usize = 0xffff;
const ZIP64_LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_SIZE: u64 = 20;
const ZIP64_END_SIGNATURE: u32 = 0x0606_4b50;
const ZIP64_END_SIZE: usize = 56;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const CENTRAL_SIZE: usize = 46;
const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
const LOCAL_SIZE: usize = 30;
const DESCRIPTOR_SIGNATURE: u32 = 0x0807_4b50;
/// The zip64 extended information extra field's id.
const ZIP64_EXTRA: u16 = 0x0001;
/// General purpose flag bit 3: CRC and sizes follow the data in a data descriptor.
const FLAG_DATA_DESCRIPTOR: u16 = 0x0008;
/// A 16- or 32-bit field holding this says "see the zip64 record".
const U16_MAX: u64 = 0xffff;
const U32_MAX: u64 = 0xffff_ffff;

/// The most central directory we read: one entry's header with the longest name, extra field
/// and comment a zip can hold is under 200 KiB.
pub const MAX_DIRECTORY: u64 = 256 << 10;

/// What the end records say about the central directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directory {
    pub entries: u64,
    pub size: u64,
    pub offset: u64,
}

/// The one entry, as its central directory header or its local header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRecord {
    pub flags: u16,
    pub method: u16,
    pub crc: u32,
    pub compressed: u64,
    pub size: u64,
    pub name: Vec<u8>,
    /// Where the local header is (central directory only).
    pub local_offset: u64,
    /// Whether it carries a zip64 extended information field: a data descriptor after a local
    /// header that does has 8-byte sizes (APPNOTE 4.3.9.2).
    pub zip64_extra: bool,
}

impl EntryRecord {
    /// A record from the fields both headers hold, in the same order from `at` on (8 in the
    /// central directory's, 6 in a local one): flags, method, time and date, CRC, compressed
    /// size, size.
    fn from_shared_fields(header: &[u8], at: usize, name: &[u8], local_offset: u64) -> Self {
        EntryRecord {
            flags: u16_at(header, at),
            method: u16_at(header, at + 2),
            crc: u32_at(header, at + 8),
            compressed: u64::from(u32_at(header, at + 12)),
            size: u64::from(u32_at(header, at + 16)),
            name: name.to_vec(),
            local_offset,
            zip64_extra: false,
        }
    }
}

fn read_at(file: &File, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, offset)
        .with_context(|| format!("reading {len} bytes at offset {offset}"))?;
    Ok(bytes)
}

/// The end of central directory record (and, where it defers to it, the zip64 one) of a zip of
/// `size` bytes. The record is the last one whose comment ends exactly at the end of the file.
pub fn directory(file: &File, size: u64) -> anyhow::Result<Directory> {
    let tail_len = size.min((END_SIZE + MAX_COMMENT) as u64);
    if tail_len < END_SIZE as u64 {
        bail!("it is {size} bytes long, shorter than a zip's end record");
    }
    let tail_start = size - tail_len;
    let tail = read_at(file, tail_start, tail_len as usize)?;
    let at = (0..=tail.len() - END_SIZE)
        .rev()
        .find(|&at| {
            u32_at(&tail, at) == END_SIGNATURE
                && at + END_SIZE + usize::from(u16_at(&tail, at + 20)) == tail.len()
        })
        .context("it has no end of central directory record: it is not a zip")?;
    // unzip takes the last end record there is, the zip crate tries every one from the last
    // backwards: another one in this one's comment would have them read another directory.
    if tail[at + 1..]
        .windows(4)
        .any(|w| w == END_SIGNATURE.to_le_bytes())
    {
        bail!("its end record's comment holds another end record: readers would disagree on which directory is the zip's");
    }
    let end = &tail[at..at + END_SIZE];
    // Disk numbers, and the entries on this disk against all of them: a multi-disk archive
    // (which unzip refuses, and the zip crate skips to look for another end record).
    if u16_at(end, 4) != 0 || u16_at(end, 6) != 0 || u16_at(end, 8) != u16_at(end, 10) {
        bail!("its end record says it is part of a multi-disk archive");
    }
    let mut directory = Directory {
        entries: u64::from(u16_at(end, 10)),
        size: u64::from(u32_at(end, 12)),
        offset: u64::from(u32_at(end, 16)),
    };
    let deferred =
        directory.entries == U16_MAX || directory.size == U32_MAX || directory.offset == U32_MAX;
    if deferred {
        let end_offset = tail_start + at as u64;
        let locator_offset = end_offset
            .checked_sub(ZIP64_LOCATOR_SIZE)
            .context("its end record defers to a zip64 record that is not there")?;
        let locator = read_at(file, locator_offset, ZIP64_LOCATOR_SIZE as usize)?;
        if u32_at(&locator, 0) != ZIP64_LOCATOR_SIGNATURE {
            bail!("its end record defers to a zip64 record that is not there");
        }
        let record = read_at(file, u64_at(&locator, 8), ZIP64_END_SIZE)?;
        if u32_at(&record, 0) != ZIP64_END_SIGNATURE {
            bail!("its zip64 end record is not where its locator says");
        }
        directory = Directory {
            entries: u64_at(&record, 32),
            size: u64_at(&record, 40),
            offset: u64_at(&record, 48),
        };
    }
    let end_of_directory = directory.offset.checked_add(directory.size);
    if end_of_directory.is_none_or(|end| end > size) {
        bail!(
            "its central directory ({} bytes at offset {}) lies beyond its {size} bytes",
            directory.size,
            directory.offset
        );
    }
    Ok(directory)
}

/// Replaces `0xffffffff` sizes and offsets with the zip64 extra field's values, in the order the
/// specification gives them (size, compressed size, local header offset), each present only
/// where its field says so.
fn apply_zip64(record: &mut EntryRecord, extra: &[u8], with_offset: bool) -> anyhow::Result<()> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let (id, len) = (u16_at(extra, at), usize::from(u16_at(extra, at + 2)));
        let body = extra
            .get(at + 4..at + 4 + len)
            .context("an extra field runs past its header")?;
        at += 4 + len;
        if id != ZIP64_EXTRA {
            continue;
        }
        record.zip64_extra = true;
        let mut values = body.chunks_exact(8).map(|v| u64_at(v, 0));
        let mut take = |field: &mut u64| -> anyhow::Result<()> {
            if *field == U32_MAX {
                *field = values.next().context("a zip64 extra field is too short")?;
            }
            Ok(())
        };
        take(&mut record.size)?;
        take(&mut record.compressed)?;
        if with_offset {
            take(&mut record.local_offset)?;
        }
        return Ok(());
    }
    Ok(())
}

/// The name and the extra field of a header of `fixed` bytes whose name and extra lengths are
/// the two 16-bit fields at `lengths`; `None` when the header is cut short.
fn name_and_extra(bytes: &[u8], fixed: usize, lengths: usize) -> Option<(&[u8], &[u8])> {
    let name_len = usize::from(u16_at(bytes, lengths));
    let extra_len = usize::from(u16_at(bytes, lengths + 2));
    let name = bytes.get(fixed..fixed + name_len)?;
    let extra = bytes.get(fixed + name_len..fixed + name_len + extra_len)?;
    Some((name, extra))
}

/// The central directory's one entry, read from `directory` (already bounded).
pub fn central_entry(file: &File, directory: &Directory) -> anyhow::Result<EntryRecord> {
    let bytes = read_at(file, directory.offset, directory.size as usize)?;
    if bytes.len() < CENTRAL_SIZE || u32_at(&bytes, 0) != CENTRAL_SIGNATURE {
        bail!("its central directory does not start with an entry");
    }
    let (name, extra) = name_and_extra(&bytes, CENTRAL_SIZE, 28)
        .context("its central directory entry is cut short")?;
    let local_offset = u64::from(u32_at(&bytes, 42));
    let mut record = EntryRecord::from_shared_fields(&bytes, 8, name, local_offset);
    apply_zip64(&mut record, extra, true)?;
    Ok(record)
}

/// The entry's local header, and where its data starts.
pub fn local_entry(file: &File, central: &EntryRecord) -> anyhow::Result<(EntryRecord, u64)> {
    let header = read_at(file, central.local_offset, LOCAL_SIZE)?;
    if u32_at(&header, 0) != LOCAL_SIGNATURE {
        bail!(
            "there is no local header where its central directory says (offset {})",
            central.local_offset
        );
    }
    let name_len = usize::from(u16_at(&header, 26));
    let extra_len = usize::from(u16_at(&header, 28));
    let variable = read_at(
        file,
        central.local_offset + LOCAL_SIZE as u64,
        name_len + extra_len,
    )?;
    let name = &variable[..name_len];
    let mut record = EntryRecord::from_shared_fields(&header, 6, name, central.local_offset);
    apply_zip64(&mut record, &variable[name_len..], false)?;
    let data_start = central.local_offset + (LOCAL_SIZE + name_len + extra_len) as u64;
    Ok((record, data_start))
}

/// Reads what there is of `len` bytes at `offset` (fewer at the end of the file).
fn read_up_to(file: &File, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0; len];
    let mut got = 0;
    while got < bytes.len() {
        let at = offset
            .checked_add(got as u64)
            .context("its offsets overflow")?;
        match file.read_at(&mut bytes[got..], at) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading at offset {at}")),
        }
    }
    bytes.truncate(got);
    Ok(bytes)
}

/// What a data descriptor at `at` says, and how long it is: CRC, compressed size, size. Its
/// signature is optional (APPNOTE 4.3.9.3); its sizes take 8 bytes each when `zip64`.
fn descriptor(file: &File, at: u64, zip64: bool) -> anyhow::Result<((u32, u64, u64), u64)> {
    let fields_len = if zip64 { 20 } else { 12 };
    let bytes = read_up_to(file, at, 4 + fields_len)?;
    let signed = bytes.get(..4) == Some(&DESCRIPTOR_SIGNATURE.to_le_bytes()[..]);
    let fields = if signed { &bytes[4..] } else { &bytes[..] };
    if fields.len() < fields_len {
        bail!("its data descriptor (at offset {at}) is cut short by the end of the file");
    }
    let read = if zip64 {
        (u32_at(fields, 0), u64_at(fields, 4), u64_at(fields, 12))
    } else {
        (
            u32_at(fields, 0),
            u64::from(u32_at(fields, 4)),
            u64::from(u32_at(fields, 8)),
        )
    };
    let len = if signed { 4 } else { 0 } + fields_len as u64;
    Ok((read, len))
}

/// Refuses an entry whose local header (or data descriptor) says other than its central
/// directory entry, naming the first field that differs, or that does not lie wholly before
/// the central `directory` (where every writer puts it, and where no record can overlap it).
pub fn check_agreement(
    file: &File,
    central: &EntryRecord,
    directory: &Directory,
) -> anyhow::Result<()> {
    let (local, data_start) = local_entry(file, central)?;
    let differs = |field: &str, local: String, central: String| {
        anyhow::anyhow!(
            "its local header says {field} {local}, its central directory {central}: tools would read different files"
        )
    };
    if local.name != central.name {
        let show = |n: &[u8]| shown(&String::from_utf8_lossy(n));
        return Err(differs("the name", show(&local.name), show(&central.name)));
    }
    if local.method != central.method {
        let (l, c) = (local.method.to_string(), central.method.to_string());
        return Err(differs("compression method", l, c));
    }
    let deferred = local.flags & FLAG_DATA_DESCRIPTOR != 0;
    if (central.flags & FLAG_DATA_DESCRIPTOR != 0) != deferred {
        return Err(differs(
            "data-descriptor flag",
            deferred.to_string(),
            (!deferred).to_string(),
        ));
    }
    let data_end = data_start
        .checked_add(central.compressed)
        .context("its sizes overflow")?;
    let ((crc, compressed, size), entry_end) = if deferred {
        // 8-byte sizes after a local header with a zip64 field, or where 4 bytes cannot hold them.
        let zip64 = local.zip64_extra || central.size >= U32_MAX || central.compressed >= U32_MAX;
        let (read, len) = descriptor(file, data_end, zip64)?;
        (read, data_end.saturating_add(len))
    } else {
        ((local.crc, local.compressed, local.size), data_end)
    };
    if entry_end > directory.offset {
        bail!(
            "its entry (local header at offset {}, {} bytes of data) runs into its central directory at offset {}",
            central.local_offset,
            central.compressed,
            directory.offset
        );
    }
    for (field, local, central) in [
        ("CRC-32", u64::from(crc), u64::from(central.crc)),
        ("compressed size", compressed, central.compressed),
        ("size", size, central.size),
    ] {
        if local != central {
            return Err(differs(field, local.to_string(), central.to_string()));
        }
    }
    Ok(())
}

/// The zip as a reader that parses it (the zip crate) gets to see it: the file up to the end of
/// the central directory the end records bound ([`directory`]), then an end record of our own
/// that says just that (those entries, that size, that offset, one disk, no comment). The zip
/// crate looks for end records in the last 64 KiB and falls back from one it rejects to any
/// earlier one (a "record" inside the binary's compressed bytes, declaring a million entries);
/// here there is only ours, which it accepts, so it parses the directory we bounded, no other.
pub struct DirectoryView<'f> {
    file: &'f File,
    /// Where the central directory ends: the file's bytes stop here.
    cut: u64,
    end: [u8; END_SIZE],
    position: u64,
}

impl<'f> DirectoryView<'f> {
    /// The view of `file`, whose end records say `directory`.
    pub fn new(file: &'f File, directory: &Directory) -> anyhow::Result<DirectoryView<'f>> {
        let cut = directory
            .offset
            .checked_add(directory.size)
            .context("its central directory lies beyond any size")?;
        // Values a plain end record holds (0xffff... would defer to a zip64 record): true of
        // every zip whose directory [`directory`] let through for one binary of at most 2 GiB.
        let fits = |value: u64, max: u64| u32::try_from(value).ok().filter(|&v| u64::from(v) < max);
        let (Some(entries), Some(size), Some(offset)) = (
            fits(directory.entries, U16_MAX).and_then(|n| u16::try_from(n).ok()),
            fits(directory.size, U32_MAX),
            fits(directory.offset, U32_MAX),
        ) else {
            bail!(
                "its central directory ({} entries, {} bytes at offset {}) is not one a zip of one binary of at most 2 GiB has",
                directory.entries,
                directory.size,
                directory.offset
            );
        };
        // The crate finds the directory where ours says, or scans for one elsewhere.
        if entries > 0 && u32_at(&read_at(file, directory.offset, 4)?, 0) != CENTRAL_SIGNATURE {
            bail!("its central directory does not start with an entry");
        }
        let mut end = [0; END_SIZE];
        end[..4].copy_from_slice(&END_SIGNATURE.to_le_bytes());
        end[8..10].copy_from_slice(&entries.to_le_bytes());
        end[10..12].copy_from_slice(&entries.to_le_bytes());
        end[12..16].copy_from_slice(&size.to_le_bytes());
        end[16..20].copy_from_slice(&offset.to_le_bytes());
        Ok(DirectoryView {
            file,
            cut,
            end,
            position: 0,
        })
    }

    fn len(&self) -> u64 {
        self.cut.saturating_add(END_SIZE as u64)
    }
}

impl std::io::Read for DirectoryView<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = if self.position < self.cut {
            let left = self.cut - self.position;
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.file.read_at(&mut buf[..want], self.position)?
        } else {
            let at = usize::try_from(self.position - self.cut).unwrap_or(usize::MAX);
            let tail = self.end.get(at..).unwrap_or_default();
            let n = buf.len().min(tail.len());
            buf[..n].copy_from_slice(&tail[..n]);
            n
        };
        self.position = self.position.saturating_add(n as u64);
        Ok(n)
    }
}

impl std::io::Seek for DirectoryView<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let (base, delta) = match to {
            std::io::SeekFrom::Start(at) => (0, i128::from(at)),
            std::io::SeekFrom::End(delta) => (self.len(), i128::from(delta)),
            std::io::SeekFrom::Current(delta) => (self.position, i128::from(delta)),
        };
        let position = u64::try_from(i128::from(base) + delta).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the zip",
            )
        })?;
        self.position = position;
        Ok(position)
    }
}
