//! A real S3-compatible server on loopback (`s3s-fs`, which checks `x-amz-checksum-sha256` and
//! honours `If-None-Match`/`If-Match`), the bucket's "public domain" (a static HTTP server over
//! the same objects, with their stored Content-Type), and a TCP proxy that can cut connections
//! mid-body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub const ACCESS_KEY: &str = "AKIDALLOYSYSEXTTEST";
/// Distinctive, so that a search of any output for it cannot match by accident.
pub const SECRET_KEY: &str = "s3cr3t-Q7vXk2pLm9Zr4TnW8yHb6JcE1dGf";
pub const BUCKET: &str = "images";

/// Finds s3s-fs in PATH or where `cargo install` puts it.
fn s3s_fs() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .expect("s3s-fs is not installed: run bash scripts/install-deps.sh --test")
}

/// One s3s-fs process with one bucket, and a public HTTP view of that bucket.
pub struct S3 {
    pub endpoint: String,
    /// Where hosts would download from: serves the bucket's objects by key.
    pub public_url: String,
    pub root: tempfile::TempDir,
    child: Child,
}

impl S3 {
    pub fn start() -> S3 {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let port = crate::free_port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        crate::process::wait_for(20, &format!("s3s-fs listening on {port}"), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let public_url = serve_bucket(root.path().to_path_buf());
        S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            public_url,
            root,
            child,
        }
    }

    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(BUCKET)
    }

    /// An object's bytes as the server stores them, if it exists.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.bucket_dir().join(key)).ok()
    }

    /// The object keys in the bucket, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(self.bucket_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        keys.sort();
        keys
    }

    /// The metadata s3s-fs stored for an object (Content-Type, Cache-Control), as JSON text.
    pub fn metadata(&self, key: &str) -> String {
        let encode = |s: &str| base64_url(s.as_bytes());
        let name = format!(
            ".bucket-{}.object-{}.metadata.json",
            encode(BUCKET),
            encode(key)
        );
        std::fs::read_to_string(self.root.path().join(&name))
            .unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    /// Files s3s-fs keeps for multipart uploads in progress (none once completed or aborted).
    pub fn pending_parts(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload_id-") || n.contains(".upload-"))
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unpadded URL-safe base64, as s3s-fs names its metadata files.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Serves the objects of s3s-fs's bucket under `root` read-only over HTTP on loopback, as the
/// bucket's public domain does: `GET /<key>` (folders included, `rc/SHA256SUMS`), with the
/// Content-Type the object was stored with.
pub fn serve_bucket(root: PathBuf) -> String {
    let root: Arc<Path> = Arc::from(root.as_path());
    format!("http://{}", crate::listen(root, serve_object))
}

/// The file of an object key under the bucket, if the key is one a client may ask for: no
/// empty, hidden (s3s-fs's own files) or `..` component.
fn object_file(root: &Path, key: &str) -> Option<PathBuf> {
    let plain = |part: &str| !part.is_empty() && !part.starts_with('.');
    if !key.split('/').all(plain) {
        return None;
    }
    let path = root.join(BUCKET).join(key);
    path.is_file().then_some(path)
}

/// The Content-Type s3s-fs stored for `key`, if any.
fn stored_content_type(root: &Path, key: &str) -> Option<String> {
    let name = format!(
        ".bucket-{}.object-{}.metadata.json",
        base64_url(BUCKET.as_bytes()),
        base64_url(key.as_bytes())
    );
    let text = std::fs::read_to_string(root.join(name)).ok()?;
    let metadata: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(metadata.get("content_type")?.as_str()?.to_string())
}

fn serve_object(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    // Keep-alive: requests one after another, until the client closes the connection.
    while !reader.fill_buf()?.is_empty() {
        let head = crate::read_head(&mut reader)?;
        let path = head.path.split('?').next().unwrap_or("");
        let key = path.trim_start_matches('/');
        match object_file(root, key).and_then(|p| std::fs::File::open(p).ok()) {
            Some(mut file) => {
                let len = file.metadata()?.len();
                let content_type = stored_content_type(root, key)
                    .unwrap_or_else(|| "application/octet-stream".to_string());
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: {content_type}\r\n\r\n"
                )?;
                if head.method != "HEAD" {
                    std::io::copy(&mut file, &mut stream)?;
                }
            }
            None => {
                write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
                )?;
            }
        }
        stream.flush()?;
    }
    Ok(())
}

/// A TCP proxy to `target` that cuts a connection once this many request bytes passed.
pub struct CuttingProxy {
    pub url: String,
    /// Connections cut so far.
    pub cuts: Arc<AtomicU64>,
}

