//! The differential test: what `inspect` reports of an image against what the kernel shows of
//! it, loop-mounted read-only. For `/usr/bin/alloy` (present, type, mode, owner, size, first
//! bytes) and the extension-release (its bytes), inspect must report what the kernel shows, or
//! refuse the image. Used on every crafted image of [`crate::hostile`], and here on hundreds
//! of mutated ones per format.
//!
//! When the kernel will not mount an image there is nothing to compare: no host merges it, but
//! another kernel (a host's is older or newer than this one) might, so such a case proves
//! nothing either way. They are counted apart, and each run must compare enough mounted ones.

use std::fs::FileTimes;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use xtask::image::inspect::{ImageContents, HEAD_BYTES, RELEASE_LIMIT};
use xtask_testkit::fixture::{fake_alloy, sha256_hex};
use xtask_testkit::{checked_output, checked_output_with_input, tool, XorShift};

use crate::support::{packer, root_test_per_format, EXTENSION_RELEASE, RELEASE_FILE, VERSION};

const ALLOY: &str = "usr/bin/alloy";

/// A process in a mount namespace of its own that mounts and unmounts images on request; the
/// test looks at its mounts through `/proc/<pid>/root`.
pub struct Kernel {
    child: Child,
    requests: ChildStdin,
    answers: BufReader<ChildStdout>,
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

/// Reads requests (`mount FSTYPE IMAGE`, `umount`) and answers each on one line. ext4 is
/// mounted `errors=continue`: a crafted superblock may ask for a panic on the first error.
const MOUNTER: &str = r#"mnt=$1
while read -r request fstype image; do
  case $request in
    mount)
      options=ro
      [ "$fstype" = ext4 ] && options=ro,errors=continue
      for try in 1 2 3 4 5; do
        if said=$(mount -t "$fstype" -o "$options" "$image" "$mnt" 2>&1); then
          echo mounted; break
        fi
        # Loop devices are shared with whatever else runs: setting one up may race.
        case $said in *"loop device"*) sleep 1; continue;; esac
        echo "failed $said" | tr '\n' ' '; echo; break
      done;;
    umount)
      # Lazily if it must: a busy mount is detached, and its loop device freed, once idle.
      if said=$(umount "$mnt" 2>&1 || umount -l "$mnt" 2>&1); then
        echo unmounted
      else
        echo "failed $said" | tr '\n' ' '; echo
      fi;;
  esac
done"#;

impl Kernel {
    pub fn start() -> Kernel {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", MOUNTER, "sh"])
            .arg(&mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let requests = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap());
        Kernel {
            child,
            requests,
            answers,
            mountpoint,
            _dir: dir,
        }
    }

    fn ask(&mut self, request: &str) -> String {
        writeln!(self.requests, "{request}").unwrap();
        let mut answer = String::new();
        self.answers.read_line(&mut answer).unwrap();
        assert!(!answer.is_empty(), "the mounter ended at {request:?}");
        answer.trim().to_string()
    }

    /// What the kernel shows of `image`, or `None` when it will not mount it.
    pub fn view(&mut self, image: &Path, format: &str) -> Option<KernelView> {
        let answer = self.ask(&format!("mount {format} {}", image.display()));
        if answer != "mounted" {
            assert!(answer.starts_with("failed"), "{answer}");
            return None;
        }
        // Our mountpoint as the mounter's namespace has it.
        let root = PathBuf::from(format!("/proc/{}/root", self.child.id()))
            .join(self.mountpoint.strip_prefix("/").unwrap());
        let view = KernelView {
            alloy: seen(&root, ALLOY, HEAD_BYTES),
            release: seen(&root, RELEASE_FILE, RELEASE_LIMIT as usize + 1),
        };
        let unmounted = self.ask("umount");
        assert_eq!(unmounted, "unmounted", "unmounting {}", image.display());
        Some(view)
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the kernel shows at one path.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Missing,
    /// Something other than a directory on the way, or other than a regular file at the end.
    Blocked(String),
    /// An error other than "not found" (a corrupt inode, an unreadable block).
    Error(String),
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        /// The first bytes, as many as inspect reads.
        head: Vec<u8>,
    },
}

