//! Loopback servers shared by the tests and the benchmark: [`mirror::Mirror`], a release
//! mirror that behaves like GitHub (and misbehaves on request), and [`http::Server`], which
//! serves fixed answers and records every request (a fake GitHub API, a bucket's public domain).

pub mod http;
pub mod mirror;

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

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
