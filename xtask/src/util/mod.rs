//! Plumbing the pipeline steps share; nothing here knows about Alloy or images.

pub mod checksums;
pub mod files;
pub mod http;
pub mod interrupt;
pub mod pipeline;
pub mod progress;
pub mod retry;
pub mod tools;
