//! Taking the Alloy binary out of its release zip, and nothing else.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::zip_layout::{self, Directory, DirectoryView, MAX_DIRECTORY};
use crate::util::checksums::shown;
use crate::util::handoff::relay;

/// Larger than any Alloy binary; a zip that inflates beyond it is refused.
const MAX_BINARY_SIZE: u64 = 2 << 30;

/// Up to this many entries, a zip that should hold one is parsed to name what it holds.
const NAMED_ENTRIES: u64 = 16;

/// The one file in a verified release zip, checked, and still inside the zip.
pub struct BinaryEntry<'f> {
    archive: zip::ZipArchive<BufReader<DirectoryView<'f>>>,
    zip: PathBuf,
    name: String,
    /// Its size once inflated, as the zip's central directory says (the reader holds it to it).
    pub size: u64,
}

impl<'f> BinaryEntry<'f> {
    /// Finds the single entry `expected` in the open `file` (the zip at `zip`, named in
    /// messages). Reads the open file, never the path again: the bytes used are the bytes that
    /// were verified. Refuses an archive that holds anything else: more entries (two of the
    /// same name too), directories, links, or any other name (`../`, absolute paths).
    pub fn open(file: &'f File, zip: &Path, expected: &str) -> anyhow::Result<BinaryEntry<'f>> {
        let not_a_zip = || format!("{} is not a valid zip archive", zip.display());
        let directory = bounded_directory(file, zip, expected)?;
        // The crate parses only the directory just bounded: it sees no other end record.
        let view = DirectoryView::new(file, &directory).with_context(|| {
            format!(
                "{} is not a consistent zip archive; refusing it",
                zip.display()
            )
        })?;
        let mut archive = zip::ZipArchive::new(BufReader::new(view)).with_context(not_a_zip)?;
        // The zip crate lists one entry per name: two entries of one name would pass as one.
        if archive.has_duplicate_names() {
            bail!(
                "{} holds more than one entry of the same name (which one would be extracted depends on the tool); refusing it",
                zip.display()
            );
        }
        let names = archive
            .file_names()
            .map(|name| name.map(|n| n.into_owned()))
            .collect::<Result<Vec<String>, _>>()
            .with_context(|| format!("reading the entries of {}", zip.display()))?;
        if names.len() != 1 || names[0] != expected {
            let mut shown: Vec<String> = names.iter().take(5).map(|n| shown(n)).collect();
            if names.len() > 5 {
                shown.push(format!("and {} more", names.len() - 5));
            }
            bail!(
                "{} must hold exactly one file, {expected:?}, but holds {} entr{}: {}; refusing it",
                zip.display(),
                names.len(),
                if names.len() == 1 { "y" } else { "ies" },
                shown.join(", ")
            );
        }
        let entry = archive
            .by_index(0)
            .with_context(|| format!("reading {expected} in {}", zip.display()))?;
        if !entry.is_file() || entry.is_symlink() {
            bail!(
                "{expected:?} in {} is not a regular file; refusing it",
                zip.display()
            );
        }
        let size = entry.size();
        let crate_view = (entry.header_start(), entry.name_raw().to_vec());
        drop(entry);
        // The one entry as its own records say, the local header agreeing with the directory,
        // and the zip crate reading the same directory we did.
        let central = zip_layout::central_entry(file, &directory)
            .and_then(|central| {
                zip_layout::check_agreement(file, &central, &directory).map(|()| central)
            })
            .with_context(|| {
                format!(
                    "{} is not a consistent zip archive; refusing it",
                    zip.display()
                )
            })?;
        if (central.local_offset, central.name.clone(), central.size)
            != (crate_view.0, crate_view.1, size)
        {
            bail!(
                "{} reads differently depending on the reader (its directory is ambiguous); refusing it",
                zip.display()
            );
        }
        if size > MAX_BINARY_SIZE {
            bail!(
                "{expected} in {} inflates to {size} bytes, beyond {MAX_BINARY_SIZE}; refusing it",
                zip.display()
            );
        }
        Ok(BinaryEntry {
            archive,
            zip: zip.to_path_buf(),
            name: expected.to_string(),
            size,
        })
    }

    /// Inflates the entry from its start, through `use_it`. The reader gives exactly
    /// [`BinaryEntry::size`] bytes, or fails: a zip whose entry inflates to another length, or
    /// does not match its CRC, is refused, whatever its central directory says. Its errors name
    /// the zip; what `use_it` does with the bytes names itself.
    pub fn read<T>(
        &mut self,
        use_it: impl FnOnce(&mut dyn Read) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let what = format!("inflating {} from {}", self.name, self.zip.display());
        let entry = self.archive.by_index(0).context(what.clone())?;
        let mut exact = ExactLength {
            inner: entry,
            left: self.size,
            what,
        };
        use_it(&mut exact)
    }

    /// The first `n` bytes (fewer if the entry is shorter), to check a header before the rest is used.
    pub fn head(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        let want = n.min(self.size as usize);
        self.read(|r| {
            let mut head = vec![0; want];
            r.read_exact(&mut head)?;
            Ok(head)
        })
    }

    /// Inflates the entry into the new file `dest`, writing on another thread as it inflates.
    pub fn extract(&mut self, dest: &Path) -> anyhow::Result<u64> {
        let mut out =
            File::create_new(dest).with_context(|| format!("creating {}", dest.display()))?;
        self.read(|reader| {
            relay(reader, |chunks| {
                let mut written = 0;
                chunks.for_each(|chunk| {
                    written += chunk.len() as u64;
                    out.write_all(chunk)
                        .with_context(|| format!("writing {}", dest.display()))
                })?;
                Ok(written)
            })
        })
    }
}

/// The zip's central directory as its end records declare it (`zip` and `expected` name it in
/// messages), refused before any of it is parsed when it holds more than the one entry it
/// should (up to [`NAMED_ENTRIES`] are parsed, to name them) or more bytes than one needs.
fn bounded_directory(file: &File, zip: &Path, expected: &str) -> anyhow::Result<Directory> {
    let not_a_zip = || format!("{} is not a valid zip archive", zip.display());
    let size = file.metadata().with_context(not_a_zip)?.len();
    let directory = zip_layout::directory(file, size).with_context(not_a_zip)?;
    if directory.entries != 1
        && (directory.entries > NAMED_ENTRIES || directory.size > MAX_DIRECTORY)
    {
        bail!(
            "{} must hold exactly one file, {expected:?}, but its directory declares {} entries in {} bytes; refusing it",
            zip.display(),
            directory.entries,
            directory.size
        );
    }
    if directory.size > MAX_DIRECTORY {
        bail!(
            "{}'s central directory is {} bytes, more than one entry can need ({MAX_DIRECTORY}); refusing it",
            zip.display(),
            directory.size
        );
    }
    Ok(directory)
}

/// Gives exactly `left` bytes, and fails when the inner reader gives fewer or more; every error
/// says `what` was being read.
struct ExactLength<R> {
    inner: R,
    left: u64,
    what: String,
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read_exactly(buf)
            .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", self.what)))
    }
}

