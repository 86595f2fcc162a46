//! The far end of the CPython connection-test port (tests/cpython/): each
//! sub-command plays, with mpconn, the "other process" of one of CPython's
//! tests in `Lib/test/_test_multiprocessing.py`, where CPython runs a child
//! `Process`. The Python side hands it a descriptor (`--fd N`, inherited
//! through `pass_fds`) or an address, and checks what it does.
//!
//! Messages are given and expected as hex, so this side needs no pickle
//! codec: the Python side pickles, and this side moves exact bytes. Every
//! wait is bounded, and the exit code says how it went: 0 done, 1 a
//! mismatch or an unexpected error (on stderr), 2 an authentication
//! failure, 3 the address was in use.
//!
//! ```text
//! echo --fd N                     send back each message until b'' (or EOF)
//! write --fd N [--delay-ms D] HEX...   send each message, then close
//! read --fd N [--then-eof] HEX...  receive these messages (and then EOF)
//! poll --fd N --ms T              poll once, print true/false, exit
//! close --fd N                    adopt the descriptor and close it at once
//! pid-tuples --fd N [--slow]      send pickles of (i, pid) for i in 0..10
//! auth --fd N --role server|client --key HEX [--legacy] [--short-key]
//!                                 authenticate over the descriptor, then
//!                                 send b'authenticated'
//! client ADDRESS [--key HEX [--legacy] [--short-key]] [--poll-ms T]
//!        [--send HEX]... [--expect HEX]...   (no key: no handshake)
//! serve ADDRESS [--key HEX [--legacy] [--short-key]] [--send HEX]...
//!        [--expect HEX]...        prints "READY <address>", accepts one client
//! bind ADDRESS                    bind, print "READY <address>", wait for stdin EOF
//! recv-fd-write --fd N --data HEX [--fill-low-fds]
//!                                 receive one descriptor, write the data to it
//! send-fd --fd N --path P         open P for writing and send its descriptor
//! missing-fd --fd N               send a descriptor message without descriptor,
//!                                 then receive one that has none (an error)
//! ```

#[cfg(unix)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match far_end::run(&args) {
        Ok(()) => 0,
        Err(far_end::Failure(code, why)) => {
            eprintln!("cpython_far_end {}: {why}", args.join(" "));
            code
        }
    };
    std::process::exit(code);
}

#[cfg(not(unix))]
fn main() {
    eprintln!("cpython_far_end runs on Unix only (CPython's tests pass descriptors)");
    std::process::exit(1);
}

#[cfg(unix)]
mod far_end {
    use std::io::{BufRead, Write};
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use mpconn::{Connection, Error, ListenerOptions, Unverified};

    /// How long any single wait may take before the far end gives up.
    const PATIENCE: Duration = Duration::from_secs(20);

    /// An exit code and the reason.
    pub struct Failure(pub i32, pub String);

    type Outcome = Result<(), Failure>;

    fn fail(why: impl std::fmt::Display) -> Failure {
        Failure(1, why.to_string())
    }

    impl From<Error> for Failure {
        fn from(e: Error) -> Self {
            match e {
                Error::Auth(_) => Failure(2, format!("authentication failed: {e}")),
                Error::Address(_) => Failure(3, format!("address: {e}")),
                Error::Io(ref io) if io.kind() == std::io::ErrorKind::AddrInUse => {
                    Failure(3, format!("address: {e}"))
                }
                e => fail(e),
            }
        }
    }

    /// The command line after the sub-command: flags with values, bare
    /// flags, and positional arguments.
    struct Args {
        named: Vec<(String, String)>,
        flags: Vec<String>,
        positional: Vec<String>,
    }

    const BARE_FLAGS: [&str; 5] = [
        "--then-eof",
        "--slow",
        "--legacy",
        "--short-key",
        "--fill-low-fds",
    ];

    impl Args {
        fn parse(raw: &[String]) -> Result<Args, Failure> {
            let mut args = Args {
                named: Vec::new(),
                flags: Vec::new(),
                positional: Vec::new(),
            };
            let mut it = raw.iter();
            while let Some(a) = it.next() {
                if BARE_FLAGS.contains(&a.as_str()) {
                    args.flags.push(a.clone());
                } else if a.starts_with("--") {
                    let value = it
                        .next()
                        .ok_or_else(|| fail(format!("{a} needs a value")))?;
                    args.named.push((a.clone(), value.clone()));
                } else {
                    args.positional.push(a.clone());
                }
            }
            Ok(args)
        }

