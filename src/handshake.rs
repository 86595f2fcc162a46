//! The drivers of the handshake machine: one non-blocking step
//! ([`Exchange::step`]) that moves a handshake as far as its stream allows,
//! and one blocking loop around it ([`Exchange::drive_blocking`]) that waits
//! for readiness until the machine's own next deadline. `Client`, the upgrade methods of
//! `Connection<Unverified>`, and both listener engines use these two; the
//! protocol and its deadlines live in [`crate::proto::auth`].

use std::time::{Duration, Instant};

use crate::error::{AuthError, Error, ProtocolError, Result};
use crate::key::{AuthKey, fill_random};
use crate::proto::auth::{AuthPolicy, Handshake, MAX_MESSAGE, RANDOM_LEN, Role, Status, Timeouts};
use crate::sys::Interest;
use crate::transport::{ByteStream, MessageReader, Outbox};

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

/// The largest message a handshake reads: the limit its transport applies
/// from each frame's header while the handshake runs.
pub(crate) const HANDSHAKE_MESSAGE_LIMIT: u64 = MAX_MESSAGE as u64;

/// Evidence that a handshake finished: both sides proved the key. Only the
/// drivers in this file make one, and only a `Proof` turns a connection
/// into a `Connection<Authenticated>` (besides `pipe()` and the loudly
/// named `dangerous_` call).
#[derive(Debug)]
pub(crate) struct Proof(());

/// Where a [`Exchange::step`] left its handshake.
#[derive(Debug)]
pub(crate) enum Step {
    /// The stream must become ready for this before the next step.
    Wait(Interest),
    /// Both sides proved the key, and everything we had to say is sent.
    Done(Proof),
    /// The handshake failed; any verdict for the peer was sent if it could be.
    Failed(AuthError),
}

/// One handshake in flight over a stream: the machine, and what it said
/// that the stream has not taken yet. The messages it reads come through
/// the connection's own [`MessageReader`], so whatever the peer sends
/// behind the handshake stays there for the connection.
#[derive(Debug)]
pub(crate) struct Exchange {
    hs: Handshake,
    /// Messages of ours, not yet sent.
    unsent: Outbox,
}

impl Exchange {
    pub(crate) fn new(hs: Handshake) -> Self {
        Exchange {
            hs,
            unsent: Outbox::default(),
        }
    }

