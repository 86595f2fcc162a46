use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::transport::fake::FakeStream;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn long_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff; 4];
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(5))
}

fn messages() -> Vec<Vec<u8>> {
    vec![
        b"hello".to_vec(),
        Vec::new(),
        vec![1; READ_BUF - 1],
        vec![2; READ_BUF],
        vec![3; 3 * READ_BUF + 17],
        b"x".to_vec(),
    ]
}

#[test]
fn every_read_method_sees_every_message_at_any_chunking() {
    let wire: Vec<u8> = messages().iter().flat_map(|m| frame(m)).collect();
    for chunks in [&[1][..], &[3, 7], &[4096], &[usize::MAX], &[5, 65_536, 2]] {
        for method in 0..3 {
            let stream = FakeStream::new(wire.clone())
                .chunks(chunks)
                .interrupt_every(4);
            let mut reader = FrameReader::new(u64::MAX);
            for m in messages() {
                let got = match method {
                    0 => reader.read_owned(&stream, None).unwrap(),
                    1 => reader.read_with(&stream, None, |b| b.to_vec()).unwrap(),
                    _ => {
                        let mut buf = vec![0xee; m.len() + 10];
                        let n = reader.read_into(&stream, None, &mut buf).unwrap();
                        assert!(buf[n..].iter().all(|&b| b == 0xee), "tail untouched");
                        buf.truncate(n);
                        buf
                    }
                };
                assert_eq!(got, m, "chunks {chunks:?} method {method}");
            }
            assert!(matches!(reader.read_owned(&stream, None), Err(Error::Eof)));
        }
    }
}

#[test]
fn extended_headers_are_read() {
    let stream = FakeStream::new([long_frame(b"abc"), frame(b"d")].concat());
    let mut reader = FrameReader::new(u64::MAX);
    assert_eq!(reader.read_owned(&stream, None).unwrap(), b"abc");
    assert_eq!(reader.read_owned(&stream, None).unwrap(), b"d");
}

#[test]
fn truncation_at_every_offset_is_distinct_from_eof() {
    let wire = [frame(b"first"), frame(&[9; 40])].concat();
    let boundaries = [0, 9, wire.len()];
    for cut in 0..=wire.len() {
        let stream = FakeStream::new(wire[..cut].to_vec()).chunks(&[3]);
        let mut reader = FrameReader::new(u64::MAX);
        let mut received = 0;
        let end = loop {
            match reader.read_owned(&stream, None) {
                Ok(_) => received += 1,
                Err(e) => break e,
            }
        };
        let clean = boundaries.contains(&cut);
        match end {
            Error::Eof => assert!(clean, "cut {cut}: eof inside a frame"),
            Error::Truncated { .. } => assert!(!clean, "cut {cut}: truncated at a boundary"),
            other => panic!("cut {cut}: {other}"),
        }
        let whole = boundaries[1..].iter().filter(|&&b| cut >= b).count();
        assert_eq!(received, whole, "cut {cut}");
    }
}

#[test]
fn buffer_too_short_carries_the_message_and_the_next_one_is_intact() {
    for big in [100, 3 * READ_BUF] {
        let first = vec![4u8; big];
        let stream = FakeStream::new([frame(&first), frame(b"next")].concat()).chunks(&[1000]);
        let mut reader = FrameReader::new(u64::MAX);
        let mut small = [0u8; 10];
        match reader.read_into(&stream, None, &mut small) {
            Err(Error::BufferTooShort(m)) => assert_eq!(m, first),
            other => panic!("{other:?}"),
        }
        assert_eq!(small, [0; 10], "nothing written into a short buffer");
        let n = reader.read_into(&stream, None, &mut small).unwrap();
        assert_eq!(&small[..n], b"next");
    }
}

#[test]
fn oversized_and_negative_headers_poison_the_stream() {
    let stream = FakeStream::new(frame(&[0; 100]));
    let mut reader = FrameReader::new(99);
    assert!(matches!(
        reader.read_owned(&stream, None),
        Err(Error::MessageTooLarge { len: 100, max: 99 })
    ));
    assert!(matches!(
        reader.read_owned(&stream, None),
        Err(Error::Protocol(ProtocolError::Desynchronized))
    ));

    let stream = FakeStream::new([(-2i32).to_be_bytes().to_vec(), frame(b"ok")].concat());
    let mut reader = FrameReader::new(u64::MAX);
    assert!(matches!(
        reader.read_owned(&stream, None),
        Err(Error::Protocol(ProtocolError::NegativeLength(-2)))
    ));
}

