//! The FUSE side: each kernel request becomes one call on the [`Tree`],
//! under one lock, so every operation is atomic with respect to a cut.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use crate::model::{Attr, Kind, Tree};

/// How long the kernel may cache names and attributes. Every change goes
/// through this mount, so the kernel's copy stays right; a cut is followed
/// by a fresh mount.
const TTL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct PowerCutFs {
    pub(crate) tree: Arc<Mutex<Tree>>,
    /// `POWERCUT_TRACE` set: each changing operation is printed to stderr.
    pub(crate) trace: bool,
}

macro_rules! trace {
    ($fs:expr, $($arg:tt)*) => {
        if $fs.trace {
            eprintln!("powercut: {}", format_args!($($arg)*));
        }
    };
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn file_attr(attr: &Attr, req: &Request) -> FileAttr {
    let kind = file_type(attr.kind);
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind,
        perm: attr.perm,
        nlink: if attr.kind == Kind::Dir { 2 } else { 1 },
        uid: req.uid(),
        gid: req.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.tree.lock().lookup(parent.0, name) {
            Ok(attr) => {
                trace!(self, "lookup {}/{name:?} = {}", parent.0, attr.ino);
                reply.entry(&TTL, &file_attr(&attr, req), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.lock().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr, req)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
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
        trace!(self, "setattr ino={} size={size:?} mode={mode:?}", ino.0);
        let mut tree = self.tree.lock();
        let result = (|| {
            if let Some(size) = size {
                tree.truncate(ino.0, size)?;
            }
            if let Some(mode) = mode {
                tree.set_perm(ino.0, (mode & 0o7777) as u16)?;
            }
            tree.attr(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr, req)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFSOCK => Kind::Socket,
            _ => return reply.error(Errno::EPERM),
        };
        let perm = (mode & !umask & 0o7777) as u16;
        match self.tree.lock().create(parent.0, name, kind, perm) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr, req), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let perm = (mode & !umask & 0o7777) as u16;
        match self.tree.lock().create(parent.0, name, Kind::Dir, perm) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr, req), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.tree.lock().remove(parent.0, name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.tree.lock().remove(parent.0, name, true), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        trace!(
            self,
            "rename {}/{name:?} -> {}/{newname:?}", parent.0, newparent.0
        );
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let result = self
            .tree
            .lock()
            .rename(parent.0, name, newparent.0, newname, no_replace);
        reply_empty(result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        trace!(self, "open ino={} flags={:#x}", ino.0, flags.0);
        let mut tree = self.tree.lock();
        let result = (|| {
            tree.attr(ino.0)?;
            if flags.0 & libc::O_TRUNC != 0 {
                tree.truncate(ino.0, 0)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.tree.lock().read(ino.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        trace!(
            self,
            "write ino={} offset={offset} len={}",
            ino.0,
            data.len()
        );
        match self.tree.lock().write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2), not a sync: it persists nothing.
        reply_empty(self.tree.lock().attr(ino.0).map(drop), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        trace!(self, "fsync ino={} datasync={datasync}", ino.0);
        reply_empty(self.tree.lock().sync(ino.0), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.lock().list(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.tree.lock().list(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        let dots = [
            (ino.0, Kind::Dir, ".".into()),
            (ino.0, Kind::Dir, "..".into()),
        ];
        let all = dots.into_iter().chain(entries);
        for (i, (child, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, file_type(kind), name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        trace!(self, "fsyncdir ino={}", ino.0);
        reply_empty(self.tree.lock().sync(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A roomy, made-up disk: free space is not what these tests are about.
        let blocks = 1 << 24;
        reply.statfs(
            blocks,
            blocks / 2,
            blocks / 2,
            1 << 20,
            1 << 19,
            4096,
            255,
            4096,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply_empty(self.tree.lock().attr(ino.0).map(drop), reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        trace!(
            self,
            "create parent={} name={name:?} flags={flags:#x}", parent.0
        );
        let perm = (mode & !umask & 0o7777) as u16;
        let mut tree = self.tree.lock();
        let result = match tree.create(parent.0, name, Kind::File, perm) {
            Err(libc::EEXIST) if flags & libc::O_EXCL == 0 => {
                tree.lookup(parent.0, name)
                    .and_then(|attr| match flags & libc::O_TRUNC {
                        0 => Ok(attr),
                        _ => tree
                            .truncate(attr.ino, 0)
                            .and_then(|()| tree.attr(attr.ino)),
                    })
            }
            other => other,
        };
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &file_attr(&attr, req),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        trace!(
            self,
            "fallocate ino={} offset={offset} len={length} mode={mode}", ino.0
        );
        // Only plain preallocation: extend with zeroes, like posix_fallocate.
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut tree = self.tree.lock();
        let result = tree.attr(ino.0).and_then(|attr| {
            let end = offset.saturating_add(length);
            if end > attr.size {
                tree.truncate(ino.0, end)
            } else {
                Ok(())
            }
        });
        reply_empty(result, reply);
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Socket => FileType::Socket,
    }
}

fn reply_empty(result: crate::model::Result<()>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}
