use super::*;

const KEY: &[u8] = b"noise unit test key, long enough";

/// A session pair as the machines make it: the listener initiates.
fn pair(prologues: (&[u8], &[u8])) -> Result<(Session, Session), AuthError> {
    let key = AuthKey::new(KEY);
    let (state, first) = initiate(&key, prologues.0)?;
    let (client, reply) = respond(&key, prologues.1, &first)?;
    Ok((finish(state, &reply)?, client))
}

fn sealed_pair() -> ((Sealer, Opener), (Sealer, Opener)) {
    let p = prologue(b"server challenge", b"client challenge");
    let (server, client) = pair((&p, &p)).unwrap();
    (server.split(), client.split())
}

/// Splits a wire of framed records into the records.
fn records(wire: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    out
}

/// Opens every record of `wire` as one message.
fn open_all(opener: &mut Opener, wire: &[u8]) -> Result<Vec<u8>> {
    let mut message = Vec::new();
    let mut expected = None;
    for record in records(wire) {
        match opener.open(record, expected.is_none(), u64::MAX, &mut message)? {
            Opened::First(len) => expected = Some(len),
            Opened::More => {}
        }
    }
    assert_eq!(Some(message.len() as u64), expected);
    Ok(message)
}

#[test]
fn messages_of_every_size_round_trip_in_the_records_they_need() {
    let ((mut seal, _), (_, mut open)) = sealed_pair();
    for len in [0, 1, 65_510, 65_511, 65_512, 65_519 * 2, 1 << 20] {
        let message: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut wire = Vec::new();
        seal.seal(&message, &mut wire).unwrap();
        assert_eq!(wire.len(), Sealer::sealed_len(len), "len {len}");
        assert_eq!(records(&wire).len(), records_for(len), "len {len}");
        assert!(records(&wire).iter().all(|r| r.len() <= MAX_RECORD));
        assert_eq!(open_all(&mut open, &wire).unwrap(), message, "len {len}");
    }
}

#[test]
fn altered_dropped_replayed_and_reordered_records_fail_and_nothing_is_delivered() {
    let ((mut seal, _), (_, open)) = sealed_pair();
    let mut opener = open;
    let mut wires = Vec::new();
    for i in 0..4u8 {
        let mut wire = Vec::new();
        seal.seal(&[i; 100], &mut wire).unwrap();
        wires.push(wire);
    }
    // The first arrives whole.
    assert_eq!(open_all(&mut opener, &wires[0]).unwrap(), [0; 100]);
    // Replayed: it is not the next record.
    let mut message = Vec::new();
    let replay = opener.open(records(&wires[0])[0], true, u64::MAX, &mut message);
    assert!(matches!(
        replay,
        Err(Error::Protocol(ProtocolError::Tampered))
    ));
    assert!(message.is_empty());
    // Skipping one (a drop), or taking a later one first (a reorder).
    let skip = opener.open(records(&wires[2])[0], true, u64::MAX, &mut message);
    assert!(matches!(
        skip,
        Err(Error::Protocol(ProtocolError::Tampered))
    ));
    // Altered in every bit after the header.
    for bit in 0..records(&wires[1])[0].len() * 8 {
        let mut altered = records(&wires[1])[0].to_vec();
        altered[bit / 8] ^= 1 << (bit % 8);
        let r = opener.open(&altered, true, u64::MAX, &mut message);
        assert!(
            matches!(r, Err(Error::Protocol(ProtocolError::Tampered))),
            "bit {bit}"
        );
        assert!(message.is_empty());
    }
    // Injected: a record sealed by another session.
    let ((mut other, _), _) = sealed_pair();
    let mut forged = Vec::new();
    other.seal(&[1; 100], &mut forged).unwrap();
    let r = opener.open(records(&forged)[0], true, u64::MAX, &mut message);
    assert!(matches!(r, Err(Error::Protocol(ProtocolError::Tampered))));
    // Truncated below a tag.
    let r = opener.open(&[0; TAG_LEN - 1], true, u64::MAX, &mut message);
    assert!(matches!(r, Err(Error::Protocol(ProtocolError::Tampered))));
    // Failures spend no nonce: the real next record still opens.
    assert_eq!(open_all(&mut opener, &wires[1]).unwrap(), [1; 100]);
}