#[test]
fn a_lying_length_allocates_only_what_arrived() {
    // Claims 1 GiB, sends 10 bytes, then ends.
    let mut wire = (1u32 << 30).to_be_bytes().to_vec();
    wire.extend_from_slice(&[0; 10]);
    let stream = FakeStream::new(wire);
    let mut reader = FrameReader::new(u64::MAX);
    let err = reader.read_owned(&stream, None).unwrap_err();
    assert!(matches!(err, Error::Truncated { expected, received: 10 } if expected == 1 << 30));
    assert!(reader.buf.capacity() <= READ_BUF);
}

#[test]
fn a_lying_length_grows_with_the_bytes_that_arrive() {
    // Claims 1 GiB, sends 300 KiB: the payload buffer stays within 2x of that.
    let arrived = 300 * 1024;
    let mut wire = (1u32 << 30).to_be_bytes().to_vec();
    wire.extend_from_slice(&vec![0; arrived + 1]);
    let stream = FakeStream::new(wire).hold_back_after(4 + arrived);
    let mut reader = FrameReader::new(u64::MAX);
    assert!(matches!(
        reader.read_owned(&stream, soon()),
        Err(Error::Timeout)
    ));
    let held = reader.partial.as_ref().map_or(0, |p| p.data.capacity());
    assert!(
        held >= arrived - READ_BUF && held <= 2 * arrived + READ_BUF,
        "{held}"
    );
}

#[test]
fn a_timed_out_receive_resumes_with_whole_messages() {
    let big = vec![6u8; 2 * READ_BUF + 5];
    let wire = [frame(&big), frame(b"after")].concat();
    for hold in [2, 4, 100, READ_BUF + 50, 4 + big.len() - 1] {
        for method in 0..2 {
            let stream = FakeStream::new(wire.clone()).hold_back_after(hold);
            let mut reader = FrameReader::new(u64::MAX);
            let mut buf = vec![0u8; big.len()];
            let first = match method {
                0 => reader.read_owned(&stream, soon()).map(drop),
                _ => reader.read_into(&stream, soon(), &mut buf).map(drop),
            };
            assert!(
                matches!(first, Err(Error::Timeout)),
                "hold {hold}: {first:?}"
            );
            stream.release_all();
            match method {
                0 => assert_eq!(reader.read_owned(&stream, soon()).unwrap(), big),
                _ => {
                    let mut fresh = vec![0u8; big.len()];
                    assert_eq!(
                        reader.read_into(&stream, soon(), &mut fresh).unwrap(),
                        big.len()
                    );
                    assert_eq!(fresh, big, "hold {hold}");
                }
            }
            assert_eq!(reader.read_owned(&stream, soon()).unwrap(), b"after");
        }
    }
}

#[test]
fn idle_readers_can_release_their_buffer() {
    let stream = FakeStream::new(frame(b"one"));
    let mut reader = FrameReader::new(u64::MAX);
    reader.read_owned(&stream, None).unwrap();
    assert!(!reader.has_buffered());
    reader.release_if_idle();
    assert_eq!(reader.buf.capacity(), 0);
}

proptest! {
    #[test]
    fn arbitrary_messages_and_chunkings_round_trip(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
        chunks in proptest::collection::vec(1usize..50, 1..8),
        interrupt in prop_oneof![Just(0usize), 2usize..6],
    ) {
        let wire: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
        let stream = FakeStream::new(wire).chunks(&chunks).interrupt_every(interrupt);
        let mut reader = FrameReader::new(u64::MAX);
        for m in &msgs {
            prop_assert_eq!(&reader.read_owned(&stream, None).unwrap(), m);
        }
        prop_assert!(matches!(reader.read_owned(&stream, None), Err(Error::Eof)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(wire in proptest::collection::vec(any::<u8>(), 0..200)) {
        let stream = FakeStream::new(wire);
        let mut reader = FrameReader::new(1000);
        for _ in 0..50 {
            if reader.read_owned(&stream, None).is_err() {
                break;
            }
        }
    }
}

#[test]
fn the_buffer_grows_for_busy_streams_and_shrinks_back_when_quiet() {
    // A busy stream: 2,000 small frames available at once.
    let busy: Vec<u8> = (0..2000).flat_map(|_| frame(&[1; 60])).collect();
    let stream = FakeStream::new(busy);
    let mut reader = FrameReader::new(u64::MAX);
    reader.read_owned(&stream, None).unwrap();
    assert!(reader.buf.capacity() <= READ_MIN, "starts small");
    for _ in 1..2000 {
        reader.read_owned(&stream, None).unwrap();
    }
    assert_eq!(
        reader.target, READ_BUF,
        "grew while reads filled the buffer"
    );

    // Then a quiet stream: one small frame per read.
    let quiet: Vec<u8> = (0..40).flat_map(|_| frame(b"x")).collect();
    let stream = FakeStream::new(quiet).chunks(&[5]);
    for _ in 0..40 {
        reader.read_owned(&stream, None).unwrap();
    }
    assert!(
        reader.buf.capacity() <= READ_MIN,
        "{}",
        reader.buf.capacity()
    );
}
