//! ext4 images with the e2fsprogs in Debian 12 (1.47.0), which predates SOURCE_DATE_EPOCH
//! support. We make an empty filesystem with `mkfs.ext4` and fill it with a `debugfs` script,
//! rather than `mkfs.ext4 -d`, so that:
//! - files go in in our order, not in the order the host filesystem happens to list them;
//! - owners become 0:0, modes and every timestamp are set from the script, whoever builds;
//! - UUID and directory hash seed are derived from the image name, and `E2FSPROGS_FAKE_TIME`
//!   pins the superblock times.

use std::path::Path;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::ImageParams;
use crate::build::stage::{Kind, StagedTree};
use crate::util::tools::{self, Toolbox};

const BLOCK_SIZE: u64 = 4096;
const BLOCKS_PER_GROUP: u64 = 32768;

/// Our own mke2fs.conf, so that the host's (which differs between distributions and releases)
/// does not change the features. A read-only image needs no journal, no reserved GDT blocks for
/// online resizing, and no orphan file. mke2fs also looks up a size type (`floppy` under 3 MiB,
/// `small` under 512 MiB) and warns when it is missing. Both are defined with the block size we pass
/// with `-b` anyway (an empty section still counts as missing), so they change nothing: a test
/// pins an image's bytes.
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tsmall = {
\t\tblocksize = 4096
\t}
\tfloppy = {
\t\tblocksize = 4096
\t}
";

fn blocks(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK_SIZE)
}

/// The image size: the content rounded to blocks, plus what ext4 needs around it. Sized
/// tightly, since every Flatcar host downloads it; `e2fsck` afterwards proves it was enough.
pub fn image_size(tree: &StagedTree) -> u64 {
    let mut data = 0;
    for entry in &tree.entries {
        data += match entry.kind {
            Kind::Dir => 1,
            // An extent maps at most 128 MiB; allow an index block per 32 MiB for gaps.
            Kind::File { size } => blocks(size) + size / (32 << 20),
        };
    }
    data += 2 + 4; // root directory, lost+found
    let groups = (data + 2048).div_ceil(BLOCKS_PER_GROUP);
    // Per group: block bitmap, inode bitmap, one inode table block, and (sparse) backups of the
    // superblock and group descriptors; then room for the allocator's alignment.
    let metadata = groups * 6 + 64;
    (data + metadata + 256) * BLOCK_SIZE
}

/// The debugfs commands that create `tree` and pin every inode's owner, mode and times.
/// Paths are relative to the tree root, which is debugfs's working directory.
pub fn debugfs_script(tree: &StagedTree, epoch: u64) -> String {
    let mut script = String::new();
    for entry in &tree.entries {
        match entry.kind {
            Kind::Dir => script.push_str(&format!("mkdir {}\n", entry.path)),
            Kind::File { .. } => script.push_str(&format!("write {0} {0}\n", entry.path)),
        }
    }
    let fixed = [("/", 0o040755), ("/lost+found", 0o040700)];
    let staged = tree.entries.iter().map(|e| {
        let kind = match e.kind {
            Kind::Dir => 0o040000,
            Kind::File { .. } => 0o100000,
        };
        (e.path.as_str(), kind | e.mode)
    });
    for (path, mode) in fixed.into_iter().chain(staged) {
        script.push_str(&format!("sif {path} mode 0{mode:o}\n"));
        for field in ["uid 0", "gid 0"] {
            script.push_str(&format!("sif {path} {field}\n"));
        }
        for field in ["atime", "mtime", "ctime", "crtime"] {
            script.push_str(&format!("sif {path} {field} @{epoch}\n"));
        }
    }
    script
}

/// debugfs reports failures on stderr and still exits 0: anything there but its banner is an error.
fn debugfs_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect()
}

