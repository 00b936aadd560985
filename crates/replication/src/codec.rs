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