impl<R: Read> ExactLength<R> {
    fn read_exactly(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // The end the central directory promised: one byte more is a lie.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(
                    "it inflates to more bytes than the zip's directory says",
                )),
            };
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 && max > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "it ends {} bytes before the size the zip's directory says",
                    self.left
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use xtask_testkit::fixture::write_binary_zip;
    use zip::write::SimpleFileOptions;

    fn make_zip(path: &Path, build: impl FnOnce(&mut zip::ZipWriter<File>)) {
        let mut writer = zip::ZipWriter::new(File::create(path).unwrap());
        build(&mut writer);
        writer.finish().unwrap();
    }

    fn extract(zip: &Path, expected: &str, dest: &Path) -> anyhow::Result<u64> {
        let file = File::open(zip).unwrap();
        BinaryEntry::open(&file, zip, expected)?.extract(dest)
    }

    #[test]
    fn refuses_two_entries_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("twice.zip");
        // The writer refuses duplicates: write two names, then make the second like the first.
        make_zip(&zip, |w| {
            w.start_file("alloy-linux-amd64", SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"\x7fELF good").unwrap();
            w.start_file("alloy-linux-amd6X", SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"\x7fELF evil").unwrap();
        });
        let bytes = std::fs::read(&zip).unwrap();
        let patched = replace_all(&bytes, b"alloy-linux-amd6X", b"alloy-linux-amd64");
        assert_ne!(bytes, patched);
        let err = extract_error_of(&zip, &patched);
        assert!(
            err.contains("more than one entry of the same name"),
            "{err}"
        );
        assert!(!dir.path().join("out").exists());
    }

    fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = haystack.to_vec();
        let mut i = 0;
        while i + from.len() <= out.len() {
            if &out[i..i + from.len()] == from {
                out[i..i + from.len()].copy_from_slice(to);
                i += from.len();
            } else {
                i += 1;
            }
        }
        out
    }

    /// The central directory's uncompressed size of the one entry, set to `size`.
    /// Offset of the first record with `signature` in `bytes`.
    fn record(bytes: &[u8], signature: [u8; 4]) -> usize {
        (0..bytes.len() - 4)
            .find(|&i| bytes[i..i + 4] == signature)
            .expect("a record")
    }

    const LOCAL: [u8; 4] = [0x50, 0x4b, 0x03, 0x04];
    const CENTRAL: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];

    /// How extracting `alloy-linux-amd64` from `zip` fails, with every cause.
    fn extract_error(zip: &Path) -> String {
        let dest = zip.with_extension("out");
        format!(
            "{:#}",
            extract(zip, "alloy-linux-amd64", &dest).unwrap_err()
        )
    }

    /// [`extract_error`] of `bytes`, written as `zip`.
    fn extract_error_of(zip: &Path, bytes: &[u8]) -> String {
        std::fs::write(zip, bytes).unwrap();
        extract_error(zip)
    }

    /// The uncompressed size of the one entry set to `size`, in the central directory and the
    /// local header alike: the records agree, and only inflating can tell.
    fn declare_size(zip: &Path, size: u32) {
        let mut bytes = std::fs::read(zip).unwrap();
        let central = record(&bytes, CENTRAL);
        bytes[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
        let local = record(&bytes, LOCAL);
        bytes[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
        std::fs::write(zip, bytes).unwrap();
    }

    /// A local header that says other than the central directory (what `unzip -t` calls
    /// broken) is refused, naming the field; so is a directory declaring a million entries,
    /// before any of them is parsed.
    #[test]
    fn records_that_disagree_or_declare_too_much_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.zip");
        write_binary_zip(&good, &vec![7u8; 5000]);
        let bytes = std::fs::read(&good).unwrap();
        let local = record(&bytes, LOCAL);
        let central = record(&bytes, CENTRAL);
        type Patch = fn(&mut Vec<u8>, usize, usize);
        let cases: [(&str, Patch, &str); 5] = [
            ("method", |b, l, _| b[l + 8] = 0, "compression method 0"),
            ("size", |b, l, _| b[l + 22] ^= 1, "says size"),
            ("compressed", |b, l, _| b[l + 18] ^= 1, "compressed size"),
            ("crc", |b, l, _| b[l + 14] ^= 1, "CRC-32"),
            ("name", |b, l, _| b[l + 30] = b'X', "the name"),
        ];
        for (name, patch, expected) in cases {
            let mut patched = bytes.clone();
            patch(&mut patched, local, central);
            let zip = dir.path().join(format!("{name}.zip"));
            let err = extract_error_of(&zip, &patched);
            assert!(err.contains("not a consistent zip"), "{name}: {err}");
            assert!(err.contains(expected), "{name}: {err}");
        }

        // The end record of a zip that declares a million entries: refused from its 22 bytes.
        let mut declared = bytes.clone();
        let end = record(&declared, [0x50, 0x4b, 0x05, 0x06]);
        declared[end + 8..end + 10].copy_from_slice(&0xfffe_u16.to_le_bytes());
        declared[end + 10..end + 12].copy_from_slice(&0xfffe_u16.to_le_bytes());
        let zip = dir.path().join("many.zip");
        let err = extract_error_of(&zip, &declared);
        assert!(err.contains("declares 65534 entries"), "{err}");
    }

    /// An entry must inflate to exactly the size the zip's directory declares (which sizes the
    /// image before a byte is inflated): fewer or more bytes fail, naming the zip, and a
    /// declared size beyond the limit is refused before anything is inflated.
    #[test]
    fn refuses_an_entry_that_inflates_to_another_size_than_declared() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // More bytes than declared: the zip crate stops them itself; our reader would too.
        let more: &[&str] = &[
            "larger than its declared uncompressed size",
            "inflates to more bytes than the zip's directory says",
        ];
        let cases: [(u32, &[&str]); 3] = [
            (99_999, more),
            (
                100_001,
                &["ends 1 bytes before the size the zip's directory says"],
            ),
            (u32::MAX, &["beyond"]),
        ];
        for (declared, expected) in cases {
            let zip = dir.path().join(format!("{declared}.zip"));
            write_binary_zip(&zip, &content);
            declare_size(&zip, declared);
            let file = File::open(&zip).unwrap();
            let err = BinaryEntry::open(&file, &zip, "alloy-linux-amd64")
                .and_then(|mut binary| binary.read(|r| Ok(copy_all(r)?)))
                .unwrap_err();
            let err = format!("{err:#}");
            assert!(
                expected.iter().any(|e| err.contains(e)),
                "declared {declared}: {err}"
            );
            if declared != u32::MAX {
                assert!(err.contains("inflating alloy-linux-amd64 from"), "{err}");
            }
        }
    }

    /// A zip written by a streaming writer: sizes and CRC in a data descriptor after the
    /// data, 8 bytes wide when the local header carries a zip64 field (as Python's zipfile and
    /// the zip crate write it with zip64 forced), 4 bytes otherwise. Both are read, both agree.
    #[test]
    fn data_descriptors_are_read_in_either_width() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        for zip64 in [false, true] {
            let zip = dir.path().join(format!("stream-{zip64}.zip"));
            let mut writer = zip::ZipWriter::new_stream(File::create(&zip).unwrap());
            let options = SimpleFileOptions::default().large_file(zip64);
            writer.start_file("alloy-linux-amd64", options).unwrap();
            writer.write_all(&content).unwrap();
            writer.finish().unwrap();
            let bytes = std::fs::read(&zip).unwrap();
            assert_eq!(bytes[record(&bytes, LOCAL) + 6] & 8, 8, "a data descriptor");
            let dest = dir.path().join(format!("out-{zip64}"));
            extract(&zip, "alloy-linux-amd64", &dest).unwrap();
            assert_eq!(std::fs::read(dest).unwrap(), content, "zip64: {zip64}");
        }
    }

    /// A zip of one entry, made by hand: a local header (with a data descriptor flag and no
    /// sizes), `data`, its central directory entry (sizes as given, `size` in a zip64 field
    /// when it does not fit 32 bits) and the end record.
    fn deferred_entry_zip(data: &[u8], compressed: u32, size: u64) -> Vec<u8> {
        let name = b"alloy-linux-amd64";
        let mut out = Vec::new();
        out.extend_from_slice(&LOCAL);
        out.extend_from_slice(&[45, 0, 8, 0, 0, 0]); // version, flags (descriptor), stored
        out.extend_from_slice(&[0; 16]); // time, date, CRC, sizes: in the descriptor
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name);
        out.extend_from_slice(data);
        let central_at = out.len() as u32;
        let wide = size >= 0xffff_ffff;
        let extra: Vec<u8> = if wide {
            [&[1, 0, 8, 0][..], &size.to_le_bytes()].concat()
        } else {
            Vec::new()
        };
        let mut central = CENTRAL.to_vec();
        central.extend_from_slice(&[0x1e, 3, 45, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&0u32.to_le_bytes()); // CRC
        central.extend_from_slice(&compressed.to_le_bytes());
        let size32 = if wide { u32::MAX } else { size as u32 };
        central.extend_from_slice(&size32.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 6]); // comment, disk, internal attributes
        central.extend_from_slice(&(0o100755u32 << 16).to_le_bytes());
        central.extend_from_slice(&0u32.to_le_bytes()); // local header at 0
        central.extend_from_slice(name);
        central.extend_from_slice(&extra);
        out.extend_from_slice(&central);
        out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 1, 0, 1, 0]);
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&central_at.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    /// A data descriptor that the entry's sizes put at the very end of the file, with fewer
    /// bytes left than it needs (a zip64 one: 20), or running into the central directory: a
    /// refusal naming it, never a read past what was read (this panicked once).
    #[test]
    fn a_descriptor_cut_short_or_overlapping_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"\x7fELF stored".to_vec();
        let total = deferred_entry_zip(&data, 0, 5 << 30).len() as u32;
        let data_start = 30 + 17;
        for (left, expected) in [
            (10, "cut short by the end of the file"),
            (20, "runs into its central directory"),
            (16, "cut short by the end of the file"),
        ] {
            let compressed = total - left - data_start;
            let zip = dir.path().join(format!("left-{left}.zip"));
            let err = extract_error_of(&zip, &deferred_entry_zip(&data, compressed, 5 << 30));
            assert!(err.contains(expected), "{left} bytes left: {err}");
        }
    }

    /// A zip whose end record's comment holds a second end record (deferring to a zip64 one
    /// that declares many entries, all present): unzip and the zip crate read the second, we
    /// would read the first. Refused from the end records, before any entry is parsed.
    #[test]
    fn an_end_record_hidden_in_the_comment_of_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.zip");
        write_binary_zip(&good, b"\x7fELF");
        let bytes = std::fs::read(&good).unwrap();
        let end = record(&bytes, [0x50, 0x4b, 0x05, 0x06]);
        let mut comment = Vec::new();
        comment.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0]);
        comment.extend_from_slice(&[0xff; 12]);
        comment.extend_from_slice(&[0, 0, b'!']);
        let mut hidden = bytes[..end + 20].to_vec();
        hidden.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        hidden.extend_from_slice(&comment);
        let zip = dir.path().join("hidden.zip");
        let err = extract_error_of(&zip, &hidden);
        assert!(err.contains("holds another end record"), "{err}");

        // Parts of a multi-disk archive: unzip refuses them, the zip crate looks elsewhere.
        let mut split = bytes.clone();
        split[end + 4] = 1;
        let err = extract_error_of(&zip, &split);
        assert!(err.contains("multi-disk"), "{err}");
    }

    /// Every byte of a small zip (a plain one, and one with a data descriptor) set to 0, to
    /// 0xff and with its low or high bit flipped, every 2- and 4-byte field at its maximum, and
    /// the zip cut at every length: opening and inflating each ends in an answer, never a
    /// panic. (Thousands of zips, in process.)
    #[test]
    fn no_mutation_of_a_zip_panics_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..300u32).map(|i| (i * 31 % 256) as u8).collect();
        let plain = dir.path().join("plain.zip");
        write_binary_zip(&plain, &content);
        let streamed = dir.path().join("streamed.zip");
        let mut writer = zip::ZipWriter::new_stream(File::create(&streamed).unwrap());
        let options = SimpleFileOptions::default().large_file(true);
        writer.start_file("alloy-linux-amd64", options).unwrap();
        writer.write_all(&content).unwrap();
        writer.finish().unwrap();
        let mut tried = 0;
        for good in [plain, streamed] {
            let bytes = std::fs::read(&good).unwrap();
            let mut mutants: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
            for at in 0..bytes.len() {
                for byte in [0, 0xff, bytes[at] ^ 1, bytes[at] ^ 0x80] {
                    let mut mutant = bytes.clone();
                    mutant[at] = byte;
                    mutants.push(mutant);
                }
                for width in [2, 4] {
                    if at + width <= bytes.len() {
                        let mut mutant = bytes.clone();
                        mutant[at..at + width].fill(0xff);
                        mutants.push(mutant);
                    }
                }
            }
            let zip = dir.path().join("mutant.zip");
            for mutant in mutants {
                std::fs::write(&zip, &mutant).unwrap();
                let read = std::panic::catch_unwind(|| {
                    let file = File::open(&zip).unwrap();
                    let _ = BinaryEntry::open(&file, &zip, "alloy-linux-amd64")
                        .and_then(|mut binary| binary.read(|r| Ok(copy_all(r)?)));
                });
                assert!(read.is_ok(), "a panic on {mutant:02x?}");
                tried += 1;
            }
        }
        assert!(tried > 2000, "{tried} zips");
    }

    fn copy_all(reader: &mut dyn Read) -> std::io::Result<u64> {
        std::io::copy(reader, &mut std::io::sink())
    }

    #[test]
    fn extracts_the_one_expected_file() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("a.zip");
        write_binary_zip(&zip, b"\x7fELF binary");
        let dest = dir.path().join("alloy");
        assert_eq!(extract(&zip, "alloy-linux-amd64", &dest).unwrap(), 11);
        assert_eq!(std::fs::read(dest).unwrap(), b"\x7fELF binary");
    }

    #[test]
    fn refuses_extra_entries_wrong_names_directories_and_links() {
        let dir = tempfile::tempdir().unwrap();
        /// An entry of a zip: a file, a directory, or a link to a target.
        enum Entry {
            File(&'static str),
            Directory(&'static str),
            Link(&'static str, &'static str),
        }
        let cases: [(&str, &[Entry]); 6] = [
            (
                "extra",
                &[Entry::File("alloy-linux-amd64"), Entry::File("README")],
            ),
            ("traversal", &[Entry::File("../alloy-linux-amd64")]),
            ("nested", &[Entry::File("bin/alloy-linux-amd64")]),
            ("directory", &[Entry::Directory("alloy-linux-amd64")]),
            ("link", &[Entry::Link("alloy-linux-amd64", "/etc/passwd")]),
            ("empty", &[]),
        ];
        for (name, entries) in cases {
            let zip = dir.path().join(format!("{name}.zip"));
            make_zip(&zip, |w| {
                let options = SimpleFileOptions::default();
                for entry in entries {
                    match *entry {
                        Entry::File(path) => w.start_file(path, options),
                        Entry::Directory(path) => w.add_directory(path, options),
                        Entry::Link(path, target) => w.add_symlink(path, target, options),
                    }
                    .unwrap();
                }
            });
            let err = extract_error(&zip);
            assert!(err.contains("refusing it"), "{name}: {err}");
        }
        let not_zip = dir.path().join("not.zip");
        std::fs::write(&not_zip, "<html>rate limited</html>").unwrap();
        let err = format!(
            "{:#}",
            extract(&not_zip, "x", &dir.path().join("x")).unwrap_err()
        );
        assert!(err.contains("is not a valid zip archive"), "{err}");
    }
}
