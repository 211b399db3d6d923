//! The libext2fs calls that `debugfs` makes for our script's `mkdir`, `write` and
//! `set_inode_field` (`sif`), made from our own process, so that the binary can be inflated
//! straight into the image: `debugfs write` only copies a finished file (it sizes the inode from
//! `fstat`), which made the build inflate the binary to disk and then copy it a second time.
//!
//! Why this earns its `unsafe`: measured on the 420 MB bench release, a build filled here took
//! 1.5-1.7 s; the same build with `unzip -p` to disk, `mkfs.ext4`, `debugfs -n -w`, e2fsck and
//! sha256sum took 4.6-7.0 s. `cargo xtask bench` keeps both contenders side by side ("xtask cold
//! ext4" and "xtask cold ext4 (debugfs -n)"), so the choice stays measured.
//!
//! Why the same calls in the same order give the same bytes: the image is what libext2fs writes,
//! and libext2fs decides every block and inode number from the state it is in when asked
//! (allocation goes to the first free place after the parent's), and which blocks it counts
//! into the superblock's `s_kbytes_written` from its block cache, whose content moves with every
//! read, lookups included. So each debugfs command is made here as debugfs makes it: `mkdir`
//! through `ext2fs_mkdir`, `write` through debugfs's `do_write_internal` (new inode, link, the
//! inode written, then the content block by block through `ext2fs_file_write`, zero blocks left
//! as holes), `sif` as one path lookup, inode read and inode write per field, in the script's
//! order. What changes between e2fsprogs releases is the library's own behaviour, not these
//! calls: `fills_byte_for_byte_as_debugfs_does` and its neighbours build every case with the
//! real debugfs and with this fill and compare every byte, so a release that changes either
//! fails there, naming the offsets that differ; two more tests pin image digests.
//!
//! The library is opened at run time (`libext2fs.so.2`, installed with e2fsprogs), so xtask
//! compiles on machines without it; signatures are e2fsprogs 1.47's `ext2fs.h`.

use std::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr, CString};
use std::path::Path;
use std::ptr;

use anyhow::{bail, Context};
use libloading::Library;

type Errcode = c_long;
type Filsys = *mut c_void;
type Ino = u32;

/// `EXT2_ROOT_INO`: the root directory's inode number.
pub const ROOT_INO: Ino = 2;
/// The block size our mke2fs.conf and `mkfs.ext4 -b 4096` give every image.
const BLOCK_SIZE: usize = 4096;
static ZERO_BLOCK: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];

// ext2fs.h: `ext2fs_open` flags.
const EXT2_FLAG_RW: c_int = 0x01;
const EXT2_FLAG_SOFTSUPP_FEATURES: c_int = 0x8000;
const EXT2_FLAG_64BITS: c_int = 0x20000;
const EXT2_FLAG_THREADS: c_int = 0x400_0000;
const EXT2_FLAG_IGNORE_CSUM_ERRORS: c_int = 0x20_0000;
// ext2fs.h: `ext2fs_close2` flag.
const EXT2_FLAG_FLUSH_NO_SYNC: c_int = 1;
// ext2fs.h: `ext2fs_file_open` flag and `ext2fs_file_llseek` whence.
const EXT2_FILE_WRITE: c_int = 0x0001;
const EXT2_SEEK_SET: c_int = 0;
// ext2_fs.h: the directory entry's file type for a regular file (`ext2fs_link`).
const EXT2_FT_REG_FILE: c_int = 1;
/// ext2_err.et: `EXT2_ET_DIR_NO_SPACE`, EXT2_ET_BASE (2133571328, com_err's table number of
/// "ext2") plus its index (38) in the table.
const EXT2_ET_DIR_NO_SPACE: Errcode = 2_133_571_328 + 38;
/// The mode debugfs's `do_write_internal` passes to `ext2fs_new_inode` (`010755`, octal): it
/// only decides whether the allocator treats the inode as a directory.
const NEW_FILE_MODE: c_int = 0o10755;
/// `S_IFREG`: the file type bits of a regular file in `i_mode`.
const S_IFREG: u16 = 0o100000;
/// `sizeof(struct ext2_inode)` and `sizeof(struct ext2_inode_large)` (what debugfs's `sif`
/// reads and writes).
const GOOD_OLD_INODE_SIZE: usize = 128;
const LARGE_INODE_SIZE: usize = 160;
// ext2_fs.h: byte offsets of the fields we set in `struct ext2_inode_large`.
const I_MODE: usize = 0;
const I_UID: usize = 2;
const I_ATIME: usize = 8;
const I_CTIME: usize = 12;
const I_MTIME: usize = 16;
const I_GID: usize = 24;
const I_LINKS_COUNT: usize = 26;
const L_I_UID_HIGH: usize = 120;
const L_I_GID_HIGH: usize = 122;
const I_CTIME_EXTRA: usize = 132;
const I_MTIME_EXTRA: usize = 136;
const I_ATIME_EXTRA: usize = 140;
const I_CRTIME: usize = 144;
const I_CRTIME_EXTRA: usize = 148;
/// Where the primary superblock is in the image, and its `s_wtime` and `s_checksum` in it.
const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_SIZE: usize = 1024;
const S_WTIME: usize = 0x30;
const S_CHECKSUM: usize = 0x3fc;
/// The seed of the superblock's CRC32C, as libext2fs computes it (`~0`).
const CRC32C_SEED: u32 = !0;

