//! ext4 through `debugfs`, one directory at a time and by inode number (`<12>`), so that no
//! path inside the image is ever resolved by a tool (debugfs would follow links inside it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::{bounds, Lookup, Node, Tree, OUTPUT_LIMIT};
use crate::util::sandbox::{run_bounded, Overflow};
use crate::util::tools;

/// The root directory's inode number in every ext2/3/4 filesystem.
const ROOT_INODE: u64 = 2;

pub struct Ext4 {
    debugfs: PathBuf,
    image: PathBuf,
}

impl Ext4 {
    pub fn open(image: &Path) -> anyhow::Result<Ext4> {
        let found = tools::preflight(&xshell::Shell::new()?, &[tools::DEBUGFS])?;
        Ok(Ext4 {
            debugfs: found.path(tools::DEBUGFS).to_path_buf(),
            image: image.to_path_buf(),
        })
    }

    /// Runs one debugfs request. debugfs exits 0 even when a request fails, saying why on
    /// stderr after its version banner.
    fn request(&self, request: &str, limit: usize, overflow: Overflow) -> anyhow::Result<Vec<u8>> {
        let mut command = Command::new(&self.debugfs);
        command.arg("-R").arg(request).arg(&self.image);
        let output = run_bounded(command, bounds(limit, overflow))?;
        let complaints: Vec<&str> = output
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
            .collect();
        if output.success == Some(false) || !complaints.is_empty() {
            bail!(
                "debugfs -R {request:?} failed: {}",
                complaints.join(" / ").trim()
            );
        }
        Ok(output.stdout)
    }
}

impl Tree for Ext4 {
    fn root(&mut self) -> anyhow::Result<Node> {
        let listing = self.request(
            &format!("ls -p <{ROOT_INODE}>"),
            OUTPUT_LIMIT,
            Overflow::Fail,
        )?;
        let mut dots = entries(&listing).filter(|e| e.as_ref().map_or(true, |e| e.name == b"."));
        let root = dots
            .next()
            .context("the root directory has no `.` entry")??;
        Ok(root.node(String::new()))
    }

    fn lookup(&mut self, dir: &Node, name: &str) -> anyhow::Result<Lookup> {
        let listing = self.request(&format!("ls -p <{}>", dir.id), OUTPUT_LIMIT, Overflow::Fail)?;
        let mut found = None;
        let mut dots = [0; 2];
        for entry in entries(&listing) {
            let entry = entry?;
            if bad_name(&entry.name, &mut dots) {
                return Ok(Lookup::BadName(entry.name));
            }
            if entry.name == name.as_bytes() {
                if found.is_some() {
                    return Ok(Lookup::BadName(entry.name));
                }
                found = Some(entry);
            }
        }
        let Some(entry) = found else {
            return Ok(Lookup::Missing);
        };
        let path = if dir.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", dir.path)
        };
        Ok(Lookup::Found(entry.node(path)))
    }

    fn link_target(&mut self, link: &Node) -> anyhow::Result<Vec<u8>> {
        // A target under 60 bytes sits in the inode (a "fast" link) and `stat` prints it;
        // a longer one sits in a block that `cat` prints.
        let stat = self.request(&format!("stat <{}>", link.id), 1 << 20, Overflow::Fail)?;
        if let Some(target) = fast_link_target(&stat) {
            return Ok(target);
        }
        self.request(&format!("cat <{}>", link.id), 4096, Overflow::Head)
    }

    fn read_head(&mut self, file: &Node, limit: usize) -> anyhow::Result<Vec<u8>> {
        // `cat` streams the file; we take `limit` bytes and stop it.
        self.request(&format!("cat <{}>", file.id), limit, Overflow::Head)
    }
}

/// A name that no directory may hold: empty, with `/`, or a second `.` or `..` (counted in
/// `dots` across the directory). debugfs prints names as they are, so a crafted `/` shows; it
/// prints a name only up to a NUL, so a NUL cannot be seen (nor does it matter: the cut name
/// is only compared).
fn bad_name(name: &[u8], dots: &mut [u32; 2]) -> bool {
    match name {
        b"." => dots[0] += 1,
        b".." => dots[1] += 1,
        _ => {}
    }
    name.is_empty() || name.contains(&b'/') || dots.iter().any(|d| *d > 1)
}

