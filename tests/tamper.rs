//! An active attacker on the wire of an encrypted connection: a TCP proxy
//! in the test, between an encrypted client and an encrypted listener,
//! that parses the frames going each way and alters the records of a live
//! connection (a bit flipped, a record dropped, replayed, reordered,
//! injected or cut short), or relays a whole handshake and then speaks on
//! its own.
//!
//! Every case asserts the same four things:
//! - the receiver gets a clear error (which one is written at each case),
//!   and every later receive fails too;
//! - nothing altered is delivered: the messages are checksummed, and every
//!   one received before the error is exactly the one sent, in order;
//! - the connection is closed: the receiver cannot send any more, and the
//!   sender's next receive ends (EOF or an I/O error) instead of hanging;
//! - no plaintext crosses the proxy, either way.
//!
//! The frames: from the client to the listener, the handshake is four
//! frames (the client's answer and its challenge, pipelined, then
//! `#WELCOME#`, then the Noise reply); from the listener to the client,
//! four as well (its challenge, `#WELCOME#`, its answer, the first Noise
//! message). Every later frame is a record.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mpconn::{Address, AuthError, Client, Connection, Error, ListenerOptions, ProtocolError};

use common::{KEY, check_message, checksummed, frame, try_read_frame, watchdog};

/// Frames of the handshake in each direction, before the first record.
const HANDSHAKE_FRAMES: usize = 4;
/// The plaintext that one record carries at most (65,535 less the tag).
const RECORD_PLAIN: usize = 65_519;
/// A receive that should end at once is given this long before the test
/// calls it a hang.
const PATIENCE: Duration = Duration::from_secs(2);

/// The payload sizes of the checksummed messages a sender sends: small
/// ones, and two that take several records (2 and 4), so that a record
/// can be altered in the middle of a message.
const SIZES: [usize; 7] = [10, 1000, 100_000, 50, 200_000, 7, 3000];
/// The stream number of the tampered direction's messages.
const STREAM: u32 = 7;
/// The stream number of the message going the other way.
const OTHER_STREAM: u32 = 8;
/// Known plain text, which the relays of the attack tests must never see.
const MARKER: &[u8] = b"attack at dawn: the plaintext no relay may ever see";

/// Message `i` of the tampered direction.
fn message(i: usize) -> Vec<u8> {
    checksummed(STREAM, i as u32, SIZES[i])
}

/// The message going the other way, before the tampered stream.
fn other_message() -> Vec<u8> {
    checksummed(OTHER_STREAM, 0, 5000)
}

/// Every message of a case, both ways: what must not cross in clear.
fn all_messages() -> Vec<Vec<u8>> {
    (0..SIZES.len())
        .map(message)
        .chain([other_message()])
        .collect()
}

/// How many records a message of `len` bytes takes (the first carries the
/// 8-byte length too).
fn records_for(len: usize) -> usize {
    (len + 8).div_ceil(RECORD_PLAIN).max(1)
}

/// How many whole messages lie in the records before record `at`.
fn messages_before(at: usize) -> usize {
    let mut end = 0;
    for (i, size) in SIZES.iter().enumerate() {
        end += records_for(size + common::CHECKSUMMED_HEADER);
        if end > at {
            return i;
        }
    }
    SIZES.len()
}

fn total_records() -> usize {
    SIZES
        .iter()
        .map(|s| records_for(s + common::CHECKSUMMED_HEADER))
        .sum()
}

/// Which way a frame goes through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToListener,
    ToClient,
}

/// Where a bit is flipped in a record's frame.
#[derive(Clone, Copy, Debug)]
enum Spot {
    /// The lowest set bit of the length: the record is read short.
    HeaderShorter,
    /// Bit `b` of the length, which is clear: the record is read with the
    /// first bytes of the next frame (which the sender has sent already).
    HeaderLonger(u32),
    /// Bit `b` of the length, 16 or higher: past the record limit, or
    /// negative (bit 31), a framing error before any decryption.
    HeaderHigh(u32),
    /// The low bit of the ciphertext's byte at this offset.
    Body(usize),
    /// The low bit of the byte this far from the end (1 is the tag's last).
    FromEnd(usize),
}

/// What the proxy does to the records going one way. `at` counts records
/// from 0, after the handshake's frames.
#[derive(Clone, Debug)]
enum Tamper {
    Nothing,
    Flip {
        at: usize,
        spot: Spot,
    },
    Drop {
        at: usize,
    },
    /// Sends record `earlier` again in front of record `at`.
    Replay {
        at: usize,
        earlier: usize,
    },
    /// Sends record `at + 1` before record `at`.
    Swap {
        at: usize,
    },
    /// Sends this payload, behind a right header, in front of record `at`.
    Inject {
        at: usize,
        payload: Vec<u8>,
    },
    /// Cuts `by` bytes off the end of record `at`, fixing its header.
    Truncate {
        at: usize,
        by: usize,
    },
    /// Sends these payloads, each behind a right header, as soon as the
    /// handshake's last frame is through.
    AfterHandshake(Vec<Vec<u8>>),
    /// Replaces handshake frame `frame` with `with`, or flips its last
    /// byte's low bit when there is none.
    Handshake {
        frame: usize,
        with: Option<Vec<u8>>,
    },
}

