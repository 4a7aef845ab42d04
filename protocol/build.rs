//! Compiles proto/packfed/v1/*.proto with protox (pure Rust, no protoc binary).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a compiled-in path goes stale when one target
    // directory serves two checkouts, and the script then looks in the other.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = ["packfed/v1/records.proto", "packfed/v1/wire.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
