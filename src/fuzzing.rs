//! Entry points for the fuzz targets in `fuzz/`. Compiled only with the
//! non-default `fuzzing` feature; not part of the public API.

use std::time::{Duration, Instant};

use crate::error::AuthError;
use crate::key::AuthKey;
use crate::proto::auth::{
    AuthPolicy, Digest, Handshake, RANDOM_LEN, Role, Status, Timeouts, UNVERIFIABLE_ANSWER,
};
use crate::proto::codec;
use crate::transport::FrameReader;
use crate::transport::fake::FakeStream;

/// The key every fuzzed handshake uses.
const KEY: &[u8] = b"fuzzing-key-0123456789";

/// Splits `data` into a chunking schedule (first bytes) and a payload.
fn schedule(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let n = usize::from(data.first().copied().unwrap_or(0) % 8);
    let body = data.get(1..).unwrap_or_default();
    let n = n.min(body.len());
    let chunks: Vec<usize> = body[..n].iter().map(|&b| usize::from(b).max(1)).collect();
    let chunks = if chunks.is_empty() {
        vec![usize::MAX]
    } else {
        chunks
    };
    (chunks, &body[n..])
}

/// Reads frames from arbitrary bytes at an arbitrary chunking with a small
/// limit; must never panic, and every message must fit the limit.
pub fn frame_decoder(data: &[u8]) {
    let (chunks, wire) = schedule(data);
    let stream = FakeStream::new(wire.to_vec()).chunks(&chunks);
    let mut reader = FrameReader::new(4096);
    let mut buf = [0u8; 512];
    for i in 0.. {
        let result = match i % 3 {
            0 => reader.read_owned(&stream, None).map(|m| m.len()),
            1 => reader.read_with(&stream, None, <[u8]>::len),
            _ => reader.read_into(&stream, None, &mut buf),
        };
        match result {
            Ok(len) => assert!(len <= 4096),
            Err(crate::Error::BufferTooShort(m)) => assert!(m.len() > buf.len() && m.len() <= 4096),
            Err(_) => break,
        }
    }
}

/// The listener's side of the handshake against arbitrary bytes.
pub fn handshake_server(data: &[u8]) {
    handshake(Role::Server, data);
}

/// The client's side of the handshake against arbitrary bytes.
pub fn handshake_client(data: &[u8]) {
    handshake(Role::Client, data);
}

/// Runs a handshake machine of `role` against arbitrary bytes, read as
/// frames through the transport's reader (with the handshake's message
/// limit) at an arbitrary chunking. HMACs cannot be forged, so the machine
/// may reach `Done` only if the input carries a valid answer to its (fixed)
/// challenge; once it has ended it must want no further message. A machine
/// that refused a challenge (it sent the unverifiable answer) says nothing
/// more and ends with the refusal, whatever the input says next.
fn handshake(role: Role, data: &[u8]) {
    let (chunks, wire) = schedule(data);
    let policy = AuthPolicy {
        allow_legacy_md5: data.first().is_some_and(|b| b & 0x80 != 0),
        ..AuthPolicy::default()
    };
    let timeouts = Timeouts {
        first_message: None,
        total: Some(Duration::from_secs(60)),
        after_first: None,
    };
    let mut hs = Handshake::new(
        role,
        AuthKey::new(KEY),
        policy,
        [7; RANDOM_LEN],
        Instant::now(),
        timeouts,
    );
    let ours = hs.challenge_message().to_vec();
    let stream = FakeStream::new(wire.to_vec()).chunks(&chunks);
    let mut reader = FrameReader::new(crate::proto::auth::MAX_MESSAGE as u64);
    let mut said = Vec::new();
    while hs.wants_message() {
        said.extend(hs.take_output());
        match reader.read_owned(&stream, None) {
            Ok(message) => hs.on_message(Instant::now(), &message),
            Err(_) => hs.peer_closed(),
        }
    }
    said.extend(hs.take_output());
    if let Some(i) = said.iter().position(|m| m == UNVERIFIABLE_ANSWER) {
        assert_eq!(i + 1, said.len(), "a refusal is the last word");
        assert!(matches!(
            hs.status(),
            Status::Failed(AuthError::LegacyRefused | AuthError::DigestRefused(_))
        ));
    }
    if hs.status() == &Status::Done {
        assert!(
            carries_valid_answer(wire, &ours, policy.allow_legacy_md5),
            "handshake completed without a valid answer"
        );
    }
    assert!(!matches!(hs.status(), Status::InProgress));
}

