//! HTTP downloads that survive a flaky network: timeouts, retries with backoff on connection
//! errors, 5xx answers and bodies cut short, resuming with a Range request where the server
//! allows. Bodies are streamed to disk and hashed on the way; nothing large is held in memory.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ureq::http::{StatusCode, Uri};

use super::awake::Awake;
use super::checksums::{self, Digest, HashingWriter, BUFFER_SIZE};
use super::progress::Transfer;
use super::retry::Backoff;

/// The server said 404: the thing does not exist at that URL. Never retried.
#[derive(Debug)]
pub struct NotFound {
    pub url: String,
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} answered 404 Not Found", self.url)
    }
}

impl std::error::Error for NotFound {}

/// Refuses plain `http://` except to loopback hosts: release bytes are only verified against a
/// checksum fetched over the same channel, so the channel must be authenticated.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let shown = shown_url(url);
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{shown:?} is not a valid URL"))?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => bail!(
            "refusing plain http:// to {:?} in {shown}: use https://, or a loopback address (127.0.0.1, localhost, [::1]) for a local mirror",
            shown_url(host)
        ),
        _ => bail!("{shown:?} is not an https:// URL"),
    }
}

/// How much of a URL a message shows: one a server sent (a redirect's Location, a `Link`
/// header) may be tens of KiB, and errors stay short.
const SHOWN_URL: usize = 200;

/// `url` for a message: whole when short, else its start and how long it is.
pub fn shown_url(url: &str) -> String {
    if url.chars().count() <= SHOWN_URL {
        return url.to_string();
    }
    let start: String = url.chars().take(SHOWN_URL).collect();
    format!("{start}... ({} bytes in all)", url.len())
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Where a redirect may lead: the policy of [`check_url`] on the new URL, and never from https
/// down to plain http (not even to loopback).
pub fn check_redirect(from: &str, to: &str) -> anyhow::Result<()> {
    let (from, to_shown) = (shown_url(from), shown_url(to));
    if from.starts_with("https://") && !to.starts_with("https://") {
        bail!(
            "refusing the redirect from {from} to {to_shown}: https never downgrades to plain http"
        );
    }
    check_url(to).with_context(|| format!("refusing the redirect from {from} to {to_shown}"))
}

/// The absolute URL a `Location` header names, relative to `base` (RFC 3986, for the forms
/// servers send: absolute, `//host/path`, `/path`, `path`).
pub fn resolve_location(base: &str, location: &str) -> anyhow::Result<String> {
    let location = location.trim();
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let uri: Uri = base
        .parse()
        .with_context(|| format!("{base:?} is not a valid URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        bail!("{base:?} is not an absolute URL");
    };
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let dir = uri.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    Ok(format!("{scheme}://{authority}{dir}/{location}"))
}

/// Scheme, host and port: where credentials may be sent again after a redirect.
fn origin(url: &str) -> Option<(String, String, Option<u16>)> {
    let uri: Uri = url.parse().ok()?;
    Some((
        uri.scheme_str()?.to_string(),
        uri.host()?.to_ascii_lowercase(),
        uri.port_u16(),
    ))
}

/// START, END and TOTAL of a 206 answer's `Content-Range: bytes START-END/TOTAL` (or
/// `/*`). `None` when the header is missing or malformed.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse::<u64>().ok()?),
    };
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, end, total))
}

