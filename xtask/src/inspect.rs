//! Looking inside a published image without mounting it, so that anyone can check one:
//! which filesystem it is (by magic bytes), its extension-release, and `usr/bin/alloy`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::arch::Arch;
use crate::stage::EXTENSION_NAME;
use crate::tools;

/// The filesystems systemd-sysext merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Ext4,
    Squashfs,
    Erofs,
}

/// How many leading bytes [`ImageFormat::detect`] needs.
pub const DETECT_BYTES: usize = 1084;

impl ImageFormat {
    /// Reads the magic numbers: squashfs `hsqs` at 0, ext4 0xEF53 at 1080, erofs 0xE0F5E1E2 at 1024.
    pub fn detect(head: &[u8]) -> Option<ImageFormat> {
        if head.starts_with(b"hsqs") {
            return Some(ImageFormat::Squashfs);
        }
        if head.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()[..]) {
            return Some(ImageFormat::Erofs);
        }
        if head.get(1080..1082) == Some(&0xEF53u16.to_le_bytes()[..]) {
            return Some(ImageFormat::Ext4);
        }
        None
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Ext4 => "ext4",
            ImageFormat::Squashfs => "squashfs",
            ImageFormat::Erofs => "erofs",
        }
    }
}

/// The path of the extension's metadata inside the image.
pub fn extension_release_path() -> String {
    format!("usr/lib/extension-release.d/extension-release.{EXTENSION_NAME}")
}

pub const ALLOY_PATH: &str = "usr/bin/alloy";

/// What was found inside an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// The extension-release file's text, if present.
    pub extension_release: Option<String>,
    /// `usr/bin/alloy`, if present.
    pub alloy: Option<FileFacts>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// The full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Its first bytes (up to 64), for the ELF header.
    pub head: Vec<u8>,
}

/// Reads what we check from an image file, whatever its format.
pub fn read_contents(image: &Path) -> anyhow::Result<(ImageFormat, Contents)> {
    let mut head = Vec::with_capacity(DETECT_BYTES);
    File::open(image)
        .and_then(|f| f.take(DETECT_BYTES as u64).read_to_end(&mut head))
        .with_context(|| format!("reading {}", image.display()))?;
    let Some(format) = ImageFormat::detect(&head) else {
        bail!("it is not an ext4, squashfs or erofs image (no known magic number)");
    };
    let contents = match format {
        ImageFormat::Ext4 => ext4_contents(image)?,
        other => bail!(
            "it is a {} image, which verify cannot look inside yet",
            other.name()
        ),
    };
    Ok((format, contents))
}

/// Everything wrong with an image's contents for `arch`; empty when it is a good Alloy sysext.
pub fn problems(contents: &Contents, arch: Arch) -> Vec<String> {
    let mut problems = Vec::new();
    match &contents.extension_release {
        None => problems.push(format!("no /{}", extension_release_path())),
        Some(text) => {
            let field = |key: &str| {
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .find(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().trim_matches('"').to_string())
            };
            for (key, want) in [
                ("ID", "flatcar"),
                ("SYSEXT_LEVEL", "1.0"),
                ("ARCHITECTURE", arch.systemd_name()),
            ] {
                match field(key) {
                    Some(value) if value == want => {}
                    Some(value) => problems.push(format!(
                        "extension-release has {key}={value}, expected {key}={want}"
                    )),
                    None => problems.push(format!("extension-release lacks {key}={want}")),
                }
            }
        }
    }
    match &contents.alloy {
        None => problems.push(format!("no /{ALLOY_PATH}")),
        Some(facts) => {
            if facts.mode & 0o170000 != 0o100000 {
                problems.push(format!(
                    "/{ALLOY_PATH} is not a regular file (mode {:o})",
                    facts.mode
                ));
            } else if facts.mode & 0o111 != 0o111 {
                problems.push(format!(
                    "/{ALLOY_PATH} is not executable by everyone (mode {:o})",
                    facts.mode & 0o7777
                ));
            }
            if let Err(why) = crate::elf::check_header(&facts.head, arch) {
                problems.push(format!("/{ALLOY_PATH}: {why}"));
            }
        }
    }
    problems
}

