//! Socket set-up for listeners and clients: binding with safe defaults,
//! connecting with a timeout, naming peers. Portable through socket2; the
//! Unix-socket file handling is the only platform-specific part.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::address::Address;
use crate::error::{AddressError, Error, Result};

/// Options that shape a bound socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindOptions {
    pub backlog: i32,
    /// Unix-socket files only.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub reclaim_stale_socket: bool,
}

/// A listening socket and what it takes to clean up after it.
#[derive(Debug)]
pub(crate) struct Bound {
    pub socket: Socket,
    pub address: Address,
    pub cleanup: Option<unix_path::SocketFile>,
}

/// Binds and listens on `address`.
pub(crate) fn bind(address: &Address, opts: BindOptions) -> Result<Bound> {
    match address {
        Address::Tcp(_) | Address::TcpHost { .. } => {
            let mut last = None;
            for sa in address.socket_addrs()? {
                match bind_tcp(sa, opts.backlog) {
                    Ok(socket) => {
                        let local = socket.local_addr()?.as_socket().unwrap_or(sa);
                        return Ok(Bound {
                            socket,
                            address: Address::Tcp(local),
                            cleanup: None,
                        });
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.map_or_else(
                || AddressError::Unresolved(address.to_string()).into(),
                Error::Io,
            ))
        }
        Address::Unix(path) => unix_path::bind(path, opts),
        Address::Abstract(name) => {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&abstract_addr(name)?)?;
            socket.listen(opts.backlog)?;
            Ok(Bound {
                socket,
                address: address.clone(),
                cleanup: None,
            })
        }
        Address::Pipe(_) => Err(AddressError::Unsupported("named pipe").into()),
    }
}

fn bind_tcp(sa: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(sa), Type::STREAM, None)?;
    // As CPython does on POSIX: a restarted server can rebind at once.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    // Windows lets a second socket with SO_REUSEADDR bind the same port and
    // take its clients unless the first asks for exclusive use.
    #[cfg(windows)]
    crate::sys::set_exclusive_address(&socket)?;
    socket.bind(&sa.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// Connects to `address`: a socket (trying each resolved TCP address in
/// turn), or on Windows a named pipe.
pub(crate) fn connect(address: &Address, timeout: Option<Duration>) -> Result<crate::sys::Stream> {
    #[cfg(windows)]
    if let Address::Pipe(name) = address {
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        return crate::sys::connect_pipe(name, deadline).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                Error::Timeout
            } else {
                Error::Io(e)
            }
        });
    }
    Ok(crate::sys::Stream::from_socket(connect_socket(
        address, timeout,
    )?)?)
}

