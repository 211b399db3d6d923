//! Loopback servers shared by the tests and the benchmark: [`mirror::Mirror`], a release
//! mirror that behaves like GitHub (and misbehaves on request), and [`http::Server`], which
//! serves fixed answers and records every request (a fake GitHub API, a bucket's public domain).

pub mod http;
pub mod mirror;
