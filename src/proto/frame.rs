//! Frame headers on byte streams (../PROTOCOL.md, "Framing on byte streams").
//!
//! Pure functions over byte slices: no I/O, no allocation. The readers in
//! `transport` and the handshake machine in `auth` both parse headers here.

use crate::error::ProtocolError;

/// The longest header: the -1 marker and an 8-byte length.
pub const MAX_HEADER: usize = 12;

/// Payloads above this use the extended 12-byte header.
const SHORT_MAX: u64 = 0x7fff_ffff;

/// A parsed header: how many bytes it took and the payload length it announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 4 or 12.
    pub header_len: usize,
    /// The payload length.
    pub payload_len: u64,
}

/// Encodes the header for a payload of `len` bytes into the tail of `out` and
/// returns the number of bytes written there (4 or 12), right-aligned so that
/// `out[MAX_HEADER - n..]` is the header.
pub fn encode_header(len: u64, out: &mut [u8; MAX_HEADER]) -> usize {
    if len <= SHORT_MAX {
        out[8..].copy_from_slice(&(len as u32).to_be_bytes());
        4
    } else {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..].copy_from_slice(&len.to_be_bytes());
        MAX_HEADER
    }
}

/// Parses a header at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold the whole header, together
/// with nothing consumed; call again with more bytes.
///
/// # Errors
/// A negative 4-byte length other than -1, or an extended length above
/// `i64::MAX` (CPython writes the extended length as an unsigned `!Q`; no real
/// payload approaches 2^63 bytes, so such a header can only be hostile).
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
    let Some(short) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let short = i32::from_be_bytes(*short);
    if short >= 0 {
        return Ok(Some(Header {
            header_len: 4,
            payload_len: short as u64,
        }));
    }
    if short != -1 {
        return Err(ProtocolError::NegativeLength(short));
    }
    let Some(long) = buf[4..].first_chunk::<8>() else {
        return Ok(None);
    };
    let long = u64::from_be_bytes(*long);
    if long > i64::MAX as u64 {
        return Err(ProtocolError::BadExtendedLength(long));
    }
    Ok(Some(Header {
        header_len: MAX_HEADER,
        payload_len: long,
    }))
}

/// How many more bytes `buf` needs before [`parse_header`] can decide.
pub fn header_bytes_missing(buf: &[u8]) -> usize {
    match buf.first_chunk::<4>() {
        None => 4 - buf.len(),
        Some(h) if i32::from_be_bytes(*h) == -1 => MAX_HEADER.saturating_sub(buf.len()),
        Some(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(len: u64) -> Vec<u8> {
        let mut out = [0; MAX_HEADER];
        let n = encode_header(len, &mut out);
        out[MAX_HEADER - n..].to_vec()
    }

    #[test]
    fn short_headers_are_big_endian_signed() {
        assert_eq!(encoded(0), [0, 0, 0, 0]);
        assert_eq!(encoded(0x0102_0304), [1, 2, 3, 4]);
        assert_eq!(encoded(0x7fff_ffff), [0x7f, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn long_headers_use_the_minus_one_marker() {
        assert_eq!(
            encoded(0x8000_0000),
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
    }

    #[test]
    fn round_trip_at_every_boundary() {
        for len in [
            0,
            1,
            0x7fff_fffe,
            0x7fff_ffff,
            0x8000_0000,
            1 << 40,
            i64::MAX as u64,
        ] {
            let bytes = encoded(len);
            let header = parse_header(&bytes).unwrap().unwrap();
            assert_eq!(header.payload_len, len);
            assert_eq!(header.header_len, bytes.len());
            assert_eq!(header_bytes_missing(&bytes), 0);
        }
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let long = encoded(1 << 33);
        for cut in 0..long.len() {
            assert_eq!(parse_header(&long[..cut]), Ok(None), "cut at {cut}");
            let missing = if cut < 4 { 4 - cut } else { MAX_HEADER - cut };
            assert_eq!(header_bytes_missing(&long[..cut]), missing);
        }
        let short = encoded(7);
        for cut in 0..4 {
            assert_eq!(parse_header(&short[..cut]), Ok(None));
            assert_eq!(header_bytes_missing(&short[..cut]), 4 - cut);
        }
    }

    #[test]
    fn negative_lengths_other_than_minus_one_are_errors() {
        for n in [-2i32, -100, i32::MIN] {
            assert_eq!(
                parse_header(&n.to_be_bytes()),
                Err(ProtocolError::NegativeLength(n))
            );
        }
    }

    #[test]
    fn extended_lengths_above_i64_max_are_errors() {
        let mut bytes = vec![0xff; 4];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        for len in [i64::MAX as u64 + 1, u64::MAX] {
            bytes.truncate(4);
            bytes.extend_from_slice(&len.to_be_bytes());
            let err = parse_header(&bytes).unwrap_err();
            assert_eq!(err, ProtocolError::BadExtendedLength(len));
            // Reported as the length it is, never as a negative one.
            let text = err.to_string();
            assert!(text.contains(&len.to_string()), "{text}");
            assert!(text.contains("i64::MAX"), "{text}");
            assert!(!text.contains("negative"), "{text}");
        }
    }

    #[test]
    fn extended_header_may_announce_a_small_length() {
        // CPython never writes this, but it is a well-formed header.
        let mut bytes = vec![0xff; 4];
        bytes.extend_from_slice(&5u64.to_be_bytes());
        assert_eq!(
            parse_header(&bytes),
            Ok(Some(Header {
                header_len: 12,
                payload_len: 5
            }))
        );
    }
}
