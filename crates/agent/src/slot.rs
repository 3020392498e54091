//! The two A/B slots. Kept tiny and separate because every other module (state
//! machine, boot control, hosts, status) names slots and must agree on their spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the two root partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"A"` or `"B"`, as written in status, labels and boot environments.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// Both slots, A first.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a slot name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid slot {0:?}: expected A or B")]
pub struct SlotParseError(pub String);

impl FromStr for Slot {
    type Err = SlotParseError;

    /// Accepts `A`/`B` in either case, with surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "A" | "a" => Ok(Slot::A),
            "B" | "b" => Ok(Slot::B),
            other => Err(SlotParseError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_other() {
        assert_eq!("b\n".parse::<Slot>().unwrap(), Slot::B);
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::B.other().to_string(), "A");
        let e = "C".parse::<Slot>().unwrap_err();
        assert!(e.to_string().contains("\"C\""), "{e}");
    }
}
