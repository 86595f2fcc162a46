//! The opcode walk that runs before serde-pickle sees a pickle.
//!
//! [`scan`] refuses, before anything is built,
//!
//! - every opcode that names a global or builds an object through one
//!   (`GLOBAL`, `STACK_GLOBAL`, `REDUCE`, `BUILD`, `INST`, `OBJ`, `NEWOBJ`,
//!   `NEWOBJ_EX`, the extension registry, persistent ids, out-of-band
//!   buffers): in Python, these run code, and mpconn refuses them always,
//!   even the harmless-looking `builtins.set`;
//! - pickles whose memo references and `DUP`s would expand them past a
//!   bound tied to their length (a "billion laughs" of nested copies);
//! - NaN floats as set items or dict keys, which serde-pickle cannot order
//!   (its sort would panic);
//! - truncated or unknown opcodes.

use crate::error::CodecError;

/// Why [`scan`] refused a pickle.
fn refused(what: String) -> CodecError {
    CodecError::Decode(format!("pickle refused: {what}"))
}

/// What the opcode walk knows of a value: never the value itself.
#[derive(Clone, Copy, Default)]
struct Shape {
    /// Nodes (and string bytes) the value stands for once built.
    size: u64,
    /// It is or holds a NaN float, which has no order: serde-pickle keeps set
    /// items and dict keys in ordered collections, and a NaN among them
    /// breaks the sort (a panic in the standard library).
    nan: bool,
}

impl Shape {
    fn leaf(len: usize) -> Shape {
        Shape {
            size: 1 + len as u64,
            nan: false,
        }
    }

    fn absorb(&mut self, other: Shape) {
        self.size = self.size.saturating_add(other.size);
        self.nan |= other.nan;
    }
}

/// What the opcode walk keeps on its stack.
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Value(Shape),
}

