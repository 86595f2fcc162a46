use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{MessageCodec, RESERVE_AHEAD, put_header};
use crate::connection::DEFAULT_MAX_MESSAGE;
use crate::error::{Error, ProtocolError};

/// A payload whose bytes depend on its length and position, so that a
/// shifted or mixed-up frame shows.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + len) as u8).collect()
}

fn encoded(messages: &[Vec<u8>]) -> BytesMut {
    let mut codec = MessageCodec::new();
    let mut out = BytesMut::new();
    for m in messages {
        codec.encode(m.as_slice(), &mut out).unwrap();
    }
    out
}

fn header(len: u64) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_header(len, &mut out);
    out.to_vec()
}

fn extended_header(len: u64) -> Vec<u8> {
    let mut out = vec![0xff; 4];
    out.extend_from_slice(&len.to_be_bytes());
    out
}

/// Decodes everything in `buf`, as `Framed` does before reading more.
fn decode_all(codec: &mut MessageCodec, buf: &mut BytesMut) -> Vec<BytesMut> {
    let mut out = Vec::new();
    while let Some(m) = codec.decode(buf).unwrap() {
        out.push(m);
    }
    out
}

const SIZES: [usize; 10] = [0, 1, 2, 3, 4, 5, 255, 16 * 1024, 64 * 1024 - 1, 64 * 1024];

#[test]
fn messages_round_trip_back_to_back() {
    let mut sizes = SIZES.to_vec();
    sizes.extend([64 * 1024 + 1, RESERVE_AHEAD * 3 + 7]);
    let messages: Vec<Vec<u8>> = sizes.iter().map(|&n| payload(n)).collect();
    let mut buf = encoded(&messages);
    let total: usize = sizes.iter().map(|n| n + 4).sum();
    assert_eq!(buf.len(), total, "each message takes a 4-byte header");

    let mut codec = MessageCodec::new();
    let got = decode_all(&mut codec, &mut buf);
    assert_eq!(got.len(), messages.len());
    for (got, want) in got.iter().zip(&messages) {
        assert_eq!(&got[..], &want[..], "a message of {} bytes", want.len());
    }
    assert!(buf.is_empty());
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
}

#[test]
fn the_encoder_writes_cpython_headers() {
    assert_eq!(&encoded(&[Vec::new()])[..], [0, 0, 0, 0]);
    assert_eq!(
        &encoded(&[b"abc".to_vec()])[..],
        [0, 0, 0, 3, b'a', b'b', b'c']
    );
    assert_eq!(header(0x7fff_ffff), [0x7f, 0xff, 0xff, 0xff]);
    // Above i32::MAX: the -1 marker and an 8-byte big-endian length.
    assert_eq!(header(0x8000_0000), extended_header(0x8000_0000));
    assert_eq!(
        header(0x8000_0000),
        [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
    );
    assert_eq!(header(1 << 40), extended_header(1 << 40));
}

#[test]
fn the_encoder_takes_any_byte_container() {
    let mut codec = MessageCodec::new();
    let mut out = BytesMut::new();
    codec.encode(b"a".as_slice(), &mut out).unwrap();
    codec.encode(vec![b'b'], &mut out).unwrap();
    codec.encode(Bytes::from_static(b"c"), &mut out).unwrap();
    codec.encode(BytesMut::from(&b"d"[..]), &mut out).unwrap();
    codec.encode("e", &mut out).unwrap();
    codec.encode(*b"f", &mut out).unwrap();
    let got = decode_all(&mut MessageCodec::new(), &mut out);
    let got: Vec<&[u8]> = got.iter().map(|m| &m[..]).collect();
    assert_eq!(got, [b"a", b"b", b"c", b"d", b"e", b"f"]);
}

#[test]
fn an_extended_header_with_a_small_length_decodes() {
    // CPython never writes one, but it reads one, and so do we.
    let mut buf = BytesMut::from(&extended_header(3)[..]);
    buf.put_slice(b"xyz");
    buf.put_slice(&header(1));
    buf.put_slice(b"!");
    let got = decode_all(&mut MessageCodec::new(), &mut buf);
    assert_eq!(got, [&b"xyz"[..], &b"!"[..]]);
}

#[test]
fn bytes_fed_one_at_a_time_give_the_same_messages() {
    let messages: Vec<Vec<u8>> = SIZES[..8].iter().map(|&n| payload(n)).collect();
    let mut wire = encoded(&messages).to_vec();
    wire.extend_from_slice(&extended_header(4));
    wire.extend_from_slice(b"long");

    let mut codec = MessageCodec::new();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &byte in &wire {
        buf.put_u8(byte);
        got.extend(decode_all(&mut codec, &mut buf));
    }
    assert_eq!(got.len(), messages.len() + 1);
    for (got, want) in got.iter().zip(&messages) {
        assert_eq!(&got[..], &want[..], "a message of {} bytes", want.len());
    }
    assert_eq!(&got[messages.len()][..], b"long");
    assert!(buf.is_empty());
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
}

#[test]
fn the_limit_is_inclusive() {
    let mut codec = MessageCodec::new().max_message_size(10);
    assert_eq!(codec.max_message(), 10);
    let mut buf = encoded(&[payload(10), payload(11)]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 10);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { len: 11, max: 10 }),
        "{err:?}"
    );
    assert_eq!(MessageCodec::default().max_message(), DEFAULT_MAX_MESSAGE);
}