#[test]
fn a_first_record_over_the_limit_is_refused_before_anything_is_kept() {
    let ((mut seal, _), (_, mut open)) = sealed_pair();
    let mut wire = Vec::new();
    seal.seal(&[7; 1000], &mut wire).unwrap();
    let mut message = Vec::new();
    let r = open.open(records(&wire)[0], true, 999, &mut message);
    assert!(matches!(
        r,
        Err(Error::MessageTooLarge {
            len: 1000,
            max: 999
        })
    ));
    assert!(message.is_empty());
}

#[test]
fn both_directions_rekey_at_the_same_record_and_keep_working() {
    let ((mut seal, mut server_open), (mut client_seal, mut open)) = sealed_pair();
    let mut wire = Vec::new();
    for i in 0..REKEY_EVERY + 3 {
        wire.clear();
        seal.seal(&i.to_le_bytes(), &mut wire).unwrap();
        assert_eq!(open_all(&mut open, &wire).unwrap(), i.to_le_bytes());
    }
    // Past the rekey, the old key opens nothing: a record sealed under
    // it is refused.
    assert_eq!(seal.nonce, REKEY_EVERY + 3);
    // The other direction was not rekeyed and still works.
    wire.clear();
    client_seal.seal(b"back", &mut wire).unwrap();
    assert_eq!(open_all(&mut server_open, &wire).unwrap(), b"back");
}

#[test]
fn a_rekey_changes_the_key() {
    let ((mut seal, _), (_, mut open)) = sealed_pair();
    let mut wire = Vec::new();
    for _ in 0..REKEY_EVERY - 1 {
        wire.clear();
        seal.seal(b"", &mut wire).unwrap();
        open_all(&mut open, &wire).unwrap();
    }
    // The last record before the rekey, opened by hand without the
    // receiver's rekey: the receiver keeps the old key.
    wire.clear();
    seal.seal(b"", &mut wire).unwrap();
    let mut plain = [0u8; 8];
    let keys = open.session.keys();
    keys.read_message(open.nonce, records(&wire)[0], &mut plain)
        .unwrap();
    drop(keys);
    open.nonce += 1;
    // The sender rekeyed: its next record does not open under the old key.
    wire.clear();
    seal.seal(b"x", &mut wire).unwrap();
    assert!(matches!(
        open_all(&mut open, &wire),
        Err(Error::Protocol(ProtocolError::Tampered))
    ));
    // Once the receiver rekeys too, it does.
    open.session.rekey(false);
    assert_eq!(open_all(&mut open, &wire).unwrap(), b"x");
}

#[test]
fn different_prologues_or_keys_fail_the_key_exchange() {
    let a = prologue(b"server challenge", b"client challenge");
    let b = prologue(b"server challenge", b"another client challenge");
    assert!(matches!(pair((&a, &b)), Err(AuthError::KeyExchange)));
    let key = AuthKey::new(KEY);
    let (_, first) = initiate(&key, &a).unwrap();
    let other = AuthKey::new(b"another key of the same length!!");
    assert!(matches!(
        respond(&other, &a, &first),
        Err(AuthError::KeyExchange)
    ));
    // A reply from another session does not finish this one.
    let (state, first) = initiate(&key, &a).unwrap();
    let (_, mine) = respond(&key, &a, &first).unwrap();
    let (_, theirs_first) = initiate(&key, &a).unwrap();
    let (_, theirs) = respond(&key, &a, &theirs_first).unwrap();
    assert_ne!(mine, theirs);
    assert!(matches!(
        finish(state, &theirs),
        Err(AuthError::KeyExchange)
    ));
}

#[test]
fn the_prologue_cannot_be_shifted_between_its_parts() {
    assert_ne!(prologue(b"ab", b"c"), prologue(b"a", b"bc"));
}
