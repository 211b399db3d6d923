//! The sysext tree: what the image will hold, laid out in a directory and listed in order,
//! so that image builders never depend on the order a host filesystem lists files in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{Content, ExtensionRelease};
use crate::contract::ImageName;
use crate::release::archive::BinaryEntry;
use crate::release::elf;
use crate::release::fetch::VerifiedZip;
use crate::util::progress::{detail, mib, step};

/// What a staged path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StagedKind {
    Dir,
    File { size: u64 },
}

/// One path in the tree, relative to its root (`usr/bin/alloy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedPath {
    pub path: String,
    pub kind: StagedKind,
    pub mode: u32,
}

pub struct StagedTree {
    pub root: PathBuf,
    /// Every directory and file, parents before children, in the order they were added.
    pub entries: Vec<StagedPath>,
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
        self.entries.push(StagedPath {
            path: path.to_string(),
            kind: StagedKind::Dir,
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
        self.entries.push(StagedPath {
            path: path.to_string(),
            kind: StagedKind::File { size },
            mode,
        });
        Ok(())
    }

    /// Writes a pending file's content (see [`StagedTree::add_pending`]) with its mode.
    pub fn write_pending(&self, path: &str, binary: &mut BinaryEntry<'_>) -> anyhow::Result<()> {
        let mode = match self.entries.iter().find(|e| e.path == path) {
            Some(StagedPath {
                mode,
                kind: StagedKind::File { size },
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
                StagedKind::File { size } => size,
                StagedKind::Dir => 0,
            })
            .sum()
    }
}

/// Lays out the sysext tree for one architecture: every file of the payload table
/// ([`super::files`]), the verified binary as `usr/bin/alloy` (its mode from the table whatever
/// the zip said), the extension-release file for the architecture, the service with its
/// defaults (and, with `autostart`, the drop-in that starts it).
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
    let header = binary.head(elf::HEADER_BYTES)?;
    if let Err(why) = elf::check_header(&header, arch) {
        bail!(
            "{} holds the wrong binary: {} is not an Alloy binary for {arch}: {why}",
            zip.path.display(),
            arch.release_binary()
        );
    }
    for file in super::files(autostart) {
        match file.content {
            Content::Binary => tree.add_pending(file.path, binary.size, file.mode)?,
            Content::ExtensionRelease => {
                let text = ExtensionRelease::for_arch(arch).render();
                tree.add_file(file.path, text.as_bytes(), file.mode)?
            }
            Content::Text(text) => tree.add_file(file.path, text().as_bytes(), file.mode)?,
        }
    }
    detail(format!(
        "{} entries, {} of content",
        tree.entries.len(),
        mib(tree.content_bytes())
    ));
    Ok((tree, binary))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verified zip holding `binary` as the amd64 release's one entry.
    fn release_zip(dir: &Path, binary: &[u8]) -> VerifiedZip {
        let path = dir.join("alloy-linux-amd64.zip");
        xtask_testkit::fixture::write_binary_zip(&path, binary);
        VerifiedZip {
            file: fs::File::open(&path).unwrap(),
            path,
        }
    }

    #[test]
    fn the_payload_is_staged_in_order_with_the_drop_in_only_for_autostart() {
        let dir = tempfile::tempdir().unwrap();
        let mut binary = elf::fake_header(crate::arch::EM_X86_64);
        binary.extend_from_slice(b"the rest of alloy");
        let zip = release_zip(dir.path(), &binary);
        let name = ImageName::new(&"1.10.2".parse().unwrap(), crate::arch::Arch::Amd64);
        for autostart in [true, false] {
            let root = dir.path().join(format!("tree-{autostart}"));
            let (tree, binary_entry) = stage_sysext_tree(&root, &zip, &name, autostart).unwrap();
            assert_eq!(binary_entry.size, binary.len() as u64);
            let files: Vec<(&str, u32)> = tree
                .entries
                .iter()
                .filter(|e| matches!(e.kind, StagedKind::File { .. }))
                .map(|e| (e.path.as_str(), e.mode))
                .collect();
            let expected: Vec<(&str, u32)> = super::super::files(autostart)
                .map(|f| (f.path, f.mode))
                .collect();
            assert_eq!(files, expected);
            assert_eq!(
                files
                    .iter()
                    .any(|(path, _)| *path == super::super::AUTOSTART_PATH),
                autostart
            );
            // The binary is pending (inflated while packing); texts are on disk with their mode.
            assert!(!tree.disk_path(super::super::ALLOY_PATH).exists());
            assert_eq!(
                fs::read_to_string(tree.disk_path(super::super::UNIT_PATH)).unwrap(),
                super::super::service::unit()
            );
            assert_eq!(
                fs::read_to_string(tree.disk_path(super::super::EXTENSION_RELEASE_PATH)).unwrap(),
                ExtensionRelease::for_arch(crate::arch::Arch::Amd64).render()
            );
        }
        // Another architecture's binary is refused before anything is staged.
        let arm = release_zip(dir.path(), &elf::fake_header(crate::arch::EM_AARCH64));
        let err = stage_sysext_tree(&dir.path().join("arm"), &arm, &name, true)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("not an Alloy binary for amd64"),
            "{err:#}"
        );
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
