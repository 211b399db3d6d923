//! Getting a verified release zip: from the cache when it still verifies, else from the release
//! mirror; or, air-gapped, from a local file with a digest the user supplies.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use anyhow::{bail, Context};

use crate::arch::Arch;
use crate::util::checksums::{self, Digest, Sums};
use crate::util::files;
use crate::util::http::{Http, NotFound, SMALL_FILE_LIMIT};
use crate::util::progress::{detail, step};
use crate::util::safedir::{describe, Found, SafeDir};
use crate::util::timings::Timings;
use crate::version::Version;

/// A release zip whose SHA-256 matched the expected one, held open: extraction reads this very
/// file, never the path again, so what was hashed is what is used.
pub struct VerifiedZip {
    pub file: File,
    /// Where it is (or was, for a download that could not be cached), for messages.
    pub path: PathBuf,
}

/// The name of our folder in the cache root (`$XDG_CACHE_HOME`, else `~/.cache`).
pub const CACHE_NAME: &str = "alloy-sysext";

/// The download cache, `<root>/alloy-sysext/v<VERSION>/`. It is optional: when it cannot be
/// used, the zip is downloaded to a private temporary file instead, and the user is told once.
/// Below the root, which is the user's, nothing is reached through a link, and only regular
/// files of ours within `max_bytes` are read ([`SafeDir`]).
pub struct Cache {
    pub root: PathBuf,
    /// The largest zip worth hashing: what a download may bring (`--max-download-bytes`).
    pub max_bytes: u64,
    told: Cell<bool>,
}

impl Cache {
    pub fn new(root: PathBuf, max_bytes: u64) -> Cache {
        Cache {
            root,
            max_bytes,
            told: Cell::new(false),
        }
    }

    /// Says, once per run, why the cache is not used.
    fn bypass(&self, why: impl std::fmt::Display) {
        if !self.told.replace(true) {
            detail(format!(
                "{why}; downloading to a private temporary file instead (the cache is optional, nothing will be cached)"
            ));
        }
    }

    /// `<root>/alloy-sysext/v<VERSION>`, created if needed; `None` (and said) when it cannot be.
    fn dir(&self, version: &Version) -> Option<SafeDir> {
        // The root is the user's (a link there is theirs to make); below it, nothing is followed.
        let dir = std::fs::create_dir_all(&self.root)
            .and_then(|()| SafeDir::open(&self.root, CACHE_NAME))
            .and_then(|ours| ours.child(&version.tag()));
        match dir {
            Ok(dir) => Some(dir),
            Err(e) => {
                self.bypass(format!(
                    "cannot use the cache directory {}: {e}",
                    self.root.join(CACHE_NAME).join(version.tag()).display()
                ));
                None
            }
        }
    }
}

fn open_nonblocking(path: &Path, extra_flags: i32) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | extra_flags)
        .open(path)
}

/// Hashes an open file from its start, and leaves it at its start for the next reader.
fn hash_open_file(file: &mut File, shown: &Path) -> anyhow::Result<Digest> {
    file.rewind()
        .and_then(|()| checksums::hash_reader(&*file))
        .and_then(|(digest, _)| file.rewind().map(|()| digest))
        .with_context(|| format!("reading {}", shown.display()))
}

/// How a local zip's expected digest is given.
#[derive(Clone, Debug)]
pub enum Expected {
    Digest(Digest),
    Sha256Sums(PathBuf),
}

/// Where the release zip comes from.
#[derive(Clone, Debug)]
pub enum Origin {
    /// The release mirror, through the download cache.
    Mirror,
    /// Air-gapped: a local zip and how to verify it.
    Local { zip: PathBuf, expected: Expected },
}

/// Where release zips come from, with everything needed to get one verified: the origin, the
/// mirror's base URL (`<URL>/v<VERSION>/<asset>`), the download cache and the HTTP client.
pub struct ReleaseSource {
    pub origin: Origin,
    pub releases_url: String,
    pub cache: Cache,
    pub http: Http,
}

/// Where the release assets of `version` live: `<base>/v<VERSION>/<asset>`.
pub fn asset_url(base: &str, version: &Version, asset: &str) -> String {
    format!("{}/{}/{asset}", base.trim_end_matches('/'), version.tag())
}