/// What one direction of the proxy saw and sent.
#[derive(Debug, Default)]
struct Pumped {
    /// The payloads of the frames read, as read.
    frames: Vec<Vec<u8>>,
    /// Every byte written on.
    wire: Vec<u8>,
}

impl Pumped {
    fn records(&self) -> &[Vec<u8>] {
        &self.frames[HANDSHAKE_FRAMES.min(self.frames.len())..]
    }
}

/// Both directions of one relayed connection.
#[derive(Debug)]
struct Relayed {
    to_listener: Pumped,
    to_client: Pumped,
}

impl Relayed {
    fn way(&self, dir: Dir) -> &Pumped {
        match dir {
            Dir::ToListener => &self.to_listener,
            Dir::ToClient => &self.to_client,
        }
    }
}

/// Reads frames from `from` and writes them, altered as `tamper` says, to
/// `to`, until `from` ends; then ends `to` for writing, as a relay passes
/// a FIN on. Once `to` refuses a write, the rest of `from` is read and
/// dropped, so that its writer never blocks on the proxy.
fn pump(mut from: TcpStream, mut to: TcpStream, tamper: Tamper) -> Pumped {
    let mut seen = Pumped::default();
    let mut held: Option<Vec<u8>> = None;
    let mut open = true;
    let mut send = |chunk: &[u8], seen_wire: &mut Vec<u8>| {
        if open && to.write_all(chunk).is_ok() {
            seen_wire.extend_from_slice(chunk);
        } else {
            open = false;
        }
    };
    while let Ok(payload) = try_read_frame(&mut from) {
        let n = seen.frames.len();
        seen.frames.push(payload.clone());
        let mut out: Vec<Vec<u8>> = Vec::new();
        if n < HANDSHAKE_FRAMES {
            let mut this = frame(&payload);
            if let Tamper::Handshake { frame: f, with } = &tamper
                && *f == n
            {
                this = match with {
                    Some(other) => frame(other),
                    None => {
                        *this.last_mut().unwrap() ^= 1;
                        this
                    }
                };
            }
            out.push(this);
            if n == HANDSHAKE_FRAMES - 1
                && let Tamper::AfterHandshake(extra) = &tamper
            {
                out.extend(extra.iter().map(|p| frame(p)));
            }
        } else {
            let r = n - HANDSHAKE_FRAMES;
            let mut this = frame(&payload);
            match &tamper {
                Tamper::Flip { at, spot } if *at == r => flip(&mut this, *spot),
                Tamper::Drop { at } if *at == r => this.clear(),
                Tamper::Replay { at, earlier } if *at == r => {
                    out.push(frame(&seen.frames[HANDSHAKE_FRAMES + earlier]));
                }
                Tamper::Swap { at } if *at == r => {
                    held = Some(std::mem::take(&mut this));
                }
                Tamper::Inject { at, payload } if *at == r => out.push(frame(payload)),
                Tamper::Truncate { at, by } if *at == r => {
                    this = frame(&payload[..payload.len() - by]);
                }
                _ => {}
            }
            if !this.is_empty() {
                out.push(this);
            }
            if let Tamper::Swap { at } = &tamper
                && *at + 1 == r
            {
                out.extend(held.take());
            }
        }
        for chunk in out {
            send(&chunk, &mut seen.wire);
        }
    }
    if let Some(chunk) = held {
        send(&chunk, &mut seen.wire);
    }
    // An mpconn end that stops sending has ended the connection both ways
    // (it shuts its socket down whole): so does the proxy with its side of
    // it, which fails a write of the other way's pump blocked on it (that
    // pump then drains), as a real path would with a reset.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Write);
    seen
}

fn flip(wire: &mut [u8], spot: Spot) {
    let len = u32::from_be_bytes(wire[..4].try_into().unwrap());
    let header = |wire: &mut [u8], bit: u32| {
        wire[..4].copy_from_slice(&(len ^ (1 << bit)).to_be_bytes());
    };
    match spot {
        Spot::HeaderShorter => header(wire, len.trailing_zeros()),
        Spot::HeaderLonger(bit) => {
            assert_eq!(len & (1 << bit), 0, "bit {bit} of {len} is set");
            header(wire, bit);
        }
        Spot::HeaderHigh(bit) => {
            assert!(bit >= 16);
            header(wire, bit);
        }
        Spot::Body(at) => wire[4 + at] ^= 1,
        Spot::FromEnd(back) => {
            let at = wire.len() - back;
            wire[at] ^= 1;
        }
    }
}

/// A TCP proxy in front of a listener: each `relay` takes the next
/// connection made to it.
struct Proxy {
    socket: TcpListener,
    target: SocketAddr,
}

