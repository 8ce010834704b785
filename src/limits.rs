//! The open-file limit (SPEC 8): raise the soft `RLIMIT_NOFILE` to the hard
//! limit at start, then keep `--max-connections` below what is left, so a
//! full house of clients cannot starve the store of descriptors (a durable
//! flush round opens files; sled opens blob files) and turn writes into 500s.

/// Descriptors kept free beyond those open at start and one per connection:
/// sled's blob files and a flush round's, the admin socket and its clients,
/// the log writer, and the short-lived sockets of connections over the
/// limit (accepted only to be answered 503).
pub const RESERVE: u64 = 64;

/// The soft open-file limit after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy)]
pub struct Nofile {
    /// The soft limit in force.
    pub soft: u64,
}

/// Raises the soft open-file limit to the hard one (no privilege needed),
/// logging what it did. If that fails, the server runs with the soft limit
/// it was given, and says so.
pub fn raise_nofile_limit() -> Nofile {
    let Ok((before, hard)) = rlimit::Resource::NOFILE.get() else {
        tracing::warn!("cannot read the open-file limit; connections are not checked against it");
        return Nofile { soft: u64::MAX };
    };
    // An unlimited hard limit cannot be the soft one on Linux: the kernel
    // caps descriptors at fs.nr_open.
    let target = if hard == rlimit::INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    match rlimit::increase_nofile_limit(target) {
        Ok(soft) => {
            if soft > before {
                tracing::info!("raised the open-file limit from {before} to {soft}");
            }
            Nofile { soft }
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot raise the open-file limit from {before} to {target}"
            );
            Nofile { soft: before }
        }
    }
}

/// Descriptors the process has open now (entries of `/proc/self/fd`, less
/// the one the listing itself uses); `None` where that cannot be read.
pub fn open_descriptors() -> Option<u64> {
    let count = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(count.saturating_sub(1))
}

/// The connection limit to serve with: `requested`, or fewer when that
/// would not leave [`RESERVE`] descriptors free beside the `open` ones under
/// the soft limit (at least 1). Logs a warning when it lowers it.
pub fn fit_connections(requested: usize, nofile: Nofile, open: u64) -> usize {
    let room = nofile
        .soft
        .saturating_sub(open)
        .saturating_sub(RESERVE)
        .max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if requested <= room {
        return requested;
    }
    tracing::warn!(
        "lowering --max-connections from {requested} to {room}: the open-file limit is {}, \
         {open} descriptors are open and {RESERVE} are kept in reserve; raise the hard limit \
         (ulimit -Hn, LimitNOFILE=) to serve more",
        nofile.soft
    );
    room
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_requested_limit_when_it_fits() {
        assert_eq!(fit_connections(1024, Nofile { soft: 4096 }, 20), 1024);
        assert_eq!(fit_connections(1012, Nofile { soft: 1100 }, 24), 1012);
    }

    #[test]
    fn lowers_it_to_leave_the_reserve() {
        assert_eq!(fit_connections(1024, Nofile { soft: 1024 }, 20), 940);
        assert_eq!(fit_connections(1024, Nofile { soft: 1100 }, 24), 1012);
        assert_eq!(fit_connections(1024, Nofile { soft: 50 }, 20), 1);
        assert_eq!(fit_connections(8, Nofile { soft: u64::MAX }, 20), 8);
    }
}
