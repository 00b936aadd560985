//! The etcd v3 API as Rust types and tonic services, generated from `proto/`, plus etcd's table of
//! gRPC errors (`rpctypes`). This crate holds no logic: it is the wire contract shared by the
//! server, the operator CLI and the tests.

#![allow(clippy::all)]
#![allow(rust_2018_idioms)]

pub mod rpctypes;

/// gRPC metadata on etcd's `MemberAdd` that asks tandem for a witness rather than a data member
/// (value [`WITNESS_ROLE`]); `tandem-ctl member add-witness` sets it. etcd ignores it.
pub const MEMBER_ROLE_METADATA: &str = "tandem-member-role";
pub const WITNESS_ROLE: &str = "witness";

/// The compiled descriptors of every message in `proto/` (for tests that check the wire contract).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptor.bin"));

/// Key-value records and events (`mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// Users, roles and permissions (`authpb`).
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// The etcd v3 services and their messages (`etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// The election service (`v3electionpb`).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// The lock service (`v3lockpb`).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// The leader-lease service of tandem's peer port (`tandempb.LeaderLease`); raft messages are in the `raft` crate.
pub mod tandempb {
    tonic::include_proto!("tandempb");
}
