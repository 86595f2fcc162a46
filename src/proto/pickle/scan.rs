//! The opcode walk that runs before serde-pickle sees a pickle.
//!
//! [`scan`] follows what serde-pickle will build (its stack, its marks, its
//! memo of references) without building it, and refuses, before anything is
//! allocated for the values,
//!
//! - every opcode that names a global or builds an object through one
//!   (`GLOBAL`, `STACK_GLOBAL`, `REDUCE`, `BUILD`, `INST`, `OBJ`, `NEWOBJ`,
//!   `NEWOBJ_EX`, the extension registry, persistent ids, out-of-band
//!   buffers): in Python, these run code, and mpconn refuses them always,
//!   even the harmless-looking `builtins.set`;
//! - values nested deeper than [`MAX_DEPTH`] levels, counted through memo
//!   references too, and MARKs open more than [`MAX_DEPTH`] deep:
//!   serde-pickle builds iteratively but converts, visits and drops values
//!   recursively, and a stack overflow aborts the process (no
//!   `catch_unwind` stops it);
//! - more than [`MAX_MARK_CONTAINERS`] tuples, lists and frozensets built
//!   from a MARK: serde-pickle reserves 128 value slots (4 KiB) at every
//!   MARK, and such a container keeps them;
//! - pickles whose memo references and `DUP`s would expand them past
//!   [`COPIES_PER_BYTE`] nodes per byte (a "billion laughs" of copies);
//! - a memoised value changed after a reference to it was taken, and a memo
//!   index written twice: Python's pickler does neither, and either would
//!   let serde-pickle build something other than what the walk measured;
//! - NaN floats as set items or dict keys, which serde-pickle cannot order
//!   (its sort would panic);
//! - truncated or unknown opcodes.
//!
//! The walk's own memory is proportional to the input: one stack slot per
//! value opcode and one memo entry per memo opcode.

use std::collections::HashMap;

use crate::error::CodecError;
/// How deep values and MARKs may nest: the bincode guard's limit too.
pub use crate::proto::guard::limits::MAX_DEPTH;

/// How many tuples, lists and frozensets one pickle may build from a MARK
/// (`TUPLE`, `LIST`, `FROZENSET`): each keeps the 4 KiB buffer serde-pickle
/// reserved at its MARK, so these cost at most 64 MiB together. Python
/// writes one for every tuple of more than three items and every frozenset
/// (and in protocols 0 and 1 for every tuple, in protocol 0 for every list).
pub const MAX_MARK_CONTAINERS: usize = 16_384;

/// Copies (memo references and `DUP`s) may add this many nodes per byte of
/// pickle, plus [`COPIES_FLOOR`].
pub const COPIES_PER_BYTE: u64 = 16;

/// The copies any pickle may make, however short.
pub const COPIES_FLOOR: u64 = 4096;

/// Why [`scan`] refused a pickle.
pub(super) fn refused(what: String) -> CodecError {
    CodecError::Decode(format!("pickle refused: {what}"))
}

/// What the opcode walk knows of a value: never the value itself.
#[derive(Clone, Copy, Default)]
struct Shape {
    /// Nodes (and string bytes) the value stands for once built.
    size: u64,
    /// Containers nested in it, itself included: 0 for a scalar.
    depth: u32,
    /// It is or holds a NaN float, which has no order: serde-pickle keeps set
    /// items and dict keys in ordered collections, and a NaN among them
    /// breaks the sort (a panic in the standard library).
    nan: bool,
}

impl Shape {
    fn leaf(len: usize) -> Shape {
        Shape {
            size: 1 + len as u64,
            depth: 0,
            nan: false,
        }
    }

    fn float(nan: bool) -> Shape {
        Shape {
            size: 9,
            depth: 0,
            nan,
        }
    }

    fn empty_container() -> Shape {
        Shape {
            size: 1,
            depth: 1,
            nan: false,
        }
    }

    /// A container built from `items`.
    fn built(items: Vec<Shape>) -> Result<Shape, CodecError> {
        let mut shape = Shape::empty_container();
        items.into_iter().try_for_each(|v| shape.absorb(v))?;
        Ok(shape)
    }

