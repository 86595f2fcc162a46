//! `MessageReader`: whole messages from any stream. Byte streams (sockets)
//! carry a frame header before each message, which the [`FrameReader`]
//! parses; named pipes delimit messages themselves, and the `PipeReader`
//! reads them whole. The layers above see messages only.

use std::time::Instant;

use super::ByteStream;
use super::FrameReader;
#[cfg(windows)]
use super::pipe::PipeReader;
use super::sealed::SealedReader;
use crate::error::Result;
use crate::proto::noise::Opener;

/// What a reader held and had not delivered, as the stream carried it,
/// and the descriptors that came with one of those bytes, at that index.
#[cfg(unix)]
pub(crate) type Unread = (Vec<u8>, Option<(usize, crate::sys::Passed)>);

/// Reads messages from a stream, the way its kind delimits them.
#[derive(Debug)]
pub(crate) enum MessageReader {
    /// A byte stream: frame headers delimit the messages.
    Frames(FrameReader),
    /// A named pipe: each pipe message is one message.
    #[cfg(windows)]
    Pipe(PipeReader),
    /// An encrypted connection's byte stream: frames carry sealed records.
    Sealed(Box<SealedReader>),
}

impl MessageReader {
    /// A reader for `stream`, refusing messages above `max_message` bytes.
    pub(crate) fn new<S: ByteStream + ?Sized>(stream: &S, max_message: u64) -> Self {
        #[cfg(windows)]
        if stream.pipe().is_some() {
            return MessageReader::Pipe(PipeReader::new(max_message));
        }
        #[cfg(not(windows))]
        let _ = stream;
        MessageReader::Frames(FrameReader::new(max_message))
    }

    pub(crate) fn set_max_message(&mut self, max: u64) {
        match self {
            MessageReader::Frames(r) => r.set_max_message(max),
            #[cfg(windows)]
            MessageReader::Pipe(r) => r.set_max_message(max),
            MessageReader::Sealed(r) => r.set_max_message(max),
        }
    }

    pub(crate) fn max_message(&self) -> u64 {
        match self {
            MessageReader::Frames(r) => r.max_message(),
            #[cfg(windows)]
            MessageReader::Pipe(r) => r.max_message(),
            MessageReader::Sealed(r) => r.max_message(),
        }
    }

    /// Whether bytes of a next message are already here, so a poll must not
    /// wait. A pipe reader reads nothing ahead.
    pub(crate) fn has_buffered(&self) -> bool {
        match self {
            MessageReader::Frames(r) => r.has_buffered(),
            #[cfg(windows)]
            MessageReader::Pipe(_) => false,
            MessageReader::Sealed(r) => r.has_buffered(),
        }
    }

    /// Whether a receive can do nothing until the stream has more to read.
    /// A pipe reader says no: it always asks the pipe.
    #[cfg_attr(
        not(any(feature = "tokio", feature = "async-io")),
        allow(dead_code, reason = "only the async connections ask first")
    )]
    pub(crate) fn needs_bytes(&self) -> bool {
        match self {
            MessageReader::Frames(r) => r.needs_bytes(),
            #[cfg(windows)]
            MessageReader::Pipe(_) => false,
            MessageReader::Sealed(r) => r.needs_bytes(),
        }
    }

    /// Receives one message and hands its payload to `f`, from the read
    /// buffer where it can.
    pub(crate) fn read_with<S: ByteStream + ?Sized, R>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        match self {
            MessageReader::Frames(r) => r.read_with(stream, deadline, f),
            #[cfg(windows)]
            MessageReader::Pipe(r) => r.read_with(stream, deadline, f),
            MessageReader::Sealed(r) => r.read_with(stream, deadline, f),
        }
    }

    /// Receives one message into a new `Vec`.
    pub(crate) fn read_owned<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>> {
        match self {
            MessageReader::Frames(r) => r.read_owned(stream, deadline),
            #[cfg(windows)]
            MessageReader::Pipe(r) => r.read_owned(stream, deadline),
            MessageReader::Sealed(r) => r.read_owned(stream, deadline),
        }
    }

    /// Receives one message into `out` and returns its length. A message
    /// longer than `out` is returned whole inside
    /// [`Error::BufferTooShort`](crate::Error::BufferTooShort).
    pub(crate) fn read_into<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
        out: &mut [u8],
    ) -> Result<usize> {
        match self {
            MessageReader::Frames(r) => r.read_into(stream, deadline, out),
            #[cfg(windows)]
            MessageReader::Pipe(r) => r.read_into(stream, deadline, out),
            MessageReader::Sealed(r) => r.read_into(stream, deadline, out),
        }
    }

    /// Receives the byte that carries descriptors, and them (Unix: only
    /// byte streams exist there).
    #[cfg(unix)]
    pub(crate) fn read_passed<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<(u8, crate::sys::Passed)> {
        match self {
            MessageReader::Frames(r) => r.read_passed(stream, deadline),
            MessageReader::Sealed(_) => Err(crate::Error::Descriptors(
                crate::error::DescriptorError::Encrypted,
            )),
        }
    }

    /// Everything read and not yet received, as the stream carried it, for
    /// another owner of the stream (Unix).
    #[cfg(unix)]
    pub(crate) fn take_unread(&mut self) -> Result<Unread> {
        match self {
            MessageReader::Frames(r) => Ok(r.take_unread()),
            MessageReader::Sealed(_) => Err(crate::Error::Descriptors(
                crate::error::DescriptorError::Encrypted,
            )),
        }
    }

    /// Turns this reader into an encrypted connection's: from here on its
    /// frames are records that `opener` opens. Bytes already read stay.
    /// A named pipe has no encrypted mode, and the handshake refuses to run
    /// it there; should one get here all the same, its reader is left
    /// broken, so that nothing unsealed is ever taken for a message.
    pub(crate) fn seal(&mut self, opener: Opener) {
        let taken = std::mem::replace(self, MessageReader::Frames(FrameReader::new(0)));
        *self = MessageReader::Sealed(Box::new(match taken {
            MessageReader::Frames(frames) => SealedReader::new(frames, opener),
            #[allow(unreachable_patterns, reason = "a pipe reader exists on Windows only")]
            _ => SealedReader::broken(opener),
        }));
    }

    /// Waits, as far as the deadline allows, until a message or the end of
    /// stream can be received; keeps what it reads.
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async connections look ahead")
    )]
    pub(crate) fn read_ahead<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        match self {
            MessageReader::Frames(r) => r.read_ahead(stream, deadline),
            MessageReader::Sealed(r) => r.read_ahead(stream, deadline),
            #[cfg(windows)]
            // As a frame reader's fill: a deadline that passes is a timeout.
            MessageReader::Pipe(_) => {
                match stream.wait(crate::sys::Interest::Readable, deadline)? {
                    true => Ok(true),
                    false => Err(crate::Error::Timeout),
                }
            }
        }
    }

    /// Frees the read buffer when nothing is left in it.
    pub(crate) fn release_if_idle(&mut self) {
        match self {
            MessageReader::Frames(r) => r.release_if_idle(),
            #[cfg(windows)]
            MessageReader::Pipe(r) => r.release_if_idle(),
            MessageReader::Sealed(r) => r.release_if_idle(),
        }
    }
}

impl From<FrameReader> for MessageReader {
    fn from(reader: FrameReader) -> Self {
        MessageReader::Frames(reader)
    }
}
