//! The authentication handshake as a sans-I/O state machine.
//!
//! Whole messages go in through [`Handshake::on_message`], messages to send
//! come out of [`Handshake::take_output`], and [`Handshake::status`] gives
//! the verdict. The machine knows nothing of frames: the transport reads
//! and writes them (refusing handshake messages past [`MAX_MESSAGE`] from
//! their header), so whatever the peer sent behind the handshake stays with
//! the transport, for the connection to read as ordinary messages.
//!
//! Order (CPython's `deliver_challenge` / `answer_challenge`):
//!
//! ```text
//! server                                    client
//!   #CHALLENGE#{sha256}nonce  ------------>
//!                             <------------  {sha256}mac, #CHALLENGE#{sha256}nonce'
//!   #WELCOME#, {sha256}mac'   ------------>
//!                             <------------  #WELCOME#
//! ```
//!
//! CPython's client sends its challenge only after reading `#WELCOME#`; this
//! client sends it together with its answer, which removes two one-way trips
//! and is invisible to a CPython server (it reads one message at a time).
//!
//! **Deadlines** live in the machine, as quinn-proto's timers do: a driver
//! asks [`Handshake::poll_timeout`] when the machine next needs time, and
//! calls [`Handshake::handle_timeout`] once that moment has passed. There
//! are three, each optional ([`Timeouts`]): one for the peer's first
//! message and one for the whole exchange, both counted from the start, and
//! one for the rest of the exchange, counted from the peer's first message.
//! A listener uses the first two, so that a silent client is told apart
//! from a slow one early; a client uses the first and the third, so that it
//! can wait for a listener that has not begun (a sequential CPython server
//! busy with another client) and still bound the exchange once it has.
//!
//! **Refusals the peer can read.** A challenge this side understands but
//! will not answer (legacy MD5 or a digest it does not allow, or any
//! challenge at all when its own key is refused) gets an answer that cannot
//! verify instead of a closed connection, and the machine stays for the
//! peer's verdict before it fails with its own reason: a CPython peer then
//! raises `AuthenticationError` ("digest received was wrong"), not
//! `EOFError`, and it is not cut off while it writes `#FAILURE#`. The
//! answer is fixed ([`UNVERIFIABLE_ANSWER`]); no MAC is computed over a
//! refused challenge. A refused answer gets `#FAILURE#`, as in CPython.
//!
//! **Reflection.** The 40 random bytes of a challenge end in a 16-byte tag,
//! an HMAC of the first 24 under the key and the sender's role. CPython
//! treats the bytes as opaque. A machine refuses to answer a challenge that
//! carries its own role's tag ([`AuthError::Reflected`]): a keyless listener
//! that forwards one client's challenge to another client, hoping it answers
//! as a server would, gets nothing from an mpconn client.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac, SimpleHmac};

use super::noise::{self, Session};
use crate::error::AuthError;
use crate::key::AuthKey;

/// Length of the random part of a challenge (CPython's `MESSAGE_LENGTH`).
pub const NONCE_LEN: usize = 40;
/// Of the nonce, the bytes that are random; the rest is the role tag.
pub const RANDOM_LEN: usize = 24;
/// The role tag at the end of an mpconn nonce.
const TAG_LEN: usize = NONCE_LEN - RANDOM_LEN;
/// What the role tag's HMAC covers before the role and the random bytes. It
/// cannot begin a challenge message (those begin with `{`), so no answer to
/// a challenge is ever a tag.
const TAG_CONTEXT: &[u8] = b"mpconn challenge role tag v1";
/// The largest handshake message either side reads.
pub const MAX_MESSAGE: usize = 256;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// A Python <= 3.11 server's challenge: 20 random bytes, no digest prefix.
const LEGACY_CHALLENGE_LEN: usize = 20;
/// A legacy client's answer: a bare HMAC-MD5.
const LEGACY_RESPONSE_LEN: usize = 16;
/// What a side that refuses a challenge sends in place of an answer:
/// `{sha256}` and 32 zero bytes. It names a digest every peer accepts, so
/// that a CPython peer of any version compares it and reports a wrong digest
/// (3.8 to 3.11 compare it whole with their MD5 and fail as well), and no key
/// gives a MAC of all zeros but by a 2^-256 chance. It holds nothing of the
/// key or the challenge, and an mpconn peer recognises it
/// ([`AuthError::ChallengeRefused`]).
pub const UNVERIFIABLE_ANSWER: &[u8] = &unverifiable_answer();

