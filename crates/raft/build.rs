//! Compiles tandem's peer protocol (`proto/tandempb/peer.proto`) with the vendored protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded.
    std::env::set_var("PROTOC", protoc);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_protos(
            &[root.join("tandempb/peer.proto")],
            std::slice::from_ref(&root),
        )?;
    println!(
        "cargo:rerun-if-changed={}",
        root.join("tandempb/peer.proto").display()
    );
    Ok(())
}
