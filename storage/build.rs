// Compile proto/tcr_blobs.proto with protox (pure Rust, no protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tcr_blobs.proto");
    let fds = protox::compile(["proto/tcr_blobs.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Chunks are `Bytes`: sent from the mapped file without a copy.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
