//! `cargo xtask bench audit`: what the daily audit (`xtask verify --all`) costs, per image and
//! for a whole bucket, on loopback. The bucket holds `--releases` releases (the last two
//! release candidates, under `rc/`), amd64 and arm64 each: real ext4 images that `xtask build`
//! makes from generated Alloy-sized releases, linked under every version's name (an image names
//! no version inside, so each is a valid image of any), with their `.sha256`, each channel's
//! `SHA256SUMS` and its signature by a throwaway key. It is served read-only over HTTP on
//! loopback, as the bucket's public domain.
//!
//! Two ways are measured, alternately: with the keyring (each channel's signature checked,
//! then every image only hashed as it streams by) and without (nothing vouches for the index,
//! so every image is downloaded to a temporary file and looked inside).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use xtask::arch::Arch;
use xtask::contract::{Channel, ImageName, INDEX_NAME, SIGNATURE_NAME};
use xtask::util::checksums;
use xtask::util::progress::{detail, step};
use xtask::version::Version;
use xtask_testkit::gpg::TestKey;

use crate::{bench_cache, measure, median, number, release, reproduce, Settings};

/// Measure `cargo xtask verify --all` (the daily audit) on a loopback bucket of Alloy-sized
/// images, with and without the keyring. Writes audit.md and audit.json
#[derive(clap::Args, Debug)]
pub struct AuditOptions {
    /// Releases in the bucket, amd64 and arm64 each; the last two are release candidates
    #[arg(long, default_value_t = 20)]
    pub releases: usize,

    #[command(flatten)]
    pub settings: Settings,
}

/// The two ways the audit runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Signed,
    Unsigned,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Signed => "with --keyring: signatures checked, images hashed as they stream",
            Way::Unsigned => "without --keyring: images downloaded and looked inside",
        }
    }
}

/// The versions of the bucket: stable ones, then two release candidates (from three releases
/// on: the stable channel is never empty).
fn versions(releases: usize) -> Vec<Version> {
    let candidates = if releases >= 3 { 2 } else { 0 };
    let stable = (0..releases - candidates).map(|patch| format!("1.10.{patch}"));
    let rc = (1..=candidates).map(|n| format!("1.11.0-rc.{n}"));
    stable
        .chain(rc)
        .map(|v| v.parse().expect("a version"))
        .collect()
}

pub fn run(options: AuditOptions, xtask: &Path) -> anyhow::Result<()> {
    let settings = &options.settings;
    if settings.runs == 0 || settings.size_mb == 0 || options.releases == 0 {
        bail!("--runs, --size-mb and --releases must be at least 1");
    }
    let cache = bench_cache()?;
    let work = tempfile::Builder::new()
        .prefix("bench-audit-")
        .tempdir_in(&cache)?;
    let images = build_images(xtask, &cache, work.path(), settings.size_mb)?;
    let key = TestKey::new("bench");
    let root = work.path().join("served");
    let bucket = root.join(xtask_testkit::s3::BUCKET);
    let versions = versions(options.releases);
    let image_bytes = lay_out(&bucket, &images, &versions, &key)?;
    let url = xtask_testkit::s3::serve_bucket(root);
    let tmp = work.path().join("tmp");
    std::fs::create_dir_all(&tmp)?;

    let mut samples: Vec<(Way, measure::Measured)> = Vec::new();
    for round in 1..=settings.runs {
        for way in [Way::Signed, Way::Unsigned] {
            step(format!(
                "Run {round}/{}: audit {}",
                settings.runs,
                way.name()
            ));
            let log = work.path().join("audit.log");
            let mut command = Command::new(xtask);
            command.args(["verify", "--all", "--base-url", &url]);
            if way == Way::Signed {
                command.arg("--keyring").arg(&key.public);
            }
            command
                .env("TMPDIR", &tmp)
                .env_remove("SYSEXT_BASE_URL")
                .stdin(Stdio::null())
                .stdout(File::create(&log)?)
                .stderr(File::create(&log)?);
            let measured = measure::run(&mut command, "xtask verify --all", &log)?;
            detail(format!(
                "{:.2} s wall, {:.2} s CPU, {:.1} MiB peak, {:.1} MiB written to disk",
                measured.wall_s,
                measured.cpu_s,
                measured.max_rss_kib as f64 / 1024.0,
                measured.written_bytes as f64 / (1 << 20) as f64
            ));
            samples.push((way, measured));
        }
    }
    let results = summarize(&options, &versions, image_bytes, &samples);
    let markdown = markdown(&results);
    println!("\n{markdown}");
    settings.write("audit", &results, &markdown)
}

