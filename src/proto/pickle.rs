//! The pickle codec, for typed messages with Python peers (feature `pickle`).
//!
//! Typed values are encoded by serde-pickle (protocol 3, which every
//! supported CPython reads). Decoding runs in two steps: [`scan()`] walks the
//! opcodes first and refuses, before anything is built, what is unsafe to
//! hand on (listed in [its module](mod@scan)), and only then are the bytes
//! given to serde-pickle, or for a dynamic [`Value`] to [`build`], which
//! keeps Python's order of dict items; [`write`] writes a `Value` back in
//! that order.

mod build;
mod scan;
mod value;
mod write;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::scan::scan;
use crate::error::CodecError;

pub use self::value::Value;

pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    serde_pickle::to_writer(out, &value, serde_pickle::SerOptions::new())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Appends the pickle of a dynamic value (big integers included), its
/// collections in their order.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
    write::write(value, out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    scan(bytes)?;
    contain(|| serde_pickle::from_slice(bytes, serde_pickle::DeOptions::new()))
}

/// Runs serde-pickle, turning its errors, and any panic the scan failed to
/// foresee, into a codec error: a peer's bytes must never take the process
/// down (with `panic = "abort"` only the scan protects).
fn contain<T>(decode: impl FnOnce() -> serde_pickle::Result<T>) -> Result<T, CodecError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CodecError::Decode(e.to_string())),
        Err(_) => Err(CodecError::Decode(
            "the pickle decoder failed on this input".into(),
        )),
    }
}

/// Decodes a pickle of any shape, including integers beyond 64 bits, which
/// serde's data model cannot carry, keeping the order of its collections.
pub fn decode_value(bytes: &[u8]) -> Result<Value, CodecError> {
    scan(bytes)?;
    build::build(bytes)
}

#[cfg(test)]
mod tests;