impl Proxy {
    fn new(target: &Address) -> Proxy {
        let Address::Tcp(target) = target else {
            panic!("not TCP: {target:?}")
        };
        Proxy {
            socket: TcpListener::bind("127.0.0.1:0").unwrap(),
            target: *target,
        }
    }

    fn address(&self) -> Address {
        Address::Tcp(self.socket.local_addr().unwrap())
    }

    /// Accepts one client, connects to the target, and pumps both ways on
    /// threads of their own; the handle gives what each way saw.
    fn relay(&self, to_listener: Tamper, to_client: Tamper) -> thread::JoinHandle<Relayed> {
        let socket = self.socket.try_clone().unwrap();
        let target = self.target;
        thread::spawn(move || {
            let (client, _) = socket.accept().unwrap();
            let listener = TcpStream::connect(target).unwrap();
            client.set_nodelay(true).unwrap();
            listener.set_nodelay(true).unwrap();
            let (c, l) = (client.try_clone().unwrap(), listener.try_clone().unwrap());
            let up = thread::spawn(move || pump(c, l, to_listener));
            let to_client = pump(listener, client, to_client);
            Relayed {
                to_listener: up.join().unwrap(),
                to_client,
            }
        })
    }
}

fn encrypted_listener() -> mpconn::Listener {
    ListenerOptions::new()
        .encrypted(true)
        .bind("127.0.0.1:0", KEY)
        .unwrap()
}

fn encrypted_client(address: &Address) -> mpconn::Result<Connection> {
    Client::builder().encrypted(true).connect(address, KEY)
}

/// A client through the proxy and the listener's side of it.
fn connect(listener: &mpconn::Listener, proxy: &Proxy) -> (Connection, Connection) {
    let address = proxy.address();
    let client = thread::spawn(move || encrypted_client(&address).unwrap());
    let server = listener.accept().unwrap();
    (client.join().unwrap(), server)
}

/// What went wrong for the receiver, as a case expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A record did not open.
    Tampered,
    /// A length header past the record limit: a framing error.
    TooLarge,
    /// A length header with its sign bit set: a framing error.
    Negative,
}

impl Expect {
    fn matches(self, e: &Error) -> bool {
        match self {
            Expect::Tampered => matches!(e, Error::Protocol(ProtocolError::Tampered)),
            Expect::TooLarge => matches!(e, Error::MessageTooLarge { max: 65_535, .. }),
            Expect::Negative => matches!(e, Error::Protocol(ProtocolError::NegativeLength(_))),
        }
    }

    /// What every later receive gives.
    fn later(self, e: &Error) -> bool {
        match self {
            Expect::Tampered => matches!(e, Error::Protocol(ProtocolError::Tampered)),
            _ => matches!(e, Error::Protocol(ProtocolError::Desynchronized)),
        }
    }
}

/// The length of the pieces of plaintext looked for.
const PIECE: usize = 16;

/// The first of `pieces` (each `PIECE` bytes) that occurs in `hay`: a
/// rolling hash over `hay`, once for all pieces, fast in debug builds.
fn find_piece<'a>(hay: &[u8], pieces: &[&'a [u8]]) -> Option<&'a [u8]> {
    const BASE: u64 = 257;
    let hash = |w: &[u8]| {
        w.iter().fold(0u64, |h, &b| {
            h.wrapping_mul(BASE).wrapping_add(u64::from(b))
        })
    };
    let wanted: std::collections::HashMap<u64, Vec<&[u8]>> =
        pieces.iter().fold(Default::default(), |mut m, p| {
            assert_eq!(p.len(), PIECE);
            m.entry(hash(p)).or_default().push(*p);
            m
        });
    // A cheap first filter: SipHash at every byte is slow in debug builds.
    let mut maybe = vec![false; 1 << 16];
    for h in wanted.keys() {
        maybe[(*h & 0xffff) as usize] = true;
    }
    if hay.len() < PIECE {
        return None;
    }
    let top = (1..PIECE).fold(1u64, |p, _| p.wrapping_mul(BASE));
    let mut h = hash(&hay[..PIECE]);
    for at in 0..=hay.len() - PIECE {
        if maybe[(h & 0xffff) as usize]
            && let Some(candidates) = wanted.get(&h)
            && let Some(p) = candidates.iter().find(|p| **p == &hay[at..at + PIECE])
        {
            return Some(p);
        }
        if at + PIECE < hay.len() {
            h = h
                .wrapping_sub(u64::from(hay[at]).wrapping_mul(top))
                .wrapping_mul(BASE)
                .wrapping_add(u64::from(hay[at + PIECE]));
        }
    }
    None
}

