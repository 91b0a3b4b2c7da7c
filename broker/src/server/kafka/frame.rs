//! Kafka's framing: a big-endian `i32` size, then the request header and body; answers
//! the same way with the response header. Sizes are checked before anything is read.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Closed;

/// Bytes of a request header's fixed part: API key, version, correlation id.
const FIXED_HEADER: usize = 8;
/// Room for a request's fields beside its records.
const FRAME_OVERHEAD: usize = 1 << 20;

/// The largest frame accepted: the records a request may carry, and room for the rest.
pub(super) fn max_frame(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(FRAME_OVERHEAD)
}

/// Reads one frame's body; `None` when the client closed the connection between frames.
pub(super) async fn read<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, Closed> {
    let size = match rd.read_i32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let size = usize::try_from(size)
        .ok()
        .filter(|&n| n >= FIXED_HEADER)
        .ok_or_else(|| Closed::Malformed(format!("frame size {size}")))?;
    if size > max {
        return Err(Closed::Malformed(format!(
            "frame of {size} bytes exceeds the {max} a request may take (max_request_bytes \
             and room for its fields)"
        )));
    }
    buf.clear();
    buf.reserve(size);
    while buf.len() < size {
        let want = size - buf.len();
        let n = (&mut *rd).take(want as u64).read_buf(buf).await?;
        if n == 0 {
            return Err(Closed::Malformed(format!(
                "the connection closed {want} bytes short of a {size}-byte frame"
            )));
        }
    }
    Ok(Some(buf.split().freeze()))
}

/// A frame's header, as far as it could be read.
pub(super) enum Parsed {
    /// A request of a served API and version, and its body.
    Request(RequestHeader, Bytes),
    /// ApiVersions at a version newer than served: answered in the v0 layout, which
    /// every client can read, with UNSUPPORTED_VERSION and the versions served.
    UnsupportedApiVersions(i32),
}

/// Reads the request header of `frame`, refusing APIs and versions not served.
pub(super) fn header(frame: &Bytes) -> Result<Parsed, Closed> {
    let mut fixed = &frame[..FIXED_HEADER];
    let key = fixed.get_i16();
    let version = fixed.get_i16();
    let correlation_id = fixed.get_i32();
    let api =
        ApiKey::try_from(key).map_err(|_| Closed::Malformed(format!("unknown API key {key}")))?;
    let Some(range) = super::meta::served(api) else {
        return Err(Closed::Malformed(format!("{api:?} is not served here")));
    };
    if version < range.min || version > range.max {
        if api == ApiKey::ApiVersions && version > range.max {
            return Ok(Parsed::UnsupportedApiVersions(correlation_id));
        }
        return Err(Closed::Malformed(format!(
            "{api:?} v{version} is not served (v{}..v{} are)",
            range.min, range.max
        )));
    }
    let mut rest = frame.clone();
    let header = RequestHeader::decode(&mut rest, api.request_header_version(version))
        .map_err(|e| Closed::Malformed(format!("{api:?} v{version} request header: {e}")))?;
    Ok(Parsed::Request(header, rest))
}

/// A whole response frame: size, header, body.
pub(super) fn response(request: &RequestHeader, body: &ResponseKind) -> Result<Bytes, Closed> {
    let api = ApiKey::try_from(request.request_api_key)
        .map_err(|_| Closed::Malformed("unknown API key".into()))?;
    let version = request.request_api_version;
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(request.correlation_id);
    let encoded = header
        .encode(&mut out, api.response_header_version(version))
        .and_then(|()| body.encode(&mut out, version));
    if let Err(e) = encoded {
        // Something this broker built does not fit the version (a bug, not the client's).
        tracing::error!("encoding the {api:?} v{version} response: {e}");
        return Err(Closed::Malformed(format!(
            "the {api:?} v{version} response could not be encoded"
        )));
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

/// ApiVersions' answer to a version it does not know, in the v0 layout.
pub(super) fn api_versions_v0_error(correlation_id: i32, served: Vec<ApiVersion>) -> Bytes {
    let body = ApiVersionsResponse::default()
        .with_error_code(kafka_protocol::error::ResponseError::UnsupportedVersion.code())
        .with_api_keys(served);
    let mut out = BytesMut::with_capacity(512);
    out.put_i32(0);
    out.put_i32(correlation_id);
    body.encode(&mut out, 0)
        .expect("an ApiVersions v0 answer always encodes");
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key: i16, version: i16, rest: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(key);
        b.put_i16(version);
        b.put_i32(7);
        b.put_slice(rest);
        b.freeze()
    }

    #[test]
    fn unknown_apis_and_versions_are_refused_and_new_api_versions_answered() {
        assert!(matches!(
            header(&frame(999, 0, &[])),
            Err(Closed::Malformed(_))
        ));
        // Produce v2 is older than Kafka 4 serves.
        assert!(matches!(
            header(&frame(0, 2, &[])),
            Err(Closed::Malformed(_))
        ));
        assert!(matches!(
            header(&frame(18, 99, &[])),
            Ok(Parsed::UnsupportedApiVersions(7))
        ));
        // A v1 header needs a client id: two bytes missing is malformed, not a panic.
        assert!(matches!(
            header(&frame(3, 1, &[0])),
            Err(Closed::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn frames_are_size_checked_before_reading() {
        let mut buf = BytesMut::new();
        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read(&mut huge, &mut buf, 1 << 20).await,
            Err(Closed::Malformed(_))
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read(&mut negative, &mut buf, 1 << 20).await,
            Err(Closed::Malformed(_))
        ));
        let mut short: &[u8] = &[0, 0, 0, 20, 1, 2, 3];
        assert!(matches!(
            read(&mut short, &mut buf, 1 << 20).await,
            Err(Closed::Malformed(_))
        ));
        let mut empty: &[u8] = &[];
        assert!(read(&mut empty, &mut buf, 1 << 20).await.unwrap().is_none());
        let mut whole: &[u8] = &[0, 0, 0, 8, 0, 18, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            read(&mut whole, &mut buf, 1 << 20)
                .await
                .unwrap()
                .unwrap()
                .len(),
            8
        );
    }
}
