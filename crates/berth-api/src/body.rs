//! Reading request bodies with bounds: a cap per operation (checked against
//! `Content-Length` before a byte is read), a time limit for the whole body,
//! and a budget for the bytes all requests hold at once, so slow or huge
//! bodies cannot exhaust the server's memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use berth_model::AwsError;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// The default bytes all request bodies may hold at once.
pub const DEFAULT_BODY_BUDGET: usize = 128 * 1024 * 1024;
/// The default time a client has to send a whole body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads bodies within a shared memory budget.
#[derive(Debug)]
pub struct BodyReader {
    held: Arc<AtomicUsize>,
    budget: usize,
    timeout: Duration,
}

impl Default for BodyReader {
    fn default() -> Self {
        BodyReader::new(DEFAULT_BODY_BUDGET, DEFAULT_BODY_TIMEOUT)
    }
}

/// Bytes of the budget a request holds; given back when dropped.
#[derive(Debug)]
pub struct Lease {
    held: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge(usize),
    Busy,
    Timeout,
    Broken,
}

impl BodyError {
    pub fn to_aws(&self) -> AwsError {
        match self {
            BodyError::TooLarge(limit) => AwsError::new(
                413,
                "SerializationException",
                format!("The request body is larger than {limit} bytes."),
            ),
            BodyError::Busy => AwsError::new(
                503,
                "ServiceUnavailableException",
                "Berth is receiving too many request bodies at once; retry shortly.",
            ),
            BodyError::Timeout => AwsError::new(
                408,
                "RequestTimeoutException",
                "The request body was not received in time.",
            ),
            BodyError::Broken => AwsError::serialization("The request body could not be read."),
        }
    }
}

impl BodyReader {
    pub fn new(budget: usize, timeout: Duration) -> BodyReader {
        BodyReader {
            held: Arc::new(AtomicUsize::new(0)),
            budget,
            timeout,
        }
    }

    /// Bytes all requests hold now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    fn take(&self, lease: &mut Lease, more: usize) -> Result<(), BodyError> {
        let mut current = self.held.load(Ordering::Acquire);
        loop {
            let next = current.checked_add(more).ok_or(BodyError::Busy)?;
            if next > self.budget {
                return Err(BodyError::Busy);
            }
            match self.held.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    lease.bytes += more;
                    return Ok(());
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Reads `body` whole: at most `limit` bytes (a larger `content_length`
    /// is refused before anything is read), within the time limit and the
    /// shared budget. The lease holds the bytes until it is dropped.
    pub async fn read(
        &self,
        body: Body,
        content_length: Option<u64>,
        limit: usize,
    ) -> Result<(Bytes, Lease), BodyError> {
        let mut lease = Lease {
            held: self.held.clone(),
            bytes: 0,
        };
        let declared = match content_length {
            Some(len) if len > limit as u64 => return Err(BodyError::TooLarge(limit)),
            Some(len) => len as usize,
            None => 0,
        };
        self.take(&mut lease, declared)?;
        let read = async {
            let mut buffer = BytesMut::with_capacity(declared);
            let mut body = body;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| BodyError::Broken)?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let total = buffer.len() + data.len();
                if total > limit {
                    return Err(BodyError::TooLarge(limit));
                }
                if total > lease.bytes {
                    let more = total - lease.bytes;
                    self.take(&mut lease, more)?;
                }
                buffer.extend_from_slice(&data);
            }
            Ok(buffer.freeze())
        };
        let bytes = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| BodyError::Timeout)??;
        Ok((bytes, lease))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_budget_and_release() {
        let reader = BodyReader::new(100, Duration::from_secs(5));
        let (bytes, lease) = reader.read(Body::from("hello"), Some(5), 10).await.unwrap();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(reader.held(), 5);
        drop(lease);
        assert_eq!(reader.held(), 0);
        // Declared too large: refused before reading.
        assert_eq!(
            reader
                .read(Body::from("x"), Some(11), 10)
                .await
                .unwrap_err(),
            BodyError::TooLarge(10)
        );
        // Undeclared and too large.
        assert_eq!(
            reader
                .read(Body::from(vec![0u8; 11]), None, 10)
                .await
                .unwrap_err(),
            BodyError::TooLarge(10)
        );
        // Over the shared budget.
        let (_, held) = reader
            .read(Body::from(vec![0u8; 80]), Some(80), 100)
            .await
            .unwrap();
        assert_eq!(
            reader
                .read(Body::from(vec![0u8; 30]), Some(30), 100)
                .await
                .unwrap_err(),
            BodyError::Busy
        );
        drop(held);
        assert_eq!(reader.held(), 0);
    }

    #[tokio::test]
    async fn slow_bodies_time_out() {
        let reader = BodyReader::new(100, Duration::from_millis(50));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let sent = tx.send(Ok(Bytes::from_static(b"a"))).await;
        assert!(sent.is_ok());
        assert_eq!(
            reader.read(body, Some(10), 10).await.unwrap_err(),
            BodyError::Timeout
        );
        assert_eq!(reader.held(), 0);
        drop(tx);
    }
}
