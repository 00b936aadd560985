//! The byte form of everything the raft layer stores or sends: a format version byte followed
//! by the postcard encoding of the value. A reader refuses an unknown version rather than guess.
//! See docs/durable-formats.md ("raft log entry", "vote", "applied state", "peer messages").
//!
//! Version 2 (the witness) made entry payloads opaque bytes and gave members a role. Version 1
//! is still read from disk ([`decode_stored`]): an entry's batch becomes the state machine's
//! bytes unchanged (its own format version 1), a member read from it is a data node. Peers
//! speak version 2 only.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{
    Entry, LogId, MemberNode, Membership, NodeId, Payload, StoredMembership, Types,
};

/// Before the witness: entries carried the key-value batch itself; members had no role.
pub const FORMAT_V1: u8 = 1;
/// The current format version of every encoded value.
pub const FORMAT_V2: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("empty record")]
    Empty,
    #[error("decode: {0}")]
    Decode(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V2];
    // Serializing our own types into a Vec cannot fail: every type here is postcard-compatible,
    // which the round-trip tests check.
    let body = postcard::to_stdvec(v).expect("postcard encoding of a replication type");
    out.extend_from_slice(&body);
    out
}

/// Decodes a value of the current version (peer messages).
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
    match b.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_V2) => Ok(postcard::from_bytes(&b[1..])?),
        Some(&v) => Err(CodecError::Version(v)),
    }
}

/// A value kept on disk, readable in every version ever written.
pub trait Stored: DeserializeOwned {
    /// Reads the postcard body of a version-1 record.
    fn from_v1(body: &[u8]) -> Result<Self, CodecError>;
}

/// Decodes a value read from disk, of any version.
pub fn decode_stored<T: Stored>(b: &[u8]) -> Result<T, CodecError> {
    match b.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_V2) => Ok(postcard::from_bytes(&b[1..])?),
        Some(&FORMAT_V1) => T::from_v1(&b[1..]),
        Some(&v) => Err(CodecError::Version(v)),
    }
}

/// The id of an encoded entry (of any version: both begin with it), without decoding its
/// payload; log recovery needs no more.
pub fn entry_log_id(b: &[u8]) -> Result<LogId, CodecError> {
    match b.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_V1 | &FORMAT_V2) => Ok(postcard::take_from_bytes::<LogId>(&b[1..])?.0),
        Some(&v) => Err(CodecError::Version(v)),
    }
}

/// The state machine's format byte that version-1 batches carry once read as opaque payloads.
pub const V1_BATCH_FORMAT: u8 = 1;

/// A member as version 1 stored it: a data node.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct MemberNodeV1 {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl From<MemberNodeV1> for MemberNode {
    fn from(n: MemberNodeV1) -> Self {
        MemberNode {
            name: n.name,
            peer_urls: n.peer_urls,
            client_urls: n.client_urls,
            witness: false,
        }
    }
}

type MembershipV1 = openraft::Membership<NodeId, MemberNodeV1>;

fn membership_from_v1(m: MembershipV1) -> Membership {
    let configs = m.get_joint_config().clone();
    let nodes: std::collections::BTreeMap<NodeId, MemberNode> =
        m.nodes().map(|(id, n)| (*id, n.clone().into())).collect();
    Membership::new(configs, nodes)
}

/// A stored membership as version 1 wrote it (in a state machine's applied state).
pub fn stored_membership_from_v1(
    m: openraft::StoredMembership<NodeId, MemberNodeV1>,
) -> StoredMembership {
    StoredMembership::new(*m.log_id(), membership_from_v1(m.membership().clone()))
}

impl<C: Types> Stored for Entry<C> {
    /// A version-1 entry is `log id | variant | body`, the variant 0 (blank), 1 (normal: the
    /// batch, to the end of the record) or 2 (membership). The batch is kept as it is, behind
    /// the state machine's format byte 1, so no knowledge of its commands is needed here.
    fn from_v1(body: &[u8]) -> Result<Self, CodecError> {
        let (log_id, rest): (LogId, &[u8]) = postcard::take_from_bytes(body)?;
        let (variant, rest): (u32, &[u8]) = postcard::take_from_bytes(rest)?;
        let payload = match variant {
            0 => openraft::EntryPayload::Blank,
            1 => {
                let mut data = Vec::with_capacity(rest.len() + 1);
                data.push(V1_BATCH_FORMAT);
                data.extend_from_slice(rest);
                openraft::EntryPayload::Normal(Payload::Data(data))
            }
            2 => {
                openraft::EntryPayload::Membership(membership_from_v1(postcard::from_bytes(rest)?))
            }
            _ => return Err(postcard::Error::DeserializeBadEnum.into()),
        };
        Ok(Entry { log_id, payload })
    }
}

