//! The encrypted mode's cryptography, sans I/O: the Noise handshake that
//! follows the CPython one, and the sealing and opening of records.
//!
//! **Handshake.** `Noise_NNpsk0_25519_AESGCM_BLAKE2s` (the `snow` crate,
//! with ring's AES-256-GCM; SECURITY.md says why not ChaChaPoly): both sides make fresh X25519 keys (forward secrecy), and a
//! 32-byte pre-shared key derived from the connection's key
//! ([`psk`]) is mixed in before the first message, so only a key holder
//! completes it. The prologue holds both CPython challenges as each side
//! sent or received them ([`prologue`]): a handshake whose challenges were
//! relayed from another connection, or altered, ends in a failed
//! decryption. The listener is the initiator: its first Noise message
//! rides behind its answer to the client's challenge, and the client's
//! reply behind its `#WELCOME#`, so the encrypted mode costs no round trip.
//!
//! **Records.** Each message becomes one or more Noise transport messages
//! ("records", at most 65,535 bytes with the 16-byte tag), each framed like
//! any CPython message (a 4-byte length). The first record of a message
//! begins with the message's length (8 bytes, little-endian), so a reader
//! knows at once what it is owed. Nonces are counters on both sides: a
//! record dropped, replayed, reordered or altered fails to open, and the
//! connection is broken for good. Both sides rekey (Noise's `Rekey`) after
//! every [`REKEY_EVERY`] records in each direction, at the same record, so
//! no signal is needed; nonces are never reset, so none repeats under a key.

use std::sync::{Arc, RwLock};

use hmac::{Hmac, KeyInit, Mac};
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use snow::{Builder, HandshakeState, StatelessTransportState};

use crate::error::{AuthError, Error, ProtocolError, Result};
use crate::key::AuthKey;

/// The Noise protocol name: what both sides run.
pub(crate) const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
/// What the pre-shared key's HMAC covers.
const PSK_CONTEXT: &[u8] = b"mpconn encrypted mode psk v1";
/// The start of every prologue.
const PROLOGUE_CONTEXT: &[u8] = b"mpconn encrypted mode v1";
/// The largest Noise message, tag included.
pub(crate) const MAX_RECORD: usize = 65_535;
/// The AEAD tag at the end of every record.
pub(crate) const TAG_LEN: usize = 16;
/// The most plaintext one record carries.
pub(crate) const MAX_RECORD_PLAIN: usize = MAX_RECORD - TAG_LEN;
/// The message length at the start of a message's first record.
const LEN_PREFIX: usize = 8;
/// Records in one direction between two rekeys.
pub(crate) const REKEY_EVERY: u64 = 1 << 16;
/// A Noise handshake message: an ephemeral key, the tag of an empty payload.
const HANDSHAKE_MESSAGE: usize = 32 + TAG_LEN;

/// The pre-shared key: HMAC-SHA256 of a fixed context under the
/// connection's key, so that it is never the key itself.
fn psk(key: &AuthKey) -> [u8; 32] {
    // HMAC takes keys of any length; new_from_slice cannot fail.
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!());
    mac.update(PSK_CONTEXT);
    mac.finalize().into_bytes().into()
}

/// The prologue both sides must agree on: a context, then the listener's
/// and the client's challenge messages, each behind its length.
pub(crate) fn prologue(server_challenge: &[u8], client_challenge: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_CONTEXT.len() + 4 + 2 * 64);
    p.extend_from_slice(PROLOGUE_CONTEXT);
    for part in [server_challenge, client_challenge] {
        // Challenges are handshake messages: at most 256 bytes.
        p.extend_from_slice(&(part.len() as u16).to_be_bytes());
        p.extend_from_slice(part);
    }
    p
}

fn builder_failed(_: snow::Error) -> AuthError {
    AuthError::KeyExchange
}

fn start(key: &AuthKey, prologue: &[u8], initiator: bool) -> Result<HandshakeState, AuthError> {
    // The name is a constant this module spells right: parsing cannot fail.
    let params = PATTERN.parse().unwrap_or_else(|_| unreachable!());
    let psk = psk(key);
    // ring first (AES-GCM), the default resolver for what ring
    // does not have (X25519, BLAKE2s).
    let resolver = Box::new(FallbackResolver::new(
        Box::new(RingResolver),
        Box::new(DefaultResolver),
    ));
    let builder = Builder::with_resolver(params, resolver)
        .psk(0, &psk)
        .and_then(|b| b.prologue(prologue))
        .map_err(builder_failed)?;
    let state = match initiator {
        true => builder.build_initiator(),
        false => builder.build_responder(),
    };
    state.map_err(|e| match e {
        snow::Error::Rng => AuthError::Random,
        e => builder_failed(e),
    })
}

