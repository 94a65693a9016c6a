//! What a topic call can fail with, and how a node's gRPC status maps to
//! it (the `capkv-topic-error` header names the code).

use capkv_proto::headers::{
    EXPECTED_SEQUENCE_HEADER, LOG_END_HEADER, LOG_START_HEADER, RETRY_SAFE_HEADER, TOPIC_ERROR_HEADER,
};
use tonic::{Code, Status};

use crate::{describe, is_connect_error};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TopicClientError {
    #[error("{0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown topic: {0}")]
    UnknownTopic(String),
    #[error("topic exists: {0}")]
    TopicExists(String),
    /// acks=all refused: the ISR is below min.insync.replicas. Nothing was written.
    #[error("not enough replicas: {0}")]
    NotEnoughReplicas(String),
    /// A consumer-group request from a member not in the current generation.
    #[error("stale group generation: {0}")]
    StaleGeneration(String),
    /// A reassignment of the partition is in progress already.
    #[error("reassignment in progress: {0}")]
    ReassignmentInProgress(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("offset out of range: {message}")]
    OffsetOutOfRange { message: String, log_start: u64, log_end: u64 },
    /// Certainly not done.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A produce whose outcome is unknown: the records may or may not be in the log.
    #[error("indeterminate: {0}")]
    Indeterminate(String),
    #[error("server error ({code}): {message}")]
    Server { code: String, message: String },
}

use TopicClientError as E;

/// What a failed call means for a retry.
#[derive(Debug)]
pub(super) enum Failure {
    /// Try again (possibly elsewhere): certainly not done.
    Retry(E),
    /// This node does not lead the partition: refresh metadata, retry.
    NotLeader(E),
    /// The sequence numbers are out of order: nothing was appended.
    OutOfOrder { expected: u64, error: E },
    /// Maybe done.
    Unknown(E),
    /// Do not retry.
    Fatal(E),
}

fn header_u64(s: &Status, name: &str) -> Option<u64> {
    s.metadata().get(name)?.to_str().ok()?.parse().ok()
}

pub(super) fn classify(s: Status, addr: &str) -> Failure {
    let code = s.metadata().get(TOPIC_ERROR_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let msg = format!("{addr}: {}", describe(&s));
    if is_connect_error(&s) {
        return Failure::Retry(E::Unavailable(msg));
    }
    match code.as_str() {
        "not-leader" => return Failure::NotLeader(E::Unavailable(msg)),
        "unknown-topic" => return Failure::Fatal(E::UnknownTopic(s.message().to_string())),
        "topic-exists" => return Failure::Fatal(E::TopicExists(s.message().to_string())),
        "not-enough-replicas" => return Failure::Fatal(E::NotEnoughReplicas(s.message().to_string())),
        "stale-generation" => return Failure::Fatal(E::StaleGeneration(s.message().to_string())),
        "reassignment-in-progress" => return Failure::Fatal(E::ReassignmentInProgress(s.message().to_string())),
        "out-of-order-sequence" => {
            if let Some(expected) = header_u64(&s, EXPECTED_SEQUENCE_HEADER) {
                return Failure::OutOfOrder { expected, error: E::FailedPrecondition(msg) };
            }
        }
        "offset-out-of-range" => {
            return Failure::Fatal(E::OffsetOutOfRange {
                message: s.message().to_string(),
                log_start: header_u64(&s, LOG_START_HEADER).unwrap_or(0),
                log_end: header_u64(&s, LOG_END_HEADER).unwrap_or(0),
            })
        }
        _ => {}
    }
    if s.metadata().get(RETRY_SAFE_HEADER).is_some() {
        return Failure::Retry(E::Unavailable(msg));
    }
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange => Failure::Fatal(E::InvalidArgument(s.message().to_string())),
        Code::NotFound => Failure::Fatal(E::UnknownTopic(s.message().to_string())),
        Code::AlreadyExists => Failure::Fatal(E::TopicExists(s.message().to_string())),
        Code::FailedPrecondition => Failure::Fatal(E::FailedPrecondition(s.message().to_string())),
        Code::Unimplemented | Code::PermissionDenied | Code::Unauthenticated | Code::Internal | Code::DataLoss => {
            Failure::Fatal(E::Server { code: format!("{:?}", s.code()), message: s.message().to_string() })
        }
        _ => Failure::Unknown(E::Indeterminate(msg)),
    }
}
