//! `Endpoint`: a stream shared by a connection's halves and its close handles.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::ByteStream;
use crate::sys::{self, Interest};

/// A connected stream and whether this process closed it.
#[derive(Debug)]
pub(crate) struct Endpoint {
    stream: sys::Stream,
    closed: AtomicBool,
}

impl Endpoint {
    pub(crate) fn new(stream: sys::Stream) -> Self {
        Endpoint {
            stream,
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn stream(&self) -> &sys::Stream {
        &self.stream
    }

    pub(crate) fn into_stream(self) -> sys::Stream {
        self.stream
    }

    /// Marks the endpoint closed and shuts the socket down, which wakes any
    /// thread blocked on it; their calls then fail with `Error::Closed`.
    /// The shutdown acts on the socket itself, so it ends the connection
    /// for every process holding a copy of the descriptor too. A stream
    /// that is not a socket (a pipe end) has no shutdown: it is only marked
    /// (on Windows the mark reaches the stream too, whose polling loops
    /// end on it).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // ENOTCONN only means the peer is gone already.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl ByteStream for Endpoint {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
    fn read_spare(&self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        self.stream.read_spare(v, max)
    }
    fn read_spare_passing(
        &self,
        v: &mut Vec<u8>,
        max: usize,
        passed: &mut Option<sys::Passed>,
    ) -> io::Result<usize> {
        self.stream.read_spare_passing(v, max, passed)
    }
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.try_write_vectored(bufs)
    }
    fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<bool> {
        self.stream.wait(interest, deadline)
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
    fn end(&self) {
        self.close();
    }
    fn quick_ack(&self) {
        self.stream.quick_ack()
    }
    #[cfg(windows)]
    fn pipe(&self) -> Option<&sys::Pipe> {
        self.stream.as_pipe()
    }
}