/// The cache root: `$XDG_CACHE_HOME`, else `$HOME/.cache` (our folder is [`CACHE_NAME`] in it).
pub fn cache_root(cache_home: Option<PathBuf>, home: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match (cache_home, home) {
        (Some(dir), _) if !dir.as_os_str().is_empty() => Ok(dir),
        (_, Some(home)) if !home.as_os_str().is_empty() => Ok(home.join(".cache")),
        _ => bail!("neither XDG_CACHE_HOME nor HOME is set: set one, so downloads can be cached"),
    }
}

fn mismatch(what: &str, expected: &Digest, actual: &Digest, source: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "checksum mismatch for {what}: expected sha256 {expected} ({source}), got {actual}. The file is corrupt or not the released one; it was not used"
    )
}

/// Fetches `SHA256SUMS` of the release (a few KiB; a few MiB at most) and the digest it lists
/// for `asset`.
fn expected_digest(
    http: &Http,
    base: &str,
    version: &Version,
    asset: &str,
) -> anyhow::Result<Digest> {
    let url = asset_url(base, version, "SHA256SUMS");
    let text = http
        .get_text(&url, SMALL_FILE_LIMIT)
        .map_err(|e| explain_not_found(e, version, "SHA256SUMS", base))?;
    Sums::parse(&text, &url)?
        .require(asset)
        .with_context(|| format!("cannot verify {asset}: is it part of Alloy {version}?"))
}

fn explain_not_found(
    error: anyhow::Error,
    version: &Version,
    asset: &str,
    base: &str,
) -> anyhow::Error {
    if error.downcast_ref::<NotFound>().is_some() {
        error.context(format!(
            "Alloy {} or its asset {asset} does not exist at {base} (check the version, and ALLOY_RELEASES_URL if set)",
            version.tag()
        ))
    } else {
        error
    }
}

impl ReleaseSource {
    /// The verified release zip of `version` for `arch`: the local one when given, else from the
    /// cache when it still matches the release's SHA256SUMS, else downloaded from the mirror.
    pub fn zip(
        &self,
        version: &Version,
        arch: Arch,
        timings: &mut Timings,
    ) -> anyhow::Result<VerifiedZip> {
        match &self.origin {
            Origin::Local { zip, expected } => local_zip(zip, expected, arch, timings),
            Origin::Mirror => self.mirror_zip(version, arch, timings),
        }
    }

    fn mirror_zip(
        &self,
        version: &Version,
        arch: Arch,
        timings: &mut Timings,
    ) -> anyhow::Result<VerifiedZip> {
        let (http, base, cache) = (&self.http, self.releases_url.as_str(), &self.cache);
        let asset = arch.release_zip();
        step(format!(
            "Fetching {asset} of Alloy {} from {base}",
            version.tag()
        ));
        let expected =
            timings.phase("download", || expected_digest(http, base, version, &asset))?;
        detail(format!("SHA256SUMS lists {asset} as {expected}"));

        let mut dir = cache.dir(version);
        if let Some(cache_dir) = &dir {
            match from_cache(cache_dir, &asset, &expected, cache, timings)? {
                Cached::Verified(zip) => return Ok(zip),
                Cached::Absent => {}
                Cached::Blocked => dir = None,
            }
        }

        let url = asset_url(base, version, &asset);
        // Download beside the cache entry, and move it in only once it verifies.
        let partial = match &dir {
            Some(dir) => match files::PartialFile::new(dir, &format!("-{asset}.partial")) {
                Ok(partial) => Some(partial),
                Err(e) => {
                    cache.bypass(format!(
                        "cannot write in the cache directory {}: {}",
                        dir.path().display(),
                        e.root_cause()
                    ));
                    None
                }
            },
            None => None,
        };
        let (file, shown) = match &partial {
            Some(partial) => (partial.as_file().try_clone()?, partial.path()),
            // Unnamed: nothing to clean up, and messages name the URL it came from.
            None => (
                tempfile::tempfile()
                    .context("creating a temporary file for the download (check TMPDIR)")?,
                PathBuf::from(&url),
            ),
        };
        // Hashed on the way in: for a fresh download, verifying costs no separate pass.
        let (digest, _) = timings
            .phase("download", || {
                http.download_to(&url, &file, &shown.display().to_string(), &asset)
            })
            .map_err(|e| explain_not_found(e, version, &asset, base))?;
        if digest != expected {
            return Err(mismatch(&url, &expected, &digest, "from SHA256SUMS"));
        }
        detail(format!("verified {asset}: sha256 {digest}"));
        let mut file = file;
        file.rewind()
            .with_context(|| format!("reading {}", shown.display()))?;
        let (Some(partial), Some(dir)) = (partial, dir) else {
            return Ok(VerifiedZip { file, path: shown });
        };
        let cached = dir.path().join(&asset);
        let path = match partial.persist(&asset) {
            Ok(()) => cached,
            Err(e) => {
                cache.bypass(format!(
                    "cannot move the download to {}: {e}",
                    cached.display()
                ));
                shown
            }
        };
        Ok(VerifiedZip { file, path })
    }
}

