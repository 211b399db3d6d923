//! A generated, Alloy-sized release: a deterministic x86-64 ELF that deflates like a stripped Go
//! binary, zipped the way Grafana zips it, with its SHA256SUMS.
//!
//! The content is a mix of 4 KiB chunks: incompressible ones (like compressed or hashed data in
//! a Go binary), machine-code-like ones (basic blocks from a fixed set, hot ones more often, some
//! with a changed byte), text-like ones (symbol names, paths, messages) and tables (growing
//! offsets, like pclntab). The mix was tuned so that zip's deflate leaves 30% (a real 90 MB
//! stripped Go binary here: 29.9%); the unit test holds it between 20% and 35%.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use xtask::util::checksums;
use xtask::util::files::copy_stream;

/// Bump when the generator changes, so cached releases are made again.
const GENERATOR_VERSION: u32 = 1;
const CHUNK: usize = 4096;
const CODE_BLOCKS: usize = 120;

/// xorshift64*: fast, deterministic, good enough to be incompressible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Skewed towards small values, like symbol and opcode frequencies.
    fn skewed(&mut self, n: usize) -> usize {
        let a = (self.next() % n as u64) as usize;
        let b = (self.next() % n as u64) as usize;
        a * b / n
    }
}

const WORDS: &[&str] = &[
    "runtime.",
    "github.com/grafana/alloy/internal/",
    "component/",
    "prometheus.",
    "loki.",
    "otelcol.",
    "func",
    "type.",
    "go.opentelemetry.io/collector/",
    "(*Exporter).",
    "Start",
    "Shutdown",
    "Config",
    "Arguments",
    "Exports",
    "k8s.io/client-go/",
    "error",
    "string",
    "int64",
    "context.Context",
    "sync.(*Mutex).Lock",
    "encoding/json.",
    "Unmarshal",
    "net/http.",
    "Handler",
    ".func1",
    ".func2",
    "google.golang.org/grpc/",
    "status",
    "metric",
    "label",
    "target",
    "scrape",
    "write",
    "remote",
    "receiver",
    "processor",
    "batch",
    "memory_limiter",
    "/",
    ".go",
    "vendor/",
    "golang.org/x/net/",
    "http2",
    "invalid ",
    "failed to ",
    "unexpected ",
    "value",
    "\x00",
    "\x00\x00",
    " ",
    "_",
    "%s",
    "%d",
    "{",
    "}",
    "[]",
    "map[string]",
    "interface {}",
];

fn fill_text(rng: &mut Rng, chunk: &mut Vec<u8>) {
    while chunk.len() < CHUNK {
        chunk.extend_from_slice(WORDS[rng.skewed(WORDS.len())].as_bytes());
    }
}

/// Tables like Go's pclntab and type data: 8-byte records of growing offsets and small flags.
fn fill_table(rng: &mut Rng, chunk: &mut Vec<u8>) {
    let mut offset = rng.next() as u32 & 0x00ff_ffff;
    while chunk.len() < CHUNK {
        let r = rng.next();
        offset += 8 * (1 + (r & 0x7) as u32);
        chunk.extend_from_slice(&offset.to_le_bytes());
        let flags = if r & 0x700 == 0 { (r >> 16) as u8 } else { 0 };
        chunk.extend_from_slice(&[flags, 0, 0, 0]);
    }
}

/// Machine-code-like bytes: basic blocks drawn (skewed, as hot helpers are) from a fixed set,
/// some with one byte changed, as calls and jumps to other offsets are.
fn fill_code(rng: &mut Rng, blocks: &[Vec<u8>], chunk: &mut Vec<u8>) {
    while chunk.len() < CHUNK {
        let block = &blocks[rng.skewed(blocks.len())];
        let start = chunk.len();
        chunk.extend_from_slice(block);
        let r = rng.next();
        if r.is_multiple_of(3) {
            let at = start + (r >> 8) as usize % block.len();
            chunk[at] = (r >> 32) as u8;
        }
    }
}

fn code_blocks(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..CODE_BLOCKS)
        .map(|_| {
            let len = 12 + (rng.next() % 40) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        })
        .collect()
}

/// A minimal ELF64 x86-64 executable header (what `elf::check_file` reads), then padding.
fn elf_header() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&xtask::arch::EM_X86_64.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h
}