macro_rules! functions {
    ($($name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        #[allow(non_snake_case)]
        struct Functions { $($name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)* }
        impl Functions {
            /// # Safety
            /// The signatures above must be the library's.
            unsafe fn load(lib: &Library) -> anyhow::Result<Functions> {
                Ok(Functions { $($name: *lib
                    .get(concat!(stringify!($name), "\0").as_bytes())
                    .with_context(|| format!("libext2fs has no {}", stringify!($name)))?,)* })
            }
        }
    };
}

functions! {
    ext2fs_open: fn(*const c_char, c_int, c_int, c_uint, *mut c_void, *mut Filsys) -> Errcode;
    ext2fs_read_bitmaps: fn(Filsys) -> Errcode;
    ext2fs_namei: fn(Filsys, Ino, Ino, *const c_char, *mut Ino) -> Errcode;
    ext2fs_mkdir: fn(Filsys, Ino, Ino, *const c_char) -> Errcode;
    ext2fs_expand_dir: fn(Filsys, Ino) -> Errcode;
    ext2fs_new_inode: fn(Filsys, Ino, c_int, *mut c_void, *mut Ino) -> Errcode;
    ext2fs_link: fn(Filsys, Ino, *const c_char, Ino, c_int) -> Errcode;
    ext2fs_inode_alloc_stats2: fn(Filsys, Ino, c_int, c_int);
    ext2fs_inode_size_set: fn(Filsys, *mut u8, u64) -> Errcode;
    ext2fs_extent_open2: fn(Filsys, Ino, *mut u8, *mut *mut c_void) -> Errcode;
    ext2fs_extent_free: fn(*mut c_void);
    ext2fs_write_new_inode: fn(Filsys, Ino, *mut u8) -> Errcode;
    ext2fs_file_open: fn(Filsys, Ino, c_int, *mut *mut c_void) -> Errcode;
    ext2fs_file_llseek: fn(*mut c_void, u64, c_int, *mut u64) -> Errcode;
    ext2fs_file_write: fn(*mut c_void, *const c_void, c_uint, *mut c_uint) -> Errcode;
    ext2fs_file_close: fn(*mut c_void) -> Errcode;
    ext2fs_read_inode2: fn(Filsys, Ino, *mut u8, c_int, c_int) -> Errcode;
    ext2fs_write_inode2: fn(Filsys, Ino, *mut u8, c_int, c_int) -> Errcode;
    ext2fs_write_inode_bitmap: fn(Filsys) -> Errcode;
    ext2fs_write_block_bitmap: fn(Filsys) -> Errcode;
    ext2fs_close2: fn(Filsys, c_int) -> Errcode;
    ext2fs_free: fn(Filsys);
    ext2fs_crc32c_le: fn(u32, *const u8, usize) -> u32;
    initialize_ext2_error_table: fn();
    error_message: fn(Errcode) -> *const c_char;
}

/// libext2fs, loaded once for the life of the process and never unloaded: its error table is
/// registered with libcom_err, which keeps a pointer to it.
pub struct Libext2fs {
    f: Functions,
    unix_io_manager: *mut c_void,
    _lib: Library,
}

// SAFETY: the fields are function pointers and the address of the library's static unix I/O
// manager, which libext2fs only reads; each filesystem handle (a `Session`, which is neither
// Send nor Sync) stays on the thread that opened it.
unsafe impl Send for Libext2fs {}
// SAFETY: as for Send: nothing here is written after loading, and no handle is shared.
unsafe impl Sync for Libext2fs {}

/// The shared object that comes with e2fsprogs (its own package on some distributions).
pub const LIBRARY: &str = "libext2fs.so.2";

static LOADED: std::sync::OnceLock<Result<Libext2fs, String>> = std::sync::OnceLock::new();

impl Libext2fs {
    /// The library, loaded on first use.
    pub fn get() -> anyhow::Result<&'static Libext2fs> {
        LOADED
            .get_or_init(|| Libext2fs::load().map_err(|err| format!("{err:#}")))
            .as_ref()
            .map_err(|err| anyhow::anyhow!("{err}"))
    }

    fn load() -> anyhow::Result<Libext2fs> {
        // SAFETY: loading libext2fs runs only its (and libcom_err's) initialisers; the
        // signatures in `functions!` are e2fsprogs 1.47's. Registering the error table (once,
        // under the OnceLock) is what debugfs does first, and lets error_message name ext2
        // codes instead of formatting them into a shared static buffer.
        unsafe {
            let lib = Library::new(LIBRARY).with_context(|| {
                format!("cannot load {LIBRARY}, with which ext4 images are filled: install e2fsprogs, which brings it")
            })?;
            let f = Functions::load(&lib)?;
            (f.initialize_ext2_error_table)();
            let manager: libloading::Symbol<*mut *mut c_void> = lib
                .get(b"unix_io_manager\0")
                .context("libext2fs has no unix_io_manager")?;
            let unix_io_manager = **manager;
            Ok(Libext2fs {
                f,
                unix_io_manager,
                _lib: lib,
            })
        }
    }

    fn check(&self, code: Errcode, what: impl FnOnce() -> String) -> anyhow::Result<()> {
        match code {
            0 => Ok(()),
            _ => Err(self.error(code, what())),
        }
    }

    /// libext2fs's message for `code`, after `what` was being done.
    fn error(&self, code: Errcode, what: String) -> anyhow::Error {
        // SAFETY: error_message returns a static or thread-local NUL-terminated string.
        let message = unsafe { CStr::from_ptr((self.f.error_message)(code)) };
        anyhow::anyhow!(
            "{what}: {} (libext2fs error {code})",
            message.to_string_lossy()
        )
    }
}

