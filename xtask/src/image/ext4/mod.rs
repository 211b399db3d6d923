//! ext4 images with the e2fsprogs in Debian 12 (1.47.0), which predates SOURCE_DATE_EPOCH
//! support. We make an empty filesystem with `mkfs.ext4` and fill it as a `debugfs -w` script
//! ([`debugfs_script`]) would, rather than with `mkfs.ext4 -d`, so that:
//! - files go in in our order, not in the order the host filesystem happens to list them;
//! - owners become 0:0, modes and every timestamp are set from the script, whoever builds;
//! - UUID and directory hash seed are derived from the image name; `E2FSPROGS_FAKE_TIME` pins
//!   the times mkfs writes, and the fill sets the superblock's last-write time to the epoch.
//!
//! The script is run through libext2fs from our own process ([`libext2fs`]), making debugfs's
//! calls in debugfs's order, so the binary can be inflated straight into the image instead of
//! being written to disk and copied by debugfs. Tests pin image digests and compare with the
//! real debugfs byte for byte.

mod libext2fs;

use std::path::Path;

use anyhow::{bail, Context};
use xshell::cmd;

use super::{Job, Streamed};
use crate::payload::stage::{StagedKind, StagedTree};
use crate::util::files::copy_stream;
use crate::util::handoff::{self, Chunks};
use crate::util::sandbox;
use crate::util::tools::{self, Toolbox};
use libext2fs::{FileWriter, Libext2fs, Session};

/// Fails, naming the package, when libext2fs cannot be loaded: checked before any download.
pub fn check_library() -> anyhow::Result<()> {
    Libext2fs::get().map(drop)
}

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
            StagedKind::Dir => 1,
            // An extent maps at most 128 MiB; allow an index block per 32 MiB for gaps.
            StagedKind::File { size } => blocks(size) + size / (32 << 20),
        };
    }
    data += 2 + 4; // root directory, lost+found
    let groups = (data + 2048).div_ceil(BLOCKS_PER_GROUP);
    // Per group: block bitmap, inode bitmap, one inode table block, and (sparse) backups of the
    // superblock and group descriptors; then room for the allocator's alignment.
    let metadata = groups * 6 + 64;
    (data + metadata + 256) * BLOCK_SIZE
}

/// Packs `tree` into `dest`: an empty filesystem from `mkfs.ext4`, filled through libext2fs as
/// `debugfs -w` would fill it from [`debugfs_script`]; [`check`] it before use. The `streamed`
/// file's bytes come from its reader (the binary, inflated from the zip on this thread) while
/// another thread writes them into the image: the two cores share the work, and the binary is
/// never staged on disk.
pub(super) fn fill_image(job: &Job, streamed: Option<Streamed<'_>>) -> anyhow::Result<()> {
    let Job { tree, dest, .. } = *job;
    let size = make_filesystem(job)?;
    fill(tree, dest, job.params.epoch, streamed).with_context(|| {
        format!(
            "could not fill {} ({size} bytes for {} bytes of content)",
            dest.display(),
            tree.content_bytes()
        )
    })
}

/// Creates `dest` at the size `tree` needs and makes an empty ext4 filesystem in it, with our
/// mke2fs.conf (beside `dest`), our UUID, hash seed and times. Returns the size.
fn make_filesystem(job: &Job) -> anyhow::Result<u64> {
    let Job {
        sh,
        tools,
        tree,
        dest,
        ref params,
    } = *job;
    let mkfs = tools.path(tools::MKFS_EXT4);
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
    // e2fsprogs 1.47.1 and later read SOURCE_DATE_EPOCH before E2FSPROGS_FAKE_TIME (and an
    // empty one as time 0): both say the epoch, whatever our own environment holds.
    let mkfs = cmd!(sh, "{mkfs} -q -F -t ext4 -b 4096 -I 256 -N {inodes} -m 0 -L alloy -U {uuid} -E {extended} {dest}")
        .env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", &epoch)
        .env("SOURCE_DATE_EPOCH", &epoch);
    sandbox::output(mkfs).with_context(|| format!("mkfs.ext4 failed on {}", dest.display()))?;
    Ok(size)
}