    /// The machine.
    #[cfg_attr(
        not(unix),
        allow(dead_code, reason = "only the Unix listener engine looks inside")
    )]
    pub(crate) fn handshake(&self) -> &Handshake {
        &self.hs
    }

    /// Moves the handshake as far as `stream` allows without waiting: gives
    /// the machine every whole message that has arrived, then sends what it
    /// has to say, until neither moves. `reader` must have the handshake's
    /// message limit.
    pub(crate) fn step<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        reader: &mut MessageReader,
    ) -> Step {
        loop {
            // Read everything first: a client that pipelined its challenge
            // behind its answer gets our verdict and our answer in one write.
            let drained = self.take_arrived(stream, reader);
            for message in self.hs.take_output() {
                self.unsent.push(&message);
            }
            match self.unsent.try_send(stream) {
                Ok(true) => {}
                Ok(false) => return Step::Wait(Interest::Writable),
                Err(_) => {
                    // A verdict the peer cannot read any more is no loss.
                    self.unsent.clear();
                    // The peer may have had its last word before it closed:
                    // a client's pipelined challenge fails to go out when
                    // the server has already sent #FAILURE# and hung up, and
                    // that verdict, still here, explains the close.
                    self.take_arrived(stream, reader);
                    return match self.hs.status() {
                        Status::Failed(e) => Step::Failed(e.clone()),
                        _ => Step::Failed(AuthError::PeerClosed),
                    };
                }
            }
            match self.hs.status() {
                Status::Done => return Step::Done(Proof(())),
                Status::Failed(e) => return Step::Failed(e.clone()),
                Status::InProgress if drained => return Step::Wait(Interest::Readable),
                Status::InProgress => {}
            }
        }
    }

    /// Sends what the machine has to say without reading anything: the
    /// listener's challenge, right after the accept. Whatever a client sent
    /// before it is reported by the poller the socket is registered with
    /// next, so a read here would only cost a system call. A send the
    /// socket cannot take yet stays queued for the next [`step`](Self::step).
    ///
    /// # Errors
    /// [`AuthError::PeerClosed`] when the client has already gone.
    #[cfg_attr(
        not(unix),
        allow(dead_code, reason = "only the Unix listener engine greets first")
    )]
    pub(crate) fn greet<S: ByteStream + ?Sized>(&mut self, stream: &S) -> Result<(), AuthError> {
        for message in self.hs.take_output() {
            self.unsent.push(&message);
        }
        match self.unsent.try_send(stream) {
            Ok(_) => Ok(()),
            Err(_) => Err(AuthError::PeerClosed),
        }
    }

    /// Gives the machine every whole message that has arrived, waiting for
    /// none; `true` when it stopped because nothing more was there.
    fn take_arrived<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        reader: &mut MessageReader,
    ) -> bool {
        while self.hs.wants_message() {
            // A deadline that has passed: take what is here, wait for nothing.
            match reader.read_with(stream, Some(Instant::now()), |m| self.hs.on_message(m)) {
                Ok(()) => {}
                Err(Error::Timeout) => return true,
                Err(e) => self.hs.transport_failed(handshake_error(e)),
            }
        }
        false
    }

    /// Runs the handshake to its end: [`step`](Self::step), then wait for
    /// what it waits for until the machine's next deadline, then tell the
    /// machine the time.
    pub(crate) fn drive_blocking<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        reader: &mut MessageReader,
    ) -> Result<Proof> {
        loop {
            let interest = match self.step(stream, reader) {
                Step::Done(proof) => return Ok(proof),
                Step::Failed(_) if stream.is_closed() => return Err(Error::Closed),
                Step::Failed(e) => return Err(Error::Auth(e)),
                Step::Wait(interest) => interest,
            };
            // Our challenge rides behind our answer, so a CPython server
            // writes #WELCOME# and its answer back to back; without an
            // immediate ACK from us, Nagle's algorithm holds its second write
            // for our delayed ACK (40 ms). Ask for quick ACKs (TCP, Linux).
            if interest == Interest::Readable && self.hs.awaiting_verdict() {
                stream.quick_ack();
            }
            if !stream.wait(interest, self.hs.poll_timeout())? {
                self.hs.handle_timeout(Instant::now());
            }
        }
    }
}

