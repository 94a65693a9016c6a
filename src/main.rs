//! The `kv` binary: a thin shell over `capkv::cli`.

fn main() -> std::process::ExitCode {
    capkv::cli::run()
}