/// Read-only consistency check of a packed image (`e2fsck -fn`): catches a too-small image or a
/// bad write. It fsyncs the image first (e2fsck flushes what it opens), so the build runs it
/// while it hashes the image.
pub fn check(tools: &Toolbox, image: &Path) -> anyhow::Result<()> {
    let mut e2fsck = std::process::Command::new(tools.path(tools::E2FSCK));
    e2fsck.args(["-f", "-n"]).arg(image);
    sandbox::die_with_us(&mut e2fsck);
    let check = e2fsck
        .stdin(std::process::Stdio::null())
        .output()
        .context("running e2fsck")?;
    if !check.status.success() {
        bail!(
            "e2fsck found problems in the new image {}:\n{}{}",
            image.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(())
}

/// Packs `tree` the way the in-process fill imitates, with the real `debugfs -n -w` running
/// [`debugfs_script`] over an empty filesystem from `mkfs.ext4` (`-n`: it does not verify the
/// checksums of what it reads back, as the in-process fill does not). Every file must be on
/// disk. Slower (debugfs copies the finished binary block by block); the same bytes.
pub(super) fn fill_with_debugfs(job: &Job) -> anyhow::Result<()> {
    let (sh, tree, dest, epoch) = (job.sh, job.tree, job.dest, job.params.epoch);
    let debugfs = job.tools.path(tools::DEBUGFS);
    make_filesystem(job)?;
    let work = dest.parent().context("image path has no directory")?;
    let script = work.join("debugfs.script");
    std::fs::write(&script, debugfs_script(tree, epoch))
        .with_context(|| format!("writing {}", script.display()))?;
    let _cwd = sh.push_dir(&tree.root);
    // debugfs stamps the superblock's last-write time from the clock, unless told.
    let fill = cmd!(sh, "{debugfs} -n -w -f {script} {dest}")
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    let output = sandbox::output(fill).context("running debugfs")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors = debugfs_errors(&stderr);
    if !errors.is_empty() {
        bail!(
            "debugfs failed to fill {}: {}",
            dest.display(),
            errors.join("; ")
        );
    }
    Ok(())
}

/// Fills the image: with a `streamed` file, the libext2fs session runs on a thread of its own
/// while this thread reads the stream ([`pipeline`]).
fn fill(
    tree: &StagedTree,
    dest: &Path,
    epoch: u64,
    streamed: Option<Streamed<'_>>,
) -> anyhow::Result<()> {
    match streamed {
        None => write_tree(tree, dest, epoch, None),
        Some(Streamed { path, reader }) => handoff::relay(reader, |chunks| {
            write_tree(tree, dest, epoch, Some((path, chunks)))
        }),
    }
}

/// debugfs's script, in its order, through one libext2fs session: every directory and file,
/// then owner, mode and times of every inode; then the bitmaps, and close.
fn write_tree(
    tree: &StagedTree,
    dest: &Path,
    epoch: u64,
    mut streamed: Option<(&str, Chunks)>,
) -> anyhow::Result<()> {
    let session = Session::open(Libext2fs::get()?, dest)?;
    for entry in &tree.entries {
        match entry.kind {
            StagedKind::Dir => session.mkdir(&entry.path)?,
            StagedKind::File { size } => {
                let mut file = session.create_file(&entry.path, size, entry.mode)?;
                match streamed.take_if(|(path, _)| *path == entry.path) {
                    Some((_, chunks)) => chunks.for_each(|chunk| file.append(chunk))?,
                    None => copy_staged(tree, &entry.path, &mut file)?,
                }
                file.finish()?;
            }
        }
    }
    if let Some((path, _)) = streamed {
        bail!("{path} is streamed but not in the tree");
    }
    for (path, mode) in inode_modes(tree) {
        session.set_owner_mode_and_times(path, mode, epoch)?;
    }
    session.close(epoch)
}

fn copy_staged(tree: &StagedTree, path: &str, file: &mut FileWriter<'_>) -> anyhow::Result<()> {
    let disk = tree.disk_path(path);
    let mut source =
        std::fs::File::open(&disk).with_context(|| format!("opening {}", disk.display()))?;
    copy_stream(&mut source, file).with_context(|| format!("copying {}", disk.display()))?;
    Ok(())
}

/// Every inode the image holds and its type and permission bits: the root, lost+found, and
/// the tree's entries in order (the order debugfs's `sif` lines go in).
fn inode_modes(tree: &StagedTree) -> Vec<(&str, u32)> {
    let fixed = [("/", 0o040755), ("/lost+found", 0o040700)];
    let staged = tree.entries.iter().map(|e| {
        let kind = match e.kind {
            StagedKind::Dir => 0o040000,
            StagedKind::File { .. } => 0o100000,
        };
        (e.path.as_str(), kind | e.mode)
    });
    fixed.into_iter().chain(staged).collect()
}

/// The debugfs commands that create `tree` and pin every inode's owner, mode and times: what
/// [`fill_image`] does through libext2fs. [`fill_with_debugfs`] runs them with the real debugfs,
/// which a test compares with our fill byte for byte, and the bench times against it. Paths are
/// relative to the tree root, which is debugfs's working directory.
pub fn debugfs_script(tree: &StagedTree, epoch: u64) -> String {
    let mut script = String::new();
    for entry in &tree.entries {
        match entry.kind {
            StagedKind::Dir => script.push_str(&format!("mkdir {}\n", entry.path)),
            StagedKind::File { .. } => script.push_str(&format!("write {0} {0}\n", entry.path)),
        }
    }
    for (path, mode) in inode_modes(tree) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageParams;
    use std::io::Read;
    use xshell::Shell;

    /// The ext4 packer's tools, found as a build finds them.
    fn ext4_tools(sh: &Shell) -> Toolbox {
        tools::preflight(sh, super::super::ImageFormat::Ext4.tools()).unwrap()
    }

    fn job<'a>(
        sh: &'a Shell,
        tools: &'a Toolbox,
        tree: &'a StagedTree,
        dest: &'a Path,
        params: &ImageParams,
    ) -> Job<'a> {
        Job {
            sh,
            tools,
            tree,
            dest,
            params: params.clone(),
        }
    }

    fn pack(
        sh: &Shell,
        tools: &Toolbox,
        tree: &StagedTree,
        dest: &Path,
        params: &ImageParams,
        streamed: Option<Streamed<'_>>,
    ) -> anyhow::Result<()> {
        fill_image(&job(sh, tools, tree, dest, params), streamed)
    }

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
            tree.entries[2].kind = StagedKind::File { size: content }; // usr/bin/alloy, without writing it
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
        let tools = ext4_tools(&sh);
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
            pack(&sh, &tools, &tree, &dest, &params, None).unwrap();
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

    /// The real debugfs's image of `tree`: the reference the in-process fill must equal.
    fn pack_with_debugfs(sh: &Shell, tree: &StagedTree, dest: &Path, params: &ImageParams) {
        let tools =
            tools::preflight(sh, &[tools::MKFS_EXT4, tools::DEBUGFS, tools::E2FSCK]).unwrap();
        fill_with_debugfs(&job(sh, &tools, tree, dest, params)).unwrap();
    }

    /// Deterministic content of `size` bytes, incompressible, with all-zero 4 KiB blocks at
    /// `zero_blocks` (which the packer leaves as holes, so they change the layout).
    fn content(size: usize, zero_blocks: &[usize], seed: u64) -> Vec<u8> {
        let mut random = xtask_testkit::XorShift(seed | 1);
        let mut bytes: Vec<u8> = (0..size)
            .map(|_| (random.next_u64() >> 24) as u8 | 1)
            .collect();
        for &block in zero_blocks {
            let start = block * 4096;
            if start < size {
                let end = (start + 4096).min(size);
                bytes[start..end].fill(0);
            }
        }
        bytes
    }

    /// The libext2fs fill gives debugfs's bytes, byte for byte, from a file on disk and from a
    /// stream: sizes that end mid-block, zero blocks alone and in runs (a short last block
    /// too), enough holes to need an extent index block, and a large file across block groups.
    #[test]
    fn fills_byte_for_byte_as_debugfs_does() {
        let holes_everywhere: Vec<usize> = (0..2000).step_by(7).collect();
        let cases: [(usize, Vec<usize>); 5] = [
            (10, vec![]),
            (3 * 4096 + 100, vec![1, 3]),
            ((5 << 20) + 1, vec![0, 17, 18, 19, 20, 1280]),
            (2000 * 4096, holes_everywhere),
            // Past the first block group (128 MiB), whose neighbour keeps a superblock backup.
            ((150 << 20) + 4095, vec![5, 33_000, 33_001, 36_000]),
        ];
        for (i, (size, zeros)) in cases.into_iter().enumerate() {
            let binary = content(size, &zeros, i as u64 + 1);
            let dir = tempfile::tempdir().unwrap();
            let mut tree = StagedTree::new(&dir.path().join("t")).unwrap();
            tree.add_file("usr/bin/alloy", &binary, 0o755).unwrap();
            tree.add_file(
                "usr/lib/extension-release.d/extension-release.alloy",
                b"ID=flatcar\n",
                0o644,
            )
            .unwrap();
            tree.add_file(
                "usr/lib/systemd/system/alloy.service",
                &b"[Service]\n".repeat(900),
                0o644,
            )
            .unwrap();
            let params = ImageParams {
                epoch: 1_704_067_200 + i as u64,
                identity: format!("alloy-0.0.{i}-amd64"),
            };
            assert_same_as_debugfs(&tree, &params, Some(("usr/bin/alloy", &binary)));
        }
    }

    /// Packs `tree` with debugfs, with our fill from disk, and with our fill streaming
    /// `streamed`'s bytes, and asserts the three images are the same bytes (and pass e2fsck).
    fn assert_same_as_debugfs(
        tree: &StagedTree,
        params: &ImageParams,
        streamed: Option<(&str, &[u8])>,
    ) {
        let sh = Shell::new().unwrap();
        let tools = ext4_tools(&sh);
        let dir = tempfile::tempdir().unwrap();
        let image = |name: &str| {
            let work = dir.path().join(name);
            std::fs::create_dir(&work).unwrap();
            work.join("image.raw")
        };
        let reference = image("debugfs");
        pack_with_debugfs(&sh, tree, &reference, params);
        let mut made = vec![image("disk")];
        pack(&sh, &tools, tree, &made[0], params, None).unwrap();
        if let Some((path, bytes)) = streamed {
            let streamed = image("stream");
            let mut reader = bytes;
            let stream = Streamed {
                path,
                reader: &mut reader,
            };
            pack(&sh, &tools, tree, &streamed, params, Some(stream)).unwrap();
            made.push(streamed);
        }
        let expected = std::fs::read(&reference).unwrap();
        for made in made {
            check(&tools, &made).unwrap();
            let got = std::fs::read(&made).unwrap();
            assert_eq!(got.len(), expected.len());
            let differ: Vec<usize> = (0..got.len())
                .filter(|&at| got[at] != expected[at])
                .take(8)
                .collect();
            assert!(
                differ.is_empty(),
                "{} ({} entries) differs from debugfs's image at {differ:x?}",
                made.display(),
                tree.entries.len()
            );
        }
    }

    /// The tree a build stages (with and without the autostart drop-in), and trees deeper and
    /// wider than it: lookups through many directories move libext2fs's block cache, which
    /// decides the bytes-written count in the superblock, so they must be debugfs's lookups.
    #[test]
    fn fills_the_real_tree_and_deep_and_wide_ones_as_debugfs_does() {
        use crate::payload::{Content, ExtensionRelease, ALLOY_PATH};
        let params = ImageParams {
            epoch: 1_704_067_200,
            identity: "alloy-1.10.2-amd64".into(),
        };
        let binary = content((5 << 20) + 77, &[40, 41, 42, 43, 900], 9);
        for autostart in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut tree = StagedTree::new(&dir.path().join("t")).unwrap();
            for file in crate::payload::files(autostart) {
                let bytes = match file.content {
                    Content::Binary => binary.clone(),
                    Content::ExtensionRelease => {
                        ExtensionRelease::for_arch(crate::arch::Arch::Amd64)
                            .render()
                            .into_bytes()
                    }
                    Content::Text(text) => text().into_bytes(),
                };
                tree.add_file(file.path, &bytes, file.mode).unwrap();
            }
            assert_same_as_debugfs(&tree, &params, Some((ALLOY_PATH, &binary)));
        }

        let dir = tempfile::tempdir().unwrap();
        let mut deep = StagedTree::new(&dir.path().join("deep")).unwrap();
        let mut path = String::from("usr");
        for level in 0..12 {
            path.push_str(&format!("/d{level}"));
            deep.add_file(
                &format!("{path}/f{level}"),
                &b"x".repeat(level * 700),
                0o644,
            )
            .unwrap();
        }
        assert_same_as_debugfs(&deep, &params, None);

        let mut wide = StagedTree::new(&dir.path().join("wide")).unwrap();
        for d in 0..48 {
            let name = format!("usr/lib/x{}/y{}/file{d}", d % 7, d % 3);
            wide.add_file(&name, format!("{d}\n").as_bytes(), 0o644)
                .unwrap();
        }
        assert_same_as_debugfs(&wide, &params, None);
    }

    /// A stream that ends early, runs long or fails leaves an error, never an image made of
    /// what arrived.
    #[test]
    fn a_stream_of_the_wrong_length_or_a_failing_one_is_an_error() {
        let sh = Shell::new().unwrap();
        let tools = ext4_tools(&sh);
        let (dir, tree) = tree_with(3 * 4096);
        let params = ImageParams {
            epoch: 1_704_067_200,
            identity: "alloy-0.0.0-amd64".into(),
        };
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("the zip lied"))
            }
        }
        let short = vec![1u8; 4096];
        let long = vec![1u8; 5 * 4096];
        let cases: [(&str, Box<dyn Read>, &str); 3] = [
            (
                "short",
                Box::new(&short[..]),
                "ended after 4096 of its 12288 bytes",
            ),
            ("long", Box::new(&long[..]), "longer than the 12288 bytes"),
            ("failing", Box::new(Failing), "the zip lied"),
        ];
        for (name, mut reader, expected) in cases {
            let work = dir.path().join(name);
            std::fs::create_dir(&work).unwrap();
            let stream = Streamed {
                path: "usr/bin/alloy",
                reader: &mut *reader,
            };
            let err = pack(
                &sh,
                &tools,
                &tree,
                &work.join("i.raw"),
                &params,
                Some(stream),
            )
            .unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains(expected), "{name}: {err}");
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
