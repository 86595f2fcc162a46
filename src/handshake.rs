//! The drivers of the handshake machine: one non-blocking [`step`] that
//! moves a handshake as far as its stream allows, and one blocking loop
//! around it ([`drive_blocking`]) that waits for readiness until the
//! machine's own next deadline. `Client`, the upgrade methods of
//! `Connection<Unverified>`, and both listener engines use these two; the
//! protocol and its deadlines live in [`crate::proto::auth`].

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use crate::error::{AuthError, Error, Result};
use crate::key::{AuthKey, fill_random};
use crate::proto::auth::{AuthPolicy, Handshake, MAX_MESSAGE, RANDOM_LEN, Role, Status, Timeouts};
use crate::sys::Interest;
use crate::transport::ByteStream;

/// The default total deadline for one handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default deadline for a client's answer to a listener's challenge.
pub const DEFAULT_FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// The handshake options of [`ListenerOptions`](crate::ListenerOptions) and
/// [`ClientOptions`](crate::ClientOptions): one definition for both builders,
/// which keep theirs in a `handshake: HandshakeOptions` field.
macro_rules! handshake_builder_methods {
    () => {
        /// Total time one handshake may take (default 5 s), from the
        /// connection to the verdict. A peer that never starts one, a keyless
        /// listener for example, fails within it. `Duration::MAX` waits
        /// forever.
        pub fn handshake_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.handshake.timeout = timeout;
            self
        }

        /// Accept Python 3.11-and-older peers, which only speak HMAC-MD5
        /// (default: refused, with an error naming this option).
        pub fn allow_legacy_md5(mut self, allow: bool) -> Self {
            self.handshake.policy.allow_legacy_md5 = allow;
            self
        }

        /// Accept keys shorter than 16 bytes (default: refused).
        pub fn allow_short_key(mut self, allow: bool) -> Self {
            self.handshake.allow_short_key = allow;
            self
        }

        /// The digest named in the challenges this side delivers (default
        /// sha256). Any peer answers in the digest it is asked for.
        pub fn digest(mut self, digest: $crate::Digest) -> Self {
            self.handshake.policy.challenge_digest = digest;
            self
        }
    };
}
pub(crate) use handshake_builder_methods;

/// Options of the authentication handshake, shared by listeners and clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandshakeOptions {
    /// The whole exchange.
    pub timeout: Duration,
    /// The peer's first message; `None`: only `timeout` applies.
    pub first_message: Option<Duration>,
    pub policy: AuthPolicy,
    pub allow_short_key: bool,
}

impl Default for HandshakeOptions {
    fn default() -> Self {
        HandshakeOptions {
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            first_message: None,
            policy: AuthPolicy::default(),
            allow_short_key: false,
        }
    }
}

impl HandshakeOptions {
    /// Checks the key and starts a machine for `role` at `now`, with fresh
    /// random bytes in its challenge.
    pub(crate) fn start(&self, role: Role, key: &AuthKey, now: Instant) -> Result<Handshake> {
        key.check_len(self.allow_short_key)?;
        let mut random = [0u8; RANDOM_LEN];
        fill_random(&mut random)?;
        let timeouts = Timeouts {
            total: self.timeout,
            first_message: self.first_message,
        };
        Ok(Handshake::new(
            role,
            key.clone(),
            self.policy,
            random,
            now,
            timeouts,
        ))
    }
}

/// How much a handshake driver reads at once: the largest exchange (the
/// verdict and the peer's answer, or an answer and a challenge) fits, so a
/// message pair costs one read, not four.
pub(crate) const READ_AHEAD: usize = 2 * (4 + MAX_MESSAGE);

/// Evidence that a handshake finished: both sides proved the key. Only the
/// drivers in this file make one, and only a `Proof` turns a connection
/// into a `Connection<Authenticated>` (besides `pipe()` and the loudly
/// named `dangerous_` call).
#[derive(Debug)]
pub(crate) struct Proof(());

