//! `cargo xtask publish`: local images -> checked against their .sha256 -> bucket, create-only,
//! image before its checksum before the index, so no reader ever sees a checksum for an object
//! that is not there, and no published byte ever changes. With SYSEXT_GPG_KEY, the index's
//! detached signature follows it. Release candidates go to the bucket's `rc/` folder, with an
//! index of their own: the stable index that hosts read never lists one.
//!
//! A workspace member of its own, so that only `publish` compiles the S3 SDK: `cargo xtask
//! publish` builds and runs it.

mod bucket;
mod index;
mod local;
mod multipart;
mod objects;
mod page;
mod signature;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use xtask::arch::Arch;
use xtask::contract::{Channel, DEFAULT_BASE_URL, INDEX_NAME, PAGE_NAME, SIGNATURE_NAME};
use xtask::runtime::{exit_code, parse_args};
use xtask::signing::{Signer, SIGNING_KEY_ENV};
use xtask::util::checksums::{self, SumLine};
use xtask::util::progress::{detail, mib, step};
use xtask::version::Version;

use bucket::{Bucket, Given, KeyPair, Settings};
use local::LocalImage;
use objects::{Object, Put, Source, Uploads};

/// Upload built images to the R2 bucket, create-only, then list them in its SHA256SUMS.
///
/// Order: each image, then its .raw.sha256, then SHA256SUMS, so no reader sees a checksum for
/// an object that is not there. A key that exists already is never overwritten: identical
/// bytes are skipped, different bytes are refused. Release candidates (X.Y.Z-rc.N) go under
/// rc/ with their own SHA256SUMS. Credentials come from R2_ACCESS_KEY_ID and
/// R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), never from flags.
#[derive(Parser)]
#[command(name = "cargo xtask publish", bin_name = "cargo xtask publish")]
pub struct PublishArgs {
    /// Version to publish (every image of it in --dir); without it, every image in --dir
    pub version: Option<Version>,

    /// Architecture to publish; repeat for several [default: every one present]
    #[arg(long = "arch", value_enum)]
    pub archs: Vec<Arch>,

    /// Where the built images are [default: dist/ at the repository root]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// S3 endpoint [default: https://$R2_ACCOUNT_ID.r2.cloudflarestorage.com]
    #[arg(long, env = "R2_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// Bucket name
    #[arg(long, env = "R2_BUCKET", value_name = "NAME")]
    pub bucket: Option<String>,

    /// Folder inside the bucket to publish under (e.g. sysext/); release candidates go to its rc/
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,

    /// Public base URL the bucket (with --prefix) is served at: the page's Butane snippets and
    /// index.json download from it
    #[arg(long, env = "SYSEXT_BASE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,

    /// Say more about each request (never the secret key)
    #[arg(long, short)]
    pub verbose: bool,

    /// Images larger than this many bytes go up in parts
    #[arg(long, env = "ALLOY_SYSEXT_MULTIPART_THRESHOLD", hide = true,
          default_value_t = multipart::DEFAULT_THRESHOLD)]
    pub multipart_threshold: u64,

    /// Size of each multipart part in bytes (at least 5 MiB)
    #[arg(long, env = "ALLOY_SYSEXT_PART_SIZE", hide = true,
          default_value_t = multipart::DEFAULT_PART_SIZE)]
    pub part_size: u64,

    #[command(flatten)]
    pub env: Environment,
}

/// The settings and secrets publish reads from the environment only (secrets never from flags).
#[derive(clap::Args)]
pub struct Environment {
    #[arg(long = "r2-account-id", env = "R2_ACCOUNT_ID", hide = true)]
    r2_account_id: Option<String>,
    #[arg(
        long = "r2-access-key-id",
        env = "R2_ACCESS_KEY_ID",
        hide = true,
        hide_env_values = true
    )]
    r2_access_key_id: Option<String>,
    #[arg(
        long = "r2-secret-access-key",
        env = "R2_SECRET_ACCESS_KEY",
        hide = true,
        hide_env_values = true
    )]
    r2_secret_access_key: Option<String>,
    #[arg(
        long = "aws-access-key-id",
        env = "AWS_ACCESS_KEY_ID",
        hide = true,
        hide_env_values = true
    )]
    aws_access_key_id: Option<String>,
    #[arg(
        long = "aws-secret-access-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide = true,
        hide_env_values = true
    )]
    aws_secret_access_key: Option<String>,
    /// Armored private key (no passphrase) to sign SHA256SUMS with
    #[arg(
        long = "sysext-gpg-key",
        env = "SYSEXT_GPG_KEY",
        hide = true,
        hide_env_values = true
    )]
    sysext_gpg_key: Option<String>,
}