/// Whether a failure is worth another try.
enum Failure {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

/// Ceiling for release zips and images: far above Alloy's ~420 MB binary, far below a disk.
pub const DEFAULT_MAX_DOWNLOAD: u64 = 2 << 30;
/// Ceiling for checksum files and signatures, which are a few lines.
pub const SMALL_FILE_LIMIT: u64 = 4 << 20;
/// A transfer averaging under this many bytes per second over [`PROGRESS_WINDOW_MS`] is abandoned.
pub const MIN_BYTES_PER_SEC: u64 = 1024;
pub const PROGRESS_WINDOW_MS: u64 = 60_000;

/// How much a transfer may bring, and how slowly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes a release zip or an image may have; an endless body is cut here.
    pub max_download: u64,
    /// A transfer bringing fewer bytes per second than this, averaged over `window`, is abandoned.
    pub min_bytes_per_sec: u64,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_download: DEFAULT_MAX_DOWNLOAD,
            min_bytes_per_sec: MIN_BYTES_PER_SEC,
            window: Duration::from_millis(PROGRESS_WINDOW_MS),
        }
    }
}

/// `2147483648`, `2GiB`, `512MiB`, `64KiB` (also `G`, `M`, `K`): a size in bytes.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => bail!("{text:?} is not a size: give bytes, or a number with KiB, MiB or GiB"),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .with_context(|| {
            format!("{text:?} is not a size: give bytes, or a number with KiB, MiB or GiB")
        })
}

/// Redirects followed before giving up (each hop checked with [`check_redirect`]).
const MAX_REDIRECTS: u32 = 10;

pub struct Http {
    agent: ureq::Agent,
    attempts: u32,
    first_backoff: Duration,
    limits: Limits,
}

impl Default for Http {
    fn default() -> Http {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are followed by `get_with`, which checks every hop's URL.
            .max_redirects(0)
            .timeout_resolve(Some(Duration::from_secs(30)))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(limits.window))
            // A read that brings nothing for a whole window fails; `pump` judges slow ones.
            .timeout_per_read(Some(limits.window))
            .user_agent(concat!("alloy-sysext/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.into(),
            attempts: 6,
            first_backoff: Duration::from_millis(250),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn with_retries<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut(u32) -> Result<T, Failure>,
        mut on_retry: impl FnMut(&anyhow::Error, Duration),
    ) -> anyhow::Result<T> {
        let mut backoff = Backoff::new(self.first_backoff, Duration::from_secs(10));
        let mut last_error = None;
        for number in 1..=self.attempts {
            match attempt(number) {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry(error)) => {
                    if number < self.attempts {
                        let wait = backoff.next_wait();
                        on_retry(&error, wait);
                        super::interrupt::while_waiting(|| std::thread::sleep(wait));
                    }
                    last_error = Some(error);
                }
            }
        }
        let error = last_error.unwrap_or_else(|| anyhow!("no attempt made"));
        Err(error.context(format!(
            "giving up on {url} after {} attempts",
            self.attempts
        )))
    }

