//! `cargo xtask publish`: local images -> checked against their .sha256 -> bucket, create-only,
//! image before its checksum before the index, so no reader ever sees a checksum for an object
//! that is not there, and no published byte ever changes. With SYSEXT_GPG_KEY, the index's
//! detached signature follows it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::arch::Arch;
use crate::bucket::{self, Bucket, Metadata, Precondition, Settings, Written};
use crate::checksums::{self, Digest, Entry};
use crate::fleet::SIGNATURE_NAME;
use crate::index::{self, ImageName, INDEX_NAME};
use crate::multipart::{self, Plan};
use crate::progress::{detail, mib, step, Transfer};
use crate::signing::{self, SIGNING_KEY_ENV};
use crate::version::Version;

pub struct PublishOptions {
    pub version: Option<Version>,
    pub archs: Vec<Arch>,
    pub dir: PathBuf,
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub verbose: bool,
}

/// A local image, checked against its `.sha256`.
struct LocalImage {
    name: String,
    path: PathBuf,
    digest: Digest,
    size: u64,
}

impl LocalImage {
    fn checksum_name(&self) -> String {
        format!("{}.sha256", self.name)
    }

    /// The `.raw.sha256` as we publish it: exactly what `sha256sum` writes.
    fn checksum_text(&self) -> String {
        checksums::line(&self.digest, &self.name)
    }
}

/// Which image files in a directory to publish: those named `alloy-<VERSION>-<ARCH>.raw`,
/// of `version` if given, of `archs` if any are given. Sorted by version, then architecture.
pub fn select_images(
    names: &[String],
    version: Option<&Version>,
    archs: &[Arch],
) -> Vec<(String, ImageName)> {
    let mut selected: Vec<(String, ImageName)> = names
        .iter()
        .filter_map(|name| Some((name.clone(), ImageName::parse(name)?)))
        .filter(|(_, image)| version.is_none_or(|v| &image.version == v))
        .filter(|(_, image)| archs.is_empty() || archs.contains(&image.arch))
        .collect();
    selected.sort_by(|a, b| (&a.1.version, a.1.arch).cmp(&(&b.1.version, b.1.arch)));
    selected
}

