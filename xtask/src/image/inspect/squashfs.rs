//! squashfs through `unsquashfs`: each step of a path is listed on its own, with the listing
//! limited to the path's depth (`-max-depth`) and no wildcards, so a hostile tree elsewhere is
//! never walked; files are read with `-cat`, which refuses links and anything not a file.
//! unsquashfs 4.5 itself refuses a directory holding a name with `/`, NUL, `.` or `..`
//! ("invalid characters in name"), which fails the listing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::{bounds, Lookup, Node, Tree, OUTPUT_LIMIT};
use crate::util::sandbox::{run_bounded, Overflow};
use crate::util::tools;

/// Where unsquashfs says the tree is, in listings.
const ROOT: &str = "squashfs-root";

pub struct Squashfs {
    unsquashfs: PathBuf,
    image: PathBuf,
}

impl Squashfs {
    pub fn open(image: &Path) -> anyhow::Result<Squashfs> {
        let found = tools::preflight(&xshell::Shell::new()?, &[tools::UNSQUASHFS])?;
        Ok(Squashfs {
            unsquashfs: found.path(tools::UNSQUASHFS).to_path_buf(),
            image: image.to_path_buf(),
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.unsquashfs);
        // One thread and small queues: we read a listing and a few bytes.
        command.args(["-no-wildcards", "-p", "1", "-da", "8", "-fr", "8"]);
        command
    }
}

impl Tree for Squashfs {
    fn root(&mut self) -> anyhow::Result<Node> {
        Ok(Node {
            mode: 0o040755,
            uid: 0,
            gid: 0,
            size: 0,
            id: 0,
            path: String::new(),
            link: None,
        })
    }

    fn lookup(&mut self, dir: &Node, name: &str) -> anyhow::Result<Lookup> {
        let path = if dir.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", dir.path)
        };
        let depth = path.split('/').count().to_string();
        let mut command = self.command();
        command
            .args(["-lln", "-max-depth", &depth])
            .arg(&self.image)
            .arg(&path);
        let output = run_bounded(command, bounds(OUTPUT_LIMIT, Overflow::Fail))?;
        if output.success != Some(true) {
            bail!(
                "unsquashfs -lln {path} failed: {}",
                one_line(&output.stderr)
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let listed = format!("{ROOT}/{path}");
        let mut found = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let entry = parse_line(line).with_context(|| {
                format!("unexpected line in `unsquashfs -lln` output: {line:?}")
            })?;
            if entry.path == listed {
                found.push(entry);
            }
        }
        if found.len() > 1 {
            return Ok(Lookup::BadName(name.as_bytes().to_vec()));
        }
        Ok(match found.pop() {
            None => Lookup::Missing,
            Some(entry) => Lookup::Found(Node {
                mode: entry.mode,
                uid: entry.uid,
                gid: entry.gid,
                size: entry.size,
                id: 0,
                path,
                link: entry.link,
            }),
        })
    }

    fn link_target(&mut self, link: &Node) -> anyhow::Result<Vec<u8>> {
        Ok(link.link.clone().unwrap_or_default().into_bytes())
    }

    fn read_head(&mut self, file: &Node, limit: usize) -> anyhow::Result<Vec<u8>> {
        let mut command = self.command();
        command.arg("-cat").arg(&self.image).arg(&file.path);
        let output = run_bounded(command, bounds(limit, Overflow::Head))?;
        if output.success == Some(false) {
            bail!(
                "unsquashfs -cat {} failed: {}",
                file.path,
                one_line(&output.stderr)
            );
        }
        Ok(output.stdout)
    }
}

/// unsquashfs's complaints, on one line.
fn one_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" / ")
}

/// One line of `unsquashfs -lln`.
#[derive(Debug, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// 0 for devices, whose listing gives `major, minor` instead.
    pub size: u64,
    pub link: Option<String>,
}

