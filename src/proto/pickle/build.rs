//! Builds a [`Value`] from a pickle, keeping every collection in the order
//! the pickle lists its items.
//!
//! It runs only on pickles that [`scan`](super::scan) accepted, so the
//! limits (nesting, copies, memo discipline) are already checked; it still
//! returns an error, never panics, on anything it does not expect. Copies
//! through the memo are made where a reference is used, as the scan counted
//! them.

use std::collections::HashMap;

use num_bigint::BigInt;

use super::scan::{Reader, parse_line_index, refused};
use super::value::Value;
use crate::error::CodecError;

/// What the builder's stack holds: the same slots as the scan's, with values.
enum Slot {
    Mark,
    Value(Value),
    /// A memo entry, which may still grow until a reference is used.
    Ref(u64),
}

struct Builder {
    stack: Vec<Slot>,
    memo: HashMap<u64, Value>,
}

/// Decodes a pickle the scan accepted into a [`Value`].
pub fn build(bytes: &[u8]) -> Result<Value, CodecError> {
    let mut b = Builder {
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    let mut r = Reader { bytes, pos: 0 };
    loop {
        let op = r.u8()?;
        let value = match op {
            b'.' => {
                let value = b.take()?;
                return match r.pos == bytes.len() {
                    true => Ok(value),
                    false => Err(refused("bytes after the end of the pickle".into())),
                };
            }
            0x80 => {
                r.u8()?;
                continue;
            }
            0x95 => {
                r.u64()?;
                continue;
            }
            b'(' => {
                b.stack.push(Slot::Mark);
                continue;
            }
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'K' => Value::I64(r.u8()?.into()),
            b'M' => {
                let two = r.take(2)?;
                Value::I64(u16::from_le_bytes([two[0], two[1]]).into())
            }
            b'J' => Value::I64((r.u32()? as i32).into()),
            0x8a => {
                let n = r.u8()?;
                int(BigInt::from_signed_bytes_le(r.take(n.into())?))
            }
            0x8b => {
                let n = r.u32()?;
                int(BigInt::from_signed_bytes_le(r.take(n.into())?))
            }
            b'G' => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(r.take(8)?);
                Value::F64(f64::from_be_bytes(raw))
            }
            // Byte strings, and Python 2 strings (undecoded, as serde-pickle).
            b'C' | b'U' => {
                let n = r.u8()?;
                Value::Bytes(r.take(n.into())?.to_vec())
            }
            b'B' | b'T' => {
                let n = r.u32()?;
                Value::Bytes(r.take(n.into())?.to_vec())
            }
            0x8e | 0x96 => {
                let n = r.u64()?;
                Value::Bytes(r.take(n)?.to_vec())
            }
            0x8c => {
                let n = r.u8()?;
                utf8(r.take(n.into())?)?
            }
            b'X' => {
                let n = r.u32()?;
                utf8(r.take(n.into())?)?
            }
            0x8d => {
                let n = r.u64()?;
                utf8(r.take(n)?)?
            }
            // The text opcodes of protocols 0 and 1.
            b'I' | b'L' | b'F' | b'S' | b'V' => text(op, r.line()?)?,
            b')' => Value::Tuple(Vec::new()),
            b']' => Value::List(Vec::new()),
            b'}' => Value::Dict(Vec::new()),
            0x8f => Value::Set(Vec::new()),
            b'l' => Value::List(b.marked()?),
            b't' => Value::Tuple(b.marked()?),
            0x91 => Value::FrozenSet(b.marked()?),
            b'd' => Value::Dict(pairs(b.marked()?)?),
            0x85..=0x87 => {
                let mut items = Vec::new();
                for _ in 0..(op - 0x84) {
                    items.push(b.take()?);
                }
                items.reverse();
                Value::Tuple(items)
            }
            b'a' => {
                let item = b.take()?;
                b.list()?.push(item);
                continue;
            }
            b'e' => {
                let items = b.marked()?;
                b.list()?.extend(items);
                continue;
            }
            b's' => {
                let value = b.take()?;
                let key = b.take()?;
                b.dict()?.push((key, value));
                continue;
            }
            b'u' => {
                let items = pairs(b.marked()?)?;
                b.dict()?.extend(items);
                continue;
            }
            0x90 => {
                let items = b.marked()?;
                match b.top()? {
                    Value::Set(set) => set.extend(items),
                    _ => return Err(refused("ADDITEMS to something not a set".into())),
                }
                continue;
            }
            b'0' => {
                b.take()?;
                continue;
            }
            b'1' => {
                b.marked()?;
                continue;
            }
            b'2' => {
                let copy = match b.stack.last() {
                    Some(Slot::Value(v)) => Slot::Value(v.clone()),
                    Some(Slot::Ref(index)) => Slot::Ref(*index),
                    _ => return Err(refused("stack underflow".into())),
                };
                b.stack.push(copy);
                continue;
            }
            b'p' | b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'p' => parse_line_index(r.line()?)?,
                    b'q' => r.u8()?.into(),
                    b'r' => r.u32()?.into(),
                    _ => b.memo.len() as u64,
                };
                b.memoize(index)?;
                continue;
            }
            b'g' | b'h' | b'j' => {
                let index = match op {
                    b'g' => parse_line_index(r.line()?)?,
                    b'h' => r.u8()?.into(),
                    _ => r.u32()?.into(),
                };
                if !b.memo.contains_key(&index) {
                    return Err(refused(format!("memo entry {index} does not exist")));
                }
                b.stack.push(Slot::Ref(index));
                continue;
            }
            other => return Err(refused(format!("unexpected opcode 0x{other:02x}"))),
        };
        b.stack.push(Slot::Value(value));
    }
}