fn c_string(text: &str) -> anyhow::Result<CString> {
    CString::new(text).with_context(|| format!("{text:?} has a NUL byte"))
}

/// One open filesystem, as debugfs holds it between `debugfs -w` and the end of its script.
pub struct Session<'l> {
    lib: &'l Libext2fs,
    fs: Filsys,
    image: std::path::PathBuf,
}

impl<'l> Session<'l> {
    /// Opens `image` read-write the way `debugfs -w` does (and reads its bitmaps).
    pub fn open(lib: &'l Libext2fs, image: &Path) -> anyhow::Result<Session<'l>> {
        let name = c_string(&image.to_string_lossy())?;
        // Checksums are still written; IGNORE_CSUM_ERRORS only skips verifying what is read
        // back, which libext2fs does for the extent tree at every block it allocates (most of
        // the fill's time, once the tree has a leaf block). The image is our own, fresh from
        // mkfs, and e2fsck verifies every checksum before the build keeps it.
        let flags = EXT2_FLAG_SOFTSUPP_FEATURES
            | EXT2_FLAG_64BITS
            | EXT2_FLAG_THREADS
            | EXT2_FLAG_RW
            | EXT2_FLAG_IGNORE_CSUM_ERRORS;
        let mut fs: Filsys = ptr::null_mut();
        // SAFETY: valid C string, out-pointer to a local; the manager comes from the library.
        let code = unsafe {
            (lib.f.ext2fs_open)(name.as_ptr(), flags, 0, 0, lib.unix_io_manager, &mut fs)
        };
        lib.check(code, || format!("opening {}", image.display()))?;
        let session = Session {
            lib,
            fs,
            image: image.to_path_buf(),
        };
        // SAFETY: fs was opened just above and is freed only by close or Drop.
        let code = unsafe { (lib.f.ext2fs_read_bitmaps)(session.fs) };
        lib.check(code, || "reading the allocation bitmaps".into())?;
        Ok(session)
    }

    /// `ext2fs_namei` from the root, as debugfs resolves a path (`/`, `usr/bin`): the inode,
    /// or libext2fs's error code (not found, most often).
    fn lookup(&self, cwd: Ino, name: &CStr) -> Result<Ino, Errcode> {
        let mut ino = 0;
        // SAFETY: fs is open; valid C string and out-pointer.
        let code =
            unsafe { (self.lib.f.ext2fs_namei)(self.fs, ROOT_INO, cwd, name.as_ptr(), &mut ino) };
        if code == 0 {
            Ok(ino)
        } else {
            Err(code)
        }
    }

    fn inode_of(&self, path: &str) -> anyhow::Result<Ino> {
        self.lookup(ROOT_INO, &c_string(path)?)
            .map_err(|code| self.lib.error(code, format!("looking up {path}")))
    }

    /// The parent's inode and the last component, as debugfs splits `dir/name`.
    fn parent_and_name<'p>(&self, path: &'p str) -> anyhow::Result<(Ino, &'p str)> {
        match path.rsplit_once('/') {
            Some((dir, name)) => Ok((self.inode_of(dir)?, name)),
            None => Ok((ROOT_INO, path)),
        }
    }

