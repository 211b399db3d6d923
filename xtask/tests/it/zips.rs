//! Release zips made to be read differently, or at great cost: local headers that disagree
//! with the central directory (which `unzip -t` calls broken too), directories declaring
//! millions of entries (refused within the memory budget, whatever their end records say), and
//! the streaming writers' data descriptors, which real zips have and which must be read.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask_testkit::fixture::{self, Release};
use xtask_testkit::mirror::Mirror;
use xtask_testkit::{
    checked_output, checked_output_bytes, checked_output_with_input, Run, Workspace,
};

use crate::support::{workspace, CHECKSUM, IMAGE, VERSION};

const ZIP: &str = "alloy-linux-amd64.zip";

/// The peak memory a build may reach to refuse a zip, whatever the zip: the tool's budget.
const MEMORY_BUDGET_KIB: u64 = 64 << 10;

/// `xtask build` of the local zip at `zip` (offline, verified by its digest), with --timings:
/// the run, and the build's peak memory in KiB.
fn build_local(ws: &Workspace, zip: &Path) -> (Run, u64) {
    let digest = fixture::sha256_hex(&std::fs::read(zip).unwrap());
    let timings = ws.tmp.path().join("timings.json");
    let zip_arg = zip.to_str().unwrap();
    let args = ["--zip", zip_arg, "--sha256", &digest, "--timings"];
    let mut command = ws.build_command("http://127.0.0.1:9/unused", VERSION, &args);
    let run = Run::from_command(command.arg(&timings));
    let timings: serde_json::Value = serde_json::from_slice(&std::fs::read(&timings).unwrap())
        .unwrap_or_else(|e| panic!("--timings ({e}):\n{}", run.stderr));
    (run, timings["peak_rss_kib"].as_u64().unwrap())
}

/// Offset of the first record with `signature` in `bytes`.
fn record(bytes: &[u8], signature: [u8; 4]) -> usize {
    bytes
        .windows(4)
        .position(|w| w == signature)
        .expect("a record")
}

const LOCAL: [u8; 4] = *b"PK\x03\x04";

/// The fixture's zip with its local header changed by `patch` (given the header's offset),
/// and what the build must say of it; `unzip_calls_broken`: whether `unzip -t` fails on it
/// too (it checks the method, the compressed size, the CRC and the name against the local
/// header, not the uncompressed size, which streaming readers take from there).
type Patch = fn(&mut [u8], usize);
const DISAGREEING: [(&str, Patch, &str, bool); 5] = [
    ("method", |z, l| z[l + 8] = 0, "compression method 0", true),
    (
        "compressed size",
        |z, l| z[l + 18] ^= 1,
        "compressed size",
        true,
    ),
    ("size", |z, l| z[l + 22] ^= 1, "says size", false),
    ("CRC", |z, l| z[l + 14] ^= 1, "CRC-32", true),
    ("name", |z, l| z[l + 30] = b'X', "the name", true),
];

/// Zips whose local header says other than the central directory are refused, naming the
/// field, and leave nothing behind; `unzip -t` calls them broken as well.
#[test]
fn zips_whose_local_header_disagrees_with_the_directory_are_refused() {
    let good = Release::new(VERSION).assets[ZIP].clone();
    let local = record(&good, LOCAL);
    for (field, patch, said, unzip_calls_broken) in DISAGREEING {
        let mut zip = good.clone();
        patch(&mut zip, local);
        let ws = workspace();
        let path = ws.tmp.path().join(ZIP);
        std::fs::write(&path, &zip).unwrap();
        let unzip = Command::new("unzip")
            .arg("-tq")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            !unzip.status.success(),
            unzip_calls_broken,
            "{field}: unzip -t said {unzip:?}"
        );
        let mirror = Mirror::with_release(&Release::new(VERSION).with_zip("amd64", zip));
        let run = ws.build(&mirror.base_url, VERSION, &[]).case(field);
        run.assert_fails_with(&["is not a consistent zip archive", said]);
        assert_eq!(ws.out_names(), Vec::<String>::new(), "{field}");
    }
}

/// A zip whose central directory holds `entries` entries (unique names, all pointing at the
/// one local header), declared by zip64 end records; with `hidden`, those end records sit in
/// the comment of a plain end record declaring only the first entry (what unzip and the zip
/// crate read is then the big directory, what a reader taking the record that ends the file
/// reads is the small one).
fn zip_with_entries(path: &Path, entries: u32, hidden: bool) {
    let name = b"alloy-linux-amd64";
    let binary = b"\x7fELF";
    let mut out = Vec::with_capacity(entries as usize * 56 + 4096);
    out.extend_from_slice(&LOCAL);
    out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc32(binary).to_le_bytes());
    out.extend_from_slice(&(binary.len() as u32).to_le_bytes());
    out.extend_from_slice(&(binary.len() as u32).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(name);
    out.extend_from_slice(binary);
    let central = |out: &mut Vec<u8>, entry_name: &[u8], crc: u32, size: u32| {
        out.extend_from_slice(b"PK\x01\x02\x1e\x03\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(entry_name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&(0o100755u32 << 16).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(entry_name);
    };
    let big_at = out.len() as u64;
    central(&mut out, name, crc32(binary), binary.len() as u32);
    for i in 1..entries {
        central(&mut out, format!("{i:07}").as_bytes(), 0, 0);
    }
    let big_size = out.len() as u64 - big_at;
    let mut zip64 = Vec::new();
    let zip64_at = if hidden { out.len() + 22 } else { out.len() } as u64;
    zip64.extend_from_slice(b"PK\x06\x06");
    zip64.extend_from_slice(&44u64.to_le_bytes());
    zip64.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    zip64.extend_from_slice(&u64::from(entries).to_le_bytes());
    zip64.extend_from_slice(&u64::from(entries).to_le_bytes());
    zip64.extend_from_slice(&big_size.to_le_bytes());
    zip64.extend_from_slice(&big_at.to_le_bytes());
    zip64.extend_from_slice(b"PK\x06\x07\x00\x00\x00\x00");
    zip64.extend_from_slice(&zip64_at.to_le_bytes());
    zip64.extend_from_slice(&1u32.to_le_bytes());
    zip64.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\xff\xff\xff\xff");
    zip64.extend_from_slice(&[0xff; 8]);
    if hidden {
        // The plain end record: one entry (the first of the big directory), then the rest as
        // its comment, with a byte after it so that it does not end the file.
        let first = 46 + name.len() as u32;
        out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00");
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&(big_at as u32).to_le_bytes());
        out.extend_from_slice(&(zip64.len() as u16 + 3).to_le_bytes());
        out.extend_from_slice(&zip64);
        out.extend_from_slice(&[0, 0, b'!']);
    } else {
        out.extend_from_slice(&zip64);
        out.extend_from_slice(&[0, 0]);
    }
    std::fs::write(path, out).unwrap();
}

