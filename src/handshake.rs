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
use crate::proto::noise::Session;
use crate::sys::Interest;
use crate::transport::{ByteStream, MessageReader, Outbox};

/// The default deadline on one handshake's exchange: a listener counts it
/// from the accept, a client from the listener's challenge.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default deadline for a client's answer to a listener's challenge.
pub const DEFAULT_FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// The builder methods every holder of handshake options has:
/// [`HandshakeOptions`] itself, and [`ListenerOptions`](crate::ListenerOptions)
/// and [`ClientOptions`](crate::ClientOptions), which keep theirs in a
/// `handshake` field: `handshake_builder_methods!()` for the first,
/// `handshake_builder_methods!(handshake)` for the others.
macro_rules! handshake_builder_methods {
    ($($field:ident)?) => {
        /// The deadline on the exchange itself (default 5 s,
        /// [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::DEFAULT_HANDSHAKE_TIMEOUT)).
        /// The server's side (a listener, or `authenticate_as_server*`)
        /// counts it from the start, so a client that never finishes fails
        /// within it. The client's side counts it from the arrival of the
        /// server's challenge: a client waits for a server that has not
        /// begun, as CPython's does (a sequential CPython listener may call
        /// `accept()` long after the connection), for as long as
        /// `challenge_timeout` allows. `Duration::MAX` waits forever.
        pub fn handshake_timeout(mut self, timeout: std::time::Duration) -> Self {
            self$(.$field)?.timeout = timeout;
            self
        }

        /// Accept Python 3.11-and-older peers, which only speak HMAC-MD5
        /// (default: refused, with an error naming this option).
        pub fn allow_legacy_md5(mut self, allow: bool) -> Self {
            self$(.$field)?.policy.allow_legacy_md5 = allow;
            self
        }

        /// Accept keys shorter than 16 bytes (default: refused).
        pub fn allow_short_key(mut self, allow: bool) -> Self {
            self$(.$field)?.allow_short_key = allow;
            self
        }

        /// Run the encrypted mode (default: off): after the CPython
        /// handshake, a Noise handshake keyed by the same key and bound to
        /// both challenges, then every message sealed (AES-256-GCM)
        /// with fresh keys for each connection. Both ends must set it: an
        /// end that does not, and CPython, fail the handshake
        /// ([`AuthError::EncryptionRequired`](crate::AuthError::EncryptionRequired)
        /// on one side, [`AuthError::NotEncrypted`](crate::AuthError::NotEncrypted)
        /// on the other; CPython raises `AuthenticationError`). TCP and Unix
        /// sockets only (not Windows named pipes). See SECURITY.md for what
        /// it protects against. It belongs to the handshake: a listener or
        /// client without one (`bind_unauthenticated`,
        /// `connect_unauthenticated`) ignores it, and its connections stay
        /// plain until `authenticate_as_*_with` runs with
        /// `HandshakeOptions::new().encrypted(true)`.
        pub fn encrypted(mut self, encrypted: bool) -> Self {
            self$(.$field)?.policy.encrypted = encrypted;
            self
        }

        /// The digest named in the challenges this side delivers (default
        /// sha256). Any peer answers in the digest it is asked for.
        pub fn digest(mut self, digest: $crate::Digest) -> Self {
            self$(.$field)?.policy.challenge_digest = digest;
            self
        }
    };
}
pub(crate) use handshake_builder_methods;

/// The options of one authentication handshake, for a connection that
/// runs it itself: [`Connection::authenticate_as_server_with`] and
/// [`Connection::authenticate_as_client_with`] (a connection adopted from
/// an inherited descriptor, say). A builder, with the same methods as
/// [`ListenerOptions`](crate::ListenerOptions) and
/// [`ClientOptions`](crate::ClientOptions), and the deadline of each role.
///
/// [`Connection::authenticate_as_server_with`]: crate::Connection::authenticate_as_server_with
/// [`Connection::authenticate_as_client_with`]: crate::Connection::authenticate_as_client_with
///
/// ```no_run
/// # fn f(conn: mpconn::Connection<mpconn::Unverified>) -> mpconn::Result<()> {
/// use std::time::Duration;
/// // A Python 3.8 parent runs deliver_challenge/answer_challenge on its end.
/// let options = mpconn::HandshakeOptions::new()
///     .allow_legacy_md5(true)
///     .challenge_timeout(Some(Duration::from_secs(30)));
/// let conn = conn.authenticate_as_client_with(b"a key of sixteen bytes", &options)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeOptions {
    /// The exchange: from the start (server), or from the challenge (client).
    pub(crate) timeout: Duration,
    /// The server's side: the client's answer, from the start.
    pub(crate) first_answer: Option<Duration>,
    /// The client's side: the server's challenge, from the start.
    pub(crate) challenge_wait: Option<Duration>,
    pub(crate) policy: AuthPolicy,
    pub(crate) allow_short_key: bool,
}

impl Default for HandshakeOptions {
    fn default() -> Self {
        HandshakeOptions {
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            first_answer: None,
            challenge_wait: None,
            policy: AuthPolicy::default(),
            allow_short_key: false,
        }
    }
}

impl HandshakeOptions {
    /// The defaults: sha256 only, 16-byte keys at least, 5 s for the
    /// exchange, no limit of its own on the client's answer (the server's
    /// side) or on the server's challenge (the client's side).
    pub fn new() -> Self {
        Self::default()
    }

    handshake_builder_methods!();