    /// Retries `op` once after growing `dir` when it is full, as debugfs does.
    fn with_room(&self, dir: Ino, what: &str, op: impl Fn() -> Errcode) -> anyhow::Result<()> {
        let mut code = op();
        if code == EXT2_ET_DIR_NO_SPACE {
            // SAFETY: fs is open.
            let grown = unsafe { (self.lib.f.ext2fs_expand_dir)(self.fs, dir) };
            self.lib
                .check(grown, || format!("expanding the directory of {what}"))?;
            code = op();
        }
        self.lib.check(code, || format!("creating {what}"))
    }

    /// debugfs `mkdir PATH`.
    pub fn mkdir(&self, path: &str) -> anyhow::Result<()> {
        let (parent, name) = self.parent_and_name(path)?;
        let name = c_string(name)?;
        // SAFETY: fs is open; valid C string.
        self.with_room(parent, path, || unsafe {
            (self.lib.f.ext2fs_mkdir)(self.fs, parent, 0, name.as_ptr())
        })
    }

    /// debugfs `write SRC PATH` for a source of `size` bytes with permission bits `mode`, the
    /// content then given to the returned writer in order.
    pub fn create_file(&self, path: &str, size: u64, mode: u32) -> anyhow::Result<FileWriter<'_>> {
        let (parent, name) = self.parent_and_name(path)?;
        let c_name = c_string(name)?;
        if self.lookup(parent, &c_name).is_ok() {
            bail!("{path} is written twice");
        }
        let f = &self.lib.f;
        let mut ino = 0;
        // SAFETY: fs is open; out-pointer to a local; no inode bitmap of our own (NULL).
        let code = unsafe {
            (f.ext2fs_new_inode)(self.fs, parent, NEW_FILE_MODE, ptr::null_mut(), &mut ino)
        };
        self.lib
            .check(code, || format!("allocating an inode for {path}"))?;
        // SAFETY: fs is open; c_name is a valid C string that outlives the call.
        self.with_room(parent, path, || unsafe {
            (f.ext2fs_link)(self.fs, parent, c_name.as_ptr(), ino, EXT2_FT_REG_FILE)
        })?;
        // SAFETY: fs is open and ino was just allocated in it; no memory is passed.
        unsafe { (f.ext2fs_inode_alloc_stats2)(self.fs, ino, 1, 0) };

