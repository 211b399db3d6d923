//! The command line: what each command and flag means. Nothing here does work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::arch::Arch;
use crate::checksums::Digest;
use crate::fetch::DEFAULT_RELEASES_URL;
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

    /// Leave out the drop-in that starts alloy.service at boot (the unit is still shipped:
    /// start it yourself)
    #[arg(long)]
    pub no_autostart: bool,
}
