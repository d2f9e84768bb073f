//! Compiles `ddim/v1/ddim.proto` with protox (pure Rust, no system protoc) and
//! writes a file descriptor set for server reflection.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=ddim/v1/ddim.proto");
    let fds = protox::compile(["ddim/v1/ddim.proto"], ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("ddim_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .skip_protoc_run()
        .compile_fds(fds)?;
    Ok(())
}