/// What a side sends in place of an answer when the peer's challenge shows
/// that it runs the other mode (plain or encrypted, read from the role
/// tag): [`UNVERIFIABLE_ANSWER`] with a last byte of 1. CPython reads a
/// wrong digest; an mpconn peer learns that the modes differ
/// ([`AuthError::EncryptionRequired`] or [`AuthError::NotEncrypted`]).
pub const MISMATCH_ANSWER: &[u8] = &mismatch_answer();

const fn mismatch_answer() -> [u8; 8 + 32] {
    let mut answer = unverifiable_answer();
    answer[8 + 31] = 1;
    answer
}

const fn unverifiable_answer() -> [u8; 8 + 32] {
    let mut answer = [0; 8 + 32];
    let name = b"{sha256}";
    let mut i = 0;
    while i < name.len() {
        answer[i] = name[i];
        i += 1;
    }
    answer
}

/// The HMAC digests of CPython's `_ALLOWED_DIGESTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Digest {
    /// HMAC-MD5: legacy only, refused unless explicitly allowed.
    Md5,
    /// HMAC-SHA256, the default.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA3-256.
    Sha3_256,
    /// HMAC-SHA3-384.
    Sha3_384,
}

impl Digest {
    pub(crate) const ALL: [Digest; 5] = [
        Digest::Md5,
        Digest::Sha256,
        Digest::Sha384,
        Digest::Sha3_256,
        Digest::Sha3_384,
    ];

    /// The name CPython writes between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha3_256 => "sha3_256",
            Digest::Sha3_384 => "sha3_384",
        }
    }

    fn from_name(name: &[u8]) -> Option<Digest> {
        Digest::ALL
            .into_iter()
            .find(|d| d.name().as_bytes() == name)
    }

    pub(crate) fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length; new_from_slice cannot fail.
            let mut mac = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
            Digest::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, message),
            Digest::Sha3_384 => run::<SimpleHmac<sha3::Sha3_384>>(key, message),
        }
    }

    /// Constant-time check of `tag` against the HMAC of `message`.
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            let mut mac = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            mac.update(message);
            mac.verify_slice(tag).is_ok()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message, tag),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, tag),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message, tag),
            Digest::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, message, tag),
            Digest::Sha3_384 => run::<SimpleHmac<sha3::Sha3_384>>(key, message, tag),
        }
    }
}

/// What a side accepts from its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPolicy {
    /// The digest named in the challenges this side sends.
    pub challenge_digest: Digest,
    /// Accept HMAC-MD5, bare (Python <= 3.11) or named.
    pub allow_legacy_md5: bool,
    /// Run the encrypted mode: tag our challenge for it, answer only
    /// challenges tagged for it, and follow the exchange with a Noise
    /// handshake (see `proto::noise`).
    pub encrypted: bool,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            challenge_digest: Digest::Sha256,
            allow_legacy_md5: false,
            encrypted: false,
        }
    }
}

/// The deadlines of one handshake. Each is optional (`None`: no such
/// deadline), and a duration past what an [`Instant`] can hold means none
/// as well; the nearest one that is set applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The peer's first message (the server's challenge, or the client's
    /// answer to ours), counted from the start.
    pub first_message: Option<Duration>,
    /// The whole exchange, counted from the start.
    pub total: Option<Duration>,
    /// The rest of the exchange, counted from the arrival of the peer's
    /// first message.
    pub after_first: Option<Duration>,
}