    /// Sends a GET (with a Range header when `from` > 0) and sorts the answer.
    fn get(&self, url: &str, from: u64) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        self.get_with(url, from, &[])
    }

    /// [`Http::get`] with extra request headers (values may be secret: they are never shown,
    /// and `Authorization` is not sent on to another origin). Follows redirects itself, checking
    /// each hop before connecting to it.
    fn get_with(
        &self,
        url: &str,
        from: u64,
        headers: &[(&str, &str)],
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        check_url(url).map_err(Failure::Fatal)?;
        let first_origin = origin(url);
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let same_origin = origin(&current) == first_origin;
            let mut request = self.agent.get(&current);
            for (name, value) in headers {
                if same_origin || !name.eq_ignore_ascii_case("authorization") {
                    request = request.header(*name, *value);
                }
            }
            if from > 0 {
                request = request.header("Range", format!("bytes={from}-"));
            }
            let response =
                super::interrupt::while_waiting(|| request.call()).map_err(|e| match e {
                    ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::HostNotFound
                    | ureq::Error::ConnectionFailed => {
                        let shown = shown_url(&current);
                        Failure::Retry(anyhow!(e).context(format!("requesting {shown}")))
                    }
                    other => Failure::Fatal(
                        anyhow!(other).context(format!("requesting {}", shown_url(&current))),
                    ),
                })?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        Failure::Fatal(anyhow!(
                            "{} answered {status} without a usable Location",
                            shown_url(&current)
                        ))
                    })?;
                let next = resolve_location(&current, location).map_err(Failure::Fatal)?;
                check_redirect(&current, &next).map_err(Failure::Fatal)?;
                current = next;
                continue;
            }
            return if status.is_success() {
                Ok(response)
            } else if status == StatusCode::NOT_FOUND {
                Err(Failure::Fatal(
                    NotFound {
                        url: url.to_string(),
                    }
                    .into(),
                ))
            } else if status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
            {
                Err(Failure::Retry(anyhow!("{url} answered {status}")))
            } else {
                Err(Failure::Fatal(anyhow!("{url} answered {status}")))
            };
        }
        Err(Failure::Fatal(anyhow!(
            "{url} redirected more than {MAX_REDIRECTS} times; refusing to follow further"
        )))
    }

    /// Reads `body` to its end into `sink`, counting from `done` bytes already had: at most
    /// `ceiling` bytes in all. A transfer that averages fewer than `min_bytes_per_sec` over a
    /// window, or brings nothing for a window, or breaks, is worth another try, which resumes
    /// from what was had; time the process was stopped does not count ([`Awake`]).
    /// `too_large` words the refusal.
    fn pump(
        &self,
        url: &str,
        body: &mut impl Read,
        mut done: u64,
        ceiling: u64,
        too_large: &dyn Fn(u64) -> anyhow::Error,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<u64, Failure> {
        let Limits {
            min_bytes_per_sec,
            window,
            ..
        } = self.limits;
        let mut buffer = vec![0u8; BUFFER_SIZE];
        let mut window_start = Awake::now();
        let mut window_bytes = 0u64;
        let mut last_byte = Awake::now();
        let stalled = |bytes: u64, seconds: f64, done: u64| {
            Failure::Retry(anyhow!(
                "{url} made no real progress: {bytes} bytes in the last {seconds:.1}s (under {min_bytes_per_sec} bytes/s), after {done} bytes"
            ))
        };
        loop {
            super::interrupt::check().map_err(|stop| Failure::Fatal(stop.into()))?;
            // At most one byte past the ceiling: enough to know it was passed.
            let room = ceiling
                .saturating_add(1)
                .saturating_sub(done)
                .min(buffer.len() as u64) as usize;
            let n = match super::interrupt::while_waiting(|| body.read(&mut buffer[..room.max(1)]))
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A read timeout (the window) while we were stopped (SIGSTOP): the bytes sent
                // meanwhile are waiting in the socket; read on.
                Err(e) if is_timeout(&e) && last_byte.elapsed() < window => continue,
                // Nothing for a whole window of running time: try again from here.
                Err(e) if is_timeout(&e) => {
                    let elapsed = window_start.elapsed().as_secs_f64();
                    return Err(stalled(window_bytes, elapsed, done));
                }
                // The connection broke: try again from here.
                Err(e) => {
                    return Err(Failure::Retry(anyhow!(e).context(format!(
                        "the transfer from {url} broke after {done} bytes"
                    ))))
                }
            };
            if n > 0 {
                last_byte = Awake::now();
            }
            window_bytes = window_bytes.saturating_add(n as u64);
            let elapsed = window_start.elapsed();
            if n > 0 && elapsed >= window {
                let wanted = (min_bytes_per_sec as f64 * elapsed.as_secs_f64()) as u64;
                if window_bytes < wanted {
                    let done = done.saturating_add(n as u64);
                    return Err(stalled(window_bytes, elapsed.as_secs_f64(), done));
                }
                window_start = Awake::now();
                window_bytes = 0;
            }
            if n == 0 {
                return Ok(done);
            }
            let Some(total) = done.checked_add(n as u64).filter(|&t| t <= ceiling) else {
                return Err(Failure::Fatal(too_large(ceiling)));
            };
            sink(&buffer[..n])?;
            done = total;
        }
    }

    /// A small body (checksum file, signature, API page) into memory: at most `limit` bytes,
    /// else a permanent failure.
    fn get_small(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        limit: u64,
    ) -> Result<(Vec<u8>, ureq::http::HeaderMap), Failure> {
        let response = self.get_with(url, 0, headers)?;
        let too_large = |limit: u64| {
            anyhow!("{url} is larger than {limit} bytes, far more than the small file it should be; refusing it. Check that the URL points at the right server")
        };
        if let Some(length) = content_length(&response).filter(|&len| len > limit) {
            return Err(Failure::Fatal(anyhow!(
                "{url} announces {length} bytes (Content-Length), far more than the small file it should be (at most {limit}); refusing it. Check that the URL points at the right server"
            )));
        }
        let response_headers = response.headers().clone();
        let mut reader = response.into_body().into_with_config().reader();
        let mut body = Vec::new();
        self.pump(url, &mut reader, 0, limit, &too_large, &mut |chunk| {
            body.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok((body, response_headers))
    }

    /// Fetches a small text file (such as SHA256SUMS) into memory, at most `limit` bytes.
    /// Too large or not UTF-8 is permanent: not retried.
    pub fn get_text(&self, url: &str, limit: u64) -> anyhow::Result<String> {
        check_url(url)?;
        self.with_retries(
            url,
            |_| {
                let (body, _) = self.get_small(url, &[], limit)?;
                String::from_utf8(body).map_err(|e| {
                    Failure::Fatal(anyhow!(
                        "{url} is not UTF-8 text (invalid byte at offset {}), so not the checksum file it should be; refusing it. Check that the URL points at the right server",
                        e.utf8_error().valid_up_to()
                    ))
                })
            },
            |error, wait| super::progress::detail(format!("{error:#}; retrying in {wait:?}")),
        )
    }

    /// Fetches a small body (at most `limit` bytes) with extra request headers, and returns it
    /// with the response headers (to read `Link:` pagination, for example).
    pub fn get_bytes_with_headers(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        limit: u64,
    ) -> anyhow::Result<(Vec<u8>, ureq::http::HeaderMap)> {
        check_url(url)?;
        self.with_retries(
            url,
            |_| self.get_small(url, headers, limit),
            |error, wait| super::progress::detail(format!("{error:#}; retrying in {wait:?}")),
        )
    }

    /// Streams `url` into `dest` (created or truncated), hashing on the way.
    /// Returns the digest and size of what was written.
    pub fn download(&self, url: &str, dest: &Path, label: &str) -> anyhow::Result<(Digest, u64)> {
        let file = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        self.download_to(url, &file, &dest.display().to_string(), label)
            .and_then(|found| {
                file.sync_all()
                    .with_context(|| format!("writing {}", dest.display()))?;
                Ok(found)
            })
    }

    /// Streams `url` into the open, empty `file` (`shown` in messages), hashing on the way, at
    /// most [`Limits::max_download`] bytes. Returns the digest and size of what was written.
    pub fn download_to(
        &self,
        url: &str,
        file: &File,
        shown: &str,
        label: &str,
    ) -> anyhow::Result<(Digest, u64)> {
        self.stream(url, file, shown, label)
    }

    /// The SHA-256 and size of what `url` serves, hashed as it streams by and kept nowhere (no
    /// copy on disk): for checks that need only the digest. Same limits and retries as
    /// [`Http::download_to`].
    pub fn hash(&self, url: &str, label: &str) -> anyhow::Result<(Digest, u64)> {
        self.stream(url, io::sink(), "nowhere", label)
    }

    /// Streams `url` into `sink` (`shown` in messages), hashing on the way, at most
    /// [`Limits::max_download`] bytes, resuming or starting over as the server allows.
    fn stream<S: Sink>(
        &self,
        url: &str,
        sink: S,
        shown: &str,
        label: &str,
    ) -> anyhow::Result<(Digest, u64)> {
        check_url(url)?;
        let ceiling = self.limits.max_download;
        let mut writer = HashingWriter::new(sink);
        let mut transfer: Option<Transfer> = None;
        // Set when a server answered a Range request with the wrong bytes: ask for all of it.
        let mut ranges_broken = false;
        let too_large = |ceiling: u64| {
            anyhow!(
                "{url} sends more than {ceiling} bytes ({}), more than any release zip or image: refusing it. If it is genuine, raise the ceiling with --max-download-bytes or ALLOY_SYSEXT_MAX_DOWNLOAD",
                super::progress::mib(ceiling)
            )
        };

        let result = self.with_retries(
            url,
            |_| {
                let resume_from = if ranges_broken { 0 } else { writer.written() };
                let response = self.get(url, resume_from)?;
                if let Err((failure, broken)) = check_partial(url, &response, resume_from) {
                    ranges_broken |= broken;
                    return Err(failure);
                }
                if response.status() != StatusCode::PARTIAL_CONTENT && writer.written() > 0 {
                    // 200 (no range support, or we asked for everything): start over.
                    writer
                        .start_over()
                        .truncate()
                        .map_err(|e| Failure::Fatal(e.into()))?;
                }
                let start = writer.written();
                let total = announced_total(url, &response, start, ceiling)?;
                let transfer = transfer.get_or_insert_with(|| Transfer::new(label, total));
                let mut body = response.into_body().into_with_config().reader();
                let pumped = self.pump(url, &mut body, start, ceiling, &too_large, &mut |chunk| {
                    writer.write_all(chunk).map_err(|e| {
                        Failure::Fatal(anyhow!(e).context(format!("writing {shown}")))
                    })?;
                    transfer.set_position(writer.written());
                    Ok(())
                });
                if let Err(Failure::Retry(error)) = &pumped {
                    transfer.interrupted(format!("{error:#}"));
                }
                pumped?;
                if let Some(total) = total {
                    if writer.written() < total {
                        let error = anyhow!(
                            "{url}: body cut short at {} of {total} bytes",
                            writer.written()
                        );
                        transfer.interrupted(&error);
                        return Err(Failure::Retry(error));
                    }
                }
                Ok(())
            },
            |error, wait| super::progress::detail(format!("{error:#}; retrying in {wait:?}")),
        );
        result?;
        let size = writer.written();
        let (_, digest) = writer.finish();
        if let Some(transfer) = transfer {
            transfer.finish(size);
        }
        Ok((digest, size))
    }
}

/// Where a streamed body goes: a file, emptied when a transfer starts over, or nowhere.
trait Sink: Write {
    fn truncate(&mut self) -> io::Result<()>;
}

impl Sink for &File {
    fn truncate(&mut self) -> io::Result<()> {
        self.set_len(0)?;
        self.rewind()
    }
}

impl Sink for io::Sink {
    fn truncate(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a body read failed for its timeout: ureq's own (wrapped in the I/O error), or the
/// socket's.
fn is_timeout(error: &io::Error) -> bool {
    let ureq_timeout = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)));
    ureq_timeout
        || matches!(
            error.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        )
}

