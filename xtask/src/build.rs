//! `cargo xtask build`: release -> verified zip -> staged tree -> image -> checksum -> out dir.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::arch::Arch;
use crate::checksums::{self, Digest};
use crate::download::Http;
use crate::fetch::{self, Expected, VerifiedZip};
use crate::files::{self, WorkDir};
use crate::image::{self, ImageFormat, ImageParams};
use crate::progress::{mib, step};
use crate::stage;
use crate::timings;
use crate::version::Version;

/// Timestamps in images when `SOURCE_DATE_EPOCH` is not set: 2024-01-01T00:00:00Z.
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;

pub struct BuildOptions {
    pub version: Version,
    pub archs: Vec<Arch>,
    pub out_dir: PathBuf,
    pub releases_url: String,
    pub format: ImageFormat,
    /// Air-gapped: a local release zip and how to verify it.
    pub local_zip: Option<(PathBuf, LocalDigest)>,
    /// Ship the drop-in that starts alloy.service at boot.
    pub autostart: bool,
}

pub enum LocalDigest {
    Digest(Digest),
    Sha256Sums(PathBuf),
}

/// One finished image.
pub struct Built {
    pub image: PathBuf,
    pub size: u64,
    pub digest: Digest,
}

/// The image file name: `alloy-1.10.2-amd64.raw`.
pub fn image_name(version: &Version, arch: Arch) -> String {
    format!("{}-{version}-{arch}.raw", stage::EXTENSION_NAME)
}

/// `SOURCE_DATE_EPOCH` if set (it must be a whole number of seconds), else [`DEFAULT_EPOCH`].
pub fn source_date_epoch(value: Option<&str>) -> anyhow::Result<u64> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_EPOCH),
        Some(text) => match text.parse::<u64>() {
            Ok(epoch) if epoch > 0 => Ok(epoch),
            _ => bail!(
                "SOURCE_DATE_EPOCH={text:?} is not a positive whole number of seconds since 1970"
            ),
        },
    }
}

pub fn run(options: BuildOptions) -> anyhow::Result<Vec<Built>> {
    let epoch = source_date_epoch(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())?;
    if options.local_zip.is_some() && options.archs.len() != 1 {
        bail!("--zip builds one architecture: pass exactly one --arch");
    }
    crate::download::check_url(&options.releases_url).context("ALLOY_RELEASES_URL")?;
    crate::tools::require(options.format.tools())?;
    std::fs::create_dir_all(&options.out_dir)
        .with_context(|| format!("creating output directory {}", options.out_dir.display()))?;

    let http = Http::new();
    let mut built = Vec::new();
    for &arch in &options.archs {
        let zip = match &options.local_zip {
            Some((path, LocalDigest::Digest(d))) => {
                fetch::local_zip(path, Expected::Digest(*d), arch)?
            }
            Some((path, LocalDigest::Sha256Sums(sums))) => {
                fetch::local_zip(path, Expected::Sha256Sums(sums), arch)?
            }
            None => fetch::release_zip(&http, &options.releases_url, &options.version, arch)?,
        };
        built.push(build_one(
            &zip,
            &options.version,
            arch,
            options.format,
            epoch,
            options.autostart,
            &options.out_dir,
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
        options.out_dir.display()
    );
    Ok(built)
}

/// Builds one image in a private work directory, and moves it and its checksum into `out_dir`
/// only when both are complete.
fn build_one(
    zip: &VerifiedZip,
    version: &Version,
    arch: Arch,
    format: ImageFormat,
    epoch: u64,
    autostart: bool,
    out_dir: &Path,
) -> anyhow::Result<Built> {
    let name = image_name(version, arch);
    let work = WorkDir::new(out_dir)?;
    let tree = stage::stage_sysext_tree(&work.path().join("tree"), zip, version, arch, autostart)?;
    timings::add_staged_bytes(tree.content_bytes());

    step(format!("Packing {name} ({format})"));
    let image = work.path().join(&name);
    let params = ImageParams {
        epoch,
        identity: name.trim_end_matches(".raw").to_string(),
    };
    timings::phase("pack", || image::pack(format, &tree, &image, &params))?;
    let (digest, size) = timings::phase("hash", || checksums::hash_file(&image))?;

    let checksum_name = format!("{name}.sha256");
    let checksum = work.path().join(&checksum_name);
    std::fs::write(&checksum, checksums::line(&digest, &name))
        .with_context(|| format!("writing {}", checksum.display()))?;
    let installed = files::install(out_dir, &[(image, &name), (checksum, &checksum_name)])?;
    Ok(Built {
        image: installed[0].clone(),
        size,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_defaults_to_a_fixed_date_and_refuses_nonsense() {
        assert_eq!(source_date_epoch(None).unwrap(), DEFAULT_EPOCH);
        assert_eq!(source_date_epoch(Some("")).unwrap(), DEFAULT_EPOCH);
        assert_eq!(
            source_date_epoch(Some("1700000000")).unwrap(),
            1_700_000_000
        );
        for bad in ["yesterday", "-5", "0", "1.5"] {
            let err = source_date_epoch(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("SOURCE_DATE_EPOCH"), "{bad}: {err}");
        }
    }

    #[test]
    fn image_names_carry_version_and_arch() {
        let version: Version = "v1.11.0-rc.1".parse().unwrap();
        assert_eq!(
            image_name(&version, Arch::Arm64),
            "alloy-1.11.0-rc.1-arm64.raw"
        );
    }
}