/// CRC-32 (IEEE), bit by bit: for a few bytes.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Zips of a million and five million entries (53 and 265 MB of central directory), and a
/// million declared by end records hidden in the comment of a plain one that declares one:
/// each refused, from its end records, with the build's peak memory (as --timings reports it)
/// within the budget. unzip lists every one of those entries: the zips are what they claim.
#[test]
fn zips_of_millions_of_entries_are_refused_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(u32, bool, &[&str]); 3] = [
        (
            1_000_000,
            false,
            &["declares 1000000 entries", "refusing it"],
        ),
        (
            5_000_000,
            false,
            &["declares 5000000 entries", "refusing it"],
        ),
        (
            1_000_000,
            true,
            &["holds another end record", "not a valid zip"],
        ),
    ];
    let mut peaks = Vec::new();
    for (entries, hidden, said) in cases {
        let case = format!("{entries} entries, hidden: {hidden}");
        let zip = dir.path().join(ZIP);
        zip_with_entries(&zip, entries, hidden);
        // (Warnings about the hidden records may make it exit non-zero.)
        let listed = Command::new("zipinfo")
            .arg("-t")
            .arg(&zip)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.contains(&format!("{entries} files")),
            "{case}: zipinfo -t says {listed}"
        );
        let ws = workspace();
        let (run, peak_kib) = build_local(&ws, &zip);
        assert!(
            peak_kib < MEMORY_BUDGET_KIB,
            "{case}: peak memory {peak_kib} KiB"
        );
        run.case(&case).assert_fails_with(said);
        assert_eq!(ws.out_names(), Vec::<String>::new(), "{case}");
        peaks.push((case, peak_kib));
    }
    eprintln!("peak memory of each refused build (KiB): {peaks:?}");
}

/// Zips written by streaming writers, whose CRC and sizes follow the data in a data
/// descriptor: Info-ZIP's zip writing to a pipe, and Python's zipfile writing to an unseekable
/// file, with and without zip64 (8-byte sizes, for a small file too). `unzip -t` accepts each;
/// so does the build, and the image holds the binary.
#[test]
fn zips_from_streaming_writers_build() {
    let binary = fixture::fake_alloy(VERSION, "amd64");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("alloy-linux-amd64");
    std::fs::write(&source, &binary).unwrap();
    let python = "import sys, zipfile\n\
        class Pipe:\n    def __init__(self, f): self.f = f\n    def write(self, b): return self.f.write(b)\n    def flush(self): self.f.flush()\n\
        with open(sys.argv[1], 'wb') as f:\n    with zipfile.ZipFile(Pipe(f), 'w', zipfile.ZIP_DEFLATED) as z:\n        info = zipfile.ZipInfo('alloy-linux-amd64')\n        info.compress_type = zipfile.ZIP_DEFLATED\n        with z.open(info, 'w', force_zip64=sys.argv[2] == '64') as w:\n            w.write(sys.stdin.buffer.read())\n";
    let mut made: Vec<(&str, PathBuf)> = Vec::new();
    for width in ["32", "64"] {
        let zip = dir.path().join(format!("python-{width}.zip"));
        let mut command = Command::new("python3");
        command.args(["-c", python]).arg(&zip).arg(width);
        checked_output_with_input(&mut command, &binary);
        made.push((
            if width == "64" {
                "Python, zip64"
            } else {
                "Python"
            },
            zip,
        ));
    }
    let piped = dir.path().join("info-zip.zip");
    let zipped = checked_output_bytes(
        Command::new("zip")
            .args(["-q", "-", "alloy-linux-amd64"])
            .current_dir(dir.path()),
    );
    std::fs::write(&piped, zipped).unwrap();
    made.push(("Info-ZIP to a pipe", piped));
    for (writer, zip) in made {
        let bytes = std::fs::read(&zip).unwrap();
        assert_eq!(
            bytes[record(&bytes, LOCAL) + 6] & 8,
            8,
            "{writer}: no descriptor"
        );
        checked_output(Command::new("unzip").arg("-tq").arg(&zip));
        let ws = workspace();
        let (run, _) = build_local(&ws, &zip);
        run.case(writer).assert_ok();
        assert_eq!(ws.out_names(), [IMAGE, CHECKSUM], "{writer}");
        assert_eq!(
            xtask_testkit::ext4::cat(&ws.image(IMAGE), "/usr/bin/alloy"),
            binary,
            "{writer}"
        );
    }
}
