//! The `kv-jepsen check` command line is an interface (`kv check` execs it):
//! these tests pin its output lines, exit statuses and the HTML it writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kv-jepsen");

const LINEARIZABLE: &str = r#"{"process":0,"type":"invoke","f":"write","key":"k","value":1,"time_ns":0}
{"process":0,"type":"ok","f":"write","key":"k","value":1,"time_ns":10}
{"process":1,"type":"invoke","f":"read","key":"k","value":null,"time_ns":20}
{"process":1,"type":"ok","f":"read","key":"k","value":1,"time_ns":30}
"#;

const STALE_READ: &str = r#"{"process":0,"type":"invoke","f":"write","key":"k","value":1,"time_ns":0}
{"process":0,"type":"ok","f":"write","key":"k","value":1,"time_ns":10}
{"process":1,"type":"invoke","f":"read","key":"k","value":null,"time_ns":20}
{"process":1,"type":"ok","f":"read","key":"k","value":null,"time_ns":30}
"#;

const MALFORMED: &str = r#"{"process":0,"type":"invoke","f":"write","key":"k","value":1,"time_ns":0}
{"process":0,"type":"ok","f":"write","key":"k","value":1,"time_ns":10}
{"process":1,"type":"ok","f":"read","key":"k","value":null,"time_ns":30}
"#;

fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("kv-jepsen runs")
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(str::to_string).collect()
}

// Proves: one stdout line per file in the documented shape; exit 0 when all
// are linearizable.
#[test]
fn all_linearizable_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let a = file(dir.path(), "a.jsonl", LINEARIZABLE);
    let b = file(dir.path(), "b.jsonl", "");
    let out = run(&["check", "--format", "jsonl", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let prefix = format!("{}: linearizable (2 ops, ", a.display());
    assert!(lines[0].starts_with(&prefix) && lines[0].ends_with(" ms)"), "{}", lines[0]);
    assert!(lines[1].starts_with(&format!("{}: linearizable (0 ops, ", b.display())));
}

// Proves: a violation exits 1, explains itself on stderr and, with --html,
// writes DIR/<file-stem>.html (creating DIR).
#[test]
fn violation_exits_1_with_explanation_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let ok = file(dir.path(), "ok.jsonl", LINEARIZABLE);
    let bad = file(dir.path(), "stale.jsonl", STALE_READ);
    let html_dir = dir.path().join("html");
    let out = run(&[
        "check",
        "--format",
        "jsonl",
        "--timeout-s",
        "5",
        "--html",
        html_dir.to_str().unwrap(),
        ok.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = stdout_lines(&out);
    assert!(lines[1].starts_with(&format!("{}: not-linearizable (2 ops, ", bad.display())));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("key \"k\""), "{stderr}");
    assert!(stderr.contains("read() → absent"), "{stderr}");
    assert!(html_dir.join("stale.html").is_file());
    assert!(!html_dir.join("ok.html").exists(), "only violations get a page");
}

// Proves: a malformed or missing file is one clear error line (no panic,
// no backtrace) and exit 2, while the other files are still checked.
#[test]
fn errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = file(dir.path(), "bad.jsonl", MALFORMED);
    let ok = file(dir.path(), "ok.jsonl", LINEARIZABLE);
    let missing = dir.path().join("missing.jsonl");
    let out =
        run(&["check", "--format", "jsonl", bad.to_str().unwrap(), missing.to_str().unwrap(), ok.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with(&format!("{}: error: line 3: ", bad.display())), "{}", lines[0]);
    assert!(lines[1].starts_with(&format!("{}: error: cannot open", missing.display())));
    assert!(lines[2].contains(": linearizable ("));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// Proves: a violation wins over an error for the exit status (1), since it
// is a definite finding.
#[test]
fn violation_wins_over_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = file(dir.path(), "stale.jsonl", STALE_READ);
    let broken = file(dir.path(), "broken.jsonl", "{");
    let out = run(&["check", "--format", "jsonl", broken.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

// Proves: the other formats are selected by --format, and a bad format
// name or no file is a usage error (exit 2).
#[test]
fn formats_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let etcd =
        file(dir.path(), "e.log", "INFO  jepsen.util - 0\t:invoke\t:write\t1\nINFO  jepsen.util - 0\t:ok\t:write\t1\n");
    let kv = file(
        dir.path(),
        "k.txt",
        "{:process 0, :type :invoke, :f :get, :key \"a\", :value nil}\n\
         {:process 0, :type :ok, :f :get, :key \"a\", :value \"x\"}\n",
    );
    let out = run(&["check", "--format", "jepsen-etcd", etcd.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run(&["check", "--format", "porcupine-kv", kv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a get of \"x\" from the initial \"\": {out:?}");
    assert_eq!(run(&["check", "--format", "csv", "x"]).status.code(), Some(2));
    assert_eq!(run(&["check", "--format", "jsonl"]).status.code(), Some(2));
}

/// A topic history: two acknowledged sends to partition 0, read back
/// from offset 0 to the high watermark.
const TOPIC_VALID: &str = r#"{"process":0,"type":"invoke","f":"send","partition":0,"value":1,"time_ns":0}
{"process":0,"type":"ok","f":"send","partition":0,"value":1,"offset":0,"time_ns":10}
{"process":0,"type":"invoke","f":"send","partition":0,"value":2,"time_ns":20}
{"process":0,"type":"ok","f":"send","partition":0,"value":2,"offset":1,"time_ns":30}
{"process":9,"type":"invoke","f":"poll","partition":0,"offset":0,"time_ns":40}
{"process":9,"type":"ok","f":"poll","partition":0,"offset":0,"records":[[0,1],[1,2]],"next_offset":2,"high_watermark":2,"log_end_offset":2,"time_ns":50}
"#;

// Proves: `check --format topic` prints `FILE: valid|invalid|unknown
// (counts, T ms)`, explains a loss on stderr, and exits 0 valid, 1
// invalid, 2 for a file that is not a topic history.
#[test]
fn topic_format() {
    let dir = tempfile::tempdir().unwrap();
    let valid = file(dir.path(), "valid.jsonl", TOPIC_VALID);
    let out = run(&["check", "--format", "topic", valid.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = stdout_lines(&out);
    assert!(lines[0].starts_with(&format!("{}: valid (2 sends (2 acked, ", valid.display())), "{}", lines[0]);
    assert!(lines[0].contains("lost 0, duplicated 0, reordered 0") && lines[0].ends_with(" ms)"), "{}", lines[0]);

    // Value 2 acknowledged at offset 1, and the log ends at offset 1.
    let lost = file(
        dir.path(),
        "lost.jsonl",
        &TOPIC_VALID.replace(
            r#"[[0,1],[1,2]],"next_offset":2,"high_watermark":2,"log_end_offset":2"#,
            r#"[[0,1]],"next_offset":1,"high_watermark":1,"log_end_offset":1"#,
        ),
    );
    let out = run(&["check", "--format", "topic", lost.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout_lines(&out)[0].contains(": invalid (") && stdout_lines(&out)[0].contains("lost 1,"), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("lost: value 2 (process 0, partition 0, ok at offset 1"), "{stderr}");

    let register = file(dir.path(), "register.jsonl", LINEARIZABLE);
    let out = run(&["check", "--format", "topic", register.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stdout_lines(&out)[0].starts_with(&format!("{}: error: line 1: ", register.display())), "{out:?}");
}
