//! Reading request bodies into generated input shapes and writing responses.

use crate::AwsError;
use serde::{de::DeserializeOwned, Serialize};

/// Parses a JSON 1.1 request body; an empty body counts as `{}`.
pub fn parse_input<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, AwsError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| AwsError::serialization(format!("could not read the request body: {e}")))
}

/// Serializes a response shape.
pub fn to_body<T: Serialize>(value: &T) -> Result<Vec<u8>, AwsError> {
    serde_json::to_vec(value)
        .map_err(|e| AwsError::internal(format!("could not serialize the response: {e}")))
}

/// One operation of a JSON service: parses the body into the operation's
/// input shape, asks IAM for what the call needs (when given), runs the
/// handler and serializes its output, e.g.
/// `json_op!(ctx, body, |input| requirements(&input) => handler(store, input).await)`
/// or, for calls that authorize themselves,
/// `json_op!(body, |input| handler(store, input).await)`.
#[macro_export]
macro_rules! json_op {
    ($ctx:expr, $body:expr, |$input:ident| $requirements:expr => $call:expr) => {{
        let $input = $crate::json::parse_input($body)?;
        $ctx.authorize(&$requirements)?;
        let output = $call?;
        $crate::json::to_body(&output)
    }};
    ($body:expr, |$input:ident| $call:expr) => {{
        let $input = $crate::json::parse_input($body)?;
        let output = $call?;
        $crate::json::to_body(&output)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::ecs::CreateClusterRequest;

    #[test]
    fn empty_body_is_default() {
        let r: CreateClusterRequest = parse_input(b"").unwrap();
        assert_eq!(r, CreateClusterRequest::default());
    }

    #[test]
    fn wrong_type_is_serialization_error() {
        let e = parse_input::<CreateClusterRequest>(br#"{"clusterName": 5}"#).unwrap_err();
        assert_eq!(e.code, "SerializationException");
        assert_eq!(e.status, 400);
    }
}
