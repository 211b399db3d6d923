//! HTTP downloads that survive a flaky network: timeouts, retries with backoff on connection
//! errors, 5xx answers and bodies cut short, resuming with a Range request where the server
//! allows. Bodies are streamed to disk and hashed on the way; nothing large is held in memory.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ureq::http::{StatusCode, Uri};

use super::checksums::{Digest, HashingWriter, BUFFER_SIZE};
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
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a valid URL"))?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => bail!(
            "refusing plain http:// to {host:?} in {url}: use https://, or a loopback address (127.0.0.1, localhost, [::1]) for a local mirror"
        ),
        _ => bail!("{url:?} is not an https:// URL"),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Whether a failure is worth another try.
enum Failure {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

pub struct Http {
    agent: ureq::Agent,
    attempts: u32,
    first_backoff: Duration,
}

impl Default for Http {
    fn default() -> Http {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(10)
            .timeout_resolve(Some(Duration::from_secs(30)))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled body fails after a minute without a byte; a slow one may take its time.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("alloy-sysext/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.into(),
            attempts: 6,
            first_backoff: Duration::from_millis(250),
        }
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
                        std::thread::sleep(wait);
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

    /// [`Http::get`] with extra request headers (values may be secret: they are never shown).
    fn get_with(
        &self,
        url: &str,
        from: u64,
        headers: &[(&str, &str)],
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        // Once on https, a redirect must not downgrade to plain http.
        let mut request = self
            .agent
            .get(url)
            .config()
            .https_only(url.starts_with("https://"))
            .build();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if from > 0 {
            request = request.header("Range", format!("bytes={from}-"));
        }
        let response = request.call().map_err(|e| match e {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed => {
                Failure::Retry(anyhow!(e).context(format!("requesting {url}")))
            }
            other => Failure::Fatal(anyhow!(other).context(format!("requesting {url}"))),
        })?;
        let status = response.status();
        if status.is_success() {
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
        }
    }

    /// Fetches a small text file (such as SHA256SUMS) into memory, at most `limit` bytes.
    pub fn get_text(&self, url: &str, limit: u64) -> anyhow::Result<String> {
        check_url(url)?;
        self.with_retries(
            url,
            |_| {
                let response = self.get(url, 0)?;
                let mut text = String::new();
                response
                    .into_body()
                    .into_with_config()
                    .limit(limit)
                    .reader()
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::Retry(anyhow!(e).context(format!("reading {url}"))))?;
                Ok(text)
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
            |_| {
                let response = self.get_with(url, 0, headers)?;
                let response_headers = response.headers().clone();
                let mut body = Vec::new();
                response
                    .into_body()
                    .into_with_config()
                    .limit(limit)
                    .reader()
                    .read_to_end(&mut body)
                    .map_err(|e| Failure::Retry(anyhow!(e).context(format!("reading {url}"))))?;
                Ok((body, response_headers))
            },
            |error, wait| super::progress::detail(format!("{error:#}; retrying in {wait:?}")),
        )
    }

    /// Streams `url` into `dest` (created or truncated), hashing on the way.
    /// Returns the digest and size of what was written.
    pub fn download(&self, url: &str, dest: &Path, label: &str) -> anyhow::Result<(Digest, u64)> {
        check_url(url)?;
        let file = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut writer = HashingWriter::new(file);
        let mut transfer: Option<Transfer> = None;
        let mut buffer = vec![0u8; BUFFER_SIZE];

        let result = self.with_retries(
            url,
            |_| {
                let response = self.get(url, writer.written())?;
                // 206 continues where we were; 200 (no range support) starts over.
                if response.status() != StatusCode::PARTIAL_CONTENT && writer.written() > 0 {
                    let file = writer.start_over();
                    file.set_len(0)
                        .and_then(|_| file.rewind())
                        .map_err(|e| Failure::Fatal(e.into()))?;
                }
                let start = writer.written();
                let total = response
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(|len| len + start);
                let transfer = transfer.get_or_insert_with(|| Transfer::new(label, total));
                let mut body = response.into_body().into_with_config().reader();
                loop {
                    let n = match body.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            let error = anyhow!(e).context(format!(
                                "connection to {url} broke after {} bytes",
                                writer.written()
                            ));
                            transfer.interrupted(format!("{error:#}"));
                            return Err(Failure::Retry(error));
                        }
                    };
                    writer.write_all(&buffer[..n]).map_err(|e| {
                        Failure::Fatal(anyhow!(e).context(format!("writing {}", dest.display())))
                    })?;
                    transfer.set_position(writer.written());
                }
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
        let (file, digest) = writer.finish();
        file.sync_all()
            .with_context(|| format!("writing {}", dest.display()))?;
        if let Some(transfer) = transfer {
            transfer.finish(size);
        }
        Ok((digest, size))
    }
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
}