/// A 206 must answer a request for a range (from `resume_from` > 0), and hold exactly the bytes
/// asked for: anything else is never appended. `Err` says whether to give up on ranges.
fn check_partial(
    url: &str,
    response: &ureq::http::Response<ureq::Body>,
    resume_from: u64,
) -> Result<(), (Failure, bool)> {
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return Ok(());
    }
    if resume_from == 0 {
        let refused = anyhow!(
            "{url} answered 206 Partial Content to a request for the whole file; refusing it"
        );
        return Err((Failure::Fatal(refused), false));
    }
    let content_range = response
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok());
    let range = content_range.and_then(parse_content_range);
    if range.map(|(start, _, _)| start) == Some(resume_from) {
        return Ok(());
    }
    let said = content_range
        .map(checksums::shown)
        .unwrap_or_else(|| "no Content-Range".into());
    let wrong = anyhow!(
        "{url} answered a request for bytes {resume_from}- with {said}; starting over without a range"
    );
    Err((Failure::Retry(wrong), true))
}

/// The size the answer's Content-Length announces, counting the `start` bytes already had:
/// refused when it is beyond any size or the `ceiling`.
fn announced_total(
    url: &str,
    response: &ureq::http::Response<ureq::Body>,
    start: u64,
    ceiling: u64,
) -> Result<Option<u64>, Failure> {
    let Some(length) = content_length(response) else {
        return Ok(None);
    };
    let Some(total) = length.checked_add(start) else {
        return Err(Failure::Fatal(anyhow!(
            "{url} announces a Content-Length that, after the {start} bytes already had, is beyond any size; refusing it"
        )));
    };
    if total > ceiling {
        return Err(Failure::Fatal(anyhow!(
            "{url} announces {total} bytes (Content-Length), more than the {ceiling}-byte ceiling ({}) for a release zip or image: refusing it. If it is genuine, raise the ceiling with --max-download-bytes or ALLOY_SYSEXT_MAX_DOWNLOAD",
            super::progress::mib(ceiling)
        )));
    }
    Ok(Some(total))
}

