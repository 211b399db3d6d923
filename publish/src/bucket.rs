//! The bucket, through the S3 API as Cloudflare R2 speaks it: where it is and with which keys,
//! and the few operations publishing needs, each with the precondition that keeps it safe.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls;
use sha2::{Digest as _, Sha256};

use crate::multipart::Part;
use xtask::util::checksums::{Digest, BUFFER_SIZE};
use xtask::util::progress::detail;
use xtask::util::retry::Backoff;

/// Where the bucket is and how to sign requests. Holds the secret key: no `Debug`, never printed.
pub struct Settings {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    /// Which variables the keys came from, to say so in messages.
    pub credentials_from: &'static str,
    credentials: Credentials,
}

/// One access key pair as the environment gives it (either half may be missing).
#[derive(Default)]
pub struct KeyPair {
    pub id: Option<String>,
    pub secret: Option<String>,
}

/// Where the bucket is and with which keys, as given (flags already preferred over the
/// environment by the command line). Holds secrets: no `Debug`.
#[derive(Default)]
pub struct Given {
    /// `--endpoint` or `R2_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `R2_ACCOUNT_ID`: the endpoint when none is given.
    pub account_id: Option<String>,
    /// `--bucket` or `R2_BUCKET`.
    pub bucket: Option<String>,
    /// `--prefix`: a folder inside the bucket.
    pub prefix: Option<String>,
    /// `R2_ACCESS_KEY_ID` and `R2_SECRET_ACCESS_KEY`.
    pub r2_keys: KeyPair,
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, when the R2 pair is not whole.
    pub aws_keys: KeyPair,
}