/// Whether `wire` contains an answer to the fixed challenge in any digest
/// the machine accepts.
fn carries_valid_answer(wire: &[u8], ours: &[u8], legacy: bool) -> bool {
    let mut answers: Vec<Vec<u8>> = Digest::ALL
        .into_iter()
        .filter(|&d| d != Digest::Md5 || legacy)
        .map(|d| {
            let prefix = format!("{{{}}}", d.name());
            [prefix.as_bytes(), &d.mac(KEY, ours)].concat()
        })
        .collect();
    if legacy {
        answers.push(Digest::Md5.mac(KEY, ours));
    }
    answers
        .iter()
        .any(|a| wire.windows(a.len()).any(|w| w == a.as_slice()))
}

/// Decodes arbitrary bytes as a handful of typed shapes; must never panic,
/// overflow the stack or allocate beyond the input.
pub fn typed_recv(data: &[u8]) {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    enum Tree {
        Leaf(String),
        Node(Vec<Tree>),
        Map(std::collections::BTreeMap<u32, Tree>),
        Opt(Option<Box<Tree>>),
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Job {
        id: u64,
        name: String,
        data: Vec<u8>,
        weights: Vec<f64>,
        tags: std::collections::HashMap<String, i32>,
        nested: Option<(i8, char, bool)>,
    }
    let _ = codec::decode::<Tree>(data);
    let _ = codec::decode::<Job>(data);
    let _ = codec::decode::<Vec<String>>(data);
    let _ = codec::decode::<(u128, i64, String)>(data);
    zero_byte_elements(data);
}

/// Decodes arbitrary bytes into collections of elements that take no bytes
/// on the wire: however many a length claims, a message yields at most its
/// element budget, counted over all its sequences and maps.
fn zero_byte_elements(data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Skipped {
        #[serde(skip)]
        _cache: [u64; 4],
    }
    use crate::proto::guard::limits::{ELEMENTS_PER_BYTE, MIN_ELEMENT_BUDGET};
    let budget = (ELEMENTS_PER_BYTE as usize * data.len()).max(MIN_ELEMENT_BUDGET as usize);
    if let Ok(v) = codec::decode::<Vec<()>>(data) {
        assert!(v.len() <= budget);
    }
    if let Ok(v) = codec::decode::<Vec<Skipped>>(data) {
        assert!(v.len() <= budget);
    }
    if let Ok(v) = codec::decode::<Vec<Vec<()>>>(data) {
        assert!(v.len() + v.iter().map(Vec::len).sum::<usize>() <= budget);
    }
    let _ = codec::decode::<std::collections::BTreeMap<(), Vec<((), ())>>>(data);
}

/// Decodes arbitrary bytes as pickles (feature `pickle`): the opcode scan and
/// serde-pickle must never panic, hang, overflow the stack or allocate far
/// beyond the input, and what decodes nests no deeper than the limit.
#[cfg(feature = "pickle")]
pub fn pickle_recv(data: &[u8]) {
    use crate::proto::pickle;
    if let Ok(value) = pickle::decode_value(data) {
        assert!(depth(&value) <= crate::proto::guard::limits::MAX_DEPTH);
    }
    let _ = pickle::decode::<(i64, String, Vec<Option<f64>>)>(data);
    let _ = pickle::decode::<std::collections::BTreeMap<String, Vec<u8>>>(data);
    let _ = pickle::decode::<Vec<Vec<Vec<pickle::Value>>>>(data);
}

/// Containers nested in `value`, itself included.
#[cfg(feature = "pickle")]
fn depth(value: &crate::proto::pickle::Value) -> usize {
    use crate::proto::pickle::Value as V;
    match value {
        V::List(items) | V::Tuple(items) | V::Set(items) | V::FrozenSet(items) => {
            1 + items.iter().map(depth).max().unwrap_or(0)
        }
        V::Dict(entries) => {
            let deepest = entries.iter().map(|(k, v)| depth(k).max(depth(v)));
            1 + deepest.max().unwrap_or(0)
        }
        _ => 0,
    }
}
