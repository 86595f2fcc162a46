#![cfg_attr(not(test), allow(dead_code))]

//! An in-memory [`ByteStream`] for unit tests of the reader and writer: it
//! hands out its input in chosen chunk sizes, injects EINTR and short writes,
//! and can report a timeout when its input runs dry.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::time::Instant;

use super::ByteStream;
use crate::sys::Interest;

pub(crate) struct FakeStream {
    input: RefCell<Vec<u8>>,
    read_pos: Cell<usize>,
    /// Input beyond this index is not there yet: reads wait (time out).
    available: Cell<usize>,
    chunks: Vec<usize>,
    chunk_index: Cell<usize>,
    max_write: usize,
    interrupt_every: usize,
    calls: Cell<usize>,
    writes: Cell<usize>,
    /// After this many writes the peer has said everything and hung up.
    hang_up_after: Option<usize>,
    output: RefCell<Vec<u8>>,
}

impl FakeStream {
    pub(crate) fn new(input: Vec<u8>) -> Self {
        let len = input.len();
        FakeStream {
            input: RefCell::new(input),
            read_pos: Cell::new(0),
            available: Cell::new(len),
            chunks: vec![usize::MAX],
            chunk_index: Cell::new(0),
            max_write: usize::MAX,
            interrupt_every: 0,
            calls: Cell::new(0),
            writes: Cell::new(0),
            hang_up_after: None,
            output: RefCell::new(Vec::new()),
        }
    }

    /// Reads return at most these sizes, cycling.
    pub(crate) fn chunks(mut self, chunks: &[usize]) -> Self {
        self.chunks = chunks.to_vec();
        self
    }

    pub(crate) fn max_write(mut self, n: usize) -> Self {
        self.max_write = n;
        self
    }

    /// Every n-th call fails with EINTR.
    pub(crate) fn interrupt_every(mut self, n: usize) -> Self {
        self.interrupt_every = n;
        self
    }

    /// Only the first `n` input bytes have arrived; waits beyond them time out.
    pub(crate) fn hold_back_after(self, n: usize) -> Self {
        self.available.set(n);
        self
    }

    /// After `n` writes, the rest of the input arrives and the peer hangs
    /// up: later writes fail with `BrokenPipe` (what a pipe whose server
    /// sent its verdict and closed does to a client's pipelined message).
    pub(crate) fn hang_up_after_writes(mut self, n: usize) -> Self {
        self.hang_up_after = Some(n);
        self
    }

    pub(crate) fn release_all(&self) {
        self.available.set(self.input.borrow().len());
    }

    pub(crate) fn written(&self) -> Vec<u8> {
        self.output.borrow().clone()
    }

    pub(crate) fn write_calls(&self) -> usize {
        self.writes.get()
    }

    fn interrupted(&self) -> bool {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        self.interrupt_every != 0 && n.is_multiple_of(self.interrupt_every)
    }

    fn next_len(&self, want: usize) -> io::Result<usize> {
        if self.interrupted() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let left = self.available.get() - self.read_pos.get();
        if left == 0 && self.available.get() < self.input.borrow().len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let i = self.chunk_index.get();
        self.chunk_index.set(i + 1);
        Ok(want.min(left).min(self.chunks[i % self.chunks.len()]))
    }
}

impl ByteStream for FakeStream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.next_len(buf.len())?;
        let pos = self.read_pos.get();
        buf[..n].copy_from_slice(&self.input.borrow()[pos..pos + n]);
        self.read_pos.set(pos + n);
        Ok(n)
    }

    fn read_spare(&self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let room = (v.capacity() - v.len()).min(max);
        let n = self.next_len(room)?;
        let pos = self.read_pos.get();
        v.extend_from_slice(&self.input.borrow()[pos..pos + n]);
        self.read_pos.set(pos + n);
        Ok(n)
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.interrupted() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.hang_up_after.is_some_and(|n| self.writes.get() >= n) {
            self.release_all();
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.writes.set(self.writes.get() + 1);
        let mut left = self.max_write;
        let mut out = self.output.borrow_mut();
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(left);
            out.extend_from_slice(&b[..take]);
            n += take;
            left -= take;
        }
        Ok(n)
    }

    fn wait(&self, interest: Interest, _deadline: Option<Instant>) -> io::Result<bool> {
        Ok(interest == Interest::Writable
            || self.read_pos.get() < self.available.get()
            || self.available.get() == self.input.borrow().len())
    }
}
