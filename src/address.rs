//! `Address`: where a listener listens and a client connects.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{AddressError, Error, Result};
use crate::key::fill_random;

/// An address in one of the families CPython's `multiprocessing.connection`
/// knows: `AF_INET`/`AF_INET6` (TCP), `AF_UNIX` (a socket path or a Linux
/// abstract name) and `AF_PIPE` (a Windows named pipe).
///
/// Parsing accepts, among others: `127.0.0.1:6000`, `[::1]:6000`,
/// `localhost:6000`, `tcp://host:6000`, `/path/to.sock`, `unix:/path`,
/// `unix:relative/path`, `unix:@name` (abstract) and `\\.\pipe\name`.
/// [`Display`](fmt::Display) writes a spelling that parses back to the same
/// address.
///
/// ```
/// use mpconn::Address;
/// for text in ["127.0.0.1:6000", "[::1]:6000", "localhost:6000", "/tmp/a.sock",
///              "unix:@name", r"\\.\pipe\name"] {
///     let address: Address = text.parse()?;
///     assert_eq!(address.to_string().parse::<Address>()?, address);
/// }
/// # Ok::<(), mpconn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP endpoint given by IP address.
    Tcp(SocketAddr),
    /// A TCP endpoint given by host name, resolved when it is used.
    TcpHost {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
    /// A Unix domain socket at a filesystem path.
    Unix(PathBuf),
    /// A Linux abstract-namespace socket (no file; any local user can
    /// connect, so only the key protects it). Used only when named explicitly.
    Abstract(String),
    /// A Windows named pipe, `\\.\pipe\name`.
    Pipe(String),
}

/// An address family, for [`Address::arbitrary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// TCP on the loopback interface.
    Tcp,
    /// A Unix domain socket in a private temporary directory.
    Unix,
    /// A Windows named pipe.
    Pipe,
}

impl Address {
    /// A fresh address nobody uses yet, like CPython's `arbitrary_address`:
    /// TCP port 0 on 127.0.0.1 (the listener reports the real port), a
    /// socket path in a new directory only this user can enter, or a named
    /// pipe with a random name.
    ///
    /// The first listener bound inside such a directory by the process that
    /// made it removes it when dropped, if the directory is empty then. A
    /// directory nobody binds in stays, and so does one only other processes
    /// bind in (a child forked after the call counts as the same process).
    ///
    /// # Errors
    /// [`Error::Io`] when the temporary directory cannot be created.
    pub fn arbitrary(family: Family) -> Result<Address> {
        match family {
            Family::Tcp => Ok(Address::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                0,
            ))),
            Family::Unix => {
                let dir = std::env::temp_dir().join(format!("mpconn-{}", random_hex()?));
                crate::socket::unix_path::create_private_dir(&dir)?;
                Ok(Address::Unix(dir.join("listener.sock")))
            }
            Family::Pipe => Ok(Address::Pipe(format!(
                r"\\.\pipe\mpconn-{}-{}",
                std::process::id(),
                random_hex()?
            ))),
        }
    }

    /// The family this address belongs to.
    pub fn family(&self) -> Family {
        match self {
            Address::Tcp(_) | Address::TcpHost { .. } => Family::Tcp,
            Address::Unix(_) | Address::Abstract(_) => Family::Unix,
            Address::Pipe(_) => Family::Pipe,
        }
    }

    /// The local family of this platform: Unix sockets, or named pipes on Windows.
    pub fn default_family() -> Family {
        if cfg!(windows) {
            Family::Pipe
        } else {
            Family::Unix
        }
    }

    /// Resolves a TCP address to socket addresses; other families give none.
    pub(crate) fn socket_addrs(&self) -> Result<Vec<SocketAddr>> {
        match self {
            Address::Tcp(sa) => Ok(vec![*sa]),
            Address::TcpHost { host, port } => {
                let addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs()?.collect();
                if addrs.is_empty() {
                    return Err(AddressError::Unresolved(host.clone()).into());
                }
                Ok(addrs)
            }
            _ => Ok(Vec::new()),
        }
    }
}

fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(text: &str) -> Result<Address> {
        let invalid = || Error::Address(AddressError::Invalid(text.to_string()));
        if text.len() > 9 && text[..9].eq_ignore_ascii_case(r"\\.\pipe\") {
            return Ok(Address::Pipe(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            return parse_tcp(rest).ok_or_else(invalid);
        }
        if let Some(rest) = text.strip_prefix("unix:") {
            return match rest.strip_prefix('@') {
                Some("") => Err(invalid()),
                Some(name) => Ok(Address::Abstract(name.to_string())),
                None if rest.is_empty() => Err(invalid()),
                None => Ok(Address::Unix(PathBuf::from(rest))),
            };
        }
        if text.starts_with('/') {
            return Ok(Address::Unix(PathBuf::from(text)));
        }
        if let Some(tcp) = parse_tcp(text) {
            return Ok(tcp);
        }
        if text.contains('/') {
            return Ok(Address::Unix(PathBuf::from(text)));
        }
        Err(invalid())
    }
}

/// `ip:port`, `[v6]:port` or `host:port`.
fn parse_tcp(text: &str) -> Option<Address> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(Address::Tcp(sa));
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    valid_host.then(|| Address::TcpHost {
        host: host.to_string(),
        port,
    })
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(sa) => write!(f, "{sa}"),
            Address::TcpHost { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) if path.is_absolute() => write!(f, "{}", path.display()),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Abstract(name) => write!(f, "unix:@{name}"),
            Address::Pipe(name) => f.write_str(name),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(sa: SocketAddr) -> Self {
        Address::Tcp(sa)
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Self {
        Address::Unix(path)
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Self {
        Address::Unix(path.to_path_buf())
    }
}

/// Anything that names one [`Address`], like [`ToSocketAddrs`] for sockets:
/// strings are parsed, paths are Unix sockets, socket addresses are TCP.
pub trait ToAddress {
    /// The address this value names.
    ///
    /// # Errors
    /// [`Error::Address`] when a string is not a valid address.
    fn to_address(&self) -> Result<Address>;
}

impl ToAddress for Address {
    fn to_address(&self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl ToAddress for str {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }
}

impl ToAddress for String {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }
}

impl ToAddress for SocketAddr {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp(*self))
    }
}

