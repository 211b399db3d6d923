//! A directory reached without following links, and owned by us: everything inside it is opened,
//! created, renamed and removed from its descriptor, never by path again, so no link planted in
//! a shared cache (`~/.cache/alloy-sysext` pointing at `/etc`, a version folder pointing
//! elsewhere) leads out of it, and nothing in it is read unless it is a regular file of ours.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// A directory we own, held open.
pub struct SafeDir {
    fd: OwnedFd,
    /// Where it is, for messages only.
    shown: PathBuf,
}

/// What a name in a [`SafeDir`] holds.
pub enum Found {
    Missing,
    /// A regular file of ours, opened without following a link and without blocking.
    File(File),
    /// Anything else (a link, a FIFO, a directory, a device, another user's file), described.
    Other(&'static str),
}

/// What a file type is, in words.
pub fn describe(file_type: FileType) -> &'static str {
    match file_type {
        FileType::Symlink => "a symbolic link",
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::RegularFile => "a regular file",
        _ => "not a regular file",
    }
}

fn our_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl SafeDir {
    /// `parent/name`, created (mode 0700) if missing. `parent` is taken as the user gave it;
    /// `name` must be a directory of ours, not a link to one.
    pub fn open(parent: &Path, name: &str) -> io::Result<SafeDir> {
        let parent_fd = rustix::fs::open(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        SafeDir {
            fd: parent_fd,
            shown: parent.to_path_buf(),
        }
        .child(name)
    }

    /// The directory `name` inside this one, created (mode 0700) if missing; it must be a
    /// directory of ours, not a link to one.
    pub fn child(&self, name: &str) -> io::Result<SafeDir> {
        let shown = self.shown.join(name);
        match rustix::fs::mkdirat(&self.fd, name, Mode::RWXU) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                let what = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|stat| describe(FileType::from_raw_mode(stat.st_mode)))
                    .unwrap_or("not a directory");
                return Err(invalid(format!(
                    "{} is {what}, not a directory of ours",
                    shown.display()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        if stat.st_uid != our_uid() {
            return Err(invalid(format!(
                "{} belongs to uid {}, not to us",
                shown.display(),
                stat.st_uid
            )));
        }
        Ok(SafeDir { fd, shown })
    }

    /// Where it is, for messages.
    pub fn path(&self) -> &Path {
        &self.shown
    }

    /// A second handle on the same directory (for a clean-up that may run on another thread).
    pub fn try_clone(&self) -> io::Result<SafeDir> {
        Ok(SafeDir {
            fd: self.fd.try_clone()?,
            shown: self.shown.clone(),
        })
    }

    /// The file `name`, opened for reading if it is a regular file of ours.
    pub fn open_file(&self, name: &str) -> io::Result<Found> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(Found::Missing),
            Err(rustix::io::Errno::LOOP) => return Ok(Found::Other("a symbolic link")),
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        let file_type = FileType::from_raw_mode(stat.st_mode);
        if file_type != FileType::RegularFile {
            return Ok(Found::Other(describe(file_type)));
        }
        if stat.st_uid != our_uid() {
            return Ok(Found::Other("another user's file"));
        }
        Ok(Found::File(File::from(fd)))
    }

    /// A new empty file `name` (mode 0600), which must not exist yet.
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::RUSR | Mode::WUSR)?;
        Ok(File::from(fd))
    }

    /// Removes `name`: a file or link (never what it points to), or an empty directory.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Err(rustix::io::Errno::ISDIR) => {
                rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(Into::into)
            }
            other => other.map_err(Into::into),
        }
    }

    /// Renames `from` to `to`, both in this directory (replacing `to`).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(Into::into)
    }

    /// Every name in it. (Listed through /proc: the descriptor, not the path, is what is read.)
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        use std::os::fd::AsRawFd;
        let listed = Path::new("/proc/self/fd").join(self.fd.as_raw_fd().to_string());
        std::fs::read_dir(listed)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    /// The directory opened anew, to flock: a lock belongs to an open file description, which
    /// a duplicated descriptor shares, so locking through a duplicate would hold the lock for
    /// as long as any handle of ours lives.
    pub fn lock_handle(&self) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(
            &self.fd,
            ".",
            flags,
            Mode::empty(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link in our name, at either level, is never followed: nothing is created where it
    /// points, and its name says what it is.
    #[test]
    fn links_at_any_level_are_refused_and_never_followed() {
        let home = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), home.path().join("alloy-sysext")).unwrap();
        let err = SafeDir::open(home.path(), "alloy-sysext").err().unwrap();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);

        std::fs::remove_file(home.path().join("alloy-sysext")).unwrap();
        let cache = SafeDir::open(home.path(), "alloy-sysext").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), home.path().join("alloy-sysext/v1")).unwrap();
        assert!(cache.child("v1").is_err());
        let version = cache.child("v2").unwrap();

        // Files: a link (to a file of ours elsewhere, or to /dev/zero), a FIFO, a directory.
        std::fs::write(elsewhere.path().join("target"), b"x").unwrap();
        let dir = home.path().join("alloy-sysext/v2");
        std::os::unix::fs::symlink(elsewhere.path().join("target"), dir.join("link")).unwrap();
        xtask_testkit::link_to_dev_zero(&dir.join("zero"));
        std::fs::create_dir(dir.join("subdir")).unwrap();
        xtask_testkit::mkfifo(&dir.join("fifo"));
        for (name, what) in [
            ("link", "a symbolic link"),
            ("zero", "a symbolic link"),
            ("subdir", "a directory"),
            ("fifo", "a FIFO"),
        ] {
            match version.open_file(name).unwrap() {
                Found::Other(found) => assert_eq!(found, what, "{name}"),
                _ => panic!("{name} opened"),
            }
            version.remove(name).unwrap();
        }
        assert!(
            elsewhere.path().join("target").is_file(),
            "a link's target is kept"
        );
        assert!(matches!(
            version.open_file("absent").unwrap(),
            Found::Missing
        ));

        let mut new = version.create_new("new").unwrap();
        std::io::Write::write_all(&mut new, b"hello").unwrap();
        version.rename("new", "kept").unwrap();
        assert!(matches!(version.open_file("kept").unwrap(), Found::File(_)));
        assert_eq!(version.names().unwrap(), [OsString::from("kept")]);
    }
}
