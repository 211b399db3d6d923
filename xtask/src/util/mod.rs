//! Plumbing the pipeline steps share; nothing here knows about Alloy or images.

pub mod awake;
pub mod checksums;
pub mod files;
pub mod handoff;
pub mod http;
pub mod interrupt;
pub mod le;
pub mod progress;
pub mod retry;
pub mod safedir;
pub mod sandbox;
pub mod timings;
pub mod tools;