impl Builder {
    /// Pops the value on top to put it somewhere: a reference becomes a copy
    /// of its memo entry, which the scan guarantees no longer changes.
    fn take(&mut self) -> Result<Value, CodecError> {
        match self.stack.pop() {
            Some(slot) => self.resolve(slot),
            None => Err(refused("stack underflow".into())),
        }
    }

    fn resolve(&self, slot: Slot) -> Result<Value, CodecError> {
        match slot {
            Slot::Value(value) => Ok(value),
            Slot::Ref(index) => self
                .memo
                .get(&index)
                .cloned()
                .ok_or_else(|| refused(format!("memo entry {index} does not exist"))),
            Slot::Mark => Err(refused("stack underflow".into())),
        }
    }

    /// The values above the topmost mark, oldest first; the mark goes too.
    fn marked(&mut self) -> Result<Vec<Value>, CodecError> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| refused("missing mark".into()))?;
        let slots: Vec<Slot> = self.stack.drain(mark..).skip(1).collect();
        slots.into_iter().map(|s| self.resolve(s)).collect()
    }

    /// The container on top, to add to it (through a reference, the memo
    /// entry itself).
    fn top(&mut self) -> Result<&mut Value, CodecError> {
        match self.stack.last_mut() {
            Some(Slot::Value(value)) => Ok(value),
            Some(Slot::Ref(index)) => {
                let index = *index;
                self.memo
                    .get_mut(&index)
                    .ok_or_else(|| refused(format!("memo entry {index} does not exist")))
            }
            _ => Err(refused("stack underflow".into())),
        }
    }

    fn list(&mut self) -> Result<&mut Vec<Value>, CodecError> {
        match self.top()? {
            Value::List(items) => Ok(items),
            _ => Err(refused("APPEND to something not a list".into())),
        }
    }

    fn dict(&mut self) -> Result<&mut Vec<(Value, Value)>, CodecError> {
        match self.top()? {
            Value::Dict(pairs) => Ok(pairs),
            _ => Err(refused("SETITEM to something not a dict".into())),
        }
    }

    /// PUT: the value on top goes into the memo and a reference to the entry
    /// takes its place.
    fn memoize(&mut self, index: u64) -> Result<(), CodecError> {
        let value = match self.stack.pop() {
            Some(slot @ (Slot::Value(_) | Slot::Ref(_))) => self.resolve(slot)?,
            _ => return Err(refused("stack underflow".into())),
        };
        self.memo.insert(index, value);
        self.stack.push(Slot::Ref(index));
        Ok(())
    }
}

/// An integer, as `I64` when it fits.
fn int(big: BigInt) -> Value {
    i64::try_from(&big).map_or(Value::Int(big), Value::I64)
}

fn utf8(bytes: &[u8]) -> Result<Value, CodecError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Value::String(s.to_owned())),
        Err(_) => Err(CodecError::Decode("a pickled str is not UTF-8".into())),
    }
}

/// Keys and values alternating, as DICT and SETITEMS take them.
fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, CodecError> {
    if !items.len().is_multiple_of(2) {
        return Err(refused("a dict key without a value".into()));
    }
    let mut pairs = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// A text opcode of protocols 0 and 1 (`INT`, `LONG`, `FLOAT`, `STRING`,
/// `UNICODE`), which has Python's literal and escape rules: serde-pickle
/// decodes it alone, as the one-opcode pickle `op line STOP`.
fn text(op: u8, line: &[u8]) -> Result<Value, CodecError> {
    let mut one = Vec::with_capacity(line.len() + 3);
    one.push(op);
    one.extend_from_slice(line);
    one.extend_from_slice(b"\n.");
    let leaf = serde_pickle::value_from_slice(&one, serde_pickle::DeOptions::new())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    Ok(match leaf {
        serde_pickle::Value::None => Value::None,
        serde_pickle::Value::Bool(b) => Value::Bool(b),
        serde_pickle::Value::I64(i) => Value::I64(i),
        serde_pickle::Value::Int(big) => int(big),
        serde_pickle::Value::F64(f) => Value::F64(f),
        serde_pickle::Value::Bytes(b) => Value::Bytes(b),
        serde_pickle::Value::String(s) => Value::String(s),
        _ => return Err(refused(format!("opcode 0x{op:02x} built a container"))),
    })
}