/// Ids of [`Environment`] fields that are secrets: never accepted on the command line.
const SECRET_ARGS: [&str; 5] = [
    "r2_access_key_id",
    "r2_secret_access_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "sysext_gpg_key",
];

fn main() -> ExitCode {
    exit_code(
        parse_args::<PublishArgs>(std::env::args_os(), &SECRET_ARGS).and_then(|publish| {
            // Parsed: from here on, only the values we hand over reach anyone (gpg gets none).
            xtask::runtime::forget_secrets();
            // Ctrl-C or SIGTERM: gpg and its agent stopped, the key's GNUPGHOME removed.
            xtask::util::interrupt::install()?;
            publish.run()
        }),
    )
}

impl PublishArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let mut archs = self.archs.clone();
        archs.sort();
        archs.dedup();
        // Settings first: a missing key or bucket is reported before any file is even hashed.
        let settings = bucket::settings(self.given())?;
        xtask::contract::check_base_url(&self.base_url)
            .context("--base-url / SYSEXT_BASE_URL (nothing was uploaded)")?;
        // The signing key too: a key that cannot sign fails here, before any upload.
        let signer = match self
            .env
            .sysext_gpg_key
            .as_deref()
            .filter(|k| !k.trim().is_empty())
        {
            Some(key) => Some(Signer::new(&std::env::temp_dir(), key).with_context(|| {
                format!("checking the signing key in {SIGNING_KEY_ENV} (nothing was uploaded)")
            })?),
            None => None,
        };
        let dir = self.dir.clone().unwrap_or_else(xtask::default_dist);
        let images = local::local_images(&dir, self.version.as_ref(), &archs)?;
        let channel = Channel::of(&images[0].image.version);
        if images
            .iter()
            .any(|i| Channel::of(&i.image.version) != channel)
        {
            bail!(
                "{} holds release candidates and releases: they go to different indexes (rc/SHA256SUMS and SHA256SUMS); publish one VERSION at a time. Nothing was uploaded",
                dir.display()
            );
        }
        let settings = settings.in_folder(channel.folder());
        let uploads = Uploads {
            multipart_threshold: self.multipart_threshold,
            part_size: self.part_size,
            verbose: self.verbose,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for the S3 client")?;
        let target = Target {
            settings: &settings,
            channel,
            public_base: self.base_url.trim_end_matches('/'),
        };
        runtime.block_on(publish(&target, &images, signer.as_ref(), &uploads))
    }

    /// The bucket settings as given: flags (or their variables), then the environment's keys.
    fn given(&self) -> Given {
        let env = &self.env;
        Given {
            endpoint: self.endpoint.clone(),
            account_id: env.r2_account_id.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            r2_keys: KeyPair {
                id: env.r2_access_key_id.clone(),
                secret: env.r2_secret_access_key.clone(),
            },
            aws_keys: KeyPair {
                id: env.aws_access_key_id.clone(),
                secret: env.aws_secret_access_key.clone(),
            },
        }
    }
}

/// Where a publish goes: the bucket's channel folder, and where the public reads it.
struct Target<'a> {
    settings: &'a Settings,
    channel: Channel,
    /// The public base URL of the bucket's top folder, without a trailing slash.
    public_base: &'a str,
}

/// Publishes `images` to the bucket: everything is checked before the first write, then each
/// image goes up before its checksum, both before the index, then the signature, and the page
/// last.
async fn publish(
    target_folder: &Target<'_>,
    images: &[LocalImage],
    signer: Option<&Signer>,
    uploads: &Uploads,
) -> anyhow::Result<()> {
    let bucket = Bucket::new(target_folder.settings);
    let settings = target_folder.settings;
    let target = format!("s3://{}/{}", bucket.name, bucket.prefix);
    step(format!("Publishing to {target} at {}", bucket.endpoint));
    if uploads.verbose {
        detail(format!("credentials from {}", settings.credentials_from));
        detail(format!(
            "multipart above {} in parts of {}",
            mib(uploads.multipart_threshold),
            mib(uploads.part_size)
        ));
    }
    let lines: Vec<SumLine> = images
        .iter()
        .map(|i| SumLine {
            digest: i.digest,
            name: i.name.clone(),
        })
        .collect();
    check_index_and_signature(&bucket, &target, &lines, signer.is_some()).await?;
    let published = already_published(&bucket, images).await?;
    let mut puts = Vec::new();
    for image in images {
        puts.push(upload(&bucket, image, &published, uploads).await?);
    }
    index::update_index(&bucket, &lines, uploads.verbose).await?;
    let signed = match signer {
        Some(signer) => Some(signature::sign_index(&bucket, signer, uploads.verbose).await?),
        None => None,
    };
    let channel = target_folder.channel;
    let page_changed =
        page::update_page(&bucket, channel, target_folder.public_base, uploads.verbose).await?;

    println!();
    println!("{:<34} {:>10}  {:<64}  result", "image", "size", "sha256");
    for (image, put) in images.iter().zip(&puts) {
        println!(
            "{:<34} {:>10}  {}  {}",
            image.name,
            mib(image.size),
            image.digest,
            put.describe()
        );
    }
    println!("\nindex: {target}{INDEX_NAME}");
    println!(
        "page: {}/{PAGE_NAME} ({})",
        channel.base_url(target_folder.public_base),
        if page_changed {
            "updated"
        } else {
            "already up to date"
        }
    );
    if let (Some(signed), Some(signer)) = (signed, signer) {
        println!(
            "signature: {target}{SIGNATURE_NAME} by key {} ({})",
            signer.fingerprint(),
            signed.describe()
        );
    }
    Ok(())
}

