//! The wire contract: every message is synthesized from our own descriptors with every field set
//! (each member of each top-level oneof in turn), decoded by our types and by the independent
//! `etcd-client` crate's types (generated from etcd's own .proto files), and each side's
//! re-encoding must decode on the other side to the same value. A wrong field number, a wrong
//! type, or a field one side lacks makes the two disagree.

use std::collections::HashMap;

use etcd_api::{authpb, etcdserverpb as ours, mvccpb, v3electionpb, v3lockpb};
use etcd_client::proto as theirs;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

struct Descriptors {
    messages: HashMap<String, DescriptorProto>,
}

impl Descriptors {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(etcd_api::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut messages = HashMap::new();
        for file in set.file {
            let pkg = file.package.clone().unwrap_or_default();
            for m in file.message_type {
                Self::add(&mut messages, &format!(".{pkg}"), m);
            }
        }
        Self { messages }
    }

    fn add(out: &mut HashMap<String, DescriptorProto>, prefix: &str, m: DescriptorProto) {
        let name = format!("{prefix}.{}", m.name());
        for nested in m.nested_type.clone() {
            Self::add(out, &name, nested);
        }
        out.insert(name, m);
    }

    /// How many members the first oneof of a message has (0 if none).
    fn oneof_members(&self, name: &str) -> usize {
        let m = &self.messages[name];
        m.field
            .iter()
            .filter(|f| f.oneof_index == Some(0) && !f.proto3_optional())
            .count()
    }

