//! The external programs we call, found before any work starts, with the package to install
//! when one is missing.

use std::path::{Path, PathBuf};

use anyhow::bail;
use xshell::Shell;

#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub command: &'static str,
    /// The Debian/Ubuntu package that provides it.
    pub package: &'static str,
}

impl Tool {
    const fn new(command: &'static str, package: &'static str) -> Tool {
        Tool { command, package }
    }
}

pub const MKFS_EXT4: Tool = Tool::new("mkfs.ext4", "e2fsprogs");
pub const DEBUGFS: Tool = Tool::new("debugfs", "e2fsprogs");
pub const E2FSCK: Tool = Tool::new("e2fsck", "e2fsprogs");
pub const MKSQUASHFS: Tool = Tool::new("mksquashfs", "squashfs-tools");
pub const UNSQUASHFS: Tool = Tool::new("unsquashfs", "squashfs-tools");
pub const MKFS_EROFS: Tool = Tool::new("mkfs.erofs", "erofs-utils");
pub const GPG: Tool = Tool::new("gpg", "gnupg");
pub const GPGV: Tool = Tool::new("gpgv", "gpgv");

/// Where to look: the shell's `$PATH`, then the sbin directories that an unprivileged user's
/// PATH often lacks on Debian, where e2fsprogs installs.
fn search_dirs(sh: &Shell) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = sh
        .var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    for extra in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(extra.into());
        }
    }
    dirs
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds each tool in `dirs`; names every missing one and its package in one error.
pub fn find_in(dirs: &[PathBuf], tools: &[Tool]) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut missing: Vec<Tool> = Vec::new();
    for tool in tools {
        match dirs
            .iter()
            .map(|d| d.join(tool.command))
            .find(|p| is_executable(p))
        {
            Some(path) => found.push(path),
            None => missing.push(*tool),
        }
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|t| format!("{} (package {})", t.command, t.package))
            .collect();
        let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
        packages.dedup();
        bail!(
            "missing tool{}: {}. Install with `sudo apt-get install {}`, or run `bash scripts/install-deps.sh`",
            if missing.len() > 1 { "s" } else { "" },
            names.join(", "),
            packages.join(" ")
        );
    }
    Ok(found)
}

/// The programs a command needs, found once, before any download or upload starts.
#[derive(Clone, Debug, Default)]
pub struct Toolbox {
    found: Vec<(&'static str, PathBuf)>,
}

impl Toolbox {
    /// Where `tool` is. Asking for one the preflight did not look for is a bug in the caller.
    pub fn path(&self, tool: Tool) -> &Path {
        self.found
            .iter()
            .find(|(command, _)| *command == tool.command)
            .map(|(_, path)| path.as_path())
            .unwrap_or_else(|| panic!("{} was not in the preflight", tool.command))
    }
}

/// Finds every tool, or fails naming each missing one with its package.
pub fn preflight(sh: &Shell, tools: &[Tool]) -> anyhow::Result<Toolbox> {
    let paths = find_in(&search_dirs(sh), tools)?;
    Ok(Toolbox {
        found: tools.iter().map(|t| t.command).zip(paths).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_tool_with_its_package() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("debugfs");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = vec![dir.path().to_path_buf()];

        assert_eq!(find_in(&dirs, &[DEBUGFS]).unwrap(), vec![fake]);
        let err = find_in(
            &dirs,
            &[
                MKFS_EXT4,
                DEBUGFS,
                Tool {
                    command: "mksquashfs",
                    package: "squashfs-tools",
                },
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mkfs.ext4 (package e2fsprogs)"), "{err}");
        assert!(err.contains("mksquashfs (package squashfs-tools)"), "{err}");
        assert!(
            err.contains("apt-get install e2fsprogs squashfs-tools"),
            "{err}"
        );
        assert!(!err.contains("debugfs"), "{err}");
    }

    #[test]
    fn a_file_without_execute_bits_is_not_a_tool() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mkfs.ext4"), "").unwrap();
        assert!(find_in(&[dir.path().to_path_buf()], &[MKFS_EXT4]).is_err());
    }
}