fn debugfs(sh: &Shell, image: &Path, request: &str) -> anyhow::Result<String> {
    let debugfs = tools::require(&[tools::DEBUGFS])?.remove(0);
    let output = cmd!(sh, "{debugfs} -R {request} {image}")
        .quiet()
        .ignore_stderr()
        .output()
        .with_context(|| format!("running debugfs -R {request:?} {}", image.display()))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The mode of `name` in directory `dir`, from `debugfs ls -p` (`/inode/mode/uid/gid/name/size/`).
fn mode_in_listing(listing: &str, name: &str) -> Option<u32> {
    listing.lines().find_map(|line| {
        let fields: Vec<&str> = line.split('/').collect();
        (fields.len() >= 7 && fields[5] == name && fields[1] != "0")
            .then(|| u32::from_str_radix(fields[2], 8).ok())
            .flatten()
    })
}

/// The first data block of a file, from `debugfs bmap` (a bare block number).
fn first_block(output: &str) -> Option<u64> {
    output.trim().parse().ok().filter(|&b| b > 0)
}

/// ext4 through `debugfs`, which reads the image as a file: no mount, no root.
fn ext4_contents(image: &Path) -> anyhow::Result<Contents> {
    let sh = Shell::new()?;
    let release_path = format!("/{}", extension_release_path());
    let (release_dir, release_name) = release_path.rsplit_once('/').unwrap();
    let extension_release = mode_in_listing(
        &debugfs(&sh, image, &format!("ls -p {release_dir}"))?,
        release_name,
    )
    .is_some()
    .then(|| debugfs(&sh, image, &format!("cat {release_path}")))
    .transpose()?;

    let alloy_path = format!("/{ALLOY_PATH}");
    let (alloy_dir, alloy_name) = alloy_path.rsplit_once('/').unwrap();
    let alloy = match mode_in_listing(
        &debugfs(&sh, image, &format!("ls -p {alloy_dir}"))?,
        alloy_name,
    ) {
        None => None,
        Some(mode) => {
            // Read the ELF header where the file's first block lies, rather than dumping
            // hundreds of megabytes to look at 64 bytes.
            let stats = debugfs(&sh, image, "stats")?;
            let block_size: u64 = stats
                .lines()
                .find_map(|l| l.strip_prefix("Block size:"))
                .and_then(|v| v.trim().parse().ok())
                .context("debugfs stats did not give the block size")?;
            let head = match first_block(&debugfs(&sh, image, &format!("bmap {alloy_path} 0"))?) {
                Some(block) => {
                    let mut file = File::open(image)?;
                    file.seek(SeekFrom::Start(block * block_size))?;
                    let mut head = Vec::with_capacity(64);
                    file.take(64).read_to_end(&mut head)?;
                    head
                }
                None => Vec::new(),
            };
            Some(FileFacts { mode, head })
        }
    };
    Ok(Contents {
        extension_release,
        alloy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::{fake_header, EM_AARCH64};

    fn with_magic(offset: usize, magic: &[u8]) -> Vec<u8> {
        let mut head = vec![0u8; DETECT_BYTES];
        head[offset..offset + magic.len()].copy_from_slice(magic);
        head
    }

    #[test]
    fn formats_are_told_apart_by_their_magic() {
        assert_eq!(
            ImageFormat::detect(&with_magic(1080, &[0x53, 0xEF])),
            Some(ImageFormat::Ext4)
        );
        assert_eq!(
            ImageFormat::detect(&with_magic(0, b"hsqs")),
            Some(ImageFormat::Squashfs)
        );
        assert_eq!(
            ImageFormat::detect(&with_magic(1024, &[0xE2, 0xE1, 0xF5, 0xE0])),
            Some(ImageFormat::Erofs)
        );
        assert_eq!(ImageFormat::detect(&[0u8; DETECT_BYTES]), None);
        assert_eq!(ImageFormat::detect(b"<html>"), None);
    }

    fn good(arch: Arch) -> Contents {
        Contents {
            extension_release: Some(format!(
                "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE={}\n",
                arch.systemd_name()
            )),
            alloy: Some(FileFacts {
                mode: 0o100755,
                head: fake_header(arch.elf_machine()),
            }),
        }
    }

    #[test]
    fn a_good_image_has_no_problems() {
        assert_eq!(
            problems(&good(Arch::Amd64), Arch::Amd64),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(&good(Arch::Arm64), Arch::Arm64),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_problem_is_named() {
        let mut contents = good(Arch::Amd64);
        contents.extension_release = Some("ID=debian\nARCHITECTURE=arm64\n".into());
        contents.alloy = Some(FileFacts {
            mode: 0o100644,
            head: fake_header(EM_AARCH64),
        });
        let found = problems(&contents, Arch::Amd64);
        assert_eq!(
            found,
            [
                "extension-release has ID=debian, expected ID=flatcar",
                "extension-release lacks SYSEXT_LEVEL=1.0",
                "extension-release has ARCHITECTURE=arm64, expected ARCHITECTURE=x86-64",
                "/usr/bin/alloy is not executable by everyone (mode 644)",
                "/usr/bin/alloy: it is an ELF executable for AArch64, not for x86-64 (amd64)",
            ]
        );
        let empty = problems(&Contents::default(), Arch::Amd64);
        assert_eq!(empty.len(), 2, "{empty:?}");
    }

    #[test]
    fn debugfs_output_is_read() {
        let listing =
            "/2/040755/0/0/./\n/2/040755/0/0/../\n/12/100755/0/0/alloy/1234/\n/0/000000/0/0//\n";
        assert_eq!(mode_in_listing(listing, "alloy"), Some(0o100755));
        assert_eq!(mode_in_listing(listing, "missing"), None);
        assert_eq!(first_block("1029\n"), Some(1029));
        assert_eq!(first_block("0\n"), None);
        assert_eq!(first_block("bmap: File not found by ext2_lookup\n"), None);
    }
}
