//! Codecs for a batch's records section: LZ4 (frame format, as Kafka) and Zstandard.

use std::io::{Read, Write};

use rafka_proto::batch::Compression;

/// Compresses a records section; `None` if the codec is not one rafka writes or it failed.
pub fn compress(codec: Compression, data: &[u8]) -> Option<Vec<u8>> {
    match codec {
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
            enc.write_all(data).ok()?;
            enc.finish().ok()
        }
        Compression::Zstd => zstd::bulk::compress(data, 1).ok(),
        _ => None,
    }
}

/// Decompresses a records section.
pub fn decompress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() * 4);
    match codec {
        Compression::None => out.extend_from_slice(data),
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(data)
                .read_to_end(&mut out)
                .map_err(|e| format!("lz4: {e}"))?;
        }
        Compression::Zstd => {
            zstd::stream::Decoder::new(data)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(|e| format!("zstd: {e}"))?;
        }
        other => return Err(format!("{other:?} is not supported by this client")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        for codec in [Compression::Lz4, Compression::Zstd] {
            let packed = compress(codec, &data).unwrap();
            assert!(packed.len() < data.len() / 2, "{codec:?}");
            assert_eq!(decompress(codec, &packed).unwrap(), data);
        }
        assert!(decompress(Compression::Lz4, b"garbage").is_err());
    }
}
