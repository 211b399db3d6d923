//! Versioned objects (images and their `.sha256`): written create-only, never changed.

use std::path::Path;

use anyhow::{bail, Context};
use xtask::util::checksums::Digest;
use xtask::util::progress::{detail, Transfer};

use crate::bucket::{Bucket, Metadata, Precondition, Written};
use crate::multipart::{self, Part, Plan};

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    Uploaded,
    AlreadyPublished,
}

impl Put {
    pub fn describe(self) -> &'static str {
        match self {
            Put::Uploaded => "uploaded",
            Put::AlreadyPublished => "already published, identical",
        }
    }
}

/// What to upload for one object.
pub enum Source<'a> {
    File(&'a Path),
    Text(String),
}

/// One object to write: its name in the bucket's folder, its bytes, their digest and size, and
/// how it is served.
pub struct Object<'a> {
    pub name: String,
    pub source: Source<'a>,
    pub digest: Digest,
    pub size: u64,
    pub metadata: Metadata,
}

/// How uploads go: above `multipart_threshold` bytes in parts of `part_size`; `verbose` says
/// each request.
#[derive(Clone, Copy, Debug)]
pub struct Uploads {
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub verbose: bool,
}

pub fn refusal(bucket: &Bucket, name: &str, remote: &Digest, local: &Digest) -> String {
    format!(
        "refusing to overwrite {}: it is published with sha256 {remote}, and the local file has sha256 {local}. A published version never changes: build and publish a new version instead.",
        bucket.url(name)
    )
}

/// Writes an object create-only. If it exists by the time our write lands (another publisher,
/// or our own earlier attempt whose answer was lost), the existing bytes are hashed: identical
/// is success, different is an error naming both digests.
pub async fn put_immutable(
    bucket: &Bucket,
    object: Object<'_>,
    uploads: &Uploads,
) -> anyhow::Result<Put> {
    let Object {
        name,
        source,
        digest,
        size,
        metadata,
    } = object;
    let mut transfer = matches!(source, Source::File(_))
        .then(|| Transfer::new(format!("uploading {name}"), Some(size)));
    let written = match source {
        Source::Text(text) => {
            let body = text.into_bytes().into();
            bucket
                .put(&name, body, &digest, metadata, &Precondition::Absent)
                .await?
        }
        Source::File(path) => {
            let plan = multipart::part_plan(size, uploads.multipart_threshold, uploads.part_size);
            let file = FileUpload {
                name: &name,
                path,
                digest: &digest,
                size,
                metadata,
            };
            file.send(bucket, plan, uploads.verbose, transfer.as_mut())
                .await?
        }
    };
    match written {
        Written::Done => {
            // Proven, not assumed: the server now reports exactly our size.
            match bucket.size_of(&name).await? {
                Some(remote) if remote == size => {}
                other => bail!(
                    "after uploading {}, the server reports {} instead of {size} bytes",
                    bucket.url(&name),
                    other.map_or("no object".to_string(), |s| format!("{s} bytes"))
                ),
            }
            if let Some(transfer) = transfer {
                transfer.finish(size);
            }
            Ok(Put::Uploaded)
        }
        // Someone else created it meanwhile: theirs must be ours.
        Written::PreconditionFailed => match bucket.digest_of(&name, size).await? {
            Some((remote, _)) => same_or_refuse(bucket, &name, &remote, &digest),
            None => bail!(
                "{}: the server said it exists (412), but it cannot be read back; try again",
                bucket.url(&name)
            ),
        },
    }
}

/// A local file on its way to the bucket.
struct FileUpload<'a> {
    name: &'a str,
    path: &'a Path,
    digest: &'a Digest,
    size: u64,
    metadata: Metadata,
}

impl FileUpload<'_> {
    /// Sends the file create-only, in one PUT or in parts as `plan` says.
    async fn send(
        &self,
        bucket: &Bucket,
        plan: Plan,
        verbose: bool,
        transfer: Option<&mut Transfer>,
    ) -> anyhow::Result<Written> {
        let key = bucket.key(self.name);
        match plan {
            Plan::Single => {
                if verbose {
                    detail(format!("PUT {key} ({} bytes, If-None-Match: *)", self.size));
                }
                let body = aws_sdk_s3::primitives::ByteStream::from_path(self.path)
                    .await
                    .with_context(|| format!("reading {}", self.path.display()))?;
                bucket
                    .put(
                        self.name,
                        body,
                        self.digest,
                        self.metadata,
                        &Precondition::Absent,
                    )
                    .await
            }
            Plan::Multipart(parts) => self.send_parts(bucket, &parts, verbose, transfer).await,
        }
    }

    async fn send_parts(
        &self,
        bucket: &Bucket,
        parts: &[Part],
        verbose: bool,
        mut transfer: Option<&mut Transfer>,
    ) -> anyhow::Result<Written> {
        let key = bucket.key(self.name);
        let size = self.size;
        if verbose {
            detail(format!(
                "multipart upload of {key}: {} parts of {} bytes",
                parts.len(),
                parts[0].length
            ));
        }
        let mut sent = 0u64;
        bucket
            .put_multipart(self.name, self.path, parts, self.metadata, 4, |length| {
                sent += length;
                if verbose {
                    detail(format!("{key}: part of {length} bytes done, {sent}/{size}"));
                }
                if let Some(transfer) = transfer.as_deref_mut() {
                    transfer.set_position(sent);
                }
            })
            .await
    }
}

fn same_or_refuse(
    bucket: &Bucket,
    name: &str,
    remote: &Digest,
    local: &Digest,
) -> anyhow::Result<Put> {
    if remote == local {
        detail(format!(
            "{name}: already published with the same sha256, skipped"
        ));
        Ok(Put::AlreadyPublished)
    } else {
        bail!("{}", refusal(bucket, name, remote, local))
    }
}
