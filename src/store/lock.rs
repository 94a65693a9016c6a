//! Exclusive ownership of a data directory.
//!
//! A second `kv serve` on a directory in use must be refused with a clear
//! message before it touches RocksDB. We hold an `flock` on `DIR/LOCK.capkv`
//! for the life of the process (the kernel drops it on exit, also on
//! `kill -9`) and write our pid into it so the refusal can name the owner.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::StoreError;

pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join("LOCK.capkv");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::Io { op: "open", path: path.clone(), source })?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            return Err(StoreError::InUse { dir: dir.to_path_buf(), owner_pid: owner.trim().parse().ok() });
        }
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(|source| StoreError::Io { op: "write", path: path.clone(), source })?;
        Ok(DirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_dir_is_refused_with_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).err().expect("second lock must fail");
        let msg = err.to_string();
        assert!(msg.contains("in use"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        DirLock::acquire(dir.path()).expect("lock is free after drop");
    }
}
