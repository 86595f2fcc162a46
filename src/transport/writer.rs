//! Message sending: on a byte stream, header and payload leave in one
//! vectored write.

use std::io::IoSlice;
use std::time::Instant;

use super::{ByteStream, retry};
use crate::error::{Error, Result};
use crate::proto::frame::{self, MAX_HEADER};
use crate::sys::Interest;

/// Sends `payload` as one message: framed on a byte stream, as one pipe
/// message on a named pipe.
pub(crate) fn send_message<S: ByteStream + ?Sized>(
    stream: &S,
    payload: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    #[cfg(windows)]
    if stream.pipe().is_some() {
        return super::pipe::send(stream, payload);
    }
    write_frame(stream, payload, deadline)
}

/// Sends one frame: the header and `payload` in one `writev` where the
/// stream takes it all, continuing after short writes.
pub(crate) fn write_frame<S: ByteStream + ?Sized>(
    stream: &S,
    payload: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let mut header = [0; MAX_HEADER];
    let n = frame::encode_header(payload.len() as u64, &mut header);
    let mut bufs = [
        IoSlice::new(&header[MAX_HEADER - n..]),
        IoSlice::new(payload),
    ];
    write_vectored_all(stream, &mut bufs, deadline)
}

/// Sends `bytes` as they are (already framed).
pub(crate) fn write_all<S: ByteStream + ?Sized>(
    stream: &S,
    bytes: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    write_vectored_all(stream, &mut [IoSlice::new(bytes)], deadline)
}

/// Sends several byte slices back to back, in as few writes as the stream allows.
pub(crate) fn write_slices<S: ByteStream + ?Sized>(
    stream: &S,
    parts: &[&[u8]],
    deadline: Option<Instant>,
) -> Result<()> {
    let mut bufs: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    write_vectored_all(stream, &mut bufs, deadline)
}

fn write_vectored_all<S: ByteStream + ?Sized>(
    stream: &S,
    mut bufs: &mut [IoSlice<'_>],
    deadline: Option<Instant>,
) -> Result<()> {
    // Skip empty slices so that a zero-length payload does not look like a stuck write.
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = match deadline {
            // Without a deadline, a blocking write.
            None => retry(stream, Interest::Writable, None, |s| s.write_vectored(bufs))?,
            // With one, try first (there is almost always room) and wait for
            // room only when the socket says so.
            Some(_) => match stream.try_write_vectored(bufs) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    retry(stream, Interest::Writable, deadline, |s| {
                        s.try_write_vectored(bufs)
                    })?
                }
                Err(_) if stream.is_closed() => return Err(Error::Closed),
                Err(e) => return Err(Error::Io(e)),
            },
        };
        if n == 0 {
            return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fake::FakeStream;

    #[test]
    fn short_writes_and_interrupts_still_send_every_byte() {
        for max_write in [1, 2, 3, 5, 64, 1 << 20] {
            let stream = FakeStream::new(Vec::new())
                .max_write(max_write)
                .interrupt_every(3);
            write_frame(&stream, b"hello", None).unwrap();
            write_frame(&stream, b"", None).unwrap();
            write_frame(&stream, &[7; 300], None).unwrap();
            let mut expected = vec![0, 0, 0, 5];
            expected.extend_from_slice(b"hello");
            expected.extend_from_slice(&[0, 0, 0, 0]);
            expected.extend_from_slice(&300u32.to_be_bytes());
            expected.extend_from_slice(&[7; 300]);
            assert_eq!(stream.written(), expected, "max_write {max_write}");
        }
    }

    #[test]
    fn small_frames_leave_in_one_write() {
        let stream = FakeStream::new(Vec::new());
        write_frame(&stream, &[1; 64], None).unwrap();
        assert_eq!(stream.write_calls(), 1);
    }
}
