//! The release-to-image pipeline behind `cargo xtask build`, one image at a time: release ->
//! verified zip ([`crate::release`]) -> staged tree ([`crate::payload`]) -> image
//! ([`crate::image`]) -> checksum -> the output directory, where image and checksum appear whole
//! or not at all.

use std::path::PathBuf;

use anyhow::Context;

use crate::arch::Arch;
use crate::contract::ImageName;
use crate::image::{Packer, Streamed};
use crate::payload::{stage, ALLOY_PATH};
use crate::release::archive::BinaryEntry;
use crate::release::fetch::ReleaseSource;
use crate::util::checksums::{self, Digest};
use crate::util::files::{self, WorkDir};
use crate::util::progress::{detail, step};
use crate::util::timings::Timings;
use crate::version::Version;

/// Everything a build needs besides the version and architecture: where releases come from,
/// how images are packed, what goes in, and where images go.
pub struct Builder<'sh> {
    pub source: ReleaseSource,
    pub packer: Packer<'sh>,
    /// Whether the image carries the drop-in that starts `alloy.service` at boot.
    pub autostart: bool,
    pub out_dir: PathBuf,
}

/// One finished image, in the output directory beside its `.sha256`.
pub struct Built {
    pub image: PathBuf,
    pub size: u64,
    pub digest: Digest,
}

impl Builder<'_> {
    /// Builds the image of `version` for `arch` in a private work directory, and moves it and
    /// its checksum into the output directory only when both are complete.
    pub fn build(
        &self,
        version: &Version,
        arch: Arch,
        timings: &mut Timings,
    ) -> anyhow::Result<Built> {
        let zip = self.source.zip(version, arch, timings)?;
        let name = ImageName::new(version, arch);
        let file_name = name.file_name();
        let work = WorkDir::new(&self.out_dir)?;
        let (tree, binary) =
            stage::stage_sysext_tree(&work.path().join("tree"), &zip, &name, self.autostart)?;
        timings.staged_bytes += tree.content_bytes();

        let image = work.path().join(&file_name);
        self.pack(&tree, binary, &image, &name, timings)?;
        let (digest, size) = timings.phase("hash", || self.check_sync_and_hash(&image))?;

        let checksum_name = name.checksum_name();
        let checksum = work.path().join(&checksum_name);
        std::fs::write(&checksum, checksums::line(&digest, &file_name))
            .with_context(|| format!("writing {}", checksum.display()))?;
        if let Some(why) = files::incomplete_pair(&self.out_dir, &file_name, &checksum_name) {
            detail(format!("replacing {file_name}: {why}"));
        }
        let installed = files::install_with_checksum(
            &self.out_dir,
            (image, &file_name),
            (checksum, &checksum_name),
        )?;
        Ok(Built {
            image: installed,
            size,
            digest,
        })
    }

    /// Packs the staged tree, the binary inflated straight into the image where the format
    /// allows it (then "pack" includes the inflating), else onto disk first ("extract").
    fn pack(
        &self,
        tree: &stage::StagedTree,
        mut binary: BinaryEntry<'_>,
        image: &std::path::Path,
        name: &ImageName,
        timings: &mut Timings,
    ) -> anyhow::Result<()> {
        let format = self.packer.format;
        let file_name = name.file_name();
        let identity = name.identity();
        if self.packer.streams() {
            step(format!(
                "Packing {file_name} ({format}), inflating {ALLOY_PATH} into it"
            ));
            return timings.phase("pack", || {
                binary.read(|reader| {
                    let streamed = Streamed {
                        path: ALLOY_PATH,
                        reader,
                    };
                    self.packer.pack(tree, image, &identity, Some(streamed))
                })
            });
        }
        timings.phase("extract", || tree.write_pending(ALLOY_PATH, &mut binary))?;
        step(format!("Packing {file_name} ({format})"));
        timings.phase("pack", || self.packer.pack(tree, image, &identity, None))
    }

    /// Checks the image (e2fsck), makes it durable and hashes it at once: the check and the
    /// sync wait on the disk, the hash on a core.
    fn check_sync_and_hash(&self, image: &std::path::Path) -> anyhow::Result<(Digest, u64)> {
        let checker = self.packer.checker();
        std::thread::scope(|scope| {
            let checked = scope.spawn(|| checker.check(image));
            let synced = scope.spawn(|| files::sync_file(image));
            let hashed = checksums::hash_file(image);
            let joined = |handle: std::thread::ScopedJoinHandle<'_, anyhow::Result<()>>| {
                handle.join().unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "a thread finishing {} panicked",
                        image.display()
                    ))
                })
            };
            let (checked, synced) = (joined(checked), joined(synced));
            checked.and(synced).and(hashed)
        })
    }
}
