//! The command line: what each command and flag means. Nothing here does work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::arch::Arch;
use crate::checksums::Digest;
use crate::fetch::DEFAULT_RELEASES_URL;
use crate::image::ImageFormat;
use crate::version::Version;

/// Build, publish and verify systemd-sysext images of Grafana Alloy for Flatcar Container Linux.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Build(BuildArgs),
    Inspect(InspectArgs),
    Bench(BenchArgs),
}

/// Show what a built image holds, without mounting it: its filesystem, extension-release, and
/// /usr/bin/alloy's owner, mode, size and first bytes
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The image (.raw) to look into
    pub image: PathBuf,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Measure `cargo xtask build` (each format, cold and warm cache) against the plain-tools
/// pipeline (curl, unzip, mkfs.ext4 or mksquashfs -comp xz, sha256sum), on a generated
/// Alloy-sized release served on loopback. Prints a table; writes results.md and results.json
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Size of the generated Alloy binary, in MB (Alloy's is ~420)
    #[arg(long, default_value_t = 420, value_name = "MB")]
    pub size_mb: u64,

    /// Runs of each contender (the table shows medians)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,

    /// Where to write results.md and results.json [default: target/bench]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Fetch an Alloy release, verify it, and pack it into a sysext image with its SHA-256.
///
/// Writes <OUT_DIR>/alloy-<VERSION>-<ARCH>.raw and .raw.sha256 (sha256sum format). Image
/// timestamps come from SOURCE_DATE_EPOCH, or 2024-01-01T00:00:00Z when unset, so the same
/// release always gives the same bytes. Downloads are cached in $XDG_CACHE_HOME/alloy-sysext
/// (default ~/.cache/alloy-sysext) and verified again before each use.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Alloy version: X.Y.Z or X.Y.Z-rc.N, with or without a leading v (e.g. 1.10.2)
    pub version: Version,

    /// Architecture to build; repeat for several
    #[arg(long = "arch", value_enum, default_value = "amd64")]
    pub archs: Vec<Arch>,

    /// Filesystem of the image. The file is alloy-<VERSION>-<ARCH>.raw whatever the format:
    /// systemd-sysext tells them apart by their superblock
    #[arg(long, value_enum, default_value_t = ImageFormat::Ext4)]
    pub format: ImageFormat,

    /// Where to write images [default: dist/ at the repository root]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,

    /// Base URL of Alloy's release assets (<URL>/v<VERSION>/<asset>); plain http only on loopback
    #[arg(long, env = "ALLOY_RELEASES_URL", default_value = DEFAULT_RELEASES_URL, value_name = "URL")]
    pub releases_url: String,

    /// Build from a local release zip instead of downloading (air-gapped machines); needs
    /// --sha256 or --sha256sums
    #[arg(long, value_name = "PATH", requires = "zip_digest")]
    pub zip: Option<PathBuf>,

    /// Expected SHA-256 of --zip
    #[arg(long, value_name = "HEX", group = "zip_digest", requires = "zip")]
    pub sha256: Option<Digest>,

    /// A local SHA256SUMS listing the expected digest of --zip
    #[arg(long, value_name = "PATH", group = "zip_digest", requires = "zip")]
    pub sha256sums: Option<PathBuf>,
}