/// A setting with its blanks trimmed; blank counts as missing.
fn given(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The bucket settings, with everything missing named in one error, before anything is sent.
pub fn settings(given_settings: Given) -> anyhow::Result<Settings> {
    let Given {
        endpoint,
        account_id,
        bucket,
        prefix,
        r2_keys,
        aws_keys,
    } = given_settings;
    let mut missing = Vec::new();
    let endpoint = given(endpoint)
        .or_else(|| given(account_id).map(|id| format!("https://{id}.r2.cloudflarestorage.com")));
    if endpoint.is_none() {
        missing.push("the endpoint: --endpoint URL, R2_ENDPOINT, or R2_ACCOUNT_ID");
    }
    let bucket = given(bucket);
    if bucket.is_none() {
        missing.push("the bucket: --bucket NAME or R2_BUCKET");
    }
    // Both keys from one pair of variables: never an R2 id with an AWS secret.
    let whole =
        |pair: KeyPair, from: &'static str| Some((given(pair.id)?, given(pair.secret)?, from));
    let credentials = whole(r2_keys, "R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY")
        .or_else(|| whole(aws_keys, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"));
    if credentials.is_none() {
        missing.push(
            "credentials: R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        );
    }
    let (Some(endpoint), Some(bucket), Some((id, secret, credentials_from))) =
        (endpoint, bucket, credentials)
    else {
        bail!(
            "cannot publish without {}. Set them in the environment (an R2 API token with Object Read & Write on the bucket gives the keys); nothing was uploaded",
            missing.join("; ")
        );
    };
    xtask::util::http::check_url(&endpoint).context("the bucket endpoint")?;
    if bucket.contains('/') {
        bail!("bucket name {bucket:?} contains '/': give the bucket with --bucket and any folder with --prefix");
    }
    Ok(Settings {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        bucket,
        prefix: normalize_prefix(prefix.as_deref().unwrap_or("")),
        credentials_from,
        credentials: Credentials::new(id, secret, None, None, "environment"),
    })
}

impl Settings {
    /// The same bucket, with `folder` (`""` or `rc/`) added to the prefix.
    pub fn in_folder(mut self, folder: &str) -> Settings {
        self.prefix = normalize_prefix(&format!("{}{folder}", self.prefix));
        self
    }
}

/// `a/b/` from `/a/b`, `a/b/` or `a//b`; empty stays empty.
pub fn normalize_prefix(prefix: &str) -> String {
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("{}/", parts.join("/"))
    }
}

/// How an object is served: its Content-Type and Cache-Control.
#[derive(Clone, Copy, Debug)]
pub struct Metadata {
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

/// Versioned objects never change: cache them for a year.
pub const IMAGE: Metadata = Metadata {
    content_type: "application/octet-stream",
    cache_control: "public, max-age=31536000, immutable",
};
pub const CHECKSUM: Metadata = Metadata {
    content_type: "text/plain; charset=utf-8",
    cache_control: "public, max-age=31536000, immutable",
};
/// The index changes with every release: readers should see a new one within a minute.
pub const INDEX: Metadata = Metadata {
    content_type: "text/plain; charset=utf-8",
    cache_control: "public, max-age=60",
};

/// The signature of the index changes with it.
pub const SIGNATURE: Metadata = Metadata {
    content_type: "application/pgp-signature",
    cache_control: INDEX.cache_control,
};

/// The page people read (`index.html`) and its data for scripts (`index.json`): rewritten with
/// every release, like the index.
pub const PAGE_HTML: Metadata = Metadata {
    content_type: "text/html; charset=utf-8",
    cache_control: INDEX.cache_control,
};
pub const PAGE_JSON: Metadata = Metadata {
    content_type: "application/json",
    cache_control: INDEX.cache_control,
};

/// An object directly in the bucket's folder, as a listing gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The key without the folder's prefix.
    pub name: String,
    pub size: u64,
    /// When it was written (RFC 3339, to the second, UTC); for a versioned object, when it
    /// was published, since it is never written again.
    pub last_modified: Option<String>,
}

/// A listing of more pages than this (1000 keys each) is not this project's bucket folder.
const MAX_LIST_PAGES: usize = 100;

/// What a conditional write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// 412: the precondition failed (the key exists, or its ETag changed).
    PreconditionFailed,
}

/// The precondition of a write.
pub enum Precondition {
    /// Create only: `If-None-Match: *`.
    Absent,
    /// Replace only this version: `If-Match: <etag>`.
    Matches(String),
}

impl Precondition {
    /// The header that carries it, as verbose output shows it.
    pub fn header(&self) -> String {
        match self {
            Precondition::Absent => "If-None-Match: *".to_string(),
            Precondition::Matches(etag) => format!("If-Match: {etag}"),
        }
    }
}

/// How many times a conditional write (the index, its signature, the page) is tried while
/// other publishers keep winning.
pub const CONDITIONAL_ATTEMPTS: u32 = 10;

/// The waits between attempts at a conditional write that another publisher won: backing off
/// from 100 ms to 5 s, with jitter, so that two racing publishers part.
pub struct Contention(Backoff);

impl Contention {
    pub fn new() -> Contention {
        Contention(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
        ))
    }

    /// Says that `what` changed under us on `attempt`, and waits before `doing` it again.
    pub async fn wait(&mut self, what: &str, doing: &str, attempt: u32) {
        let wait = self.0.next_wait();
        detail(format!(
            "{what} changed under us (another publisher?); {doing} again in {wait:?} (attempt {attempt} of {CONDITIONAL_ATTEMPTS})"
        ));
        tokio::time::sleep(wait).await;
    }
}

pub struct Bucket {
    client: aws_sdk_s3::Client,
    pub name: String,
    pub prefix: String,
    pub endpoint: String,
}

/// The digest as S3's `x-amz-checksum-sha256` wants it: standard base64.
fn base64_digest(digest: &Digest) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(digest.0)
}

