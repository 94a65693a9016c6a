//! The free-space reserve: client writes that add data (set, cas, topic
//! produce) are refused while the filesystem under the data directory has
//! less than `--min-free-disk-mb` free; reads and deletes are served.
//!
//! Why: a node whose disk fills completely stops (a Raft log write that
//! fails cannot be taken back: `rsm::driver`), and nodes with equal disks
//! under the same data fill at about the same time, so a full cluster
//! would stop everywhere at once. Turning writes away a little earlier
//! keeps it readable, and leaves room for what must still be written: Raft
//! bookkeeping, entries already accepted, compactions, deletes (which free
//! space once compacted), and a node catching up. etcd's space quota
//! (`NOSPACE`) plays the same part.
//!
//! What it promises: a refusal is given before anything is written, as
//! `RESOURCE_EXHAUSTED` marked retry-safe, so a client tries another node
//! (which may have room). Only the node a client writes through checks its
//! own disk: a write accepted there is still replicated to nodes that are
//! below their reserve (their reserve is what it lands in).
//!
//! The free space is sampled at most once per [`SAMPLE_INTERVAL_MS`] (one
//! `statvfs`), on the first write after the last sample expired.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How old a sample of the free space may be when a write is checked.
pub const SAMPLE_INTERVAL_MS: u64 = 1000;
/// The reserve when none is configured.
pub const DEFAULT_MIN_FREE_DISK_MB: u64 = 256;

/// A write refused because the disk is below its reserve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "disk almost full on this node: {} MiB free under {dir}, below its reserve of {} MiB (--min-free-disk-mb); \
     writes are refused until there is room again, reads and deletes are served",
    free_bytes >> 20,
    reserve_bytes >> 20
)]
pub struct DiskFull {
    pub dir: String,
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    reserve_bytes: u64,
    /// The last sample (`u64::MAX` until the first), and when it was taken
    /// (ms since `epoch`, `u64::MAX`: never).
    free_bytes: AtomicU64,
    sampled_at_ms: AtomicU64,
    epoch: Instant,
}

impl DiskSpace {
    /// Watches the filesystem under `dir`; `reserve_bytes = 0` refuses nothing.
    pub fn new(dir: &Path, reserve_bytes: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.to_path_buf(),
            reserve_bytes,
            free_bytes: AtomicU64::new(u64::MAX),
            sampled_at_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        }
    }

    /// `Err` when a write that adds data must be refused.
    pub fn check_write(&self) -> Result<(), DiskFull> {
        if self.reserve_bytes == 0 {
            return Ok(());
        }
        let free_bytes = self.free_bytes();
        if free_bytes >= self.reserve_bytes {
            return Ok(());
        }
        Err(DiskFull { dir: self.dir.display().to_string(), free_bytes, reserve_bytes: self.reserve_bytes })
    }

    /// Bytes available to this process under the data directory, at most
    /// [`SAMPLE_INTERVAL_MS`] old (`u64::MAX` if it cannot be read: a
    /// failing `statvfs` refuses nothing, and is logged).
    pub fn free_bytes(&self) -> u64 {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let at = self.sampled_at_ms.load(Ordering::Relaxed);
        if at != u64::MAX && now_ms.saturating_sub(at) < SAMPLE_INTERVAL_MS {
            return self.free_bytes.load(Ordering::Relaxed);
        }
        let free = match available_bytes(&self.dir) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the free disk space");
                u64::MAX
            }
        };
        // Two writers racing store two fresh samples: either will do.
        self.free_bytes.store(free, Ordering::Relaxed);
        self.sampled_at_ms.store(now_ms, Ordering::Relaxed);
        free
    }

    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }
}

/// `statvfs(dir)`: blocks available to unprivileged users × fragment size.
fn available_bytes(dir: &Path) -> std::io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: `path` is a valid NUL-terminated string and `st` a properly
    // sized out-parameter, written by statvfs before we read it on success.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st
    };
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).unwrap();
        assert!(free > 0 && free < u64::MAX, "{free}");
        assert!(available_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn writes_are_refused_below_the_reserve_and_never_with_none() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).unwrap();
        // No reserve: nothing refused.
        assert_eq!(DiskSpace::new(dir.path(), 0).check_write(), Ok(()));
        // A reserve below what is free: served.
        assert_eq!(DiskSpace::new(dir.path(), 1).check_write(), Ok(()));
        // A reserve above anything this disk has: refused, saying so.
        let reserve = free.saturating_mul(4).max(1 << 40);
        let err = DiskSpace::new(dir.path(), reserve).check_write().unwrap_err();
        assert_eq!(err.reserve_bytes, reserve);
        assert!(err.free_bytes < reserve);
        let text = err.to_string();
        assert!(text.contains("disk almost full") && text.contains("--min-free-disk-mb"), "{text}");
    }

    #[test]
    fn a_sample_is_reused_within_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = DiskSpace::new(dir.path(), 1);
        // Samples are timed from `epoch`: start it well in the past, so
        // that a sample taken "at 0 ms" below is long expired.
        d.epoch = Instant::now() - std::time::Duration::from_millis(10 * SAMPLE_INTERVAL_MS);
        assert!(d.free_bytes() > 0);
        // Pretend the disk filled: within the interval the sample stands...
        d.free_bytes.store(0, Ordering::Relaxed);
        assert_eq!(d.free_bytes(), 0);
        assert!(d.check_write().is_err());
        // ...and once it is older, the next write reads the disk again.
        d.sampled_at_ms.store(0, Ordering::Relaxed);
        assert!(d.free_bytes() > 0);
        assert_eq!(d.check_write(), Ok(()));
    }
}