/// Which side of the handshake a machine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Delivers a challenge first, then answers one (the listener).
    Server,
    /// Answers a challenge first, then delivers one (the client).
    Client,
}

/// Where the handshake stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// More messages are needed, or output is waiting to be sent.
    InProgress,
    /// Both sides proved the key. Send what [`Handshake::take_output`] still
    /// gives (the client's final `#WELCOME#`) before using the connection.
    Done,
    /// The handshake failed. [`Handshake::take_output`] may still give a
    /// `#FAILURE#` verdict worth sending before closing.
    Failed(AuthError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The peer's `#CHALLENGE#...`.
    Challenge,
    /// The peer's answer to our challenge.
    Response,
    /// The peer's verdict on our answer.
    Verdict,
    /// The client's side, encrypted mode: the listener's Noise message.
    NoiseFirst,
    /// The listener's side, encrypted mode: the client's Noise reply.
    NoiseReply,
}

/// One handshake, for one role.
pub struct Handshake {
    role: Role,
    key: AuthKey,
    policy: AuthPolicy,
    /// The challenge message we deliver (`{digest}` + nonce), what the peer must MAC.
    ours: Vec<u8>,
    /// What we wait for next; `None` once finished.
    expect: Option<Expect>,
    status: Status,
    /// Messages to send, oldest first.
    output: Vec<Vec<u8>>,
    /// When the exchange must have finished; `None`: never.
    total_deadline: Option<Instant>,
    /// When the peer's first message must have arrived; cleared by it.
    first_deadline: Option<Instant>,
    /// The deadline the peer's first message starts, for the rest.
    after_first: Option<Duration>,
    /// When the rest of the exchange must have finished, once it started.
    rest_deadline: Option<Instant>,
    /// Whole messages taken from the peer.
    received: u32,
    /// Why this side will not complete the handshake, once it has decided
    /// so but plays on for the peer's sake (see the module docs): the error
    /// the machine ends with, whatever the peer does next.
    refusal: Option<AuthError>,
    /// The peer's challenge message (`{digest}` and nonce), for the Noise
    /// prologue; kept in the encrypted mode only.
    theirs: Vec<u8>,
    /// The listener's Noise handshake, between its first message and the
    /// client's reply.
    noise: Option<Box<snow::HandshakeState>>,
    /// The encrypted mode's keys, once the Noise handshake is done.
    session: Option<Session>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("expect", &self.expect)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake at `now`. The server's challenge is queued at
    /// once; the client waits for the server's. `random` becomes the first
    /// bytes of our nonce, and the role tag the rest.
    pub fn new(
        role: Role,
        key: AuthKey,
        policy: AuthPolicy,
        random: [u8; RANDOM_LEN],
        now: Instant,
        timeouts: Timeouts,
    ) -> Self {
        Self::with_refusal(role, key, policy, random, now, timeouts, None)
    }

    /// Starts a handshake that this side has already refused (its own key
    /// is refused, say): it holds no key, plays its part only so that the
    /// peer reads an authentication failure (`#FAILURE#` for the peer's
    /// answer, [`UNVERIFIABLE_ANSWER`] for its challenge), and ends with
    /// `refusal` however the peer goes on.
    pub fn refusing(
        role: Role,
        refusal: AuthError,
        policy: AuthPolicy,
        random: [u8; RANDOM_LEN],
        now: Instant,
        timeouts: Timeouts,
    ) -> Self {
        // The role tag is made with the empty key: it reveals nothing.
        let key = AuthKey::new(b"");
        Self::with_refusal(role, key, policy, random, now, timeouts, Some(refusal))
    }

