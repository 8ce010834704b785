//! The file system's state, twice: what the running system sees (`now`) and
//! what a power cut leaves (`durable`). No FUSE here, so the rules can be
//! tested directly.
//!
//! The rules are what Linux promises and no more (fsync(2), fdatasync(2)):
//! - a file's bytes and length become durable when that file is fsynced or
//!   fdatasynced (both are the same here: the length is data);
//! - a directory's entries (created, removed, renamed names) become durable
//!   when that directory is fsynced, and only then; fsyncing a file does not
//!   persist the name it was created or renamed under;
//! - nothing else persists anything. `sync_file_range(2)` never reaches a FUSE
//!   file system and is treated as what it is on power loss: no durability.
//!   `sync(2)`/`syncfs(2)` are not modelled either.
//!
//! A power cut keeps exactly the durable state: the most forgetful outcome
//! the kernel allows. Partly persisted unsynced writes (torn or reordered
//! writes the disk happened to keep) are not modelled.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

pub type Ino = u64;
pub const ROOT: Ino = 1;

/// An errno, as FUSE replies want it.
pub type Errno = i32;
pub type Result<T> = std::result::Result<T, Errno>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A Unix socket's name (bind(2)): no data, and gone after a cut (a
    /// dead socket file is of no use after a reboot; servers remove them).
    Socket,
}

#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub mtime: SystemTime,
}

/// What survives a power cut, as a plain tree (also the shape of the backing
/// directory between mounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, Image>),
}

#[derive(Debug)]
struct File {
    now: Vec<u8>,
    durable: Vec<u8>,
    /// Bytes changed since the last sync: one span covering every write and
    /// length change (a sync copies this span, not the whole file).
    dirty: Option<(usize, usize)>,
}

#[derive(Debug, Default)]
struct Dir {
    now: BTreeMap<OsString, Ino>,
    durable: BTreeMap<OsString, Ino>,
}

#[derive(Debug)]
enum Body {
    File(File),
    Dir(Dir),
    Socket,
}

#[derive(Debug)]
struct Node {
    perm: u16,
    mtime: SystemTime,
    body: Body,
}

/// Counters a test can use to see that the harness saw the traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub writes: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
}

#[derive(Debug)]
pub struct Tree {
    nodes: HashMap<Ino, Node>,
    next: Ino,
    /// Set by a power cut: every operation fails with EIO from then on.
    dead: bool,
    stats: Stats,
}

const MAX_DEPTH: usize = 64;

impl Tree {
    /// A tree whose current and durable states are both `image` (a directory).
    pub fn from_image(image: &Image) -> Tree {
        let mut tree = Tree {
            nodes: HashMap::new(),
            next: ROOT,
            dead: false,
            stats: Stats::default(),
        };
        let empty = Image::Dir(BTreeMap::new());
        let root = match image {
            Image::Dir(_) => image,
            Image::File(_) => &empty,
        };
        tree.insert_image(root, 0);
        tree
    }

