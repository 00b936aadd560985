//! Compiles the etcd v3 API in `proto/` with the vendored protoc, so the build needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded.
    std::env::set_var("PROTOC", protoc);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "mvccpb/kv.proto",
        "authpb/auth.proto",
        "etcdserverpb/rpc.proto",
        "v3electionpb/v3election.proto",
        "v3lockpb/v3lock.proto",
        "tandempb/lease.proto",
    ]
    .map(|f| root.join(f));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("etcd_descriptor.bin"))
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_protos(&files, std::slice::from_ref(&root))?;
    // The protobuf JSON mapping (proto field names, 64-bit integers as strings, bytes as
    // base64, enums by name, default values left out), as etcd's grpc-gateway speaks it.
    let descriptors = std::fs::read(out.join("etcd_descriptor.bin"))?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3electionpb",
            ".v3lockpb",
        ])?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
