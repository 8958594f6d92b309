//! Generates the gRPC contract with protox (a protobuf compiler in Rust), so building
//! needs no `protoc`. The generated code lives only in `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "stratus/worker/v1/worker.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        .build_transport(false)
        // Component chunks are slices of one buffer on the sending side.
        .bytes(".stratus.worker.v1.ComponentChunk.data")
        .compile_fds(descriptors)?;
    Ok(())
}
