//! A release mirror on loopback that behaves like GitHub: `GET /download/v<V>/<asset>` answers
//! with a redirect to `/objects/...`, which serves the bytes (with Range support). Each asset can
//! be told to misbehave.

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};

/// A release the mirror can serve: its version and its assets by name.
pub trait Assets {
    fn version(&self) -> &str;
    fn assets(&self) -> &std::collections::BTreeMap<String, Vec<u8>>;
}

#[derive(Clone, Debug)]
pub enum Fault {
    /// 404 at the download URL.
    NotFound,
    /// This many 500 answers before serving.
    ServerErrors(u32),
    /// The first answer sends half the body and closes the connection.
    CutOnce,
    /// Like CutOnce, and the server ignores Range headers (answers 200 with everything).
    CutOnceNoRanges,
    /// Ignore Range headers from now on.
    NoRanges,
    /// Send half the body, then hang (until the client gives up or is killed).
    Stall,
    /// 200 with a body that never ends (with this Content-Length claimed, or none), until the
    /// client hangs up.
    Endless { claimed_length: Option<u64> },
    /// The whole body, one byte every this many milliseconds.
    Crawl { every_ms: u64 },
    /// Like CutOnce; then every Range request is answered 206 from byte `start` (with an honest
    /// Content-Range), whatever was asked. Requests without a Range are served normally.
    CutOnceThenWrongRange { start: usize },
    /// Every Range request is answered 206 from byte N (what CutOnceThenWrongRange becomes).
    WrongRange(usize),
    /// The download URL redirects here (an absolute URL) instead of to the object.
    RedirectTo(String),
    /// The first answer sends half the body, then nothing for two minutes; later requests are
    /// served normally (Range honoured): a stall that happens once.
    StallOnce,
    /// Like CutOnce; then Range requests are answered 206 from where they ask, with an honest
    /// Content-Range but `Content-Length: 18446744073709551615`.
    CutOnceThenHugeLength,
    /// Range requests answered as CutOnceThenHugeLength answers them.
    HugeLength,
    /// The whole body (or what a Range asks for), `chunk` bytes every `every_ms` milliseconds.
    Throttle { chunk: usize, every_ms: u64 },
    /// Like CutOnce; then Range requests are answered 206 with a `Content-Range` of `length`
    /// bytes of garbage (requests without a Range are served normally).
    CutOnceThenGarbledRange { length: usize },
    /// Range requests answered as CutOnceThenGarbledRange answers them.
    GarbledRange { length: usize },
}

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    /// Assets served from disk as they are (no faults): large ones, that a benchmark serves
    /// without holding them in its own memory.
    on_disk: HashMap<String, std::path::PathBuf>,
    faults: HashMap<String, Fault>,
    log: Vec<Request>,
}

pub struct Mirror {
    pub base_url: String,
    state: Arc<Mutex<State>>,
}

impl Mirror {
    /// A mirror serving `release`.
    pub fn with_release(release: &impl Assets) -> Mirror {
        let mirror = Mirror::start();
        mirror.add_release(release);
        mirror
    }

    /// A mirror serving nothing yet.
    pub fn start() -> Mirror {
        let (address, state) = crate::start(serve);
        let base_url = format!("http://{address}/download");
        Mirror { base_url, state }
    }

    /// Serves every asset of `release` under `v<VERSION>/`.
    pub fn add_release(&self, release: &impl Assets) {
        for (name, bytes) in release.assets() {
            self.add(release.version(), name, bytes.clone());
        }
    }

    /// Serves the file at `path` as `v<VERSION>/<asset>`, streamed from disk on each request.
    pub fn add_file(&self, version: &str, asset: &str, path: &std::path::Path) {
        self.state
            .lock()
            .unwrap()
            .on_disk
            .insert(format!("v{version}/{asset}"), path.to_path_buf());
    }

    /// Serves `bytes` as `v<VERSION>/<asset>`.
    pub fn add(&self, version: &str, asset: &str, bytes: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(format!("v{version}/{asset}"), bytes);
    }

    pub fn remove(&self, version: &str, asset: &str) {
        self.state
            .lock()
            .unwrap()
            .files
            .remove(&format!("v{version}/{asset}"));
    }

