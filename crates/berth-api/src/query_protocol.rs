//! The AWS Query wire format (IAM, STS): `POST /` with a form-encoded body
//! carrying `Action` and `Version`; answers are XML, errors an
//! `<ErrorResponse>`.

use axum::body::Body;
use axum::response::Response;
pub use berth_model::xml::xml_escape;
use berth_model::AwsError;
use http::{header, HeaderValue, StatusCode};

pub const CONTENT_TYPE: &str = "text/xml";
/// The form content type that marks a request as Query.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Whether `action` can name an operation (and so an XML element).
pub fn valid_action_name(action: &str) -> bool {
    !action.is_empty()
        && action.len() <= 128
        && action.bytes().all(|b| b.is_ascii_alphanumeric())
        && action.as_bytes()[0].is_ascii_alphabetic()
}

/// The Query protocol spells the authentication errors without the
/// `Exception` suffix the JSON protocol uses.
pub fn query_error_code(error: AwsError) -> AwsError {
    let code = match error.code.as_ref() {
        "MissingAuthenticationTokenException" => "MissingAuthenticationToken",
        "IncompleteSignatureException" => "IncompleteSignature",
        "UnrecognizedClientException" => "InvalidClientTokenId",
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        "ExpiredTokenException" => "ExpiredToken",
        _ => return error,
    };
    AwsError::new(error.status, code, error.message)
}

fn base(status: StatusCode, request_id: &str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// The success document: `<{Action}Response>` wrapping `<{Action}Result>`
/// (omitted when the result is empty) and the response metadata.
pub fn success_body(namespace: &str, action: &str, request_id: &str, inner: &str) -> String {
    let ns = xml_escape(namespace);
    let id = xml_escape(request_id);
    if inner.is_empty() {
        format!(
            "<{action}Response xmlns=\"{ns}\"><ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata></{action}Response>"
        )
    } else {
        format!(
            "<{action}Response xmlns=\"{ns}\"><{action}Result>{inner}</{action}Result><ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata></{action}Response>"
        )
    }
}

pub fn success(namespace: &str, action: &str, request_id: &str, inner: &str) -> Response {
    base(
        StatusCode::OK,
        request_id,
        success_body(namespace, action, request_id, inner),
    )
}

/// The error document, `Type` `Receiver` for server faults, `Sender` otherwise.
pub fn error_body(namespace: &str, request_id: &str, error: &AwsError) -> String {
    let kind = if error.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"{}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        xml_escape(namespace),
        xml_escape(&error.code),
        xml_escape(&error.message),
        xml_escape(request_id),
    )
}

pub fn error(namespace: &str, request_id: &str, error: &AwsError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    base(status, request_id, error_body(namespace, request_id, error))
}

/// How a Query service's answers are shaped: plain Query (IAM, STS) or EC2's
/// dialect of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    pub namespace: &'static str,
    pub ec2: bool,
}

impl Dialect {
    pub fn success(self, action: &str, request_id: &str, inner: &str) -> Response {
        if !self.ec2 {
            return self::success(self.namespace, action, request_id, inner);
        }
        let body = ec2_success_body(self.namespace, action, request_id, inner);
        base(StatusCode::OK, request_id, body)
    }

    pub fn error(self, request_id: &str, error: &AwsError) -> Response {
        if self.ec2 {
            let status =
                StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            base(status, request_id, ec2_error_body(request_id, error))
        } else {
            self::error(self.namespace, request_id, error)
        }
    }
}

/// EC2's success document: the result members sit directly in
/// `<{Action}Response>` after a lower-case `<requestId>`.
pub fn ec2_success_body(namespace: &str, action: &str, request_id: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{}\"><requestId>{}</requestId>{inner}</{action}Response>",
        xml_escape(namespace),
        xml_escape(request_id),
    )
}

/// EC2's error document: `<Response><Errors><Error>` and `<RequestID>`.
pub fn ec2_error_body(request_id: &str, error: &AwsError) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        xml_escape(&error.code),
        xml_escape(&error.message),
        xml_escape(request_id),
    )
}

/// The service named by the credential scope of a request's `Authorization`
/// header or presigned `X-Amz-Credential`, read without verifying anything:
/// only used to pick the namespace an authentication error is rendered in.
pub fn scope_service(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    let credential = match authorization {
        Some(auth) => auth
            .split(|c: char| c == ',' || c.is_whitespace())
            .find_map(|part| part.trim().strip_prefix("Credential="))
            .map(str::to_string),
        None => query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "X-Amz-Credential")
                .map(|(_, v)| v.into_owned())
        }),
    }?;
    credential.split('/').nth(3).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }

    #[test]
    fn reads_the_scope_service() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(scope_service(Some(auth), None).as_deref(), Some("iam"));
        assert_eq!(
            scope_service(
                None,
                Some("X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fsts%2Faws4_request")
            )
            .as_deref(),
            Some("sts")
        );
        assert_eq!(scope_service(None, None), None);
    }

    #[test]
    fn ec2_documents_have_no_result_wrapper() {
        assert_eq!(
            ec2_success_body("ns", "DeleteVpc", "r1", "<return>true</return>"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteVpcResponse xmlns=\"ns\"><requestId>r1</requestId><return>true</return></DeleteVpcResponse>"
        );
        let e = AwsError::bad_request("InvalidVpcID.NotFound", "The vpc ID 'vpc-1' <x>");
        assert_eq!(
            ec2_error_body("r2", &e),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidVpcID.NotFound</Code><Message>The vpc ID &apos;vpc-1&apos; &lt;x&gt;</Message></Error></Errors><RequestID>r2</RequestID></Response>"
        );
    }

    #[test]
    fn empty_results_omit_the_result_element() {
        assert_eq!(
            success_body("ns", "DeleteUser", "r1", ""),
            "<DeleteUserResponse xmlns=\"ns\"><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></DeleteUserResponse>"
        );
    }
}
