//! The `kv` binary: a thin shell over `capkv::cli`.

/// mimalloc instead of glibc's malloc: a node allocates and frees many small
/// buffers per request (protobuf, HTTP/2 frames, write batches) across
/// threads, and glibc's allocator took ~13 % of a busy node's CPU
/// (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    capkv::cli::run()
}
