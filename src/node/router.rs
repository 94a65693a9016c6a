//! The one place a request meets its level. The unary `Kv` service and the
//! session stream (which runs each request through the unary handlers) both
//! call these functions, and each is one exhaustive `match` over
//! [`Level`]: a new level does not compile until every operation says what
//! it does at that level.

use bytes::Bytes;

use super::NodeState;
use crate::clock::Version;
use crate::level::Level;
use crate::levels::{Call, CasReply, KvLevel, LevelError};
use crate::store::Cell;

/// The cell of `key` read at `level` (tombstones included).
pub async fn get(node: &NodeState, level: Level, key: Bytes, call: Call) -> Result<Option<Cell>, LevelError> {
    match level {
        Level::Eventual => KvLevel::get(&node.eventual, key, call).await,
        Level::Quorum => KvLevel::get(&node.quorum, key, call).await,
        Level::Linearizable => KvLevel::get(&*node.linear, key, call).await,
    }
}

/// Writes `value` to `key` at `level` (`None` deletes); the version written.
pub async fn write(
    node: &NodeState,
    level: Level,
    key: Bytes,
    value: Option<Bytes>,
    call: Call,
) -> Result<Version, LevelError> {
    match level {
        Level::Eventual => KvLevel::write(&node.eventual, key, value, call).await,
        Level::Quorum => KvLevel::write(&node.quorum, key, value, call).await,
        Level::Linearizable => KvLevel::write(&*node.linear, key, value, call).await,
    }
}

/// Compare-and-set of `key` at `level` (`expected: None` = must be absent).
pub async fn cas(
    node: &NodeState,
    level: Level,
    key: Bytes,
    expected: Option<Bytes>,
    new_value: Bytes,
    call: Call,
) -> Result<CasReply, LevelError> {
    match level {
        Level::Eventual => KvLevel::cas(&node.eventual, key, expected, new_value, call).await,
        Level::Quorum => KvLevel::cas(&node.quorum, key, expected, new_value, call).await,
        Level::Linearizable => KvLevel::cas(&*node.linear, key, expected, new_value, call).await,
    }
}
