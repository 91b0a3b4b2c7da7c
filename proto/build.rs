//! Generates the gRPC code from `proto/rafka.proto` and `proto/peer.proto` with a vendored `protoc`, so no system
//! protobuf compiler is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY (not unsafe in edition 2021): build scripts are single-threaded.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/rafka.proto");
    println!("cargo:rerun-if-changed=proto/peer.proto");
    tonic_prost_build::configure()
        .bytes(".")
        .codec_path("crate::codec::ProtoCodec")
        .compile_protos(&["proto/rafka.proto", "proto/peer.proto"], &["proto"])?;
    Ok(())
}