#[test]
fn an_oversized_header_is_refused_before_any_allocation() {
    for wire in [extended_header(1 << 62), header(DEFAULT_MAX_MESSAGE + 1)] {
        let mut buf = BytesMut::from(&wire[..]);
        let before = buf.capacity();
        let err = MessageCodec::new().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, Error::MessageTooLarge { max, .. } if max == DEFAULT_MAX_MESSAGE),
            "{err:?}"
        );
        assert_eq!(buf.capacity(), before, "nothing reserved for the claim");
    }
}

#[test]
fn without_a_limit_memory_follows_the_bytes_that_arrive() {
    // A peer announces 2^62 bytes (and then, say, 0x7fff_ffff) to a codec
    // whose limit is lifted: the room reserved follows what arrives, never
    // the claim.
    for wire in [extended_header(1 << 62), header(0x7fff_ffff)] {
        let mut codec = MessageCodec::new().max_message_size(u64::MAX);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 2 * RESERVE_AHEAD, "{}", buf.capacity());

        let chunk = vec![7u8; 10_000];
        let mut arrived = 0;
        while arrived < 1 << 20 {
            buf.put_slice(&chunk);
            arrived += chunk.len();
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(
                buf.capacity() <= 2 * (arrived + RESERVE_AHEAD),
                "{} bytes arrived, capacity {}",
                arrived,
                buf.capacity()
            );
        }
    }
}

#[test]
fn negative_and_oversized_extended_lengths_are_protocol_errors() {
    let cases = [
        (
            (-2i32).to_be_bytes().to_vec(),
            ProtocolError::NegativeLength(-2),
        ),
        (
            i32::MIN.to_be_bytes().to_vec(),
            ProtocolError::NegativeLength(i32::MIN),
        ),
        (
            extended_header(u64::MAX),
            ProtocolError::BadExtendedLength(u64::MAX),
        ),
    ];
    for (wire, want) in cases {
        // Even with the limit lifted: these are malformed, not large.
        let mut codec = MessageCodec::new().max_message_size(u64::MAX);
        let mut buf = BytesMut::from(&wire[..]);
        match codec.decode(&mut buf) {
            Err(Error::Protocol(e)) => assert_eq!(e, want),
            other => panic!("{wire:?}: {other:?}"),
        }
    }
}

#[test]
fn after_a_framing_error_every_decode_fails() {
    let bad: [&[u8]; 2] = [&(-5i32).to_be_bytes(), &header(1000)];
    for wire in bad {
        let mut codec = MessageCodec::new().max_message_size(100);
        let mut buf = BytesMut::from(wire);
        assert!(codec.decode(&mut buf).is_err());
        // Well-formed frames after the error are not read: their position
        // in the stream is unknown.
        buf.put_slice(&encoded(&[payload(3), payload(4)]));
        for _ in 0..3 {
            assert!(matches!(
                codec.decode(&mut buf),
                Err(Error::Protocol(ProtocolError::Desynchronized))
            ));
        }
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(Error::Protocol(ProtocolError::Desynchronized))
        ));
    }
}

#[test]
fn an_end_inside_a_frame_is_a_truncation() {
    let mut long = extended_header(9);
    long.truncate(6);
    let mut short_payload = header(10);
    short_payload.extend_from_slice(b"abc");
    let cases: [(&[u8], u64, u64); 4] = [
        (&[0, 0], 4, 2),
        (&long, 12, 6),
        (&short_payload, 10, 3),
        (&header(10), 10, 0),
    ];
    for (wire, expected, received) in cases {
        let mut codec = MessageCodec::new();
        let mut buf = BytesMut::from(wire);
        // What Framed does: decode while it can, decode_eof at the end.
        assert!(codec.decode(&mut buf).unwrap().is_none());
        match codec.decode_eof(&mut buf) {
            Err(Error::Truncated {
                expected: e,
                received: r,
            }) => assert_eq!((e, r), (expected, received), "{wire:?}"),
            other => panic!("{wire:?}: {other:?}"),
        }
        assert!(codec.decode(&mut buf).is_err(), "the stream stays broken");
    }
}

#[test]
fn an_end_between_frames_is_the_end() {
    let mut codec = MessageCodec::new();
    let mut buf = encoded(&[payload(5), Vec::new()]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap().unwrap().len(), 5);
    assert_eq!(codec.decode_eof(&mut buf).unwrap().unwrap().len(), 0);
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
}

#[test]
fn a_lowered_limit_applies_from_the_next_header() {
    let mut codec = MessageCodec::new();
    let mut buf = encoded(&[payload(50), payload(50)]);
    buf.truncate(10); // the first header and part of its payload
    assert!(codec.decode(&mut buf).unwrap().is_none());
    codec.set_max_message_size(20);
    let mut rest = encoded(&[payload(50), payload(50)]);
    let _ = rest.split_to(10);
    buf.put_slice(&rest);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 50);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(Error::MessageTooLarge { len: 50, max: 20 })
    ));
}