#[derive(Debug)]
pub struct KernelView {
    alloy: Seen,
    release: Seen,
}

/// Walks `path` under `root` one step at a time, never following a link.
fn seen(root: &Path, path: &str, limit: usize) -> Seen {
    let mut at = root.to_path_buf();
    let steps: Vec<&str> = path.split('/').collect();
    for (i, step) in steps.iter().enumerate() {
        at.push(step);
        let shown = format!("/{}", steps[..=i].join("/"));
        let meta = match std::fs::symlink_metadata(&at) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Seen::Missing,
            Err(e) => return Seen::Error(format!("lstat {shown}: {e}")),
        };
        let last = i + 1 == steps.len();
        if !last && !meta.is_dir() || last && !meta.is_file() {
            return Seen::Blocked(format!("{shown} has mode {:o}", meta.mode()));
        }
        if last {
            let mut head = Vec::new();
            let read = std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&at)
                .and_then(|f| f.take(limit as u64).read_to_end(&mut head));
            if let Err(e) = read {
                return Seen::Error(format!("reading {shown}: {e}"));
            }
            return Seen::File {
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: meta.len(),
                head,
            };
        }
    }
    unreachable!("a path has a last step")
}

/// How one image came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Mounted, and inspect reported what the kernel shows.
    Agrees,
    /// Mounted, and inspect refused the image.
    Refused,
    /// The kernel would not mount it, and inspect refused it too.
    Unmounted,
}

/// Inspects `image` (in this process: a panic is reported as a difference) and compares with what
/// the kernel shows; `Err` says how they differ.
pub fn compare(kernel: &mut Kernel, image: &Path, format: &str) -> Result<Verdict, String> {
    let inspected = std::panic::catch_unwind(|| xtask::image::inspect(image))
        .map_err(|_| "inspect panicked".to_string())?;
    // A panic in inspect's own thread ends it without an answer.
    if let Err(e) = &inspected {
        if format!("{e:#}").contains("stopped without an answer") {
            return Err(format!("inspect panicked: {e:#}"));
        }
    }
    let Some(view) = kernel.view(image, format) else {
        // verify must not say `ok` of an image no host can merge.
        return match inspected {
            Ok(_) => Err("the kernel does not mount it, inspect answered".into()),
            Err(_) => Ok(Verdict::Unmounted),
        };
    };
    let Ok(contents) = inspected else {
        return Ok(Verdict::Refused);
    };
    let mut differences = Vec::new();
    if let Some(why) = alloy_differs(&contents, &view.alloy) {
        differences.push(why);
    }
    if let Some(why) = release_differs(&contents, &view.release) {
        differences.push(why);
    }
    if differences.is_empty() {
        Ok(Verdict::Agrees)
    } else {
        Err(differences.join("; "))
    }
}

fn alloy_differs(contents: &ImageContents, kernel: &Seen) -> Option<String> {
    let agrees = match (&contents.alloy, kernel) {
        (None, Seen::Missing) => true,
        (
            Some(a),
            Seen::File {
                mode,
                uid,
                gid,
                size,
                head,
            },
        ) => (a.mode, a.uid, a.gid, a.size, &a.head) == (*mode, *uid, *gid, *size, head),
        _ => false,
    };
    (!agrees).then(|| {
        format!(
            "/{ALLOY}: inspect says {:?}, the kernel shows {kernel:?}",
            contents.alloy
        )
    })
}

fn release_differs(contents: &ImageContents, kernel: &Seen) -> Option<String> {
    let agrees = match (&contents.extension_release, kernel) {
        (None, Seen::Missing) => true,
        (Some(text), Seen::File { head, size, .. }) => {
            text.as_bytes() == head.as_slice() && *size == head.len() as u64
        }
        _ => false,
    };
    (!agrees).then(|| {
        format!(
            "/{RELEASE_FILE}: inspect says {:?}, the kernel shows {kernel:?}",
            contents.extension_release
        )
    })
}