impl CuttingProxy {
    /// Cuts the first connection that sends more than `after` bytes; `always` cuts every one.
    pub fn start(target: &str, after: u64, always: bool) -> CuttingProxy {
        CuttingProxy::spawn(target, after, always, false)
    }

    /// Instead of cutting, flips one bit of the byte at `after`, once: a body corrupted on the way.
    pub fn corrupting(target: &str, after: u64) -> CuttingProxy {
        CuttingProxy::spawn(target, after, false, true)
    }

    fn spawn(target: &str, after: u64, always: bool, corrupt: bool) -> CuttingProxy {
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cuts = Arc::new(AtomicU64::new(0));
        let plan = Arc::new(Plan {
            after,
            always,
            corrupt,
            armed: AtomicBool::new(true),
            cuts: cuts.clone(),
        });
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (client_read, server_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                // server -> client, as is
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(Shutdown::Both);
                });
                // client -> server, counted and cut
                let plan = plan.clone();
                std::thread::spawn(move || plan.forward(client_read, server_write));
            }
        });
        CuttingProxy { url, cuts }
    }

    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// What a [`CuttingProxy`] does to what clients send.
struct Plan {
    /// Bytes of a connection that pass before it is cut (or its next byte flipped).
    after: u64,
    /// Every connection, or only the first that gets that far (while `armed`).
    always: bool,
    armed: AtomicBool,
    /// Flip one bit instead of cutting.
    corrupt: bool,
    /// Connections cut (or bytes flipped) so far.
    cuts: Arc<AtomicU64>,
}

impl Plan {
    /// Copies a client's bytes to the server, cutting or corrupting them as planned.
    fn forward(&self, mut from_client: TcpStream, mut to_server: TcpStream) {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut passed = 0u64;
        loop {
            let n = match from_client.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let due = passed + n as u64 > self.after
                && (self.always || self.armed.swap(false, Ordering::SeqCst));
            if due && !self.corrupt {
                let _ = to_server.write_all(&buffer[..(self.after - passed) as usize]);
                self.cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if due {
                buffer[(self.after - passed) as usize] ^= 0x01;
                self.cuts.fetch_add(1, Ordering::SeqCst);
            }
            if to_server.write_all(&buffer[..n]).is_err() {
                break;
            }
            passed += n as u64;
        }
        let _ = to_server.shutdown(Shutdown::Both);
        let _ = from_client.shutdown(Shutdown::Both);
    }
}

/// A TCP proxy to `target` that holds back, once, the first request whose bytes contain a
/// needle (a request line such as `GET /images/index.json`), until the test releases it: a
/// publisher stopped at a chosen point while another runs.
pub struct PausingProxy {
    pub url: String,
    gate: Arc<Gate>,
}

/// Whether the proxy is holding a request, and whether it may let it go.
#[derive(Default)]
struct Gate {
    state: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl PausingProxy {
    pub fn start(target: &str, needle: &str) -> PausingProxy {
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gate = Arc::new(Gate::default());
        let (needle, shared) = (needle.as_bytes().to_vec(), gate.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut from_server, mut to_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(Shutdown::Both);
                });
                let (gate, needle) = (shared.clone(), needle.clone());
                std::thread::spawn(move || gate.forward(client, server, &needle));
            }
        });
        PausingProxy { url, gate }
    }

    /// Waits (at most `seconds`) until a request is being held.
    pub fn wait_until_holding(&self, seconds: u64) {
        let state = self.gate.state.lock().unwrap();
        let (state, timeout) = self
            .gate
            .changed
            .wait_timeout_while(state, std::time::Duration::from_secs(seconds), |s| !s.0)
            .unwrap();
        assert!(
            state.0 && !timeout.timed_out(),
            "no request was held within {seconds} s"
        );
    }

    /// Lets the held request (and every later one) through.
    pub fn release(&self) {
        self.gate.state.lock().unwrap().1 = true;
        self.gate.changed.notify_all();
    }
}

impl Gate {
    fn forward(&self, mut from_client: TcpStream, mut to_server: TcpStream, needle: &[u8]) {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match from_client.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if buffer[..n].windows(needle.len()).any(|w| w == needle) {
                let mut state = self.state.lock().unwrap();
                if !state.0 {
                    state.0 = true;
                    self.changed.notify_all();
                }
                let _released = self.changed.wait_while(state, |s| !s.1).unwrap();
            }
            if to_server.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Both);
        let _ = from_client.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_url_matches_s3s_fs_names() {
        assert_eq!(super::base64_url(b"images"), "aW1hZ2Vz");
        assert_eq!(super::base64_url(b"SHA256SUMS"), "U0hBMjU2U1VNUw");
    }
}
