//! Writes a [`Value`] as a pickle, every collection in its order.
//!
//! Protocol 4 (every supported CPython reads it): it has opcodes for sets and
//! frozensets, so nothing names a global and mpconn reads its own output.
//! No memo, no frames.

use num_bigint::BigInt;

use super::value::Value;
use crate::error::CodecError;

/// Items per APPENDS, SETITEMS or ADDITEMS, as Python's pickler batches them.
const BATCH: usize = 1000;

/// Appends the pickle of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.extend_from_slice(&[0x80, 4]);
    item(value, out)?;
    out.push(b'.');
    Ok(())
}

fn item(value: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
    match value {
        Value::None => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::I64(i) => small_int(*i, out),
        Value::Int(big) => long(big, out)?,
        Value::F64(f) => {
            out.push(b'G');
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(bytes) => sized(bytes, [b'C', b'B', 0x8e], out),
        Value::String(s) => sized(s.as_bytes(), [0x8c, b'X', 0x8d], out),
        Value::List(items) => {
            out.push(b']');
            batched(items, out, all, b'e')?;
        }
        Value::Tuple(items) if items.len() <= 3 => {
            all(items, out)?;
            out.push([b')', 0x85, 0x86, 0x87][items.len()]);
        }
        Value::Tuple(items) => {
            out.push(b'(');
            all(items, out)?;
            out.push(b't');
        }
        Value::Set(items) => {
            out.push(0x8f);
            batched(items, out, all, 0x90)?;
        }
        Value::FrozenSet(items) => {
            out.push(b'(');
            all(items, out)?;
            out.push(0x91);
        }
        Value::Dict(pairs) => {
            out.push(b'}');
            let write_pairs = |chunk: &[(Value, Value)], out: &mut Vec<u8>| {
                chunk.iter().try_for_each(|(k, v)| {
                    item(k, out)?;
                    item(v, out)
                })
            };
            batched(pairs, out, write_pairs, b'u')?;
        }
    }
    Ok(())
}

fn all(items: &[Value], out: &mut Vec<u8>) -> Result<(), CodecError> {
    items.iter().try_for_each(|v| item(v, out))
}

/// MARK, up to [`BATCH`] items, `op`; again until all are written.
fn batched<T>(
    items: &[T],
    out: &mut Vec<u8>,
    write: impl Fn(&[T], &mut Vec<u8>) -> Result<(), CodecError>,
    op: u8,
) -> Result<(), CodecError> {
    for chunk in items.chunks(BATCH) {
        out.push(b'(');
        write(chunk, out)?;
        out.push(op);
    }
    Ok(())
}

fn small_int(i: i64, out: &mut Vec<u8>) {
    match i {
        0..=0xff => out.extend_from_slice(&[b'K', i as u8]),
        0x100..=0xffff => {
            out.push(b'M');
            out.extend_from_slice(&(i as u16).to_le_bytes());
        }
        _ => match i32::try_from(i) {
            Ok(i) => {
                out.push(b'J');
                out.extend_from_slice(&i.to_le_bytes());
            }
            Err(_) => {
                let bytes = BigInt::from(i).to_signed_bytes_le();
                out.extend_from_slice(&[0x8a, bytes.len() as u8]);
                out.extend_from_slice(&bytes);
            }
        },
    }
}

fn long(big: &BigInt, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let bytes = big.to_signed_bytes_le();
    match u8::try_from(bytes.len()) {
        Ok(n) => out.extend_from_slice(&[0x8a, n]),
        Err(_) => {
            let n = u32::try_from(bytes.len())
                .map_err(|_| CodecError::Encode("an integer too large to pickle".into()))?;
            out.push(0x8b);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Bytes behind the opcode for a 1-, 4- or 8-byte length, the shortest that
/// holds it.
fn sized(bytes: &[u8], ops: [u8; 3], out: &mut Vec<u8>) {
    let n = bytes.len();
    if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[ops[0], n]);
    } else if let Ok(n) = u32::try_from(n) {
        out.push(ops[1]);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(ops[2]);
        out.extend_from_slice(&(n as u64).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}
