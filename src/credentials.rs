//! Who is at the other end of a connection, as the operating system tells
//! it, and the listener's policy on it.

use std::fmt;

use crate::address::{Address, Family};
use crate::error::{AuthError, Error, Result};
use crate::sys;

/// The peer of a connection as the operating system reports it: the
/// process that connected (or made the pair), as it was at that moment.
///
/// | transport | pid | uid, gid | [`is_same_user`](Self::is_same_user) |
/// | --- | --- | --- | --- |
/// | Unix socket, Linux and Android (`SO_PEERCRED`) | yes | yes | uid = our effective uid |
/// | Unix socket, macOS (`getpeereid`, `LOCAL_PEERPID`) | yes | yes | as above |
/// | Unix socket, BSDs (`getpeereid`) | no | yes | as above |
/// | Windows named pipe | yes | no | the peer process's token user is ours |
/// | TCP | no credentials: [`Connection::peer_credentials`](crate::Connection::peer_credentials) fails | | |
///
/// These are facts about the process that *made* the connection. A
/// descriptor or handle passed on or inherited later is used by another
/// process than the one named here, and a pid may name a new process once
/// the peer has exited. SECURITY.md says what a check on them guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    pid: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    same_user: Option<bool>,
}

impl PeerCredentials {
    /// The credentials of the peer of `stream`.
    pub(crate) fn of(stream: &sys::Stream) -> Result<PeerCredentials> {
        let ids = sys::peer_credentials(stream)?;
        Ok(PeerCredentials {
            pid: ids.pid,
            uid: ids.uid,
            gid: ids.gid,
            same_user: ids.same_user,
        })
    }

    /// The peer's process id, where the platform reports it (Linux,
    /// Android, macOS, Windows); `None` on other BSDs, and on Linux for a
    /// peer in a pid namespace this process cannot see into.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The peer's effective user id (Unix); `None` on Windows.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// The peer's effective group id (Unix); `None` on Windows.
    pub fn gid(&self) -> Option<u32> {
        self.gid
    }

    /// Whether the peer runs as this process's user: on Unix its uid is
    /// our effective uid; on Windows its process token's user SID is ours.
    /// `None` when that could not be found out (on Windows, a peer process
    /// that has exited or that we may not open).
    pub fn is_same_user(&self) -> Option<bool> {
        self.same_user
    }
}

impl fmt::Display for PeerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(pid) = self.pid {
            parts.push(format!("pid {pid}"));
        }
        if let Some(uid) = self.uid {
            parts.push(format!("uid {uid}"));
        }
        if let Some(gid) = self.gid {
            parts.push(format!("gid {gid}"));
        }
        parts.push(
            match self.same_user {
                Some(true) => "our user",
                Some(false) => "another user",
                None => "user unknown",
            }
            .to_string(),
        );
        f.write_str(&parts.join(", "))
    }
}

/// Which peers a [`Listener`](crate::Listener) admits, by the user they
/// run as: set with
/// [`ListenerOptions::peer_user`](crate::ListenerOptions::peer_user).
///
/// The check runs right after the connection is accepted, before any
/// handshake work: a refused peer is closed without receiving a challenge,
/// reported to the failure hook as [`AuthError::PeerRefused`], and counted
/// in [`ListenerStats`](crate::ListenerStats) (`failed_handshakes` and
/// `refused_peers`). A peer whose credentials cannot be read is refused
/// too. It applies to Unix-socket listeners and named-pipe listeners; TCP
/// has no credentials, so binding a TCP listener with anything but
/// [`Any`](PeerUser::Any) fails.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PeerUser {
    /// Anyone who can reach the address (the default, as in CPython).
    #[default]
    Any,
    /// Only peers running as this process's user
    /// ([`PeerCredentials::is_same_user`]).
    Same,
    /// Only peers whose uid is one of these (Unix only; binding a named
    /// pipe with it fails, Windows having no uids).
    Uids(Vec<u32>),
}

impl PeerUser {
    /// Whether `creds` may pass.
    fn admits(&self, creds: &PeerCredentials) -> bool {
        match self {
            PeerUser::Any => true,
            PeerUser::Same => creds.same_user == Some(true),
            PeerUser::Uids(uids) => creds.uid.is_some_and(|uid| uids.contains(&uid)),
        }
    }

    /// Checks the peer of a freshly accepted `stream`: `Ok` when it may
    /// go on to the handshake; [`AuthError::PeerRefused`] for a peer of
    /// another user, or the error that kept its credentials from being read.
    pub(crate) fn check(&self, stream: &sys::Stream) -> Result<()> {
        if *self == PeerUser::Any {
            return Ok(());
        }
        let creds = PeerCredentials::of(stream)?;
        match self.admits(&creds) {
            true => Ok(()),
            false => Err(Error::Auth(AuthError::PeerRefused(creds))),
        }
    }

    /// Whether this policy can be enforced on a listener at `address`: a
    /// clear error, at bind time, where it cannot.
    pub(crate) fn check_bind(&self, address: &Address) -> Result<()> {
        let unsupported = |why: &str| {
            Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("peer_user({self:?}) cannot apply: {why}"),
            )))
        };
        match self {
            PeerUser::Any => Ok(()),
            _ if address.family() == Family::Tcp => {
                unsupported("TCP peers have no credentials; use a Unix socket or a named pipe")
            }
            PeerUser::Uids(_) if !sys::PEER_UIDS => {
                unsupported("this platform has no numeric user ids; use PeerUser::Same")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: Option<u32>, same_user: Option<bool>) -> PeerCredentials {
        PeerCredentials {
            pid: Some(42),
            uid,
            gid: uid,
            same_user,
        }
    }

    #[test]
    fn each_policy_admits_only_its_peers() {
        let ours = creds(Some(1000), Some(true));
        let other = creds(Some(65534), Some(false));
        let unknown = creds(None, None);
        assert!(PeerUser::Any.admits(&other) && PeerUser::Any.admits(&unknown));
        assert!(PeerUser::Same.admits(&ours));
        assert!(!PeerUser::Same.admits(&other));
        assert!(!PeerUser::Same.admits(&unknown), "unknown fails closed");
        let listed = PeerUser::Uids(vec![65534]);
        assert!(listed.admits(&other));
        assert!(!listed.admits(&ours));
        assert!(!listed.admits(&unknown));
    }

    #[test]
    fn a_tcp_listener_cannot_check_users() {
        let tcp = Address::Tcp("127.0.0.1:0".parse().unwrap());
        assert!(PeerUser::Any.check_bind(&tcp).is_ok());
        for policy in [PeerUser::Same, PeerUser::Uids(vec![0])] {
            let Err(Error::Io(e)) = policy.check_bind(&tcp) else {
                panic!("{policy:?} bound on TCP");
            };
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
            assert!(e.to_string().contains("TCP"), "{e}");
        }
    }

    #[test]
    fn credentials_display_what_is_known() {
        assert_eq!(
            creds(Some(65534), Some(false)).to_string(),
            "pid 42, uid 65534, gid 65534, another user"
        );
        assert_eq!(
            PeerCredentials {
                pid: Some(7),
                uid: None,
                gid: None,
                same_user: None
            }
            .to_string(),
            "pid 7, user unknown"
        );
    }
}
