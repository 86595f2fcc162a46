//! A serde `Deserializer` wrapper that makes decoding safe on hostile bytes.
//!
//! bincode decodes straight from the message slice, but three of its paths
//! are unsafe for input nobody vetted:
//!
//! - an owned `String` or `Vec<u8>` allocates the length its prefix claims
//!   before checking that the bytes exist (a 10-byte message can ask for
//!   2^63 bytes); the wrapper sends those requests down the borrowed path,
//!   which checks the length against the slice first and then copies;
//! - nesting has no limit, so a recursive type lets a small message overflow
//!   the stack; the wrapper counts depth and fails past [`MAX_DEPTH`](limits::MAX_DEPTH);
//! - a sequence or map produces as many elements as its length prefix
//!   claims, and an element that takes no bytes (`()`, a unit struct, a
//!   struct whose fields are all skipped) lets a 9-byte message claim 2^63
//!   of them; the wrapper counts the elements of every sequence and map of
//!   a message against one [`Budget`], before each is produced, and never
//!   hints at more of them than the budget has left (serde preallocates
//!   from the hint).
//!
//! Everything else is forwarded unchanged.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

pub mod limits;

pub use self::limits::Budget;
use self::limits::Level;

/// A deserializer at a [`Level`].
pub struct Guard<'b, D> {
    inner: D,
    level: Level<'b>,
}

/// The seed that decodes a `T` through a [`Guard`].
pub struct GuardSeed<'b, S> {
    seed: S,
    level: Level<'b>,
}

impl<'b, S> GuardSeed<'b, S> {
    pub fn new(seed: S, budget: &'b Budget) -> Self {
        GuardSeed {
            seed,
            level: Level::top(budget),
        }
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for GuardSeed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Guard {
            inner: d,
            level: self.level,
        })
    }
}

/// Whether the elements of a sequence a visitor receives count against the
/// budget: their number comes from the input (sequences, maps), or from the
/// type (tuples, structs, variants), which bounds it already.
#[derive(Clone, Copy)]
enum Count {
    Input,
    Type,
}

/// A visitor one level down, checking the limit before it goes deeper.
struct Nested<'b, V> {
    inner: V,
    level: Level<'b>,
    count: Count,
}

impl<'b, V> Nested<'b, V> {
    fn enter<E: de::Error>(inner: V, level: Level<'b>, count: Count) -> Result<Self, E> {
        Ok(Nested {
            inner,
            level: level.down()?,
            count,
        })
    }
}

macro_rules! forward {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(Nested::enter(visitor, self.level, Count::Input)?)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Guard<'_, D> {
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
        let visitor = Nested::enter(visitor, self.level, Count::Input)?;
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Nested::enter(visitor, self.level, Count::Input)?;
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Nested::enter(visitor, self.level, Count::Type)?;
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Nested::enter(visitor, self.level, Count::Type)?;
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Nested::enter(visitor, self.level, Count::Type)?;
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Nested::enter(visitor, self.level, Count::Input)?;
        self.inner.deserialize_enum(name, variants, visitor)
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

impl<'de, V: Visitor<'de>> Visitor<'de> for Nested<'_, V> {
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
        self.inner.visit_some(Guard {
            inner: d,
            level: self.level,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Guard {
            inner: d,
            level: self.level,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_seq(Access::new(seq, self.level, self.count))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_map(Access::new(map, self.level, self.count))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_enum(Access::new(data, self.level, self.count))
    }
}

/// Sequence, map, enum and variant access one level down: where elements
/// are produced, so where they are counted.
struct Access<'b, A> {
    inner: A,
    level: Level<'b>,
    count: Count,
}

impl<'b, A> Access<'b, A> {
    fn new(inner: A, level: Level<'b>, count: Count) -> Self {
        Access {
            inner,
            level,
            count,
        }
    }

    fn seed<S>(&self, seed: S) -> GuardSeed<'b, S> {
        GuardSeed {
            seed,
            level: self.level,
        }
    }

    /// Produces the next element (or map entry) with `next`: the one place
    /// elements are counted. For a sequence or map whose length comes from
    /// the input, one is taken from the budget before the element is
    /// decoded, so the elements nested in it find it already spent.
    fn counted<T, E: de::Error>(
        &mut self,
        next: impl FnOnce(&mut A) -> Result<Option<T>, E>,
        remaining: Option<usize>,
    ) -> Result<Option<T>, E> {
        if let Count::Type = self.count {
            return next(&mut self.inner);
        }
        let budget = self.level.budget;
        let reserved = budget.reserve(remaining)?;
        let element = next(&mut self.inner)?;
        match (reserved, element.is_some()) {
            (true, false) => budget.give_back(),
            // A sequence that said it had ended produced one more.
            (false, true) => return Err(budget.spent()),
            _ => {}
        }
        Ok(element)
    }

    /// The inner hint, never above what the budget still allows.
    fn hint(&self, hint: Option<usize>) -> Option<usize> {
        match self.count {
            Count::Input => self.level.budget.clamp(hint),
            Count::Type => hint,
        }
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.seed(seed);
        let remaining = self.inner.size_hint();
        self.counted(|inner| inner.next_element_seed(seed), remaining)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(self.inner.size_hint())
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.seed(seed);
        let remaining = self.inner.size_hint();
        self.counted(|inner| inner.next_key_seed(seed), remaining)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(self.inner.size_hint())
    }
}

impl<'b, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<'b, A> {
    type Error = A::Error;
    type Variant = Access<'b, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let (level, count) = (self.level, self.count);
        let seed = self.seed(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((value, Access::new(variant, level, count)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = Nested::enter(visitor, self.level, Count::Type)?;
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = Nested::enter(visitor, self.level, Count::Type)?;
        self.inner.struct_variant(fields, visitor)
    }
}
