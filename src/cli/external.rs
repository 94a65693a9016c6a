//! `kv check` and `kv jepsen` run the `kv-jepsen` binary (git-style), which
//! keeps the checker's and harness's dependencies out of the server.

use std::path::PathBuf;
use std::process::ExitCode;

use super::fail;

fn find(name: &str) -> Option<PathBuf> {
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

pub fn run(subcommand: &str, args: &[String]) -> ExitCode {
    let Some(bin) = find("kv-jepsen") else {
        return fail(format!(
            "`kv {subcommand}` needs the kv-jepsen binary, which is neither next to kv nor on PATH; build it with `cargo build --release -p capkv-jepsen`"
        ));
    };
    match std::process::Command::new(&bin).arg(subcommand).args(args).status() {
        Ok(status) => ExitCode::from(status.code().unwrap_or(2).clamp(0, 255) as u8),
        Err(e) => fail(format!("cannot run {}: {e}", bin.display())),
    }
}