/// Turns an SDK error into one that says what failed and what to do about 403 and 404.
fn explain<E>(error: SdkError<E, HttpResponse>, what: &str, bucket: &Bucket) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().map(str::to_string);
    match (status, code.as_deref()) {
        (_, Some("NoSuchBucket")) => anyhow!(
            "{what}: the server answered 404 NoSuchBucket: there is no bucket {:?} at {}. Check --bucket / R2_BUCKET and the endpoint",
            bucket.name,
            bucket.endpoint
        ),
        (Some(403), _) | (_, Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch")) => anyhow!(
            "{what}: the server answered 403 {}: access denied to bucket {:?}. Check the access key and secret, and that the API token may read and write this bucket",
            code.as_deref().unwrap_or("Forbidden"),
            bucket.name
        ),
        (_, Some("BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest")) => anyhow!(
            "{what}: the server answered {}: the bytes it received do not have the SHA-256 we sent (corrupted on the way), so it stored nothing. Check the network and run publish again",
            code.as_deref().unwrap_or("BadDigest")
        ),
        (Some(404), _) => anyhow!(
            "{what}: the server answered 404 {}: check the bucket {:?} and the endpoint {}",
            code.as_deref().unwrap_or("Not Found"),
            bucket.name,
            bucket.endpoint
        ),
        _ => anyhow!("{what}: {}", one_line(&error)),
    }
}

/// Any SDK error in one readable line: the status, code and message the server gave, or why
/// there was no answer; and what to do. Never the SDK's multi-line debug dump.
pub fn one_line<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let said = [error.code(), error.message()]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let said = flatten(&said, 200).trim_end_matches('.').to_string();
    match (error, status) {
        (SdkError::TimeoutError(_), _) => {
            "the server did not answer in time. Check the endpoint and the network, then run publish again".to_string()
        }
        (SdkError::DispatchFailure(_), _) | (_, None) => format!(
            "no answer from the server ({}). Check the endpoint and the network, then run publish again",
            flatten(&causes(error), 200)
        ),
        (_, Some(status)) => {
            let said = if said.is_empty() { String::new() } else { format!(" {said}") };
            let advice = if status >= 500 {
                "The storage service failed or is overloaded: wait a little and run publish again"
            } else {
                "Check the endpoint, the bucket and the token's permissions"
            };
            format!("the server answered {status}{said}. {advice}")
        }
    }
}

/// The error and its sources, as one `a: b: c` line.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// `text` on one line (whitespace runs become one space), at most `max` characters.
fn flatten(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

fn is_status<E>(error: &SdkError<E, HttpResponse>, status: u16) -> bool {
    error.raw_response().map(|r| r.status().as_u16()) == Some(status)
}

/// 412: the write's precondition failed (the key exists, or its ETag changed).
fn is_precondition_failed<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    is_status(error, 412) || error.code() == Some("PreconditionFailed")
}

fn is_no_such_key<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    // A HEAD answer has no body: the SDK calls its 404 `NotFound`.
    error.code() == Some("NoSuchKey")
        || (is_status(error, 404) && matches!(error.code(), None | Some("NotFound")))
}

