//! Getting a verified release zip: from the cache when it still verifies, else from the release
//! mirror; or, air-gapped, from a local file with a digest the user supplies.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::Report;
use crate::arch::Arch;
use crate::util::checksums::{self, Digest, Sums};
use crate::util::files;
use crate::util::http::{Http, NotFound};
use crate::util::progress::{detail, step};
use crate::version::Version;

/// A release zip on disk whose SHA-256 matched the expected one.
pub struct VerifiedZip {
    pub path: PathBuf,
}

/// How a local zip's expected digest is given.
#[derive(Clone, Debug)]
pub enum Expected {
    Digest(Digest),
    Sha256Sums(PathBuf),
}

/// Where the release zip comes from.
#[derive(Clone, Debug)]
pub enum ReleaseSource {
    /// The release mirror, through the download cache.
    Mirror,
    /// Air-gapped: a local zip and how to verify it.
    Local { zip: PathBuf, expected: Expected },
}

/// Where the release assets of `version` live: `<base>/v<VERSION>/<asset>`.
pub fn asset_url(base: &str, version: &Version, asset: &str) -> String {
    format!("{}/{}/{asset}", base.trim_end_matches('/'), version.tag())
}

/// `<cache home>/alloy-sysext`: `$XDG_CACHE_HOME`, else `$HOME/.cache`.
pub fn cache_dir(cache_home: Option<PathBuf>, home: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let base = match (cache_home, home) {
        (Some(dir), _) if !dir.as_os_str().is_empty() => dir,
        (_, Some(home)) if !home.as_os_str().is_empty() => home.join(".cache"),
        _ => bail!("neither XDG_CACHE_HOME nor HOME is set: set one, so downloads can be cached"),
    };
    Ok(base.join("alloy-sysext"))
}

fn mismatch(what: &str, expected: &Digest, actual: &Digest, source: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "checksum mismatch for {what}: expected sha256 {expected} ({source}), got {actual}. The file is corrupt or not the released one; it was not used"
    )
}

/// Fetches `SHA256SUMS` of the release and the digest it lists for `asset`.
fn expected_digest(
    http: &Http,
    base: &str,
    version: &Version,
    asset: &str,
) -> anyhow::Result<Digest> {
    let url = asset_url(base, version, "SHA256SUMS");
    let text = http
        .get_text(&url, 1 << 20)
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

/// The verified release zip for `arch`: from `source`, else from the cache when it still
/// matches the release's SHA256SUMS, else downloaded from the mirror at `base`.
pub fn release_zip(
    http: &Http,
    source: &ReleaseSource,
    base: &str,
    cache: &Path,
    version: &Version,
    arch: Arch,
    report: &mut Report,
) -> anyhow::Result<VerifiedZip> {
    match source {
        ReleaseSource::Local { zip, expected } => local_zip(zip, expected, arch, report),
        ReleaseSource::Mirror => mirror_zip(http, base, cache, version, arch, report),
    }
}

fn mirror_zip(
    http: &Http,
    base: &str,
    cache: &Path,
    version: &Version,
    arch: Arch,
    report: &mut Report,
) -> anyhow::Result<VerifiedZip> {
    let asset = arch.release_zip();
    step(format!(
        "Fetching {asset} of Alloy {} from {base}",
        version.tag()
    ));
    let expected = report.phase("download", || expected_digest(http, base, version, &asset))?;
    detail(format!("SHA256SUMS lists {asset} as {expected}"));

    let dir = cache.join(version.tag());
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating cache directory {}", dir.display()))?;
    let cached = dir.join(&asset);
    if cached.exists() {
        let (digest, _) = report.phase("verify", || checksums::hash_file(&cached))?;
        if digest == expected {
            detail(format!("using cached {} (verified)", cached.display()));
            return Ok(VerifiedZip { path: cached });
        }
        detail(format!(
            "cached {} does not match SHA256SUMS (got {digest}); downloading again",
            cached.display()
        ));
        std::fs::remove_file(&cached).with_context(|| format!("removing {}", cached.display()))?;
    }

    let url = asset_url(base, version, &asset);
    // Download beside the cache entry, and move it in only once it verifies.
    files::remove_abandoned(&dir);
    let partial = tempfile::Builder::new()
        .prefix(&files::temp_prefix())
        .suffix(&format!("-{asset}.partial"))
        .tempfile_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    // Hashed on the way in: for a fresh download, verifying costs no separate pass.
    let (digest, _) = report
        .phase("download", || http.download(&url, partial.path(), &asset))
        .map_err(|e| explain_not_found(e, version, &asset, base))?;
    if digest != expected {
        return Err(mismatch(&url, &expected, &digest, "from SHA256SUMS"));
    }
    partial
        .persist(&cached)
        .with_context(|| format!("moving the download to {}", cached.display()))?;
    detail(format!("verified {asset}: sha256 {digest}"));
    Ok(VerifiedZip { path: cached })
}

/// Verifies a local release zip, for builds without network access.
fn local_zip(
    zip: &Path,
    expected: &Expected,
    arch: Arch,
    report: &mut Report,
) -> anyhow::Result<VerifiedZip> {
    step(format!("Verifying local {}", zip.display()));
    let (expected, source) = match expected {
        Expected::Digest(digest) => (*digest, "given with --sha256".to_string()),
        Expected::Sha256Sums(sums) => {
            let text = std::fs::read_to_string(sums)
                .with_context(|| format!("reading {}", sums.display()))?;
            let digest =
                Sums::parse(&text, sums.display().to_string())?.require(&arch.release_zip())?;
            (digest, format!("from {}", sums.display()))
        }
    };
    let (digest, _) = report.phase("verify", || checksums::hash_file(zip))?;
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
}
