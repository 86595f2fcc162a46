//! `Outbox`: messages queued to leave together (a `Batch`, the handshake's
//! answers). On a byte stream they leave framed, back to back, in as few
//! writes as the stream takes; on a named pipe each leaves as a pipe message
//! of its own.

use std::io::{self, IoSlice};
use std::time::Instant;

use super::ByteStream;
use super::writer::{write_all, write_slices};
use crate::error::Result;
use crate::proto::frame::{self, MAX_HEADER};

/// Messages not sent yet, kept as the frames a byte stream carries: header
/// and payload, back to back.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    framed: Vec<u8>,
}

impl Outbox {
    /// Queues `payload` as one message.
    pub(crate) fn push(&mut self, payload: &[u8]) {
        let mut header = [0; MAX_HEADER];
        let n = frame::encode_header(payload.len() as u64, &mut header);
        self.framed.extend_from_slice(&header[MAX_HEADER - n..]);
        self.framed.extend_from_slice(payload);
    }

    /// Queues the message that `encode` appends to the buffer it is given.
    /// When it fails, nothing is queued.
    pub(crate) fn push_encoded<E>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let start = self.framed.len();
        // Encode behind a 4-byte header slot; widen it in the rare case the
        // message passes 2 GiB.
        self.framed.extend_from_slice(&[0; 4]);
        if let Err(e) = encode(&mut self.framed) {
            self.framed.truncate(start);
            return Err(e);
        }
        let len = (self.framed.len() - start - 4) as u64;
        let mut header = [0; MAX_HEADER];
        let n = frame::encode_header(len, &mut header);
        if n == 4 {
            self.framed[start..start + 4].copy_from_slice(&header[MAX_HEADER - 4..]);
        } else {
            self.framed.splice(start..start + 4, header.iter().copied());
        }
        Ok(())
    }

    /// Queues `payload` as one message of an encrypted connection: its
    /// records, sealed with `sealer`.
    pub(crate) fn push_sealed(
        &mut self,
        sealer: &mut crate::proto::noise::Sealer,
        payload: &[u8],
    ) -> Result<()> {
        sealer.seal(payload, &mut self.framed)
    }

    /// Bytes queued (headers included).
    pub(crate) fn len(&self) -> usize {
        self.framed.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.framed.is_empty()
    }

    /// Drops what is queued.
    pub(crate) fn clear(&mut self) {
        self.framed.clear();
    }

    /// Frees the buffer when nothing is queued and it holds more than `keep`
    /// bytes of capacity.
    pub(crate) fn release_above(&mut self, keep: usize) {
        if self.framed.is_empty() && self.framed.capacity() > keep {
            self.framed = Vec::new();
        }
    }

    /// Sends everything queued and then `last`, if any, as one more message
    /// (from where it lies: it is not copied into the queue). On a byte
    /// stream, in one vectored write where the stream takes it all. The
    /// queue is empty afterwards, whether the send succeeded or not: half a
    /// queue must not leave later.
    pub(crate) fn send<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        last: Option<&[u8]>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let sent = self.send_inner(stream, last, deadline);
        self.framed.clear();
        sent
    }

    fn send_inner<S: ByteStream + ?Sized>(
        &self,
        stream: &S,
        last: Option<&[u8]>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        #[cfg(windows)]
        if stream.pipe().is_some() {
            for payload in self.messages() {
                super::pipe::send(stream, payload?)?;
            }
            return match last {
                Some(payload) => super::pipe::send(stream, payload),
                None => Ok(()),
            };
        }
        match last {
            None => write_all(stream, &self.framed, deadline),
            Some(payload) => {
                let mut header = [0; MAX_HEADER];
                let n = frame::encode_header(payload.len() as u64, &mut header);
                let parts = [&self.framed[..], &header[MAX_HEADER - n..], payload];
                write_slices(stream, &parts, deadline)
            }
        }
    }

    /// Sends as much as `stream` takes without blocking; `Ok(true)` once
    /// everything is sent, `Ok(false)` when the stream has no room (wait
    /// until it is writable, then call again). A pipe takes each message
    /// whole: a blocking one waiting for room as its writes do, an async one
    /// keeping the messages it could not send yet for the next call.
    pub(crate) fn try_send<S: ByteStream + ?Sized>(&mut self, stream: &S) -> io::Result<bool> {
        #[cfg(windows)]
        if stream.pipe().is_some() {
            let mut sent = 0;
            let mut result = Ok(true);
            for payload in self.messages() {
                let payload = payload.map_err(io::Error::other)?;
                match stream.send_message(&[IoSlice::new(payload)]) {
                    Ok(()) => sent += frame_len(payload.len()),
                    Err(e) => {
                        result = match e.kind() {
                            io::ErrorKind::WouldBlock => Ok(false),
                            _ => Err(e),
                        };
                        break;
                    }
                }
            }
            match result {
                Ok(false) => drop(self.framed.drain(..sent)),
                _ => self.framed.clear(),
            }
            return result;
        }
        while !self.framed.is_empty() {
            match stream.try_write_vectored(&[IoSlice::new(&self.framed)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.framed.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The payloads of the queued messages, in order: what a pipe sends,
    /// one message each.
    #[cfg(windows)]
    fn messages(&self) -> impl Iterator<Item = Result<&[u8]>> {
        let mut rest = &self.framed[..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            // The queue holds only frames this type wrote.
            let frame = frame::parse_header(rest).ok().flatten().and_then(|h| {
                let end = h
                    .header_len
                    .checked_add(usize::try_from(h.payload_len).ok()?)?;
                let payload = rest.get(h.header_len..end)?;
                Some((payload, end))
            });
            match frame {
                Some((payload, end)) => {
                    rest = &rest[end..];
                    Some(Ok(payload))
                }
                None => {
                    rest = &[];
                    Some(Err(crate::Error::Io(io::Error::other(
                        "a batch queue holds a broken frame",
                    ))))
                }
            }
        })
    }
}

/// The bytes a queued message of `len` bytes takes: its header and itself.
#[cfg(windows)]
fn frame_len(len: usize) -> usize {
    frame::encode_header(len as u64, &mut [0; MAX_HEADER]) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fake::FakeStream;

    #[test]
    fn queued_messages_leave_framed_in_one_write_then_the_last() {
        let stream = FakeStream::new(Vec::new());
        let mut outbox = Outbox::default();
        outbox.push(b"ab");
        outbox
            .push_encoded(|v| {
                v.extend_from_slice(b"xyz");
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(outbox.push_encoded(|_| Err(())), Err(()));
        assert_eq!(outbox.len(), 4 + 2 + 4 + 3);
        outbox.send(&stream, Some(b"last"), None).unwrap();
        assert!(outbox.is_empty());
        assert_eq!(stream.write_calls(), 1);
        let expected = [
            &[0, 0, 0, 2][..],
            b"ab",
            &[0, 0, 0, 3],
            b"xyz",
            &[0, 0, 0, 4],
            b"last",
        ]
        .concat();
        assert_eq!(stream.written(), expected);
    }

    #[test]
    fn try_send_finishes_after_short_writes() {
        let stream = FakeStream::new(Vec::new()).max_write(3).interrupt_every(2);
        let mut outbox = Outbox::default();
        outbox.push(b"hello");
        outbox.push(b"");
        while !outbox.try_send(&stream).unwrap() {}
        assert!(outbox.is_empty());
        assert_eq!(
            stream.written(),
            [&[0, 0, 0, 5][..], b"hello", &[0; 4]].concat()
        );
    }
}
