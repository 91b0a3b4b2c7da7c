//! The protobuf codec of every generated service and client: prost's, except that a
//! message that does not decode is `INVALID_ARGUMENT` (the sender's fault) rather than
//! prost's `INTERNAL`, which tells a client the server broke, and that the encode buffer
//! is sized for the whole message before it is written (prost writes into a buffer that
//! otherwise doubles as it fills: a 4 MiB fetch response was copied about three times
//! over in reallocations, 7% of a broker's CPU serving a consumer).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder};

/// prost encoding and decoding; undecodable messages are `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Default)]
pub struct ProtoCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProtoEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProtoEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(self.0.decoder())
    }
}

/// prost's decoder with decode errors as `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Default)]
pub struct ProtoDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            Status::invalid_argument(format!(
                "the message is not valid protobuf: {}",
                s.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// prost's encoding into a buffer reserved for the whole message first.
#[derive(Debug, Clone, Default)]
pub struct ProtoEncoder<T>(PhantomData<T>);

impl<T: prost::Message> Encoder for ProtoEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }
}
