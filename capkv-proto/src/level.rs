//! The consistency level a request asks for.

use std::fmt;
use std::str::FromStr;

use crate::proto;

/// One of the three consistency levels. The numbering matches
/// `capkv.v1.Consistency` and is stored in cells as their origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Eventual = 1,
    Quorum = 2,
    Linearizable = 3,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Eventual, Level::Quorum, Level::Linearizable];

    pub fn name(self) -> &'static str {
        match self {
            Level::Eventual => "eventual",
            Level::Quorum => "quorum",
            Level::Linearizable => "linearizable",
        }
    }

    pub fn from_u8(v: u8) -> Option<Level> {
        match v {
            1 => Some(Level::Eventual),
            2 => Some(Level::Quorum),
            3 => Some(Level::Linearizable),
            _ => None,
        }
    }

    pub fn to_proto(self) -> proto::Consistency {
        match self {
            Level::Eventual => proto::Consistency::Eventual,
            Level::Quorum => proto::Consistency::Quorum,
            Level::Linearizable => proto::Consistency::Linearizable,
        }
    }

    pub fn from_proto(c: i32) -> Option<Level> {
        match proto::Consistency::try_from(c).ok()? {
            proto::Consistency::Eventual => Some(Level::Eventual),
            proto::Consistency::Quorum => Some(Level::Quorum),
            proto::Consistency::Linearizable => Some(Level::Linearizable),
            proto::Consistency::Unspecified => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown consistency level {0:?}: expected eventual, quorum or linearizable")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "eventual" | "one" => Ok(Level::Eventual),
            "quorum" => Ok(Level::Quorum),
            "linearizable" | "linear" | "strong" => Ok(Level::Linearizable),
            _ => Err(UnknownLevel(s.to_string())),
        }
    }
}