pub fn pack(
    sh: &Shell,
    tools: &Toolbox,
    tree: &StagedTree,
    dest: &Path,
    params: &ImageParams,
) -> anyhow::Result<()> {
    let mkfs = tools.path(tools::MKFS_EXT4);
    let debugfs = tools.path(tools::DEBUGFS);
    let e2fsck = tools.path(tools::E2FSCK);
    let work = dest.parent().context("image path has no directory")?;

    let size = image_size(tree);
    let image =
        std::fs::File::create_new(dest).with_context(|| format!("creating {}", dest.display()))?;
    image
        .set_len(size)
        .with_context(|| format!("sizing {}", dest.display()))?;
    drop(image);

    let conf = work.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF)?;
    let epoch = params.epoch.to_string();
    let uuid = params.derived_uuid("ext4 uuid");
    let hash_seed = params.derived_uuid("ext4 hash seed");
    let inodes = (tree.entries.len() + 16).to_string();
    let extended = format!("root_owner=0:0,hash_seed={hash_seed},lazy_itable_init=0,nodiscard");
    cmd!(sh, "{mkfs} -q -F -t ext4 -b 4096 -I 256 -N {inodes} -m 0 -L alloy -U {uuid} -E {extended} {dest}")
        .env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", &epoch)
        .quiet()
        .run()
        .with_context(|| format!("mkfs.ext4 failed on {}", dest.display()))?;

    let script = work.join("debugfs.script");
    std::fs::write(&script, debugfs_script(tree, params.epoch))?;
    let _cwd = sh.push_dir(&tree.root);
    let output = cmd!(sh, "{debugfs} -w -f {script} {dest}")
        .env("E2FSPROGS_FAKE_TIME", &epoch)
        .quiet()
        .ignore_status()
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors = debugfs_errors(&stderr);
    if !output.status.success() || !errors.is_empty() {
        bail!(
            "debugfs could not fill {} ({} bytes for {} bytes of content): {}",
            dest.display(),
            size,
            tree.content_bytes(),
            errors.join("; ")
        );
    }

    // Read-only consistency check of what we made: catches a too-small image or a bad write.
    let check = cmd!(sh, "{e2fsck} -f -n {dest}")
        .quiet()
        .ignore_status()
        .output()?;
    if !check.status.success() {
        bail!(
            "e2fsck found problems in the new image {}:\n{}{}",
            dest.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(size: usize) -> (tempfile::TempDir, StagedTree) {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = StagedTree::new(&dir.path().join("t")).unwrap();
        tree.add_file("usr/bin/alloy", &vec![0u8; size], 0o755)
            .unwrap();
        tree.add_file(
            "usr/lib/extension-release.d/extension-release.alloy",
            b"ID=flatcar\n",
            0o644,
        )
        .unwrap();
        (dir, tree)
    }

    #[test]
    fn script_creates_in_order_and_pins_every_inode() {
        let (_dir, tree) = tree_with(10);
        let script = debugfs_script(&tree, 1704067200);
        let creates: Vec<&str> = script.lines().filter(|l| !l.starts_with("sif")).collect();
        assert_eq!(
            creates,
            [
                "mkdir usr",
                "mkdir usr/bin",
                "write usr/bin/alloy usr/bin/alloy",
                "mkdir usr/lib",
                "mkdir usr/lib/extension-release.d",
                "write usr/lib/extension-release.d/extension-release.alloy usr/lib/extension-release.d/extension-release.alloy",
            ]
        );
        assert!(script.contains("sif usr/bin/alloy mode 0100755\n"));
        assert!(script.contains("sif usr/lib mode 040755\n"));
        assert!(script.contains("sif / uid 0\n"));
        assert!(script.contains("sif /lost+found crtime @1704067200\n"));
        // Every inode gets owner, mode and four times.
        let inodes = tree.entries.len() + 2;
        assert_eq!(
            script.lines().filter(|l| l.starts_with("sif")).count(),
            inodes * 7
        );
    }

    #[test]
    fn size_is_content_plus_a_small_overhead() {
        for content in [1_000u64, 5 << 20, 420 << 20] {
            let (_dir, mut tree) = tree_with(0);
            tree.entries[2].kind = Kind::File { size: content }; // usr/bin/alloy, without writing it
            let size = image_size(&tree);
            let content = tree.content_bytes();
            assert!(size > content, "{size} <= {content}");
            assert!(
                size as f64 <= content as f64 * 1.03 + (4 << 20) as f64,
                "{size} for {content}"
            );
        }
    }

    /// Images from fixed trees, one per mke2fs size type (`floppy` under 3 MiB, `small` above):
    /// their bytes are pinned, so a change to the mke2fs configuration or the debugfs script that
    /// changes an image cannot go unnoticed; and mkfs.ext4 prints nothing for either.
    #[test]
    fn small_images_have_pinned_bytes_and_mkfs_prints_no_warning() {
        let sh = Shell::new().unwrap();
        let tools = tools::preflight(&sh, super::super::ImageFormat::Ext4.tools()).unwrap();
        let pinned = [
            (
                0,
                "8390257e1657b6bba558e87178be5b8b159035312f47c17bac7363d0e1f82181",
            ),
            (
                6 << 20,
                "9026c9ff814f1e8e383bf7f7a11aa34273115066cf7d87c279312314924e3baa",
            ),
        ];
        for (binary_size, expected) in pinned {
            let (dir, mut tree) = tree_with(binary_size);
            tree.add_file("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
                .unwrap();
            let params = ImageParams {
                epoch: 1_704_067_200,
                identity: "alloy-0.0.0-amd64".into(),
            };
            let work = dir.path().join("work");
            std::fs::create_dir(&work).unwrap();
            let dest = work.join("small.raw");
            pack(&sh, &tools, &tree, &dest, &params).unwrap();
            let (digest, size) = crate::util::checksums::hash_file(&dest).unwrap();
            assert_eq!(size, image_size(&tree));
            assert_eq!(
                digest.to_string(),
                expected,
                "a {size}-byte image changed (pinned with e2fsprogs 1.47.0, Debian 12's; another \
                 e2fsprogs may write other bytes)"
            );

            // The same mkfs command, its output captured: nothing about undefined fs_types.
            let conf = work.join("mke2fs.conf");
            let again = work.join("again.raw");
            std::fs::File::create(&again)
                .unwrap()
                .set_len(size)
                .unwrap();
            let mkfs = tools.path(tools::MKFS_EXT4);
            let output = cmd!(sh, "{mkfs} -q -F -t ext4 -b 4096 {again}")
                .env("MKE2FS_CONFIG", &conf)
                .quiet()
                .output()
                .unwrap();
            let said =
                String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
            assert!(
                said.trim().is_empty(),
                "mkfs.ext4 on {size} bytes said: {said:?}"
            );
        }
    }

    #[test]
    fn only_non_banner_stderr_lines_are_errors() {
        assert!(debugfs_errors("debugfs 1.47.0 (5-Feb-2023)\n").is_empty());
        assert_eq!(
            debugfs_errors("debugfs 1.47.0 (5-Feb-2023)\nwrite: Could not allocate block in ext2 filesystem \n"),
            ["write: Could not allocate block in ext2 filesystem "]
        );
    }
}
