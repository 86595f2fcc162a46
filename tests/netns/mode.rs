//! How the two ends protect a connection. Every test runs once per mode,
//! and the roles build their listeners and clients only through this file,
//! so the tests cover the plain and the encrypted mode alike.

use mpconn::{ClientOptions, Connection, Listener, ListenerOptions};

use crate::common::KEY;

/// What the environment variable that carries the mode to a child is named.
pub const ENV: &str = "MPCONN_NETNS_MODE";

/// A way of running a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The CPython handshake, then frames in the clear.
    Plain,
    /// `encrypted(true)`: the CPython handshake, a Noise handshake, then
    /// sealed records.
    Encrypted,
}

impl Mode {
    /// Every mode, in the order the tests run them.
    pub const ALL: &[Mode] = &[Mode::Plain, Mode::Encrypted];

    /// The mode's name, as a child receives it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Encrypted => "encrypted",
        }
    }

    /// The mode a child was started in.
    pub fn from_env() -> Mode {
        let name = std::env::var(ENV).unwrap_or_else(|_| panic!("{ENV} is not set"));
        *Mode::ALL
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("unknown mode {name:?}"))
    }

    /// The listener options of this mode; a failed handshake is printed,
    /// to be seen when the test fails.
    pub fn listener_options(self) -> ListenerOptions {
        // The default 1 s for a client's first answer tells a silent
        // client from a slow one on a sound link. Under loss, one run in
        // ten of `handshakes_finish_under_loss` (100 handshakes, plain mode
        // as well, before the encrypted mode existed) had a client whose
        // answer took longer, the retransmissions of its segments counted
        // in: a listener on a lossy network sets a longer one, as here.
        let options = Listener::builder()
            .first_answer_timeout(std::time::Duration::from_secs(5))
            .on_handshake_failure(|f| {
                let peer = f.peer.as_ref().map(ToString::to_string);
                println!("handshake with {peer:?} failed: {}", f.error);
            });
        match self {
            Mode::Plain => options,
            Mode::Encrypted => options.encrypted(true),
        }
    }

    /// The client options of this mode. The wait for the listener's
    /// challenge is bounded (it has no limit by default), so that a client
    /// whose connection the listener never took says so instead of hanging.
    pub fn client_options(self) -> ClientOptions {
        let options =
            ClientOptions::new().challenge_timeout(Some(std::time::Duration::from_secs(15)));
        match self {
            Mode::Plain => options,
            Mode::Encrypted => options.encrypted(true),
        }
    }

    /// A blocking listener on `address`.
    pub fn bind(self, address: &str) -> Listener {
        self.listener_options().bind(address, KEY).unwrap()
    }

    /// A blocking connection to `address`.
    pub fn connect(self, address: &str) -> mpconn::Result<Connection> {
        self.client_options().connect(address, KEY)
    }

    /// A tokio listener on `address`.
    #[cfg(feature = "tokio")]
    pub fn bind_tokio(self, address: &str) -> mpconn::tokio::Listener {
        mpconn::tokio::Listener::bind_with(self.listener_options(), address, KEY).unwrap()
    }

    /// A tokio connection to `address`.
    #[cfg(feature = "tokio")]
    pub async fn connect_tokio(self, address: &str) -> mpconn::Result<mpconn::tokio::Connection> {
        mpconn::tokio::Client::connect_with(&self.client_options(), address, KEY).await
    }
}
