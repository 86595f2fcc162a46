//! Peak heap use under lying lengths, measured with a counting allocator.
//! Each test runs alone in a child process so that the peak is its own.

#![cfg(unix)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use common::{child_role, expect_success, spawn_child, watchdog};
use mpconn::{Connection, Error, Unverified};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only keeps counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: the caller's layout contract passes straight through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `body` in a child process of its own; returns whether this process is that child.
/// The child has a watchdog too, so that a decoder that spins cannot outlive the test.
fn isolated(test: &str) -> bool {
    if child_role().as_deref() == Some("memory") {
        std::mem::forget(watchdog(60));
        return true;
    }
    let _w = watchdog(60);
    expect_success(spawn_child(test, "memory", Stdio::null(), &[]));
    false
}

/// A connection whose peer is a raw socket the test writes into.
fn raw_peer() -> (UnixStream, Connection<Unverified>) {
    let (raw, ours) = UnixStream::pair().unwrap();
    (raw, Connection::from(OwnedFd::from(ours)))
}

const MIB: usize = 1 << 20;

#[test]
fn a_lying_length_costs_what_was_sent_not_what_was_claimed() {
    if !isolated("a_lying_length_costs_what_was_sent_not_what_was_claimed") {
        return;
    }
    let (mut raw, mut conn) = raw_peer();
    conn.set_max_message_size(4 << 30);
    // Claims 3 GiB, sends 2 MiB, then leaves. Built before measuring.
    let mut wire = vec![0xff; 4];
    wire.extend_from_slice(&(3u64 << 30).to_be_bytes());
    wire.extend_from_slice(&vec![7u8; 2 * MIB]);
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let writer = thread::spawn(move || raw.write_all(&wire).unwrap());
    let err = conn.recv_bytes().unwrap_err();
    writer.join().unwrap();
    assert!(
        matches!(err, Error::Truncated { received, .. } if received == 2 * MIB as u64),
        "{err}"
    );
    // Growth doubles with what arrived, and a reallocation briefly holds the
    // old and the new block: a small multiple of what was received, nowhere
    // near the 3 GiB claimed.
    let peak = PEAK.load(Ordering::SeqCst) - base;
    assert!(
        peak <= 4 * 2 * MIB + MIB,
        "peak {peak} bytes for 2 MiB received"
    );
}

#[test]
fn decode_bombs_allocate_nothing_near_their_claims() {
    if !isolated("decode_bombs_allocate_nothing_near_their_claims") {
        return;
    }
    let (mut a, mut b) = mpconn::pipe().unwrap();
    for claim in [1u64 << 40, 1 << 30, 100 * MIB as u64] {
        let mut bomb = vec![0xfd];
        bomb.extend_from_slice(&claim.to_le_bytes());
        bomb.extend_from_slice(&[b'x'; 64]);
        a.send_bytes(&bomb).unwrap();
        a.send_bytes(&bomb).unwrap();
        a.send_bytes(&bomb).unwrap();
        let base = CURRENT.load(Ordering::SeqCst);
        PEAK.store(base, Ordering::SeqCst);
        assert!(matches!(b.recv::<String>(), Err(Error::Codec(_))));
        assert!(matches!(b.recv::<Vec<u8>>(), Err(Error::Codec(_))));
        assert!(matches!(b.recv::<Vec<String>>(), Err(Error::Codec(_))));
        let peak = PEAK.load(Ordering::SeqCst) - base;
        assert!(peak < 2 * MIB, "claim {claim}: peak {peak} bytes");
    }
}

/// Takes no bytes on the wire and 32 in memory.
#[derive(Debug, serde::Deserialize)]
struct Skipped {
    #[serde(skip)]
    _cache: [u64; 4],
}

#[test]
fn zero_byte_elements_cannot_claim_2_pow_63_of_themselves() {
    if !isolated("zero_byte_elements_cannot_claim_2_pow_63_of_themselves") {
        return;
    }
    let (mut a, mut b) = mpconn::pipe().unwrap();
    // Nine bytes: a sequence of 2^63 elements that take no bytes each.
    let mut bomb = vec![0xfd];
    bomb.extend_from_slice(&(1u64 << 63).to_le_bytes());
    for _ in 0..3 {
        a.send_bytes(&bomb).unwrap();
    }
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let start = std::time::Instant::now();
    let results = [
        b.recv::<Vec<Skipped>>().map(drop),
        b.recv::<Vec<()>>().map(drop),
        b.recv::<std::collections::BTreeMap<(), ()>>().map(drop),
    ];
    let elapsed = start.elapsed();
    for result in results {
        assert!(
            matches!(&result, Err(Error::Codec(e))
                if e.to_string().contains("sequence elements and map entries")),
            "{result:?}"
        );
    }
    let peak = PEAK.load(Ordering::SeqCst) - base;
    assert!(peak < MIB, "peak {peak} bytes");
    // The watchdog ends a decoder that spins; this says it was quick.
    assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
}

#[cfg(feature = "pickle")]
#[test]
fn pickle_mark_bombs_are_refused_before_they_allocate() {
    if !isolated("pickle_mark_bombs_are_refused_before_they_allocate") {
        return;
    }
    let (mut a, mut b) = mpconn::pipe().unwrap();
    b.set_codec(mpconn::Codec::Pickle);
    let pickle = |body: Vec<u8>| [vec![0x80, 4], body, vec![b'.']].concat();
    // 1 MiB of MARKs; of MARK and EMPTY_LIST; of empty tuples built from
    // MARKs. serde-pickle reserves 4 KiB at each MARK: 4 GiB, 2 GiB, 2 GiB.
    let bombs = [
        pickle([vec![b'('; MIB], vec![b'N']].concat()),
        pickle(b"(]".repeat(MIB / 2)),
        pickle([b"](".to_vec(), b"(t".repeat(MIB / 2), b"e".to_vec()].concat()),
    ];
    for bomb in bombs {
        // Sent from a thread: 2 MiB do not fit the socket's buffer.
        let writer = thread::spawn(move || {
            a.send_bytes(&bomb).unwrap();
            a.send_bytes(&bomb).unwrap();
            a
        });
        let base = CURRENT.load(Ordering::SeqCst);
        PEAK.store(base, Ordering::SeqCst);
        let typed = b.recv::<mpconn::pickle::Value>().map(drop);
        let dynamic = b.recv_pickle_value().map(drop);
        a = writer.join().unwrap();
        for result in [typed, dynamic] {
            assert!(
                matches!(&result, Err(Error::Codec(e)) if e.to_string().contains("more than")
                    || e.to_string().contains("deeper than")),
                "{result:?}"
            );
        }
        // The message itself (1 MiB) is read into memory; the decoder adds
        // little to it.
        let peak = PEAK.load(Ordering::SeqCst) - base;
        assert!(peak < 8 * MIB, "peak {peak} bytes");
    }
}