        // struct ext2_inode, as do_write_internal fills it; sif sets owner, mode and times later.
        let mut inode = [0u8; GOOD_OLD_INODE_SIZE];
        put16(&mut inode, I_MODE, (mode & 0o7777) as u16 | S_IFREG);
        put16(&mut inode, I_LINKS_COUNT, 1);
        // SAFETY: fs is open; inode is a struct ext2_inode-sized buffer that outlives every
        // call; the extent handle is freed at once and not used again.
        unsafe {
            let code = (f.ext2fs_inode_size_set)(self.fs, inode.as_mut_ptr(), size);
            self.lib
                .check(code, || format!("setting the size of {path}"))?;
            let mut handle = ptr::null_mut();
            let code = (f.ext2fs_extent_open2)(self.fs, ino, inode.as_mut_ptr(), &mut handle);
            self.lib
                .check(code, || format!("starting the extent tree of {path}"))?;
            (f.ext2fs_extent_free)(handle);
            let code = (f.ext2fs_write_new_inode)(self.fs, ino, inode.as_mut_ptr());
            self.lib
                .check(code, || format!("writing the inode of {path}"))?;
        }
        let mut file = ptr::null_mut();
        // SAFETY: ino exists; out-pointer to a local.
        let code = unsafe { (f.ext2fs_file_open)(self.fs, ino, EXT2_FILE_WRITE, &mut file) };
        self.lib
            .check(code, || format!("opening {path} in the image"))?;
        Ok(FileWriter {
            session: self,
            file,
            path: path.to_string(),
            size,
            offset: 0,
            partial: Vec::new(),
        })
    }

    /// debugfs `sif PATH mode|uid|gid|atime|mtime|ctime|crtime VALUE`: per field, as debugfs
    /// does, a lookup of the path, a read of the inode and a write (the lookups' directory
    /// reads move blocks in libext2fs's cache, which decides what it counts as written).
    pub fn set_owner_mode_and_times(
        &self,
        path: &str,
        mode: u32,
        epoch: u64,
    ) -> anyhow::Result<()> {
        type SetField<'a> = &'a dyn Fn(&mut [u8; LARGE_INODE_SIZE]);
        let fields: [(&str, SetField); 7] = [
            ("mode", &|i| put16(i, I_MODE, mode as u16)),
            ("uid", &|i| {
                put16(i, I_UID, 0);
                put16(i, L_I_UID_HIGH, 0);
            }),
            ("gid", &|i| {
                put16(i, I_GID, 0);
                put16(i, L_I_GID_HIGH, 0);
            }),
            ("atime", &|i| set_time(i, I_ATIME, I_ATIME_EXTRA, epoch)),
            ("mtime", &|i| set_time(i, I_MTIME, I_MTIME_EXTRA, epoch)),
            ("ctime", &|i| set_time(i, I_CTIME, I_CTIME_EXTRA, epoch)),
            ("crtime", &|i| set_time(i, I_CRTIME, I_CRTIME_EXTRA, epoch)),
        ];
        for (field, set) in fields {
            let ino = self.inode_of(path)?;
            let mut inode = [0u8; LARGE_INODE_SIZE];
            let size = LARGE_INODE_SIZE as c_int;
            // SAFETY: fs is open; inode is `size` bytes long, as the call is told.
            let code = unsafe {
                (self.lib.f.ext2fs_read_inode2)(self.fs, ino, inode.as_mut_ptr(), size, 0)
            };
            self.lib
                .check(code, || format!("reading the inode of {path}"))?;
            set(&mut inode);
            // SAFETY: fs is open; inode is `size` bytes long, as the call is told.
            let code = unsafe {
                (self.lib.f.ext2fs_write_inode2)(self.fs, ino, inode.as_mut_ptr(), size, 0)
            };
            self.lib
                .check(code, || format!("setting {field} of {path}"))?;
        }
        Ok(())
    }

    /// Writes the bitmaps and closes, as debugfs does at the end of its script, but without
    /// its fsync: the build syncs the image while it hashes it. Then sets the superblock's
    /// last-write time to `epoch` (debugfs gets it from `E2FSPROGS_FAKE_TIME`, which a
    /// multi-threaded process cannot set for itself) and its checksum.
    pub fn close(mut self, epoch: u64) -> anyhow::Result<()> {
        let f = &self.lib.f;
        // SAFETY: fs is open. close2 frees it when it succeeds (then it is never used again);
        // when it fails, Drop frees it.
        unsafe {
            let code = (f.ext2fs_write_inode_bitmap)(self.fs);
            self.lib.check(code, || "writing the inode bitmap".into())?;
            let code = (f.ext2fs_write_block_bitmap)(self.fs);
            self.lib.check(code, || "writing the block bitmap".into())?;
            // Skipping the sync changes when blocks reach the file, not which bytes: the block
            // cache is written out before the superblock either way (a test compares bytes).
            let code = (f.ext2fs_close2)(self.fs, EXT2_FLAG_FLUSH_NO_SYNC);
            self.lib
                .check(code, || format!("closing {}", self.image.display()))?;
            self.fs = ptr::null_mut();
        }
        self.stamp_write_time(epoch)
    }

    fn stamp_write_time(&self, epoch: u64) -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.image)
            .with_context(|| format!("opening {}", self.image.display()))?;
        let mut sb = [0u8; SUPERBLOCK_SIZE];
        file.read_exact_at(&mut sb, SUPERBLOCK_OFFSET)?;
        // The epoch fits: build refuses one past u32::MAX (and s_wtime_hi stays 0, as mkfs left it).
        let wtime = u32::try_from(epoch).context("the epoch does not fit in s_wtime")?;
        sb[S_WTIME..S_WTIME + 4].copy_from_slice(&wtime.to_le_bytes());
        // SAFETY: sb holds more than S_CHECKSUM bytes; the function only reads them.
        let checksum =
            unsafe { (self.lib.f.ext2fs_crc32c_le)(CRC32C_SEED, sb.as_ptr(), S_CHECKSUM) };
        sb[S_CHECKSUM..].copy_from_slice(&checksum.to_le_bytes());
        file.write_all_at(&sb, SUPERBLOCK_OFFSET)
            .with_context(|| format!("writing the superblock of {}", self.image.display()))
    }
}

