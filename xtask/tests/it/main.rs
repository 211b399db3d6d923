//! xtask's end-to-end tests: one test binary, one module per concern. `cargo test -p xtask
//! --test it -- boot::` runs one module. What the tests of every package share is in the
//! testkit (`xtask-testkit`); [`support`] holds what only these use.

mod support;

mod boot;
mod build;
mod container;
mod downloads;
mod fleet;
mod formats;
mod healing;
mod hostile;
mod interrupts;
mod kernel_view;
mod latest;
mod merge;
mod missing;
mod no_panic;
mod outputs;
mod service;
mod tidy;
mod upgrade;
mod workflows;
mod zips;