/// Counts of verdicts, and the differences found, over a run.
#[derive(Default)]
pub struct Tally {
    pub agreed: usize,
    pub refused: usize,
    pub unmounted: usize,
    pub differences: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, name: &str, outcome: Result<Verdict, String>) {
        match outcome {
            Ok(Verdict::Agrees) => self.agreed += 1,
            Ok(Verdict::Refused) => self.refused += 1,
            Ok(Verdict::Unmounted) => self.unmounted += 1,
            Err(why) => self.differences.push(format!("{name}: {why}")),
        }
    }

    /// The images the kernel mounted, whatever inspect made of them.
    pub fn mounted(&self) -> usize {
        self.agreed + self.refused + self.differences.len()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} agreed with the kernel, {} refused by inspect, {} not mounted by the kernel \
             and refused by inspect; {} differ",
            self.agreed,
            self.refused,
            self.unmounted,
            self.differences.len(),
        )
    }
}

/// How many mutated images each format gets.
const MUTATIONS: usize = 320;

/// A good tree with the fake Alloy and a true extension-release, beside decoys whose names
/// surround the ones looked up (`alloz`, `allox`, `bim`): mutations then also turn names into
/// one another.
fn tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let release_dir = root.join(RELEASE_FILE).parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&release_dir).unwrap();
    std::fs::create_dir_all(root.join("usr/bim")).unwrap();
    std::fs::write(root.join(RELEASE_FILE), EXTENSION_RELEASE).unwrap();
    std::fs::write(release_dir.join("extension-release.allox"), "ID=_any\n").unwrap();
    let binary = fake_alloy(VERSION, "amd64");
    for name in ["alloy", "allox", "alloz"] {
        let path = root.join("usr/bin").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &binary).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    pin_times(root);
}

/// What the bases are made with, so that a seed replays the same images: mkfs.ext4 and
/// mkfs.erofs pick a random UUID (mkfs.ext4 a random hash seed too), and the packers record
/// the tree's times and their own.
const BASE_UUID: &str = "6d3a1c5e-0b7f-4c2a-9e8d-1f2a3b4c5d6e";
const BASE_HASH_SEED: &str = "0c6a4f3e-8b2d-4e1f-a7c9-5d8e2f1b3a4c";
const BASE_EPOCH: u64 = 1_700_000_000;

/// Sets the access and modification times of `path` and of all it holds to [`BASE_EPOCH`].
fn pin_times(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            pin_times(&entry.unwrap().path());
        }
    }
    let time = UNIX_EPOCH + Duration::from_secs(BASE_EPOCH);
    let times = FileTimes::new().set_accessed(time).set_modified(time);
    std::fs::File::open(path).unwrap().set_times(times).unwrap();
}

/// mkfs.ext4 -d copies each inode's change and access times from the tree, which no call can
/// set and every read moves: debugfs sets them to [`BASE_EPOCH`] after, on every inode of `tree`
/// and the root, and the time of the last check too.
fn pin_ext4_times(image: &Path, tree: &Path) {
    fn paths(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                paths(&path, into);
            }
            into.push(path);
        }
    }
    let mut all = Vec::new();
    paths(tree, &mut all);
    // e2fsck -D (on the indexed base) notes when it ran.
    let mut script = format!("ssv lastcheck @{BASE_EPOCH}\n");
    for path in std::iter::once(tree.to_path_buf()).chain(all) {
        let inside = path.strip_prefix(tree).unwrap().display();
        for field in ["ctime", "atime"] {
            script.push_str(&format!("sif /{inside} {field} @{BASE_EPOCH}\n"));
        }
    }
    checked_output_with_input(
        Command::new(tool("debugfs"))
            .args(["-w", "-f", "-"])
            .arg(image)
            .env("E2FSPROGS_FAKE_TIME", BASE_EPOCH.to_string()),
        script.as_bytes(),
    );
}

