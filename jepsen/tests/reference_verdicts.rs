//! Validates the checker against independent, published verdicts: every
//! history listed in `shared/porcupine-data/verdicts.csv` (Jepsen's etcd logs
//! and Porcupine's kv logs) must get exactly its published verdict within a
//! per-file budget — `unknown` counts as a failure. Files in the data folder
//! without a published verdict (`etcd/etcd_095.log`) must only finish within
//! their budget.
//!
//! The data lives outside the repository (never copy it in): by default in
//! `shared/` next to the repository (`<repo>/../shared/porcupine-data`);
//! `CAPKV_PORCUPINE_DATA` overrides the path. Without it the test says so
//! loudly on stderr and passes, because the checker is then NOT validated.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capkv_jepsen::checker::{self, Format, Outcome};

/// Budget per file. The slowest reference file takes well under a second.
const FILE_BUDGET: Duration = Duration::from_secs(30);

/// The one file the data set ships without a published verdict.
const UNLISTED_FILE: &str = "etcd/etcd_095.log";

fn data_dir() -> PathBuf {
    std::env::var_os("CAPKV_PORCUPINE_DATA").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/porcupine-data")),
        PathBuf::from,
    )
}

/// Written straight to the process's stderr, past the test harness's
/// output capture, so it is seen even when the test passes.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn format_of(file: &str) -> Format {
    if file.starts_with("etcd/") {
        Format::JepsenEtcd
    } else if file.starts_with("kv/") {
        Format::PorcupineKv
    } else {
        panic!("verdicts.csv lists {file:?}, which is in no known folder")
    }
}

fn expected_outcome(word: &str) -> Outcome {
    match word {
        "linearizable" => Outcome::Linearizable,
        "not-linearizable" => Outcome::NotLinearizable,
        other => panic!("unknown verdict {other:?} in verdicts.csv"),
    }
}

/// Every file of the data set's history folders, relative to `dir`.
fn history_files(dir: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for folder in ["etcd", "kv"] {
        let entries = std::fs::read_dir(dir.join(folder))
            .unwrap_or_else(|e| panic!("cannot list {}/{folder}: {e}", dir.display()));
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            files.insert(format!("{folder}/{name}"));
        }
    }
    files
}

#[test]
fn every_reference_history_gets_its_published_verdict() {
    let dir = data_dir();
    let csv_path = dir.join("verdicts.csv");
    if !csv_path.is_file() {
        say(&format!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             SKIPPED: reference histories not found at {}; the checker is NOT validated.\n\
             Set CAPKV_PORCUPINE_DATA to the porcupine-data folder to run this test.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
            dir.display()
        ));
        return;
    }

    let csv = std::fs::read_to_string(&csv_path).expect("readable verdicts.csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("file,expected"), "unexpected verdicts.csv header");
    let listed: Vec<(String, Outcome)> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (file, word) = l.split_once(',').unwrap_or_else(|| panic!("bad csv line {l:?}"));
            (file.to_string(), expected_outcome(word.trim()))
        })
        .collect();
    assert!(!listed.is_empty(), "verdicts.csv lists no file");

    let listed_names: BTreeSet<String> = listed.iter().map(|(f, _)| f.clone()).collect();
    let unlisted: Vec<String> = history_files(&dir).difference(&listed_names).cloned().collect();
    assert!(unlisted.iter().any(|f| f == UNLISTED_FILE), "{UNLISTED_FILE} is missing from {}", dir.display());

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut slowest: Option<(Duration, String)> = None;
    let mut checked = 0usize;
    let jobs = listed.iter().map(|(f, o)| (f.clone(), Some(*o))).chain(unlisted.iter().map(|f| (f.clone(), None)));
    for (file, expected) in jobs {
        let path = dir.join(&file);
        let verdict = match checker::check_file(format_of(&file), &path, FILE_BUDGET) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{file}: error: {e}"));
                continue;
            }
        };
        checked += 1;
        if slowest.as_ref().is_none_or(|(t, _)| verdict.elapsed > *t) {
            slowest = Some((verdict.elapsed, file.clone()));
        }
        let finished = verdict.result != Outcome::Unknown && verdict.elapsed <= FILE_BUDGET;
        match expected {
            Some(expected) if verdict.result != expected => failures.push(format!(
                "{file}: expected {expected}, got {} ({} ops, {:?})",
                verdict.result, verdict.ops, verdict.elapsed
            )),
            None if !finished => failures.push(format!(
                "{file} (no published verdict): did not finish within {FILE_BUDGET:?}: {} after {:?}",
                verdict.result, verdict.elapsed
            )),
            _ => {}
        }
    }
    let total = started.elapsed();
    let (slowest_time, slowest_file) = slowest.unwrap_or_default();
    say(&format!(
        "reference histories: {} with published verdicts + {} without, {checked} checked in {total:?} \
         (slowest: {slowest_file} in {slowest_time:?}); {} failures",
        listed.len(),
        unlisted.len(),
        failures.len()
    ));
    assert!(
        failures.is_empty(),
        "{} of {} reference histories failed:\n{}",
        failures.len(),
        listed.len() + unlisted.len(),
        failures.join("\n")
    );
}
