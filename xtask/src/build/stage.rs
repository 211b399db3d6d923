//! The sysext tree: what the image will hold, laid out in a directory and listed in order,
//! so that image builders never depend on the order a host filesystem lists files in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::archive::BinaryEntry;
use super::fetch::VerifiedZip;
use crate::contract::{ExtensionRelease, ImageName, ALLOY_PATH, EXTENSION_RELEASE_PATH};
use crate::host::service;
use crate::util::progress::{detail, mib, step};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64 },
}

/// One path in the tree, relative to its root (`usr/bin/alloy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
}

pub struct StagedTree {
    pub root: PathBuf,
    /// Every directory and file, parents before children, in the order they were added.
    pub entries: Vec<Entry>,
}

/// A sysext may only add to `/usr` (and `/opt`, which we do not use), and must never ship
/// `/usr/sbin`: on Flatcar that is a symlink, and shipping it breaks the host.
pub fn check_path(path: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        bail!("{path:?} is not a clean relative path");
    }
    // Image tools read these names from scripts (debugfs) and command lines: keep them plain.
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-+@/".contains(*c)))
    {
        bail!("{path:?} has the character {c:?}, which staged paths may not use");
    }
    if parts[0] != "usr" {
        bail!("{path:?} is outside /usr: a sysext can only extend /usr");
    }
    if parts.get(1) == Some(&"sbin") {
        bail!("{path:?} is under /usr/sbin, which is a symlink on Flatcar: shipping it would break the host");
    }
    Ok(())
}

impl StagedTree {
    pub fn new(root: &Path) -> anyhow::Result<StagedTree> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(StagedTree {
            root: root.to_path_buf(),
            entries: Vec::new(),
        })
    }

    pub fn disk_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn has(&self, path: &str) -> bool {
        self.entries.iter().any(|e| e.path == path)
    }

    /// Adds `path`'s missing parent directories (mode 0755).
    fn add_parents(&mut self, path: &str) -> anyhow::Result<()> {
        let mut parent = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for component in &components[..components.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            if !self.has(&parent) {
                self.add_dir(&parent.clone(), 0o755)?;
            }
        }
        Ok(())
    }

    fn set_mode(&self, path: &str, mode: u32) -> anyhow::Result<()> {
        let disk = self.disk_path(path);
        fs::set_permissions(&disk, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode of {}", disk.display()))
    }

    pub fn add_dir(&mut self, path: &str, mode: u32) -> anyhow::Result<()> {
        check_path(path)?;
        self.add_parents(path)?;
        let disk = self.disk_path(path);
        fs::create_dir_all(&disk).with_context(|| format!("creating {}", disk.display()))?;
        self.set_mode(path, mode)?;
        self.entries.push(Entry {
            path: path.to_string(),
            kind: Kind::Dir,
            mode,
        });
        Ok(())
    }

    pub fn add_file(&mut self, path: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
        self.add_pending(path, contents.len() as u64, mode)?;
        let disk = self.disk_path(path);
        fs::write(&disk, contents).with_context(|| format!("writing {}", disk.display()))?;
        self.set_mode(path, mode)
    }

    /// Adds a file whose `size` bytes are not on disk yet: the packer reads them from a stream,
    /// or they are written to [`StagedTree::disk_path`] before packing.
    pub fn add_pending(&mut self, path: &str, size: u64, mode: u32) -> anyhow::Result<()> {
        check_path(path)?;
        if self.has(path) {
            bail!("{path} is staged twice");
        }
        self.add_parents(path)?;
        self.entries.push(Entry {
            path: path.to_string(),
            kind: Kind::File { size },
            mode,
        });
        Ok(())
    }

    /// Writes a pending file's content (see [`StagedTree::add_pending`]) with its mode.
    pub fn write_pending(&self, path: &str, binary: &mut BinaryEntry<'_>) -> anyhow::Result<()> {
        let mode = match self.entries.iter().find(|e| e.path == path) {
            Some(Entry {
                mode,
                kind: Kind::File { size },
                ..
            }) if *size == binary.size => *mode,
            _ => bail!(
                "{path} is not staged as a pending file of {} bytes",
                binary.size
            ),
        };
        binary.extract(&self.disk_path(path))?;
        self.set_mode(path, mode)
    }

    /// Bytes of file content in the tree.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::File { size } => size,
                Kind::Dir => 0,
            })
            .sum()
    }
}

