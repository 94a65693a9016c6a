//! A run's answer: valid, invalid, or unknown — and how answers combine.
//!
//! In `results.json` it is `true`, `false` or `"unknown"`, as Jepsen writes
//! `:valid?`. Combining: a definite finding (invalid) wins over everything,
//! then unknown, then valid: one checker that could not decide makes the
//! whole run undecided, unless another found a violation.

use std::fmt;

use serde::{Serialize, Serializer};

/// See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Validity {
    /// Every check passed.
    Valid,
    /// Some check could not decide (budget exceeded, nothing to check, an
    /// error).
    Unknown,
    /// Some check found a violation.
    Invalid,
}

impl Validity {
    /// `a` and `b` together (see the module docs).
    pub fn and(self, other: Validity) -> Validity {
        self.max(other)
    }

    /// All of `answers` together; [`Validity::Valid`] for none.
    pub fn all(answers: impl IntoIterator<Item = Validity>) -> Validity {
        answers.into_iter().fold(Validity::Valid, Validity::and)
    }

    /// The exit status `kv-jepsen jepsen` uses: 0 valid, 1 invalid, 2
    /// unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            Validity::Valid => 0,
            Validity::Invalid => 1,
            Validity::Unknown => 2,
        }
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Validity::Valid => "valid",
            Validity::Invalid => "INVALID",
            Validity::Unknown => "unknown",
        })
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => serializer.serialize_bool(true),
            Validity::Invalid => serializer.serialize_bool(false),
            Validity::Unknown => serializer.serialize_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: invalid wins, then unknown; JSON is true / false / "unknown".
    #[test]
    fn combines_and_serializes() {
        use Validity::*;
        assert_eq!(Validity::all([]), Valid);
        assert_eq!(Validity::all([Valid, Unknown]), Unknown);
        assert_eq!(Validity::all([Unknown, Invalid, Valid]), Invalid);
        let json = serde_json::to_string(&[Valid, Invalid, Unknown]).unwrap();
        assert_eq!(json, r#"[true,false,"unknown"]"#);
        assert_eq!([Valid, Invalid, Unknown].map(Validity::exit_code), [0, 1, 2]);
    }
}