/// The listener's side, which begins: its state and its first message.
pub(crate) fn initiate(
    key: &AuthKey,
    prologue: &[u8],
) -> Result<(HandshakeState, Vec<u8>), AuthError> {
    let mut state = start(key, prologue, true)?;
    let mut message = vec![0; HANDSHAKE_MESSAGE];
    let n = state
        .write_message(&[], &mut message)
        .map_err(builder_failed)?;
    message.truncate(n);
    Ok((state, message))
}

/// Reads a handshake message of the peer's, whose payload must be empty.
fn read_handshake(state: &mut HandshakeState, message: &[u8]) -> Result<(), AuthError> {
    let mut payload = [0u8; HANDSHAKE_MESSAGE];
    match state.read_message(message, &mut payload) {
        Ok(0) => Ok(()),
        _ => Err(AuthError::KeyExchange),
    }
}

/// The listener's side, once the client's reply came.
pub(crate) fn finish(mut state: HandshakeState, reply: &[u8]) -> Result<Session, AuthError> {
    read_handshake(&mut state, reply)?;
    Session::new(state)
}

/// The client's side: reads the listener's first message, and returns the
/// session and the reply to send.
pub(crate) fn respond(
    key: &AuthKey,
    prologue: &[u8],
    first: &[u8],
) -> Result<(Session, Vec<u8>), AuthError> {
    let mut state = start(key, prologue, false)?;
    read_handshake(&mut state, first)?;
    let mut reply = vec![0; HANDSHAKE_MESSAGE];
    let n = state
        .write_message(&[], &mut reply)
        .map_err(builder_failed)?;
    reply.truncate(n);
    Ok((Session::new(state)?, reply))
}

/// The keys of one encrypted connection, shared by its sending and
/// receiving sides. Sealing and opening only read them; a rekey (once in
/// [`REKEY_EVERY`] records) writes.
pub(crate) struct Session {
    keys: RwLock<StatelessTransportState>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session { .. }")
    }
}

impl Session {
    fn new(state: HandshakeState) -> Result<Self, AuthError> {
        let keys = state
            .into_stateless_transport_mode()
            .map_err(builder_failed)?;
        Ok(Session {
            keys: RwLock::new(keys),
        })
    }

    /// The two sides of the session: one for the connection's sender, one
    /// for its receiver.
    pub(crate) fn split(self) -> (Sealer, Opener) {
        let session = Arc::new(self);
        (
            Sealer {
                session: session.clone(),
                nonce: 0,
                first: Vec::new(),
            },
            Opener {
                session,
                nonce: 0,
                first: Vec::new(),
            },
        )
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, StatelessTransportState> {
        // A panic while holding the lock cannot leave the keys half-written
        // (snow replaces a key whole), so a poisoned lock is still good.
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn rekey(&self, outgoing: bool) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        match outgoing {
            true => keys.rekey_outgoing(),
            false => keys.rekey_incoming(),
        }
    }
}

/// How many records a message of `len` bytes takes.
fn records_for(len: usize) -> usize {
    (len + LEN_PREFIX).div_ceil(MAX_RECORD_PLAIN).max(1)
}

/// The sending side of a session.
#[derive(Debug)]
pub(crate) struct Sealer {
    session: Arc<Session>,
    nonce: u64,
    /// The first record's plaintext: the length, then the first bytes.
    first: Vec<u8>,
}

impl Sealer {
    /// The bytes on the wire for a message of `len` bytes.
    pub(crate) fn sealed_len(len: usize) -> usize {
        len + LEN_PREFIX + records_for(len) * (4 + TAG_LEN)
    }

    /// Appends the records of `message`, each behind its 4-byte frame
    /// header, to `wire`.
    ///
    /// # Errors
    /// [`ProtocolError::NoncesExhausted`] after 2^64 - 1 records (never in
    /// practice); the session cannot send any more.
    pub(crate) fn seal(&mut self, message: &[u8], wire: &mut Vec<u8>) -> Result<()> {
        wire.reserve(Self::sealed_len(message.len()));
        self.seal_in_parts(message, wire, |_| Ok(()))
    }