    /// Puts `item` into this container: the one place a level is added, so
    /// the one place nesting is checked.
    fn absorb(&mut self, item: Shape) -> Result<(), CodecError> {
        let depth = item.depth + 1;
        if depth as usize > MAX_DEPTH {
            return Err(refused(format!(
                "values nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.depth = self.depth.max(depth);
        self.size = self.size.saturating_add(item.size);
        self.nan |= item.nan;
        Ok(())
    }
}

/// What the opcode walk keeps on its stack, as serde-pickle does.
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Value(Shape),
    /// A reference to a memo entry (serde-pickle's `MemoRef`): what it
    /// stands for is whatever the entry holds when the value is used.
    Ref(u64),
}

/// A memo entry.
struct Entry {
    shape: Shape,
    /// A reference to the entry was taken (`GET`, or the memoised value
    /// was put into a container): from then on the entry must not change,
    /// so that every reference stands for the shape the walk counted.
    referenced: bool,
}

/// The state of the walk over one pickle.
struct Walk {
    stack: Vec<Slot>,
    memo: HashMap<u64, Entry>,
    /// MARKs not yet closed.
    open_marks: usize,
    /// Tuples, lists and frozensets built from a MARK so far.
    mark_containers: usize,
    /// Nodes copied so far, and the most allowed.
    copied: u64,
    copy_budget: u64,
    len: usize,
}

/// Walks the opcodes of `bytes` without building anything; see the module
/// documentation for what it refuses.
pub fn scan(bytes: &[u8]) -> Result<(), CodecError> {
    let mut w = Walk {
        stack: Vec::new(),
        memo: HashMap::new(),
        open_marks: 0,
        mark_containers: 0,
        copied: 0,
        copy_budget: COPIES_PER_BYTE
            .saturating_mul(bytes.len() as u64)
            .saturating_add(COPIES_FLOOR),
        len: bytes.len(),
    };
    let mut r = Reader { bytes, pos: 0 };
    loop {
        let op = r.u8()?;
        match op {
            b'.' => return Ok(()), // STOP
            b'(' => w.mark()?,
            // Scalars and strings: one node, plus their bytes.
            b'N' | 0x88 | 0x89 => w.push(Shape::leaf(0)),
            b'K' => w.push(Shape::leaf(r.take(1)?.len())),
            b'M' => w.push(Shape::leaf(r.take(2)?.len())),
            b'J' => w.push(Shape::leaf(r.take(4)?.len())),
            b'G' => {
                let raw = r.take(8)?;
                let value = f64::from_be_bytes(raw.try_into().unwrap_or([0; 8]));
                w.push(Shape::float(value.is_nan()));
            }
            b'F' => {
                let line = r.line()?;
                let text = String::from_utf8_lossy(line);
                let nan = text.trim().parse::<f64>().map_or(true, f64::is_nan);
                w.push(Shape::float(nan));
            }
            b'I' | b'L' | b'S' | b'V' => w.push(Shape::leaf(r.line()?.len())),
            b'U' | b'C' | 0x8a | 0x8c => {
                let n = r.u8()? as u64;
                w.push(Shape::leaf(r.take(n)?.len()));
            }
            b'T' | b'X' | b'B' | 0x8b => {
                let n = r.u32()? as u64;
                w.push(Shape::leaf(r.take(n)?.len()));
            }
            0x8d | 0x8e | 0x96 => {
                let n = r.u64()?;
                w.push(Shape::leaf(r.take(n)?.len()));
            }
            // Empty containers: EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT, EMPTY_SET.
            b')' | b']' | b'}' | 0x8f => w.push(Shape::empty_container()),
            // Protocol and framing: no stack effect.
            0x80 => {
                r.u8()?;
            }
            0x95 => {
                r.u64()?;
            }
            // Lists: APPEND, APPENDS.
            b'a' => {
                let v = w.take()?;
                w.top()?.absorb(v)?;
            }
            b'e' => {
                let items = w.take_marked(false)?;
                let list = w.top()?;
                items.into_iter().try_for_each(|v| list.absorb(v))?;
            }
            // Dicts: SETITEM, SETITEMS, DICT. Keys must be orderable.
            b's' => {
                let value = w.take()?;
                let key = w.take()?;
                unordered_keys([key].iter())?;
                let dict = w.top()?;
                dict.absorb(key)?;
                dict.absorb(value)?;
            }
            b'u' => {
                let items = w.take_marked(false)?;
                unordered_keys(items.iter().step_by(2))?;
                let dict = w.top()?;
                items.into_iter().try_for_each(|v| dict.absorb(v))?;
            }
            b'd' => {
                let items = w.take_marked(false)?;
                unordered_keys(items.iter().step_by(2))?;
                w.push(Shape::built(items)?);
            }
            // Sets: ADDITEMS, FROZENSET. Items must be orderable.
            0x90 => {
                let items = w.take_marked(false)?;
                unordered_keys(items.iter())?;
                let set = w.top()?;
                items.into_iter().try_for_each(|v| set.absorb(v))?;
            }
            0x91 => {
                let items = w.take_marked(true)?;
                unordered_keys(items.iter())?;
                w.push(Shape::built(items)?);
            }
            // LIST, TUPLE from a mark; TUPLE1..3.
            b'l' | b't' => {
                let items = w.take_marked(true)?;
                w.push(Shape::built(items)?);
            }
            0x85..=0x87 => {
                let mut items = Vec::new();
                for _ in 0..(op - 0x84) {
                    items.push(w.take()?);
                }
                w.push(Shape::built(items)?);
            }
            b'0' => w.discard()?,
            b'1' => {
                w.take_marked(false)?;
            }
            // DUP copies the value on top, as it is now.
            b'2' => {
                let last = w.peek()?;
                w.charge(last.size)?;
                w.push(last);
            }
            // The memo.
            b'p' | b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'p' => parse_line_index(r.line()?)?,
                    b'q' => r.u8()? as u64,
                    b'r' => r.u32()? as u64,
                    _ => w.memo.len() as u64,
                };
                w.memoize(index)?;
            }
            b'g' | b'h' | b'j' => {
                let index = match op {
                    b'g' => parse_line_index(r.line()?)?,
                    b'h' => r.u8()? as u64,
                    _ => r.u32()? as u64,
                };
                w.get(index)?;
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

impl Walk {
    fn push(&mut self, shape: Shape) {
        self.stack.push(Slot::Value(shape));
    }

    /// MARK: the one place marks are opened.
    fn mark(&mut self) -> Result<(), CodecError> {
        if self.open_marks >= MAX_DEPTH {
            return Err(refused(format!(
                "MARKs nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.open_marks += 1;
        self.stack.push(Slot::Mark);
        Ok(())
    }

    /// The values above the topmost mark, oldest first, taken as items of
    /// something; the mark is removed. `kept` says the container built from
    /// them keeps serde-pickle's mark buffer.
    fn take_marked(&mut self, kept: bool) -> Result<Vec<Shape>, CodecError> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| refused("missing mark".into()))?;
        if kept {
            if self.mark_containers >= MAX_MARK_CONTAINERS {
                return Err(refused(format!(
                    "more than {MAX_MARK_CONTAINERS} tuples, lists and frozensets built from a MARK"
                )));
            }
            self.mark_containers += 1;
        }
        let slots: Vec<Slot> = self.stack.drain(mark + 1..).collect();
        self.stack.pop();
        self.open_marks -= 1;
        slots.into_iter().map(|s| self.used(s)).collect()
    }

    /// Pops the value on top to put it into something.
    fn take(&mut self) -> Result<Shape, CodecError> {
        match self.stack.pop() {
            Some(slot @ (Slot::Value(_) | Slot::Ref(_))) => self.used(slot),
            _ => Err(refused("stack underflow".into())),
        }
    }

    /// The shape of a value put into something: a memo reference stands for
    /// the entry, which may not change from now on.
    fn used(&mut self, slot: Slot) -> Result<Shape, CodecError> {
        match slot {
            Slot::Value(shape) => Ok(shape),
            Slot::Ref(index) => {
                let entry = self.entry(index)?;
                entry.referenced = true;
                Ok(entry.shape)
            }
            Slot::Mark => Err(refused("stack underflow".into())),
        }
    }

    /// POP: drops the value on top.
    fn discard(&mut self) -> Result<(), CodecError> {
        match self.stack.pop() {
            Some(Slot::Value(_) | Slot::Ref(_)) => Ok(()),
            _ => Err(refused("stack underflow".into())),
        }
    }

    /// The container on top, to add to it; through a memo reference, the
    /// memo entry, which must not have been referenced yet.
    fn top(&mut self) -> Result<&mut Shape, CodecError> {
        let index = match self.stack.last_mut() {
            Some(Slot::Value(shape)) => return Ok(shape),
            Some(Slot::Ref(index)) => *index,
            _ => return Err(refused("stack underflow".into())),
        };
        match self.memo.get_mut(&index) {
            Some(entry) if entry.referenced => Err(refused(format!(
                "memo entry {index} changes after a reference to it"
            ))),
            Some(entry) => Ok(&mut entry.shape),
            None => Err(refused(format!("memo entry {index} does not exist"))),
        }
    }

    /// The value on top as it is now, for a copy of it.
    fn peek(&mut self) -> Result<Shape, CodecError> {
        match self.stack.last().copied() {
            Some(Slot::Value(shape)) => Ok(shape),
            Some(Slot::Ref(index)) => Ok(self.entry(index)?.shape),
            _ => Err(refused("stack underflow".into())),
        }
    }

    /// PUT: the value on top goes into the memo and a reference replaces it
    /// (a reference on top is copied into the new entry, as serde-pickle does).
    fn memoize(&mut self, index: u64) -> Result<(), CodecError> {
        let shape = match self.stack.pop() {
            Some(Slot::Value(shape)) => shape,
            Some(Slot::Ref(from)) => {
                let shape = self.entry(from)?.shape;
                self.charge(shape.size)?;
                shape
            }
            _ => return Err(refused("stack underflow".into())),
        };
        if self.memo.contains_key(&index) {
            return Err(refused(format!("memo entry {index} is written twice")));
        }
        let entry = Entry {
            shape,
            referenced: false,
        };
        self.memo.insert(index, entry);
        self.stack.push(Slot::Ref(index));
        Ok(())
    }

    /// GET: a reference to a memo entry, which becomes a copy of it when
    /// built.
    fn get(&mut self, index: u64) -> Result<(), CodecError> {
        let entry = self.entry(index)?;
        entry.referenced = true;
        let size = entry.shape.size;
        self.charge(size)?;
        self.stack.push(Slot::Ref(index));
        Ok(())
    }

    fn entry(&mut self, index: u64) -> Result<&mut Entry, CodecError> {
        self.memo
            .get_mut(&index)
            .ok_or_else(|| refused(format!("memo entry {index} does not exist")))
    }

    /// Counts a copy of `size` nodes against the pickle's budget.
    fn charge(&mut self, size: u64) -> Result<(), CodecError> {
        self.copied = self.copied.saturating_add(size);
        match self.copied > self.copy_budget {
            true => Err(refused(format!(
                "memo references and DUP expand a {}-byte pickle past {} nodes",
                self.len, self.copy_budget
            ))),
            false => Ok(()),
        }
    }
}

fn unordered_keys<'a>(mut keys: impl Iterator<Item = &'a Shape>) -> Result<(), CodecError> {
    match keys.any(|k| k.nan) {
        true => Err(refused(
            "a NaN float as a set item or dict key (it has no order)".into(),
        )),
        false => Ok(()),
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

pub(super) fn parse_line_index(line: &[u8]) -> Result<u64, CodecError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| refused("bad memo index".into()))
}

/// The opcode reader, shared with the builder.
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: u64) -> Result<&'a [u8], CodecError> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(refused("truncated pickle".into()));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    pub(super) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub(super) fn line(&mut self) -> Result<&'a [u8], CodecError> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| refused("truncated pickle".into()))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }
}