impl Drop for Session<'_> {
    /// On an error the half-made image is thrown away: free without flushing anything more.
    fn drop(&mut self) {
        if !self.fs.is_null() {
            // SAFETY: fs is open and not used again.
            unsafe { (self.lib.f.ext2fs_free)(self.fs) };
        }
    }
}

fn put16(inode: &mut [u8], at: usize, value: u16) {
    inode[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

/// debugfs's parse_time: the low 32 bits, and the epoch bits in the `_extra` field (its two low
/// bits; the rest are nanoseconds, kept).
fn set_time(inode: &mut [u8], low: usize, extra: usize, epoch: u64) {
    let epoch = epoch as i64;
    inode[low..low + 4].copy_from_slice(&(epoch as u32).to_le_bytes());
    let high = (((epoch - (epoch as i32) as i64) >> 32) & 3) as u32;
    let old = u32::from_le_bytes(inode[extra..extra + 4].try_into().unwrap());
    inode[extra..extra + 4].copy_from_slice(&((old & !3) | high).to_le_bytes());
}

/// A file's content going into the image, as debugfs's `copy_file_chunk` writes it: block by
/// block, an all-zero block left as a hole.
pub struct FileWriter<'s> {
    session: &'s Session<'s>,
    file: *mut c_void,
    path: String,
    size: u64,
    offset: u64,
    /// The start of a block that the last `write` ended inside.
    partial: Vec<u8>,
}

impl FileWriter<'_> {
    /// Appends `data`. Every block is written (or skipped) once it is whole.
    pub fn append(&mut self, mut data: &[u8]) -> anyhow::Result<()> {
        let written = self.offset + self.partial.len() as u64 + data.len() as u64;
        if written > self.size {
            bail!(
                "{} is longer than the {} bytes it was created with",
                self.path,
                self.size
            );
        }
        if !self.partial.is_empty() {
            let take = (BLOCK_SIZE - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < BLOCK_SIZE {
                return Ok(());
            }
            let block = std::mem::take(&mut self.partial);
            self.block(&block)?;
        }
        let whole = data.len() - data.len() % BLOCK_SIZE;
        for block in data[..whole].chunks_exact(BLOCK_SIZE) {
            self.block(block)?;
        }
        self.partial.extend_from_slice(&data[whole..]);
        Ok(())
    }

    fn block(&mut self, block: &[u8]) -> anyhow::Result<()> {
        let offset = self.offset;
        self.offset += block.len() as u64;
        // A slice comparison is a memcmp: fast in a debug build too (`cargo xtask` runs one).
        if block == &ZERO_BLOCK[..block.len()] {
            return Ok(());
        }
        let lib = self.session.lib;
        // SAFETY: file is open (closed only by finish or Drop); block is block.len() bytes,
        // which the write is told; the seek takes no out-pointer (NULL).
        unsafe {
            let code =
                (lib.f.ext2fs_file_llseek)(self.file, offset, EXT2_SEEK_SET, ptr::null_mut());
            lib.check(code, || format!("seeking in {}", self.path))?;
            let mut done: c_uint = 0;
            let code = (lib.f.ext2fs_file_write)(
                self.file,
                block.as_ptr().cast(),
                block.len() as c_uint,
                &mut done,
            );
            lib.check(code, || format!("writing {} into the image", self.path))?;
            if done as usize != block.len() {
                bail!(
                    "libext2fs wrote {done} of {} bytes of {}",
                    block.len(),
                    self.path
                );
            }
        }
        Ok(())
    }

    /// Writes the last (short) block and closes the file; its content must have been exactly
    /// the size it was created with.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let last = std::mem::take(&mut self.partial);
        if !last.is_empty() {
            self.block(&last)?;
        }
        if self.offset != self.size {
            bail!(
                "{} ended after {} of its {} bytes",
                self.path,
                self.offset,
                self.size
            );
        }
        let file = std::mem::replace(&mut self.file, ptr::null_mut());
        let lib = self.session.lib;
        // SAFETY: file is open and not used again.
        let code = unsafe { (lib.f.ext2fs_file_close)(file) };
        lib.check(code, || format!("closing {} in the image", self.path))
    }
}