    fn with_refusal(
        role: Role,
        key: AuthKey,
        policy: AuthPolicy,
        random: [u8; RANDOM_LEN],
        now: Instant,
        timeouts: Timeouts,
        refusal: Option<AuthError>,
    ) -> Self {
        let mut ours = Vec::with_capacity(16 + NONCE_LEN);
        ours.push(b'{');
        ours.extend_from_slice(policy.challenge_digest.name().as_bytes());
        ours.push(b'}');
        ours.extend_from_slice(&random);
        ours.extend_from_slice(&role_tag(&key, role, policy.encrypted, &random));
        let mut hs = Handshake {
            role,
            key,
            policy,
            ours,
            expect: None,
            status: Status::InProgress,
            output: Vec::with_capacity(2),
            total_deadline: timeouts.total.and_then(|d| now.checked_add(d)),
            first_deadline: timeouts.first_message.and_then(|d| now.checked_add(d)),
            after_first: timeouts.after_first,
            rest_deadline: None,
            received: 0,
            refusal,
            theirs: Vec::new(),
            noise: None,
            session: None,
        };
        match role {
            Role::Server => {
                hs.queue_challenge();
                hs.expect = Some(Expect::Response);
            }
            Role::Client => hs.expect = Some(Expect::Challenge),
        }
        hs
    }