macro_rules! unchanged_since_v1 {
    ($($t:ty),*) => {$(
        impl Stored for $t {
            fn from_v1(body: &[u8]) -> Result<Self, CodecError> {
                Ok(postcard::from_bytes(body)?)
            }
        }
    )*};
}
unchanged_since_v1!(
    LogId,
    Option<LogId>,
    crate::types::Vote,
    Option<crate::types::Vote>
);

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;
    use crate::types::test_types::Test;
    use crate::types::Vote;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq>(v: T) {
        let back: T = decode(&encode(&v)).expect("decode");
        assert_eq!(back, v);
    }

    fn member(name: &str) -> MemberNode {
        MemberNode {
            name: name.into(),
            peer_urls: vec!["http://x:2380".into()],
            client_urls: vec![],
            witness: name == "w",
        }
    }

    #[test]
    fn replication_values_round_trip() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 7), 42);
        round_trip(log_id);
        round_trip(Some(log_id));
        round_trip(None::<LogId<u64>>);
        round_trip(Vote::new(3, 7));
        round_trip(Vote::new_committed(3, 7));
        round_trip(Entry::<Test> {
            log_id,
            payload: EntryPayload::Blank,
        });
        let nodes: BTreeMap<u64, MemberNode> = [(1, member("a")), (2, member("w"))].into();
        let m = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        round_trip(Entry::<Test> {
            log_id,
            payload: EntryPayload::Membership(m),
        });
        for payload in [Payload::Data(vec![1, 2, 3]), Payload::Elided] {
            round_trip(Entry::<Test> {
                log_id,
                payload: EntryPayload::Normal(payload),
            });
        }
    }

    /// Version-1 bytes as the pre-witness tandem wrote them to `member/wal/`.
    fn v1(body: impl Serialize, rest: &[u8]) -> Vec<u8> {
        let mut b = vec![FORMAT_V1];
        b.extend(postcard::to_stdvec(&body).expect("encode"));
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn version_1_entries_are_still_read() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 7), 42);
        // A normal entry: the batch's bytes follow variant 1 to the end of the record.
        let normal = v1((log_id, 1u32), &[2, 0xAA, 0xBB]);
        let e: Entry<Test> = decode_stored(&normal).expect("normal v1");
        assert_eq!(e.log_id, log_id);
        assert!(
            matches!(e.payload, EntryPayload::Normal(Payload::Data(d)) if d == [1, 2, 0xAA, 0xBB])
        );
        let blank: Entry<Test> = decode_stored(&v1((log_id, 0u32), &[])).expect("blank v1");
        assert!(matches!(blank.payload, EntryPayload::Blank));
        let old = MemberNodeV1 {
            name: "a".into(),
            peer_urls: vec!["http://x:2380".into()],
            client_urls: vec!["http://x:2379".into()],
        };
        let m = openraft::Membership::<u64, MemberNodeV1>::new(
            vec![BTreeSet::from([1])],
            BTreeMap::from([(1, old)]),
        );
        let e: Entry<Test> = decode_stored(&v1((log_id, 2u32, m), &[])).expect("membership v1");
        let EntryPayload::Membership(m) = e.payload else {
            panic!("not a membership entry");
        };
        let node = m.get_node(&1).expect("member 1");
        assert_eq!(node.client_urls, ["http://x:2379"]);
        assert!(!node.witness, "a version-1 member is a data node");
        // Peers speak the current version only.
        assert!(matches!(
            decode::<Entry<Test>>(&normal),
            Err(CodecError::Version(1))
        ));
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert!(matches!(
            decode::<u64>(&[9, 1]),
            Err(CodecError::Version(9))
        ));
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode_stored::<LogId<u64>>(&[9, 1]),
            Err(CodecError::Version(9))
        ));
    }
}
