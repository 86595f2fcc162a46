//! [`Value`]: a pickle of any shape, with Python's order kept.

use std::fmt;

use num_bigint::BigInt;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A Python value of any shape, for pickles whose type is not known in
/// advance (`Connection::recv_pickle_value`, `send_pickle_value`).
///
/// Collections keep the order the pickle lists their items in, which for
/// Python's pickler is the dict's insertion order (and a set's iteration
/// order): a dict that crosses Python → Rust → Python comes back in the order
/// it left. `Dict` holds the pairs as the pickle gives them and does not look
/// for repeated keys (Python's pickler never repeats one; Python keeps the
/// last value of a key it reads twice, in the first one's place).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`
    None,
    /// `bool`
    Bool(bool),
    /// An `int` that fits an `i64`.
    I64(i64),
    /// An `int` beyond `i64` (a decoded one is always beyond it).
    Int(BigInt),
    /// `float`
    F64(f64),
    /// `bytes` (and `bytearray`, and Python 2 `str` from protocols 0 to 2)
    Bytes(Vec<u8>),
    /// `str`
    String(String),
    /// `list`
    List(Vec<Value>),
    /// `tuple`
    Tuple(Vec<Value>),
    /// `set`, its items in the pickle's order.
    Set(Vec<Value>),
    /// `frozenset`, its items in the pickle's order.
    FrozenSet(Vec<Value>),
    /// `dict`, its pairs in the pickle's order (Python's insertion order).
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// The value the dict holds for `key` (the last pair with that key, as
    /// Python would keep), or `None` if this is not a dict or has no such key.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        match self {
            Value::Dict(pairs) => pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Typed receives (`recv::<Value>()`) go through serde, which has no big
/// integers and no tuple or set: Python ints beyond `u64` fail, and tuples
/// and sets arrive as lists. `recv_pickle_value` has none of these limits.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pickled Python value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::None)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::I64(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::Int(v.into()), Value::I64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::F64(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry()? {
            pairs.push(pair);
        }
        Ok(Value::Dict(pairs))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
}