/// One real ext4 image per architecture, built by `xtask build` from generated releases served
/// on loopback.
fn build_images(
    xtask: &Path,
    cache: &Path,
    work: &Path,
    size_mb: u64,
) -> anyhow::Result<Vec<Built>> {
    let mirror = xtask_testkit::mirror::Mirror::start();
    let mut sums = String::new();
    for arch in Arch::ALL {
        let generated = release::generate_for(cache, size_mb, arch)?;
        let zip = generated.dir.join(arch.release_zip());
        mirror.add_file("1.10.2", &arch.release_zip(), &zip);
        // The generated release's own index: its zip's line, hashed when it was made.
        sums.push_str(&std::fs::read_to_string(generated.dir.join("SHA256SUMS"))?);
    }
    mirror.add("1.10.2", "SHA256SUMS", sums.into_bytes());
    step("Building the amd64 and arm64 images");
    let out = work.join("images");
    let status = Command::new(xtask)
        .args([
            "build",
            "1.10.2",
            "--arch",
            "amd64",
            "--arch",
            "arm64",
            "--out-dir",
        ])
        .arg(&out)
        .env("XDG_CACHE_HOME", work.join("cache"))
        .env("ALLOY_RELEASES_URL", &mirror.base_url)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdout(Stdio::null())
        .status()
        .context("running xtask build")?;
    if !status.success() {
        bail!("xtask build failed ({status}); its messages are above");
    }
    Arch::ALL
        .into_iter()
        .map(|arch| {
            let name = ImageName::new(&"1.10.2".parse().expect("a version"), arch);
            let path = out.join(name.file_name());
            let (digest, size) = checksums::hash_file(&path)?;
            Ok(Built {
                arch,
                path,
                digest,
                size,
            })
        })
        .collect()
}

/// A built image, hashed once: every version's copy in the bucket is a hard link of it.
struct Built {
    arch: Arch,
    path: PathBuf,
    digest: checksums::Digest,
    size: u64,
}

/// Every version's image of every architecture in its channel's folder (hard links of the
/// built images), its `.sha256`, and each channel's `SHA256SUMS` signed by `key`. Returns the
/// bytes of all the images.
fn lay_out(
    bucket: &Path,
    images: &[Built],
    versions: &[Version],
    key: &TestKey,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for channel in Channel::ALL {
        let folder = bucket.join(channel.folder());
        std::fs::create_dir_all(&folder)?;
        let mut index = String::new();
        for version in versions.iter().filter(|v| Channel::of(v) == channel) {
            for built in images {
                let name = ImageName::new(version, built.arch).file_name();
                std::fs::hard_link(&built.path, folder.join(&name))
                    .with_context(|| format!("linking {} as {name}", built.path.display()))?;
                let line = checksums::line(&built.digest, &name);
                std::fs::write(folder.join(format!("{name}.sha256")), &line)?;
                index.push_str(&line);
                total += built.size;
            }
        }
        if !index.is_empty() {
            std::fs::write(folder.join(INDEX_NAME), &index)?;
            std::fs::write(folder.join(SIGNATURE_NAME), key.sign(index.as_bytes()))?;
        }
    }
    Ok(total)
}

fn summarize(
    options: &AuditOptions,
    versions: &[Version],
    image_bytes: u64,
    samples: &[(Way, measure::Measured)],
) -> Value {
    let images = versions.len() * Arch::ALL.len();
    let ways: Vec<Value> = [Way::Signed, Way::Unsigned]
        .into_iter()
        .map(|way| {
            let of = |f: fn(&measure::Measured) -> f64| {
                median(
                    samples
                        .iter()
                        .filter(|(w, _)| *w == way)
                        .map(|(_, m)| f(m))
                        .collect(),
                )
            };
            let wall = of(|m| m.wall_s);
            json!({
                "way": way.name(),
                "keyring": way == Way::Signed,
                "wall_s": wall,
                "cpu_s": of(|m| m.cpu_s),
                "peak_rss_kib": of(|m| m.max_rss_kib as f64),
                "written_bytes": of(|m| m.written_bytes as f64),
                "seconds_per_image": wall / images as f64,
                "bytes_per_image": image_bytes / images as u64,
                "written_bytes_per_image": of(|m| m.written_bytes as f64) / images as f64,
            })
        })
        .collect();
    let settings = &options.settings;
    json!({
        "releases": versions.len(),
        "images": images,
        "image_bytes": image_bytes,
        "binary_mb": settings.size_mb,
        "runs": settings.runs,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "ways": ways,
        "command": format!(
            "cargo xtask bench audit --releases {} --size-mb {} --runs {}",
            options.releases, settings.size_mb, settings.runs
        ),
    })
}

fn markdown(results: &Value) -> String {
    let mib = |v: &Value| number(v) / (1 << 20) as f64;
    let mut md = format!(
        "Bucket: {} releases, {} images ({:.0} MiB each, {:.1} GiB in all), served on loopback; {} runs of each way, alternating; {} CPUs.\n\n",
        results["releases"],
        results["images"],
        mib(&results["ways"][0]["bytes_per_image"]),
        number(&results["image_bytes"]) / (1u64 << 30) as f64,
        results["runs"],
        results["cpus"],
    );
    md.push_str("| audit | wall s | CPU s | peak RSS (MiB) | s per image | MiB read per image | MiB written to disk |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for way in results["ways"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.1} | {:.3} | {:.1} | {:.1} |\n",
            way["way"].as_str().unwrap_or(""),
            number(&way["wall_s"]),
            number(&way["cpu_s"]),
            number(&way["peak_rss_kib"]) / 1024.0,
            number(&way["seconds_per_image"]),
            mib(&way["bytes_per_image"]),
            mib(&way["written_bytes"]),
        ));
    }
    md.push_str(&reproduce(results));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_two_releases_are_candidates() {
        let shown: Vec<String> = versions(4).iter().map(|v| v.to_string()).collect();
        assert_eq!(shown, ["1.10.0", "1.10.1", "1.11.0-rc.1", "1.11.0-rc.2"]);
        assert_eq!(versions(2)[1].to_string(), "1.10.1");
        assert_eq!(versions(20).len(), 20);
    }
}