/// Asserts that no plaintext crossed the proxy, either way: no `PIECE`
/// bytes of any message, taken at its start, its middle and its end (the
/// messages are pseudo-random: 16 bytes of one occur elsewhere only by a
/// negligible chance), nor of the marker.
fn assert_no_plaintext(relayed: &Relayed, sent: &[Vec<u8>]) {
    let mut pieces: Vec<&[u8]> = vec![&MARKER[..PIECE], &MARKER[PIECE..2 * PIECE]];
    for m in sent {
        if m.len() >= PIECE {
            for at in [0, (m.len() - PIECE) / 2, m.len() - PIECE] {
                pieces.push(&m[at..at + PIECE]);
            }
        }
    }
    for (name, pumped) in [
        ("to listener", &relayed.to_listener),
        ("to client", &relayed.to_client),
    ] {
        let found = find_piece(&pumped.wire, &pieces);
        assert!(
            found.is_none(),
            "{name}: plaintext {found:?} crossed the proxy"
        );
    }
}

/// One tampered connection: the receiver side sends one message the other
/// way first (so that both directions carry records), then the sender
/// sends the checksummed stream through the proxy, which alters it as
/// `tamper` says. Asserts the four things of the module's docs and
/// returns what the proxy saw.
fn tampered(dir: Dir, tamper: Tamper, at: usize, expect: Expect) -> Relayed {
    let listener = encrypted_listener();
    let proxy = Proxy::new(listener.address());
    tampered_through(&listener, &proxy, dir, tamper, at, expect)
}

