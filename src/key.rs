//! Authentication keys: held in memory that is zeroed on drop, never printed.

use std::fmt;

use rand::TryRng;
use zeroize::Zeroizing;

use crate::error::{AuthError, Error, Result};

/// Keys shorter than this are refused unless the caller opts out.
pub const MIN_KEY_LEN: usize = 16;

/// A shared secret for the handshake.
///
/// The bytes are zeroed when the last copy is dropped, and neither `Debug` nor
/// any error message shows them.
#[derive(Clone)]
pub struct AuthKey(Zeroizing<Vec<u8>>);

impl AuthKey {
    /// Wraps a copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        AuthKey(Zeroizing::new(bytes.to_vec()))
    }

    /// A fresh 32-byte key from the operating system's random source, the
    /// size CPython gives `Process.authkey`.
    ///
    /// # Errors
    /// [`AuthError::Random`] when the random source fails.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new(vec![0u8; 32]);
        fill_random(&mut bytes)?;
        Ok(AuthKey(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as lowercase hex, for handing to a child process through its
    /// environment. The returned string is zeroed on drop as well.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(self.0.len() * 2));
        for b in self.0.iter() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out
    }

    /// Parses the output of [`to_hex`](Self::to_hex).
    ///
    /// Returns `None` for an odd length or a character that is not a hex digit.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if !text.len().is_multiple_of(2) {
            return None;
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() / 2));
        for pair in text.chunks_exact(2) {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            bytes.push((hi * 16 + lo) as u8);
        }
        Some(AuthKey(bytes))
    }

    /// Refuses keys shorter than [`MIN_KEY_LEN`] unless `allow_short` is set.
    pub(crate) fn check_len(&self, allow_short: bool) -> Result<()> {
        match self.refusal(allow_short) {
            Some(e) => Err(Error::Auth(e)),
            None => Ok(()),
        }
    }

    /// Why this key is refused, if it is: shorter than [`MIN_KEY_LEN`]
    /// while `allow_short` is not set.
    pub(crate) fn refusal(&self, allow_short: bool) -> Option<AuthError> {
        (self.0.len() < MIN_KEY_LEN && !allow_short).then(|| AuthError::KeyTooShort(self.0.len()))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthKey(<{} bytes, redacted>)", self.0.len())
    }
}

impl From<&[u8]> for AuthKey {
    fn from(bytes: &[u8]) -> Self {
        AuthKey::new(bytes)
    }
}

impl PartialEq for AuthKey {
    /// Constant-time in the key bytes (the lengths are not secret).
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl Eq for AuthKey {}

/// Fills `buf` from the operating system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|_| Error::Auth(AuthError::Random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = AuthKey::new(b"super secret key bytes");
        let shown = format!("{key:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("22 bytes"), "{shown}");
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let key = AuthKey::generate().unwrap();
        assert_eq!(key.as_bytes().len(), 32);
        assert_eq!(AuthKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(AuthKey::from_hex("abc"), None);
        assert_eq!(AuthKey::from_hex("zz"), None);
        assert_eq!(AuthKey::from_hex("00ff").unwrap().as_bytes(), [0, 255]);
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(AuthKey::generate().unwrap(), AuthKey::generate().unwrap());
    }

    #[test]
    fn short_keys_need_an_explicit_opt_out() {
        let key = AuthKey::new(b"short");
        assert!(matches!(
            key.check_len(false),
            Err(Error::Auth(AuthError::KeyTooShort(5)))
        ));
        assert!(key.check_len(true).is_ok());
        assert!(AuthKey::new(&[7; 16]).check_len(false).is_ok());
    }
}