impl Bucket {
    pub fn new(settings: &Settings) -> Bucket {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("auto"))
            .endpoint_url(&settings.endpoint)
            .force_path_style(true)
            .credentials_provider(settings.credentials.clone())
            .http_client(http_client)
            // R2 rejects the SDK's default CRC32 trailers; we send our own SHA-256 instead.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(30))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            )
            .build();
        Bucket {
            client: aws_sdk_s3::Client::from_conf(config),
            name: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            endpoint: settings.endpoint.clone(),
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Where `name` is, as messages name it: `s3://<bucket>/<prefix><name>`.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.name, self.key(name))
    }

    /// Fails with a clear message when the bucket does not exist. A 403 here is let through:
    /// tokens limited to objects may not be allowed to ask, and the first object request
    /// reports a real access problem.
    pub async fn check_exists(&self) -> anyhow::Result<()> {
        match self.client.head_bucket().bucket(&self.name).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 403) => Ok(()),
            Err(e) if is_status(&e, 404) => bail!(
                "checking bucket {:?}: the server answered 404 NoSuchBucket: there is no bucket {:?} at {}. Check --bucket / R2_BUCKET and the endpoint",
                self.name,
                self.name,
                self.endpoint
            ),
            Err(e) => Err(explain(e, &format!("checking bucket {:?}", self.name), self)),
        }
    }

    /// A small object's text and ETag, or `None` when there is no such key.
    pub async fn get_text(
        &self,
        name: &str,
        limit: u64,
    ) -> anyhow::Result<Option<(String, String)>> {
        let Some((bytes, etag)) = self.get_bytes(name, limit).await? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("reading {}: it is not UTF-8 text", self.url(name)))?;
        Ok(Some((text, etag)))
    }

    /// The answer to a GET of `name` (body not read yet) and a description for messages, or
    /// `None` when there is no such key.
    async fn get_object(
        &self,
        name: &str,
    ) -> anyhow::Result<Option<(aws_sdk_s3::operation::get_object::GetObjectOutput, String)>> {
        let key = self.key(name);
        let what = format!("reading {}", self.url(name));
        match self
            .client
            .get_object()
            .bucket(&self.name)
            .key(&key)
            .send()
            .await
        {
            Ok(output) => Ok(Some((output, what))),
            Err(e) if is_no_such_key(&e) => Ok(None),
            Err(e) => Err(explain(e, &what, self)),
        }
    }

    /// A small object's bytes and ETag, or `None` when there is no such key.
    pub async fn get_bytes(
        &self,
        name: &str,
        limit: u64,
    ) -> anyhow::Result<Option<(Vec<u8>, String)>> {
        let Some((output, what)) = self.get_object(name).await? else {
            return Ok(None);
        };
        let too_large = || {
            anyhow!("{what}: it is larger than {limit} bytes, which is not what we wrote there; stopped reading it. Look at what replaced it in the bucket")
        };
        if output
            .content_length()
            .is_some_and(|len| len as u64 > limit)
        {
            return Err(too_large());
        }
        let etag = output
            .e_tag()
            .map(str::to_string)
            .with_context(|| format!("{what}: the server sent no ETag"))?;
        // Bounded whether or not a Content-Length came: stop at the first byte past the limit.
        let mut bytes = Vec::new();
        let mut body = output.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .with_context(|| format!("{what}: the body broke off after {} bytes", bytes.len()))?
        {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((bytes, etag)))
    }

    /// The SHA-256 and size of an object, hashed as it streams by, or `None` when there is none.
    /// An object over `limit` bytes (the size of the file it should equal) cannot be that file:
    /// reading stops there, with an error, whether or not a Content-Length came.
    pub async fn digest_of(&self, name: &str, limit: u64) -> anyhow::Result<Option<(Digest, u64)>> {
        let Some((mut output, what)) = self.get_object(name).await? else {
            return Ok(None);
        };
        let too_large = || {
            anyhow!("{what}: it holds more than {limit} bytes, so it is not the {limit}-byte file being published; stopped reading it. Look at what is in the bucket under that name")
        };
        if output
            .content_length()
            .is_some_and(|len| len as u64 > limit)
        {
            return Err(too_large());
        }
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = output
            .body
            .try_next()
            .await
            .with_context(|| format!("{what}: the body broke off after {size} bytes"))?
        {
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large());
            }
            hasher.update(&chunk);
        }
        Ok(Some((Digest(hasher.finalize().into()), size)))
    }

    /// The objects directly in the folder (not those of a subfolder such as `rc/`), every
    /// page of the listing.
    pub async fn list(&self) -> anyhow::Result<Vec<Listed>> {
        let what = format!("listing s3://{}/{}", self.name, self.prefix);
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let output = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(&self.prefix)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| explain(e, &what, self))?;
            for object in output.contents() {
                let Some(name) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                listed.push(Listed {
                    name: name.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object.last_modified().and_then(|t| {
                        DateTime::from_secs(t.secs())
                            .fmt(DateTimeFormat::DateTime)
                            .ok()
                    }),
                });
            }
            match output.next_continuation_token() {
                Some(next) if output.is_truncated() == Some(true) => token = Some(next.into()),
                _ => return Ok(listed),
            }
        }
        bail!("{what}: still more after {MAX_LIST_PAGES} pages, which is not this project's folder; check --prefix")
    }

    /// The size the server reports for an object, or `None` when there is none.
    pub async fn size_of(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let key = self.key(name);
        match self
            .client
            .head_object()
            .bucket(&self.name)
            .key(&key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(output.content_length().unwrap_or(0) as u64)),
            Err(e) if is_no_such_key(&e) => Ok(None),
            Err(e) => Err(explain(e, &format!("checking {}", self.url(name)), self)),
        }
    }

    /// One conditional PUT of `body`, whose SHA-256 the server checks before storing anything.
    pub async fn put(
        &self,
        name: &str,
        body: ByteStream,
        digest: &Digest,
        metadata: Metadata,
        precondition: &Precondition,
    ) -> anyhow::Result<Written> {
        let key = self.key(name);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(&key)
            .body(body)
            .checksum_sha256(base64_digest(digest))
            .content_type(metadata.content_type)
            .cache_control(metadata.cache_control);
        request = match precondition {
            Precondition::Absent => request.if_none_match("*"),
            Precondition::Matches(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(_) => Ok(Written::Done),
            Err(e) if is_precondition_failed(&e) => Ok(Written::PreconditionFailed),
            Err(e) => Err(explain(e, &format!("uploading {}", self.url(name)), self)),
        }
    }

    /// Uploads a file in `parts`, several at once, and completes the upload create-only.
    /// On any failure, or when the key turned out to exist, the upload is aborted so that no
    /// parts are left behind. `on_part` hears of each part done (its length).
    pub async fn put_multipart(
        &self,
        name: &str,
        path: &Path,
        parts: &[Part],
        metadata: Metadata,
        concurrency: usize,
        mut on_part: impl FnMut(u64),
    ) -> anyhow::Result<Written> {
        let key = self.key(name);
        let what = format!("uploading {} in {} parts", self.url(name), parts.len());
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(&key)
            .content_type(metadata.content_type)
            .cache_control(metadata.cache_control)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(|e| explain(e, &what, self))?;
        let upload_id = created
            .upload_id()
            .with_context(|| format!("{what}: the server gave no upload id"))?
            .to_string();

        let result = self
            .upload_parts_and_complete(&key, &upload_id, path, parts, concurrency, &mut on_part)
            .await
            .with_context(|| what.clone());
        if !matches!(result, Ok(Written::Done)) {
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.name)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                xtask::util::progress::detail(format!(
                    "could not abort multipart upload {upload_id} of {key} ({}); the bucket's lifecycle rules will remove its parts",
                    one_line(&e)
                ));
            }
        }
        result
    }

    async fn upload_parts_and_complete(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        parts: &[Part],
        concurrency: usize,
        on_part: &mut impl FnMut(u64),
    ) -> anyhow::Result<Written> {
        let mut running = tokio::task::JoinSet::new();
        let mut done: Vec<CompletedPart> = Vec::with_capacity(parts.len());
        let mut pending = parts.iter().copied();
        loop {
            while running.len() < concurrency.max(1) {
                let Some(part) = pending.next() else { break };
                running.spawn(upload_part(
                    self.client.clone(),
                    self.name.clone(),
                    key.to_string(),
                    upload_id.to_string(),
                    path.to_path_buf(),
                    part,
                ));
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (completed, length) = match joined {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    running.abort_all();
                    return Err(e);
                }
                Err(e) => {
                    running.abort_all();
                    return Err(anyhow!("a part upload task failed: {e}"));
                }
            };
            done.push(completed);
            on_part(length);
        }
        done.sort_by_key(|p| p.part_number());
        let completion = self
            .client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .if_none_match("*")
            .send()
            .await;
        match completion {
            Ok(_) => Ok(Written::Done),
            Err(e) if is_precondition_failed(&e) => Ok(Written::PreconditionFailed),
            Err(e) => Err(explain(e, "completing the multipart upload", self)),
        }
    }
}

