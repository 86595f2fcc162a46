//! A serde `Deserializer` wrapper that makes decoding safe on hostile bytes.
//!
//! bincode decodes straight from the message slice, but two of its paths are
//! unsafe for input nobody vetted:
//!
//! - an owned `String` or `Vec<u8>` allocates the length its prefix claims
//!   before checking that the bytes exist (a 10-byte message can ask for
//!   2^63 bytes); the wrapper sends those requests down the borrowed path,
//!   which checks the length against the slice first and then copies;
//! - nesting has no limit, so a recursive type lets a small message overflow
//!   the stack; the wrapper counts depth and fails past [`MAX_DEPTH`].
//!
//! Everything else is forwarded unchanged.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// Containers nested deeper than this are refused (serde_json's limit too).
pub const MAX_DEPTH: usize = 128;

/// A deserializer at nesting level `depth`.
pub struct Guard<D> {
    inner: D,
    depth: usize,
}

/// The seed that decodes a `T` through a [`Guard`].
pub struct GuardSeed<S> {
    seed: S,
    depth: usize,
}

impl<S> GuardSeed<S> {
    pub fn new(seed: S) -> Self {
        GuardSeed { seed, depth: 0 }
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for GuardSeed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Guard {
            inner: d,
            depth: self.depth,
        })
    }
}

/// A visitor one level down, checking the limit before it goes deeper.
struct Nested<V> {
    inner: V,
    depth: usize,
}

impl<V> Nested<V> {
    fn enter<E: de::Error>(inner: V, depth: usize) -> Result<Self, E> {
        if depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "values nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Nested {
            inner,
            depth: depth + 1,
        })
    }
}

macro_rules! forward {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let depth = self.depth;
            self.inner.$method(Nested::enter(visitor, depth)?)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Guard<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_bytes,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    /// Borrowed path: the length is checked against the input first.
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    /// Borrowed path: the length is checked against the input first.
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        self.inner
            .deserialize_unit_struct(name, Nested::enter(visitor, depth)?)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        self.inner
            .deserialize_newtype_struct(name, Nested::enter(visitor, depth)?)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        self.inner
            .deserialize_tuple(len, Nested::enter(visitor, depth)?)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        self.inner
            .deserialize_tuple_struct(name, len, Nested::enter(visitor, depth)?)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        self.inner
            .deserialize_struct(name, fields, Nested::enter(visitor, depth)?)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        self.inner
            .deserialize_enum(name, variants, Nested::enter(visitor, depth)?)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Nested<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        self.inner.visit_some(Guard { inner: d, depth })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        self.inner.visit_newtype_struct(Guard { inner: d, depth })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let depth = self.depth;
        self.inner.visit_seq(Access { inner: seq, depth })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let depth = self.depth;
        self.inner.visit_map(Access { inner: map, depth })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let depth = self.depth;
        self.inner.visit_enum(Access { inner: data, depth })
    }
}

/// Sequence, map, enum and variant access one level down.
struct Access<A> {
    inner: A,
    depth: usize,
}

impl<A> Access<A> {
    fn seed<S>(&self, seed: S) -> GuardSeed<S> {
        GuardSeed {
            seed,
            depth: self.depth,
        }
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<A> {
    type Error = A::Error;
    type Variant = Access<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let seed = self.seed(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Access {
                inner: variant,
                depth,
            },
        ))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = Nested::enter(visitor, self.depth)?;
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = Nested::enter(visitor, self.depth)?;
        self.inner.struct_variant(fields, visitor)
    }
}