/// Walks the opcodes of `bytes` without building anything; see the module
/// documentation for what it refuses.
pub fn scan(bytes: &[u8]) -> Result<(), CodecError> {
    // Decoding may copy memoised values; the copies together may not exceed
    // this many nodes.
    let budget = 16 * bytes.len() as u64 + 4096;
    let mut copied = 0u64;
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Shape> = std::collections::HashMap::new();
    let mut r = Reader { bytes, pos: 0 };
    loop {
        let op = r.u8()?;
        match op {
            b'.' => return Ok(()), // STOP
            b'(' => stack.push(Slot::Mark),
            // Scalars and strings: one node, plus their bytes.
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f => push(&mut stack, 0),
            b'K' => push(&mut stack, r.take(1)?.len()),
            b'M' => push(&mut stack, r.take(2)?.len()),
            b'J' => push(&mut stack, r.take(4)?.len()),
            b'G' => {
                let raw = r.take(8)?;
                let value = f64::from_be_bytes(raw.try_into().unwrap_or([0; 8]));
                push_float(&mut stack, value.is_nan());
            }
            b'F' => {
                let line = r.line()?;
                let text = String::from_utf8_lossy(line);
                let nan = text.trim().parse::<f64>().map_or(true, f64::is_nan);
                push_float(&mut stack, nan);
            }
            b'I' | b'L' | b'S' | b'V' => push(&mut stack, r.line()?.len()),
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
            // Lists: APPEND, APPENDS.
            b'a' => {
                let v = pop(&mut stack)?;
                top(&mut stack)?.absorb(v);
            }
            b'e' => {
                let items = pop_to_mark(&mut stack)?;
                let list = top(&mut stack)?;
                items.into_iter().for_each(|v| list.absorb(v));
            }
            // Dicts: SETITEM, SETITEMS, DICT. Keys must be orderable.
            b's' => {
                let value = pop(&mut stack)?;
                let key = pop(&mut stack)?;
                unordered_keys([key].iter())?;
                let dict = top(&mut stack)?;
                dict.absorb(key);
                dict.absorb(value);
            }
            b'u' => {
                let items = pop_to_mark(&mut stack)?;
                unordered_keys(items.iter().step_by(2))?;
                let dict = top(&mut stack)?;
                items.into_iter().for_each(|v| dict.absorb(v));
            }
            b'd' => {
                let items = pop_to_mark(&mut stack)?;
                unordered_keys(items.iter().step_by(2))?;
                stack.push(Slot::Value(built(items)));
            }
            // Sets: ADDITEMS, FROZENSET. Items must be orderable.
            0x90 => {
                let items = pop_to_mark(&mut stack)?;
                unordered_keys(items.iter())?;
                let set = top(&mut stack)?;
                items.into_iter().for_each(|v| set.absorb(v));
            }
            0x91 => {
                let items = pop_to_mark(&mut stack)?;
                unordered_keys(items.iter())?;
                stack.push(Slot::Value(built(items)));
            }
            // LIST, TUPLE from a mark; TUPLE1..3.
            b'l' | b't' => {
                let items = pop_to_mark(&mut stack)?;
                stack.push(Slot::Value(built(items)));
            }
            0x85..=0x87 => {
                let mut items = Vec::new();
                for _ in 0..(op - 0x84) {
                    items.push(pop(&mut stack)?);
                }
                stack.push(Slot::Value(built(items)));
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_to_mark(&mut stack)?;
            }
            // DUP copies the value on top, like a memo reference.
            b'2' => {
                let last = *top(&mut stack)?;
                charge(&mut copied, last.size, budget, bytes.len())?;
                stack.push(Slot::Value(last));
            }
            // The memo.
            b'p' | b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'p' => parse_line_index(r.line()?)?,
                    b'q' => r.u8()? as u64,
                    b'r' => r.u32()? as u64,
                    _ => memo.len() as u64,
                };
                let shape = *top(&mut stack)?;
                memo.insert(index, shape);
            }
            b'g' | b'h' | b'j' => {
                let index = match op {
                    b'g' => parse_line_index(r.line()?)?,
                    b'h' => r.u8()? as u64,
                    _ => r.u32()? as u64,
                };
                let shape = *memo
                    .get(&index)
                    .ok_or_else(|| refused(format!("memo entry {index} does not exist")))?;
                charge(&mut copied, shape.size, budget, bytes.len())?;
                stack.push(Slot::Value(shape));
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

fn push(stack: &mut Vec<Slot>, len: usize) {
    stack.push(Slot::Value(Shape::leaf(len)));
}

/// Counts a copy of `size` nodes against the pickle's budget.
fn charge(copied: &mut u64, size: u64, budget: u64, len: usize) -> Result<(), CodecError> {
    *copied = copied.saturating_add(size);
    match *copied > budget {
        true => Err(refused(format!(
            "memo references and DUP expand a {len}-byte pickle past {budget} nodes"
        ))),
        false => Ok(()),
    }
}

fn push_float(stack: &mut Vec<Slot>, nan: bool) {
    stack.push(Slot::Value(Shape { size: 9, nan }));
}

/// A container built from `items`.
fn built(items: Vec<Shape>) -> Shape {
    let mut shape = Shape::leaf(0);
    items.into_iter().for_each(|v| shape.absorb(v));
    shape
}

fn unordered_keys<'a>(mut keys: impl Iterator<Item = &'a Shape>) -> Result<(), CodecError> {
    match keys.any(|k| k.nan) {
        true => Err(refused(
            "a NaN float as a set item or dict key (it has no order)".into(),
        )),
        false => Ok(()),
    }
}

fn top(stack: &mut [Slot]) -> Result<&mut Shape, CodecError> {
    match stack.last_mut() {
        Some(Slot::Value(shape)) => Ok(shape),
        _ => Err(refused("stack underflow".into())),
    }
}

fn pop(stack: &mut Vec<Slot>) -> Result<Shape, CodecError> {
    match stack.pop() {
        Some(Slot::Value(v)) => Ok(v),
        _ => Err(refused("stack underflow".into())),
    }
}

/// The values above the topmost mark, oldest first; the mark is removed.
fn pop_to_mark(stack: &mut Vec<Slot>) -> Result<Vec<Shape>, CodecError> {
    let mark = stack
        .iter()
        .rposition(|s| matches!(s, Slot::Mark))
        .ok_or_else(|| refused("missing mark".into()))?;
    let items = stack
        .drain(mark + 1..)
        .map(|s| match s {
            Slot::Value(v) => v,
            Slot::Mark => Shape::default(),
        })
        .collect();
    stack.pop();
    Ok(items)
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
