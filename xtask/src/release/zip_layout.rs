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
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
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
    let end = &tail[at..at + END_SIZE];
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
    let mut record = EntryRecord {
        flags: u16_at(&bytes, 8),
        method: u16_at(&bytes, 10),
        crc: u32_at(&bytes, 16),
        compressed: u64::from(u32_at(&bytes, 20)),
        size: u64::from(u32_at(&bytes, 24)),
        name: name.to_vec(),
        local_offset: u64::from(u32_at(&bytes, 42)),
    };
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
    let mut record = EntryRecord {
        flags: u16_at(&header, 6),
        method: u16_at(&header, 8),
        crc: u32_at(&header, 14),
        compressed: u64::from(u32_at(&header, 18)),
        size: u64::from(u32_at(&header, 22)),
        name: variable[..name_len].to_vec(),
        local_offset: central.local_offset,
    };
    apply_zip64(&mut record, &variable[name_len..], false)?;
    let data_start = central.local_offset + (LOCAL_SIZE + name_len + extra_len) as u64;
    Ok((record, data_start))
}

/// What a data descriptor after the data says: CRC, compressed size, size.
fn descriptor(file: &File, at: u64, zip64: bool) -> anyhow::Result<(u32, u64, u64)> {
    let bytes = read_at(file, at, 24)
        .or_else(|_| read_at(file, at, 16))
        .context("its data descriptor is missing")?;
    let fields = if u32_at(&bytes, 0) == DESCRIPTOR_SIGNATURE {
        &bytes[4..]
    } else {
        &bytes[..]
    };
    Ok(if zip64 {
        (u32_at(fields, 0), u64_at(fields, 4), u64_at(fields, 12))
    } else {
        (
            u32_at(fields, 0),
            u64::from(u32_at(fields, 4)),
            u64::from(u32_at(fields, 8)),
        )
    })
}

/// Refuses an entry whose local header (or data descriptor) says other than its central
/// directory entry, naming the first field that differs.
pub fn check_agreement(file: &File, central: &EntryRecord) -> anyhow::Result<()> {
    let (local, data_start) = local_entry(file, central)?;
    let differs = |field: &str, local: String, central: String| {
        anyhow::anyhow!(
            "its local header says {field} {local}, its central directory {central}: tools would read different files"
        )
    };
    if local.name != central.name {
        let show = |n: &[u8]| format!("{:?}", String::from_utf8_lossy(n));
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
    let (crc, compressed, size) = if deferred {
        let after = data_start
            .checked_add(central.compressed)
            .context("its sizes overflow")?;
        let zip64 = central.size >= U32_MAX || central.compressed >= U32_MAX;
        descriptor(file, after, zip64)?
    } else {
        (local.crc, local.compressed, local.size)
    };
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
