//! Vectors produced by botocore (`SigV4Auth`, `SigV4QueryAuth`) and the AWS
//! SigV4 test suite, checked in both directions.

use berth_sigv4::{sign_headers, AuthError, RequestParts, SecretLookup, SigningParams, Verifier};

const AKID: &str = "AKIDBERTHTEST";
const SECRET: &str = "berth/secret+key";
/// 2026-11-25T09:00:00Z.
const SIGNED_AT: i64 = 1_795_597_200;

struct Secrets;
impl SecretLookup for Secrets {
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        match access_key_id {
            AKID => Some(SECRET.to_string()),
            "AKIDEXAMPLE" => Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string()),
            _ => None,
        }
    }
}

const DESCRIBE_BODY: &[u8] = br#"{"clusters":["demo"]}"#;
const DESCRIBE_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDBERTHTEST/20261125/us-east-1/ecs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=97c8288c9e2f0bef43edf01a7e09796a17391da27992fa9bc25ed0ff0b120e49";

fn describe_headers(authorization: &str) -> Vec<(&str, &str)> {
    vec![
        ("host", "127.0.0.1:4566"),
        ("content-type", "application/x-amz-json-1.1"),
        (
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.DescribeClusters",
        ),
        ("x-amz-date", "20261125T090000Z"),
        ("authorization", authorization),
    ]
}

fn verify(
    headers: &[(&str, &str)],
    query: &str,
    body: &[u8],
    now: i64,
) -> Result<berth_sigv4::Verified, AuthError> {
    let request = RequestParts {
        method: "POST",
        path: "/",
        query,
        headers,
        body,
    };
    Verifier::new(900).verify(&request, now, &Secrets)
}

#[test]
fn botocore_header_signature_verifies() {
    let headers = describe_headers(DESCRIBE_AUTH);
    let verified = verify(&headers, "", DESCRIBE_BODY, SIGNED_AT + 60).expect("valid");
    assert_eq!(verified.access_key_id, AKID);
    assert_eq!(verified.region, "us-east-1");
    assert_eq!(verified.service, "ecs");
    assert!(!verified.presigned);
}

#[test]
fn tampered_body_is_a_mismatch() {
    let headers = describe_headers(DESCRIBE_AUTH);
    let err = verify(&headers, "", br#"{"clusters":["other"]}"#, SIGNED_AT).unwrap_err();
    assert!(matches!(err, AuthError::Mismatch { .. }));
    assert_eq!(err.code(), "InvalidSignatureException");
}

#[test]
fn skew_limits_are_fifteen_minutes() {
    let headers = describe_headers(DESCRIBE_AUTH);
    assert!(verify(&headers, "", DESCRIBE_BODY, SIGNED_AT + 900).is_ok());
    let err = verify(&headers, "", DESCRIBE_BODY, SIGNED_AT + 1200).unwrap_err();
    assert_eq!(err.code(), "InvalidSignatureException");
    assert_eq!(
        err.message(),
        "Signature expired: 20261125T090000Z is now earlier than 20261125T090500Z (20261125T092000Z - 15 min.)"
    );
    let err = verify(&headers, "", DESCRIBE_BODY, SIGNED_AT - 1200).unwrap_err();
    assert!(err.message().starts_with("Signature not yet current"));
}

#[test]
fn unknown_key_and_missing_auth() {
    let auth = DESCRIBE_AUTH.replace("AKIDBERTHTEST", "AKIDNOBODY");
    let headers = describe_headers(&auth);
    let err = verify(&headers, "", DESCRIBE_BODY, SIGNED_AT).unwrap_err();
    assert_eq!(err.code(), "UnrecognizedClientException");

    let headers = [("host", "127.0.0.1:4566")];
    let err = verify(&headers, "", b"{}", SIGNED_AT).unwrap_err();
    assert_eq!(err.code(), "MissingAuthenticationTokenException");
    assert_eq!(err.message(), "Missing Authentication Token");
}

#[test]
fn incomplete_authorization_names_what_is_missing() {
    let headers = describe_headers(
        "AWS4-HMAC-SHA256 Credential=AKIDBERTHTEST/20261125/us-east-1/ecs/aws4_request",
    );
    let err = verify(&headers, "", DESCRIBE_BODY, SIGNED_AT).unwrap_err();
    assert_eq!(err.code(), "IncompleteSignatureException");
    assert!(err.message().contains("'Signature'"));
    assert!(err.message().contains("'SignedHeaders'"));
    assert!(!err.message().contains("'Credential'"));
}

#[test]
fn botocore_presigned_query_verifies() {
    let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDBERTHTEST%2F20261125%2Fus-east-1%2Fecs%2Faws4_request&X-Amz-Date=20261125T090000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=content-type%3Bhost%3Bx-amz-target&X-Amz-Security-Token=tok%2Fen%3D%3D&X-Amz-Signature=3b2553fab90f6b1434c7b0612270e211fe93bb3e39e9df2c5ad532ec0e452390";
    let headers = [
        ("host", "127.0.0.1:4566"),
        ("content-type", "application/x-amz-json-1.1"),
        (
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.ListClusters",
        ),
    ];
    // botocore moves the body into the query, so a presigned call has none.
    let verified = verify(&headers, query, b"", SIGNED_AT + 299).expect("valid");
    assert!(verified.presigned);
    assert_eq!(verified.session_token.as_deref(), Some("tok/en=="));
    let err = verify(&headers, query, b"", SIGNED_AT + 301).unwrap_err();
    assert!(err.message().starts_with("Signature expired"), "{err}");
}

#[test]
fn aws_suite_get_vanilla() {
    let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    let headers = [
        ("host", "example.amazonaws.com"),
        ("x-amz-date", "20150830T123600Z"),
        ("authorization", auth),
    ];
    let request = RequestParts {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
    };
    Verifier::new(900)
        .verify(&request, 1_440_938_160, &Secrets)
        .expect("AWS test-suite vector verifies");
}

#[test]
fn signer_reproduces_botocore() {
    let params = SigningParams {
        access_key_id: AKID,
        secret_access_key: SECRET,
        session_token: None,
        region: "us-east-1",
        service: "ecs",
        now: SIGNED_AT,
    };
    let headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        (
            "X-Amz-Target",
            "AmazonEC2ContainerServiceV20141113.DescribeClusters",
        ),
        ("Host", "127.0.0.1:4566"),
    ];
    let signed = sign_headers(&params, "POST", "/", "", &headers, DESCRIBE_BODY);
    let auth = signed
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(auth, Some(DESCRIBE_AUTH));
}

