//! The error every request handler returns: an AWS error code, a message and an
//! HTTP status, rendered by the gateway in the service's protocol.

use std::borrow::Cow;

/// An error as AWS reports it to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {message}")]
pub struct AwsError {
    /// The exception name, e.g. `ClientException`.
    pub code: Cow<'static, str>,
    /// A human-readable message.
    pub message: String,
    /// The HTTP status code.
    pub status: u16,
}

impl AwsError {
    pub fn new(
        status: u16,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        AwsError {
            code: code.into(),
            message: message.into(),
            status,
        }
    }

    /// A 400 error with the given code.
    pub fn bad_request(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    /// The body could not be read as the operation's input shape.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(400, "SerializationException", message)
    }

    /// The target names no operation of any service.
    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(400, "UnknownOperationException", message)
    }

    /// An unexpected server-side failure; the message must not leak secrets.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalFailure", message)
    }

    /// The caller is not allowed to perform the action.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(400, "AccessDeniedException", message)
    }

    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status)
    }
}