    /// The challenge message this side delivers (`{digest}` and the
    /// nonce): what the peer must MAC.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn challenge_message(&self) -> &[u8] {
        &self.ours
    }

    /// Whether this machine runs the encrypted mode.
    #[cfg_attr(
        not(windows),
        allow(dead_code, reason = "only Windows has pipes to refuse")
    )]
    pub(crate) fn encrypted(&self) -> bool {
        self.policy.encrypted
    }

    /// The verdict so far.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// When the machine next needs [`handle_timeout`](Self::handle_timeout):
    /// the nearer of its deadlines while it runs, `None` once it has ended
    /// (or when no deadline is set).
    pub fn poll_timeout(&self) -> Option<Instant> {
        // An ended machine needs no time.
        self.expect?;
        [self.total_deadline, self.first_deadline, self.rest_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Tells the machine that time has reached `now`: past a deadline, a
    /// running handshake fails with [`AuthError::TimedOut`], or with
    /// [`AuthError::NoChallenge`] when a client's wait for the server's
    /// challenge ran out (or with its refusal, once it has refused).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let silent = self.first_deadline.is_some_and(|t| t <= now);
        let error = match self.role {
            Role::Client if silent => AuthError::NoChallenge,
            _ => AuthError::TimedOut,
        };
        self.transport_failed(error);
    }

    /// How many whole messages the peer has sent so far.
    #[cfg_attr(
        not(unix),
        allow(dead_code, reason = "only the Unix listener engine evicts")
    )]
    pub fn messages_received(&self) -> u32 {
        self.received
    }

    /// Whether the next message expected is the peer's verdict on our answer.
    pub fn awaiting_verdict(&self) -> bool {
        self.expect == Some(Expect::Verdict)
    }

    /// Takes the messages waiting to be sent, oldest first.
    pub fn take_output(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.output)
    }

    /// Whether the machine still expects a message from the peer.
    pub fn wants_message(&self) -> bool {
        self.expect.is_some()
    }

    /// Acts on one whole message from the peer, which arrived at `now`. A
    /// message the machine does not expect any more (after its verdict) is
    /// ignored: drivers stop reading once the handshake has ended.
    pub fn on_message(&mut self, now: Instant, message: &[u8]) {
        let Some(expect) = self.expect else {
            return;
        };
        if self.received == 0 {
            self.first_deadline = None;
            self.rest_deadline = self.after_first.and_then(|d| now.checked_add(d));
        }
        self.received = self.received.saturating_add(1);
        let result = if message.len() > MAX_MESSAGE {
            Err(AuthError::MessageTooLarge(message.len() as u64))
        } else {
            match expect {
                Expect::Challenge => self.on_challenge(message),
                Expect::Response => self.on_response(message),
                Expect::Verdict => self.on_verdict(message),
                Expect::NoiseFirst => self.on_noise_first(message),
                Expect::NoiseReply => self.on_noise_reply(message),
            }
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// The peer closed its end: a failure unless the handshake had finished.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn peer_closed(&mut self) {
        self.transport_failed(AuthError::PeerClosed);
    }

    /// The transport could not deliver the peer's next message (a frame
    /// past [`MAX_MESSAGE`], a malformed header, the end of the stream): a
    /// failure unless the handshake had finished. A machine that has
    /// refused the peer fails with its refusal, the clearer reason.
    pub fn transport_failed(&mut self, e: AuthError) {
        if self.expect.is_some() {
            let e = self.refusal.take().unwrap_or(e);
            self.fail(e);
        }
    }

    fn on_challenge(&mut self, message: &[u8]) -> Result<(), AuthError> {
        let Some(challenge) = message.strip_prefix(CHALLENGE) else {
            // Not a challenge at all: CPython too closes without a word, and
            // an answer could be taken for a message by a peer that runs no
            // handshake.
            return Err(AuthError::Malformed("expected #CHALLENGE#"));
        };
        if self.refusal.is_some() {
            self.refuse_challenge(None);
            return Ok(());
        }
        // Only an attacker reflects a challenge (CPython's are random): it
        // gets nothing, not even an unverifiable answer.
        if self.carries_our_role_tag(challenge) {
            return Err(AuthError::Reflected);
        }
        // The encrypted mode answers only a peer that tagged its challenge
        // for it: an answer is never made for a plain peer (whose
        // connection a relay could then take over in the clear).
        match (self.peer_mode(challenge), self.policy.encrypted) {
            (Some(theirs), ours) if theirs != ours => {
                self.queue(MISMATCH_ANSWER);
                self.refusal = Some(mismatch(ours));
                self.expect = Some(Expect::Verdict);
                return Ok(());
            }
            // The client does not know what it faces: CPython, or an
            // mpconn listener with another key.
            (None, true) if self.role == Role::Client => {
                self.refuse_challenge(Some(AuthError::NotEncrypted));
                return Ok(());
            }
            // The listener does: the client proved the key, and only
            // CPython sends an untagged challenge.
            (None, true) => {
                self.queue(MISMATCH_ANSWER);
                self.refusal = Some(AuthError::NotEncrypted);
                self.expect = Some(Expect::Verdict);
                return Ok(());
            }
            _ => {}
        }
        let answer = match self.answer(challenge) {
            Ok(answer) => answer,
            Err(e @ (AuthError::LegacyRefused | AuthError::DigestRefused(_))) => {
                self.refuse_challenge(Some(e));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.queue(&answer);
        if self.policy.encrypted {
            self.theirs = challenge.to_vec();
        }
        match self.role {
            // Pipelined: our challenge rides with our answer.
            Role::Client => self.queue_challenge(),
            // Pipelined: the Noise handshake begins behind our answer.
            Role::Server if self.policy.encrypted => {
                let prologue = noise::prologue(&self.ours, &self.theirs);
                let (state, first) = noise::initiate(&self.key, &prologue)?;
                self.noise = Some(Box::new(state));
                self.queue(&first);
            }
            Role::Server => {}
        }
        self.expect = Some(Expect::Verdict);
        Ok(())
    }

    /// The mode the peer's challenge is tagged for (`true`: encrypted),
    /// when it carries a tag of the peer's role made with our key.
    fn peer_mode(&self, challenge: &[u8]) -> Option<bool> {
        let start = challenge.len().checked_sub(NONCE_LEN)?;
        let (random, tag) = challenge[start..].split_at(RANDOM_LEN);
        let peer = match self.role {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        [false, true].into_iter().find(|&encrypted| {
            role_tag_mac(&self.key, peer, encrypted, random)
                .verify_truncated_left(tag)
                .is_ok()
        })
    }

    fn on_noise_first(&mut self, message: &[u8]) -> Result<(), AuthError> {
        let prologue = noise::prologue(&self.theirs, &self.ours);
        let (session, reply) = noise::respond(&self.key, &prologue, message)?;
        self.queue(&reply);
        self.session = Some(session);
        self.finish();
        Ok(())
    }

    fn on_noise_reply(&mut self, message: &[u8]) -> Result<(), AuthError> {
        let state = self.noise.take().ok_or(AuthError::KeyExchange)?;
        self.session = Some(noise::finish(*state, message)?);
        self.finish();
        Ok(())
    }

    /// The encrypted mode's keys, once the handshake is done (and only in
    /// that mode).
    pub(crate) fn take_session(&mut self) -> Option<Session> {
        self.session.take()
    }

    /// Whether `challenge` ends in a nonce that a machine of our own role
    /// made with our key: a challenge of one of our peers, reflected to us.
    fn carries_our_role_tag(&self, challenge: &[u8]) -> bool {
        let Some(start) = challenge.len().checked_sub(NONCE_LEN) else {
            return false;
        };
        let (random, tag) = challenge[start..].split_at(RANDOM_LEN);
        [false, true].into_iter().any(|encrypted| {
            role_tag_mac(&self.key, self.role, encrypted, random)
                .verify_truncated_left(tag)
                .is_ok()
        })
    }

    /// The MAC a peer holding our key would send for `challenge`.
    fn answer(&self, challenge: &[u8]) -> Result<Vec<u8>, AuthError> {
        if challenge.len() == LEGACY_CHALLENGE_LEN {
            if !self.policy.allow_legacy_md5 {
                return Err(AuthError::LegacyRefused);
            }
            return Ok(Digest::Md5.mac(self.key.as_bytes(), challenge));
        }
        if challenge.len() < LEGACY_CHALLENGE_LEN {
            return Err(AuthError::Malformed("challenge too short"));
        }
        let (digest, _) = self.named_digest(challenge)?;
        let mut answer = Vec::with_capacity(64);
        answer.push(b'{');
        answer.extend_from_slice(digest.name().as_bytes());
        answer.push(b'}');
        answer.extend_from_slice(&digest.mac(self.key.as_bytes(), challenge));
        Ok(answer)
    }

    /// Splits `{name}rest`, refusing names this side does not allow.
    fn named_digest<'m>(&self, message: &'m [u8]) -> Result<(Digest, &'m [u8]), AuthError> {
        let inner = message
            .strip_prefix(b"{")
            .ok_or(AuthError::Malformed("missing {digest} prefix"))?;
        let close = inner
            .iter()
            .take(MAX_DIGEST_NAME + 1)
            .position(|&b| b == b'}')
            .ok_or(AuthError::Malformed("missing {digest} prefix"))?;
        let name = &inner[..close];
        let digest = Digest::from_name(name)
            .ok_or_else(|| AuthError::DigestRefused(String::from_utf8_lossy(name).into_owned()))?;
        if digest == Digest::Md5 && !self.policy.allow_legacy_md5 {
            return Err(AuthError::LegacyRefused);
        }
        Ok((digest, &inner[close + 1..]))
    }

    /// Answers a challenge we refuse with [`UNVERIFIABLE_ANSWER`] and waits
    /// for the peer's verdict, to fail then with `refusal` (or the refusal
    /// decided at the start).
    fn refuse_challenge(&mut self, refusal: Option<AuthError>) {
        if let Some(e) = refusal {
            self.refusal = Some(e);
        }
        self.queue(UNVERIFIABLE_ANSWER);
        self.expect = Some(Expect::Verdict);
    }

    fn on_response(&mut self, response: &[u8]) -> Result<(), AuthError> {
        let verdict = match self.refusal.take() {
            Some(refusal) => Err(refusal),
            None => self.check_response(response),
        };
        self.queue(if verdict.is_ok() { WELCOME } else { FAILURE });
        verdict?;
        match self.role {
            Role::Server => self.expect = Some(Expect::Challenge),
            Role::Client if self.policy.encrypted => self.expect = Some(Expect::NoiseFirst),
            Role::Client => self.finish(),
        }
        Ok(())
    }

    fn check_response(&self, response: &[u8]) -> Result<(), AuthError> {
        if response == UNVERIFIABLE_ANSWER {
            return Err(AuthError::ChallengeRefused);
        }
        if response == MISMATCH_ANSWER {
            return Err(mismatch(self.policy.encrypted));
        }
        let key = self.key.as_bytes();
        if response.len() == LEGACY_RESPONSE_LEN {
            if !self.policy.allow_legacy_md5 {
                return Err(AuthError::LegacyRefused);
            }
            return match Digest::Md5.verify(key, &self.ours, response) {
                true => Ok(()),
                false => Err(AuthError::WrongDigest),
            };
        }
        let (digest, tag) = self.named_digest(response)?;
        match digest.verify(key, &self.ours, tag) {
            true => Ok(()),
            false => Err(AuthError::WrongDigest),
        }
    }

    fn on_verdict(&mut self, verdict: &[u8]) -> Result<(), AuthError> {
        // Whatever the peer thinks of an answer we refused to give.
        if let Some(refusal) = self.refusal.take() {
            return Err(refusal);
        }
        if verdict != WELCOME {
            return Err(AuthError::Rejected);
        }
        match self.role {
            Role::Server if self.policy.encrypted => self.expect = Some(Expect::NoiseReply),
            Role::Server => self.finish(),
            // Our challenge already went out with our answer.
            Role::Client => self.expect = Some(Expect::Response),
        }
        Ok(())
    }

    fn queue_challenge(&mut self) {
        let mut message = Vec::with_capacity(CHALLENGE.len() + self.ours.len());
        message.extend_from_slice(CHALLENGE);
        message.extend_from_slice(&self.ours);
        self.queue(&message);
    }

    fn queue(&mut self, payload: &[u8]) {
        self.output.push(payload.to_vec());
    }

    fn finish(&mut self) {
        self.expect = None;
        self.status = Status::Done;
    }

    fn fail(&mut self, e: AuthError) {
        self.expect = None;
        self.status = Status::Failed(e);
    }
}

/// The error of a side whose mode (`encrypted`) the peer does not share.
fn mismatch(encrypted: bool) -> AuthError {
    match encrypted {
        true => AuthError::NotEncrypted,
        false => AuthError::EncryptionRequired,
    }
}

/// The HMAC behind a role tag, before truncation: HMAC-SHA256 under the key
/// of the context, the role (and `+` for the encrypted mode) and the random
/// bytes. The random part has a fixed length, so the two modes' inputs
/// never meet.
fn role_tag_mac(key: &AuthKey, role: Role, encrypted: bool, random: &[u8]) -> Hmac<sha2::Sha256> {
    // HMAC takes keys of any length; new_from_slice cannot fail.
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!());
    mac.update(TAG_CONTEXT);
    mac.update(match role {
        Role::Server => b"S",
        Role::Client => b"C",
    });
    if encrypted {
        mac.update(b"+");
    }
    mac.update(random);
    mac
}

/// The tag that ends a nonce made by a machine of `role`.
fn role_tag(key: &AuthKey, role: Role, encrypted: bool, random: &[u8]) -> [u8; TAG_LEN] {
    let full = role_tag_mac(key, role, encrypted, random)
        .finalize()
        .into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

/// CPython's `_MAX_DIGEST_LEN`: the longest name it looks for between braces.
const MAX_DIGEST_NAME: usize = 20;

#[cfg(test)]
mod tests;
