//! Looking inside ext4 images without mounting them, through debugfs.

use std::path::Path;
use std::process::Command;

use crate::{checked_output, checked_output_bytes, tool};

/// One inode as debugfs lists it.
#[derive(Debug, Clone)]
pub struct Inode {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
}

fn debugfs(image: &Path, request: &str) -> Vec<u8> {
    checked_output_bytes(
        Command::new(tool("debugfs"))
            .arg("-R")
            .arg(request)
            .arg(image),
    )
}

/// Every inode in an ext4 image, recursively, as (path, mode, owner, size).
pub fn inodes(image: &Path) -> Vec<Inode> {
    let mut inodes = Vec::new();
    let mut dirs = vec!["/".to_string()];
    while let Some(dir) = dirs.pop() {
        let listing = String::from_utf8(debugfs(image, &format!("ls -p {dir}"))).unwrap();
        for line in listing.lines().filter(|l| l.starts_with('/')) {
            // /inode/mode/uid/gid/name/size/
            let fields: Vec<&str> = line.split('/').collect();
            let name = fields[5];
            // Inode 0 marks an unused directory slot (lost+found is made of them).
            if fields[1] == "0" || name == "." && dir != "/" || name == ".." {
                continue;
            }
            let path = if name == "." {
                "/".to_string()
            } else {
                format!("{}/{name}", dir.trim_end_matches('/'))
            };
            let mode = u32::from_str_radix(fields[2], 8).unwrap();
            if mode & 0o170000 == 0o040000 && name != "." {
                dirs.push(path.clone());
            }
            inodes.push(Inode {
                path,
                mode,
                uid: fields[3].parse().unwrap(),
                gid: fields[4].parse().unwrap(),
                size: fields[6].parse().ok(),
            });
        }
    }
    inodes.sort_by(|a, b| a.path.cmp(&b.path));
    inodes
}

/// A file's bytes from inside an ext4 image.
pub fn cat(image: &Path, path: &str) -> Vec<u8> {
    debugfs(image, &format!("cat {path}"))
}

/// A text file from inside an ext4 image.
pub fn text(image: &Path, path: &str) -> String {
    String::from_utf8(cat(image, path)).unwrap()
}

/// `debugfs stat` of a path in an ext4 image.
pub fn stat(image: &Path, path: &str) -> String {
    String::from_utf8_lossy(&debugfs(image, &format!("stat {path}"))).into_owned()
}

/// `dumpe2fs -h`: the superblock, as text.
pub fn superblock(image: &Path) -> String {
    checked_output(Command::new(tool("dumpe2fs")).arg("-h").arg(image))
}
