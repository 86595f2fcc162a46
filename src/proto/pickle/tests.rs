use super::scan::MAX_MARK_CONTAINERS;
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

/// The size of the nesting bombs reported against the scan.
const BOMB_LEN: usize = 120_000;

/// A protocol 4 pickle of `body` and STOP.
fn pickle4(body: impl IntoIterator<Item = u8>) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    out.extend(body);
    out.push(b'.');
    out
}

/// `levels` lists, each appended into the one before: [[[...]]].
fn nested_lists(levels: usize) -> Vec<u8> {
    let lists = std::iter::repeat_n(b']', levels);
    pickle4(lists.chain(std::iter::repeat_n(b'a', levels - 1)))
}

/// Asserts that both decoding paths refuse `bomb` for its nesting.
fn refused_as_too_deep(what: &str, bomb: &[u8]) {
    let typed = decode::<Value>(bomb).map(drop);
    let dynamic = decode_value(bomb).map(drop);
    for result in [typed, dynamic] {
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("nested deeper than 128 levels"),
            "{what}: {err}"
        );
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let levels = BOMB_LEN / 2;
    refused_as_too_deep("EMPTY_LIST and APPEND", &nested_lists(levels));
    // ] (] (] ... e e e: each list APPENDS-ed into the one before.
    let marks = [b']']
        .into_iter()
        .chain([b'(', b']'].repeat(levels))
        .chain(std::iter::repeat_n(b'e', levels));
    refused_as_too_deep("MARK and APPENDS", &pickle4(marks));
    // ((( ... () t t t: tuples built from marks.
    let tuples = std::iter::repeat_n(b'(', levels)
        .chain([b')'])
        .chain(std::iter::repeat_n(b't', levels));
    refused_as_too_deep("MARK and TUPLE", &pickle4(tuples));
    // Through the memo: each list is memoised while empty and only then
    // given a reference to the one before, the way Python fills a list after
    // memoising it. The depth is only visible in the final memo.
    let mut memo = vec![b']', 0x94, b'0'];
    for i in 1..(BOMB_LEN / 9) as u32 {
        memo.extend_from_slice(&[b']', 0x94, b'j']);
        memo.extend_from_slice(&(i - 1).to_le_bytes());
        memo.extend_from_slice(b"a0");
    }
    memo.push(b'j');
    memo.extend_from_slice(&((BOMB_LEN / 9) as u32 - 1).to_le_bytes());
    refused_as_too_deep("memo references filled after PUT", &pickle4(memo));
}

#[test]
fn nesting_up_to_the_limit_decodes() {
    let value = decode_value(&nested_lists(128)).unwrap();
    let mut depth = 0;
    let mut v = &value;
    while let Value::List(items) = v {
        depth += 1;
        match items.first() {
            Some(inner) => v = inner,
            None => break,
        }
    }
    assert_eq!(depth, 128);
    assert!(decode::<Value>(&nested_lists(128)).is_ok());
    refused_as_too_deep("one level more", &nested_lists(129));
}

#[test]
fn unmatched_marks_are_refused_not_a_stack_overflow() {
    let marks = pickle4(std::iter::repeat_n(b'(', BOMB_LEN).chain([b'N']));
    refused_as_too_deep("MARKs alone", &marks);
    let lists = pickle4([b'(', b']'].repeat(BOMB_LEN / 2));
    refused_as_too_deep("MARK and EMPTY_LIST pairs", &lists);
}

#[test]
fn memo_references_count_what_the_entry_holds_at_last() {
    // A list memoised while empty (as Python writes every list), filled with
    // 1000 items afterwards, then referenced 1000 times: serde-pickle copies
    // it at each reference, a million nodes from 3 KB. When the entry was
    // written it held nothing.
    let mut bomb = vec![b']', 0x94, b'('];
    bomb.extend(std::iter::repeat_n(b'N', 1000));
    bomb.extend_from_slice(b"e0](");
    bomb.extend([b'h', 0].repeat(1000));
    bomb.push(b'e');
    let err = decode_value(&pickle4(bomb)).unwrap_err();
    assert!(err.to_string().contains("expand"), "{err}");
}

#[test]
fn memo_entries_may_not_change_once_referenced_or_be_written_twice() {
    // l = []; l.append(l): the entry changes after the reference.
    let err = decode_value(&pickle4(*b"]\x94h\x00a")).unwrap_err();
    assert!(
        err.to_string().contains("changes after a reference"),
        "{err}"
    );
    let err = decode_value(&pickle4(*b"N\x94Nq\x00")).unwrap_err();
    assert!(err.to_string().contains("written twice"), "{err}");
    // What Python writes: memoise, fill, then refer.
    let ok = decode_value(&pickle4(*b"]\x94(K\x01K\x02eh\x00\x86")).unwrap();
    let list = Value::List(vec![Value::I64(1), Value::I64(2)]);
    assert_eq!(ok, Value::Tuple(vec![list.clone(), list]));
}

