//! Messages over Windows named pipes, which delimit messages themselves:
//! no frame header travels, one pipe message is one message (CPython's
//! framing on pipes). [`PipeReader`] keeps the semantics of the
//! [`FrameReader`](super::FrameReader) on top of `sys::Pipe::recv_message`.

use std::io::IoSlice;
use std::time::Instant;

use super::ByteStream;
use crate::error::{Error, ProtocolError, Result};
use crate::sys::PipeRecv;

/// A read buffer above this capacity is not kept after its message: a large
/// message must not pin its memory on an idle connection.
const KEEP: usize = 256 * 1024;

/// Reads whole messages from a named pipe.
#[derive(Debug)]
pub(crate) struct PipeReader {
    /// The last message read, reused from read to read.
    buf: Vec<u8>,
    /// A message above the limit was refused unread: its bytes are still in
    /// the pipe, so no later message can be read.
    broken: bool,
    max_message: u64,
}

impl PipeReader {
    pub(crate) fn new(max_message: u64) -> Self {
        PipeReader {
            buf: Vec::new(),
            broken: false,
            max_message,
        }
    }

    pub(crate) fn set_max_message(&mut self, max: u64) {
        self.max_message = max;
    }

    pub(crate) fn max_message(&self) -> u64 {
        self.max_message
    }

    /// Reads the next whole message into `buf`. Nothing is read ahead: a
    /// read that times out has taken nothing, so the next one starts the
    /// same message.
    fn recv<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<()> {
        if self.broken {
            return Err(Error::Protocol(ProtocolError::Desynchronized));
        }
        if self.buf.capacity() > KEEP {
            self.buf = Vec::new();
        }
        let received = stream.recv_message(&mut self.buf, self.max_message, deadline);
        match received {
            Ok(PipeRecv::Message) => Ok(()),
            Ok(PipeRecv::TooLarge(len)) => {
                self.broken = true;
                Err(Error::MessageTooLarge {
                    len,
                    max: self.max_message,
                })
            }
            Ok(PipeRecv::TimedOut) => Err(Error::Timeout),
            Ok(PipeRecv::Eof) | Err(_) if stream.is_closed() => Err(Error::Closed),
            Ok(PipeRecv::Eof) => Err(Error::Eof),
            Err(e) => Err(Error::Io(e)),
        }
    }

    /// The message just read, by value: the buffer itself when the message
    /// fills most of it, a copy otherwise (so a small message does not
    /// carry a 64 KiB allocation away).
    fn take(&mut self) -> Vec<u8> {
        if self.buf.len() * 2 >= self.buf.capacity() {
            std::mem::take(&mut self.buf)
        } else {
            self.buf.to_vec()
        }
    }

    /// Receives one message and hands it to `f`, from the read buffer.
    pub(crate) fn read_with<S: ByteStream + ?Sized, R>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.recv(stream, deadline)?;
        Ok(f(&self.buf))
    }

    /// Receives one message into a `Vec` of its own.
    pub(crate) fn read_owned<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>> {
        self.recv(stream, deadline)?;
        Ok(self.take())
    }

    /// Receives one message into `out` and returns its length. A message
    /// longer than `out` is returned whole inside [`Error::BufferTooShort`].
    pub(crate) fn read_into<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
        out: &mut [u8],
    ) -> Result<usize> {
        self.recv(stream, deadline)?;
        let len = self.buf.len();
        match out.get_mut(..len) {
            Some(out) => {
                out.copy_from_slice(&self.buf);
                Ok(len)
            }
            None => Err(Error::BufferTooShort(self.take())),
        }
    }

    /// Frees the read buffer (nothing is ever left in it between reads).
    pub(crate) fn release_if_idle(&mut self) {
        self.buf = Vec::new();
    }
}

/// Sends `payload` as one pipe message, from where it lies.
pub(crate) fn send<S: ByteStream + ?Sized>(stream: &S, payload: &[u8]) -> Result<()> {
    match stream.send_message(&[IoSlice::new(payload)]) {
        Ok(()) => Ok(()),
        Err(_) if stream.is_closed() => Err(Error::Closed),
        Err(e) => Err(Error::Io(e)),
    }
}
