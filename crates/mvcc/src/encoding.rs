//! Byte forms of stored records. A key-value record is the protobuf encoding of etcd's
//! `mvccpb.KeyValue` (fields in number order, zero values omitted, exactly as etcd writes it), so
//! a record written by tandem hashes like etcd's. Written by hand because this crate must not
//! depend on the protobuf toolchain. See docs/durable-formats.md.

use crate::error::{Error, Result};
use crate::request::KeyValue;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_int_field(out: &mut Vec<u8>, field: u32, v: i64) {
    if v != 0 {
        put_varint(out, u64::from(field << 3));
        put_varint(out, v as u64);
    }
}

fn put_bytes_field(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        put_varint(out, u64::from((field << 3) | 2));
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*pos)
            .ok_or_else(|| Error::Corrupt("truncated varint".into()))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(Error::Corrupt("varint too long".into()))
}

/// Encodes a key-value record as etcd's `mvccpb.KeyValue`.
pub fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(kv.key.len() + kv.value.len() + 40);
    put_bytes_field(&mut out, 1, &kv.key);
    put_int_field(&mut out, 2, kv.create_revision);
    put_int_field(&mut out, 3, kv.mod_revision);
    put_int_field(&mut out, 4, kv.version);
    put_bytes_field(&mut out, 5, &kv.value);
    put_int_field(&mut out, 6, kv.lease);
    out
}

/// Decodes a record written by [`encode_kv`] (or by etcd).
pub fn decode_kv(b: &[u8]) -> Result<KeyValue> {
    let mut kv = KeyValue::default();
    let mut pos = 0;
    while pos < b.len() {
        let tag = get_varint(b, &mut pos)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                let v = get_varint(b, &mut pos)? as i64;
                match field {
                    2 => kv.create_revision = v,
                    3 => kv.mod_revision = v,
                    4 => kv.version = v,
                    6 => kv.lease = v,
                    _ => {}
                }
            }
            2 => {
                let len = get_varint(b, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or_else(|| Error::Corrupt("truncated field".into()))?;
                match field {
                    1 => kv.key = b[pos..end].to_vec(),
                    5 => kv.value = b[pos..end].to_vec(),
                    _ => {}
                }
                pos = end;
            }
            _ => return Err(Error::Corrupt(format!("unexpected wire type {wire}"))),
        }
    }
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_round_trip() {
        let kv = KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 300,
            version: 7,
            value: vec![0u8; 200],
            lease: -5,
        };
        assert_eq!(decode_kv(&encode_kv(&kv)).unwrap(), kv);
        let tomb = KeyValue {
            key: b"k".to_vec(),
            ..Default::default()
        };
        assert_eq!(encode_kv(&tomb), vec![0x0a, 1, b'k']);
    }

    #[test]
    fn golden_bytes_match_etcd_encoding() {
        // mvccpb.KeyValue{Key:"a", CreateRevision:2, ModRevision:3, Version:1, Value:"b"} as
        // etcd (gogoproto) marshals it.
        let kv = KeyValue {
            key: b"a".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            value: b"b".to_vec(),
            lease: 0,
        };
        assert_eq!(
            encode_kv(&kv),
            vec![0x0a, 1, b'a', 0x10, 2, 0x18, 3, 0x20, 1, 0x2a, 1, b'b']
        );
    }

    #[test]
    fn garbage_is_corrupt_not_panic() {
        assert!(decode_kv(&[0x0a, 0xff]).is_err());
        assert!(decode_kv(&[0x0b]).is_err());
        assert!(decode_kv(&[0x80; 20]).is_err());
    }
}