/// One line of debugfs's `ls -p`.
#[derive(Debug, PartialEq, Eq)]
struct ListedEntry {
    inode: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    name: Vec<u8>,
    /// Empty for directories.
    size: Option<u64>,
}

impl ListedEntry {
    fn node(self, path: String) -> Node {
        Node {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size.unwrap_or(0),
            id: self.inode,
            path,
            link: None,
        }
    }
}

/// Parses `ls -p`: `/inode/mode/uid/gid/name/size/` per entry (size empty for directories),
/// one line at a time. The name is taken between the fourth `/` and the last-but-one, so a
/// crafted name with `/` stays whole (and is refused). Inode 0 marks an unused slot, listed
/// without name or size.
fn entries(text: &[u8]) -> impl Iterator<Item = anyhow::Result<ListedEntry>> + '_ {
    text.split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace) && !line.starts_with(b"/0/"))
        .map(|line| {
            parse_line(line).with_context(|| {
                format!(
                    "unexpected line in debugfs's `ls -p` output: {:?}",
                    String::from_utf8_lossy(line)
                )
            })
        })
}

fn parse_line(line: &[u8]) -> Option<ListedEntry> {
    let inner = line.strip_prefix(b"/")?.strip_suffix(b"/")?;
    let mut fields = inner.splitn(5, |b| *b == b'/');
    let text = |f: &[u8]| std::str::from_utf8(f).ok().map(str::to_string);
    let inode: u64 = text(fields.next()?)?.parse().ok()?;
    let mode = u32::from_str_radix(&text(fields.next()?)?, 8).ok()?;
    let uid = text(fields.next()?)?.parse().ok()?;
    let gid = text(fields.next()?)?.parse().ok()?;
    let rest = fields.next()?;
    let cut = rest.iter().rposition(|b| *b == b'/')?;
    let size = text(&rest[cut + 1..])?;
    let size = if size.is_empty() {
        None
    } else {
        Some(size.parse().ok()?)
    };
    Some(ListedEntry {
        inode,
        mode,
        uid,
        gid,
        name: rest[..cut].to_vec(),
        size,
    })
}

/// `Fast link dest: "TARGET"` from debugfs's `stat`.
fn fast_link_target(stat: &[u8]) -> Option<Vec<u8>> {
    const MARK: &[u8] = b"Fast link dest: \"";
    let start = stat.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let rest = &stat[start..];
    let end = rest.windows(2).rposition(|w| w == b"\"\n")?;
    Some(rest[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_debugfs_directory_listings() {
        let text = b"\n/2/040755/0/0/.//\n/0/000000/0/0//\n/12/100755/0/7/alloy/734208/\n";
        let listed: Vec<ListedEntry> = entries(text).map(Result::unwrap).collect();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[1],
            ListedEntry {
                inode: 12,
                mode: 0o100755,
                uid: 0,
                gid: 7,
                name: b"alloy".to_vec(),
                size: Some(734208)
            }
        );
        assert_eq!(listed[0].size, None);
        // A crafted name keeps its slashes, and is refused by the lookup.
        let crafted = parse_line(b"/13/100644/0/0/../../etc/x/5/").unwrap();
        assert_eq!(crafted.name, b"../../etc/x");
        assert!(bad_name(&crafted.name, &mut [0; 2]));
        let mut dots = [0; 2];
        assert!(!bad_name(b"..", &mut dots));
        assert!(bad_name(b"..", &mut dots), "a second `..`");
        assert!(entries(b"ls: Bad inode\n").next().unwrap().is_err());
    }

    #[test]
    fn reads_fast_link_targets_from_stat() {
        let stat = b"Inode: 13   Type: symlink    Mode:  0777\nFast link dest: \"/etc/shadow\"\n";
        assert_eq!(fast_link_target(stat), Some(b"/etc/shadow".to_vec()));
        assert_eq!(fast_link_target(b"Inode: 13 Type: regular\n"), None);
    }
}