    /// An encoding of `name` with every field set; for the first oneof, member `pick`.
    fn synth(&self, name: &str, pick: usize, depth: usize) -> Vec<u8> {
        let m = &self.messages[name];
        let mut out = Vec::new();
        let mut seen_in_oneof: HashMap<i32, usize> = HashMap::new();
        for f in &m.field {
            if let Some(o) = f.oneof_index {
                let n = seen_in_oneof.entry(o).or_insert(0);
                let chosen = if o == 0 { pick } else { 0 };
                *n += 1;
                if *n - 1 != chosen {
                    continue;
                }
            }
            let times = if f.label() == Label::Repeated { 2 } else { 1 };
            for i in 0..times {
                let num = f.number() as u64;
                match f.r#type() {
                    Type::Int64 | Type::Uint64 | Type::Int32 | Type::Uint32 => {
                        put_varint(&mut out, num << 3);
                        put_varint(&mut out, num * 1000 + i + 1);
                    }
                    Type::Bool | Type::Enum => {
                        put_varint(&mut out, num << 3);
                        put_varint(&mut out, 1);
                    }
                    Type::String | Type::Bytes => {
                        let v = format!("field-{num}-{i}");
                        put_varint(&mut out, (num << 3) | 2);
                        put_varint(&mut out, v.len() as u64);
                        out.extend_from_slice(v.as_bytes());
                    }
                    Type::Message if depth < 4 => {
                        let inner = self.synth(f.type_name(), 0, depth + 1);
                        put_varint(&mut out, (num << 3) | 2);
                        put_varint(&mut out, inner.len() as u64);
                        out.extend_from_slice(&inner);
                    }
                    Type::Message => {}
                    other => panic!("{name}.{}: type {other:?} not synthesized", f.name()),
                }
            }
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn check<O, T>(d: &Descriptors, name: &str)
where
    O: Message + Default + PartialEq + std::fmt::Debug,
    T: Message + Default + PartialEq + std::fmt::Debug,
{
    let samples = d.oneof_members(name).max(1);
    for pick in 0..samples {
        let bytes = d.synth(name, pick, 0);
        let ours =
            O::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{name}: our decode: {e}"));
        let theirs = T::decode(bytes.as_slice())
            .unwrap_or_else(|e| panic!("{name}: etcd-client decode: {e}"));
        let theirs_from_ours =
            T::decode(ours.encode_to_vec().as_slice()).expect("decode ours as theirs");
        assert_eq!(
            theirs_from_ours, theirs,
            "{name} (oneof member {pick}): our encoding read by etcd-client"
        );
        let ours_from_theirs =
            O::decode(theirs.encode_to_vec().as_slice()).expect("decode theirs as ours");
        assert_eq!(
            ours_from_theirs, ours,
            "{name} (oneof member {pick}): etcd-client's encoding read by us; a field it lacks?"
        );
        assert_eq!(
            ours.encoded_len(),
            theirs.encoded_len(),
            "{name}: encoded sizes differ"
        );
    }
}

macro_rules! pairs {
    ($d:expr; $($ours:ty => $theirs:ty, $name:literal;)*) => {
        let mut checked = 0;
        $( check::<$ours, $theirs>($d, $name); checked += 1; )*
        checked
    };
}

#[test]
fn every_shared_message_matches_etcd_client() {
    let d = Descriptors::load();
    let n = {
        pairs! { &d;
            mvccpb::KeyValue => theirs::PbKeyValue, ".mvccpb.KeyValue";
            mvccpb::Event => theirs::PbEvent, ".mvccpb.Event";
            ours::ResponseHeader => theirs::PbResponseHeader, ".etcdserverpb.ResponseHeader";
            ours::RangeRequest => theirs::PbRangeRequest, ".etcdserverpb.RangeRequest";
            ours::RangeResponse => theirs::PbRangeResponse, ".etcdserverpb.RangeResponse";
            ours::PutRequest => theirs::PbPutRequest, ".etcdserverpb.PutRequest";
            ours::PutResponse => theirs::PbPutResponse, ".etcdserverpb.PutResponse";
            ours::DeleteRangeRequest => theirs::PbDeleteRequest, ".etcdserverpb.DeleteRangeRequest";
            ours::DeleteRangeResponse => theirs::PbDeleteResponse, ".etcdserverpb.DeleteRangeResponse";
            ours::RequestOp => theirs::PbTxnRequestOp, ".etcdserverpb.RequestOp";
            ours::ResponseOp => theirs::PbResponseOp, ".etcdserverpb.ResponseOp";
            ours::Compare => theirs::PbCompare, ".etcdserverpb.Compare";
            ours::TxnRequest => theirs::PbTxnRequest, ".etcdserverpb.TxnRequest";
            ours::TxnResponse => theirs::PbTxnResponse, ".etcdserverpb.TxnResponse";
            ours::CompactionRequest => theirs::PbCompactionRequest, ".etcdserverpb.CompactionRequest";
            ours::CompactionResponse => theirs::PbCompactionResponse, ".etcdserverpb.CompactionResponse";
            ours::HashRequest => theirs::PbHashRequest, ".etcdserverpb.HashRequest";
            ours::HashResponse => theirs::PbHashResponse, ".etcdserverpb.HashResponse";
            ours::HashKvRequest => theirs::PbHashKvRequest, ".etcdserverpb.HashKVRequest";
            ours::HashKvResponse => theirs::PbHashKvResponse, ".etcdserverpb.HashKVResponse";
            ours::SnapshotRequest => theirs::PbSnapshotRequest, ".etcdserverpb.SnapshotRequest";
            ours::SnapshotResponse => theirs::PbSnapshotResponse, ".etcdserverpb.SnapshotResponse";
            ours::WatchRequest => theirs::PbWatchRequest, ".etcdserverpb.WatchRequest";
            ours::WatchResponse => theirs::PbWatchResponse, ".etcdserverpb.WatchResponse";
            ours::LeaseGrantRequest => theirs::PbLeaseGrantRequest, ".etcdserverpb.LeaseGrantRequest";
            ours::LeaseGrantResponse => theirs::PbLeaseGrantResponse, ".etcdserverpb.LeaseGrantResponse";
            ours::LeaseRevokeRequest => theirs::PbLeaseRevokeRequest, ".etcdserverpb.LeaseRevokeRequest";
            ours::LeaseRevokeResponse => theirs::PbLeaseRevokeResponse, ".etcdserverpb.LeaseRevokeResponse";
            ours::LeaseKeepAliveRequest => theirs::PbLeaseKeepAliveRequest, ".etcdserverpb.LeaseKeepAliveRequest";
            ours::LeaseKeepAliveResponse => theirs::PbLeaseKeepAliveResponse, ".etcdserverpb.LeaseKeepAliveResponse";
            ours::LeaseTimeToLiveRequest => theirs::PbLeaseTimeToLiveRequest, ".etcdserverpb.LeaseTimeToLiveRequest";
            ours::LeaseTimeToLiveResponse => theirs::PbLeaseTimeToLiveResponse, ".etcdserverpb.LeaseTimeToLiveResponse";
            ours::LeaseLeasesRequest => theirs::PbLeaseLeasesRequest, ".etcdserverpb.LeaseLeasesRequest";
            ours::LeaseLeasesResponse => theirs::PbLeaseLeasesResponse, ".etcdserverpb.LeaseLeasesResponse";
            ours::LeaseStatus => theirs::PbLeaseStatus, ".etcdserverpb.LeaseStatus";
            ours::Member => theirs::PbMember, ".etcdserverpb.Member";
            ours::MemberAddRequest => theirs::PbMemberAddRequest, ".etcdserverpb.MemberAddRequest";
            ours::MemberAddResponse => theirs::PbMemberAddResponse, ".etcdserverpb.MemberAddResponse";
            ours::MemberRemoveRequest => theirs::PbMemberRemoveRequest, ".etcdserverpb.MemberRemoveRequest";
            ours::MemberRemoveResponse => theirs::PbMemberRemoveResponse, ".etcdserverpb.MemberRemoveResponse";
            ours::MemberUpdateRequest => theirs::PbMemberUpdateRequest, ".etcdserverpb.MemberUpdateRequest";
            ours::MemberUpdateResponse => theirs::PbMemberUpdateResponse, ".etcdserverpb.MemberUpdateResponse";
            ours::MemberListRequest => theirs::PbMemberListRequest, ".etcdserverpb.MemberListRequest";
            ours::MemberListResponse => theirs::PbMemberListResponse, ".etcdserverpb.MemberListResponse";
            ours::MemberPromoteRequest => theirs::PbMemberPromoteRequest, ".etcdserverpb.MemberPromoteRequest";
            ours::MemberPromoteResponse => theirs::PbMemberPromoteResponse, ".etcdserverpb.MemberPromoteResponse";
            ours::DefragmentRequest => theirs::PbDefragmentRequest, ".etcdserverpb.DefragmentRequest";
            ours::DefragmentResponse => theirs::PbDefragmentResponse, ".etcdserverpb.DefragmentResponse";
            ours::MoveLeaderRequest => theirs::PbMoveLeaderRequest, ".etcdserverpb.MoveLeaderRequest";
            ours::MoveLeaderResponse => theirs::PbMoveLeaderResponse, ".etcdserverpb.MoveLeaderResponse";
            ours::AlarmRequest => theirs::PbAlarmRequest, ".etcdserverpb.AlarmRequest";
            ours::AlarmMember => theirs::PbAlarmMember, ".etcdserverpb.AlarmMember";
            ours::AlarmResponse => theirs::PbAlarmResponse, ".etcdserverpb.AlarmResponse";
            ours::DowngradeRequest => theirs::PbDowngradeRequest, ".etcdserverpb.DowngradeRequest";
            ours::DowngradeResponse => theirs::PbDowngradeResponse, ".etcdserverpb.DowngradeResponse";
            ours::DowngradeInfo => theirs::PbDowngradeInfo, ".etcdserverpb.DowngradeInfo";
            ours::StatusRequest => theirs::PbStatusRequest, ".etcdserverpb.StatusRequest";
            ours::StatusResponse => theirs::PbStatusResponse, ".etcdserverpb.StatusResponse";
            ours::AuthEnableRequest => theirs::PbAuthEnableRequest, ".etcdserverpb.AuthEnableRequest";
            ours::AuthDisableRequest => theirs::PbAuthDisableRequest, ".etcdserverpb.AuthDisableRequest";
            ours::AuthenticateRequest => theirs::PbAuthenticateRequest, ".etcdserverpb.AuthenticateRequest";
            ours::AuthUserAddRequest => theirs::PbAuthUserAddRequest, ".etcdserverpb.AuthUserAddRequest";
            ours::AuthUserGetRequest => theirs::PbAuthUserGetRequest, ".etcdserverpb.AuthUserGetRequest";
            ours::AuthUserDeleteRequest => theirs::PbAuthUserDeleteRequest, ".etcdserverpb.AuthUserDeleteRequest";
            ours::AuthUserChangePasswordRequest => theirs::PbAuthUserChangePasswordRequest, ".etcdserverpb.AuthUserChangePasswordRequest";
            ours::AuthUserGrantRoleRequest => theirs::PbAuthUserGrantRoleRequest, ".etcdserverpb.AuthUserGrantRoleRequest";
            ours::AuthUserRevokeRoleRequest => theirs::PbAuthUserRevokeRoleRequest, ".etcdserverpb.AuthUserRevokeRoleRequest";
            ours::AuthRoleAddRequest => theirs::PbAuthRoleAddRequest, ".etcdserverpb.AuthRoleAddRequest";
            ours::AuthRoleGetRequest => theirs::PbAuthRoleGetRequest, ".etcdserverpb.AuthRoleGetRequest";
            ours::AuthUserListRequest => theirs::PbAuthUserListRequest, ".etcdserverpb.AuthUserListRequest";
            ours::AuthRoleListRequest => theirs::PbAuthRoleListRequest, ".etcdserverpb.AuthRoleListRequest";
            ours::AuthRoleDeleteRequest => theirs::PbAuthRoleDeleteRequest, ".etcdserverpb.AuthRoleDeleteRequest";
            ours::AuthRoleGrantPermissionRequest => theirs::PbAuthRoleGrantPermissionRequest, ".etcdserverpb.AuthRoleGrantPermissionRequest";
            ours::AuthRoleRevokePermissionRequest => theirs::PbAuthRoleRevokePermissionRequest, ".etcdserverpb.AuthRoleRevokePermissionRequest";
            ours::AuthEnableResponse => theirs::PbAuthEnableResponse, ".etcdserverpb.AuthEnableResponse";
            ours::AuthDisableResponse => theirs::PbAuthDisableResponse, ".etcdserverpb.AuthDisableResponse";
            ours::AuthenticateResponse => theirs::PbAuthenticateResponse, ".etcdserverpb.AuthenticateResponse";
            ours::AuthUserAddResponse => theirs::PbAuthUserAddResponse, ".etcdserverpb.AuthUserAddResponse";
            ours::AuthUserGetResponse => theirs::PbAuthUserGetResponse, ".etcdserverpb.AuthUserGetResponse";
            ours::AuthUserDeleteResponse => theirs::PbAuthUserDeleteResponse, ".etcdserverpb.AuthUserDeleteResponse";
            ours::AuthUserChangePasswordResponse => theirs::PbAuthUserChangePasswordResponse, ".etcdserverpb.AuthUserChangePasswordResponse";
            ours::AuthUserGrantRoleResponse => theirs::PbAuthUserGrantRoleResponse, ".etcdserverpb.AuthUserGrantRoleResponse";
            ours::AuthUserRevokeRoleResponse => theirs::PbAuthUserRevokeRoleResponse, ".etcdserverpb.AuthUserRevokeRoleResponse";
            ours::AuthRoleAddResponse => theirs::PbAuthRoleAddResponse, ".etcdserverpb.AuthRoleAddResponse";
            ours::AuthRoleGetResponse => theirs::PbAuthRoleGetResponse, ".etcdserverpb.AuthRoleGetResponse";
            ours::AuthRoleListResponse => theirs::PbAuthRoleListResponse, ".etcdserverpb.AuthRoleListResponse";
            ours::AuthUserListResponse => theirs::PbAuthUserListResponse, ".etcdserverpb.AuthUserListResponse";
            ours::AuthRoleDeleteResponse => theirs::PbAuthRoleDeleteResponse, ".etcdserverpb.AuthRoleDeleteResponse";
            ours::AuthRoleGrantPermissionResponse => theirs::PbAuthRoleGrantPermissionResponse, ".etcdserverpb.AuthRoleGrantPermissionResponse";
            ours::AuthRoleRevokePermissionResponse => theirs::PbAuthRoleRevokePermissionResponse, ".etcdserverpb.AuthRoleRevokePermissionResponse";
            v3electionpb::CampaignResponse => theirs::PbCampaignResponse, ".v3electionpb.CampaignResponse";
            v3electionpb::LeaderKey => theirs::PbLeaderKey, ".v3electionpb.LeaderKey";
            v3electionpb::LeaderResponse => theirs::PbLeaderResponse, ".v3electionpb.LeaderResponse";
            v3electionpb::ProclaimResponse => theirs::PbProclaimResponse, ".v3electionpb.ProclaimResponse";
            v3electionpb::ResignResponse => theirs::PbResignResponse, ".v3electionpb.ResignResponse";
            v3lockpb::LockResponse => theirs::PbLockResponse, ".v3lockpb.LockResponse";
            v3lockpb::UnlockResponse => theirs::PbUnlockResponse, ".v3lockpb.UnlockResponse";
        }
    };
    let _ = authpb::Permission::default();
    println!("{n} message types cross-checked against etcd-client");
    assert!(n >= 90);
}
