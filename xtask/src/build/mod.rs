//! `cargo xtask build`: release -> verified zip -> staged tree -> image -> checksum -> out dir.

pub mod archive;
pub mod elf;
pub mod fetch;
pub mod stage;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use xshell::Shell;

use crate::arch::Arch;
use crate::contract::{ImageName, ALLOY_PATH, DEFAULT_RELEASES_URL};
use crate::image::{self, ImageFormat, ImageParams};
use crate::latest::{GithubArgs, VersionArg};
use crate::util::checksums::{self, Digest};
use crate::util::files::{self, WorkDir};
use crate::util::http::{self, Http};
use crate::util::progress::{detail, mib, step};
use crate::util::tools::Toolbox;
use fetch::{Expected, ReleaseSource, VerifiedZip};

/// Timestamps in images when `SOURCE_DATE_EPOCH` is not set: 2024-01-01T00:00:00Z.
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;
const DEFAULT_EPOCH_TEXT: &str = "1704067200";

/// The latest time every format can store: squashfs keeps seconds in 32 bits (2106-02-07).
pub const MAX_EPOCH: u64 = u32::MAX as u64;

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
    pub downloads: http::DownloadArgs,

    /// Every timestamp in the image, in seconds since 1970 (2024-01-01 when unset)
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS",
          default_value = DEFAULT_EPOCH_TEXT, value_parser = parse_epoch)]
    pub source_date_epoch: u64,

    /// Root of the download cache: downloads go to <DIR>/alloy-sysext [default: ~/.cache]
    #[arg(long, env = "XDG_CACHE_HOME", value_name = "DIR")]
    pub cache_home: Option<PathBuf>,

    /// The home directory, for the default cache root
    #[arg(long, env = "HOME", hide = true)]
    pub home: Option<PathBuf>,

    /// Write the build's phase times, staged bytes and peak memory to FILE as JSON (the bench
    /// reads it)
    #[arg(long, env = "ALLOY_SYSEXT_TIMINGS", value_name = "FILE")]
    pub timings: Option<PathBuf>,

    #[command(flatten)]
    pub github: GithubArgs,

    /// Leave out the drop-in that starts alloy.service at boot (the unit is still shipped:
    /// start it yourself)
    #[arg(long)]
    pub no_autostart: bool,
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
    pub fn source(self) -> anyhow::Result<ReleaseSource> {
        Ok(match (self.zip, self.sha256, self.sha256sums) {
            (None, None, None) => ReleaseSource::Mirror,
            (Some(zip), Some(digest), None) => ReleaseSource::Local {
                zip,
                expected: Expected::Digest(digest),
            },
            (Some(zip), None, Some(sums)) => ReleaseSource::Local {
                zip,
                expected: Expected::Sha256Sums(sums),
            },
            _ => bail!("--zip needs exactly one of --sha256 HEX or --sha256sums FILE"),
        })
    }
}

/// `SOURCE_DATE_EPOCH`: a whole number of seconds that every format can store; empty means
/// the default.
pub fn parse_epoch(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(DEFAULT_EPOCH);
    }
    match text.parse::<u64>() {
        Ok(epoch) if epoch > 0 && epoch <= MAX_EPOCH => Ok(epoch),
        Ok(epoch) if epoch > MAX_EPOCH => bail!(
            "SOURCE_DATE_EPOCH={text} is after {MAX_EPOCH} (2106-02-07), the latest time a squashfs image can store"
        ),
        _ => bail!("SOURCE_DATE_EPOCH={text:?} is not a positive whole number of seconds since 1970"),
    }
}

/// One finished image.
pub struct Built {
    pub image: PathBuf,
    pub size: u64,
    pub digest: Digest,
}

/// Where a build's time went, returned to the caller (and written with `--timings`).
#[derive(Debug, Default)]
pub struct Report {
    /// Wall seconds per phase, summed over architectures, in the order phases first ran.
    pub phases: Vec<(&'static str, f64)>,
    /// Bytes of file content staged, summed over architectures.
    pub staged_bytes: u64,
}

impl Report {
    /// Runs `work` as (part of) `phase`, adding its wall time to the phase's total.
    pub fn phase<T>(&mut self, phase: &'static str, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        let seconds = started.elapsed().as_secs_f64();
        match self.phases.iter_mut().find(|(name, _)| *name == phase) {
            Some((_, total)) => *total += seconds,
            None => self.phases.push((phase, seconds)),
        }
        result
    }

    /// The phases, staged bytes and this process's peak memory so far, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let phases: serde_json::Map<String, serde_json::Value> = self
            .phases
            .iter()
            .map(|(name, seconds)| (name.to_string(), (*seconds).into()))
            .collect();
        serde_json::json!({
            "phases": phases,
            "peak_rss_kib": peak_rss_kib(),
            "staged_bytes": self.staged_bytes,
        })
    }
}

/// This process's peak resident memory so far, in KiB (`VmHWM` in /proc/self/status).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

