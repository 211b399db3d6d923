//! A release mirror on loopback that behaves like GitHub: `GET /download/v<V>/<asset>` answers
//! with a redirect to `/objects/...`, which serves the bytes (with Range support). Each asset can
//! be told to misbehave.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

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
    pub fn start() -> Mirror {
        let state = Arc::new(Mutex::new(State::default()));
        let base_url = format!("http://{}/download", crate::listen(state.clone(), serve));
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

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }

    let mut state = state.lock().unwrap();
    let log = |status: u16, state: &mut State| {
        state.log.push(Request {
            path: path.clone(),
            range: range.clone(),
            status,
        })
    };

    if let Some(key) = path.strip_prefix("/download/") {
        let key = key.to_string();
        if matches!(state.faults.get(&key), Some(Fault::NotFound))
            || !(state.files.contains_key(&key) || state.on_disk.contains_key(&key))
        {
            log(404, &mut state);
            return respond(&mut stream, "404 Not Found", &[], b"Not Found");
        }
        log(302, &mut state);
        if let Some(Fault::RedirectTo(url)) = state.faults.get(&key) {
            let location = format!("Location: {url}");
            return respond(&mut stream, "302 Found", &[&location], b"");
        }
        let location = format!("Location: /objects/{key}");
        return respond(&mut stream, "302 Found", &[&location], b"");
    }
    let Some(key) = path.strip_prefix("/objects/").map(str::to_string) else {
        log(404, &mut state);
        return respond(&mut stream, "404 Not Found", &[], b"");
    };
    if let Some(file) = state.on_disk.get(&key).cloned() {
        log(200, &mut state);
        drop(state);
        let mut file = std::fs::File::open(file)?;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            file.metadata()?.len()
        );
        stream.write_all(head.as_bytes())?;
        std::io::copy(&mut file, &mut stream)?;
        return stream.flush();
    }
    let Some(body) = state.files.get(&key).cloned() else {
        log(404, &mut state);
        return respond(&mut stream, "404 Not Found", &[], b"");
    };
    let fault = state.faults.get(&key).cloned();
    match fault {
        Some(Fault::ServerErrors(n)) if n > 0 => {
            state.faults.insert(key, Fault::ServerErrors(n - 1));
            log(500, &mut state);
            return respond(&mut stream, "500 Internal Server Error", &[], b"try again");
        }
        Some(Fault::CutOnce)
        | Some(Fault::CutOnceNoRanges)
        | Some(Fault::CutOnceThenWrongRange { .. }) => {
            let next = match fault {
                Some(Fault::CutOnce) => Fault::ServerErrors(0),
                Some(Fault::CutOnceThenWrongRange { start }) => Fault::WrongRange(start),
                _ => Fault::NoRanges,
            };
            state.faults.insert(key.clone(), next);
            log(200, &mut state);
            drop(state);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(&body[..body.len() / 2])?;
            stream.flush()?;
            return stream.shutdown(std::net::Shutdown::Both);
        }
        Some(Fault::WrongRange(start)) if range.is_some() => {
            log(206, &mut state);
            drop(state);
            let content_range = format!(
                "Content-Range: bytes {start}-{}/{}",
                body.len() - 1,
                body.len()
            );
            return respond(
                &mut stream,
                "206 Partial Content",
                &[&content_range, "Accept-Ranges: bytes"],
                &body[start..],
            );
        }
        Some(Fault::Endless { claimed_length }) => {
            log(200, &mut state);
            drop(state);
            let length = claimed_length
                .map(|n| format!("Content-Length: {n}\r\n"))
                .unwrap_or_default();
            let head = format!("HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n");
            stream.write_all(head.as_bytes())?;
            let chunk = vec![b'A'; 64 << 10];
            loop {
                stream.write_all(&chunk)?; // fails once the client hangs up
            }
        }
        Some(Fault::Crawl { every_ms }) => {
            log(200, &mut state);
            drop(state);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            for byte in &body {
                stream.write_all(std::slice::from_ref(byte))?;
                stream.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(every_ms));
            }
            return Ok(());
        }
        Some(Fault::Stall) => {
            log(200, &mut state);
            drop(state);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            stream.write_all(head.as_bytes())?;
            stream.write_all(&body[..body.len() / 2])?;
            stream.flush()?;
            std::thread::sleep(std::time::Duration::from_secs(120));
            return Ok(());
        }
        _ => {}
    }
    let honour_range = !matches!(state.faults.get(&key), Some(Fault::NoRanges));
    let start = range
        .as_deref()
        .filter(|_| honour_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(start) if start < body.len() => {
            log(206, &mut state);
            let content_range = format!(
                "Content-Range: bytes {start}-{}/{}",
                body.len() - 1,
                body.len()
            );
            respond(
                &mut stream,
                "206 Partial Content",
                &[&content_range, "Accept-Ranges: bytes"],
                &body[start..],
            )
        }
        _ => {
            log(200, &mut state);
            let accept = if honour_range {
                "Accept-Ranges: bytes"
            } else {
                "Accept-Ranges: none"
            };
            respond(&mut stream, "200 OK", &[accept], &body)
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[&str],
    body: &[u8],
) -> std::io::Result<()> {
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
