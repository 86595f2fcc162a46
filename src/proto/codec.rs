//! Typed payloads: the codec choice, and the only file that names bincode.
//!
//! A typed message is one frame whose payload is the value in the
//! connection's codec: bincode's standard configuration (little-endian,
//! variable-length integers) by default, or a pickle for Python peers
//! (feature `pickle`, in `pickle.rs`). The whole payload must be used: bytes
//! left over after the value are an error, so a message can never be read as
//! a shorter type by accident.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::guard::{Budget, GuardSeed};
use crate::error::CodecError;

/// How a connection encodes typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// bincode 2, standard configuration: compact and fast, Rust to Rust.
    #[default]
    Bincode,
    /// Python's pickle, for `send`/`recv` with a Python peer's
    /// `Connection.send`/`recv`. Pickles that name any global are refused.
    #[cfg(feature = "pickle")]
    Pickle,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Appends the encoding of `value` in `codec` to `out`.
pub fn encode_with<T: Serialize + ?Sized>(
    codec: Codec,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    match codec {
        Codec::Bincode => encode(value, out),
        #[cfg(feature = "pickle")]
        Codec::Pickle => super::pickle::encode(value, out),
    }
}

/// Decodes one value in `codec` that spans all of `bytes`.
pub fn decode_with<T: DeserializeOwned>(codec: Codec, bytes: &[u8]) -> Result<T, CodecError> {
    match codec {
        Codec::Bincode => decode(bytes),
        #[cfg(feature = "pickle")]
        Codec::Pickle => super::pickle::decode(bytes),
    }
}

/// Appends the bincode encoding of `value` to `out`.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(drop)
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes one value that spans all of `bytes`, through the [`guard`]
/// (bounded allocation, nesting and element count on hostile input).
///
/// [`guard`]: super::guard
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let budget = Budget::for_message(bytes.len());
    let seed = GuardSeed::new(PhantomData::<T>, &budget);
    let (value, used) = bincode::serde::seed_decode_from_slice(seed, bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            used,
            len: bytes.len(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::guard::limits::MIN_ELEMENT_BUDGET;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let mut out = Vec::new();
        encode(&value, &mut out).unwrap();
        assert_eq!(decode::<T>(&out).unwrap(), value);
    }

    #[test]
    fn values_round_trip() {
        round_trip((1i32, "hello".to_string(), None::<i32>));
        round_trip(vec![1u64, u64::MAX]);
        round_trip(String::new());
        round_trip(std::collections::BTreeMap::from([(1u8, vec![0.5f64])]));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut out = Vec::new();
        encode(&7u32, &mut out).unwrap();
        out.push(0);
        assert_eq!(
            decode::<u32>(&out),
            Err(CodecError::TrailingBytes { used: 1, len: 2 })
        );
    }

    #[test]
    fn invalid_values_are_errors() {
        assert!(matches!(decode::<bool>(&[2]), Err(CodecError::Decode(_))));
        assert!(matches!(
            decode::<String>(&[2, 0xff, 0xfe]),
            Err(CodecError::Decode(_))
        ));
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Decode(_))));
    }

    #[test]
    fn length_bombs_do_not_allocate_their_claim() {
        // A Vec<u8> claiming u64::MAX / 2 elements with 3 bytes behind it.
        let mut bomb = vec![0xfd];
        bomb.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        bomb.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode::<Vec<u8>>(&bomb),
            Err(CodecError::Decode(_))
        ));
        assert!(matches!(
            decode::<Vec<String>>(&bomb),
            Err(CodecError::Decode(_))
        ));
        assert!(matches!(
            decode::<String>(&bomb),
            Err(CodecError::Decode(_))
        ));
        assert!(matches!(
            decode::<serde_bytes_like::Buf>(&bomb),
            Err(CodecError::Decode(_))
        ));
    }

    /// A type that asks for `deserialize_byte_buf`, like `serde_bytes::ByteBuf`.
    mod serde_bytes_like {
        use serde::de::{Deserialize, Deserializer, Error, Visitor};

        #[derive(Debug)]
        pub struct Buf(#[allow(dead_code)] pub Vec<u8>);

        impl<'de> Deserialize<'de> for Buf {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Buf, E> {
                        Ok(Buf(v.to_vec()))
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }

    /// Types that take no bytes on the wire.
    #[derive(Debug, serde::Deserialize)]
    struct Unit;

    #[derive(Debug, serde::Deserialize)]
    struct Skipped {
        #[serde(skip)]
        _cache: [u64; 4],
    }

    #[test]
    fn elements_that_take_no_bytes_cannot_outnumber_the_budget() {
        // Five bytes that claim a million elements.
        let mut bomb = vec![0xfc];
        bomb.extend_from_slice(&1_000_000u32.to_le_bytes());
        let errors = [
            decode::<Vec<()>>(&bomb).map(drop),
            decode::<Vec<Unit>>(&bomb).map(drop),
            decode::<Vec<Skipped>>(&bomb).map(drop),
            decode::<Vec<[u8; 0]>>(&bomb).map(drop),
            decode::<std::collections::BTreeMap<(), ()>>(&bomb).map(drop),
            decode::<std::collections::HashSet<()>>(&bomb).map(drop),
        ];
        for err in errors {
            let err = err.unwrap_err().to_string();
            assert!(err.contains("sequence elements and map entries"), "{err}");
        }
        // Nested sequences draw on the same budget: a thousand inner vectors
        // of a thousand units each, from 3 KB.
        let mut nested = vec![0xfb];
        nested.extend_from_slice(&1000u16.to_le_bytes());
        for _ in 0..1000 {
            nested.push(0xfb);
            nested.extend_from_slice(&1000u16.to_le_bytes());
        }
        assert!(decode::<Vec<Vec<()>>>(&nested).is_err());
        // The outer element counts before the inner ones are produced: one
        // vector of 4096 units is 4097 elements, one more than the budget
        // of a 4-byte message (found by the typed_recv fuzz target).
        let edge = [1, 0xfb, 0x00, 0x10];
        assert!(decode::<Vec<Vec<()>>>(&edge).is_err());
        let within = [1, 0xfb, 0xff, 0x0f];
        assert_eq!(decode::<Vec<Vec<()>>>(&within).unwrap()[0].len(), 4095);
    }

    #[test]
    fn the_element_budget_leaves_real_messages_alone() {
        let mut out = Vec::new();
        encode(&vec![(); MIN_ELEMENT_BUDGET as usize], &mut out).unwrap();
        assert_eq!(decode::<Vec<()>>(&out).unwrap().len(), 4096);
        round_trip(vec![7u8; 100_000]);
        round_trip(vec![vec![1u16; 3]; 10_000]);
        round_trip(
            (0..10_000u32)
                .map(|i| (i, ()))
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
        // Fields of structs and tuples come from the type, not the input.
        round_trip(vec![((), (), (), 1u8); 10_000]);
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // Node(Node(...(Leaf))) a million levels deep: one byte a level.
        let mut bomb = vec![1u8; 1_000_000];
        bomb.push(0);
        let err = decode::<Tree>(&bomb).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        // Shallow trees still decode.
        let mut ok = vec![1u8; 20];
        ok.push(0);
        assert!(decode::<Tree>(&ok).is_ok());
    }
}