/// Finds the images to publish and checks each against its `.sha256`, before any upload.
fn local_images(options: &PublishOptions) -> anyhow::Result<Vec<LocalImage>> {
    let dir = &options.dir;
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "reading {} (build images first with `cargo xtask build VERSION`, or pass --dir)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let selected = select_images(&names, options.version.as_ref(), &options.archs);
    if selected.is_empty() {
        let which = match &options.version {
            Some(v) => format!("alloy-{v}-<ARCH>.raw"),
            None => "alloy-<VERSION>-<ARCH>.raw".to_string(),
        };
        bail!(
            "no image {which} in {} for {}: build it first with `cargo xtask build`",
            dir.display(),
            if options.archs.is_empty() {
                "any architecture".to_string()
            } else {
                options
                    .archs
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    for arch in &options.archs {
        if !selected.iter().any(|(_, image)| image.arch == *arch) {
            bail!(
                "--arch {arch} was asked for, but {} has no such image{}",
                dir.display(),
                options
                    .version
                    .as_ref()
                    .map(|v| format!(" of version {v}"))
                    .unwrap_or_default()
            );
        }
    }

    step(format!(
        "Checking {} local image(s) against their .sha256",
        selected.len()
    ));
    let mut images = Vec::new();
    for (name, _) in selected {
        let path = dir.join(&name);
        let checksum_path = dir.join(format!("{name}.sha256"));
        let text = std::fs::read_to_string(&checksum_path).with_context(|| {
            format!(
                "reading {}: every image is published with its checksum; rebuild with `cargo xtask build`",
                checksum_path.display()
            )
        })?;
        let entries = checksums::parse(&text)
            .with_context(|| format!("reading {}", checksum_path.display()))?;
        let expected = checksums::lookup(&entries, &name)?
            .with_context(|| format!("{} does not list {name}", checksum_path.display()))?;
        let (digest, size) = checksums::hash_file(&path)?;
        if digest != expected {
            bail!(
                "{} has sha256 {digest}, but {} says {expected}: the image changed after it was built; rebuild it. Nothing was uploaded",
                path.display(),
                checksum_path.display()
            );
        }
        detail(format!("{name}: {} sha256 {digest} ok", mib(size)));
        images.push(LocalImage {
            name,
            path,
            digest,
            size,
        });
    }
    Ok(images)
}

pub fn run(options: PublishOptions) -> anyhow::Result<()> {
    // Settings first: a missing key or bucket is reported before any file is even hashed.
    let settings = bucket::settings(
        |name| std::env::var(name).ok(),
        options.endpoint.clone(),
        options.bucket.clone(),
        options.prefix.clone(),
    )?;
    // The signing key too: a key that cannot sign fails here, before any upload.
    let signer = Signer::from_env()?;
    let images = local_images(&options)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime for the S3 client")?;
    runtime.block_on(publish(&settings, &images, signer.as_ref(), &options))
}

/// The key in SYSEXT_GPG_KEY, proven to sign, and its public half to check signatures with.
/// Holds the private key: no `Debug`, never printed.
struct Signer {
    key: String,
    fingerprint: String,
    /// Private (0700): the public keyring, and the files signed and checked.
    dir: tempfile::TempDir,
}

impl Signer {
    /// `None` when SYSEXT_GPG_KEY is unset or empty.
    fn from_env() -> anyhow::Result<Option<Signer>> {
        let key = std::env::var(SIGNING_KEY_ENV);
        // Read once, then out of the environment, so that no child process (gpg) inherits it;
        // no thread runs yet that could read the environment meanwhile.
        std::env::remove_var(SIGNING_KEY_ENV);
        let key = match key {
            Ok(key) if key.trim().is_empty() => return Ok(None),
            Ok(key) => key,
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!(
                "{SIGNING_KEY_ENV} is not UTF-8 text, so not an armored OpenPGP private key; nothing was uploaded"
            ),
        };
        Signer::new(key)
            .with_context(|| {
                format!("checking the signing key in {SIGNING_KEY_ENV} (nothing was uploaded)")
            })
            .map(Some)
    }

    fn new(key: String) -> anyhow::Result<Signer> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("alloy-sysext-sign.")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .context("creating a private temporary directory")?;
        let fingerprint =
            signing::export_public_keyring_in(dir.path(), &key, &dir.path().join("pubring.gpg"))?;
        let signer = Signer {
            key,
            fingerprint,
            dir,
        };
        // A test signature, checked: a key with a passphrase or without signing use fails now.
        let probe = b"alloy-sysext: checking the signing key\n";
        let signature = signer.sign(probe)?;
        signer.check(probe, &signature)?;
        Ok(signer)
    }

    /// A detached signature of `data`.
    fn sign(&self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (data_path, signature_path) = (self.path(INDEX_NAME), self.path(SIGNATURE_NAME));
        std::fs::write(&data_path, data)
            .with_context(|| format!("writing {}", data_path.display()))?;
        signing::sign_detached_in(self.dir.path(), &self.key, &data_path, &signature_path)?;
        std::fs::read(&signature_path)
            .with_context(|| format!("reading {}", signature_path.display()))
    }

    /// Whether `signature` is a good signature of `data` by this key.
    fn check(&self, data: &[u8], signature: &[u8]) -> anyhow::Result<()> {
        let (data_path, signature_path) = (self.path("published"), self.path("published.gpg"));
        std::fs::write(&data_path, data)
            .with_context(|| format!("writing {}", data_path.display()))?;
        std::fs::write(&signature_path, signature)
            .with_context(|| format!("writing {}", signature_path.display()))?;
        signing::verify_detached(&self.path("pubring.gpg"), &data_path, &signature_path)?;
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Uploaded,
    AlreadyPublished,
}

impl Outcome {
    fn describe(self) -> &'static str {
        match self {
            Outcome::Uploaded => "uploaded",
            Outcome::AlreadyPublished => "already published, identical",
        }
    }
}

/// What to upload for one object.
enum Source<'a> {
    File(&'a Path),
    Text(String),
}

async fn publish(
    settings: &Settings,
    images: &[LocalImage],
    signer: Option<&Signer>,
    options: &PublishOptions,
) -> anyhow::Result<()> {
    let bucket = Bucket::new(settings);
    let target = format!("s3://{}/{}", bucket.name, bucket.prefix);
    step(format!("Publishing to {target} at {}", bucket.endpoint));
    if options.verbose {
        detail(format!("credentials from {}", settings.credentials_from));
        detail(format!(
            "multipart above {} in parts of {}",
            mib(options.multipart_threshold),
            mib(options.part_size)
        ));
    }

    bucket.check_exists().await?;
    // Reading the index first proves the endpoint, bucket and keys before anything is written,
    // and refuses early if it already lists one of our names with other bytes.
    let entries: Vec<Entry> = images
        .iter()
        .map(|i| Entry {
            digest: i.digest,
            name: i.name.clone(),
        })
        .collect();
    let index_changes = match bucket.get_text(INDEX_NAME, INDEX_LIMIT).await? {
        Some((text, _)) => !index::merge(&text, &entries)
            .with_context(|| {
                format!("checking {target}{INDEX_NAME} (nothing was changed on the bucket)")
            })?
            .added
            .is_empty(),
        None => true,
    };
    // Changing a signed index without signing it would make hosts with Verify=yes refuse it.
    if signer.is_none() && index_changes && bucket.size_of(SIGNATURE_NAME).await?.is_some() {
        bail!(
            "{target}{SIGNATURE_NAME} exists, so hosts may check it: publishing without {SIGNING_KEY_ENV} would change {INDEX_NAME} and leave that signature wrong. Set {SIGNING_KEY_ENV} to the signing key (or delete {SIGNATURE_NAME} from the bucket to stop signing). Nothing was changed on the bucket."
        );
    }

    // Every object that exists already must hold exactly our bytes; otherwise refuse before
    // uploading anything at all.
    let mut conflicts = Vec::new();
    let mut published = std::collections::HashSet::new();
    for image in images {
        let checksum = checksums::hash_bytes(image.checksum_text().as_bytes());
        for (name, digest) in [
            (image.name.clone(), image.digest),
            (image.checksum_name(), checksum),
        ] {
            match bucket.digest_of(&name).await? {
                Some((remote, _)) if remote != digest => {
                    conflicts.push(refusal(&bucket, &name, &remote, &digest));
                }
                Some(_) => {
                    detail(format!(
                        "{name}: already published with the same sha256, skipped"
                    ));
                    published.insert(name);
                }
                None => {}
            }
        }
    }
    if !conflicts.is_empty() {
        bail!(
            "{}\nNothing was changed on the bucket.",
            conflicts.join("\n")
        );
    }

    let mut outcomes = Vec::new();
    for image in images {
        let outcome = if published.contains(&image.name) {
            Outcome::AlreadyPublished
        } else {
            put_immutable(
                &bucket,
                &image.name,
                Source::File(&image.path),
                &image.digest,
                image.size,
                bucket::IMAGE,
                options,
            )
            .await?
        };
        if !published.contains(&image.checksum_name()) {
            let text = image.checksum_text();
            let checksum = checksums::hash_bytes(text.as_bytes());
            let size = text.len() as u64;
            put_immutable(
                &bucket,
                &image.checksum_name(),
                Source::Text(text),
                &checksum,
                size,
                bucket::CHECKSUM,
                options,
            )
            .await?;
        }
        outcomes.push(outcome);
    }

    update_index(&bucket, &entries, options.verbose).await?;
    let signed = match signer {
        Some(signer) => Some(sign_index(&bucket, signer, options.verbose).await?),
        None => None,
    };

    println!();
    println!("{:<34} {:>10}  {:<64}  result", "image", "size", "sha256");
    for (image, outcome) in images.iter().zip(&outcomes) {
        println!(
            "{:<34} {:>10}  {}  {}",
            image.name,
            mib(image.size),
            image.digest,
            outcome.describe()
        );
    }
    println!("\nindex: {target}{INDEX_NAME}");
    if let Some(signed) = signed {
        println!(
            "signature: {target}{SIGNATURE_NAME} by key {} ({})",
            signer.map(|s| s.fingerprint.as_str()).unwrap_or_default(),
            signed.describe()
        );
    }
    Ok(())
}

/// How long after writing the index we read it back.
const INDEX_SETTLE: Duration = Duration::from_millis(1000);

/// The index is a few lines per release; anything much larger is not ours.
const INDEX_LIMIT: u64 = 16 << 20;

fn refusal(bucket: &Bucket, name: &str, remote: &Digest, local: &Digest) -> String {
    format!(
        "refusing to overwrite s3://{}/{}: it is published with sha256 {remote}, and the local file has sha256 {local}. A published version never changes: build and publish a new version instead.",
        bucket.name,
        bucket.key(name)
    )
}

/// Writes an object create-only. If it exists by the time our write lands (another publisher,
/// or our own earlier attempt whose answer was lost), the existing bytes are hashed: identical is success, different is an error naming both digests.
async fn put_immutable(
    bucket: &Bucket,
    name: &str,
    source: Source<'_>,
    digest: &Digest,
    size: u64,
    metadata: Metadata,
    options: &PublishOptions,
) -> anyhow::Result<Outcome> {
    let key = bucket.key(name);
    let plan = match &source {
        Source::File(_) => {
            multipart::part_plan(size, options.multipart_threshold, options.part_size)
        }
        Source::Text(_) => Plan::Single,
    };
    let mut transfer = matches!(source, Source::File(_))
        .then(|| Transfer::new(format!("uploading {name}"), Some(size)));
    let written = match (&source, plan) {
        (Source::Text(text), _) => {
            bucket
                .put(
                    name,
                    text.clone().into_bytes().into(),
                    digest,
                    metadata,
                    &Precondition::Absent,
                )
                .await?
        }
        (Source::File(path), Plan::Single) => {
            if options.verbose {
                detail(format!("PUT {key} ({size} bytes, If-None-Match: *)"));
            }
            let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            bucket
                .put(name, body, digest, metadata, &Precondition::Absent)
                .await?
        }
        (Source::File(path), Plan::Multipart(parts)) => {
            if options.verbose {
                detail(format!(
                    "multipart upload of {key}: {} parts of {} bytes",
                    parts.len(),
                    parts[0].length
                ));
            }
            let mut sent = 0u64;
            let verbose = options.verbose;
            bucket
                .put_multipart(name, path, &parts, metadata, 4, |length| {
                    sent += length;
                    if verbose {
                        detail(format!("{key}: part of {length} bytes done, {sent}/{size}"));
                    }
                    if let Some(transfer) = transfer.as_mut() {
                        transfer.set_position(sent);
                    }
                })
                .await?
        }
    };
    match written {
        Written::Done => {
            // Proven, not assumed: the server now reports exactly our size.
            match bucket.size_of(name).await? {
                Some(remote) if remote == size => {}
                other => bail!(
                    "after uploading s3://{}/{key}, the server reports {} instead of {size} bytes",
                    bucket.name,
                    other.map_or("no object".to_string(), |s| format!("{s} bytes"))
                ),
            }
            if let Some(transfer) = transfer {
                transfer.finish(size);
            }
            Ok(Outcome::Uploaded)
        }
        // Someone else created it meanwhile: theirs must be ours.
        Written::PreconditionFailed => match bucket.digest_of(name).await? {
            Some((remote, _)) => same_or_refuse(bucket, name, &remote, digest),
            None => bail!(
                "s3://{}/{key}: the server said it exists (412), but it cannot be read back; try again",
                bucket.name
            ),
        },
    }
}

fn same_or_refuse(
    bucket: &Bucket,
    name: &str,
    remote: &Digest,
    local: &Digest,
) -> anyhow::Result<Outcome> {
    if remote == local {
        detail(format!(
            "{name}: already published with the same sha256, skipped"
        ));
        Ok(Outcome::AlreadyPublished)
    } else {
        bail!("{}", refusal(bucket, name, remote, local))
    }
}

/// Adds our entries to `SHA256SUMS` by read-modify-write on its ETag; a concurrent publisher
/// makes our write fail with 412, and we read again and merge again.
async fn update_index(bucket: &Bucket, entries: &[Entry], verbose: bool) -> anyhow::Result<()> {
    const ATTEMPTS: u32 = 10;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let current = bucket.get_text(INDEX_NAME, INDEX_LIMIT).await?;
        let (existing, precondition) = match &current {
            Some((text, etag)) => (text.as_str(), Precondition::Matches(etag.clone())),
            None => ("", Precondition::Absent),
        };
        let merged = index::merge(existing, entries)?;
        if merged.added.is_empty() && current.is_some() {
            detail(format!("{INDEX_NAME} already lists every image"));
            return Ok(());
        }
        if verbose {
            let condition = match &precondition {
                Precondition::Absent => "If-None-Match: *".to_string(),
                Precondition::Matches(etag) => format!("If-Match: {etag}"),
            };
            detail(format!("PUT {} ({condition})", bucket.key(INDEX_NAME)));
        }
        let digest = checksums::hash_bytes(merged.text.as_bytes());
        match bucket
            .put(
                INDEX_NAME,
                merged.text.into_bytes().into(),
                &digest,
                bucket::INDEX,
                &precondition,
            )
            .await?
        {
            Written::Done => {
                // Read it back once concurrent writes have landed: a store whose conditional
                // writes are not atomic can let two writers both pass, and the later one
                // drops the other's lines. Then we merge again.
                tokio::time::sleep(INDEX_SETTLE).await;
                let now = bucket.get_text(INDEX_NAME, INDEX_LIMIT).await?;
                let listed = now
                    .as_ref()
                    .map(|(text, _)| index::merge(text, entries).map(|m| m.added.is_empty()))
                    .transpose()?
                    .unwrap_or(false);
                if listed {
                    detail(format!("{INDEX_NAME}: added {}", merged.added.join(", ")));
                    return Ok(());
                }
                detail(format!(
                    "{INDEX_NAME} lost our lines to a concurrent write; merging again (attempt {attempt} of {ATTEMPTS})"
                ));
            }
            Written::PreconditionFailed => {
                let wait = backoff + jitter(backoff);
                detail(format!(
                    "{INDEX_NAME} changed under us (another publisher?); merging again in {wait:?} (attempt {attempt} of {ATTEMPTS})"
                ));
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    bail!(
        "{INDEX_NAME} kept changing under us for {ATTEMPTS} attempts; the images are uploaded, run publish again to list them"
    )
}

/// What happened to the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signed {
    Uploaded,
    AlreadyValid,
}

impl Signed {
    fn describe(self) -> &'static str {
        match self {
            Signed::Uploaded => "signed and uploaded",
            Signed::AlreadyValid => "already a valid signature of it",
        }
    }
}

/// A signature is a few hundred bytes.
const SIGNATURE_LIMIT: u64 = 1 << 20;

/// Makes `SHA256SUMS.gpg` a good signature of `SHA256SUMS` as the bucket holds it when we are
/// done: sign the bytes read from the bucket, upload, then read both again and check. Another
/// publisher's change to the index in between means signing again; a missing, wrong or stale
/// signature is replaced.
async fn sign_index(bucket: &Bucket, signer: &Signer, verbose: bool) -> anyhow::Result<Signed> {
    const ATTEMPTS: u32 = 10;
    let mut backoff = Duration::from_millis(100);
    let mut uploaded = false;
    let mut why = String::new();
    for attempt in 1..=ATTEMPTS {
        let Some((index, _)) = bucket.get_bytes(INDEX_NAME, INDEX_LIMIT).await? else {
            bail!(
                "s3://{}/{} vanished before it could be signed; run publish again",
                bucket.name,
                bucket.key(INDEX_NAME)
            );
        };
        let precondition = match bucket.get_bytes(SIGNATURE_NAME, SIGNATURE_LIMIT).await? {
            Some((signature, etag)) => match signer.check(&index, &signature) {
                Ok(()) => {
                    detail(format!(
                        "{SIGNATURE_NAME}: a good signature of {INDEX_NAME} by {}",
                        signer.fingerprint
                    ));
                    return Ok(if uploaded {
                        Signed::Uploaded
                    } else {
                        Signed::AlreadyValid
                    });
                }
                Err(e) => {
                    why = format!("{e:#}");
                    detail(if uploaded {
                        format!("{INDEX_NAME} changed after we signed it (another publisher?): signing it again")
                    } else {
                        format!("{SIGNATURE_NAME} does not match {INDEX_NAME}: signing it")
                    });
                    Precondition::Matches(etag)
                }
            },
            None => {
                why = format!("no {SIGNATURE_NAME}");
                Precondition::Absent
            }
        };
        step(format!(
            "Signing {INDEX_NAME} with key {} (attempt {attempt} of {ATTEMPTS})",
            signer.fingerprint
        ));
        let signature = signer.sign(&index)?;
        let digest = checksums::hash_bytes(&signature);
        if verbose {
            let condition = match &precondition {
                Precondition::Absent => "If-None-Match: *".to_string(),
                Precondition::Matches(etag) => format!("If-Match: {etag}"),
            };
            detail(format!("PUT {} ({condition})", bucket.key(SIGNATURE_NAME)));
        }
        match bucket
            .put(
                SIGNATURE_NAME,
                signature.into(),
                &digest,
                bucket::SIGNATURE,
                &precondition,
            )
            .await?
        {
            // Checked on the next turn, against the index as it is then.
            Written::Done => uploaded = true,
            Written::PreconditionFailed => {
                let wait = backoff + jitter(backoff);
                detail(format!(
                    "{SIGNATURE_NAME} changed under us (another publisher?); checking again in {wait:?}"
                ));
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    bail!(
        "{SIGNATURE_NAME} still does not match {INDEX_NAME} after {ATTEMPTS} attempts ({why}); run publish again to sign it"
    )
}

/// Up to `max` of noise, so that two publishers that collided do not collide again.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selects_images_of_the_version_and_archs_asked_for() {
        let dir = names(&[
            "alloy-1.10.2-arm64.raw",
            "alloy-1.10.2-arm64.raw.sha256",
            "alloy-1.10.2-amd64.raw",
            "alloy-1.9.0-amd64.raw",
            "alloy-1.10.2-amd64.raw.sha256",
            ".alloy-sysext-work-1-x",
            "notes.txt",
        ]);
        let pick = |version: Option<&str>, archs: &[Arch]| -> Vec<String> {
            let version = version.map(|v| v.parse().unwrap());
            select_images(&dir, version.as_ref(), archs)
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        assert_eq!(
            pick(None, &[]),
            [
                "alloy-1.9.0-amd64.raw",
                "alloy-1.10.2-amd64.raw",
                "alloy-1.10.2-arm64.raw"
            ]
        );
        assert_eq!(
            pick(Some("v1.10.2"), &[]),
            ["alloy-1.10.2-amd64.raw", "alloy-1.10.2-arm64.raw"]
        );
        assert_eq!(
            pick(Some("1.10.2"), &[Arch::Arm64]),
            ["alloy-1.10.2-arm64.raw"]
        );
        assert!(pick(Some("2.0.0"), &[]).is_empty());
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let max = Duration::from_millis(100);
        assert!(jitter(max) < max);
    }
}
