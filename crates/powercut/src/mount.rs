//! Mounting, cutting the power, and the backing directory that holds the
//! durable state between mounts.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption};
use parking_lot::Mutex;

use crate::fuse::PowerCutFs;
use crate::model::{Image, Stats, Tree};

/// A [`Tree`] served at a mount point, loaded from and cut back to a real
/// directory.
#[derive(Debug)]
pub struct Mount {
    session: Option<BackgroundSession>,
    tree: Arc<Mutex<Tree>>,
    backing: PathBuf,
    point: PathBuf,
}

impl Mount {
    /// Serves the contents of `backing` (read whole into memory; a test's
    /// data directory is small) at `point`, an existing empty directory.
    /// Everything in `backing` counts as durable.
    pub fn new(backing: &Path, point: &Path) -> io::Result<Mount> {
        let image = read_image(backing, 0)?;
        let tree = Arc::new(Mutex::new(Tree::from_image(&image)));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powercut".into()),
            MountOption::Subtype("powercut".into()),
        ];
        config.n_threads = Some(2);
        let fs = PowerCutFs {
            tree: Arc::clone(&tree),
            trace: std::env::var_os("POWERCUT_TRACE").is_some(),
        };
        let session = fuser::spawn_mount(fs, point, &config)?;
        Ok(Mount {
            session: Some(session),
            tree,
            backing: backing.to_owned(),
            point: point.to_owned(),
        })
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.point
    }

    /// Writes and syncs seen so far.
    pub fn stats(&self) -> Stats {
        self.tree.lock().stats()
    }

    /// The power goes out. Every later operation on the mount fails with
    /// EIO (so no process can be told a write succeeded after this instant),
    /// and the backing directory is replaced by exactly what was durable.
    /// Kill the processes using the mount, then [`Mount::remount`].
    pub fn cut(&self) -> io::Result<()> {
        let image = {
            let mut tree = self.tree.lock();
            if tree.is_dead() {
                return Ok(());
            }
            tree.cut()
        };
        write_image(&self.backing, &image)
    }

    /// Power back on: unmounts (once no process holds a file open there)
    /// and serves the backing directory again. Cuts first if [`Mount::cut`]
    /// was not called, so whatever was not synced is gone either way.
    pub fn remount(mut self) -> io::Result<Mount> {
        self.cut()?;
        self.unmount_inner()?;
        Mount::new(&self.backing, &self.point)
    }

    /// A clean shutdown: unmounts, keeping everything written, synced or
    /// not, in the backing directory (after a cut: what the cut kept).
    pub fn unmount(mut self) -> io::Result<()> {
        let image = {
            let mut tree = self.tree.lock();
            (!tree.is_dead()).then(|| tree.shut_down())
        };
        if let Some(image) = image {
            write_image(&self.backing, &image)?;
        }
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // A process that just closed its last file here may still be
        // exiting (sled's I/O threads end a moment after the database):
        // retry a busy unmount for a while before detaching.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut result = rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::empty());
        while result == Err(rustix::io::Errno::BUSY) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            result = rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::empty());
        }
        match result {
            Ok(()) => session.join(),
            Err(rustix::io::Errno::BUSY) => {
                // A process still holds a file open here: detach the mount
                // so the point is free, and let the session end when the
                // last file closes.
                rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::DETACH)?;
                drop(session);
                Err(io::Error::other(format!(
                    "{} was busy: detached instead of unmounted",
                    self.point.display()
                )))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self.unmount_inner();
        }
    }
}

/// Why a FUSE file system cannot be mounted here (no `/dev/fuse`, no
/// permission to mount), or `None` when it can: tests skip with this line.
pub fn unavailable() -> Option<String> {
    let probe = || -> io::Result<()> {
        let root = tempfile_dir()?;
        let (backing, point) = (root.join("backing"), root.join("mnt"));
        fs::create_dir_all(&backing)?;
        fs::create_dir_all(&point)?;
        let mount = Mount::new(&backing, &point)?;
        fs::write(point.join("probe"), b"probe")?;
        let seen = fs::read(point.join("probe"))?;
        mount.unmount()?;
        let _ = fs::remove_dir_all(&root);
        if seen == b"probe" {
            Ok(())
        } else {
            Err(io::Error::other("read back different bytes"))
        }
    };
    probe()
        .err()
        .map(|e| format!("FUSE cannot be mounted here: {e}"))
}

fn tempfile_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("powercut-probe-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn read_image(path: &Path, depth: usize) -> io::Result<Image> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_file() {
        return Ok(Image::File(fs::read(path)?));
    }
    let mut entries = BTreeMap::new();
    if meta.is_dir() && depth < 64 {
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_file() || kind.is_dir() {
                entries.insert(entry.file_name(), read_image(&entry.path(), depth + 1)?);
            }
        }
    }
    Ok(Image::Dir(entries))
}

fn write_image(path: &Path, image: &Image) -> io::Result<()> {
    let Image::Dir(entries) = image else {
        return Err(io::Error::other("the root of an image is a directory"));
    };
    if path.exists() {
        fs::remove_dir_all(path)?;
    }
    fs::create_dir_all(path)?;
    for (name, child) in entries {
        match child {
            Image::File(bytes) => fs::write(path.join(name), bytes)?,
            Image::Dir(_) => write_image(&path.join(name), child)?,
        }
    }
    Ok(())
}
