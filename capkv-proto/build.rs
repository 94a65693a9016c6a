//! Generates the gRPC client and server code for `../proto/*.proto`.
//! Needs `protoc` (Debian: `protobuf-compiler`); the scripts install it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure().bytes(".").compile_protos(
        &[
            "../proto/capkv.proto",
            "../proto/peer.proto",
            "../proto/rsm.proto",
            "../proto/rsm_topic.proto",
            "../proto/topics.proto",
            "../proto/topic_peer.proto",
        ],
        &["../proto"],
    )?;
    Ok(())
}
