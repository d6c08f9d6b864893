//! The AWS JSON 1.1 wire format: `POST /` with `X-Amz-Target`, JSON bodies,
//! errors as `{"__type": ..., "message": ...}` plus `x-amzn-ErrorType`.

use axum::body::Body;
use axum::response::Response;
use berth_model::AwsError;
use http::{header, HeaderValue, StatusCode};

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

fn base(status: StatusCode, request_id: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

pub fn success(request_id: &str, body: Vec<u8>) -> Response {
    base(StatusCode::OK, request_id, body)
}

/// A success of Berth's own `GET /_berth/…` endpoints: plain JSON.
pub fn success_json(request_id: &str, body: Vec<u8>) -> Response {
    let mut response = base(StatusCode::OK, request_id, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn error(request_id: &str, error: &AwsError) -> Response {
    let body = serde_json::json!({ "__type": error.code, "message": error.message });
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = base(status, request_id, body.to_string().into_bytes());
    if let Ok(code) = HeaderValue::from_str(&error.code) {
        response.headers_mut().insert("x-amzn-errortype", code);
    }
    response
}
