//! Disk flushes of the block device holding a directory, from
//! `/proc/diskstats` (the kernel counts every completed flush request: an
//! fdatasync that reaches the disk is one). The count covers the whole
//! disk, whatever process caused it. Linux 5.5 and later; elsewhere none.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The device's name and its completed flushes so far; `None` when `path`
/// is not on a block device the kernel reports flushes for (tmpfs, overlay
/// without a block device, an older kernel).
pub fn flushes(path: &Path) -> Option<(String, u64)> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = split_dev(dev);
    if major == 0 {
        return None;
    }
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    // Flushes are counted on the whole disk, not on a partition.
    let disk = if sys.join("partition").exists() {
        sys.parent()?.to_path_buf()
    } else {
        sys
    };
    let name = disk.file_name()?.to_str()?.to_owned();
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    let count = count_in(&stats, &name)?;
    Some((name, count))
}

/// Linux's encoding of a `dev_t` (glibc's `gnu_dev_major`/`gnu_dev_minor`).
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The completed flushes of device `name` in a `/proc/diskstats` text (the
/// 16th field after the name).
fn count_in(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(2) == Some(&name))
            .then(|| fields.get(18)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_flush_count_of_the_named_device() {
        let stats = "\
 253       0 vda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 1234 17
 253       1 vda1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 99 17
   7       0 loop0 1 2 3 4 5 6 7 8 9 10 11
";
        assert_eq!(count_in(stats, "vda"), Some(1234));
        assert_eq!(count_in(stats, "vda1"), Some(99));
        assert_eq!(count_in(stats, "loop0"), None);
        assert_eq!(count_in(stats, "sdb"), None);
    }

    #[test]
    fn splits_device_numbers() {
        assert_eq!(split_dev(0xfd01), (253, 1));
        assert_eq!(split_dev((259 << 8) | 3), (259, 3));
    }
}
