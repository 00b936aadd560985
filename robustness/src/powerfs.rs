//! Power loss for real processes: a FUSE passthrough filesystem (the `fuser` crate) over a
//! backing directory that remembers, for every file, what each write since the file's last
//! fsync/fdatasync overwrote. Cutting the power ([`PowerFs::cut`]) unmounts it (every request
//! in flight finishes first) and undoes every such write on the backing files: they are left as
//! they were at their last sync, as a disk is after a power cut that lost its page cache.
//! SIGKILL alone never shows a missing fsync (the page cache survives it); this does.
//!
//! Directory operations (create, rename, unlink) are kept as if durable at once: the suite does
//! not test directory fsyncs (a simplification that can hide a bug, never invent one).
//! Writes go through to the backing files immediately (no writeback cache), so the undo record
//! is exact.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::from_secs(0);

/// What the writes since a file's last sync changed, to undo them.
#[derive(Default)]
struct Undo {
    /// The file's size at its last sync.
    size: u64,
    /// Bytes overwritten, in order: (offset, old bytes).
    overwritten: Vec<(u64, Vec<u8>)>,
}

/// Unsynced changes per backing file (by path relative to the backing root, kept up to date
/// across renames).
type Pending = Arc<Mutex<HashMap<PathBuf, Undo>>>;

struct Inner {
    /// Inode number → path relative to the backing root ("" is the root).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Open files: the inode (its path may change while open) and the backing file.
    handles: HashMap<u64, (u64, Arc<File>)>,
    next_fh: u64,
}

struct Fs {
    root: PathBuf,
    inner: Mutex<Inner>,
    pending: Pending,
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(EIO))
}

/// Linux's EIO, for an I/O error that carries no OS error number.
const EIO: i32 = 5;

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

impl Fs {
    fn ino(&self, rel: &Path) -> u64 {
        let mut g = self.inner.lock().expect("fs");
        if let Some(&i) = g.inodes.get(rel) {
            return i;
        }
        let i = g.next_ino;
        g.next_ino += 1;
        g.inodes.insert(rel.to_path_buf(), i);
        g.paths.insert(i, rel.to_path_buf());
        i
    }