fn connect_socket(address: &Address, timeout: Option<Duration>) -> Result<Socket> {
    let attempt = |domain: Domain, sa: &SockAddr| -> io::Result<Socket> {
        match (domain, timeout) {
            (Domain::IPV4 | Domain::IPV6, Some(t)) => {
                // Created non-blocking where one call can do it; Windows
                // switches inside connect_nonblocking.
                #[cfg(unix)]
                let ty = Type::STREAM.nonblocking();
                #[cfg(not(unix))]
                let ty = Type::STREAM;
                let socket = Socket::new(domain, ty, None)?;
                let deadline = std::time::Instant::now().checked_add(t);
                crate::sys::connect_nonblocking(&socket, sa, deadline)?;
                Ok(socket)
            }
            (_, Some(t)) => {
                let socket = Socket::new(domain, Type::STREAM, None)?;
                socket.connect_timeout(sa, t)?;
                Ok(socket)
            }
            (_, None) => {
                let socket = Socket::new(domain, Type::STREAM, None)?;
                socket.connect(sa)?;
                Ok(socket)
            }
        }
    };
    let socket = match address {
        Address::Tcp(_) | Address::TcpHost { .. } => {
            let mut last = None;
            let mut connected = None;
            for sa in address.socket_addrs()? {
                match attempt(Domain::for_address(sa), &sa.into()) {
                    Ok(s) => {
                        connected = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let socket = match connected {
                Some(s) => s,
                None => {
                    return Err(last.map_or_else(
                        || AddressError::Unresolved(address.to_string()).into(),
                        Error::Io,
                    ));
                }
            };
            // One writev per message: Nagle can only add latency.
            socket.set_tcp_nodelay(true)?;
            socket
        }
        Address::Unix(path) => {
            unix_path::check_len(path)?;
            attempt(Domain::UNIX, &SockAddr::unix(path)?)?
        }
        Address::Abstract(name) => attempt(Domain::UNIX, &abstract_addr(name)?)?,
        Address::Pipe(_) => return Err(AddressError::Unsupported("named pipe").into()),
    };
    Ok(socket)
}

/// The socket addresses a client of `address` tries, in order (a host
/// name is resolved here, with the system's resolver).
#[cfg_attr(
    not(any(feature = "tokio", all(unix, feature = "async-io"))),
    allow(dead_code, reason = "only the async client connects by itself")
)]
pub(crate) fn targets(address: &Address) -> Result<Vec<SockAddr>> {
    Ok(match address {
        Address::Tcp(_) | Address::TcpHost { .. } => address
            .socket_addrs()?
            .into_iter()
            .map(SockAddr::from)
            .collect(),
        Address::Unix(path) => {
            unix_path::check_len(path)?;
            vec![SockAddr::unix(path)?]
        }
        Address::Abstract(name) => vec![abstract_addr(name)?],
        Address::Pipe(_) => return Err(AddressError::Unsupported("named pipe").into()),
    })
}

/// The address a peer connected from, when it has one.
pub(crate) fn peer_address(sa: &SockAddr) -> Option<Address> {
    if let Some(sa) = sa.as_socket() {
        return Some(Address::Tcp(sa));
    }
    #[cfg(unix)]
    if let Some(path) = sa.as_pathname() {
        return Some(Address::Unix(path.to_path_buf()));
    }
    None
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &str) -> Result<SockAddr> {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name.as_bytes());
    use std::os::unix::ffi::OsStrExt;
    Ok(SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &str) -> Result<SockAddr> {
    Err(AddressError::Unsupported("abstract unix socket").into())
}

#[cfg(unix)]
pub(crate) mod unix_path {
    //! Socket files: created 0600, never truncated, never clobbered, removed
    //! by their own listener only. The private directories of
    //! `Address::arbitrary`: removed by the one listener that claimed them,
    //! known by identity (device and inode), never by name.

    use std::fs;
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, PoisonError};

    use socket2::{Domain, SockAddr, Socket, Type};

    use super::{BindOptions, Bound};
    use crate::address::Address;
    use crate::error::{AddressError, Result};

    /// The socket file a listener created, identified by inode so that a
    /// file another listener has since put at the same path is left alone,
    /// and the private directory around it if this listener claimed one.
    #[derive(Debug)]
    pub(crate) struct SocketFile {
        path: PathBuf,
        dev: u64,
        ino: u64,
        dir: Option<MadeDir>,
    }

    impl Drop for SocketFile {
        fn drop(&mut self) {
            let ours = fs::symlink_metadata(&self.path)
                .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
            if ours {
                let _ = fs::remove_file(&self.path);
            }
            // remove_dir fails on a directory that is not empty: anything
            // put there since stays, and the directory with it.
            if let Some(dir) = &self.dir
                && dir.is_still_there()
            {
                let _ = fs::remove_dir(&dir.path);
            }
        }
    }

    /// A directory this process made, as it was when made.
    #[derive(Debug)]
    struct MadeDir {
        path: PathBuf,
        dev: u64,
        ino: u64,
    }

    impl MadeDir {
        /// Whether `path` still names this very directory, not a directory
        /// put in its place nor a symlink.
        fn is_still_there(&self) -> bool {
            fs::symlink_metadata(&self.path)
                .is_ok_and(|m| m.is_dir() && m.dev() == self.dev && m.ino() == self.ino)
        }
    }

    /// The private directories made by `Address::arbitrary` in this process
    /// that no listener has claimed yet. Another process that is handed such
    /// a path has none of them here, so it never removes the directory.
    static UNCLAIMED: Mutex<Vec<MadeDir>> = Mutex::new(Vec::new());

    fn unclaimed() -> std::sync::MutexGuard<'static, Vec<MadeDir>> {
        // The list is consistent between any two statements, so a panic
        // elsewhere while it was held leaves nothing half done.
        UNCLAIMED.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates `dir`, mode 0700, and records it as one a listener may claim.
    pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new().mode(0o700).create(dir)?;
        let meta = match fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_dir(dir);
                return Err(e);
            }
        };
        unclaimed().push(MadeDir {
            path: dir.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        });
        Ok(())
    }

    /// Takes the directory that holds the socket file at `socket` out of the
    /// unclaimed ones, if it is one of them: the listener bound there owns
    /// it from now on, and a second listener in the same directory does not.
    fn claim_dir(socket: &Path) -> Option<MadeDir> {
        let parent = match socket.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Followed through symlinks: the directory the socket is really in.
        let meta = fs::metadata(parent).ok()?;
        let same_inode: Vec<MadeDir> = unclaimed()
            .extract_if(.., |d| d.dev == meta.dev() && d.ino == meta.ino())
            .collect();
        // Records of directories since removed, whose inode the file system
        // gave to this one, go with the claim; at most one record is of this
        // very directory, as two directories that exist never share an inode.
        same_inode.into_iter().find(MadeDir::is_still_there)
    }

    /// The longest path `sun_path` holds, without its terminating NUL.
    pub(crate) fn max_len() -> usize {
        std::mem::size_of::<libc::sockaddr_un>()
            - std::mem::offset_of!(libc::sockaddr_un, sun_path)
            - 1
    }

    pub(crate) fn check_len(path: &Path) -> Result<()> {
        let len = path.as_os_str().len();
        if len > max_len() {
            return Err(AddressError::PathTooLong {
                len,
                max: max_len(),
            }
            .into());
        }
        Ok(())
    }

    pub(crate) fn bind(path: &Path, opts: BindOptions) -> Result<Bound> {
        check_len(path)?;
        let addr = SockAddr::unix(path)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        if let Err(e) = socket.bind(&addr) {
            if e.kind() != io::ErrorKind::AddrInUse {
                return Err(e.into());
            }
            reclaim(path, &addr, opts.reclaim_stale_socket)?;
            socket.bind(&addr)?;
        }
        // Nobody can connect before listen(), so tightening the mode here,
        // between bind and listen, leaves no window whatever the umask.
        let bound = (|| {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
            socket.listen(opts.backlog)?;
            fs::symlink_metadata(path)
        })();
        let meta = match bound {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(e.into());
            }
        };
        Ok(Bound {
            socket,
            address: Address::Unix(path.to_path_buf()),
            cleanup: Some(SocketFile {
                path: path.to_path_buf(),
                dev: meta.dev(),
                ino: meta.ino(),
                dir: claim_dir(path),
            }),
        })
    }

    /// Something exists at `path`: a live listener, a stale socket or another file.
    fn reclaim(path: &Path, addr: &SockAddr, allowed: bool) -> Result<()> {
        let shown = path.display().to_string();
        let is_socket = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
        if !is_socket {
            return Err(AddressError::InUse(shown).into());
        }
        let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        match probe.connect(addr) {
            Ok(()) => Err(AddressError::InUse(shown).into()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                if !allowed {
                    return Err(AddressError::StaleSocket(shown).into());
                }
                fs::remove_file(path)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::address::Family;

        #[test]
        fn one_listener_owns_an_arbitrary_directory() {
            let Address::Unix(path) = Address::arbitrary(Family::Unix).unwrap() else {
                panic!()
            };
            let opts = BindOptions {
                backlog: 1,
                reclaim_stale_socket: false,
            };
            let first = bind(&path, opts).unwrap().cleanup.unwrap();
            let second = bind(&path.with_file_name("second.sock"), opts)
                .unwrap()
                .cleanup
                .unwrap();
            assert!(first.dir.is_some());
            assert!(second.dir.is_none());
            let dir = path.parent().unwrap().to_path_buf();
            drop(second);
            assert!(dir.is_dir());
            drop(first);
            assert!(!dir.exists());
        }
    }
}

#[cfg(not(unix))]
pub(crate) mod unix_path {
    use std::io;
    use std::path::Path;

    use super::{BindOptions, Bound};
    use crate::error::{AddressError, Result};

    #[derive(Debug)]
    pub(crate) struct SocketFile;

    /// Creates `dir`; no listener here binds inside it, so none removes it.
    pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
        std::fs::create_dir(dir)
    }

    pub(crate) fn check_len(_path: &Path) -> Result<()> {
        Err(AddressError::Unsupported("unix socket").into())
    }

    pub(crate) fn bind(_path: &Path, _opts: BindOptions) -> Result<Bound> {
        Err(AddressError::Unsupported("unix socket").into())
    }
}

#[cfg(all(test, windows))]
mod windows_tests {
    #[test]
    fn tcp_listeners_take_their_port_exclusively() {
        let socket = super::bind_tcp("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        assert!(crate::sys::exclusive_address(&socket).unwrap());
    }
}
