//! `cargo xtask build`: its flags, and how they become a [`Builder`].

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use xshell::Shell;

use super::args::{DownloadArgs, GithubArgs, VersionArg};
use crate::arch::Arch;
use crate::contract::DEFAULT_RELEASES_URL;
use crate::image::{self, Ext4Fill, ImageFormat, Packer};
use crate::pipeline::{Builder, Built};
use crate::release::fetch::{self, Expected, Origin, ReleaseSource};
use crate::util::checksums::Digest;
use crate::util::http;
use crate::util::progress::mib;
use crate::util::timings::Timings;

/// `SOURCE_DATE_EPOCH`'s default as clap shows it: [`image::DEFAULT_EPOCH`].
const DEFAULT_EPOCH_TEXT: &str = "1704067200";

/// Fetch an Alloy release, verify it, and pack it into a sysext image with its SHA-256.
///
/// Writes <OUT_DIR>/alloy-<VERSION>-<ARCH>.raw and .raw.sha256 (sha256sum format). Image
/// timestamps come from SOURCE_DATE_EPOCH, or 2024-01-01T00:00:00Z when unset, so the same
/// release always gives the same bytes. Downloads are cached in $XDG_CACHE_HOME/alloy-sysext
/// (default ~/.cache/alloy-sysext) and verified again before each use.
#[derive(Args, Debug)]
pub struct Build {
    /// Alloy version: X.Y.Z or X.Y.Z-rc.N, with or without a leading v (e.g. 1.10.2), or
    /// `latest` for the highest stable release
    pub version: VersionArg,

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

    #[command(flatten)]
    pub local: LocalZipArgs,

    #[command(flatten)]
    pub downloads: DownloadArgs,

    /// Every timestamp in the image, in seconds since 1970 (2024-01-01 when unset)
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS",
          default_value = DEFAULT_EPOCH_TEXT, value_parser = image::parse_epoch)]
    pub source_date_epoch: u64,

    /// Root of the download cache: downloads go to <DIR>/alloy-sysext [default: ~/.cache]
    #[arg(long, env = "XDG_CACHE_HOME", value_name = "DIR")]
    pub cache_home: Option<PathBuf>,

    /// The home directory, for the default cache root
    #[arg(long, env = "HOME", hide = true)]
    pub home: Option<PathBuf>,

    /// Write the build's phase times, staged bytes and peak memory to FILE as JSON, also when
    /// the build fails (the bench reads it)
    #[arg(long, env = "ALLOY_SYSEXT_TIMINGS", value_name = "FILE")]
    pub timings: Option<PathBuf>,

    #[command(flatten)]
    pub github: GithubArgs,

    /// Leave out the drop-in that starts alloy.service at boot (the unit is still shipped:
    /// start it yourself)
    #[arg(long)]
    pub no_autostart: bool,

    /// How ext4 images are filled: in-process (libext2fs) or debugfs (the real `debugfs -n`,
    /// slower, the same bytes; the bench compares them)
    #[arg(
        long,
        env = "ALLOY_SYSEXT_EXT4_FILL",
        value_enum,
        hide = true,
        default_value = "in-process"
    )]
    pub ext4_fill: Ext4Fill,
}

/// Building offline from a local release zip.
#[derive(Args, Debug)]
pub struct LocalZipArgs {
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

impl LocalZipArgs {
    /// Where the release comes from: the mirror, or the local zip with how to verify it.
    fn origin(self) -> anyhow::Result<Origin> {
        Ok(match (self.zip, self.sha256, self.sha256sums) {
            (None, None, None) => Origin::Mirror,
            (Some(zip), Some(digest), None) => Origin::Local {
                zip,
                expected: Expected::Digest(digest),
            },
            (Some(zip), None, Some(sums)) => Origin::Local {
                zip,
                expected: Expected::Sha256Sums(sums),
            },
            _ => bail!("--zip needs exactly one of --sha256 HEX or --sha256sums FILE"),
        })
    }
}

impl Build {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let origin = self.local.origin()?;
        let mut archs = self.archs;
        archs.sort();
        archs.dedup();
        if matches!(origin, Origin::Local { .. }) && archs.len() != 1 {
            bail!("--zip builds one architecture: pass exactly one --arch");
        }
        http::check_url(&self.releases_url).context("ALLOY_RELEASES_URL")?;
        // Every tool before any network access: a missing packer is named before a download.
        let packer = Packer::new(sh, self.format, self.source_date_epoch, self.ext4_fill)?;
        let http = self.downloads.http();
        let cache = fetch::Cache::new(
            fetch::cache_root(self.cache_home, self.home)?,
            http.limits().max_download,
        );
        let version = self.version.resolve(&self.github)?;
        let out_dir = self.out_dir.unwrap_or_else(crate::default_dist);
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating output directory {}", out_dir.display()))?;
        let builder = Builder {
            source: ReleaseSource {
                origin,
                releases_url: self.releases_url,
                cache,
                http,
            },
            packer,
            autostart: !self.no_autostart,
            out_dir,
        };

        let mut timings = Timings::default();
        let built: anyhow::Result<Vec<Built>> = archs
            .iter()
            .map(|&arch| builder.build(&version, arch, &mut timings))
            .collect();
        // Written for a refused build too: what refusing a hostile input cost is worth knowing.
        if let Some(path) = &self.timings {
            write_timings(path, &timings)?;
        }
        print_summary(&built?, &builder.out_dir);
        Ok(())
    }
}

fn write_timings(path: &std::path::Path, timings: &Timings) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&timings.to_json())?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("writing --timings {}", path.display()))
}

fn print_summary(built: &[Built], out_dir: &std::path::Path) {
    println!();
    println!("{:<28} {:>10}  sha256", "image", "size");
    for b in built {
        let name = b.image.file_name().unwrap_or_default().to_string_lossy();
        println!("{name:<28} {:>10}  {}", mib(b.size), b.digest);
    }
    println!(
        "\nin {} (check with: cd {0} && sha256sum -c *.sha256)",
        out_dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_epoch_is_shown_as_it_is() {
        assert_eq!(DEFAULT_EPOCH_TEXT, image::DEFAULT_EPOCH.to_string());
    }
}