    /// The server's side: how long the client may take to answer our
    /// challenge, counted from the start (default: no limit of its own, only
    /// [`handshake_timeout`](Self::handshake_timeout); listeners use 1 s, see
    /// [`ListenerOptions::first_answer_timeout`](crate::ListenerOptions::first_answer_timeout)).
    pub fn first_answer_timeout(mut self, timeout: Duration) -> Self {
        self.first_answer = Some(timeout);
        self
    }

    /// The client's side: how long to wait for the server to begin the
    /// handshake, that is for its challenge (default `None`: as long as it
    /// takes, as CPython's `Client` and `answer_challenge` do). Set it to
    /// bound the wait for a server that accepted the connection but may
    /// never speak. The exchange after the challenge has
    /// [`handshake_timeout`](Self::handshake_timeout). Past it the
    /// handshake fails with [`AuthError::NoChallenge`](crate::AuthError::NoChallenge).
    pub fn challenge_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.challenge_wait = timeout;
        self
    }

    /// The machine's deadlines for `role`.
    fn timeouts(&self, role: Role) -> Timeouts {
        match role {
            Role::Server => Timeouts {
                first_message: self.first_answer,
                total: Some(self.timeout),
                after_first: None,
            },
            Role::Client => Timeouts {
                first_message: self.challenge_wait,
                total: None,
                after_first: Some(self.timeout),
            },
        }
    }

    /// Starts a machine for `role` at `now`, with fresh random bytes in its
    /// challenge. A key these options refuse (too short) gives a machine
    /// that refuses the peer in a way the peer reads as an authentication
    /// failure, and ends with [`AuthError::KeyTooShort`].
    pub(crate) fn start(&self, role: Role, key: &AuthKey, now: Instant) -> Result<Handshake> {
        let mut random = [0u8; RANDOM_LEN];
        fill_random(&mut random)?;
        let timeouts = self.timeouts(role);
        Ok(match key.refusal(self.allow_short_key) {
            None => Handshake::new(role, key.clone(), self.policy, random, now, timeouts),
            Some(e) => Handshake::refusing(role, e, self.policy, random, now, timeouts),
        })
    }
}

/// The largest message a handshake reads: the limit its transport applies
/// from each frame's header while the handshake runs.
pub(crate) const HANDSHAKE_MESSAGE_LIMIT: u64 = MAX_MESSAGE as u64;

/// Evidence that a handshake finished: both sides proved the key. Only the
/// drivers in this file make one, and only a `Proof` turns a connection
/// into a `Connection<Authenticated>` (besides `pipe()` and the loudly
/// named `dangerous_` call).
/// In the encrypted mode, it carries the session's keys, for the
/// connection to seal and open its messages with.
#[derive(Debug)]
pub(crate) struct Proof(Option<Session>);

impl Proof {
    /// The encrypted mode's keys, when the handshake ran that mode.
    pub(crate) fn into_session(self) -> Option<Session> {
        self.0
    }
}

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
        #[cfg(windows)]
        if self.hs.encrypted() && stream.pipe().is_some() {
            return Step::Failed(AuthError::EncryptionUnsupported);
        }
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
                    // A refusal, if any, is the clearer reason.
                    self.hs.transport_failed(AuthError::PeerClosed);
                    return match self.hs.status() {
                        Status::Failed(e) => Step::Failed(e.clone()),
                        _ => Step::Failed(AuthError::PeerClosed),
                    };
                }
            }
            match self.hs.status() {
                Status::Done => return Step::Done(Proof(self.hs.take_session())),
                Status::Failed(e) => return Step::Failed(e.clone()),
                Status::InProgress if drained => return Step::Wait(Interest::Readable),
                Status::InProgress => {}
            }
        }
    }

    /// Tells the machine that time has reached `now` (an async driver's
    /// timer fired).
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async drivers keep their own timers")
    )]
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.hs.handle_timeout(now);
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
            let now = Instant::now();
            match reader.read_with(stream, Some(now), |m| self.hs.on_message(now, m)) {
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
            first_message: None,
            total: Some(Duration::from_secs(5)),
            after_first: None,
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
                client.on_message(Instant::now(), &m);
            }
            let said = client.take_output();
            for m in &said {
                wire.extend_from_slice(&framed(m));
                server.on_message(Instant::now(), m);
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

    /// A client that refuses a legacy challenge sends the unverifiable
    /// answer and reports its refusal, not what the server did next: a
    /// verdict, a close, or a hang-up before the answer could be written.
    #[test]
    fn a_refusing_client_reports_its_refusal_however_the_server_goes_on() {
        let legacy = framed(&[b"#CHALLENGE#".as_slice(), &[4; 20]].concat());
        let verdict = [legacy.clone(), framed(b"#FAILURE#")].concat();
        for (what, wire, hang_up) in [
            ("a verdict", verdict, false),
            ("a close", legacy.clone(), false),
            ("a hang-up", legacy, true),
        ] {
            let mut stream = FakeStream::new(wire);
            if hang_up {
                stream = stream.hang_up_after_writes(0);
            }
            let mut reader = MessageReader::new(&stream, HANDSHAKE_MESSAGE_LIMIT);
            let result = Exchange::new(machine(Role::Client)).drive_blocking(&stream, &mut reader);
            assert!(
                matches!(result, Err(Error::Auth(AuthError::LegacyRefused))),
                "{what}: {result:?}"
            );
            let expected = if hang_up {
                Vec::new()
            } else {
                framed(crate::proto::auth::UNVERIFIABLE_ANSWER)
            };
            assert_eq!(stream.written(), expected, "{what}");
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
        client.on_message(Instant::now(), &challenge);
        for m in client.take_output() {
            server.on_message(Instant::now(), &m);
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
