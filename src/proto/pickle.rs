//! The pickle codec, for typed messages with Python peers (feature `pickle`).
//!
//! Encoding uses serde-pickle (protocol 3, which every supported CPython
//! reads). Decoding runs in two steps: [`scan`] walks the opcodes first and
//! refuses, before anything is built,
//!
//! - every opcode that names a global or builds an object through one
//!   (`GLOBAL`, `STACK_GLOBAL`, `REDUCE`, `BUILD`, `INST`, `OBJ`, `NEWOBJ`,
//!   `NEWOBJ_EX`, the extension registry, persistent ids, out-of-band
//!   buffers): in Python, these run code, and mpconn refuses them always,
//!   even the harmless-looking `builtins.set`;
//! - pickles whose memo references would expand them past a bound tied to
//!   their length (a "billion laughs" of nested back-references);
//! - truncated or unknown opcodes;
//!
//! and only then hands the bytes to serde-pickle.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;

/// A value of any shape, for pickles whose type is not known in advance.
pub use serde_pickle::{HashableValue, Value};

pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    serde_pickle::to_writer(out, &value, serde_pickle::SerOptions::new())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Appends the pickle of a dynamic value (big integers included).
pub fn encode_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
    serde_pickle::value_to_writer(out, value, serde_pickle::SerOptions::new())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    scan(bytes)?;
    serde_pickle::from_slice(bytes, serde_pickle::DeOptions::new())
        .map_err(|e| CodecError::Decode(e.to_string()))
}

/// Decodes a pickle of any shape, including integers beyond 64 bits, which
/// serde's data model cannot carry.
pub fn decode_value(bytes: &[u8]) -> Result<Value, CodecError> {
    scan(bytes)?;
    serde_pickle::value_from_slice(bytes, serde_pickle::DeOptions::new())
        .map_err(|e| CodecError::Decode(e.to_string()))
}

/// Why [`scan`] refused a pickle.
fn refused(what: String) -> CodecError {
    CodecError::Decode(format!("pickle refused: {what}"))
}

/// What the opcode walk keeps on its stack: only sizes, never values.
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    /// A value and the number of nodes (and string bytes) it stands for.
    Value(u64),
}

/// Walks the opcodes of `bytes` without building anything; see the module
/// documentation for what it refuses.
pub fn scan(bytes: &[u8]) -> Result<(), CodecError> {
    // Decoding may copy memoised values; the copies together may not exceed
    // this many nodes.
    let budget = 16 * bytes.len() as u64 + 4096;
    let mut copied = 0u64;
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut r = Reader { bytes, pos: 0 };
    loop {
        let op = r.u8()?;
        match op {
            b'.' => return Ok(()), // STOP
            b'(' => stack.push(Slot::Mark),
            // Scalars and strings: one node, plus their bytes.
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f => stack.push(Slot::Value(1)),
            b'K' => push(&mut stack, r.take(1)?.len()),
            b'M' => push(&mut stack, r.take(2)?.len()),
            b'J' => push(&mut stack, r.take(4)?.len()),
            b'G' => push(&mut stack, r.take(8)?.len()),
            b'I' | b'L' | b'F' | b'S' | b'V' => push(&mut stack, r.line()?.len()),
            b'U' | b'C' | 0x8a | 0x8c => {
                let n = r.u8()? as u64;
                push(&mut stack, r.take(n)?.len());
            }
            b'T' | b'X' | b'B' | 0x8b => {
                let n = r.u32()? as u64;
                push(&mut stack, r.take(n)?.len());
            }
            0x8d | 0x8e | 0x96 => {
                let n = r.u64()?;
                push(&mut stack, r.take(n)?.len());
            }
            // Protocol and framing: no stack effect.
            0x80 => {
                r.u8()?;
            }
            0x95 => {
                r.u64()?;
            }
            // Containers.
            b'a' => {
                let v = pop(&mut stack)?;
                grow_top(&mut stack, v)?;
            }
            b's' => {
                let v = pop(&mut stack)? + pop(&mut stack)?;
                grow_top(&mut stack, v)?;
            }
            b'e' | b'u' | 0x90 => {
                let v = pop_to_mark(&mut stack)?;
                grow_top(&mut stack, v)?;
            }
            b'l' | b't' | b'd' | 0x91 => {
                let v = pop_to_mark(&mut stack)?;
                stack.push(Slot::Value(v + 1));
            }
            0x85..=0x87 => {
                let mut v = 1;
                for _ in 0..(op - 0x84) {
                    v += pop(&mut stack)?;
                }
                stack.push(Slot::Value(v));
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_to_mark(&mut stack)?;
            }
            b'2' => {
                let top = *stack
                    .last()
                    .ok_or_else(|| refused("stack underflow".into()))?;
                stack.push(top);
            }
            // The memo.
            b'p' | b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'p' => parse_line_index(r.line()?)?,
                    b'q' => r.u8()? as u64,
                    b'r' => r.u32()? as u64,
                    _ => memo.len() as u64,
                };
                let top = match stack.last() {
                    Some(Slot::Value(v)) => *v,
                    _ => return Err(refused("memo of a mark".into())),
                };
                memo.insert(index, top);
            }
            b'g' | b'h' | b'j' => {
                let index = match op {
                    b'g' => parse_line_index(r.line()?)?,
                    b'h' => r.u8()? as u64,
                    _ => r.u32()? as u64,
                };
                let v = *memo
                    .get(&index)
                    .ok_or_else(|| refused(format!("memo entry {index} does not exist")))?;
                copied = copied.saturating_add(v);
                if copied > budget {
                    return Err(refused(format!(
                        "memo references expand a {}-byte pickle past {budget} nodes",
                        bytes.len()
                    )));
                }
                stack.push(Slot::Value(v));
            }
            b'c' | 0x93 => return Err(refused(global_name(op, &mut r))),
            b'R' => return Err(refused("REDUCE calls a function".into())),
            b'b' => return Err(refused("BUILD sets an object's state".into())),
            b'i' | b'o' | 0x81 | 0x92 => {
                return Err(refused("the pickle builds a class instance".into()));
            }
            0x82..=0x84 => return Err(refused("extension registry reference".into())),
            b'P' | b'Q' => return Err(refused("persistent id".into())),
            0x97 | 0x98 => return Err(refused("out-of-band buffer".into())),
            other => return Err(refused(format!("unknown opcode 0x{other:02x}"))),
        }
    }
}

