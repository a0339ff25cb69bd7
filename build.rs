//! Compiles `proto/` with prost (through protox, so no system `protoc` is needed), then sets up napi.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/protoqueue/v1/envelope.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        // Most tasks carry none: boxed, it costs a task 8 bytes.
        .boxed(".protoqueue.v1.Task.trace_context")
        .compile_fds(descriptors)?;
    napi_build::setup();
    Ok(())
}