/// For copying a staged file in with [`crate::util::files::copy_stream`].
impl std::io::Write for FileWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.append(data)
            .map_err(|err| std::io::Error::other(format!("{err:#}")))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for FileWriter<'_> {
    fn drop(&mut self) {
        if !self.file.is_null() {
            // SAFETY: file is open and not used again; the image is being thrown away.
            unsafe { (self.session.lib.f.ext2fs_file_close)(self.file) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libext2fs's errors read as its own messages, not "Unknown code ext2 NN": the error table
    /// is registered.
    #[test]
    fn errors_say_what_libext2fs_says() {
        let dir = tempfile::tempdir().unwrap();
        let not_ext4 = dir.path().join("zeros.raw");
        std::fs::write(&not_ext4, vec![0u8; 1 << 20]).unwrap();
        let err = match Session::open(Libext2fs::get().unwrap(), &not_ext4) {
            Ok(_) => panic!("opened a file of zeros"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains("Bad magic number in super-block"), "{err}");
        assert!(err.contains("zeros.raw"), "{err}");
    }

    #[test]
    fn times_keep_nanoseconds_and_set_the_epoch_bits() {
        let mut inode = [0u8; LARGE_INODE_SIZE];
        inode[140..144].copy_from_slice(&(0xabcd_0004u32 | 3).to_le_bytes());
        set_time(&mut inode, 8, 140, 1_704_067_200);
        assert_eq!(&inode[8..12], &1_704_067_200u32.to_le_bytes());
        assert_eq!(&inode[140..144], &0xabcd_0004u32.to_le_bytes());
        // Past 2038 the signed 32-bit seconds wrap and the first epoch bit says so.
        set_time(&mut inode, 8, 140, 4_294_967_295);
        assert_eq!(&inode[140..144], &0xabcd_0005u32.to_le_bytes());
    }
}