    /// Seals `message` as [`seal`](Self::seal) does, handing `wire` to
    /// `part` after each record, so that a large message can leave record
    /// by record while the rest is sealed.
    pub(crate) fn seal_in_parts(
        &mut self,
        message: &[u8],
        wire: &mut Vec<u8>,
        mut part: impl FnMut(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let head = message.len().min(MAX_RECORD_PLAIN - LEN_PREFIX);
        self.first.clear();
        self.first
            .extend_from_slice(&(message.len() as u64).to_le_bytes());
        self.first.extend_from_slice(&message[..head]);
        let first = std::mem::take(&mut self.first);
        let sealed = self
            .seal_record(&first, wire)
            .and_then(|()| part(wire))
            .and_then(|()| {
                message[head..]
                    .chunks(MAX_RECORD_PLAIN)
                    .try_for_each(|chunk| {
                        self.seal_record(chunk, wire)?;
                        part(wire)
                    })
            });
        self.first = first;
        if self.first.capacity() > 4096 {
            self.first = Vec::new();
        }
        sealed
    }

    fn seal_record(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<()> {
        if self.nonce == u64::MAX {
            return Err(Error::Protocol(ProtocolError::NoncesExhausted));
        }
        let len = plain.len() + TAG_LEN;
        wire.extend_from_slice(&(len as u32).to_be_bytes());
        let at = wire.len();
        wire.resize(at + len, 0);
        let written = self
            .session
            .keys()
            .write_message(self.nonce, plain, &mut wire[at..]);
        if written.is_err() {
            // Sizes are checked above: snow has nothing else to refuse.
            wire.truncate(at - 4);
            return Err(Error::Protocol(ProtocolError::NoncesExhausted));
        }
        self.nonce += 1;
        if self.nonce.is_multiple_of(REKEY_EVERY) {
            self.session.rekey(true);
        }
        Ok(())
    }
}

/// The receiving side of a session: opens records in order.
#[derive(Debug)]
pub(crate) struct Opener {
    session: Arc<Session>,
    nonce: u64,
    /// Scratch for a message's first record.
    first: Vec<u8>,
}

/// What a record opened into.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// A message's first record: the message's length (its bytes in the
    /// record were appended to the message).
    First(u64),
    /// A later record, appended to the message.
    More,
}

impl Opener {
    /// Opens the record `sealed` and appends its bytes to `message`; a
    /// message's first record (`first`) says how long the message is.
    /// `limit` is the longest message the reader takes: a first record
    /// announcing more is refused before anything is appended.
    ///
    /// # Errors
    /// [`ProtocolError::Tampered`] when the record does not open: it was
    /// altered, or is not the next one the peer sealed (a record dropped,
    /// replayed, reordered or injected).
    pub(crate) fn open(
        &mut self,
        sealed: &[u8],
        first: bool,
        limit: u64,
        message: &mut Vec<u8>,
    ) -> Result<Opened> {
        let Some(plain_len) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(Error::Protocol(ProtocolError::Tampered));
        };
        if self.nonce == u64::MAX {
            return Err(Error::Protocol(ProtocolError::NoncesExhausted));
        }
        let opened = if first {
            self.first.clear();
            self.first.resize(plain_len, 0);
            let mut scratch = std::mem::take(&mut self.first);
            let done = self.decrypt_into(sealed, &mut scratch);
            self.first = scratch;
            done?;
            let Some((len, bytes)) = self.first.split_first_chunk::<LEN_PREFIX>() else {
                return Err(Error::Protocol(ProtocolError::BadRecord));
            };
            let len = u64::from_le_bytes(*len);
            if len > limit {
                return Err(Error::MessageTooLarge { len, max: limit });
            }
            if bytes.len() as u64 > len {
                return Err(Error::Protocol(ProtocolError::BadRecord));
            }
            message.extend_from_slice(bytes);
            if self.first.capacity() > 4096 {
                self.first = Vec::new();
            }
            Opened::First(len)
        } else {
            let at = message.len();
            message.resize(at + plain_len, 0);
            let done = self.decrypt_into(sealed, &mut message[at..]);
            if done.is_err() {
                message.truncate(at);
            }
            done?;
            Opened::More
        };
        Ok(opened)
    }

    fn decrypt_into(&mut self, sealed: &[u8], out: &mut [u8]) -> Result<()> {
        self.session
            .keys()
            .read_message(self.nonce, sealed, out)
            .map_err(|_| Error::Protocol(ProtocolError::Tampered))?;
        self.nonce += 1;
        if self.nonce.is_multiple_of(REKEY_EVERY) {
            self.session.rekey(false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