/// Parses one line of `unsquashfs -lln`:
/// `-rwxr-xr-x 0/0   100000 2024-01-01 00:00 squashfs-root/usr/bin/alloy`,
/// `lrwxrwxrwx 0/0        4 2024-01-01 00:00 squashfs-root/usr/lib -> /etc`,
/// `crw-r--r-- 0/0    1,  3 2024-01-01 00:00 squashfs-root/usr/bin/alloy`.
pub fn parse_line(line: &str) -> Option<Listed> {
    let mut rest = line;
    let mut word = || {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (word, after) = trimmed.split_at(end);
        rest = after;
        word
    };
    let mode = parse_mode_string(word())?;
    let (uid, gid) = word().split_once('/')?;
    let first = word();
    let size = if first.ends_with(',') {
        word().parse::<u32>().ok()?; // the minor number
        0
    } else {
        first.parse().ok()?
    };
    let _date = word();
    let _time = word();
    let path_and_link = rest.strip_prefix(' ')?;
    let (path, link) = if mode & 0o170000 == 0o120000 {
        let (path, target) = path_and_link.split_once(" -> ")?;
        (path, Some(target.to_string()))
    } else {
        (path_and_link, None)
    };
    Some(Listed {
        path: path.to_string(),
        mode,
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        size,
        link,
    })
}

/// Permissions as `ls -l` shows them (`-rwxr-xr-x`, `drwxr-xr-x`) as an `st_mode`.
pub fn parse_mode_string(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 {
        return None;
    }
    let kind = match bytes[0] {
        b'-' => 0o100000,
        b'd' => 0o040000,
        b'l' => 0o120000,
        b'c' => 0o020000,
        b'b' => 0o060000,
        b'p' => 0o010000,
        b's' => 0o140000,
        _ => return None,
    };
    let mut mode = 0u32;
    for (i, &c) in bytes[1..].iter().enumerate() {
        let bit = 1 << (8 - i);
        let special = match i {
            2 => 0o4000,
            5 => 0o2000,
            8 => 0o1000,
            _ => 0,
        };
        match c {
            b'-' => {}
            b'r' | b'w' | b'x' => mode |= bit,
            b's' | b't' => mode |= bit | special,
            b'S' | b'T' => mode |= special,
            _ => return None,
        }
    }
    Some(kind | mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_become_st_modes() {
        assert_eq!(parse_mode_string("-rwxr-xr-x"), Some(0o100755));
        assert_eq!(parse_mode_string("drwxr-xr-x"), Some(0o040755));
        assert_eq!(parse_mode_string("-rw-r--r--"), Some(0o100644));
        assert_eq!(parse_mode_string("-rwsr-xr-x"), Some(0o104755));
        assert_eq!(parse_mode_string("drwxrwxrwt"), Some(0o041777));
        assert_eq!(parse_mode_string("lrwxrwxrwx"), Some(0o120777));
        assert_eq!(parse_mode_string("prw-r--r--"), Some(0o010644));
        assert_eq!(parse_mode_string("-rwxr-xr-"), None);
        assert_eq!(parse_mode_string("?rwxr-xr-x"), None);
    }

    #[test]
    fn reads_unsquashfs_listing_lines() {
        assert_eq!(
            parse_line("-rwxr-xr-x 1000/100             100000 2024-01-01 00:00 squashfs-root/usr/bin/alloy"),
            Some(Listed {
                path: "squashfs-root/usr/bin/alloy".into(),
                mode: 0o100755,
                uid: 1000,
                gid: 100,
                size: 100000,
                link: None,
            })
        );
        let link = parse_line(
            "lrwxrwxrwx 0/0                       4 2026-11-29 07:24 squashfs-root/usr/lib -> /etc",
        )
        .unwrap();
        assert_eq!(
            (link.path.as_str(), link.link.as_deref()),
            ("squashfs-root/usr/lib", Some("/etc"))
        );
        let device = parse_line(
            "crw-r--r-- 0/0                   1,  3 2026-11-29 07:24 squashfs-root/usr/bin/alloy",
        )
        .unwrap();
        assert_eq!((device.mode, device.size), (0o020644, 0));
        let spaced = parse_line("-rw-r--r-- 0/0 5 2024-01-01 00:00 squashfs-root/a  b").unwrap();
        assert_eq!(spaced.path, "squashfs-root/a  b");
        assert_eq!(parse_line("Parallel unsquashfs: Using 2 processors"), None);
    }
}