/// Lays out the sysext tree for one architecture: the verified binary as `usr/bin/alloy`
/// (0755 whatever the zip said), the extension-release file, and the service with its defaults
/// (and, with `autostart`, the drop-in that starts it).
///
/// The binary is checked (the zip's one entry, an ELF executable for the architecture) but left
/// in the zip: it is returned, for the packer to inflate straight into the image (ext4) or for
/// [`StagedTree::write_pending`] to put on disk first.
pub fn stage_sysext_tree<'z>(
    root: &Path,
    zip: &'z VerifiedZip,
    name: &ImageName,
    autostart: bool,
) -> anyhow::Result<(StagedTree, BinaryEntry<'z>)> {
    let arch = name.arch;
    step(format!(
        "Staging the sysext tree for Alloy {} ({arch})",
        name.version.tag()
    ));
    let mut tree = StagedTree::new(root)?;
    let mut binary = BinaryEntry::open(&zip.file, &zip.path, &arch.release_binary())?;
    let header = binary.head(64)?;
    if let Err(why) = super::elf::check_header(&header, arch) {
        bail!(
            "{} holds the wrong binary: {} is not an Alloy binary for {arch}: {why}",
            zip.path.display(),
            arch.release_binary()
        );
    }
    tree.add_pending(ALLOY_PATH, binary.size, 0o755)?;
    tree.add_file(
        EXTENSION_RELEASE_PATH,
        ExtensionRelease::for_arch(arch).render().as_bytes(),
        0o644,
    )?;
    stage_service(&mut tree, autostart)?;
    detail(format!(
        "{} entries, {} of content",
        tree.entries.len(),
        mib(tree.content_bytes())
    ));
    Ok((tree, binary))
}

/// The unit, its defaults and tmpfiles.d lines; the autostart drop-in only when asked for.
pub(crate) fn stage_service(tree: &mut StagedTree, autostart: bool) -> anyhow::Result<()> {
    tree.add_file(service::UNIT_PATH, service::unit().as_bytes(), 0o644)?;
    tree.add_file(
        service::SETUP_UNIT_PATH,
        service::setup_unit().as_bytes(),
        0o644,
    )?;
    tree.add_file(
        service::SYSUSERS_PATH,
        service::sysusers().as_bytes(),
        0o644,
    )?;
    tree.add_file(
        service::TMPFILES_PATH,
        service::tmpfiles().as_bytes(),
        0o644,
    )?;
    tree.add_file(
        service::DEFAULT_CONFIG_PATH,
        service::default_config().as_bytes(),
        0o644,
    )?;
    tree.add_file(
        service::DEFAULT_ENVIRONMENT_PATH,
        service::default_environment().as_bytes(),
        0o644,
    )?;
    if autostart {
        tree.add_file(
            service::AUTOSTART_PATH,
            service::autostart_dropin().as_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_files_are_staged_with_the_drop_in_only_for_autostart() {
        for autostart in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut tree = StagedTree::new(&dir.path().join("tree")).unwrap();
            stage_service(&mut tree, autostart).unwrap();
            let files: Vec<(&str, u32)> = tree
                .entries
                .iter()
                .filter(|e| matches!(e.kind, Kind::File { .. }))
                .map(|e| (e.path.as_str(), e.mode))
                .collect();
            let mut expected = vec![
                (service::UNIT_PATH, 0o644),
                (service::SETUP_UNIT_PATH, 0o644),
                (service::SYSUSERS_PATH, 0o644),
                (service::TMPFILES_PATH, 0o644),
                (service::DEFAULT_CONFIG_PATH, 0o644),
                (service::DEFAULT_ENVIRONMENT_PATH, 0o644),
            ];
            if autostart {
                expected.push((service::AUTOSTART_PATH, 0o644));
            }
            assert_eq!(files, expected);
            assert_eq!(
                fs::read_to_string(tree.disk_path(service::UNIT_PATH)).unwrap(),
                service::unit()
            );
        }
    }

    #[test]
    fn only_usr_and_never_usr_sbin() {
        assert!(check_path("usr/bin/alloy").is_ok());
        for bad in [
            "usr/bin/a b",
            "usr/bin/a\"b",
            "usr/bin/a\nb",
            "etc/alloy/config.alloy",
            "usr/sbin/alloy",
            "usr/sbin",
            "usr/../etc/x",
            "/usr/bin/x",
            "usr//x",
            "opt/x",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_parents_before_children_with_modes_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = StagedTree::new(&dir.path().join("tree")).unwrap();
        tree.add_file("usr/lib/a/b.conf", b"x=1\n", 0o644).unwrap();
        tree.add_file("usr/bin/tool", b"#!", 0o755).unwrap();
        let paths: Vec<&str> = tree.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "usr",
                "usr/lib",
                "usr/lib/a",
                "usr/lib/a/b.conf",
                "usr/bin",
                "usr/bin/tool"
            ]
        );
        assert_eq!(tree.content_bytes(), 6);
        let mode = fs::metadata(tree.disk_path("usr/bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert!(tree.add_file("usr/bin/tool", b"", 0o644).is_err());
        assert!(tree.add_file("etc/x", b"", 0o644).is_err());
    }
}
