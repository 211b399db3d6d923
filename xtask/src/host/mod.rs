//! What a Flatcar host needs besides the image: the service the image carries
//! ([`service`]), and the configuration that installs the image and keeps it current
//! ([`butane`], with the systemd-sysupdate transfer).

pub mod butane;
pub mod service;
