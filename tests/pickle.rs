//! Typed messages with real CPython peers through the pickle codec.

#![cfg(all(feature = "pickle", unix))]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KEY, PYTHON_VERSIONS, interpreters, is_legacy_python, unique_path, watchdog};
use mpconn::{Codec, Connection, Error, ListenerOptions};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u32,
    name: String,
    tags: Vec<String>,
}

/// The Python side: receives what Rust sends and checks each value, then
/// sends the same values back with `Connection.send` and as pickles of
/// protocols 2 to 5, then the hostile pickles. `sys.argv`: address, key.
const PY_PEER: &str = r#"
import os, pickle, sys
from multiprocessing.connection import Client

host, port = sys.argv[1].rsplit(':', 1)
conn = Client((host, int(port)), authkey=bytes.fromhex(sys.argv[2]))

# What Rust sends, as Python sees it.
expected = [
    42, -7, 2**64 - 1, 1.5, 'héllo ✓', b'\x00\x01bytes', None, 5, [1, 2, 3],
    (1, 'a', True), {'a': 1, 'b': 2}, [1, 2, 3],
    {'id': 9, 'name': 'nine', 'tags': ['x']}, True, 2**100, [1, 'two', None],
]
for i, want in enumerate(expected):
    got = conn.recv()
    if got != want or type(got) is not type(want):
        print(f'value {i}: got {got!r}, expected {want!r}', file=sys.stderr)
        sys.exit(1)

# What Python sends back, with the oldest protocol that can carry it without
# naming a global: bytes need 3, sets 4.
values = [
    (42, 2), (-7, 2), (2**64 - 1, 2), (1.5, 2), ('héllo ✓', 2), (b'\x00\x01bytes', 3),
    (None, 2), (5, 2), ([1, 2, 3], 2), ((1, 'a', True), 2), ({'a': 1, 'b': 2}, 2),
    ({3, 1, 2}, 4), ({'id': 9, 'name': 'nine', 'tags': ['x']}, 2), (True, 2), (2**100, 2),
]
for proto in (None, 2, 3, 4, 5):
    for value, oldest in values:
        if proto is None:
            conn.send(value)
        elif proto >= oldest:
            conn.send_bytes(pickle.dumps(value, protocol=proto))

class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[3],))

conn.send_bytes(pickle.dumps(Evil(), protocol=2))
conn.send(Evil())
conn.send(os.system)
conn.send_bytes(pickle.dumps({1, 2}, protocol=2))
conn.send('after')
conn.close()
"#;

fn serve(version: &str, py: &std::path::Path) {
    let marker = unique_path("pwned");
    let _ = std::fs::remove_file(&marker);
    let listener = ListenerOptions::new()
        .codec(Codec::Pickle)
        .allow_legacy_md5(is_legacy_python(version))
        .accept_timeout(Some(Duration::from_secs(20)))
        .bind("127.0.0.1:0", KEY)
        .unwrap();
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new(py)
        .args(["-c", PY_PEER, &listener.address().to_string(), &hex])
        .arg(&marker)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut conn = listener.accept().unwrap();
    assert_eq!(conn.codec(), Codec::Pickle);
    send_all(&mut conn);
    for proto in [None, Some(2), Some(3), Some(4), Some(5)] {
        receive_all(&mut conn, proto, version);
    }
    // The hostile pickles: refused, nothing run, the connection intact.
    for what in ["reduce p2", "reduce", "global", "set p2"] {
        let err = conn.recv_pickle_value().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Codec(_)), "{version} {what}: {text}");
        assert!(text.contains("pickle refused"), "{version} {what}: {text}");
        if what != "reduce p2" && what != "set p2" {
            assert!(
                text.contains("system") || text.contains("STACK_GLOBAL"),
                "{version} {what}: {text}"
            );
        }
    }
    assert_eq!(conn.recv::<String>().unwrap(), "after");
    assert!(matches!(conn.recv::<String>(), Err(Error::Eof)));
    assert!(child.wait().unwrap().success(), "python {version} failed");
    assert!(!marker.exists(), "the malicious pickle ran");
}

fn send_all(conn: &mut Connection) {
    conn.send(&42i64).unwrap();
    conn.send(&-7i32).unwrap();
    conn.send(&u64::MAX).unwrap();
    conn.send(&1.5f64).unwrap();
    conn.send("héllo ✓").unwrap();
    conn.send(&ByteBuf::from(b"\x00\x01bytes".to_vec()))
        .unwrap();
    conn.send(&None::<i32>).unwrap();
    conn.send(&Some(5i32)).unwrap();
    conn.send(&vec![1, 2, 3]).unwrap();
    conn.send(&(1, "a", true)).unwrap();
    conn.send(&BTreeMap::from([("a", 1), ("b", 2)])).unwrap();
    conn.send(&BTreeSet::from([3, 1, 2])).unwrap();
    conn.send(&Job {
        id: 9,
        name: "nine".into(),
        tags: vec!["x".into()],
    })
    .unwrap();
    conn.send(&true).unwrap();
    // Dynamic values: a big integer and a mixed list.
    use mpconn::pickle::Value;
    let big: num_bigint::BigInt = num_bigint::BigInt::from(1u8) << 100;
    conn.send_pickle_value(&Value::Int(big)).unwrap();
    let mixed = Value::List(vec![
        Value::I64(1),
        Value::String("two".into()),
        Value::None,
    ]);
    conn.send_pickle_value(&mixed).unwrap();
}