/// What the cache holds for one asset.
enum Cached {
    /// A regular file that still verifies, open.
    Verified(VerifiedZip),
    /// Nothing usable: download into the cache.
    Absent,
    /// Something that is not a file and cannot be removed: download elsewhere.
    Blocked,
}

/// The cache's `asset` in `dir`, opened once and hashed from that open file when it is a
/// regular file of ours no larger than a download may be. A mismatching file is removed;
/// anything else (a link, a FIFO, a directory, a giant) too, or bypassed when it cannot be.
fn from_cache(
    dir: &SafeDir,
    asset: &str,
    expected: &Digest,
    cache: &Cache,
    timings: &mut Timings,
) -> anyhow::Result<Cached> {
    let cached = dir.path().join(asset);
    let what = match dir.open_file(asset) {
        Ok(Found::Missing) => return Ok(Cached::Absent),
        Ok(Found::File(file)) => {
            let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if size > cache.max_bytes {
                format!(
                    "{size} bytes, more than a download may bring ({} bytes)",
                    cache.max_bytes
                )
            } else {
                return verify_cached(file, &cached, dir, asset, expected, timings);
            }
        }
        Ok(Found::Other(what)) => format!("{what}, not a file of ours"),
        Err(e) => format!("unreadable ({e})"),
    };
    detail(format!(
        "cache entry {} is {what}: ignoring it and downloading again",
        cached.display()
    ));
    match dir.remove(asset) {
        Ok(()) => Ok(Cached::Absent),
        Err(e) => {
            cache.bypass(format!("cannot remove {}: {e}", cached.display()));
            Ok(Cached::Blocked)
        }
    }
}

/// Hashes a cached zip: used when it matches, removed when not.
fn verify_cached(
    mut file: File,
    cached: &Path,
    dir: &SafeDir,
    asset: &str,
    expected: &Digest,
    timings: &mut Timings,
) -> anyhow::Result<Cached> {
    let digest = timings.phase("verify", || hash_open_file(&mut file, cached))?;
    if digest == *expected {
        detail(format!("using cached {} (verified)", cached.display()));
        return Ok(Cached::Verified(VerifiedZip {
            file,
            path: cached.to_path_buf(),
        }));
    }
    detail(format!(
        "cached {} does not match SHA256SUMS (got {digest}); downloading again",
        cached.display()
    ));
    // A failed removal is harmless: the verified download replaces it by rename.
    let _ = dir.remove(asset);
    Ok(Cached::Absent)
}

/// The mode bits of a std file type, for [`describe`].
fn file_type_mode(file_type: std::fs::FileType) -> u32 {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if file_type.is_dir() => libc::S_IFDIR,
        _ if file_type.is_symlink() => libc::S_IFLNK,
        _ if file_type.is_fifo() => libc::S_IFIFO,
        _ if file_type.is_socket() => libc::S_IFSOCK,
        _ if file_type.is_char_device() => libc::S_IFCHR,
        _ if file_type.is_block_device() => libc::S_IFBLK,
        _ => libc::S_IFREG,
    }
}

