//! Loopback servers shared by the tests and the benchmark: [`mirror::Mirror`], a release
//! mirror that behaves like GitHub (and misbehaves on request), and [`http::Server`], which
//! serves fixed answers and records every request (a fake GitHub API, a bucket's public domain).

pub mod http;
pub mod mirror;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Listens on a free loopback port and serves each connection on a thread of its own with
/// `serve` and the shared `state`, until the process exits. Returns the address.
pub fn listen<S: Send + 'static>(
    state: Arc<Mutex<S>>,
    serve: fn(TcpStream, &Mutex<S>) -> std::io::Result<()>,
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
