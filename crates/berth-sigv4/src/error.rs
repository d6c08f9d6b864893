use thiserror::Error;

/// Why a request's signature was not accepted, in AWS's vocabulary.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header and no presigned query.
    #[error("Missing Authentication Token")]
    Missing,
    /// The signature is present but a required part is missing or malformed.
    #[error("{0}")]
    Incomplete(String),
    /// The access key id is unknown (or its session token does not match).
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The signature was computed differently than ours.
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n\
         The Canonical String for this request should have been\n'{canonical_request}'\n\n\
         The String-to-Sign should have been\n'{string_to_sign}'\n"
    )]
    Mismatch {
        canonical_request: String,
        string_to_sign: String,
    },
    /// Signed too long ago, too far in the future, or presigned and expired;
    /// the message says which.
    #[error("{0}")]
    Expired(String),
    /// Anything else the signature gets wrong (scope date, payload hash ...).
    #[error("{0}")]
    Invalid(String),
}

impl AuthError {
    /// The AWS error code (`__type`) for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::Mismatch { .. } | AuthError::Expired(_) | AuthError::Invalid(_) => {
                "InvalidSignatureException"
            }
        }
    }

    pub fn message(&self) -> String {
        self.to_string()
    }
}