/// Reading the index first proves the endpoint, bucket and keys before anything is written,
/// and refuses early if it already lists one of our names with other bytes. A signed index is
/// never changed without signing it: hosts with Verify=yes would refuse it.
async fn check_index_and_signature(
    bucket: &Bucket,
    target: &str,
    lines: &[SumLine],
    signing: bool,
) -> anyhow::Result<()> {
    bucket.check_exists().await?;
    let index_changes = match bucket
        .get_text(INDEX_NAME, xtask::contract::INDEX_LIMIT)
        .await?
    {
        Some((text, _)) => !index::merge(&text, lines)
            .with_context(|| {
                format!("checking {target}{INDEX_NAME} (nothing was changed on the bucket)")
            })?
            .added
            .is_empty(),
        None => true,
    };
    if !signing && index_changes && bucket.size_of(SIGNATURE_NAME).await?.is_some() {
        bail!(
            "{target}{SIGNATURE_NAME} exists, so hosts may check it: publishing without {SIGNING_KEY_ENV} would change {INDEX_NAME} and leave that signature wrong. Set {SIGNING_KEY_ENV} to the signing key (or delete {SIGNATURE_NAME} from the bucket to stop signing). Nothing was changed on the bucket."
        );
    }
    Ok(())
}

/// The names (images and checksums) already on the bucket with exactly our bytes. Any that
/// exists with other bytes is refused, all of them named, before anything is uploaded.
async fn already_published(
    bucket: &Bucket,
    images: &[LocalImage],
) -> anyhow::Result<HashSet<String>> {
    let mut conflicts = Vec::new();
    let mut published = HashSet::new();
    for image in images {
        let checksum_text = image.checksum_text();
        let checksum = checksums::hash_bytes(checksum_text.as_bytes());
        for (name, digest, size) in [
            (image.name.clone(), image.digest, image.size),
            (image.checksum_name(), checksum, checksum_text.len() as u64),
        ] {
            match bucket.digest_of(&name, size).await? {
                Some((remote, _)) if remote != digest => {
                    conflicts.push(objects::refusal(bucket, &name, &remote, &digest));
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
    Ok(published)
}

/// Uploads an image, then its checksum, each unless `published` already holds it.
async fn upload(
    bucket: &Bucket,
    image: &LocalImage,
    published: &HashSet<String>,
    uploads: &Uploads,
) -> anyhow::Result<Put> {
    let put = if published.contains(&image.name) {
        Put::AlreadyPublished
    } else {
        let object = Object {
            name: image.name.clone(),
            source: Source::File(&image.path),
            digest: image.digest,
            size: image.size,
            metadata: bucket::IMAGE,
        };
        objects::put_immutable(bucket, object, uploads).await?
    };
    if !published.contains(&image.checksum_name()) {
        let text = image.checksum_text();
        let object = Object {
            name: image.checksum_name(),
            digest: checksums::hash_bytes(text.as_bytes()),
            size: text.len() as u64,
            source: Source::Text(text),
            metadata: bucket::CHECKSUM,
        };
        objects::put_immutable(bucket, object, uploads).await?;
    }
    Ok(put)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        PublishArgs::command().debug_assert();
    }

    #[test]
    fn a_secret_on_the_command_line_is_refused() {
        let refused =
            parse_args::<PublishArgs>(["x", "--r2-secret-access-key", "s3cr3t"], &SECRET_ARGS);
        // No `unwrap_err`: PublishArgs holds secrets, so it has no `Debug`.
        let err = refused.err().unwrap().to_string();
        assert!(err.contains("R2_SECRET_ACCESS_KEY"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        parse_args::<PublishArgs>(["x"], &SECRET_ARGS).unwrap();
    }
}
