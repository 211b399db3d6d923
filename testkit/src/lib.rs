//! What the tests of every package share, and the loopback servers the benchmark uses too:
//! - [`mirror::Mirror`], a release mirror that behaves like GitHub (and misbehaves on request),
//!   and [`http::Server`], which serves fixed answers and records every request (a fake GitHub
//!   API, a bucket's public domain);
//! - [`fixture::Release`]: fixture releases of a small C program that behaves like Alloy;
//! - [`Run`] and [`Workspace`]: running `xtask`, whose path each package's tests pass in (cargo
//!   tells only xtask's own tests where it is);
//! - [`s3::S3`]: a real S3 server process on loopback, and proxies that cut or corrupt uploads;
//! - [`host::Host`]: a Flatcar-like host booted with systemd-nspawn on a [`debian`] root;
//! - [`ext4`], [`gpg`], [`process`]: reading images, throwaway keys, processes and signals;
//!   [`mkfifo`] and [`link_to_dev_zero`]: files no reader may trust.

pub mod debian;
pub mod ext4;
pub mod fixture;
pub mod gpg;
pub mod host;
pub mod http;
pub mod mirror;
pub mod process;
pub mod s3;

mod run;
mod workspace;

pub use run::{
    assert_no_panic, checked_output, checked_output_bytes, checked_output_with_input, tool, Run,
};
pub use workspace::Workspace;

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Listens on a free loopback port and serves each connection on a thread of its own with
/// `serve` and the shared `state` (a `Mutex` where serving changes it), until the process
/// exits. Returns the address.
pub fn listen<S: ?Sized + Send + Sync + 'static>(
    state: Arc<S>,
    serve: fn(TcpStream, &S) -> std::io::Result<()>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &state);
            });
        }
    });
    address
}

/// A server for `serve`, with fresh state, on a free loopback port: its address, and the state
/// it shares with the test.
pub(crate) fn start<S: Default + Send + 'static>(
    serve: fn(TcpStream, &Mutex<S>) -> std::io::Result<()>,
) -> (SocketAddr, Arc<Mutex<S>>) {
    let state = Arc::new(Mutex::new(S::default()));
    (listen(state.clone(), serve), state)
}

/// The head of an HTTP request: its method, its path (with the query) and its headers, named in
/// lower case. A connection closed before a request line reads as an empty method and `/`.
pub(crate) struct Head {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

pub(crate) fn read_head(reader: &mut impl BufRead) -> std::io::Result<Head> {
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Ok(Head {
        method,
        path,
        headers,
    })
}

/// A free TCP port on loopback, for a server a test starts (an S3 server, a booted host's
/// Alloy, which shares the test machine's network): below Linux's ephemeral range (32768 and
/// up), so no outgoing connection takes it between this check and the server's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TRIES: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..1000 {
        let offset = seed.wrapping_add(TRIES.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729));
        let port = 20_000 + (offset % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000 on 127.0.0.1");
}

/// xorshift64: numbers that look random but repeat for the same seed (which must not be 0), for
/// tests that damage images or make incompressible bytes.
pub struct XorShift(pub u64);

impl XorShift {
    /// From the seed in `ALLOY_SYSEXT_TEST_SEED`, else from the clock; returns the seed too, for
    /// the test to print so that a failure can be replayed with `ALLOY_SYSEXT_TEST_SEED=<seed>`.
    pub fn seeded() -> (XorShift, u64) {
        let seed = std::env::var("ALLOY_SYSEXT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.map(|d| d.as_nanos() as u64).unwrap_or(1)
            });
        // xorshift stays at 0 once there.
        (XorShift(seed.max(1)), seed)
    }

    /// A number below `bound` (which must not be 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Makes a FIFO at `path`: a file that would hang whoever reads it.
pub fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.unwrap().success(), "mkfifo {}", path.display());
}

/// Makes a link to /dev/zero at `path`: a file that would fill the memory of whoever reads it.
pub fn link_to_dev_zero(path: &Path) {
    std::os::unix::fs::symlink("/dev/zero", path).unwrap();
}

/// The binary `name` that cargo built beside `own` (a test's own `CARGO_BIN_EXE_*`): how the
/// tests of another package find `xtask`. Fails the test, saying how to build it, when it is
/// not there.
pub fn beside_own_binary(own: &str, name: &str) -> PathBuf {
    let path = Path::new(own).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is not built: `cargo test --workspace` builds it, or `cargo build -p {name}`",
        path.display()
    );
    path
}