/// Where a [`step`] left its handshake.
#[derive(Debug)]
pub(crate) enum Step {
    /// The stream must become ready for this before the next step.
    Wait(Interest),
    /// Both sides proved the key, and everything we had to say is sent.
    Done(Proof),
    /// The handshake failed; any verdict for the peer was sent if it could be.
    Failed(AuthError),
}

/// How a [`step`] may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// Not at all: the stream was not reported readable (it may block).
    No,
    /// Once: the stream was reported readable, so one read cannot block.
    Once,
    /// Until the stream runs dry, as an edge-triggered poller needs
    /// (non-blocking streams only).
    Drain,
}

/// Moves `hs` as far as `stream` allows without blocking: sends what the
/// machine has to say, and reads what it wants as `reads` allows. Bytes
/// read past the handshake's last message are appended to `early`.
pub(crate) fn step<S: ByteStream + ?Sized>(
    stream: &S,
    hs: &mut Handshake,
    early: &mut Vec<u8>,
    reads: Reads,
) -> Step {
    let mut buf = [0u8; READ_AHEAD];
    let mut may_read = reads != Reads::No;
    loop {
        // Say everything first: a client that pipelined its challenge behind
        // its answer gets our verdict and our answer in a single write.
        while !hs.output().is_empty() {
            match stream.try_write_vectored(&[IoSlice::new(hs.output())]) {
                Ok(n) => hs.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Step::Wait(Interest::Writable);
                }
                Err(_) => {
                    // A verdict the peer cannot read any more is no loss.
                    return match hs.status() {
                        Status::Failed(e) => Step::Failed(e.clone()),
                        _ => Step::Failed(AuthError::PeerClosed),
                    };
                }
            }
        }
        match hs.status() {
            Status::Done => return Step::Done(Proof(())),
            Status::Failed(e) => return Step::Failed(e.clone()),
            Status::InProgress if !may_read => return Step::Wait(Interest::Readable),
            Status::InProgress => {}
        }
        match stream.read(&mut buf) {
            Ok(0) => hs.peer_closed(),
            Ok(n) => {
                let used = hs.feed(&buf[..n]);
                early.extend_from_slice(&buf[used..n]);
                // A short read emptied the socket. Linux's epoll reports
                // every later arrival as a new edge, so the read that would
                // only say EAGAIN can be skipped.
                let emptied =
                    n < buf.len() && cfg!(any(target_os = "linux", target_os = "android"));
                may_read = reads == Reads::Drain && !emptied;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => may_read = false,
            Err(_) => hs.peer_closed(),
        }
    }
}

/// Runs `hs` to its end over `stream`: [`step`], then wait for what it
/// waits for until the machine's next deadline, then tell the machine the
/// time. Bytes read past the handshake are appended to `early`.
pub(crate) fn drive_blocking<S: ByteStream + ?Sized>(
    stream: &S,
    hs: &mut Handshake,
    early: &mut Vec<u8>,
) -> Result<Proof> {
    let mut reads = Reads::No;
    loop {
        let interest = match step(stream, hs, early, reads) {
            Step::Done(proof) => return Ok(proof),
            Step::Failed(_) if stream.is_closed() => return Err(Error::Closed),
            Step::Failed(e) => return Err(Error::Auth(e)),
            Step::Wait(interest) => interest,
        };
        // Our challenge rides behind our answer, so a CPython server writes
        // #WELCOME# and its answer back to back; without an immediate ACK
        // from us, Nagle's algorithm holds its second write for our delayed
        // ACK (40 ms). Ask for quick ACKs (TCP, Linux).
        if interest == Interest::Readable && hs.awaiting_verdict() {
            stream.quick_ack();
        }
        reads = Reads::No;
        match stream.wait(interest, hs.poll_timeout())? {
            true if interest == Interest::Readable => reads = Reads::Once,
            true => {}
            false => hs.handle_timeout(Instant::now()),
        }
    }
}
