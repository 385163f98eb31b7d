//! gRPC's unary call, framed here for `ShouldRateLimit`: one length-prefixed message in, one
//! out, the status in the trailers. tonic's generic server streams every message through a
//! decoder and an encoder with buffers of their own: a tenth of a decision's CPU, measured in
//! BENCHMARKS.md.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use http_body::{Frame, SizeHint};
use prost::Message;
use tonic::Status;

use super::RlsService;

/// The method's path, as Envoy calls it.
pub const SHOULD_RATE_LIMIT: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// The largest request message read. Envoy's requests are a few hundred bytes; the limits on
/// descriptors and entries bound what is decided, and this bounds what is buffered first.
pub const MAX_MESSAGE: usize = 1024 * 1024;

const GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The length prefix of every message: a compression flag and four bytes of length.
const PREFIX: usize = 5;

/// Answers one `ShouldRateLimit` call.
pub async fn should_rate_limit(State(service): State<RlsService>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // gRPC's HTTP/2 mapping: a request that is not gRPC at all gets HTTP's own refusal.
    let is_grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let deadline = parts
        .headers
        .get(GRPC_TIMEOUT)
        .and_then(|value| value.to_str().ok())
        .and_then(grpc_timeout);
    let answer = match read(body).await {
        Ok(request) => service.decide(request, deadline).await,
        Err(status) => Err(status),
    };
    match answer {
        Ok(answer) => Response::builder()
            .header(header::CONTENT_TYPE, GRPC)
            .body(Body::new(Unary::new(&answer)))
            .expect("the answer's parts are valid"),
        Err(status) => status.into_http(),
    }
}

/// The one message of a unary call's body.
async fn read(body: Body) -> Result<RateLimitRequest, Status> {
    let bytes = axum::body::to_bytes(body, PREFIX + MAX_MESSAGE)
        .await
        .map_err(|_| {
            Status::resource_exhausted(format!(
                "the request is larger than {MAX_MESSAGE} bytes, or broke off"
            ))
        })?;
    let message = message(&bytes)?;
    RateLimitRequest::decode(message)
        .map_err(|error| Status::internal(format!("the request does not decode: {error}")))
}

/// The message of `body`, which must hold exactly one, uncompressed.
fn message(body: &[u8]) -> Result<&[u8], Status> {
    let Some((prefix, message)) = body.split_first_chunk::<PREFIX>() else {
        return Err(Status::internal("the request holds no message"));
    };
    let [compressed, length @ ..] = *prefix;
    if compressed != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported; Envoy does not compress them",
        ));
    }
    if u32::from_be_bytes(length) as usize != message.len() {
        return Err(Status::internal(
            "the request must hold exactly one message, whole",
        ));
    }
    Ok(message)
}

/// A `grpc-timeout` value: at most 8 digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`.
pub fn grpc_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A unary answer's body: the message in one frame, then `grpc-status: 0` in the trailers.
struct Unary {
    message: Option<Bytes>,
    ended: bool,
}

impl Unary {
    fn new(answer: &RateLimitResponse) -> Self {
        let length = answer.encoded_len();
        let mut frame = BytesMut::with_capacity(PREFIX + length);
        frame.put_u8(0);
        frame.put_u32(length as u32);
        answer
            .encode(&mut frame)
            .expect("the buffer was sized to the message");
        Unary {
            message: Some(frame.freeze()),
            ended: false,
        }
    }
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if std::mem::replace(&mut self.ended, true) {
            return Poll::Ready(None);
        }
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.message.as_ref().map_or(0, |m| m.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `grpc-timeout` reads as gRPC writes it; anything else is no deadline.
    #[test]
    fn grpc_timeouts_read_as_written() {
        assert_eq!(grpc_timeout("20m"), Some(Duration::from_millis(20)));
        assert_eq!(grpc_timeout("19999u"), Some(Duration::from_micros(19_999)));
        assert_eq!(grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "20", "20x", "123456789m", "-1m", "1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    /// A body holds one whole, uncompressed message, or is refused with the reason.
    #[test]
    fn a_body_holds_one_whole_message() {
        assert_eq!(message(&[0, 0, 0, 0, 2, 8, 1]).unwrap(), &[8, 1]);
        assert_eq!(message(&[0, 0, 0, 0, 0]).unwrap(), &[] as &[u8]);
        let refused = |body: &[u8]| message(body).unwrap_err().code();
        assert_eq!(refused(&[]), tonic::Code::Internal);
        assert_eq!(refused(&[0, 0, 0]), tonic::Code::Internal);
        assert_eq!(refused(&[0, 0, 0, 0, 3, 8, 1]), tonic::Code::Internal);
        assert_eq!(refused(&[0, 0, 0, 0, 1, 8, 1]), tonic::Code::Internal);
        assert_eq!(refused(&[1, 0, 0, 0, 2, 8, 1]), tonic::Code::Unimplemented);
    }
}
