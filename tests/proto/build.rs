//! Generates the `feed` messages (with serde derives) and the `Ticker` client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc, so that no protoc has to be installed.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free in edition 2021: build scripts are single-threaded here.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .type_attribute(".feed", "#[derive(serde::Serialize)]")
        .compile_protos(&["feed.proto"], &["."])?;
    println!("cargo:rerun-if-changed=feed.proto");
    Ok(())
}
