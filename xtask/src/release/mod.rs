//! The first step: an Alloy release upstream -> a verified release zip -> its one binary,
//! checked. [`github`] finds releases, [`missing`] those the bucket lacks, [`fetch`] gets and verifies the zip (from the mirror
//! through the download cache, or a local file), [`archive`] opens the binary inside it without
//! extracting (after [`zip_layout`] bounds and cross-checks the zip's own records), [`elf`] checks that it is an executable for the architecture.

pub mod archive;
pub mod elf;
pub mod fetch;
pub mod github;
pub mod missing;
pub mod zip_layout;
