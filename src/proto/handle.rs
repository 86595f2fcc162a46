//! The message that passes a Windows handle between mpconn processes.
//!
//! The sender duplicates the handle into the receiving process first
//! (CPython's `DupHandle` does the same), then sends this message, which
//! names the handle's value there:
//!
//! | bytes | content |
//! | --- | --- |
//! | 0..15 | `#MPCONN-HANDLE#` |
//! | 15..19 | the process the handle was duplicated into, u32 little-endian |
//! | 19..27 | the handle's value in that process, u64 little-endian |
//!
//! Exactly 27 bytes; anything else is not a handle message. CPython sends
//! a pickled `multiprocessing.reduction.DupHandle` instead: the two do not
//! interoperate (README).

/// What every handle message starts with.
pub const MAGIC: &[u8; 15] = b"#MPCONN-HANDLE#";

/// The length of a handle message.
pub const LEN: usize = MAGIC.len() + 4 + 8;

/// The message naming handle `value`, duplicated into process `pid`.
pub fn encode(pid: u32, value: u64) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..15].copy_from_slice(MAGIC);
    out[15..19].copy_from_slice(&pid.to_le_bytes());
    out[19..].copy_from_slice(&value.to_le_bytes());
    out
}

/// The process and the handle value a message names, or why it is not a
/// handle message.
pub fn decode(msg: &[u8]) -> Result<(u32, u64), String> {
    if !msg.starts_with(MAGIC) {
        let shown = msg.len().min(16);
        return Err(format!(
            "a message of {} bytes that does not start with {:?} (it starts {:02x?})",
            msg.len(),
            String::from_utf8_lossy(MAGIC),
            &msg[..shown],
        ));
    }
    let (Some(pid), Some(value), true) = (
        msg.get(15..19).and_then(|b| b.try_into().ok()),
        msg.get(19..27).and_then(|b| b.try_into().ok()),
        msg.len() == LEN,
    ) else {
        return Err(format!(
            "a handle message of {} bytes, not {LEN}",
            msg.len()
        ));
    };
    Ok((u32::from_le_bytes(pid), u64::from_le_bytes(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_round_trips() {
        let msg = encode(4242, 0x1f4);
        assert_eq!(msg.len(), 27);
        assert_eq!(decode(&msg), Ok((4242, 0x1f4)));
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        let e = decode(b"hello").unwrap_err();
        assert!(
            e.contains("does not start with") && e.contains("5 bytes"),
            "{e}"
        );
        let e = decode(b"").unwrap_err();
        assert!(e.contains("0 bytes"), "{e}");
        let msg = encode(1, 2);
        let e = decode(&msg[..20]).unwrap_err();
        assert!(e.contains("20 bytes, not 27"), "{e}");
        let long = [&msg[..], b"x"].concat();
        let e = decode(&long).unwrap_err();
        assert!(e.contains("28 bytes, not 27"), "{e}");
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_pid_and_value_round_trip(pid: u32, value: u64) {
            prop_assert_eq!(decode(&encode(pid, value)), Ok((pid, value)));
        }
    }
}
