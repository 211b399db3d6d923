//! A generated, Alloy-sized release: a deterministic x86-64 ELF that deflates like a stripped Go
//! binary, zipped the way Grafana zips it, with its SHA256SUMS.
//!
//! The content is a mix of 4 KiB chunks: incompressible ones (like Go's compressed DWARF-less
//! data, pclntab hashes and embedded assets), machine-code-like ones (a few hundred instruction
//! templates with varying operands) and text-like ones (symbol names, paths, strings). The mix
//! was tuned so that zip's deflate leaves about 30% (a real 90 MB Go binary here: 29.9%).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::checksums;
use crate::files::copy_stream;

/// Bump when the generator changes, so cached releases are made again.
const GENERATOR_VERSION: u32 = 1;
const CHUNK: usize = 4096;

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

/// Instruction-like bytes: a fixed table of opcode patterns, each followed by an operand that is
/// usually small (stack offsets, registers) and sometimes a full random address.
fn fill_code(rng: &mut Rng, templates: &[Vec<u8>], chunk: &mut Vec<u8>) {
    while chunk.len() < CHUNK {
        chunk.extend_from_slice(&templates[rng.skewed(templates.len())]);
        let r = rng.next();
        match r % 8 {
            0..=3 => chunk.push((r >> 8) as u8 & 0x78),
            4 | 5 => chunk.extend_from_slice(&((r >> 8) as u32 & 0x0fff).to_le_bytes()),
            _ => chunk.extend_from_slice(&((r >> 16) as u32).to_le_bytes()),
        }
    }
}

fn code_templates(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..384)
        .map(|_| {
            let len = 2 + (rng.next() % 5) as usize;
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
    h[18..20].copy_from_slice(&crate::elf::EM_X86_64.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h
}

/// Writes `size` bytes of generated binary to `out`.
pub fn write_binary(out: &mut impl Write, size: u64) -> std::io::Result<()> {
    let mut rng = Rng::new(0xA110_7);
    let templates = code_templates(&mut rng);
    let mut written = 0u64;
    let mut chunk = Vec::with_capacity(CHUNK + 64);
    let header = elf_header();
    out.write_all(&header)?;
    written += header.len() as u64;
    while written < size {
        chunk.clear();
        // Out of 20 chunks: 4 random, 10 code, 6 text.
        match rng.next() % 20 {
            0..=3 => {
                (0..CHUNK / 8).for_each(|_| chunk.extend_from_slice(&rng.next().to_le_bytes()))
            }
            4..=13 => fill_code(&mut rng, &templates, &mut chunk),
            _ => fill_text(&mut rng, &mut chunk),
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
        crate::progress::step(format!(
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
        crate::elf::check_header(&a[..64], crate::arch::Arch::Amd64).unwrap();

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