    fn rel(&self, ino: INodeNo) -> Option<PathBuf> {
        self.inner.lock().expect("fs").paths.get(&ino.0).cloned()
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Option<PathBuf> {
        self.rel(parent).map(|p| p.join(name))
    }

    fn attr(&self, rel: &Path) -> std::io::Result<FileAttr> {
        let m = std::fs::symlink_metadata(self.root.join(rel))?;
        let kind = if m.is_dir() {
            FileType::Directory
        } else if m.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::RegularFile
        };
        Ok(FileAttr {
            ino: INodeNo(self.ino(rel)),
            size: m.len(),
            blocks: m.blocks(),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind,
            perm: (m.permissions().mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Records what a change of `[offset, offset + len)` of `rel` (and a new size) overwrites.
    fn remember(&self, rel: &Path, file: &File, offset: u64, len: u64) -> std::io::Result<()> {
        let size = file.metadata()?.len();
        let mut pending = self.pending.lock().expect("pending");
        let undo = pending.entry(rel.to_path_buf()).or_insert_with(|| Undo {
            size,
            overwritten: Vec::new(),
        });
        let end = (offset + len).min(size);
        if offset < end {
            let mut old = vec![0; (end - offset) as usize];
            file.read_exact_at(&mut old, offset)?;
            undo.overwritten.push((offset, old));
        }
        Ok(())
    }

    /// An open file's current path (renames included) and its backing file.
    fn handle(&self, fh: FileHandle) -> Option<(PathBuf, Arc<File>)> {
        let g = self.inner.lock().expect("fs");
        let (ino, f) = g.handles.get(&fh.0)?;
        Some((g.paths.get(ino)?.clone(), Arc::clone(f)))
    }

    fn open_handle(&self, rel: &Path, file: File) -> u64 {
        let ino = self.ino(rel);
        let mut g = self.inner.lock().expect("fs");
        let fh = g.next_fh;
        g.next_fh += 1;
        g.handles.insert(fh, (ino, Arc::new(file)));
        fh
    }

    fn entry(&self, rel: &Path, reply: ReplyEntry) {
        match self.attr(rel) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// The backing file is always opened for reading and writing: a write must read what it
/// overwrites. O_CREAT, O_EXCL and O_TRUNC are the kernel's business on open; O_APPEND is
/// dropped because the kernel passes every write's offset (and pwrite would ignore it).
fn open_options(flags: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o.custom_flags(flags & !(0o3 | 0o100 | 0o200 | 0o1000 | 0o2000));
    o
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name) {
            Some(rel) => self.entry(&rel, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.rel(ino).map(|r| self.attr(&r)) {
            Some(Ok(a)) => reply.attr(&TTL, &a),
            Some(Err(e)) => reply.error(errno(&e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let path = self.root.join(&rel);
        let r = (|| -> std::io::Result<()> {
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            }
            if let Some(size) = size {
                let f = OpenOptions::new().read(true).write(true).open(&path)?;
                let cur = f.metadata()?.len();
                self.remember(&rel, &f, size.min(cur), cur.saturating_sub(size))?;
                f.set_len(size)?;
            }
            Ok(())
        })();
        match r.and_then(|()| self.attr(&rel)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        let path = self.root.join(&rel);
        match std::fs::create_dir(&path)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)))
        {
            Ok(()) => self.entry(&rel, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_file(self.root.join(&rel)) {
            Ok(()) => {
                self.pending.lock().expect("pending").remove(&rel);
                let mut g = self.inner.lock().expect("fs");
                if let Some(i) = g.inodes.remove(&rel) {
                    g.paths.remove(&i);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_dir(self.root.join(&rel)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(from), Some(to)) = (self.child(parent, name), self.child(newparent, newname))
        else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::rename(self.root.join(&from), self.root.join(&to)) {
            Ok(()) => {
                let mut pending = self.pending.lock().expect("pending");
                pending.remove(&to);
                if let Some(u) = pending.remove(&from) {
                    pending.insert(to.clone(), u);
                }
                drop(pending);
                let mut g = self.inner.lock().expect("fs");
                if let Some(old) = g.inodes.remove(&to) {
                    g.paths.remove(&old);
                }
                if let Some(i) = g.inodes.remove(&from) {
                    g.inodes.insert(to.clone(), i);
                    g.paths.insert(i, to.clone());
                }
                // Entries under a renamed directory move with it.
                let moved: Vec<(PathBuf, u64)> = g
                    .inodes
                    .iter()
                    .filter(|(p, _)| p.starts_with(&from) && **p != from)
                    .map(|(p, i)| (p.clone(), *i))
                    .collect();
                for (p, i) in moved {
                    let np = to.join(p.strip_prefix(&from).expect("prefix"));
                    g.inodes.remove(&p);
                    g.inodes.insert(np.clone(), i);
                    g.paths.insert(i, np);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match open_options(flags.0).open(self.root.join(&rel)) {
            Ok(f) => reply.opened(FileHandle(self.open_handle(&rel, f)), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        let mut o = open_options(flags);
        o.create(true).mode(mode);
        if flags & 0o200 != 0 {
            o.create_new(true);
        }
        match o.open(self.root.join(&rel)) {
            Ok(f) => {
                // A new file's durable size is zero: what is written before a sync is undone.
                self.pending
                    .lock()
                    .expect("pending")
                    .entry(rel.clone())
                    .or_default();
                let fh = self.open_handle(&rel, f);
                match self.attr(&rel) {
                    Ok(a) => {
                        reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
                    }
                    Err(e) => reply.error(errno(&e)),
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((_, f)) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..n]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some((rel, f)) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let r = self
            .remember(&rel, &f, offset, data.len() as u64)
            .and_then(|()| f.write_all_at(data, offset));
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.lock().expect("fs").handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Durable from here: the writes before it survive a power cut.
        if let Some(rel) = self.rel(ino) {
            self.pending.lock().expect("pending").remove(&rel);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let entries = match std::fs::read_dir(self.root.join(&rel)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut all = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for e in entries.flatten() {
            let name = e.file_name();
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((self.ino(&rel.join(&name)), kind, name));
        }
        for (i, (ino, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.root) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some((rel, f)) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let r = self.remember(&rel, &f, offset, length).and_then(|()| {
            rustix::fs::fallocate(
                &*f,
                rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
                offset,
                length,
            )
            .map_err(std::io::Error::from)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// A mounted power-loss filesystem.
pub struct PowerFs {
    backing: PathBuf,
    mountpoint: PathBuf,
    pending: Pending,
    session: Option<fuser::BackgroundSession>,
}

impl PowerFs {
    /// Mounts a filesystem at `mountpoint` over `backing` (both existing directories).
    pub fn mount(backing: &Path, mountpoint: &Path) -> anyhow::Result<PowerFs> {
        let mut fs = PowerFs {
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            pending: Pending::default(),
            session: None,
        };
        fs.start()?;
        Ok(fs)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let mut inner = Inner {
            paths: HashMap::new(),
            inodes: HashMap::new(),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
        };
        inner.paths.insert(1, PathBuf::new());
        inner.inodes.insert(PathBuf::new(), 1);
        let fs = Fs {
            root: self.backing.clone(),
            inner: Mutex::new(inner),
            pending: Arc::clone(&self.pending),
        };
        let mut cfg = fuser::Config::default();
        // The servers run as the same user (root) as the test: the default ACL lets them in.
        cfg.mount_options = vec![fuser::MountOption::FSName("tandem-powerfs".into())];
        cfg.n_threads = Some(2);
        self.session = Some(fuser::spawn_mount(fs, &self.mountpoint, &cfg)?);
        Ok(())
    }

    /// Cuts the power: unmounts (the processes using it must be dead), undoes every write not
    /// synced, and mounts again. Returns how many files lost unsynced writes.
    pub fn cut(&mut self) -> anyhow::Result<usize> {
        if let Some(s) = self.session.take() {
            s.umount_and_join()?;
        }
        let lost: Vec<(PathBuf, Undo)> = self.pending.lock().expect("pending").drain().collect();
        let n = lost.len();
        for (rel, undo) in lost {
            let path = self.backing.join(&rel);
            let Ok(f) = OpenOptions::new().write(true).open(&path) else {
                continue; // removed since
            };
            for (offset, old) in undo.overwritten.iter().rev() {
                f.write_all_at(old, *offset)?;
            }
            f.set_len(undo.size)?;
            f.sync_all()?;
        }
        self.start()?;
        Ok(n)
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}