#[test]
fn containers_built_from_marks_are_bounded_in_number() {
    // serde-pickle gives every MARK a 128-slot buffer that a TUPLE, LIST or
    // FROZENSET keeps: (t repeated costs 4 KiB per 2 bytes.
    let empty_tuples = |n: usize| {
        pickle4(
            [b']', b'(']
                .into_iter()
                .chain(b"(t".repeat(n))
                .chain([b'e']),
        )
    };
    let err = decode_value(&empty_tuples(MAX_MARK_CONTAINERS + 1)).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("more than {MAX_MARK_CONTAINERS}")),
        "{err}"
    );
    let few = decode::<Vec<Vec<i32>>>(&empty_tuples(1000));
    assert!(few.is_ok(), "{few:?}");
}

fn text(s: &str) -> Value {
    Value::String(s.into())
}

#[test]
fn dynamic_dicts_keep_the_pickles_order_both_ways() {
    // pickle.dumps({'zeta': 1, 'alpha': [2], 'mid': {'b': 3, 'a': 4}}, 4),
    // frames and memo as Python writes them.
    let python = b"\x80\x04\x951\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x04zeta\x94K\x01\x8c\x05alpha\x94]\x94K\x02a\x8c\x03mid\x94}\x94(\x8c\x01b\x94K\x03\x8c\x01a\x94K\x04uu.";
    let value = decode_value(python).unwrap();
    let inner = Value::Dict(vec![(text("b"), Value::I64(3)), (text("a"), Value::I64(4))]);
    let expected = Value::Dict(vec![
        (text("zeta"), Value::I64(1)),
        (text("alpha"), Value::List(vec![Value::I64(2)])),
        (text("mid"), inner.clone()),
    ]);
    assert_eq!(value, expected);
    assert_eq!(value.get(&text("mid")), Some(&inner));
    let mut out = Vec::new();
    encode_value(&value, &mut out).unwrap();
    assert_eq!(decode_value(&out).unwrap(), expected);
}

#[test]
fn dynamic_values_of_every_kind_round_trip() {
    let big = num_bigint::BigInt::from(-3) << 200u32;
    let many: Vec<Value> = (0..2500).map(Value::I64).collect();
    let pairs: Vec<(Value, Value)> = (0..2500)
        .rev()
        .map(|i| (Value::I64(i), Value::None))
        .collect();
    let value = Value::List(vec![
        Value::None,
        Value::Bool(true),
        Value::Bool(false),
        Value::I64(0),
        Value::I64(255),
        Value::I64(65_535),
        Value::I64(-1),
        Value::I64(i64::MIN),
        Value::I64(i64::MAX),
        Value::Int(big),
        Value::F64(-0.5),
        Value::Bytes(vec![0; 300]),
        text("héllo"),
        text(&"x".repeat(70_000)),
        Value::Tuple(vec![]),
        Value::Tuple(vec![Value::None; 3]),
        Value::Tuple(vec![Value::None; 4]),
        Value::Set(vec![Value::I64(3), Value::I64(1), Value::I64(2)]),
        Value::FrozenSet(vec![text("b"), text("a")]),
        Value::List(many),
        Value::Dict(pairs),
    ]);
    let mut out = Vec::new();
    encode_value(&value, &mut out).unwrap();
    assert_eq!(decode_value(&out).unwrap(), value);
}

#[test]
fn text_opcodes_of_protocol_0_decode() {
    // pickle.dumps([1, 2**70, 1.5, 'é', b'x'], 0) from Python 3.12, minus the
    // bytes (protocol 0 pickles them through a global).
    let p0 = b"(lp0\nI1\naL1180591620717411303424L\naF1.5\naV\\u00e9\np1\naS'a\\nb'\np2\na.";
    let value = decode_value(p0).unwrap();
    let big: num_bigint::BigInt = num_bigint::BigInt::from(1) << 70u32;
    let expected = Value::List(vec![
        Value::I64(1),
        Value::Int(big),
        Value::F64(1.5),
        text("é"),
        Value::Bytes(b"a\nb".to_vec()),
    ]);
    assert_eq!(value, expected);
    assert!(decode_value(b"K\x01.junk").is_err(), "bytes after STOP");
    assert!(decode_value(b"(K\x01d.").is_err(), "a key without a value");
}
