//! The checksummed messages that cross the link: each carries its sequence
//! number, a checksum, and a body whose size and bytes follow from the
//! sequence number, so a receiver notices a message lost, repeated,
//! reordered, cut or altered.

/// Messages per stream.
pub const COUNT: u64 = 10_000;

/// Sequence number (8 bytes) and checksum (8 bytes), little-endian.
const HEADER: usize = 16;

/// The size of message `seq`: mostly up to 2 KiB, one in a hundred or so
/// between 64 KiB and 192 KiB (past CPython's 4-byte header limit of
/// small reads, and past a TCP window under loss).
pub fn size_of(seq: u64) -> usize {
    let h = mix(seq ^ 0x5eed);
    let big = h.is_multiple_of(100);
    let spread = (h >> 8) as usize;
    if big {
        64 * 1024 + 1 + spread % (128 * 1024)
    } else {
        HEADER + spread % 2048
    }
}

/// Message `seq`.
pub fn message(seq: u64) -> Vec<u8> {
    message_sized(seq, size_of(seq))
}

/// Message `seq`, `size` bytes long (16 at least).
pub fn message_sized(seq: u64, size: usize) -> Vec<u8> {
    let mut out = vec![0; size.max(HEADER)];
    let mut state = seq;
    for chunk in out[HEADER..].chunks_mut(8) {
        state = mix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    out[..8].copy_from_slice(&seq.to_le_bytes());
    let sum = checksum(&out[..8], &out[HEADER..]);
    out[8..HEADER].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Checks that `msg` is message `expected`, whole and unaltered.
pub fn check(expected: u64, msg: &[u8]) -> Result<(), String> {
    check_sized(expected, size_of(expected), msg)
}

/// Checks that `msg` is message `expected` of `size` bytes, whole and
/// unaltered.
pub fn check_sized(expected: u64, size: usize, msg: &[u8]) -> Result<(), String> {
    if msg.len() < HEADER {
        return Err(format!(
            "message {expected}: {} bytes, shorter than a header",
            msg.len()
        ));
    }
    let seq = u64::from_le_bytes(msg[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(msg[8..HEADER].try_into().unwrap());
    if sum != checksum(&msg[..8], &msg[HEADER..]) {
        return Err(format!(
            "message {expected} ({} bytes): checksum mismatch",
            msg.len()
        ));
    }
    if seq != expected {
        return Err(format!("message {seq} arrived where {expected} was due"));
    }
    if msg.len() != size {
        return Err(format!("message {seq}: {} bytes, {size} sent", msg.len()));
    }
    Ok(())
}

/// FNV-1a over 64-bit words (fast enough in a debug build), then the tail.
fn checksum(seq: &[u8], body: &[u8]) -> u64 {
    const PRIME: u64 = 0x100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let words = body.chunks_exact(8);
    let tail = words.remainder();
    for word in std::iter::once(seq).chain(words) {
        h = (h ^ u64::from_le_bytes(word.try_into().unwrap())).wrapping_mul(PRIME);
    }
    for &b in tail {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h ^ body.len() as u64
}

/// splitmix64's finaliser.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn every_flipped_bit_and_every_misplaced_message_is_caught() {
    for seq in 0..50 {
        let msg = message(seq);
        check(seq, &msg).unwrap();
        for at in 0..msg.len() {
            for bit in [0x01, 0x80] {
                let mut bad = msg.clone();
                bad[at] ^= bit;
                assert!(check(seq, &bad).is_err(), "flip at {at} of {seq} missed");
            }
        }
        assert!(
            check(seq + 1, &msg).is_err(),
            "message {seq} taken for the next"
        );
        assert!(
            check(seq, &msg[..msg.len() - 1]).is_err(),
            "cut {seq} missed"
        );
    }
}

#[test]
fn a_stream_has_messages_over_64_kib() {
    let big = (0..COUNT).filter(|&s| size_of(s) > 64 * 1024).count();
    assert!((50..200).contains(&big), "{big} messages over 64 KiB");
}
