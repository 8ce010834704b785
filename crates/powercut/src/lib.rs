//! A file system for tests that forgets, on a simulated power cut, whatever
//! was not synced: the approach of LazyFS and ALICE, as a FUSE file system
//! in this process.
//!
//! A process killed with SIGKILL loses nothing that reached the kernel, so
//! kill -9 tests pass whether or not a program ever calls fdatasync. Here a
//! program (a server started on the mount, or a store opened in it) writes
//! to [`Mount::path`]; every byte it writes is kept apart from what has been
//! persisted, and [`Mount::cut`] keeps only the persisted state, as a power
//! cut would. [`Mount::remount`] then serves that state again.
//!
//! What counts as persisted is what Linux promises and no more (see
//! `model.rs` for the rules): a file's data after an fsync/fdatasync of that
//! file; a directory entry (a create, unlink or rename) after an fsync of
//! the directory holding it. `sync_file_range(2)` never reaches a FUSE file
//! system and makes nothing durable on power loss: it counts for nothing.
//! A cut keeps exactly the persisted state, the most forgetful outcome;
//! torn or partly kept unsynced writes are not modelled.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let (backing, point) = (std::path::Path::new("/tmp/b"), std::path::Path::new("/tmp/m"));
//! let mount = powercut::Mount::new(backing, point)?;
//! std::fs::write(point.join("f"), b"never synced")?;
//! mount.cut()?; // the power goes out
//! let mount = mount.remount()?;
//! assert!(!point.join("f").exists());
//! # mount.unmount() }
//! ```
//!
//! Mounting needs `/dev/fuse` and the right to mount (root, or
//! CAP_SYS_ADMIN); [`unavailable`] says why not, for a test to skip with.

mod fuse;
mod model;
mod mount;

pub use model::Stats;
pub use mount::{Mount, unavailable};
