use super::*;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
    let mut out = Vec::new();
    encode(&value, &mut out).unwrap();
    scan(&out).unwrap();
    assert_eq!(decode::<T>(&out).unwrap(), value);
}

#[test]
fn values_round_trip() {
    round_trip((1i64, "hello".to_string(), None::<i32>, vec![1.5f64]));
    round_trip(std::collections::BTreeMap::from([(
        "a".to_string(),
        vec![Some(1u8), None],
    )]));
}

#[test]
fn globals_are_refused() {
    // What pickle.dumps(os.system, 0) looks like, and a REDUCE of it.
    let global = b"cposix\nsystem\np0\n.";
    let err = decode::<Value>(global).unwrap_err();
    assert!(err.to_string().contains("posix.system"), "{err}");
    let reduce = b"cposix\nsystem\n(S'echo pwned'\ntR.";
    assert!(decode::<Value>(reduce).is_err());
    // Even builtins.set, which serde-pickle alone would accept.
    let set = b"\x80\x02c__builtin__\nset\n]\x85R.";
    assert!(
        decode::<Value>(set)
            .unwrap_err()
            .to_string()
            .contains("__builtin__.set")
    );
}

#[test]
fn memo_bombs_are_refused() {
    // [x, x] nested 40 times through the memo: 2^40 nodes from ~200 bytes.
    let mut bomb = vec![0x80, 4, b']', 0x94];
    for i in 0..40u8 {
        bomb.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l', 0x94]);
    }
    bomb.push(b'.');
    let err = decode::<Value>(&bomb).unwrap_err();
    assert!(err.to_string().contains("expand"), "{err}");
    // The same with DUP: (x, x) nested 40 times.
    let mut dup = vec![0x80, 4, b']'];
    for _ in 0..40 {
        dup.extend_from_slice(&[b'2', 0x86]);
    }
    dup.push(b'.');
    assert!(
        decode::<Value>(&dup)
            .unwrap_err()
            .to_string()
            .contains("expand")
    );
}

#[test]
fn nan_set_items_and_dict_keys_are_refused() {
    let nan = f64::NAN.to_be_bytes();
    // frozenset({nan, 1.0}) and {nan: 1}, protocol 4.
    let mut set = vec![0x80, 4, b'(', b'G'];
    set.extend_from_slice(&nan);
    set.push(b'G');
    set.extend_from_slice(&1.0f64.to_be_bytes());
    set.extend_from_slice(&[0x91, b'.']);
    assert!(
        decode::<Value>(&set)
            .unwrap_err()
            .to_string()
            .contains("NaN")
    );
    let mut dict = vec![0x80, 4, b'}', b'G'];
    dict.extend_from_slice(&nan);
    dict.extend_from_slice(&[b'K', 1, b's', b'.']);
    assert!(
        decode::<Value>(&dict)
            .unwrap_err()
            .to_string()
            .contains("NaN")
    );
    // A NaN as a plain value is fine.
    let mut list = vec![0x80, 4, b']', b'G'];
    list.extend_from_slice(&nan);
    list.extend_from_slice(b"a.");
    assert!(decode::<Vec<f64>>(&list).unwrap()[0].is_nan());
}

#[test]
fn the_fuzzers_first_finding_is_refused_not_a_panic() {
    // A frozenset holding NaN floats: serde-pickle's sort panicked on it.
    let crash = include_bytes!("../../../fuzz/corpus/pickle_recv/nan_frozenset");
    assert!(decode::<Value>(crash).is_err());
}

#[test]
fn truncated_and_unknown_opcodes_are_errors() {
    assert!(scan(b"X\xff\xff\x00\x00ab").is_err());
    assert!(scan(b"\xff").is_err());
    assert!(scan(b"").is_err());
    assert!(scan(b"e.").is_err(), "stack underflow");
}
