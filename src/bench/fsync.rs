//! The disk's durable-write floor: append N bytes to a file, then fdatasync.
//!
//! Every acknowledged capkv write waits for a RocksDB WAL sync (fdatasync of
//! an appended log, the RocksDB default), and every etcd write for a WAL
//! fdatasync, so this latency bounds what one client can see at best. It is
//! measured by the same `kv bench` loop as the stores, in the directory the
//! nodes keep their data in, so it sees the same file system and device.
//!
//! Appending grows the file, so each sync also commits the new size, as a
//! growing RocksDB WAL does (etcd preallocates 64 MB WAL segments and may
//! pay less). Each client has its own file; it is cut back to empty past
//! [`FSYNC_FILE_MAX_BYTES`] and removed on drop.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::stats::{ErrorKind, OpError};

/// A probe file never grows past this many bytes.
pub const FSYNC_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

pub struct FsyncFile {
    path: PathBuf,
    /// `None` only while a write is running on the blocking pool.
    file: Option<File>,
    written_bytes: u64,
    buf: Vec<u8>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> OpError {
    OpError::new(ErrorKind::Io, format!("{what} {}: {e}", path.display()))
}

impl FsyncFile {
    /// Creates (or empties) `dir/kv-bench-fsync-<pid>-<client>`.
    pub fn create(dir: &Path, client: usize) -> Result<FsyncFile, OpError> {
        let path = dir.join(format!("kv-bench-fsync-{}-{client}", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|f| f.set_len(0).map(|_| f))
            .map_err(|e| io_error("cannot create", &path, e))?;
        Ok(FsyncFile { path, file: Some(file), written_bytes: 0, buf: Vec::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes` bytes and waits for fdatasync, on the blocking pool
    /// so the runtime's workers stay free.
    pub async fn append_and_sync(&mut self, bytes: usize) -> Result<(), OpError> {
        let mut file = self.file.take().ok_or_else(|| OpError::new(ErrorKind::Io, "the probe file was lost"))?;
        if self.buf.len() != bytes {
            self.buf = vec![b'f'; bytes];
        }
        let buf = std::mem::take(&mut self.buf);
        let truncate = self.written_bytes + bytes as u64 > FSYNC_FILE_MAX_BYTES;
        let path = self.path.clone();
        let (file, buf, result) = tokio::task::spawn_blocking(move || {
            let r = (|| {
                if truncate {
                    file.set_len(0)?;
                }
                file.write_all(&buf)?;
                file.sync_data()
            })();
            (file, buf, r)
        })
        .await
        .map_err(|e| OpError::new(ErrorKind::Io, format!("the fsync task failed: {e}")))?;
        self.file = Some(file);
        self.buf = buf;
        if truncate {
            self.written_bytes = 0;
        }
        self.written_bytes += bytes as u64;
        result.map_err(|e| io_error("cannot append to and sync", &path, e))
    }
}

impl Drop for FsyncFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file holds what was appended, stays bounded, and is removed on drop.
    #[tokio::test]
    async fn appends_are_bounded_and_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FsyncFile::create(dir.path(), 0).unwrap();
        let path = f.path().to_path_buf();
        f.append_and_sync(10).await.unwrap();
        f.append_and_sync(10).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 20);
        f.written_bytes = FSYNC_FILE_MAX_BYTES - 5;
        f.append_and_sync(10).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10, "cut back to empty before passing the bound");
        drop(f);
        assert!(!path.exists());
    }
}