fn tampered_through(
    listener: &mpconn::Listener,
    proxy: &Proxy,
    dir: Dir,
    tamper: Tamper,
    at: usize,
    expect: Expect,
) -> Relayed {
    let case = format!("{dir:?} {tamper:?}");
    let relay = match dir {
        Dir::ToListener => proxy.relay(tamper, Tamper::Nothing),
        Dir::ToClient => proxy.relay(Tamper::Nothing, tamper),
    };
    let (client, server) = connect(listener, proxy);
    let (mut sender, mut receiver) = match dir {
        Dir::ToListener => (client, server),
        Dir::ToClient => (server, client),
    };
    receiver.send_bytes(&other_message()).unwrap();
    assert_eq!(sender.recv_bytes().unwrap(), other_message(), "{case}");

    let (done, wait) = mpsc::channel::<()>();
    let sending = thread::spawn(move || {
        for i in 0..SIZES.len() {
            // The receiver may be gone before the last ones: a failed send
            // is no finding, only what is delivered.
            if sender.send_bytes(&message(i)).is_err() {
                break;
            }
        }
        // Gone only when the test failed already.
        let _ = wait.recv();
        let started = Instant::now();
        let next = sender.recv_bytes_timeout(PATIENCE);
        (next, started.elapsed())
    });

    let mut delivered = 0;
    let error = loop {
        match receiver.recv_bytes_timeout(PATIENCE) {
            Ok(m) => {
                assert!(delivered < SIZES.len(), "{case}: more messages than sent");
                assert_eq!(
                    check_message(&m),
                    Ok((STREAM, delivered as u32)),
                    "{case}: an altered message was delivered"
                );
                assert!(
                    m == message(delivered),
                    "{case}: message {delivered} differs"
                );
                delivered += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(
        expect.matches(&error),
        "{case}: expected {expect:?}, got {error:?}"
    );
    assert_eq!(
        delivered,
        messages_before(at),
        "{case}: the messages wholly before record {at}"
    );
    for _ in 0..2 {
        let again = receiver.recv_bytes_timeout(PATIENCE).unwrap_err();
        assert!(
            expect.later(&again),
            "{case}: a later receive gave {again:?}"
        );
    }
    let sent_after = receiver.send_bytes(&message(0));
    assert!(
        sent_after.is_err(),
        "{case}: the receiver could still send after the error"
    );
    done.send(()).unwrap();
    let (next, took) = sending.join().unwrap();
    assert!(
        matches!(next, Err(Error::Eof) | Err(Error::Io(_))),
        "{case}: the sender's next receive gave {next:?} after {took:?}, not the end"
    );
    drop(receiver);
    let relayed = relay.join().unwrap();
    assert_no_plaintext(&relayed, &all_messages());
    relayed
}

/// An untouched connection through the proxy, with the traffic of a case:
/// everything arrives; returns what the proxy saw.
fn untouched_through(listener: &mpconn::Listener, proxy: &Proxy, dir: Dir) -> Relayed {
    let relay = proxy.relay(Tamper::Nothing, Tamper::Nothing);
    let (client, server) = connect(listener, proxy);
    let (mut sender, mut receiver) = match dir {
        Dir::ToListener => (client, server),
        Dir::ToClient => (server, client),
    };
    receiver.send_bytes(&other_message()).unwrap();
    assert_eq!(sender.recv_bytes().unwrap(), other_message());
    let sending = thread::spawn(move || {
        for i in 0..SIZES.len() {
            sender.send_bytes(&message(i)).unwrap();
        }
        sender
    });
    for i in 0..SIZES.len() {
        assert!(receiver.recv_bytes().unwrap() == message(i), "message {i}");
    }
    drop(sending.join().unwrap());
    assert!(matches!(receiver.recv_bytes(), Err(Error::Eof)));
    drop(receiver);
    let relayed = relay.join().unwrap();
    assert_no_plaintext(&relayed, &all_messages());
    relayed
}

#[test]
fn the_proxy_counts_the_frames_right_and_an_untouched_connection_works() {
    let _w = watchdog(20);
    let listener = encrypted_listener();
    let proxy = Proxy::new(listener.address());
    let relayed = untouched_through(&listener, &proxy, Dir::ToListener);
    let up = &relayed.to_listener.frames;
    assert!(up[0].starts_with(b"{sha256}"), "the client's answer");
    assert!(up[1].starts_with(b"#CHALLENGE#"), "the client's challenge");
    assert_eq!(up[2], b"#WELCOME#");
    assert_eq!(up[3].len(), 48, "the Noise reply: a key and a tag");
    let down = &relayed.to_client.frames;
    assert!(
        down[0].starts_with(b"#CHALLENGE#"),
        "the listener's challenge"
    );
    assert_eq!(down[1], b"#WELCOME#");
    assert!(down[2].starts_with(b"{sha256}"), "the listener's answer");
    assert_eq!(down[3].len(), 48, "the first Noise message");
    // One record for the message the other way, and as many as the sizes
    // say for the stream: the records the cases count are these.
    assert_eq!(relayed.to_client.records().len(), 1);
    assert_eq!(relayed.to_listener.records().len(), total_records());
    assert_eq!(total_records(), 11);
    let lengths: Vec<usize> = relayed.to_listener.records().iter().map(Vec::len).collect();
    assert_eq!(
        lengths,
        [
            50, 1040, 65_535, 34_521, 90, 65_535, 65_535, 65_535, 3_483, 47, 3_040
        ]
    );
}

/// Records 0 (the first of all), 3 (the second of a two-record message,
/// whose first record opened), 6 (inside a four-record message) and 10
/// (the last).
const SPOTS_AT: [usize; 4] = [0, 3, 6, 10];

#[test]
fn a_flipped_bit_in_a_ciphertext_or_its_tag_is_tampered_either_way() {
    let _w = watchdog(30);
    for dir in [Dir::ToListener, Dir::ToClient] {
        for at in SPOTS_AT {
            for spot in [
                Spot::Body(0),
                Spot::Body(9),
                Spot::Body(40),
                Spot::FromEnd(17),
                Spot::FromEnd(16),
                Spot::FromEnd(8),
                Spot::FromEnd(1),
            ] {
                tampered(dir, Tamper::Flip { at, spot }, at, Expect::Tampered);
            }
        }
    }
}

/// A flip in a length header changes the framing. Made deterministic:
/// - a set bit cleared: the record is read short, and does not open;
/// - a clear low bit set, on a record that is not the last: the record is
///   read with the first bytes of the next frame, and does not open.
///
/// A longer length on the last record would wait for bytes that never
/// come (a timeout), so it is not a case here.
#[test]
fn a_flipped_bit_in_a_length_header_that_stays_in_bounds_is_tampered() {
    let _w = watchdog(30);
    for dir in [Dir::ToListener, Dir::ToClient] {
        for at in SPOTS_AT {
            let spot = Spot::HeaderShorter;
            tampered(dir, Tamper::Flip { at, spot }, at, Expect::Tampered);
        }
        // Clear bits of the lengths (see the first test): record 0 is 50
        // bytes, record 3 34,521, record 4 90; record 6 is 65,535 bytes
        // (every bit below 16 set), so only a short read stays in bounds.
        for (at, bits) in [(0, [0, 3]), (3, [1, 8]), (4, [2, 5])] {
            for bit in bits {
                let spot = Spot::HeaderLonger(bit);
                tampered(dir, Tamper::Flip { at, spot }, at, Expect::Tampered);
            }
        }
    }
}

/// A flip of a high bit of a length header is a framing error before any
/// decryption: past the 65,535-byte record limit (bits 16 to 30) or a
/// negative length (bit 31). The receiver must still end the connection.
///
/// (This test found the receiver marking itself broken without ending the
/// stream, so that it could still send and its peer waited for nothing.)
#[test]
fn a_length_header_past_the_record_limit_is_refused_and_ends_the_connection() {
    let _w = watchdog(30);
    let mut failed = Vec::new();
    for dir in [Dir::ToListener, Dir::ToClient] {
        for (bit, expect) in [
            (16, Expect::TooLarge),
            (30, Expect::TooLarge),
            (31, Expect::Negative),
        ] {
            let spot = Spot::HeaderHigh(bit);
            // Every case runs, and the failing ones are listed at the end.
            let run = || tampered(dir, Tamper::Flip { at: 3, spot }, 3, expect);
            if std::panic::catch_unwind(run).is_err() {
                failed.push(format!("{dir:?} bit {bit}"));
            }
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
}

#[test]
fn a_dropped_record_is_tampered() {
    let _w = watchdog(30);
    for dir in [Dir::ToListener, Dir::ToClient] {
        for at in [0, 2, 3, 6, 9] {
            tampered(dir, Tamper::Drop { at }, at, Expect::Tampered);
        }
    }
}

#[test]
fn a_replayed_record_is_tampered() {
    let _w = watchdog(30);
    for dir in [Dir::ToListener, Dir::ToClient] {
        // The record just before, one long before, and the second record
        // of a message replayed where the message's next record belongs.
        for (at, earlier) in [(1, 0), (4, 1), (4, 3), (7, 6), (10, 0)] {
            tampered(dir, Tamper::Replay { at, earlier }, at, Expect::Tampered);
        }
    }
}

#[test]
fn two_records_swapped_are_tampered() {
    let _w = watchdog(30);
    for dir in [Dir::ToListener, Dir::ToClient] {
        // Two messages' records; a message's two records; a message's last
        // record and the next message's first.
        for at in [0, 2, 3, 5, 9] {
            tampered(dir, Tamper::Swap { at }, at, Expect::Tampered);
        }
    }
}

#[test]
fn a_record_cut_short_with_its_header_fixed_is_tampered() {
    let _w = watchdog(30);
    for dir in [Dir::ToListener, Dir::ToClient] {
        for at in [0, 3, 6, 10] {
            // One byte of the tag; the whole tag (what is left is the
            // ciphertext alone); and, for the first record of a small
            // message, all but 15 bytes (shorter than a tag).
            tampered(dir, Tamper::Truncate { at, by: 1 }, at, Expect::Tampered);
            tampered(dir, Tamper::Truncate { at, by: 16 }, at, Expect::Tampered);
        }
        // Record 0 is 10 + 16 + 8 + 16 = 50 bytes.
        tampered(dir, Tamper::Truncate { at: 0, by: 35 }, 0, Expect::Tampered);
        tampered(dir, Tamper::Truncate { at: 0, by: 50 }, 0, Expect::Tampered);
    }
}

/// A record of another encrypted connection made through the same proxy,
/// to the same listener with the same key, put in front of the record of
/// the same number and length (so that even the nonce is the one expected):
/// the keys differ, and it does not open. Then random bytes of a record's
/// length, a frame as short as a tag, and an empty one.
#[test]
fn an_injected_record_from_another_connection_or_random_is_tampered() {
    let _w = watchdog(30);
    let listener = encrypted_listener();
    let proxy = Proxy::new(listener.address());
    for dir in [Dir::ToListener, Dir::ToClient] {
        let other = untouched_through(&listener, &proxy, dir);
        for at in [0, 3, 4, 10] {
            let payload = other.way(dir).records()[at].clone();
            let tamper = Tamper::Inject { at, payload };
            tampered_through(&listener, &proxy, dir, tamper, at, Expect::Tampered);
        }
        let mut seed = 0x1234_5678_9abc_def0u64;
        for (at, len) in [(0, 50), (3, 34_521), (4, 65_535), (4, 16), (6, 0)] {
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let tamper = Tamper::Inject { at, payload };
            tampered_through(&listener, &proxy, dir, tamper, at, Expect::Tampered);
        }
    }
}

/// The search that the plaintext assertions rest on finds plaintext where
/// there is some: a message's piece at any offset, the marker too.
#[test]
fn the_plaintext_search_finds_plaintext_that_is_there() {
    let m = message(2);
    let pieces: Vec<&[u8]> = vec![&m[5000..5000 + PIECE], &MARKER[..PIECE]];
    for at in [0, 1, 777, 99_983] {
        let mut hay = checksummed(99, 0, 100_000);
        hay[at..at + PIECE].copy_from_slice(pieces[0]);
        assert_eq!(find_piece(&hay, &pieces), Some(pieces[0]), "at {at}");
        hay[at..at + PIECE].copy_from_slice(pieces[1]);
        assert_eq!(find_piece(&hay, &pieces), Some(pieces[1]), "at {at}");
    }
    assert_eq!(find_piece(&checksummed(99, 0, 100_000), &pieces), None);
    assert_eq!(find_piece(&m, &pieces), Some(pieces[0]));
}

/// A failed handshake as the listener told it: its authentication error,
/// if it is one, and the error's text.
type Failure = (Option<AuthError>, String);

/// An encrypted listener that tells each failed handshake on `failures`,
/// and whose accept gives up after a short while, so that a test can wait
/// for a failure.
fn watched_listener() -> (mpconn::Listener, mpsc::Receiver<Failure>) {
    let (tell, failures) = mpsc::channel();
    let tell = std::sync::Mutex::new(tell);
    let listener = ListenerOptions::new()
        .encrypted(true)
        .accept_timeout(Some(Duration::from_millis(20)))
        .on_handshake_failure(move |f| {
            let auth = match &f.error {
                Error::Auth(e) => Some(e.clone()),
                _ => None,
            };
            let _ = tell.lock().unwrap().send((auth, f.error.to_string()));
        })
        .bind("127.0.0.1:0", KEY)
        .unwrap();
    (listener, failures)
}

/// Accepts until the listener reports a failed handshake, which it
/// returns; no connection may be accepted meanwhile.
fn handshake_failure(listener: &mpconn::Listener, failures: &mpsc::Receiver<Failure>) -> Failure {
    loop {
        if let Ok(e) = failures.try_recv() {
            return e;
        }
        match listener.accept() {
            Err(Error::Timeout) => {}
            Ok(_) => panic!("a connection was accepted"),
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A keyless man in the middle relays the whole handshake verbatim, so
/// that both ends complete it, then sends frames of its own to the
/// listener, in front of the client's first record: a plain message, a
/// record sealed on another connection (the first of it, so of the nonce
/// expected), random bytes of a record's length, a frame as short as a
/// tag, an empty frame. The listener reports `Tampered` on its first
/// receive and delivers nothing, then nor the client's own messages; the
/// client's next receive sees the end.
#[test]
fn a_relay_that_injects_its_own_frames_after_the_handshake_is_refused() {
    let _w = watchdog(20);
    let (listener, failures) = watched_listener();
    let proxy = Proxy::new(listener.address());
    let sealed_elsewhere = {
        let relay = proxy.relay(Tamper::Nothing, Tamper::Nothing);
        let address = proxy.address();
        let client = thread::spawn(move || {
            let mut conn = encrypted_client(&address).unwrap();
            conn.send_bytes(MARKER).unwrap();
        });
        let mut server = accept(&listener);
        assert_eq!(server.recv_bytes().unwrap(), MARKER);
        client.join().unwrap();
        drop(server);
        relay.join().unwrap().to_listener.records()[0].clone()
    };
    // The attacker's own words, in clear (not the marker: those may cross).
    let plain = b"the attacker's own plain message!".to_vec();
    for injected in [
        plain,
        sealed_elsewhere,
        checksummed(5, 5, 34),
        vec![0x5a; 16],
        Vec::new(),
    ] {
        let case = format!("injected {} bytes", injected.len());
        let relay = proxy.relay(Tamper::AfterHandshake(vec![injected]), Tamper::Nothing);
        let address = proxy.address();
        let (done, wait) = mpsc::channel::<()>();
        let client = thread::spawn(move || {
            let mut conn = encrypted_client(&address).unwrap();
            for i in 0..3 {
                if conn.send_bytes(&message(i)).is_err() {
                    break;
                }
            }
            wait.recv().unwrap();
            conn.recv_bytes_timeout(PATIENCE)
        });
        let mut server = accept(&listener);
        let e = server.recv_bytes_timeout(PATIENCE).unwrap_err();
        assert!(
            matches!(e, Error::Protocol(ProtocolError::Tampered)),
            "{case}: {e:?}"
        );
        let e = server.recv_bytes_timeout(PATIENCE).unwrap_err();
        assert!(
            matches!(e, Error::Protocol(ProtocolError::Tampered)),
            "{case}: then {e:?}"
        );
        assert!(server.send_bytes(b"anything").is_err(), "{case}");
        done.send(()).unwrap();
        let next = client.join().unwrap();
        assert!(
            matches!(next, Err(Error::Eof) | Err(Error::Io(_))),
            "{case}: the client's next receive gave {next:?}"
        );
        drop(server);
        let relayed = relay.join().unwrap();
        assert_no_plaintext(&relayed, &all_messages());
    }
    assert!(failures.try_recv().is_err(), "no handshake failed");
}

/// Accepts the next connection, past the listener's short accept timeout.
fn accept(listener: &mpconn::Listener) -> Connection {
    loop {
        match listener.accept() {
            Ok(conn) => return conn,
            Err(Error::Timeout) => {}
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A man in the middle with two connections of its own: it accepts the
/// victim client as if it were the listener, connects to the listener as
/// if it were a client, and passes each handshake message from one to the
/// other (it has no key: relaying is all it can do), the Noise messages
/// too. The handshake completes, as through any relay, and both ends talk;
/// but every byte the attacker saw after the handshake is a sealed record:
/// none of the known plaintext, either way, occurs in them.
#[test]
fn a_man_in_the_middle_with_two_connections_sees_no_plaintext() {
    let _w = watchdog(20);
    let listener = encrypted_listener();
    let Address::Tcp(target) = listener.address().clone() else {
        unreachable!()
    };
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let victim_address = Address::Tcp(front.local_addr().unwrap());
    let attacker = thread::spawn(move || {
        let (mut victim, _) = front.accept().unwrap();
        let mut server = TcpStream::connect(target).unwrap();
        let relay = |from: &mut TcpStream, to: &mut TcpStream| {
            let payload = try_read_frame(from).unwrap();
            to.write_all(&frame(&payload)).unwrap();
            payload
        };
        let mut seen = Vec::new();
        // The listener's challenge; the client's answer and challenge.
        seen.push(relay(&mut server, &mut victim));
        seen.push(relay(&mut victim, &mut server));
        seen.push(relay(&mut victim, &mut server));
        // `#WELCOME#`, the listener's answer and the first Noise message.
        for _ in 0..3 {
            seen.push(relay(&mut server, &mut victim));
        }
        // `#WELCOME#` and the Noise reply.
        for _ in 0..2 {
            seen.push(relay(&mut victim, &mut server));
        }
        assert!(seen[0].starts_with(b"#CHALLENGE#"));
        assert_eq!(seen[3], b"#WELCOME#");
        assert_eq!(seen[5].len(), 48, "the first Noise message");
        assert_eq!(seen[6], b"#WELCOME#");
        assert_eq!(seen[7].len(), 48, "the Noise reply");
        // From here on, the attacker relays whatever comes and keeps it.
        let (v, s) = (victim.try_clone().unwrap(), server.try_clone().unwrap());
        let up = thread::spawn(move || pump(v, s, Tamper::Nothing));
        let down = pump(server, victim, Tamper::Nothing);
        Relayed {
            to_listener: up.join().unwrap(),
            to_client: down,
        }
    });
    let client = thread::spawn(move || {
        let mut conn = encrypted_client(&victim_address).unwrap();
        conn.send_bytes(MARKER).unwrap();
        for i in 0..SIZES.len() {
            conn.send_bytes(&message(i)).unwrap();
        }
        assert_eq!(conn.recv_bytes().unwrap(), MARKER);
        assert_eq!(conn.recv_bytes().unwrap(), other_message());
    });
    let mut server = listener.accept().unwrap();
    assert_eq!(server.recv_bytes().unwrap(), MARKER);
    for i in 0..SIZES.len() {
        assert!(server.recv_bytes().unwrap() == message(i), "message {i}");
    }
    server.send_bytes(MARKER).unwrap();
    server.send_bytes(&other_message()).unwrap();
    client.join().unwrap();
    assert!(matches!(server.recv_bytes(), Err(Error::Eof)));
    drop(server);
    let relayed = attacker.join().unwrap();
    // What the attacker pumped after the handshake: records only.
    assert_eq!(relayed.to_listener.frames.len(), 1 + total_records());
    assert_eq!(relayed.to_client.frames.len(), 2);
    assert_no_plaintext(&relayed, &all_messages());
}

/// The relay cannot complete the Noise step with anything but the two
/// ends' own messages: a Noise message altered, or one taken from another
/// connection (same key, same listener), fails the handshake on the side
/// that reads it (`KeyExchange`), and no connection comes of it.
#[test]
fn noise_messages_altered_or_taken_from_another_connection_fail_the_handshake() {
    let _w = watchdog(20);
    let (listener, failures) = watched_listener();
    let proxy = Proxy::new(listener.address());
    let earlier = {
        let relay = proxy.relay(Tamper::Nothing, Tamper::Nothing);
        let address = proxy.address();
        let client = thread::spawn(move || drop(encrypted_client(&address).unwrap()));
        drop(accept(&listener));
        client.join().unwrap();
        relay.join().unwrap()
    };
    let noise_reply = earlier.to_listener.frames[HANDSHAKE_FRAMES - 1].clone();
    let noise_first = earlier.to_client.frames[HANDSHAKE_FRAMES - 1].clone();
    let last = HANDSHAKE_FRAMES - 1;
    // The listener's first Noise message, altered or from the earlier
    // connection: the client refuses it, and the listener sees the client go.
    for with in [None, Some(noise_first)] {
        let tamper = Tamper::Handshake { frame: last, with };
        let relay = proxy.relay(Tamper::Nothing, tamper);
        let address = proxy.address();
        let client = thread::spawn(move || encrypted_client(&address).map(drop));
        let _ = handshake_failure(&listener, &failures);
        let e = client.join().unwrap().unwrap_err();
        assert!(matches!(e, Error::Auth(AuthError::KeyExchange)), "{e:?}");
        relay.join().unwrap();
    }
    // The client's Noise reply, altered or from the earlier connection:
    // the client has finished (it cannot know), the listener refuses it
    // and ends the connection, and the client's receive sees the end.
    for with in [None, Some(noise_reply)] {
        let tamper = Tamper::Handshake { frame: last, with };
        let relay = proxy.relay(tamper, Tamper::Nothing);
        let address = proxy.address();
        let client = thread::spawn(move || {
            let mut conn = encrypted_client(&address).unwrap();
            conn.recv_bytes_timeout(PATIENCE)
        });
        let (e, text) = handshake_failure(&listener, &failures);
        assert_eq!(e, Some(AuthError::KeyExchange), "{text}");
        let next = client.join().unwrap();
        assert!(
            matches!(next, Err(Error::Eof) | Err(Error::Io(_))),
            "the client's receive gave {next:?}"
        );
        relay.join().unwrap();
    }
}
