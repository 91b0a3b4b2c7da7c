//! The codecs of a batch's records section, as Kafka clients write them: gzip, snappy
//! (xerial framing, as Kafka's Java client writes it; raw snappy is read too, as
//! librdkafka may write it), LZ4 (frame format) and Zstandard.
//!
//! Decompression is bounded: a section that would expand past the caller's limit is an
//! error, not an allocation.

use std::io::{Read, Write};

use super::Compression;

/// Why a records section could not be compressed or decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    /// The bytes are not a valid stream of the codec.
    #[error("{codec:?} records section does not decompress: {reason}")]
    Corrupt {
        /// The codec named by the batch.
        codec: Compression,
        /// What the decoder said.
        reason: String,
    },
    /// The section expands past the limit.
    #[error("{codec:?} records section expands past {limit} bytes")]
    TooLarge {
        /// The codec named by the batch.
        codec: Compression,
        /// The limit.
        limit: usize,
    },
    /// The codec failed to compress (an I/O error of the encoder).
    #[error("{codec:?} compression failed: {reason}")]
    Encode {
        /// The codec.
        codec: Compression,
        /// What the encoder said.
        reason: String,
    },
}

/// The magic that opens a xerial-framed snappy stream (snappy-java's `SnappyOutputStream`).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, then version and compatible version (both 1, big-endian i32).
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per xerial block (snappy-java's default).
const XERIAL_BLOCK: usize = 32 << 10;

/// Compresses a records section with `codec` (a copy for [`Compression::None`]).
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let encode = |e: std::io::Error| CompressionError::Encode {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let out = Vec::with_capacity(data.len() / 2);
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            enc.write_all(data).map_err(encode)?;
            enc.finish().map_err(encode)
        }
        Compression::Snappy => xerial_compress(data).map_err(encode),
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
            enc.write_all(data).map_err(encode)?;
            enc.finish().map_err(|e| CompressionError::Encode {
                codec,
                reason: e.to_string(),
            })
        }
        Compression::Zstd => zstd::bulk::compress(data, 1).map_err(encode),
    }
}

/// Decompresses a records section, refusing to produce more than `limit` bytes.
pub fn decompress(
    codec: Compression,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    let corrupt = |reason: String| CompressionError::Corrupt { codec, reason };
    let too_large = CompressionError::TooLarge { codec, limit };
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(too_large);
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(data), limit),
        Compression::Snappy if data.starts_with(&XERIAL_MAGIC) => xerial_decompress(data, limit),
        Compression::Snappy => {
            let len = snap::raw::decompress_len(data).map_err(|e| corrupt(e.to_string()))?;
            if len > limit {
                return Err(too_large);
            }
            snap::raw::Decoder::new()
                .decompress_vec(data)
                .map_err(|e| corrupt(e.to_string()))
        }
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(data), limit),
        Compression::Zstd => {
            let decoder = zstd::stream::Decoder::new(data).map_err(|e| corrupt(e.to_string()))?;
            read_bounded(codec, decoder, limit)
        }
    }
}

/// Reads a decoder to its end, at most `limit` bytes.
fn read_bounded(
    codec: Compression,
    decoder: impl Read,
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| CompressionError::Corrupt {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(CompressionError::TooLarge { codec, limit });
    }
    Ok(out)
}

/// Snappy in snappy-java's framing: the 16-byte header, then blocks of a big-endian
/// `i32` length and a raw snappy block of up to 32 KiB of input.
fn xerial_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for chunk in data.chunks(XERIAL_BLOCK) {
        let block = encoder.compress_vec(chunk).map_err(std::io::Error::other)?;
        out.extend_from_slice(&(block.len() as i32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

fn xerial_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Compression::Snappy;
    let corrupt = |reason: String| CompressionError::Corrupt { codec, reason };
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| corrupt("xerial header is truncated".into()))?;
    let mut out = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(corrupt("xerial block length is truncated".into()));
        };
        let len = i32::from_be_bytes(*len);
        let block = usize::try_from(len)
            .ok()
            .and_then(|n| tail.get(..n))
            .ok_or_else(|| {
                corrupt(format!(
                    "xerial block of {len} bytes overruns the {} left",
                    tail.len()
                ))
            })?;
        let size = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        if out.len() + size > limit {
            return Err(CompressionError::TooLarge { codec, limit });
        }
        let start = out.len();
        out.resize(start + size, 0);
        let n = decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt(e.to_string()))?;
        out.truncate(start + n);
        rest = &tail[block.len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_shrinks_repetitive_data() {
        let data = sample();
        for codec in ALL {
            let packed = compress(codec, &data).unwrap();
            if codec != Compression::None {
                assert!(packed.len() < data.len() / 2, "{codec:?}: {}", packed.len());
            }
            assert_eq!(
                decompress(codec, &packed, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
            assert_eq!(
                compress(codec, b"").map(|p| decompress(codec, &p, 0)),
                Ok(Ok(vec![]))
            );
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let data = sample();
        for codec in ALL {
            let packed = compress(codec, &data).unwrap();
            assert_eq!(
                decompress(codec, &packed, data.len() - 1),
                Err(CompressionError::TooLarge {
                    codec,
                    limit: data.len() - 1
                }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors_or_short_not_panics() {
        let data = sample();
        for codec in ALL.into_iter().skip(1) {
            assert!(
                matches!(
                    decompress(codec, b"garbage garbage garbage", 1 << 20),
                    Err(CompressionError::Corrupt { .. })
                ),
                "{codec:?}"
            );
            // A cut stream never passes for the whole (lz4_flex accepts a frame without
            // its end mark, so a cut there reads as a shorter stream).
            let packed = compress(codec, &data).unwrap();
            for cut in [1, packed.len() / 2] {
                if let Ok(got) = decompress(codec, &packed[..cut], 1 << 20) {
                    assert_ne!(got, data, "{codec:?} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn snappy_reads_xerial_framing_and_raw_blocks() {
        let data = sample();
        let framed = compress(Compression::Snappy, &data).unwrap();
        assert_eq!(&framed[..8], &XERIAL_MAGIC);
        assert_eq!(&framed[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, data.len()).unwrap(),
            data
        );
        let mut bad_len = framed.clone();
        bad_len[16..20].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(decompress(Compression::Snappy, &bad_len, 1 << 20).is_err());
    }
}