/// Hashes a byte range of a file.
fn hash_range(path: &Path, offset: u64, length: u64) -> std::io::Result<Digest> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = file.take(length);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BUFFER_SIZE];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        read += n as u64;
    }
    if read != length {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} ended at byte {}", path.display(), offset + read),
        ));
    }
    Ok(Digest(hasher.finalize().into()))
}

/// One part: hashed first, so that the server refuses it if a byte changes on the way.
async fn upload_part(
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    path: PathBuf,
    part: Part,
) -> anyhow::Result<(CompletedPart, u64)> {
    let what = format!(
        "part {} (bytes {}..{}) of {}",
        part.number,
        part.offset,
        part.offset + part.length,
        path.display()
    );
    let hash_path = path.clone();
    let digest =
        tokio::task::spawn_blocking(move || hash_range(&hash_path, part.offset, part.length))
            .await
            .map_err(|e| anyhow!("hashing {what}: {e}"))?
            .with_context(|| format!("reading {what}"))?;
    let checksum = base64_digest(&digest);
    let body = ByteStream::read_from()
        .path(&path)
        .offset(part.offset)
        .length(Length::Exact(part.length))
        .buffer_size(BUFFER_SIZE)
        .build()
        .await
        .with_context(|| format!("reading {what}"))?;
    let output = client
        .upload_part()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&upload_id)
        .part_number(part.number)
        .content_length(part.length as i64)
        .checksum_sha256(&checksum)
        .body(body)
        .send()
        .await
        .map_err(|e| anyhow!("uploading {what}: {}", one_line(&e)))?;
    let etag = output
        .e_tag()
        .with_context(|| format!("uploading {what}: the server sent no ETag"))?;
    Ok((
        CompletedPart::builder()
            .part_number(part.number)
            .e_tag(etag)
            .checksum_sha256(checksum)
            .build(),
        part.length,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn some(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    fn pair(id: &str, secret: &str) -> KeyPair {
        KeyPair {
            id: some(id),
            secret: some(secret),
        }
    }

    /// An endpoint, a bucket and an R2 key pair.
    fn complete() -> Given {
        Given {
            endpoint: some("https://r2.example"),
            bucket: some("images"),
            r2_keys: pair("id", SECRET),
            ..Given::default()
        }
    }

    #[test]
    fn everything_missing_is_named_in_one_error_without_secrets() {
        let only_a_secret = Given {
            r2_keys: KeyPair {
                id: None,
                secret: some(SECRET),
            },
            ..Given::default()
        };
        let err = settings(only_a_secret).err().unwrap().to_string();
        for needle in [
            "--endpoint",
            "R2_ACCOUNT_ID",
            "R2_BUCKET",
            "R2_ACCESS_KEY_ID",
        ] {
            assert!(err.contains(needle), "{err}");
        }
        assert!(!err.contains(SECRET), "{err}");
    }

    #[test]
    fn the_endpoint_comes_from_the_account_id_and_keys_fall_back_to_aws() {
        let s = settings(Given {
            account_id: some("abc123"),
            bucket: some("images"),
            prefix: some("/sysext//alloy/"),
            aws_keys: pair("id", SECRET),
            r2_keys: KeyPair {
                id: some("only-an-id"),
                secret: some("  "),
            },
            ..Given::default()
        })
        .unwrap();
        assert_eq!(s.endpoint, "https://abc123.r2.cloudflarestorage.com");
        assert_eq!(s.bucket, "images");
        assert_eq!(s.prefix, "sysext/alloy/");
        assert_eq!(
            s.credentials_from,
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
        assert!(!format!("{:?}", s.credentials).contains(SECRET));
    }

    #[test]
    fn the_endpoint_wins_over_the_account_id_and_plain_http_is_for_loopback_only() {
        let s = settings(Given {
            endpoint: some("http://127.0.0.1:9000/"),
            account_id: some("abc123"),
            ..complete()
        })
        .unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:9000");
        assert_eq!(s.bucket, "images");
        assert_eq!(s.prefix, "");
        let err = settings(Given {
            endpoint: some("http://r2.example"),
            ..complete()
        })
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").contains("refusing plain http://"),
            "{err:#}"
        );
    }

    #[test]
    fn part_checksums_are_base64_of_the_digest() {
        // sha256("") in base64, as S3 documents it.
        assert_eq!(
            base64_digest(&xtask::util::checksums::hash_bytes(b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn byte_ranges_hash_like_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        assert_eq!(
            hash_range(&path, 6, 5).unwrap(),
            xtask::util::checksums::hash_bytes(b"world")
        );
        assert!(hash_range(&path, 6, 6).is_err());
    }

    fn service_error(
        status: u16,
        code: &str,
        message: &str,
    ) -> SdkError<aws_sdk_s3::operation::get_object::GetObjectError, HttpResponse> {
        let meta = aws_sdk_s3::error::ErrorMetadata::builder()
            .code(code)
            .message(message)
            .build();
        SdkError::service_error(
            aws_sdk_s3::operation::get_object::GetObjectError::generic(meta),
            HttpResponse::new(
                status.try_into().unwrap(),
                aws_sdk_s3::primitives::SdkBody::from("<Error>...</Error>"),
            ),
        )
    }

    #[test]
    fn sdk_errors_are_one_readable_line_with_what_to_do() {
        let line = one_line(&service_error(
            503,
            "SlowDown",
            "Please reduce\n your request rate.",
        ));
        assert_eq!(
            line,
            "the server answered 503 SlowDown: Please reduce your request rate. The storage service failed or is overloaded: wait a little and run publish again"
        );
        let line = one_line(&service_error(400, "InvalidArgument", "bad"));
        assert!(
            line.starts_with("the server answered 400 InvalidArgument: bad. Check the endpoint"),
            "{line}"
        );

        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error: SdkError<aws_sdk_s3::operation::get_object::GetObjectError, HttpResponse> =
            SdkError::dispatch_failure(aws_sdk_s3::error::ConnectorError::io(refused.into()));
        let line = one_line(&error);
        assert!(line.starts_with("no answer from the server ("), "{line}");
        assert!(line.contains("connection refused"), "{line}");
        assert!(line.ends_with("then run publish again"), "{line}");
        // What the SDK's own display prints is longer and has no advice.
        for line in [
            line,
            one_line(&service_error(500, "InternalError", &"x".repeat(1000))),
        ] {
            assert!(!line.contains('\n') && line.len() < 400, "{line}");
        }
    }

    #[test]
    fn explain_says_a_5xx_in_one_line() {
        let s = settings(complete()).unwrap();
        let bucket = Bucket::new(&s);
        let error = explain(
            service_error(500, "InternalError", "We encountered an internal error."),
            "reading s3://images/SHA256SUMS",
            &bucket,
        );
        assert_eq!(
            format!("{error:#}"),
            "reading s3://images/SHA256SUMS: the server answered 500 InternalError: We encountered an internal error. The storage service failed or is overloaded: wait a little and run publish again"
        );
    }

    #[test]
    fn flatten_makes_one_short_line() {
        assert_eq!(flatten("a\n  b\tc ", 10), "a b c");
        assert_eq!(flatten("abcdef", 3), "abc...");
    }
}
