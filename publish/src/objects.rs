//! Versioned objects (images and their `.sha256`): written create-only, never changed.

use std::path::Path;

use anyhow::{bail, Context};
use xtask::util::checksums::Digest;
use xtask::util::progress::{detail, Transfer};

use crate::bucket::{Bucket, Metadata, Precondition, Written};
use crate::multipart::{self, Plan};
use crate::Publish;

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Uploaded,
    AlreadyPublished,
}

impl Outcome {
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Uploaded => "uploaded",
            Outcome::AlreadyPublished => "already published, identical",
        }
    }
}

/// What to upload for one object.
pub enum Source<'a> {
    File(&'a Path),
    Text(String),
}

pub fn refusal(bucket: &Bucket, name: &str, remote: &Digest, local: &Digest) -> String {
    format!(
        "refusing to overwrite s3://{}/{}: it is published with sha256 {remote}, and the local file has sha256 {local}. A published version never changes: build and publish a new version instead.",
        bucket.name,
        bucket.key(name)
    )
}

/// Writes an object create-only. If it exists by the time our write lands (another publisher,
/// or our own earlier attempt whose answer was lost), the existing bytes are hashed: identical is success, different is an error naming both digests.
pub async fn put_immutable(
    bucket: &Bucket,
    name: &str,
    source: Source<'_>,
    digest: &Digest,
    size: u64,
    metadata: Metadata,
    options: &Publish,
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
        Written::PreconditionFailed => match bucket.digest_of(name, size).await? {
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
