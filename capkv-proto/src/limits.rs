//! Limits both sides of a connection must agree on.

/// Requests one session stream may have in flight; the node stops reading
/// further requests of the session until one of them is answered, and the
/// client never sends more.
pub const MAX_SESSION_IN_FLIGHT: usize = 1024;