/// "global os.system" for a GLOBAL opcode, as far as it can be read.
fn global_name(op: u8, r: &mut Reader<'_>) -> String {
    if op == 0x93 {
        return "STACK_GLOBAL names a global".into();
    }
    let module = r
        .line()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned();
    let name = r
        .line()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned();
    format!("it names the global {module}.{name}")
}

fn push(stack: &mut Vec<Slot>, len: usize) {
    stack.push(Slot::Value(1 + len as u64));
}

fn pop(stack: &mut Vec<Slot>) -> Result<u64, CodecError> {
    match stack.pop() {
        Some(Slot::Value(v)) => Ok(v),
        _ => Err(refused("stack underflow".into())),
    }
}

fn pop_to_mark(stack: &mut Vec<Slot>) -> Result<u64, CodecError> {
    let mut sum = 0u64;
    loop {
        match stack.pop() {
            Some(Slot::Value(v)) => sum = sum.saturating_add(v),
            Some(Slot::Mark) => return Ok(sum),
            None => return Err(refused("missing mark".into())),
        }
    }
}

fn grow_top(stack: &mut [Slot], by: u64) -> Result<(), CodecError> {
    match stack.last_mut() {
        Some(Slot::Value(v)) => {
            *v = v.saturating_add(by);
            Ok(())
        }
        _ => Err(refused("stack underflow".into())),
    }
}

fn parse_line_index(line: &[u8]) -> Result<u64, CodecError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| refused("bad memo index".into()))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], CodecError> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(refused("truncated pickle".into()));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn line(&mut self) -> Result<&'a [u8], CodecError> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| refused("truncated pickle".into()))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let mut out = Vec::new();
        encode(&value, &mut out).unwrap();
        scan(&out).unwrap();
        assert_eq!(decode::<T>(&out).unwrap(), value);
    }

    #[test]
    fn values_round_trip() {
        round_trip((1i64, "hello".to_string(), None::<i32>, vec![1.5f64]));
        round_trip(std::collections::BTreeMap::from([(
            "a".to_string(),
            vec![Some(1u8), None],
        )]));
    }

    #[test]
    fn globals_are_refused() {
        // What pickle.dumps(os.system, 0) looks like, and a REDUCE of it.
        let global = b"cposix\nsystem\np0\n.";
        let err = decode::<Value>(global).unwrap_err();
        assert!(err.to_string().contains("posix.system"), "{err}");
        let reduce = b"cposix\nsystem\n(S'echo pwned'\ntR.";
        assert!(decode::<Value>(reduce).is_err());
        // Even builtins.set, which serde-pickle alone would accept.
        let set = b"\x80\x02c__builtin__\nset\n]\x85R.";
        assert!(
            decode::<Value>(set)
                .unwrap_err()
                .to_string()
                .contains("__builtin__.set")
        );
    }

    #[test]
    fn memo_bombs_are_refused() {
        // [x, x] nested 40 times through the memo: 2^40 nodes from ~200 bytes.
        let mut bomb = vec![0x80, 4, b']', 0x94];
        for i in 0..40u8 {
            bomb.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l', 0x94]);
        }
        bomb.push(b'.');
        let err = decode::<Value>(&bomb).unwrap_err();
        assert!(err.to_string().contains("memo references"), "{err}");
    }

    #[test]
    fn truncated_and_unknown_opcodes_are_errors() {
        assert!(scan(b"X\xff\xff\x00\x00ab").is_err());
        assert!(scan(b"\xff").is_err());
        assert!(scan(b"").is_err());
        assert!(scan(b"e.").is_err(), "stack underflow");
    }
}