    fn insert_image(&mut self, image: &Image, depth: usize) -> Ino {
        let ino = self.next;
        self.next += 1;
        let body = match image {
            Image::File(bytes) => Body::File(File {
                now: bytes.clone(),
                durable: bytes.clone(),
                dirty: None,
            }),
            Image::Dir(entries) => {
                let mut children = BTreeMap::new();
                if depth < MAX_DEPTH {
                    for (name, child) in entries {
                        children.insert(name.clone(), self.insert_image(child, depth + 1));
                    }
                }
                Body::Dir(Dir {
                    now: children.clone(),
                    durable: children,
                })
            }
        };
        let perm = if matches!(image, Image::File(_)) {
            0o644
        } else {
            0o755
        };
        self.nodes.insert(ino, node(perm, body));
        ino
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The power goes out: what was durable is returned, and from now on
    /// every operation fails with EIO.
    pub fn cut(&mut self) -> Image {
        self.dead = true;
        self.image(ROOT, 0, true)
    }

    /// A clean shutdown: everything written is kept (the kernel writes its
    /// cache back before an unmount completes), and the tree is done.
    pub fn shut_down(&mut self) -> Image {
        self.dead = true;
        self.image(ROOT, 0, false)
    }

    fn image(&self, ino: Ino, depth: usize, durable: bool) -> Image {
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::File(file)) if durable => Image::File(file.durable.clone()),
            Some(Body::File(file)) => Image::File(file.now.clone()),
            Some(Body::Dir(dir)) if depth < MAX_DEPTH => Image::Dir(
                if durable { &dir.durable } else { &dir.now }
                    .iter()
                    .filter(|(_, child)| {
                        !matches!(self.nodes.get(child).map(|n| &n.body), Some(Body::Socket))
                    })
                    .map(|(name, child)| (name.clone(), self.image(*child, depth + 1, durable)))
                    .collect(),
            ),
            _ => Image::Dir(BTreeMap::new()),
        }
    }

    fn alive(&self) -> Result<()> {
        if self.dead { Err(libc::EIO) } else { Ok(()) }
    }

    fn node(&self, ino: Ino) -> Result<&Node> {
        self.alive()?;
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node> {
        self.alive()?;
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn dir(&self, ino: Ino) -> Result<&Dir> {
        match &self.node(ino)?.body {
            Body::Dir(dir) => Ok(dir),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut Dir> {
        let node = self.node_mut(ino)?;
        node.mtime = SystemTime::now();
        match &mut node.body {
            Body::Dir(dir) => Ok(dir),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut File> {
        let node = self.node_mut(ino)?;
        node.mtime = SystemTime::now();
        match &mut node.body {
            Body::File(file) => Ok(file),
            Body::Dir(_) => Err(libc::EISDIR),
            Body::Socket => Err(libc::EINVAL),
        }
    }

    pub fn attr(&self, ino: Ino) -> Result<Attr> {
        let node = self.node(ino)?;
        let (kind, size) = match &node.body {
            Body::File(file) => (Kind::File, file.now.len() as u64),
            Body::Dir(dir) => (Kind::Dir, dir.now.len() as u64),
            Body::Socket => (Kind::Socket, 0),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            perm: node.perm,
            mtime: node.mtime,
        })
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        let ino = *self.dir(parent)?.now.get(name).ok_or(libc::ENOENT)?;
        self.attr(ino)
    }

    pub fn set_perm(&mut self, ino: Ino, perm: u16) -> Result<()> {
        self.node_mut(ino)?.perm = perm & 0o7777;
        Ok(())
    }

    /// A new, empty file or directory named `name` in `parent`.
    pub fn create(&mut self, parent: Ino, name: &OsStr, kind: Kind, perm: u16) -> Result<Attr> {
        if self.dir(parent)?.now.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let body = match kind {
            Kind::File => Body::File(File {
                now: Vec::new(),
                durable: Vec::new(),
                dirty: None,
            }),
            Kind::Dir => Body::Dir(Dir::default()),
            Kind::Socket => Body::Socket,
        };
        self.nodes.insert(ino, node(perm & 0o7777, body));
        self.dir_mut(parent)?.now.insert(name.to_owned(), ino);
        self.attr(ino)
    }

    /// unlink (`dir == false`) or rmdir (`dir == true`).
    pub fn remove(&mut self, parent: Ino, name: &OsStr, dir: bool) -> Result<()> {
        let ino = *self.dir(parent)?.now.get(name).ok_or(libc::ENOENT)?;
        match (&self.node(ino)?.body, dir) {
            (Body::Dir(d), true) if !d.now.is_empty() => return Err(libc::ENOTEMPTY),
            (Body::Dir(_), false) => return Err(libc::EISDIR),
            (Body::File(_) | Body::Socket, true) => return Err(libc::ENOTDIR),
            _ => {}
        }
        // The node itself stays: a durable entry may still name it.
        self.dir_mut(parent)?.now.remove(name);
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<()> {
        let ino = *self.dir(parent)?.now.get(name).ok_or(libc::ENOENT)?;
        let moving_dir = matches!(self.node(ino)?.body, Body::Dir(_));
        if let Some(&target) = self.dir(new_parent)?.now.get(new_name) {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            match (&self.node(target)?.body, moving_dir) {
                (Body::Dir(_), false) => return Err(libc::EISDIR),
                (Body::File(_) | Body::Socket, true) => return Err(libc::ENOTDIR),
                (Body::Dir(d), true) if !d.now.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
        }
        self.dir_mut(parent)?.now.remove(name);
        self.dir_mut(new_parent)?
            .now
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    pub fn list(&self, ino: Ino) -> Result<Vec<(Ino, Kind, OsString)>> {
        let dir = self.dir(ino)?;
        let mut out = Vec::with_capacity(dir.now.len());
        for (name, child) in &dir.now {
            let kind = match self.node(*child)?.body {
                Body::File(_) => Kind::File,
                Body::Dir(_) => Kind::Dir,
                Body::Socket => Kind::Socket,
            };
            out.push((*child, kind, name.clone()));
        }
        Ok(out)
    }

    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        match &self.node(ino)?.body {
            Body::File(file) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(file.now.len());
                let end = start.saturating_add(size as usize).min(file.now.len());
                Ok(file.now[start..end].to_vec())
            }
            Body::Dir(_) => Err(libc::EISDIR),
            Body::Socket => Err(libc::EINVAL),
        }
    }

    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<u32> {
        let start = usize::try_from(offset).map_err(|_| libc::EFBIG)?;
        let end = start.checked_add(data.len()).ok_or(libc::EFBIG)?;
        let len = u32::try_from(data.len()).map_err(|_| libc::EINVAL)?;
        let file = self.file_mut(ino)?;
        if file.now.len() < end {
            file.now.resize(end, 0);
        }
        file.now[start..end].copy_from_slice(data);
        file.touch(start, end);
        self.stats.writes += 1;
        Ok(len)
    }

    pub fn truncate(&mut self, ino: Ino, size: u64) -> Result<()> {
        let size = usize::try_from(size).map_err(|_| libc::EFBIG)?;
        let file = self.file_mut(ino)?;
        let old = file.now.len();
        file.now.resize(size, 0);
        file.touch(old.min(size), old.max(size));
        Ok(())
    }

    /// fsync or fdatasync of a file, fsync of a directory.
    pub fn sync(&mut self, ino: Ino) -> Result<()> {
        let node = self.node_mut(ino)?;
        match &mut node.body {
            Body::File(file) => {
                file.durable.resize(file.now.len(), 0);
                if let Some((start, end)) = file.dirty.take() {
                    let end = end.min(file.now.len());
                    if start < end {
                        file.durable[start..end].copy_from_slice(&file.now[start..end]);
                    }
                }
                self.stats.file_syncs += 1;
            }
            Body::Dir(dir) => {
                dir.durable = dir.now.clone();
                self.stats.dir_syncs += 1;
            }
            Body::Socket => return Err(libc::EINVAL),
        }
        Ok(())
    }
}

impl File {
    fn touch(&mut self, start: usize, end: usize) {
        self.dirty = Some(match self.dirty {
            Some((s, e)) => (s.min(start), e.max(end)),
            None => (start, end),
        });
    }
}

fn node(perm: u16, body: Body) -> Node {
    Node {
        perm,
        mtime: SystemTime::now(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn file(bytes: &[u8]) -> Image {
        Image::File(bytes.to_vec())
    }

    fn dir(entries: &[(&str, Image)]) -> Image {
        Image::Dir(
            entries
                .iter()
                .map(|(n, i)| (OsString::from(n), i.clone()))
                .collect(),
        )
    }

    #[test]
    fn unsynced_bytes_are_forgotten_synced_ones_kept() {
        let mut tree = Tree::from_image(&dir(&[("f", file(b"old"))]));
        let f = tree.lookup(ROOT, name("f")).expect("f").ino;
        tree.write(f, 0, b"new").expect("write");
        tree.sync(f).expect("sync");
        tree.write(f, 3, b"-more").expect("write");
        assert_eq!(tree.read(f, 0, 100).expect("read"), b"new-more");
        assert_eq!(tree.cut(), dir(&[("f", file(b"new"))]));
        assert_eq!(tree.read(f, 0, 1), Err(libc::EIO), "dead after the cut");
    }

    #[test]
    fn a_synced_file_whose_name_was_never_synced_is_lost() {
        let mut tree = Tree::from_image(&dir(&[]));
        let f = tree
            .create(ROOT, name("f"), Kind::File, 0o644)
            .expect("create")
            .ino;
        tree.write(f, 0, b"data").expect("write");
        tree.sync(f).expect("fsync file");
        assert_eq!(tree.cut(), dir(&[]));

        let mut tree = Tree::from_image(&dir(&[]));
        let f = tree
            .create(ROOT, name("f"), Kind::File, 0o644)
            .expect("create")
            .ino;
        tree.write(f, 0, b"data").expect("write");
        tree.sync(ROOT).expect("fsync dir");
        assert_eq!(
            tree.cut(),
            dir(&[("f", file(b""))]),
            "name without its data"
        );
    }

    #[test]
    fn rename_and_unlink_persist_only_with_their_directory() {
        let image = dir(&[("a", file(b"A")), ("b", file(b"B"))]);
        let mut tree = Tree::from_image(&image);
        tree.rename(ROOT, name("a"), ROOT, name("b"), false)
            .expect("rename");
        tree.remove(ROOT, name("b"), false).expect("unlink");
        assert!(tree.lookup(ROOT, name("b")).is_err());
        assert_eq!(tree.clone_cut(), image, "nothing synced: both names back");

        let mut tree = Tree::from_image(&image);
        tree.rename(ROOT, name("a"), ROOT, name("b"), false)
            .expect("rename");
        tree.sync(ROOT).expect("fsync dir");
        assert_eq!(tree.cut(), dir(&[("b", file(b"A"))]));
    }

    #[test]
    fn truncation_and_regrowth_are_zeroes_once_synced() {
        let mut tree = Tree::from_image(&dir(&[("f", file(b"abcdef"))]));
        let f = tree.lookup(ROOT, name("f")).expect("f").ino;
        tree.truncate(f, 2).expect("shrink");
        tree.truncate(f, 4).expect("grow");
        assert_eq!(tree.clone_cut(), dir(&[("f", file(b"abcdef"))]));
        let mut tree = Tree::from_image(&dir(&[("f", file(b"abcdef"))]));
        let f = tree.lookup(ROOT, name("f")).expect("f").ino;
        tree.truncate(f, 2).expect("shrink");
        tree.truncate(f, 4).expect("grow");
        tree.sync(f).expect("sync");
        assert_eq!(tree.cut(), dir(&[("f", file(b"ab\0\0"))]));
    }

    #[test]
    fn directories_need_their_own_sync_and_their_parents() {
        let mut tree = Tree::from_image(&dir(&[]));
        let d = tree
            .create(ROOT, name("d"), Kind::Dir, 0o755)
            .expect("mkdir")
            .ino;
        let f = tree
            .create(d, name("f"), Kind::File, 0o644)
            .expect("create")
            .ino;
        tree.write(f, 0, b"x").expect("write");
        tree.sync(f).expect("sync f");
        tree.sync(d).expect("sync d");
        assert_eq!(
            tree.clone_cut(),
            dir(&[]),
            "d itself was never named durably"
        );
        tree.sync(ROOT).expect("sync root");
        assert_eq!(tree.cut(), dir(&[("d", dir(&[("f", file(b"x"))]))]));
    }

    #[test]
    fn errors_for_bad_operations() {
        let mut tree = Tree::from_image(&dir(&[("d", dir(&[("f", file(b""))]))]));
        let d = tree.lookup(ROOT, name("d")).expect("d").ino;
        assert_eq!(tree.remove(ROOT, name("d"), true), Err(libc::ENOTEMPTY));
        assert_eq!(tree.remove(ROOT, name("d"), false), Err(libc::EISDIR));
        assert_eq!(tree.remove(d, name("f"), true), Err(libc::ENOTDIR));
        assert_eq!(tree.remove(d, name("g"), false), Err(libc::ENOENT));
        assert_eq!(
            tree.create(d, name("f"), Kind::File, 0o644).map(|a| a.ino),
            Err(libc::EEXIST)
        );
        assert_eq!(tree.write(d, 0, b"x"), Err(libc::EISDIR));
        tree.create(ROOT, name("g"), Kind::File, 0o644).expect("g");
        assert_eq!(
            tree.rename(ROOT, name("g"), ROOT, name("d"), false),
            Err(libc::EISDIR)
        );
        assert_eq!(
            tree.rename(ROOT, name("g"), d, name("f"), true),
            Err(libc::EEXIST)
        );
    }

    impl Tree {
        /// The durable image without ending the tree's life (tests only).
        fn clone_cut(&self) -> Image {
            self.image(ROOT, 0, true)
        }
    }
}
