//! `cargo xtask publish` and `cargo xtask verify` against a real S3 server process (s3s-fs) on
//! loopback, with the bucket's files served over HTTP as the public domain would serve them: one
//! test binary, one module per concern (`cargo test -p xtask-publish --test it -- signing::`).

mod support;

mod audit;
mod concurrency;
mod faults;
mod interrupts;
mod page;
mod settings;
mod signing;
mod uploads;
mod verify;