fn content_length(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_plain_http_only_on_loopback() {
        assert!(check_url("https://github.com/grafana/alloy/releases/download").is_ok());
        for ok in [
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
            "http://[::1]:9/x",
            "http://127.1.2.3/x",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/x",
            "http://10.0.0.1/x",
            "http://localhost.example.com/x",
        ] {
            let err = check_url(bad).unwrap_err().to_string();
            assert!(err.contains("refusing plain http://"), "{bad}: {err}");
        }
        assert!(check_url("ftp://example.com/x").is_err());
        assert!(check_url("file:///etc/passwd").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn content_range_names_the_first_byte() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range(" bytes 0-0/*"), Some((0, 0, None)));
        for bad in [
            "",
            "bytes */200",
            "bytes 100-99/200",
            "bytes 100-200/200",
            "bytes -5/200",
            "bytes 1-2",
            "items 0-1/2",
            "bytes x-1/2",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let base = "http://127.0.0.1:8/download/v1/a.zip";
        for (location, expected) in [
            ("/objects/a", "http://127.0.0.1:8/objects/a"),
            ("b.zip", "http://127.0.0.1:8/download/v1/b.zip"),
            ("//example.com/x", "http://example.com/x"),
            ("https://cdn.example/x?sig=1", "https://cdn.example/x?sig=1"),
        ] {
            assert_eq!(resolve_location(base, location).unwrap(), expected);
        }
    }

    #[test]
    fn every_hop_keeps_the_url_policy() {
        assert!(check_redirect("http://127.0.0.1:1/a", "http://127.0.0.1:1/b").is_ok());
        assert!(check_redirect("http://127.0.0.1:1/a", "https://cdn.example/b").is_ok());
        assert!(check_redirect("https://github.com/a", "https://objects.example/b").is_ok());
        let err = format!(
            "{:#}",
            check_redirect("http://127.0.0.1:1/a", "http://192.0.2.1/b").unwrap_err()
        );
        assert!(
            err.contains("refusing the redirect from http://127.0.0.1:1/a to http://192.0.2.1/b"),
            "{err}"
        );
        assert!(err.contains("refusing plain http://"), "{err}");
        let err = check_redirect("https://github.com/a", "http://127.0.0.1/b")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https never downgrades"), "{err}");
        assert!(check_redirect("https://github.com/a", "file:///etc/passwd").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("2GiB").unwrap(), DEFAULT_MAX_DOWNLOAD);
        assert_eq!(parse_size("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        for bad in [
            "",
            "0",
            "-1",
            "2GB",
            "1.5GiB",
            "99999999999999999999G",
            "GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