/// Writes `size` bytes of generated binary to `out`.
pub fn write_binary(out: &mut impl Write, size: u64) -> std::io::Result<()> {
    let mut rng = Rng::new(0xA1107);
    let blocks = code_blocks(&mut rng);
    let mut written = 0u64;
    let mut chunk = Vec::with_capacity(CHUNK + 64);
    let header = elf_header();
    out.write_all(&header)?;
    written += header.len() as u64;
    while written < size {
        chunk.clear();
        // Out of 20 chunks: 2 random, 9 code, 4 text, 5 tables.
        match rng.next() % 20 {
            0..=1 => {
                (0..CHUNK / 8).for_each(|_| chunk.extend_from_slice(&rng.next().to_le_bytes()))
            }
            2..=10 => fill_code(&mut rng, &blocks, &mut chunk),
            11..=14 => fill_text(&mut rng, &mut chunk),
            _ => fill_table(&mut rng, &mut chunk),
        }
        let take = (size - written).min(CHUNK as u64) as usize;
        out.write_all(&chunk[..take])?;
        written += take as u64;
    }
    Ok(())
}

/// The release directory for a size: holds `alloy-linux-amd64.zip` and `SHA256SUMS`.
pub struct GeneratedRelease {
    pub dir: PathBuf,
    pub binary_size: u64,
    pub zip_size: u64,
}

/// Makes (or reuses) the release under `cache`.
pub fn generate(cache: &Path, size_mb: u64) -> anyhow::Result<GeneratedRelease> {
    let binary_size = size_mb * 1_000_000;
    let dir = cache.join(format!("release-{size_mb}mb-v{GENERATOR_VERSION}"));
    let zip_path = dir.join("alloy-linux-amd64.zip");
    let sums_path = dir.join("SHA256SUMS");
    if !sums_path.exists() {
        xtask::util::progress::step(format!(
            "Generating a {size_mb} MB release in {}",
            dir.display()
        ));
        let work = tempfile::Builder::new()
            .prefix(".release-")
            .tempdir_in(cache)
            .with_context(|| format!("creating a directory in {}", cache.display()))?;
        let binary = work.path().join("alloy-linux-amd64");
        {
            let mut out = BufWriter::with_capacity(1 << 20, File::create(&binary)?);
            write_binary(&mut out, binary_size)?;
            out.flush()?;
        }
        let zip = work.path().join("alloy-linux-amd64.zip");
        let mut writer = zip::ZipWriter::new(File::create(&zip)?);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o755)
            .large_file(binary_size >= u32::MAX as u64)
            .last_modified_time(zip::DateTime::default());
        writer.start_file("alloy-linux-amd64", options)?;
        copy_stream(&mut File::open(&binary)?, &mut writer)?;
        writer.finish()?;
        std::fs::remove_file(&binary)?;
        let (digest, _) = checksums::hash_file(&zip)?;
        std::fs::write(
            work.path().join("SHA256SUMS"),
            checksums::line(&digest, "alloy-linux-amd64.zip"),
        )?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(work.keep(), &dir)
            .with_context(|| format!("moving the release into {}", dir.display()))?;
    }
    let zip_size = std::fs::metadata(&zip_path)
        .with_context(|| format!("reading {}", zip_path.display()))?
        .len();
    Ok(GeneratedRelease {
        dir,
        binary_size,
        zip_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_deterministic_elf_and_deflates_like_go() {
        let mut a = Vec::new();
        write_binary(&mut a, 4_000_000).unwrap();
        let mut b = Vec::new();
        write_binary(&mut b, 4_000_000).unwrap();
        assert_eq!(a.len(), 4_000_000);
        assert!(a == b);
        xtask::build::elf::check_header(&a[..64], xtask::arch::Arch::Amd64).unwrap();

        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        writer
            .start_file(
                "x",
                zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated),
            )
            .unwrap();
        writer.write_all(&a).unwrap();
        let zipped = writer.finish().unwrap().into_inner().len();
        let ratio = zipped as f64 / a.len() as f64;
        assert!((0.20..=0.35).contains(&ratio), "deflate leaves {ratio:.3}");
    }
}