        fn flag(&self, name: &str) -> bool {
            self.flags.iter().any(|f| f == name)
        }

        fn all(&self, name: &str) -> impl Iterator<Item = &str> {
            self.named
                .iter()
                .filter(move |(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        fn one(&self, name: &str) -> Result<&str, Failure> {
            self.all(name)
                .next()
                .ok_or_else(|| fail(format!("missing {name}")))
        }

        fn number(&self, name: &str) -> Result<u64, Failure> {
            let text = self.one(name)?;
            text.parse()
                .map_err(|_| fail(format!("{name} {text}: not a number")))
        }

        fn hex(&self, name: &str) -> Result<Vec<Vec<u8>>, Failure> {
            self.all(name).map(unhex).collect()
        }

        /// The descriptor of `--fd`, adopted as a connection nobody vouched
        /// for yet.
        fn connection(&self) -> Result<Connection<Unverified>, Failure> {
            let fd: i32 = self.number("--fd")? as i32;
            // SAFETY: the Python parent passed this descriptor with
            // `pass_fds` for this process to own; nothing else in this
            // process uses it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Connection::from(owned))
        }

        /// The handshake options the Python peer needs.
        fn client_options(&self) -> mpconn::ClientOptions {
            mpconn::ClientOptions::new()
                .allow_legacy_md5(self.flag("--legacy"))
                .allow_short_key(self.flag("--short-key"))
        }

        fn listener_options(&self) -> ListenerOptions {
            ListenerOptions::new()
                .allow_legacy_md5(self.flag("--legacy"))
                .allow_short_key(self.flag("--short-key"))
                .accept_timeout(Some(PATIENCE))
        }
    }

    fn unhex(text: &str) -> Result<Vec<u8>, Failure> {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(fail(format!("bad hex {text:?}"))),
        };
        if !text.len().is_multiple_of(2) {
            return Err(fail(format!("odd hex {text:?}")));
        }
        text.as_bytes()
            .chunks(2)
            .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect()
    }

    pub fn run(raw: &[String]) -> Outcome {
        let (command, rest) = raw.split_first().ok_or_else(|| fail("no sub-command"))?;
        let args = Args::parse(rest)?;
        match command.as_str() {
            "echo" => echo(&args),
            "write" => write(&args),
            "read" => read(&args),
            "poll" => poll(&args),
            "close" => Ok(args.connection()?.close()?),
            "pid-tuples" => pid_tuples(&args),
            "auth" => auth(&args),
            "client" => client(&args),
            "serve" => serve(&args),
            "bind" => bind(&args),
            "recv-fd-write" => recv_fd_write(&args),
            "send-fd" => send_fd(&args),
            "missing-fd" => missing_fd(&args),
            other => Err(fail(format!("unknown sub-command {other}"))),
        }
    }

    /// CPython's `_echo`: messages come back until an empty one; then close.
    fn echo(args: &Args) -> Outcome {
        let mut conn = args.connection()?.dangerous_trust_without_authentication();
        loop {
            match conn.recv_bytes_timeout(PATIENCE) {
                Ok(msg) if msg.is_empty() => break,
                Ok(msg) => conn.send_bytes(&msg)?,
                Err(Error::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(conn.close()?)
    }

    /// The writers of `_TestPoll` and `test_duplex_false`.
    fn write(args: &Args) -> Outcome {
        let mut conn = args.connection()?.dangerous_trust_without_authentication();
        let delay = Duration::from_millis(args.number("--delay-ms").unwrap_or(0));
        for msg in &args.positional {
            std::thread::sleep(delay);
            conn.send_bytes(&unhex(msg)?)?;
        }
        Ok(conn.close()?)
    }

    fn read(args: &Args) -> Outcome {
        let mut conn = args.connection()?.dangerous_trust_without_authentication();
        for (i, hex) in args.positional.iter().enumerate() {
            let got = conn.recv_bytes_timeout(PATIENCE)?;
            if got != unhex(hex)? {
                return Err(fail(format!("message {i}: got {got:02x?}, expected {hex}")));
            }
        }
        if args.flag("--then-eof") {
            match conn.recv_bytes_timeout(PATIENCE) {
                Err(Error::Eof) => {}
                other => return Err(fail(format!("expected the end of stream, got {other:?}"))),
            }
        }
        Ok(conn.close()?)
    }

    /// `_child_boundaries`: one poll, which must not take a message (or part
    /// of one) away from the other holders of the pipe.
    fn poll(args: &Args) -> Outcome {
        let mut conn = args.connection()?.dangerous_trust_without_authentication();
        let ready = conn.poll(Some(Duration::from_millis(args.number("--ms")?)))?;
        println!("{ready}");
        Ok(())
    }

    /// `_child_test_wait`: ten pickles of `(i, pid)`, then close.
    fn pid_tuples(args: &Args) -> Outcome {
        let mut conn = args.connection()?.dangerous_trust_without_authentication();
        let pid = std::process::id();
        for i in 0..10u8 {
            if args.flag("--slow") {
                // Up to 20 ms, varying between processes and messages.
                let jitter = (pid as u64 * 7919 + i as u64 * 104_729) % 20;
                std::thread::sleep(Duration::from_millis(jitter));
            }
            // Protocol 4: PROTO 4, BININT1 i, BININT pid, TUPLE2, STOP.
            let mut pickle = vec![0x80, 4, b'K', i, b'J'];
            pickle.extend_from_slice(&(pid as i32).to_le_bytes());
            pickle.extend_from_slice(&[0x86, b'.']);
            conn.send_bytes(&pickle)?;
        }
        Ok(conn.close()?)
    }

    fn auth(args: &Args) -> Outcome {
        let conn = args.connection()?;
        let key = unhex(args.one("--key")?)?;
        // The handshake options the Python peer needs (legacy MD5 for
        // Python 3.8 to 3.11, short keys), as on a listener or client.
        let options = mpconn::HandshakeOptions::new()
            .allow_legacy_md5(args.flag("--legacy"))
            .allow_short_key(args.flag("--short-key"));
        let mut conn = match args.one("--role")? {
            "server" => conn.authenticate_as_server_with(&key, &options)?,
            "client" => conn.authenticate_as_client_with(&key, &options)?,
            other => return Err(fail(format!("unknown role {other}"))),
        };
        conn.send_bytes(b"authenticated")?;
        // Wait for the peer to finish with the connection.
        let _ = conn.recv_bytes_timeout(PATIENCE);
        Ok(())
    }

    /// Sends each `--send` message, then receives each `--expect` one.
    fn exchange<T: mpconn::Trust>(args: &Args, conn: &mut Connection<T>) -> Outcome {
        for msg in args.hex("--send")? {
            conn.send_bytes(&msg)?;
        }
        for (i, want) in args.hex("--expect")?.into_iter().enumerate() {
            let got = conn.recv_bytes_timeout(PATIENCE)?;
            if got != want {
                return Err(fail(format!(
                    "message {i}: got {got:02x?}, expected {want:02x?}"
                )));
            }
        }
        Ok(())
    }

    /// The `Client` side of `_TestListener` and `_TestListenerClient`.
    /// Without `--key` it runs no handshake, as Python's `Client(address)`
    /// without an authkey.
    fn client(args: &Args) -> Outcome {
        let address = args.positional.first().ok_or_else(|| fail("no address"))?;
        let options = args.client_options();
        let mut conn = match args.one("--key") {
            Ok(key) => options.connect(address.as_str(), &unhex(key)?)?,
            Err(_) => options
                .connect_unauthenticated(address.as_str())?
                .dangerous_trust_without_authentication(),
        };
        exchange(args, &mut conn)?;
        if let Ok(ms) = args.number("--poll-ms") {
            let ready = conn.poll(Some(Duration::from_millis(ms)))?;
            if !ready {
                return Err(fail(format!("nothing to receive within {ms} ms")));
            }
        }
        Ok(conn.close()?)
    }

    /// The `Listener` side: prints its address, serves one client. Without
    /// `--key` it runs no handshake, as Python's `Listener()`.
    fn serve(args: &Args) -> Outcome {
        let address = args.positional.first().ok_or_else(|| fail("no address"))?;
        let options = args.listener_options();
        let mut conn = match args.one("--key") {
            Ok(key) => {
                let listener = options.bind(address.as_str(), &unhex(key)?)?;
                ready(&listener.address().to_string())?;
                listener.accept()?
            }
            Err(_) => {
                let listener = options.bind_unauthenticated(address.as_str())?;
                ready(&listener.address().to_string())?;
                listener.accept()?.dangerous_trust_without_authentication()
            }
        };
        exchange(args, &mut conn)?;
        // Keep the connection until the client is done with it.
        let _ = conn.recv_bytes_timeout(PATIENCE);
        Ok(())
    }

    /// `test_multiple_bind`: holds the address until stdin closes.
    fn bind(args: &Args) -> Outcome {
        let address = args.positional.first().ok_or_else(|| fail("no address"))?;
        let key = [b'k'; 32];
        let listener = args.listener_options().bind(address.as_str(), &key)?;
        ready(&listener.address().to_string())?;
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        Ok(())
    }

    fn ready(address: &str) -> Outcome {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {address}")
            .and_then(|()| out.flush())
            .map_err(fail)
    }

    /// `_writefd`: receives a descriptor and writes the data to it. With
    /// `--fill-low-fds`, every free descriptor number below 256 is taken
    /// first (by copies of the connection), so that the received one is
    /// numbered above 256 (CPython's issue #11657).
    fn recv_fd_write(args: &Args) -> Outcome {
        let mut conn = args.connection()?.dangerous_trust_without_authentication();
        let data = unhex(args.one("--data")?)?;
        let mut fillers = Vec::new();
        if args.flag("--fill-low-fds") {
            for n in 0..256 {
                // SAFETY: fcntl(F_GETFD) only asks whether `n` is open.
                if unsafe { libc::fcntl(n, libc::F_GETFD) } == -1 {
                    // SAFETY: dup2 onto a number nobody holds.
                    let fd = unsafe { libc::dup2(conn.as_raw_fd(), n) };
                    if fd == n {
                        // SAFETY: `fd` was just made, and only this owns it.
                        fillers.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
        }
        let fds = conn.recv_fds()?;
        let [fd] = <[OwnedFd; 1]>::try_from(fds)
            .map_err(|fds| fail(format!("received {} descriptors, expected 1", fds.len())))?;
        if args.flag("--fill-low-fds") && fd.as_raw_fd() < 256 {
            return Err(fail(format!(
                "received descriptor {}, below 256",
                fd.as_raw_fd()
            )));
        }
        drop(fillers);
        std::fs::File::from(fd).write_all(&data).map_err(fail)?;
        Ok(())
    }

    /// The reverse of `test_fd_transfer`: this side sends the descriptor.
    fn send_fd(args: &Args) -> Outcome {
        let mut conn = args.connection()?.dangerous_trust_without_authentication();
        let file = std::fs::File::create(args.one("--path")?).map_err(fail)?;
        conn.send_fds(&[file.as_fd()])?;
        // The descriptor in flight stays valid after this side closes it,
        // but wait for the peer to be done, as a CPython sender would.
        let _ = conn.recv_bytes_timeout(PATIENCE);
        Ok(())
    }

    /// `_send_data_without_fd`, both ways: first the Python side writes
    /// the count byte with no descriptor, and receiving descriptors must
    /// fail; then this side writes one raw byte, as CPython's child does
    /// with `os.write(conn.fileno(), b"\0")`, for Python's `recv_handle`.
    fn missing_fd(args: &Args) -> Outcome {
        let mut conn = args.connection()?.dangerous_trust_without_authentication();
        match conn.recv_fds() {
            Err(e) => eprintln!("recv_fds failed, as it should: {e}"),
            Ok(fds) => {
                return Err(fail(format!(
                    "recv_fds accepted a message without descriptors: {} received",
                    fds.len()
                )));
            }
        }
        let raw = conn.as_fd().try_clone_to_owned().map_err(fail)?;
        std::fs::File::from(raw).write_all(b"\0").map_err(fail)?;
        let _ = conn.recv_bytes_timeout(PATIENCE);
        Ok(())
    }
}
