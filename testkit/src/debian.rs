//! Minimal Debian roots made with debootstrap, for the tests that boot a host ([`crate::host`])
//! or build in a container. Made once per suite and package list, and kept in
//! ~/.cache/alloy-sysext-tests/: debootstrap takes about a minute, a cached root nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// Where the tests keep what is slow to make: ~/.cache/alloy-sysext-tests/.
pub fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/alloy-sysext-tests")
}

/// The mirror named by the host's apt sources (deb822 `URIs:` or one-line `deb URL SUITE`), the
/// first that is not a security or updates archive.
pub fn apt_mirror(sources: &str) -> Option<String> {
    sources.lines().find_map(|line| {
        let line = line.trim();
        let url = if let Some(uris) = line.strip_prefix("URIs:") {
            uris.split_whitespace().next()
        } else if let Some(rest) = line.strip_prefix("deb ") {
            rest.split_whitespace().find(|w| w.contains("://"))
        } else {
            None
        }?;
        (!url.contains("security") && url.contains("debian")).then(|| url.to_string())
    })
}

fn host_apt_mirror() -> String {
    let mut sources = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
            .collect();
        files.sort();
        for file in files {
            sources.push_str(&std::fs::read_to_string(file).unwrap_or_default());
            sources.push('\n');
        }
    }
    apt_mirror(&sources).unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// One debootstrap at a time in this process; other processes are handled by the rename.
static DEBOOTSTRAP: Mutex<()> = Mutex::new(());

/// A minimal (`--variant=minbase`) Debian root of `suite` with `packages` added, made once with
/// debootstrap from the host's Debian mirror and kept in [`cache_dir`], named after the suite
/// and the packages; built in a temporary directory and renamed into place whole, so a root
/// that exists is complete.
pub fn root(suite: &str, packages: &[&str]) -> PathBuf {
    let _guard = DEBOOTSTRAP.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache_dir();
    let mut name = format!("debian-root-{suite}-minbase");
    for package in packages {
        name.push('-');
        name.push_str(package);
    }
    let root = cache.join(name);
    if !root.join("usr/bin/dpkg").exists() {
        std::fs::create_dir_all(&cache).unwrap();
        let building = cache.join(format!(".debian-root.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        let mirror = host_apt_mirror();
        let started = Instant::now();
        let mut debootstrap = Command::new("timeout");
        // Bounded: a stalled mirror fails the test instead of hanging it.
        debootstrap
            .arg("900")
            .arg(crate::tool("debootstrap"))
            .arg("--variant=minbase");
        if !packages.is_empty() {
            debootstrap.arg(format!("--include={}", packages.join(",")));
        }
        crate::checked_output(debootstrap.arg(suite).arg(&building).arg(&mirror));
        eprintln!(
            "debootstrap {suite} from {mirror}: {:.0?}",
            started.elapsed()
        );
        if std::fs::rename(&building, &root).is_err() {
            // Another test process finished first: use its root.
            let _ = std::fs::remove_dir_all(&building);
        }
    }
    assert!(root.join("usr/bin/dpkg").exists(), "{}", root.display());
    root
}

#[cfg(test)]
mod tests {
    use super::apt_mirror;

    #[test]
    fn apt_mirror_comes_from_either_sources_format() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n";
        assert_eq!(
            apt_mirror(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line =
            "# deb http://old/\ndeb [arch=amd64] http://ftp.de.debian.org/debian bookworm main\n";
        assert_eq!(
            apt_mirror(one_line).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        assert_eq!(
            apt_mirror("deb https://packages.cloud.google.com/apt x main\n"),
            None
        );
    }
}
