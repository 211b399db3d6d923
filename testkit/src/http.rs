//! A loopback HTTP server serving fixed answers per path (query included), recording every
//! request with its headers: a fake GitHub API or a bucket's public domain.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send no Content-Length and repeat the body until the client hangs up.
    pub endless: bool,
}

impl Answer {
    pub fn ok(body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            endless: false,
        }
    }

    /// Answers `status` with `body`.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            ..Answer::ok(body)
        }
    }

    /// A 200 without Content-Length whose body is `chunk` repeated forever.
    pub fn endless(chunk: impl Into<Vec<u8>>) -> Answer {
        Answer {
            endless: true,
            ..Answer::ok(chunk)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    /// Answers for every path (query included) starting with a prefix, longest prefix first.
    prefixes: Vec<(String, Answer)>,
    log: Vec<Seen>,
}

pub struct Server {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let (address, state) = crate::start(serve);
        let url = format!("http://{address}");
        Server { url, state }
    }

    /// Answers `path` (with its query, e.g. `/a?page=2`) with `answer`; anything else is a 404.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(path.into(), answer);
    }

    /// Answers every path (with its query) that starts with `prefix` and has no exact answer.
    pub fn answer_prefix(&self, prefix: &str, answer: Answer) {
        let mut state = self.state.lock().unwrap();
        state.prefixes.push((prefix.into(), answer));
        state
            .prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    pub fn log(&self) -> Vec<Seen> {
        self.state.lock().unwrap().log.clone()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let crate::Head {
        method,
        path,
        headers,
    } = crate::read_head(&mut reader)?;
    if let Some(length) = headers
        .get("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
    }
    let answer = {
        let mut state = state.lock().unwrap();
        state.log.push(Seen {
            method: method.clone(),
            path: path.clone(),
            headers,
        });
        state.answers.get(&path).cloned().or_else(|| {
            state
                .prefixes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, answer)| answer.clone())
        })
    };
    let answer = answer.unwrap_or(Answer::status(404, "Not Found"));
    let length = if answer.endless {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", answer.body.len())
    };
    let mut head = format!(
        "HTTP/1.1 {} X\r\n{length}Connection: close\r\n",
        answer.status
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&answer.body)?;
        while answer.endless && !answer.body.is_empty() {
            stream.write_all(&answer.body)?; // fails once the client hangs up
        }
    }
    stream.flush()
}
