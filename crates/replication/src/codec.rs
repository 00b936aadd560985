//! The byte form of everything replication stores or sends: a format version byte followed by
//! the postcard encoding of the value. A reader refuses an unknown version rather than guess.
//! See docs/durable-formats.md ("raft log entry", "vote", "applied state", "peer messages").

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The current format version of every encoded value.
pub const FORMAT_V1: u8 = 1;

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
    let mut out = vec![FORMAT_V1];
    // Serializing our own types into a Vec cannot fail: every type here is postcard-compatible,
    // which the round-trip tests check.
    let body = postcard::to_stdvec(v).expect("postcard encoding of a replication type");
    out.extend_from_slice(&body);
    out
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
    match b.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_V1) => Ok(postcard::from_bytes(&b[1..])?),
        Some(&v) => Err(CodecError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};

    use super::*;
    use crate::types::{Entry, MemberNode, Vote};

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq>(v: T) {
        let back: T = decode(&encode(&v)).expect("decode");
        assert_eq!(back, v);
    }

    #[test]
    fn replication_values_round_trip() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 7), 42);
        round_trip(log_id);
        round_trip(Some(log_id));
        round_trip(None::<LogId<u64>>);
        round_trip(Vote::new(3, 7));
        round_trip(Vote::new_committed(3, 7));
        let blank = Entry {
            log_id,
            payload: EntryPayload::Blank,
        };
        round_trip(blank);
        let nodes: BTreeMap<u64, MemberNode> = [(
            1,
            MemberNode {
                name: "a".into(),
                peer_urls: vec!["http://x:2380".into()],
                client_urls: vec![],
            },
        )]
        .into();
        let m = Membership::new(vec![BTreeSet::from([1])], nodes);
        round_trip(Entry {
            log_id,
            payload: EntryPayload::Membership(m),
        });
        let put = mvcc::Command::Put(mvcc::PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        round_trip(Entry {
            log_id,
            payload: EntryPayload::Normal(crate::types::Batch(vec![put])),
        });
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert!(matches!(
            decode::<u64>(&[9, 1]),
            Err(CodecError::Version(9))
        ));
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
    }
}
