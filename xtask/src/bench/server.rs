//! A small HTTP server on loopback that serves a release directory the way the release mirror
//! lays it out: `GET <anything>/v<VERSION>/<asset>` answers the file `<asset>`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use anyhow::Context;

use crate::files::copy_stream;

pub struct Server {
    /// `http://127.0.0.1:<port>/download`: give it as ALLOY_RELEASES_URL.
    pub base_url: String,
}

/// Serves `dir` until the process exits, a thread per connection.
pub fn start(dir: &Path) -> anyhow::Result<Server> {
    let listener = TcpListener::bind("127.0.0.1:0").context("listening on loopback")?;
    let base_url = format!("http://{}/download", listener.local_addr()?);
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &dir);
            });
        }
    });
    Ok(Server { base_url })
}

/// The asset a request path names: its last component, if the one before is `v<VERSION>`.
pub fn asset_for(path: &str) -> Option<&str> {
    let path = path.split('?').next()?;
    let mut parts = path.rsplit('/');
    let asset = parts.next()?;
    let version = parts.next()?;
    let ok = version.starts_with('v')
        && !asset.is_empty()
        && !asset.starts_with('.')
        && asset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    ok.then_some(asset)
}

fn serve(stream: TcpStream, dir: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let file = asset_for(path).and_then(|asset| File::open(dir.join(asset)).ok());
    match file {
        Some(mut file) => {
            let len = file.metadata()?.len();
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            )?;
            copy_stream(&mut file, &mut stream)?;
        }
        None => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_assets_by_the_release_layout() {
        assert_eq!(
            asset_for("/download/v1.10.2/alloy-linux-amd64.zip"),
            Some("alloy-linux-amd64.zip")
        );
        assert_eq!(asset_for("/v1.10.2/SHA256SUMS"), Some("SHA256SUMS"));
        assert_eq!(asset_for("/download/1.10.2/SHA256SUMS"), None);
        assert_eq!(asset_for("/download/v1.10.2/"), None);
        assert_eq!(asset_for("/download/v1/..%2Fetc"), None);
        assert_eq!(asset_for("/download/v1/.."), None);
    }
}