/// What a transport error while reading a handshake message means for the
/// handshake.
fn handshake_error(e: Error) -> AuthError {
    match e {
        Error::MessageTooLarge { len, .. } => AuthError::MessageTooLarge(len),
        // No handshake message is that long: say so, as for any other
        // length past the limit.
        Error::Protocol(ProtocolError::BadExtendedLength(len)) => AuthError::MessageTooLarge(len),
        Error::Protocol(_) => AuthError::Malformed("negative frame length"),
        _ => AuthError::PeerClosed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::auth::{NONCE_LEN, RANDOM_LEN};
    use crate::proto::frame::{self, MAX_HEADER};
    use crate::transport::fake::FakeStream;

    const KEY: &[u8] = b"handshake driver test key";

    fn machine(role: Role) -> Handshake {
        machine_with_key(role, KEY)
    }

    fn machine_with_key(role: Role, key: &[u8]) -> Handshake {
        let timeouts = Timeouts {
            total: Duration::from_secs(5),
            first_message: None,
        };
        let random = [u8::from(role == Role::Server); RANDOM_LEN];
        Handshake::new(
            role,
            AuthKey::new(key),
            AuthPolicy::default(),
            random,
            Instant::now(),
            timeouts,
        )
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut header = [0; MAX_HEADER];
        let n = frame::encode_header(payload.len() as u64, &mut header);
        [&header[MAX_HEADER - n..], payload].concat()
    }

    /// Everything a client says to `machine(Role::Server)`, framed, in
    /// order: the server's machine is the same every time, so a fresh one
    /// can be driven with these bytes.
    fn client_side() -> Vec<u8> {
        let (mut server, mut client) = (machine(Role::Server), machine(Role::Client));
        let mut wire = Vec::new();
        while server.wants_message() {
            for m in server.take_output() {
                client.on_message(&m);
            }
            let said = client.take_output();
            for m in &said {
                wire.extend_from_slice(&framed(m));
                server.on_message(m);
            }
            if said.is_empty() {
                break;
            }
        }
        assert_eq!(server.status(), &Status::Done);
        wire
    }

    fn serve(wire: Vec<u8>, chunk: usize) -> (Result<Proof>, MessageReader, FakeStream) {
        let stream = FakeStream::new(wire).chunks(&[chunk]);
        let mut reader = MessageReader::new(&stream, HANDSHAKE_MESSAGE_LIMIT);
        let result = Exchange::new(machine(Role::Server)).drive_blocking(&stream, &mut reader);
        (result, reader, stream)
    }

    #[test]
    fn what_follows_the_handshake_stays_in_the_reader_at_any_chunking() {
        let mut wire = client_side();
        wire.extend_from_slice(&framed(b"first message"));
        for chunk in [1, 2, 5, 64, 4096] {
            let (result, mut reader, stream) = serve(wire.clone(), chunk);
            assert!(result.is_ok(), "chunk {chunk}: {result:?}");
            reader.set_max_message(1024);
            let first = reader.read_owned(&stream, None).unwrap();
            assert_eq!(first, b"first message", "chunk {chunk}");
            let mut said = machine(Role::Server);
            let challenge = said.take_output().remove(0);
            let written = stream.written();
            assert!(written.starts_with(&framed(&challenge)), "chunk {chunk}");
            let welcome = framed(b"#WELCOME#");
            assert_eq!(
                &written[framed(&challenge).len()..][..welcome.len()],
                welcome
            );
        }
    }

    #[test]
    fn a_handshake_cut_anywhere_fails_as_a_closed_peer() {
        let wire = client_side();
        for cut in 0..wire.len() {
            let (result, _, _) = serve(wire[..cut].to_vec(), 7);
            assert!(
                matches!(result, Err(Error::Auth(AuthError::PeerClosed))),
                "cut {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn oversized_and_malformed_frames_fail_from_their_header() {
        let limit = HANDSHAKE_MESSAGE_LIMIT;
        let cases: [(Vec<u8>, AuthError); 3] = [
            (
                (limit as u32 + 1).to_be_bytes().to_vec(),
                AuthError::MessageTooLarge(limit + 1),
            ),
            (
                [(-1i32).to_be_bytes().as_slice(), &[0xff; 8]].concat(),
                AuthError::MessageTooLarge(u64::MAX),
            ),
            (
                (-5i32).to_be_bytes().to_vec(),
                AuthError::Malformed("negative frame length"),
            ),
        ];
        for (wire, expected) in cases {
            let (result, _, stream) = serve(wire, 4096);
            match result {
                Err(Error::Auth(e)) => assert_eq!(e, expected),
                other => panic!("{expected:?}: {other:?}"),
            }
            // Only our challenge went out: the header alone was refused.
            let challenge = NONCE_LEN + b"#CHALLENGE#{sha256}".len();
            assert_eq!(stream.written().len(), 4 + challenge);
        }
    }

    /// A client with the wrong key pipelines its challenge behind its
    /// answer; the server may read the answer, send #FAILURE# and hang up
    /// before the challenge goes out. The challenge's write then fails, but
    /// the verdict is there to read: the client is told it was rejected,
    /// not that the peer closed (under Wine, a named pipe did this about
    /// one time in six).
    #[test]
    fn a_verdict_sent_before_the_peer_hung_up_is_read_after_a_failed_write() {
        let mut server = machine(Role::Server);
        let mut client = machine_with_key(Role::Client, b"not the handshake test key");
        let challenge = server.take_output().remove(0);
        client.on_message(&challenge);
        for m in client.take_output() {
            server.on_message(&m);
        }
        let verdict = server.take_output().remove(0);
        assert_eq!(verdict, b"#FAILURE#");
        let first = framed(&challenge);
        let wire = [first.clone(), framed(&verdict)].concat();
        // The answer ({sha256} and a 32-byte digest) goes out in the first
        // write; the server hangs up before the second (the challenge).
        let stream = FakeStream::new(wire)
            .hold_back_after(first.len())
            .max_write(framed(&[0; 8 + 32]).len())
            .hang_up_after_writes(1);
        let mut reader = MessageReader::new(&stream, HANDSHAKE_MESSAGE_LIMIT);
        let result = Exchange::new(machine_with_key(
            Role::Client,
            b"not the handshake test key",
        ))
        .drive_blocking(&stream, &mut reader);
        assert!(
            matches!(result, Err(Error::Auth(AuthError::Rejected))),
            "{result:?}"
        );
    }
}
