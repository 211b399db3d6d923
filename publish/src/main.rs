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
mod signature;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use xtask::arch::Arch;
use xtask::cli::{exit_code, refuse_secrets_on_argv};
use xtask::contract::{Channel, INDEX_NAME, SIGNATURE_NAME};
use xtask::signing::{Signer, SIGNING_KEY_ENV};
use xtask::util::checksums::{self, Entry};
use xtask::util::progress::{detail, mib, step};
use xtask::version::Version;

use bucket::{Bucket, Settings};
use local::LocalImage;
use objects::{Outcome, Source};

/// Upload built images to the R2 bucket, create-only, then list them in its SHA256SUMS.
///
/// Order: each image, then its .raw.sha256, then SHA256SUMS, so no reader sees a checksum for
/// an object that is not there. A key that exists already is never overwritten: identical
/// bytes are skipped, different bytes are refused. Release candidates (X.Y.Z-rc.N) go under
/// rc/ with their own SHA256SUMS. Credentials come from R2_ACCESS_KEY_ID and
/// R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), never from flags.
#[derive(Parser)]
#[command(name = "cargo xtask publish", bin_name = "cargo xtask publish")]
pub struct Publish {
    /// Version to publish (every image of it in --dir); without it, every image in --dir
    pub version: Option<Version>,

    /// Architecture to publish; repeat for several [default: every one present]
    #[arg(long = "arch", value_enum)]
    pub archs: Vec<Arch>,

    /// Where the built images are [default: dist/ at the repository root]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// S3 endpoint [default: $R2_ENDPOINT, else https://$R2_ACCOUNT_ID.r2.cloudflarestorage.com]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Bucket name [default: $R2_BUCKET]
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,

    /// Folder inside the bucket to publish under (e.g. sysext/); release candidates go to its rc/
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,

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

/// The settings and secrets publish reads from the environment (secrets: environment only).
#[derive(clap::Args)]
pub struct Environment {
    #[arg(long = "r2-endpoint", env = "R2_ENDPOINT", hide = true)]
    r2_endpoint: Option<String>,
    #[arg(long = "r2-account-id", env = "R2_ACCOUNT_ID", hide = true)]
    r2_account_id: Option<String>,
    #[arg(long = "r2-bucket", env = "R2_BUCKET", hide = true)]
    r2_bucket: Option<String>,
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

impl Environment {
    /// The variable `name` as parsed, for [`bucket::settings`].
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "R2_ENDPOINT" => self.r2_endpoint.clone(),
            "R2_ACCOUNT_ID" => self.r2_account_id.clone(),
            "R2_BUCKET" => self.r2_bucket.clone(),
            "R2_ACCESS_KEY_ID" => self.r2_access_key_id.clone(),
            "R2_SECRET_ACCESS_KEY" => self.r2_secret_access_key.clone(),
            "AWS_ACCESS_KEY_ID" => self.aws_access_key_id.clone(),
            "AWS_SECRET_ACCESS_KEY" => self.aws_secret_access_key.clone(),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Publish::command().get_matches();
    exit_code(
        refuse_secrets_on_argv(&matches, &SECRET_ARGS)
            .and_then(|()| Ok(Publish::from_arg_matches(&matches)?))
            .and_then(|publish| {
                // Parsed: from here on, only the values we hand over reach anyone (gpg gets none).
                xtask::cli::forget_secrets();
                // Ctrl-C or SIGTERM: gpg and its agent stopped, the key's GNUPGHOME removed.
                xtask::util::interrupt::install()?;
                publish.run()
            }),
    )
}

impl Publish {
    pub fn run(self) -> anyhow::Result<()> {
        let mut archs = self.archs.clone();
        archs.sort();
        archs.dedup();
        // Settings first: a missing key or bucket is reported before any file is even hashed.
        let settings = bucket::settings(
            |name| self.env.var(name),
            self.endpoint.clone(),
            self.bucket.clone(),
            self.prefix.clone(),
        )?;
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for the S3 client")?;
        runtime.block_on(publish(&settings, &images, signer.as_ref(), &self))
    }
}

async fn publish(
    settings: &Settings,
    images: &[LocalImage],
    signer: Option<&Signer>,
    options: &Publish,
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
    let index_changes = match bucket.get_text(INDEX_NAME, index::INDEX_LIMIT).await? {
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
        let checksum_text = image.checksum_text();
        let checksum = checksums::hash_bytes(checksum_text.as_bytes());
        for (name, digest, size) in [
            (image.name.clone(), image.digest, image.size),
            (image.checksum_name(), checksum, checksum_text.len() as u64),
        ] {
            match bucket.digest_of(&name, size).await? {
                Some((remote, _)) if remote != digest => {
                    conflicts.push(objects::refusal(&bucket, &name, &remote, &digest));
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
            objects::put_immutable(
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
            objects::put_immutable(
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

    index::update_index(&bucket, &entries, options.verbose).await?;
    let signed = match signer {
        Some(signer) => Some(signature::sign_index(&bucket, signer, options.verbose).await?),
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
            signer.map(|s| s.fingerprint()).unwrap_or_default(),
            signed.describe()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Publish::command().debug_assert();
    }

    #[test]
    fn a_secret_on_the_command_line_is_refused() {
        let matches = Publish::command()
            .try_get_matches_from(["x", "--r2-secret-access-key", "s3cr3t"])
            .unwrap();
        let err = refuse_secrets_on_argv(&matches, &SECRET_ARGS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("R2_SECRET_ACCESS_KEY"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let matches = Publish::command().try_get_matches_from(["x"]).unwrap();
        refuse_secrets_on_argv(&matches, &SECRET_ARGS).unwrap();
    }
}