fn receive_all(conn: &mut Connection, proto: Option<u8>, version: &str) {
    let at_least = |oldest: u8| proto.is_none_or(|p| p >= oldest);
    let ctx = format!("python {version} protocol {proto:?}");
    assert_eq!(conn.recv::<i64>().unwrap(), 42, "{ctx}");
    assert_eq!(conn.recv::<i32>().unwrap(), -7, "{ctx}");
    // Above i64::MAX, Python ints arrive as dynamic values (serde-pickle).
    assert_eq!(big_int(conn, &ctx), "18446744073709551615");
    assert_eq!(conn.recv::<f64>().unwrap(), 1.5, "{ctx}");
    assert_eq!(conn.recv::<String>().unwrap(), "héllo ✓", "{ctx}");
    if at_least(3) {
        assert_eq!(
            conn.recv::<ByteBuf>().unwrap().as_slice(),
            b"\x00\x01bytes",
            "{ctx}"
        );
    }
    assert_eq!(conn.recv::<Option<i32>>().unwrap(), None, "{ctx}");
    assert_eq!(conn.recv::<Option<i32>>().unwrap(), Some(5), "{ctx}");
    assert_eq!(conn.recv::<Vec<i32>>().unwrap(), [1, 2, 3], "{ctx}");
    assert_eq!(
        conn.recv::<(i32, String, bool)>().unwrap(),
        (1, "a".into(), true),
        "{ctx}"
    );
    assert_eq!(
        conn.recv::<BTreeMap<String, i32>>().unwrap(),
        BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
        "{ctx}"
    );
    if at_least(4) {
        assert_eq!(
            conn.recv::<BTreeSet<i32>>().unwrap(),
            BTreeSet::from([1, 2, 3]),
            "{ctx}"
        );
    }
    assert_eq!(
        conn.recv::<Job>().unwrap(),
        Job {
            id: 9,
            name: "nine".into(),
            tags: vec!["x".into()]
        },
        "{ctx}"
    );
    assert!(conn.recv::<bool>().unwrap(), "{ctx}");
    // 2**100 has no Rust integer type: it arrives as a dynamic value.
    assert_eq!(big_int(conn, &ctx), "1267650600228229401496703205376");
}

fn big_int(conn: &mut Connection, ctx: &str) -> String {
    match conn.recv_pickle_value().unwrap() {
        mpconn::pickle::Value::Int(big) => big.to_string(),
        other => panic!("{ctx}: {other:?}"),
    }
}

#[test]
fn typed_values_cross_with_every_python_both_ways() {
    let _w = watchdog(240);
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        serve(&version, &py);
    }
}

#[test]
fn pipes_gate_and_carry_pickles_too() {
    let (mut a, mut b) = mpconn::pipe().unwrap();
    a.set_codec(Codec::Pickle);
    b.set_codec(Codec::Pickle);
    a.send(&Job {
        id: 1,
        name: "pipe".into(),
        tags: vec![],
    })
    .unwrap();
    assert_eq!(b.recv::<Job>().unwrap().name, "pipe");
    // A pickle sent as raw bytes decodes the same way.
    b.send_bytes(b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00K\x07K\x08\x86\x94.")
        .unwrap();
    assert_eq!(a.recv::<(u8, u8)>().unwrap(), (7, 8));
}

/// The Python side of the order test: sends dicts built in an order that is
/// not sorted, receives them back from Rust and compares their items in
/// order. `sys.argv`: address, key.
const PY_ORDER: &str = r#"
import sys
from multiprocessing.connection import Client

host, port = sys.argv[1].rsplit(':', 1)
conn = Client((host, int(port)), authkey=bytes.fromhex(sys.argv[2]))
inner = {}
for k in ('b', 'c', 'a'):
    inner[k] = k * 2
values = [
    {'zeta': 1, 'alpha': 2, 'mid': 3},
    {3: 'three', 1: 'one', 2: 'two', 2**80: (inner, [inner])},
    [{'z': None}, {'y': b'y', 'x': 1.5}],
]
def items(v):
    if isinstance(v, dict):
        return ('dict', [(items(k), items(x)) for k, x in v.items()])
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, [items(x) for x in v])
    return (type(v).__name__, v)
for value in values:
    conn.send(value)
    back = conn.recv()
    if items(back) != items(value):
        print(f'sent {value!r}, got back {back!r}', file=sys.stderr)
        sys.exit(1)
conn.close()
"#;

#[test]
fn dict_order_survives_python_rust_python_with_every_python() {
    let _w = watchdog(120);
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        let listener = ListenerOptions::new()
            .allow_legacy_md5(is_legacy_python(&version))
            .accept_timeout(Some(Duration::from_secs(20)))
            .bind("127.0.0.1:0", KEY)
            .unwrap();
        let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
        let mut child = Command::new(&py)
            .args(["-c", PY_ORDER, &listener.address().to_string(), &hex])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut conn = listener.accept().unwrap();
        let first = conn.recv_pickle_value().unwrap();
        let keys: Vec<_> = match &first {
            mpconn::pickle::Value::Dict(pairs) => pairs.iter().map(|(k, _)| k.clone()).collect(),
            other => panic!("python {version}: {other:?}"),
        };
        let names = ["zeta", "alpha", "mid"].map(|k| mpconn::pickle::Value::String(k.into()));
        assert_eq!(keys, names, "python {version}");
        conn.send_pickle_value(&first).unwrap();
        for _ in 0..2 {
            let value = conn.recv_pickle_value().unwrap();
            conn.send_pickle_value(&value).unwrap();
        }
        assert!(child.wait().unwrap().success(), "python {version} failed");
    }
}
