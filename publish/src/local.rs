//! The local side of publishing: which built images to publish, each checked against its
//! `.sha256` before anything is sent.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xtask::arch::Arch;
use xtask::contract::{checksum_name, ImageName};
use xtask::util::checksums::{self, Digest, Sums};
use xtask::util::progress::{detail, mib, step};
use xtask::version::Version;

/// A local image, checked against its `.sha256`.
pub struct LocalImage {
    pub name: String,
    /// What the name says: version and architecture.
    pub image: ImageName,
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

impl LocalImage {
    pub fn checksum_name(&self) -> String {
        checksum_name(&self.name)
    }

    /// The `.raw.sha256` as we publish it: exactly what `sha256sum` writes.
    pub fn checksum_text(&self) -> String {
        checksums::line(&self.digest, &self.name)
    }
}

/// Which image files in a directory to publish: those named `alloy-<VERSION>-<ARCH>.raw`,
/// of `version` if given, of `archs` if any are given. Sorted by version, then architecture.
pub fn select_images(
    names: &[String],
    version: Option<&Version>,
    archs: &[Arch],
) -> Vec<(String, ImageName)> {
    let mut selected: Vec<(String, ImageName)> = names
        .iter()
        .filter_map(|name| Some((name.clone(), ImageName::parse(name)?)))
        .filter(|(_, image)| version.is_none_or(|v| &image.version == v))
        .filter(|(_, image)| archs.is_empty() || archs.contains(&image.arch))
        .collect();
    selected.sort_by(|a, b| (&a.1.version, a.1.arch).cmp(&(&b.1.version, b.1.arch)));
    selected
}

/// Finds the images to publish and checks each against its `.sha256`, before any upload.
pub fn local_images(
    dir: &Path,
    version: Option<&Version>,
    archs: &[Arch],
) -> anyhow::Result<Vec<LocalImage>> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "reading {} (build images first with `cargo xtask build VERSION`, or pass --dir)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let selected = select_images(&names, version, archs);
    if selected.is_empty() {
        let which = match version {
            Some(v) => format!("alloy-{v}-<ARCH>.raw"),
            None => "alloy-<VERSION>-<ARCH>.raw".to_string(),
        };
        bail!(
            "no image {which} in {} for {}: build it first with `cargo xtask build`",
            dir.display(),
            if archs.is_empty() {
                "any architecture".to_string()
            } else {
                archs
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    for arch in archs {
        if !selected.iter().any(|(_, image)| image.arch == *arch) {
            bail!(
                "--arch {arch} was asked for, but {} has no such image{}",
                dir.display(),
                version
                    .map(|v| format!(" of version {v}"))
                    .unwrap_or_default()
            );
        }
    }

    step(format!(
        "Checking {} local image(s) against their .sha256",
        selected.len()
    ));
    let mut images = Vec::new();
    for (name, image) in selected {
        let path = dir.join(&name);
        let checksum_path = dir.join(checksum_name(&name));
        let text = std::fs::read_to_string(&checksum_path).with_context(|| {
            format!(
                "reading {}: every image is published with its checksum; rebuild with `cargo xtask build`",
                checksum_path.display()
            )
        })?;
        let expected = Sums::parse(&text, checksum_path.display().to_string())?
            .get(&name)?
            .with_context(|| format!("{} does not list {name}", checksum_path.display()))?;
        let (digest, size) = checksums::hash_file(&path)?;
        if digest != expected {
            bail!(
                "{} has sha256 {digest}, but {} says {expected}: the image changed after it was built; rebuild it. Nothing was uploaded",
                path.display(),
                checksum_path.display()
            );
        }
        detail(format!("{name}: {} sha256 {digest} ok", mib(size)));
        images.push(LocalImage {
            name,
            image,
            path,
            digest,
            size,
        });
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selects_images_of_the_version_and_archs_asked_for() {
        let dir = names(&[
            "alloy-1.10.2-arm64.raw",
            "alloy-1.10.2-arm64.raw.sha256",
            "alloy-1.10.2-amd64.raw",
            "alloy-1.9.0-amd64.raw",
            "alloy-1.10.2-amd64.raw.sha256",
            ".alloy-sysext-work-1-x",
            "notes.txt",
        ]);
        let pick = |version: Option<&str>, archs: &[Arch]| -> Vec<String> {
            let version = version.map(|v| v.parse().unwrap());
            select_images(&dir, version.as_ref(), archs)
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        assert_eq!(
            pick(None, &[]),
            [
                "alloy-1.9.0-amd64.raw",
                "alloy-1.10.2-amd64.raw",
                "alloy-1.10.2-arm64.raw"
            ]
        );
        assert_eq!(
            pick(Some("v1.10.2"), &[]),
            ["alloy-1.10.2-amd64.raw", "alloy-1.10.2-arm64.raw"]
        );
        assert_eq!(
            pick(Some("1.10.2"), &[Arch::Arm64]),
            ["alloy-1.10.2-arm64.raw"]
        );
        assert!(pick(Some("2.0.0"), &[]).is_empty());
    }
}
