//! The peer's credentials, on a connection and on each of its halves.

use super::{Connection, RecvHalf, SendHalf, Trust};
use crate::credentials::PeerCredentials;
use crate::error::Result;

impl<T: Trust> Connection<T> {
    /// Who is at the other end, as the operating system reports it: pid,
    /// uid and gid of a Unix-socket peer (what each platform has, see
    /// [`PeerCredentials`]), the process id of a named-pipe peer. A
    /// [`pipe()`](crate::pipe) pair's peer is this process.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) of kind
    /// [`Unsupported`](std::io::ErrorKind::Unsupported) for a TCP
    /// connection, which has no credentials, and for a descriptor that is
    /// no socket; [`Error::Io`](crate::Error::Io) when the system cannot
    /// tell (a socket that is not connected).
    pub fn peer_credentials(&self) -> Result<PeerCredentials> {
        PeerCredentials::of(self.endpoint().stream())
    }
}

impl<T: Trust> SendHalf<T> {
    /// The peer's credentials: [`Connection::peer_credentials`].
    ///
    /// # Errors
    /// As [`Connection::peer_credentials`].
    pub fn peer_credentials(&self) -> Result<PeerCredentials> {
        PeerCredentials::of(self.endpoint().stream())
    }
}

impl<T: Trust> RecvHalf<T> {
    /// The peer's credentials: [`Connection::peer_credentials`].
    ///
    /// # Errors
    /// As [`Connection::peer_credentials`].
    pub fn peer_credentials(&self) -> Result<PeerCredentials> {
        PeerCredentials::of(self.receiver_ref().endpoint().stream())
    }
}
