//! This process' resident memory and open file descriptors, read from
//! `/proc/self` at scrape time (Linux only; `None` elsewhere or on error).

/// Resident set size in bytes: the second field of `/proc/self/statm`
/// (pages) times the page size.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages = parse_statm_resident_pages(&statm)?;
    // SAFETY: sysconf has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page_bytes > 0).then(|| pages * page_bytes as u64)
}

/// Open file descriptors: entries of `/proc/self/fd` (the directory handle
/// used to list it is one of them, and is not counted).
pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

fn parse_statm_resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_second_field_is_resident_pages() {
        assert_eq!(parse_statm_resident_pages("1234 567 89 1 0 300 0\n"), Some(567));
        assert_eq!(parse_statm_resident_pages("1234"), None);
        assert_eq!(parse_statm_resident_pages(""), None);
    }

    /// Opening a file shows as one more descriptor; the RSS of a running
    /// test process is at least a megabyte.
    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        assert!(resident_memory_bytes().unwrap() > 1 << 20);
        // Other test threads open files too: retry until one reading is clean.
        let seen = (0..20).any(|_| {
            let before = open_fds().unwrap();
            let f = std::fs::File::open("/proc/self/statm").unwrap();
            let during = open_fds().unwrap();
            drop(f);
            during == before + 1
        });
        assert!(seen, "opening a file never showed as one more fd");
    }
}