/// A local SHA256SUMS (`--sha256sums`): a regular file, read within the limit of a checksum
/// file (a FIFO or /dev/zero is refused, not read until memory runs out).
fn read_local_sums(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let file = open_nonblocking(path, 0)
        .with_context(|| format!("opening --sha256sums {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading --sha256sums {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "--sha256sums {} is {}, not a file: give the release's SHA256SUMS",
            path.display(),
            describe(FileType::from_raw_mode(file_type_mode(meta.file_type())))
        );
    }
    let mut bytes = Vec::new();
    file.take(SMALL_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading --sha256sums {}", path.display()))?;
    if bytes.len() as u64 > SMALL_FILE_LIMIT {
        bail!(
            "--sha256sums {} is larger than {SMALL_FILE_LIMIT} bytes, far more than a SHA256SUMS; refusing it",
            path.display()
        );
    }
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("--sha256sums {} is not UTF-8 text", path.display()))
}

/// Verifies a local release zip, for builds without network access.
fn local_zip(
    zip: &Path,
    expected: &Expected,
    arch: Arch,
    timings: &mut Timings,
) -> anyhow::Result<VerifiedZip> {
    step(format!("Verifying local {}", zip.display()));
    let (expected, source) = match expected {
        Expected::Digest(digest) => (*digest, "given with --sha256".to_string()),
        Expected::Sha256Sums(sums) => {
            let text = read_local_sums(sums)?;
            let digest =
                Sums::parse(&text, sums.display().to_string())?.require(&arch.release_zip())?;
            (digest, format!("from {}", sums.display()))
        }
    };
    // Opened once, without blocking (a FIFO would); hashed and later extracted from this file.
    let mut file =
        open_nonblocking(zip, 0).with_context(|| format!("opening --zip {}", zip.display()))?;
    let file_type = file
        .metadata()
        .with_context(|| format!("reading --zip {}", zip.display()))?
        .file_type();
    if !file_type.is_file() {
        bail!(
            "--zip {} is {}, not a file: give the path of the downloaded release zip",
            zip.display(),
            describe(FileType::from_raw_mode(file_type_mode(file_type)))
        );
    }
    let digest = timings.phase("verify", || hash_open_file(&mut file, zip))?;
    if digest != expected {
        return Err(mismatch(
            &zip.display().to_string(),
            &expected,
            &digest,
            &source,
        ));
    }
    detail(format!("verified: sha256 {digest}"));
    Ok(VerifiedZip {
        file,
        path: zip.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_urls_use_the_tag() {
        let version: Version = "1.10.2".parse().unwrap();
        assert_eq!(
            asset_url(
                crate::contract::DEFAULT_RELEASES_URL,
                &version,
                "SHA256SUMS"
            ),
            "https://github.com/grafana/alloy/releases/download/v1.10.2/SHA256SUMS"
        );
        assert_eq!(
            asset_url("http://127.0.0.1:1/dl/", &version, "a.zip"),
            "http://127.0.0.1:1/dl/v1.10.2/a.zip"
        );
    }

    /// A source that never reaches a mirror: its cache is under `dir`.
    fn local_source(dir: &Path, origin: Origin) -> ReleaseSource {
        ReleaseSource {
            origin,
            releases_url: "https://unused.example".into(),
            cache: Cache::new(dir.join("unused"), 1 << 20),
            http: Http::new(),
        }
    }

    fn zip_holding(path: &Path, content: &[u8]) -> Digest {
        xtask_testkit::fixture::write_binary_zip(path, content);
        checksums::hash_file(path).unwrap().0
    }

    fn extracted(zip: &VerifiedZip, dir: &Path) -> Vec<u8> {
        let dest = dir.join("extracted");
        let _ = std::fs::remove_file(&dest);
        crate::release::archive::BinaryEntry::open(&zip.file, &zip.path, "alloy-linux-amd64")
            .and_then(|mut binary| binary.extract(&dest))
            .unwrap();
        std::fs::read(dest).unwrap()
    }

    /// The zip is swapped for another between verifying and extracting (by rename, as an
    /// attacker with write access to the directory would): the verified bytes are extracted.
    #[test]
    fn what_is_hashed_is_what_is_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("alloy-linux-amd64.zip");
        let good = zip_holding(&zip, b"\x7fELF the verified binary");
        let evil = dir.path().join("evil.zip");
        zip_holding(&evil, b"\x7fELF another binary");

        let source = local_source(
            dir.path(),
            Origin::Local {
                zip: zip.clone(),
                expected: Expected::Digest(good),
            },
        );
        let version: Version = "1.10.2".parse().unwrap();
        let mut timings = Timings::default();
        let verified = source.zip(&version, Arch::Amd64, &mut timings).unwrap();
        std::fs::copy(&evil, dir.path().join("swap")).unwrap();
        std::fs::rename(dir.path().join("swap"), &zip).unwrap();
        assert_eq!(
            extracted(&verified, dir.path()),
            b"\x7fELF the verified binary"
        );

        // The same through the cache.
        let cache_dir = SafeDir::open(dir.path(), "cache").unwrap();
        let cached = cache_dir.path().join("cached.zip");
        let good = zip_holding(&cached, b"\x7fELF cached and verified");
        let Cached::Verified(verified) =
            from_cache(&cache_dir, "cached.zip", &good, &source.cache, &mut timings).unwrap()
        else {
            panic!("a matching cache entry is used");
        };
        std::fs::copy(&evil, dir.path().join("swap")).unwrap();
        std::fs::rename(dir.path().join("swap"), &cached).unwrap();
        assert_eq!(
            extracted(&verified, dir.path()),
            b"\x7fELF cached and verified"
        );
    }

    /// A FIFO, a link (to /dev/zero, or to a good zip elsewhere) or a directory in place of a
    /// cached zip is never read: removed when possible, else bypassed. None of these may hang.
    #[test]
    fn cache_entries_that_are_not_files_are_removed_or_bypassed() {
        let home = tempfile::tempdir().unwrap();
        let safe = SafeDir::open(home.path(), "cache").unwrap();
        let dir = safe.path();
        let elsewhere = home.path().join("elsewhere.zip");
        let digest = zip_holding(&elsewhere, b"\x7fELF");
        let cache = Cache::new(home.path().to_path_buf(), 1 << 20);
        let mut timings = Timings::default();

        let fifo = dir.join("fifo.zip");
        xtask_testkit::mkfifo(&fifo);
        let zero = dir.join("zero.zip");
        xtask_testkit::link_to_dev_zero(&zero);
        let link = dir.join("link.zip");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let empty_dir = dir.join("empty-dir.zip");
        std::fs::create_dir(&empty_dir).unwrap();
        // A sparse file larger than any download: never hashed.
        let giant = dir.join("giant.zip");
        std::fs::File::create(&giant)
            .unwrap()
            .set_len(15 << 40)
            .unwrap();
        for entry in [&fifo, &zero, &link, &empty_dir, &giant] {
            let name = entry.file_name().unwrap().to_str().unwrap();
            let found = from_cache(&safe, name, &digest, &cache, &mut timings).unwrap();
            assert!(matches!(found, Cached::Absent), "{}", entry.display());
            assert!(
                std::fs::symlink_metadata(entry).is_err(),
                "{} is removed",
                entry.display()
            );
        }
        assert!(elsewhere.is_file(), "a link's target is left alone");

        let full_dir = dir.join("full-dir.zip");
        std::fs::create_dir(&full_dir).unwrap();
        std::fs::write(full_dir.join("x"), b"x").unwrap();
        let found = from_cache(&safe, "full-dir.zip", &digest, &cache, &mut timings).unwrap();
        assert!(matches!(found, Cached::Blocked));
        assert!(full_dir.join("x").is_file(), "nothing inside is removed");
        assert!(cache.told.get(), "the bypass is said");

        assert!(matches!(
            from_cache(&safe, "absent.zip", &digest, &cache, &mut timings).unwrap(),
            Cached::Absent
        ));
    }

    #[test]
    fn a_local_zip_must_be_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.zip");
        xtask_testkit::mkfifo(&fifo);
        let source = local_source(
            dir.path(),
            Origin::Local {
                zip: fifo,
                expected: Expected::Digest(checksums::hash_bytes(b"")),
            },
        );
        let err = source
            .zip(
                &"1.10.2".parse().unwrap(),
                Arch::Amd64,
                &mut Timings::default(),
            )
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("is a FIFO, not a file"),
            "{err:#}"
        );
    }
}
