//! Blocking drivers of the handshake machine, shared by `Client` and by the
//! upgrade methods of `Connection<Unverified>`.

use std::time::{Duration, Instant};

use crate::connection::{Authenticated, Connection, Unverified};
use crate::error::{AuthError, Error, Result};
use crate::key::{AuthKey, fill_random};
use crate::proto::auth::{AuthPolicy, Handshake, MAX_MESSAGE, NONCE_LEN, Role, Status};
use crate::sys::Interest;
use crate::transport::{ByteStream, retry, write_all};

/// The default total deadline for one handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The handshake options of [`ListenerOptions`](crate::ListenerOptions) and
/// [`ClientOptions`](crate::ClientOptions): one definition for both builders,
/// which keep theirs in a `handshake: HandshakeOptions` field.
macro_rules! handshake_builder_methods {
    () => {
        /// Total time one handshake may take (default 5 s), from the
        /// connection to the verdict. A peer that never starts one, a keyless
        /// listener for example, fails within it.
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
    pub timeout: Duration,
    pub policy: AuthPolicy,
    pub allow_short_key: bool,
}

impl Default for HandshakeOptions {
    fn default() -> Self {
        HandshakeOptions {
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            policy: AuthPolicy::default(),
            allow_short_key: false,
        }
    }
}

impl HandshakeOptions {
    /// Checks the key and starts a machine for `role` with a fresh nonce.
    pub(crate) fn start(&self, role: Role, key: &AuthKey) -> Result<Handshake> {
        key.check_len(self.allow_short_key)?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        Ok(Handshake::new(role, key.clone(), self.policy, nonce))
    }

    pub(crate) fn run(
        &self,
        mut conn: Connection<Unverified>,
        role: Role,
        key: &AuthKey,
    ) -> Result<Connection<Authenticated>> {
        let mut hs = self.start(role, key)?;
        let deadline = Instant::now().checked_add(self.timeout);
        // Handshake messages are small: a peer that sends a large one must
        // not make a named pipe buffer it.
        let max = conn.receiver()?.max_message();
        conn.endpoint().stream().set_read_limit(READ_AHEAD as u64);
        drive_blocking(&mut conn, &mut hs, deadline)?;
        conn.endpoint().stream().set_read_limit(max);
        Ok(conn.into_authenticated())
    }
}

/// How much a handshake driver reads at once: the largest exchange (the
/// verdict and the peer's answer, or an answer and a challenge) fits, so a
/// message pair costs one read, not four.
pub(crate) const READ_AHEAD: usize = 2 * (4 + MAX_MESSAGE);

/// Runs `hs` to its end over a blocking connection. It reads ahead; whatever
/// it read past the handshake's last message goes back to the connection,
/// to be received as ordinary messages.
fn drive_blocking(
    conn: &mut Connection<Unverified>,
    hs: &mut Handshake,
    deadline: Option<Instant>,
) -> Result<()> {
    let mut buf = [0u8; READ_AHEAD];
    loop {
        if !hs.output().is_empty() {
            let sent = write_all(conn.endpoint(), hs.output(), deadline);
            let n = hs.output().len();
            hs.consume_output(n);
            if let Err(e) = sent {
                // A verdict the peer cannot read any more is no loss.
                if !matches!(hs.status(), Status::Failed(_)) {
                    return Err(handshake_io(e));
                }
            }
        }
        match hs.status() {
            Status::Done => return Ok(()),
            Status::Failed(e) => return Err(Error::Auth(e.clone())),
            Status::InProgress => {}
        }
        let rx = conn.receiver()?;
        let mut n = rx.reader_mut().take_buffered(&mut buf);
        if n == 0 {
            // Our challenge rides behind our answer, so a CPython server
            // writes #WELCOME# and its answer back to back; without an
            // immediate ACK from us, Nagle's algorithm holds its second write
            // for our delayed ACK (40 ms). Ask for quick ACKs (TCP, Linux).
            if hs.awaiting_verdict() {
                rx.endpoint().stream().quick_ack();
            }
            n = retry(rx.endpoint(), Interest::Readable, deadline, |s| {
                s.read(&mut buf)
            })
            .map_err(handshake_io)?;
        }
        if n == 0 {
            hs.peer_closed();
            continue;
        }
        let used = hs.feed(&buf[..n]);
        rx.reader_mut().unread(&buf[used..n]);
    }
}

/// Errors of the transport during a handshake, in the handshake's terms.
fn handshake_io(e: Error) -> Error {
    match e {
        Error::Timeout => Error::Auth(AuthError::TimedOut),
        Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Error::Auth(AuthError::PeerClosed)
        }
        other => other,
    }
}