/// Signs a DescribeClusters-shaped request with `signed` as the signed
/// headers (Berth's own signer), for the signed-header rules.
fn signed_with(signed_target: bool, body: &[u8], unsigned_payload: bool) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), "127.0.0.1:4566".into()),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
    ];
    if signed_target {
        headers.push((
            "x-amz-target".into(),
            "AmazonEC2ContainerServiceV20141113.ListServices".into(),
        ));
    }
    if unsigned_payload {
        headers.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
    }
    let params = SigningParams {
        access_key_id: AKID,
        secret_access_key: SECRET,
        session_token: None,
        region: "us-east-1",
        service: "ecs",
        now: SIGNED_AT,
    };
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let extra = sign_headers(&params, "POST", "/", "", &pairs, body);
    headers.extend(extra);
    headers
}

#[test]
fn the_operation_header_must_be_signed() {
    // Signed without X-Amz-Target, then sent with one: refused before any
    // signature is computed, so a signature for one call is never another.
    let mut headers = signed_with(false, b"{}", false);
    headers.push((
        "x-amz-target".into(),
        "AmazonEC2ContainerServiceV20141113.DeleteCluster".into(),
    ));
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let err = verify(&pairs, "", b"{}", SIGNED_AT).unwrap_err();
    assert_eq!(err.code(), "InvalidSignatureException");
    assert!(err
        .message()
        .contains("'X-Amz-Target' must be a 'SignedHeader'"));
    let request = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &pairs,
        body: b"",
    };
    assert!(Verifier::new(900)
        .precheck(&request, SIGNED_AT, &Secrets)
        .is_err());

    // Signed with it: fine, and precheck agrees.
    let headers = signed_with(true, b"{}", false);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(verify(&pairs, "", b"{}", SIGNED_AT).is_ok());
    let request = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &pairs,
        body: b"",
    };
    assert!(Verifier::new(900)
        .precheck(&request, SIGNED_AT, &Secrets)
        .is_ok());
}

#[test]
fn unsigned_payload_is_refused() {
    let headers = signed_with(true, b"{}", true);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let err = verify(&pairs, "", br#"{"cluster":"other"}"#, SIGNED_AT).unwrap_err();
    assert_eq!(err.code(), "InvalidSignatureException");
    assert!(err.message().contains("UNSIGNED-PAYLOAD"));
}

#[test]
fn precheck_refuses_unknown_keys_and_stale_dates_without_a_body() {
    let mut headers = signed_with(true, b"{}", false);
    for (k, v) in headers.iter_mut() {
        if k == "authorization" {
            *v = v.replace(AKID, "AKIDUNKNOWN");
        }
    }
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let request = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &pairs,
        body: b"",
    };
    let verifier = Verifier::new(900);
    assert_eq!(
        verifier.precheck(&request, SIGNED_AT, &Secrets),
        Err(AuthError::UnknownKey)
    );
    let headers = signed_with(true, b"{}", false);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let request = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &pairs,
        body: b"",
    };
    assert_eq!(
        verifier
            .precheck(&request, SIGNED_AT + 3600, &Secrets)
            .unwrap_err()
            .code(),
        "InvalidSignatureException"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn authorization() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,120}",
            "AWS4-HMAC-SHA256 (Credential=[ -~]{0,40}, ?){0,2}(SignedHeaders=[a-z;-]{0,30}, ?)?(Signature=[0-9a-f]{0,64})?",
            Just(DESCRIBE_AUTH.to_string()),
        ]
    }

    fn amz_date() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9TZ]{0,20}",
            "[ -~]{0,20}",
            Just("20261125T090000Z".to_string())
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        /// The SigV4 parser is total: any header or query answers Ok or an
        /// error, never a panic.
        #[test]
        fn header_and_query_parsing_never_panics(
            auth in authorization(),
            date in amz_date(),
            query in "[ -~]{0,160}",
            presign in "X-Amz-(Algorithm|Credential|Date|Expires|SignedHeaders|Signature)=[ -~]{0,40}(&X-Amz-(Algorithm|Credential|Date|Expires|SignedHeaders|Signature)=[ -~]{0,40}){0,5}",
            use_presign in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let headers = vec![
                ("host", "127.0.0.1:4566"),
                ("x-amz-date", date.as_str()),
                ("authorization", auth.as_str()),
                ("x-amz-target", "AmazonEC2ContainerServiceV20141113.ListClusters"),
                ("content-type", "application/x-amz-json-1.1"),
            ];
            let query = if use_presign { presign } else { query };
            let request = RequestParts {
                method: "POST",
                path: "/",
                query: &query,
                headers: &headers,
                body: &body,
            };
            let verifier = Verifier::new(900);
            let _ = verifier.precheck(&request, SIGNED_AT, &Secrets);
            let _ = verifier.verify(&request, SIGNED_AT, &Secrets);
        }
    }
}