/// The images mutated: each format packed plainly (ext4 without metadata checksums, squashfs
/// with uncompressed metadata, erofs without its superblock checksum: mutations then reach
/// the directories and inodes rather than failing a checksum) and as built; ext4 also plainly
/// with `/usr/bin` hash-indexed, so that mutations reach an index too. The same bytes on every
/// run (see [`BASE_UUID`]).
fn bases(format: &str, tree: &Path, work: &Path) -> Vec<PathBuf> {
    let epoch = BASE_EPOCH.to_string();
    let mkfs_ext4 = |name: &str, features: &str, tree: &Path| {
        let image = work.join(name);
        let extended = format!("root_owner=0:0,hash_seed={BASE_HASH_SEED}");
        let args = ["-q", "-F", "-O", features, "-U", BASE_UUID, "-E", &extended];
        checked_output(
            packer("mkfs.ext4", &args, tree, &image, "4M").env("E2FSPROGS_FAKE_TIME", &epoch),
        );
        pin_ext4_times(&image, tree);
        image
    };
    let mksquashfs = |extra: &[&str], name: &str| {
        let image = work.join(name);
        let args = [&["-quiet", "-no-progress", "-all-root", "-noappend"], extra].concat();
        checked_output(
            packer("mksquashfs", &args, tree, &image, "").env("SOURCE_DATE_EPOCH", &epoch),
        );
        image
    };
    match format {
        "ext4" => {
            let indexed = indexed_tree(work);
            let plain = "^has_journal,^metadata_csum";
            let hashed = mkfs_ext4("indexed.ext4", plain, &indexed);
            index_directories(&hashed);
            pin_ext4_times(&hashed, &indexed);
            vec![
                mkfs_ext4("plain.ext4", plain, tree),
                mkfs_ext4("built.ext4", "^has_journal", tree),
                hashed,
            ]
        }
        "squashfs" => vec![
            mksquashfs(&["-noI", "-noD", "-noF"], "plain.squashfs"),
            mksquashfs(&["-comp", "zstd"], "built.squashfs"),
        ],
        _ => {
            let image = work.join("plain.erofs");
            let time = format!("-T{epoch}");
            let args = [
                "--quiet",
                "--all-root",
                "-zlz4hc",
                "-C131072",
                "-U",
                BASE_UUID,
                &time,
            ];
            checked_output(&mut packer("mkfs.erofs", &args, tree, &image, ""));
            let mut bytes = std::fs::read(&image).unwrap();
            let built = work.join("built.erofs");
            std::fs::write(&built, &bytes).unwrap();
            bytes[1024 + 8] &= !1; // feature_compat: no superblock checksum
            std::fs::write(&image, bytes).unwrap();
            vec![image, built]
        }
    }
}

/// [`tree`] with 200 more names in `/usr/bin`: more than a block of 1 KiB holds, so that
/// `e2fsck -D` gives it a hash index.
fn indexed_tree(work: &Path) -> PathBuf {
    let root = work.join("tree-indexed");
    tree(&root);
    for i in 0..200 {
        std::fs::write(root.join("usr/bin").join(format!("{i:0>100}")), "x").unwrap();
    }
    pin_times(&root);
    root
}

/// Hash-indexes every directory of more than one block, as `e2fsck -D` does (it exits 1 for
/// having changed the image).
fn index_directories(image: &Path) {
    let status = Command::new(tool("e2fsck"))
        .args(["-f", "-y", "-D"])
        .arg(image)
        .env("E2FSPROGS_FAKE_TIME", BASE_EPOCH.to_string())
        .output()
        .unwrap()
        .status;
    assert!(matches!(status.code(), Some(0 | 1)), "e2fsck -D: {status}");
}

/// Where mutations go in an image: within 64 bytes of a name looked up (directory entries, and
/// the inodes packed near them), in the blocks of the directories on the looked-up paths
/// (ext4), anywhere in the metadata that is not zero.
struct Targets {
    near_names: Vec<usize>,
    directories: Vec<usize>,
    nonzero: Vec<usize>,
}

fn targets(path: &Path, image: &[u8], format: &str) -> Targets {
    let mut near_names = Vec::new();
    for name in [&b"alloy"[..], b"bin", b"usr", b"lib", b"extension-release"] {
        for (at, _) in image
            .windows(name.len())
            .enumerate()
            .filter(|(_, w)| *w == name)
        {
            near_names.extend(at.saturating_sub(64)..(at + 64).min(image.len()));
        }
    }
    let metadata = match format {
        "squashfs" => image.len().saturating_sub(16 << 10)..image.len(),
        _ => 1024..image.len().min(256 << 10),
    };
    let nonzero = metadata.filter(|at| image[*at] != 0).collect();
    let directories = match format {
        "ext4" => ext4_directory_bytes(path, image),
        _ => Vec::new(),
    };
    Targets {
        near_names,
        directories,
        nonzero,
    }
}

