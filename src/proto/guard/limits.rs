//! The guard's limits, and every check of them: how deep a message may
//! nest, and how many sequence elements and map entries it may yield.

use std::cell::Cell;

use serde::de;

/// Containers nested deeper than this are refused (serde_json's limit too).
pub const MAX_DEPTH: usize = 128;

/// Sequence elements and map entries a message may hold in all, per byte of
/// the message. An element that takes bytes costs at least one, so only
/// elements that take none can reach this.
pub const ELEMENTS_PER_BYTE: u64 = 2;

/// The element budget of any message, however short.
pub const MIN_ELEMENT_BUDGET: u64 = 4096;

/// The sequence elements and map entries one message may still produce,
/// shared by every level of its decoding.
pub struct Budget {
    left: Cell<u64>,
    total: u64,
    len: usize,
}

impl Budget {
    /// The budget of a message of `len` bytes.
    pub fn for_message(len: usize) -> Budget {
        let total = ELEMENTS_PER_BYTE
            .saturating_mul(len as u64)
            .max(MIN_ELEMENT_BUDGET);
        Budget {
            left: Cell::new(total),
            total,
            len,
        }
    }

    /// Takes one element from the budget for the element (or map entry) a
    /// sequence or map is about to produce, which may hold further ones:
    /// the check before each element. `remaining` is the sequence's own
    /// hint; once the budget is spent, only a sequence that says it has
    /// ended may be asked for its end. Returns whether one was taken.
    pub(super) fn reserve<E: de::Error>(&self, remaining: Option<usize>) -> Result<bool, E> {
        match self.left.get() {
            0 if remaining == Some(0) => Ok(false),
            0 => Err(self.spent()),
            left => {
                self.left.set(left - 1);
                Ok(true)
            }
        }
    }

    /// Returns what [`Budget::reserve`] took for an element that did not come.
    pub(super) fn give_back(&self) {
        self.left.set(self.left.get().saturating_add(1));
    }

    /// The error for a message past its budget.
    pub(super) fn spent<E: de::Error>(&self) -> E {
        E::custom(format_args!(
            "more than {} sequence elements and map entries in a message of {} bytes",
            self.total, self.len
        ))
    }

    /// A length hint no larger than what the budget still allows.
    pub(super) fn clamp(&self, hint: Option<usize>) -> Option<usize> {
        let left = usize::try_from(self.left.get()).unwrap_or(usize::MAX);
        hint.map(|n| n.min(left))
    }
}

/// Where a deserializer is: its nesting level and its message's budget.
#[derive(Clone, Copy)]
pub(super) struct Level<'b> {
    depth: usize,
    pub(super) budget: &'b Budget,
}

impl<'b> Level<'b> {
    /// The level of a message's outermost value.
    pub(super) fn top(budget: &'b Budget) -> Self {
        Level { depth: 0, budget }
    }

    /// The level one down: the one place depth is checked.
    pub(super) fn down<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "values nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Level {
            depth: self.depth + 1,
            budget: self.budget,
        })
    }
}