impl ToAddress for Path {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Unix(self.to_path_buf()))
    }
}

impl ToAddress for PathBuf {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Unix(self.clone()))
    }
}

impl<T: ToAddress + ?Sized> ToAddress for &T {
    fn to_address(&self) -> Result<Address> {
        (**self).to_address()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_spellings() {
        let cases: Vec<(&str, Address)> = vec![
            (
                "127.0.0.1:6000",
                Address::Tcp("127.0.0.1:6000".parse().unwrap()),
            ),
            ("[::1]:6000", Address::Tcp("[::1]:6000".parse().unwrap())),
            (
                "tcp://127.0.0.1:1",
                Address::Tcp("127.0.0.1:1".parse().unwrap()),
            ),
            (
                "localhost:6000",
                Address::TcpHost {
                    host: "localhost".into(),
                    port: 6000,
                },
            ),
            (
                "tcp://example.org:80",
                Address::TcpHost {
                    host: "example.org".into(),
                    port: 80,
                },
            ),
            ("/path/to.sock", Address::Unix("/path/to.sock".into())),
            ("unix:/path", Address::Unix("/path".into())),
            ("unix:rel/x.sock", Address::Unix("rel/x.sock".into())),
            ("run/x.sock", Address::Unix("run/x.sock".into())),
            ("unix:@name", Address::Abstract("name".into())),
            (r"\\.\pipe\name", Address::Pipe(r"\\.\pipe\name".into())),
            (r"\\.\PIPE\Name", Address::Pipe(r"\\.\PIPE\Name".into())),
        ];
        for (text, expected) in cases {
            let parsed: Address = text.parse().unwrap();
            assert_eq!(parsed, expected, "{text}");
            let shown = parsed.to_string();
            assert_eq!(
                shown.parse::<Address>().unwrap(),
                parsed,
                "{text} -> {shown}"
            );
        }
    }

    #[test]
    fn rejected_spellings() {
        for text in [
            "",
            "localhost",
            "host:port",
            "host:99999",
            "unix:",
            "unix:@",
            "tcp://",
            "tcp:///x",
            "a b:80",
            r"\\.\pipe\",
        ] {
            assert!(
                matches!(
                    text.parse::<Address>(),
                    Err(Error::Address(AddressError::Invalid(_)))
                ),
                "{text:?} parsed"
            );
        }
    }

    #[test]
    fn to_address_for_every_source() {
        let sa: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let path = PathBuf::from("/tmp/x.sock");
        let address = Address::Unix(path.clone());
        assert_eq!("127.0.0.1:9".to_address().unwrap(), Address::Tcp(sa));
        assert_eq!(
            String::from("127.0.0.1:9").to_address().unwrap(),
            Address::Tcp(sa)
        );
        assert_eq!(sa.to_address().unwrap(), Address::Tcp(sa));
        assert_eq!(path.as_path().to_address().unwrap(), address);
        assert_eq!(path.to_address().unwrap(), address);
        let by_ref: &Address = &address;
        assert_eq!(ToAddress::to_address(&by_ref).unwrap(), address);
        assert_eq!(Address::from(sa), Address::Tcp(sa));
        assert_eq!(Address::from(path), address);
    }

    #[cfg(unix)]
    #[test]
    fn arbitrary_unix_addresses_live_in_private_directories() {
        use std::os::unix::fs::PermissionsExt;
        let a = Address::arbitrary(Family::Unix).unwrap();
        let b = Address::arbitrary(Family::Unix).unwrap();
        assert_ne!(a, b);
        let Address::Unix(path) = a else {
            panic!("{a:?}")
        };
        let dir = path.parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir(dir).unwrap();
        if let Address::Unix(p) = b {
            std::fs::remove_dir(p.parent().unwrap()).unwrap();
        }
    }

    #[test]
    fn arbitrary_tcp_and_pipe_addresses() {
        assert_eq!(
            Address::arbitrary(Family::Tcp).unwrap().to_string(),
            "127.0.0.1:0"
        );
        let pipe = Address::arbitrary(Family::Pipe).unwrap();
        assert!(pipe.to_string().starts_with(r"\\.\pipe\mpconn-"));
        assert_ne!(pipe, Address::arbitrary(Family::Pipe).unwrap());
    }
}