/// The directories whose blocks [`ext4_directory_bytes`] lists: every one on the two paths.
const LOOKED_UP_DIRECTORIES: [&str; 4] = [
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib/extension-release.d",
];

/// Every byte of the blocks of [`LOOKED_UP_DIRECTORIES`] in the ext4 image at `path`, as
/// debugfs lists them.
fn ext4_directory_bytes(path: &Path, image: &[u8]) -> Vec<usize> {
    let log_block_size = u32::from_le_bytes(image[1024 + 24..1024 + 28].try_into().unwrap());
    let block_size = 1024usize << log_block_size;
    let mut bytes = Vec::new();
    for dir in LOOKED_UP_DIRECTORIES {
        let blocks = checked_output(
            Command::new(tool("debugfs"))
                .args(["-R", &format!("blocks {dir}")])
                .arg(path),
        );
        for block in blocks.split_whitespace() {
            let start = block.parse::<usize>().unwrap() * block_size;
            bytes.extend(start..start + block_size);
        }
    }
    bytes
}

/// Every mutated image of `format` against the kernel: they agree, or inspect refuses. A third
/// of the mutations go near the names looked up, a third into the directories on the way (ext4;
/// anywhere in the metadata for the others), a third anywhere in the metadata. The seed is
/// printed: `ALLOY_SYSEXT_TEST_SEED=<seed>` replays a run, the bases being the same bytes.
fn mutated_images_agree_with_the_kernel(format: &str) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("tree");
    tree(&root);
    let mut kernel = Kernel::start();
    let mut tally = Tally::default();
    let (mut random, seed) = XorShift::seeded();
    let replay = format!("ALLOY_SYSEXT_TEST_SEED={seed}");
    let bases = bases(format, &root, work.path());
    for base in &bases {
        let good = std::fs::read(base).unwrap();
        eprintln!(
            "{format}: {} is {}; mutated with {replay}",
            base.display(),
            sha256_hex(&good)
        );
        tally.add(&format!("{} unchanged", base.display()), {
            compare(&mut kernel, base, format)
        });
        let targets = targets(base, &good, format);
        let mutated = work.path().join("mutated.raw");
        for i in 0..MUTATIONS / bases.len() {
            let pool = match i % 3 {
                0 if !targets.near_names.is_empty() => &targets.near_names,
                1 if !targets.directories.is_empty() => &targets.directories,
                _ => &targets.nonzero,
            };
            let mut bytes = good.clone();
            let mut changes = Vec::new();
            for _ in 0..1 + random.below(3) {
                let at = pool[random.below(pool.len() as u64) as usize];
                bytes[at] = random.below(256) as u8;
                changes.push(format!("{at}={:#04x}", bytes[at]));
            }
            std::fs::write(&mutated, &bytes).unwrap();
            let name = format!("{} with bytes {changes:?} set", base.display());
            tally.add(&name, compare(&mut kernel, &mutated, format));
        }
    }
    let mutated = MUTATIONS / bases.len() * bases.len();
    eprintln!(
        "{format}: {} images ({mutated} mutated, {replay}): {}",
        mutated + bases.len(),
        tally.summary()
    );
    assert!(
        tally.differences.is_empty(),
        "{format}: inspect and the kernel differ (replay with {replay}):\n{}",
        tally.differences.join("\n")
    );
    // Not vacuous: most mutated images are mounted and compared.
    assert!(
        tally.mounted() >= MUTATIONS / 2,
        "{format}: only {} images mounted: {}",
        tally.mounted(),
        tally.summary()
    );
}

root_test_per_format!(mutated_images_agree_with_the_kernel =>
    mutated_ext4_images_read_as_the_kernel_reads_them: "ext4",
    mutated_squashfs_images_read_as_the_kernel_reads_them: "squashfs",
    mutated_erofs_images_read_as_the_kernel_reads_them: "erofs",
);