impl Build {
    pub fn run(self, sh: &Shell) -> anyhow::Result<(Vec<Built>, Report)> {
        let source = self.local.source()?;
        let mut archs = self.archs;
        archs.sort();
        archs.dedup();
        if matches!(source, ReleaseSource::Local { .. }) && archs.len() != 1 {
            bail!("--zip builds one architecture: pass exactly one --arch");
        }
        http::check_url(&self.releases_url).context("ALLOY_RELEASES_URL")?;
        // Every tool before any network access: a missing packer is named before a download.
        let tools = image::preflight(sh, self.format)?;
        let cache = fetch::Cache::new(fetch::cache_dir(self.cache_home, self.home)?);
        let version = self.version.resolve(&self.github)?;
        let out_dir = self.out_dir.unwrap_or_else(crate::default_dist);
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating output directory {}", out_dir.display()))?;

        let http = Http::with_limits(self.downloads.limits());
        let mut report = Report::default();
        let mut built = Vec::new();
        for &arch in &archs {
            let zip = fetch::release_zip(
                &http,
                &source,
                &self.releases_url,
                &cache,
                &version,
                arch,
                &mut report,
            )?;
            built.push(build_one(
                sh,
                &tools,
                &zip,
                &ImageName::new(&version, arch),
                self.format,
                self.source_date_epoch,
                !self.no_autostart,
                &out_dir,
                &mut report,
            )?);
        }

        println!();
        println!("{:<28} {:>10}  sha256", "image", "size");
        for b in &built {
            let name = b.image.file_name().unwrap_or_default().to_string_lossy();
            println!("{name:<28} {:>10}  {}", mib(b.size), b.digest);
        }
        println!(
            "\nin {} (check with: cd {0} && sha256sum -c *.sha256)",
            out_dir.display()
        );
        if let Some(path) = &self.timings {
            let text = serde_json::to_string_pretty(&report.to_json())?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing --timings {}", path.display()))?;
        }
        Ok((built, report))
    }
}

/// Builds one image in a private work directory, and moves it and its checksum into `out_dir`
/// only when both are complete.
#[allow(clippy::too_many_arguments)]
fn build_one(
    sh: &Shell,
    tools: &Toolbox,
    zip: &VerifiedZip,
    name: &ImageName,
    format: ImageFormat,
    epoch: u64,
    autostart: bool,
    out_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<Built> {
    let file_name = name.file_name();
    let work = WorkDir::new(out_dir)?;
    let (tree, mut binary) =
        stage::stage_sysext_tree(&work.path().join("tree"), zip, name, autostart)?;
    report.staged_bytes += tree.content_bytes();

    let image = work.path().join(&file_name);
    let params = ImageParams {
        epoch,
        identity: name.identity(),
    };
    if format.streams() {
        // Inflated straight into the image while it is laid out: "pack" includes the inflating.
        step(format!(
            "Packing {file_name} ({format}), inflating {ALLOY_PATH} into it"
        ));
        report.phase("pack", || {
            binary.read(|reader| {
                let streamed = image::Streamed {
                    path: ALLOY_PATH,
                    reader,
                };
                image::pack(sh, tools, format, &tree, &image, &params, Some(streamed))
            })
        })?;
    } else {
        report.phase("extract", || tree.write_pending(ALLOY_PATH, &mut binary))?;
        step(format!("Packing {file_name} ({format})"));
        report.phase("pack", || {
            image::pack(sh, tools, format, &tree, &image, &params, None)
        })?;
    }
    // The image is checked (e2fsck), goes to disk (install syncs it, e2fsck too) and is hashed
    // at once: the check and the sync wait on the disk, the hash on a core.
    let (digest, size) = report.phase("hash", || {
        std::thread::scope(|scope| {
            let checked = scope.spawn(|| image::check(tools, format, &image));
            let synced = scope.spawn(|| files::sync_file(&image));
            let hashed = checksums::hash_file(&image);
            let joined = |handle: std::thread::ScopedJoinHandle<'_, anyhow::Result<()>>| {
                handle.join().unwrap_or_else(|_| {
                    Err(anyhow::anyhow!("a thread finishing {file_name} panicked"))
                })
            };
            let (checked, synced) = (joined(checked), joined(synced));
            checked.and(synced).and(hashed)
        })
    })?;

    let checksum_name = name.checksum_name();
    let checksum = work.path().join(&checksum_name);
    std::fs::write(&checksum, checksums::line(&digest, &file_name))
        .with_context(|| format!("writing {}", checksum.display()))?;
    if let Some(why) = files::incomplete_pair(out_dir, &file_name, &checksum_name) {
        detail(format!("replacing {file_name}: {why}"));
    }
    let installed =
        files::install_with_checksum(out_dir, (image, &file_name), (checksum, &checksum_name))?;
    Ok(Built {
        image: installed,
        size,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_defaults_to_a_fixed_date_and_refuses_nonsense() {
        assert_eq!(parse_epoch("").unwrap(), DEFAULT_EPOCH);
        assert_eq!(parse_epoch(DEFAULT_EPOCH_TEXT).unwrap(), DEFAULT_EPOCH);
        assert_eq!(parse_epoch("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_epoch("4294967295").unwrap(), MAX_EPOCH);
        for bad in ["yesterday", "-5", "0", "1.5"] {
            let err = parse_epoch(bad).unwrap_err().to_string();
            assert!(err.contains("SOURCE_DATE_EPOCH"), "{bad}: {err}");
        }
        for too_late in ["4294967296", "18446744073709551615"] {
            let err = parse_epoch(too_late).unwrap_err().to_string();
            assert!(err.contains("2106"), "{too_late}: {err}");
        }
    }

    #[test]
    fn phases_add_up_and_report_as_json() {
        let mut report = Report::default();
        report.phase("test-phase", || {
            std::thread::sleep(std::time::Duration::from_millis(5))
        });
        assert_eq!(report.phase("test-phase", || 7), 7);
        report.staged_bytes = 42;
        let json = report.to_json();
        assert!(
            json["phases"]["test-phase"].as_f64().unwrap() >= 0.005,
            "{json}"
        );
        assert!(json["peak_rss_kib"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(json["staged_bytes"], 42);
    }

    #[test]
    fn reads_vm_hwm() {
        assert_eq!(
            parse_vm_hwm("VmPeak:\t  10 kB\nVmHWM:\t    4528 kB\nVmRSS: 1 kB\n"),
            Some(4528)
        );
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
    }
}