    pub fn file(&self, version: &str, asset: &str) -> Option<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .files
            .get(&format!("v{version}/{asset}"))
            .cloned()
    }

    pub fn fault(&self, version: &str, asset: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(format!("v{version}/{asset}"), fault);
    }

    pub fn log(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests whose path ends with `suffix` (the asset name).
    pub fn requests_for(&self, suffix: &str) -> Vec<Request> {
        self.log()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> io::Result<()> {
    let head = crate::read_head(&mut BufReader::new(stream.try_clone()?))?;
    let mut exchange = Exchange {
        stream,
        range: head.headers.get("range").cloned(),
        path: head.path,
    };
    let state = state.lock().unwrap();
    if let Some(key) = exchange.path.strip_prefix("/download/") {
        let key = key.to_string();
        return exchange.redirect(&key, state);
    }
    let Some(key) = exchange.path.strip_prefix("/objects/").map(str::to_string) else {
        return exchange.not_found(state, b"");
    };
    exchange.object(&key, state)
}

/// One request and its answer, each logged with the status it got.
struct Exchange {
    stream: TcpStream,
    path: String,
    range: Option<String>,
}

impl Exchange {
    fn log(&self, status: u16, state: &mut State) {
        state.log.push(Request {
            path: self.path.clone(),
            range: self.range.clone(),
            status,
        })
    }

    fn not_found(&mut self, mut state: MutexGuard<State>, body: &[u8]) -> io::Result<()> {
        self.log(404, &mut state);
        respond(&mut self.stream, "404 Not Found", &[], body)
    }

    /// `/download/<key>`: a redirect to the object, as GitHub answers, or a 404.
    fn redirect(&mut self, key: &str, mut state: MutexGuard<State>) -> io::Result<()> {
        if matches!(state.faults.get(key), Some(Fault::NotFound))
            || !(state.files.contains_key(key) || state.on_disk.contains_key(key))
        {
            return self.not_found(state, b"Not Found");
        }
        self.log(302, &mut state);
        let location = match state.faults.get(key) {
            Some(Fault::RedirectTo(url)) => format!("Location: {url}"),
            _ => format!("Location: /objects/{key}"),
        };
        respond(&mut self.stream, "302 Found", &[&location], b"")
    }

    /// `/objects/<key>`: the bytes, from disk, or from memory as the asset's fault allows.
    fn object(&mut self, key: &str, mut state: MutexGuard<State>) -> io::Result<()> {
        if let Some(file) = state.on_disk.get(key).cloned() {
            self.log(200, &mut state);
            drop(state);
            let mut file = std::fs::File::open(file)?;
            write_ok_head(&mut self.stream, Some(file.metadata()?.len()), true)?;
            std::io::copy(&mut file, &mut self.stream)?;
            return self.stream.flush();
        }
        let Some(body) = state.files.get(key).cloned() else {
            return self.not_found(state, b"");
        };
        self.answer(key, &body, state)
    }

    /// `body`, or what the asset's fault makes of it.
    fn answer(&mut self, key: &str, body: &[u8], mut state: MutexGuard<State>) -> io::Result<()> {
        match state.faults.get(key).cloned() {
            Some(Fault::ServerErrors(n)) if n > 0 => {
                state
                    .faults
                    .insert(key.to_string(), Fault::ServerErrors(n - 1));
                self.log(500, &mut state);
                respond(
                    &mut self.stream,
                    "500 Internal Server Error",
                    &[],
                    b"try again",
                )
            }
            Some(
                fault @ (Fault::CutOnce
                | Fault::CutOnceNoRanges
                | Fault::CutOnceThenWrongRange { .. }),
            ) => {
                let next = match fault {
                    Fault::CutOnce => Fault::ServerErrors(0),
                    Fault::CutOnceThenWrongRange { start } => Fault::WrongRange(start),
                    _ => Fault::NoRanges,
                };
                state.faults.insert(key.to_string(), next);
                self.log(200, &mut state);
                drop(state);
                self.cut(body)
            }
            Some(Fault::WrongRange(start)) if self.range.is_some() => {
                self.log(206, &mut state);
                drop(state);
                partial(&mut self.stream, body, start)
            }
            Some(Fault::Endless { claimed_length }) => {
                self.log(200, &mut state);
                drop(state);
                self.endless(claimed_length)
            }
            Some(Fault::Crawl { every_ms }) => {
                self.log(200, &mut state);
                drop(state);
                self.crawl(body, every_ms)
            }
            Some(Fault::Stall) => {
                self.log(200, &mut state);
                drop(state);
                self.stall(body)
            }
            Some(Fault::StallOnce) => {
                state.faults.insert(key.to_string(), Fault::ServerErrors(0));
                self.log(200, &mut state);
                drop(state);
                self.stall(body)
            }
            Some(Fault::CutOnceThenHugeLength) => {
                state.faults.insert(key.to_string(), Fault::HugeLength);
                self.log(200, &mut state);
                drop(state);
                self.cut(body)
            }
            Some(Fault::CutOnceThenGarbledRange { length }) => {
                state
                    .faults
                    .insert(key.to_string(), Fault::GarbledRange { length });
                self.log(200, &mut state);
                drop(state);
                self.cut(body)
            }
            Some(Fault::GarbledRange { length }) if self.range.is_some() => {
                self.log(206, &mut state);
                drop(state);
                let garbage = format!("Content-Range: bytes {}", "9".repeat(length));
                respond(&mut self.stream, "206 Partial Content", &[&garbage], body)
            }
            Some(Fault::HugeLength) if self.range.is_some() => {
                let start = self.range_start().unwrap_or(0).min(body.len());
                self.log(206, &mut state);
                drop(state);
                self.huge_length(body, start)
            }
            Some(Fault::Throttle { chunk, every_ms }) => {
                let start = self.range_start().filter(|&s| s < body.len());
                self.log(if start.is_some() { 206 } else { 200 }, &mut state);
                drop(state);
                self.throttle(body, start, chunk, every_ms)
            }
            fault => {
                let honour_range = !matches!(fault, Some(Fault::NoRanges));
                self.serve_body(body, honour_range, state)
            }
        }
    }

    /// The whole body, or from where a Range header asks (when ranges are honoured).
    fn serve_body(
        &mut self,
        body: &[u8],
        honour_range: bool,
        mut state: MutexGuard<State>,
    ) -> io::Result<()> {
        let start = self.range_start().filter(|_| honour_range);
        match start {
            Some(start) if start < body.len() => {
                self.log(206, &mut state);
                partial(&mut self.stream, body, start)
            }
            _ => {
                self.log(200, &mut state);
                let accept = if honour_range {
                    "Accept-Ranges: bytes"
                } else {
                    "Accept-Ranges: none"
                };
                respond(&mut self.stream, "200 OK", &[accept], body)
            }
        }
    }

    /// Where the request's `Range: bytes=N-` asks to start, if it has one.
    fn range_start(&self) -> Option<usize> {
        self.range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok())
    }

    /// 206 from `start`, with an honest Content-Range and a Content-Length beyond any size.
    fn huge_length(&mut self, body: &[u8], start: usize) -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len().saturating_sub(1),
            body.len(),
            u64::MAX
        );
        self.stream.write_all(head.as_bytes())?;
        self.stream.write_all(&body[start..])?;
        self.stream.flush()
    }

    /// The body from `start` (206) or whole (200), `chunk` bytes every `every_ms` ms.
    fn throttle(
        &mut self,
        body: &[u8],
        start: Option<usize>,
        chunk: usize,
        every_ms: u64,
    ) -> io::Result<()> {
        let from = start.unwrap_or(0);
        let head = match start {
            Some(start) => format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() - 1,
                body.len(),
                body.len() - start
            ),
            None => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                body.len()
            ),
        };
        self.stream.write_all(head.as_bytes())?;
        for piece in body[from..].chunks(chunk.max(1)) {
            self.stream.write_all(piece)?;
            self.stream.flush()?;
            std::thread::sleep(std::time::Duration::from_millis(every_ms));
        }
        Ok(())
    }

    /// A `200 OK` saying the whole body's length (and, when `close`, `Connection: close`),
    /// then only its first half.
    fn half(&mut self, body: &[u8], close: bool) -> io::Result<()> {
        write_ok_head(&mut self.stream, Some(body.len() as u64), close)?;
        self.stream.write_all(&body[..body.len() / 2])?;
        self.stream.flush()
    }

    /// Half the body, then the connection closes.
    fn cut(&mut self, body: &[u8]) -> io::Result<()> {
        self.half(body, true)?;
        self.stream.shutdown(std::net::Shutdown::Both)
    }

    /// A body that never ends, until the client hangs up.
    fn endless(&mut self, claimed_length: Option<u64>) -> io::Result<()> {
        write_ok_head(&mut self.stream, claimed_length, true)?;
        let chunk = vec![b'A'; 64 << 10];
        loop {
            self.stream.write_all(&chunk)?; // fails once the client hangs up
        }
    }

    /// The whole body, one byte every `every_ms` milliseconds.
    fn crawl(&mut self, body: &[u8], every_ms: u64) -> io::Result<()> {
        write_ok_head(&mut self.stream, Some(body.len() as u64), true)?;
        for byte in body {
            self.stream.write_all(std::slice::from_ref(byte))?;
            self.stream.flush()?;
            std::thread::sleep(std::time::Duration::from_millis(every_ms));
        }
        Ok(())
    }

    /// Half the body, then nothing for two minutes.
    fn stall(&mut self, body: &[u8]) -> io::Result<()> {
        self.half(body, false)?;
        std::thread::sleep(std::time::Duration::from_secs(120));
        Ok(())
    }
}

/// `200 OK` with this Content-Length (or none) and, when `close`, `Connection: close`.
fn write_ok_head(stream: &mut TcpStream, length: Option<u64>, close: bool) -> io::Result<()> {
    let length = length
        .map(|n| format!("Content-Length: {n}\r\n"))
        .unwrap_or_default();
    let connection = if close { "Connection: close\r\n" } else { "" };
    let head = format!("HTTP/1.1 200 OK\r\n{length}{connection}\r\n");
    stream.write_all(head.as_bytes())
}

/// `206 Partial Content` from byte `start` to the end, with an honest Content-Range.
fn partial(stream: &mut TcpStream, body: &[u8], start: usize) -> io::Result<()> {
    let content_range = format!(
        "Content-Range: bytes {start}-{}/{}",
        body.len() - 1,
        body.len()
    );
    respond(
        stream,
        "206 Partial Content",
        &[&content_range, "Accept-Ranges: bytes"],
        &body[start..],
    )
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[&str], body: &[u8]) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}
