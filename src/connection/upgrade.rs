//! The upgrade of an unverified connection by handshake: the only way,
//! besides `pipe()` and the `dangerous_` call, to a `Connection<Authenticated>`.

use std::time::Instant;

use super::{Authenticated, Connection, Unverified};
use crate::error::Result;
use crate::handshake::{Exchange, HandshakeOptions};
use crate::key::AuthKey;
use crate::proto::auth::Role;

impl Connection<Unverified> {
    /// Runs the handshake as the listener's side (deliver a challenge, then
    /// answer one) with `options`: CPython's `deliver_challenge` then
    /// `answer_challenge`, so the peer may be a Python process running
    /// `answer_challenge` then `deliver_challenge` on its end (a
    /// `multiprocessing.Pipe()` end or a socket it handed over).
    ///
    /// ```no_run
    /// # fn f(conn: mpconn::Connection<mpconn::Unverified>) -> mpconn::Result<()> {
    /// // A Python 3.8 to 3.11 peer answers in HMAC-MD5 only.
    /// let options = mpconn::HandshakeOptions::new().allow_legacy_md5(true);
    /// let conn = conn.authenticate_as_server_with(b"a key of sixteen bytes", &options)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Auth`](crate::Error::Auth) when the peer does not hold the
    /// key, misbehaves, uses a digest `options` refuse, or the handshake does
    /// not finish within `options`' deadlines, and
    /// [`AuthError::KeyTooShort`](crate::AuthError::KeyTooShort) for a key
    /// `options` refuse. A refusal of this side's own making (a digest, a
    /// key) is still played out far enough for the peer to be told: it gets
    /// `#FAILURE#` for its answer, or an answer that cannot verify for its
    /// challenge, so that a CPython peer raises `AuthenticationError`, not
    /// `EOFError`.
    pub fn authenticate_as_server_with(
        self,
        authkey: &[u8],
        options: &HandshakeOptions,
    ) -> Result<Connection<Authenticated>> {
        self.authenticate(options, Role::Server, &AuthKey::new(authkey))
    }

    /// Runs the handshake as the client's side (answer a challenge, then
    /// deliver one) with `options`: CPython's `answer_challenge` then
    /// `deliver_challenge`. The wait for the peer's challenge is bounded by
    /// [`HandshakeOptions::challenge_timeout`] only (default: none, as in
    /// CPython), and the exchange after it by
    /// [`HandshakeOptions::handshake_timeout`].
    ///
    /// # Errors
    /// As [`authenticate_as_server_with`](Self::authenticate_as_server_with),
    /// and [`AuthError::NoChallenge`](crate::AuthError::NoChallenge) when
    /// the challenge timeout passes.
    pub fn authenticate_as_client_with(
        self,
        authkey: &[u8],
        options: &HandshakeOptions,
    ) -> Result<Connection<Authenticated>> {
        self.authenticate(options, Role::Client, &AuthKey::new(authkey))
    }

    /// Runs a whole handshake in `role` over this blocking connection,
    /// reading through the connection's own reader: what it had already
    /// read goes to the handshake first, and what the peer sent behind the
    /// handshake stays, to be received as messages.
    pub(crate) fn authenticate(
        mut self,
        opts: &HandshakeOptions,
        role: Role,
        key: &AuthKey,
    ) -> Result<Connection<Authenticated>> {
        let mut exchange = Exchange::new(opts.start(role, key, Instant::now())?);
        let proof = self.receiver().handshake(&mut exchange)?;
        Ok(self.prove(proof))
    }
}
