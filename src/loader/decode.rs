//! Stored rows to RGB8 pixels on the hot path: raw rows are copied, JPEG goes straight through
//! zune-jpeg into a reused buffer (grayscale and CMYK JPEGs come out as RGB), PNG through `image`.

use std::io::Cursor;

use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::shard::codec::{decode_stored, CodecError};
use crate::shard::Encoding;

/// Decodes a stored image of `width x height` into `out` (resized to `width * height * 3`).
pub fn decode_into(
    bytes: &[u8],
    encoding: Encoding,
    width: u16,
    height: u16,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let (w, h) = (usize::from(width), usize::from(height));
    // A zero side would reach the crop as an empty image; only a damaged shard can hold one.
    if w == 0 || h == 0 {
        return Err(CodecError::BadSize {
            width: width.into(),
            height: height.into(),
        });
    }
    match encoding {
        Encoding::Raw => {
            if bytes.len() != w * h * 3 {
                return Err(CodecError::RawSize {
                    found: bytes.len(),
                    expected: w * h * 3,
                    width,
                    height,
                });
            }
            out.clear();
            out.extend_from_slice(bytes);
        }
        Encoding::Jpeg => {
            let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
            let mut decoder = JpegDecoder::new_with_options(Cursor::new(bytes), options);
            let corrupt =
                |e: zune_jpeg::errors::DecodeErrors| CodecError::CorruptJpeg(e.to_string());
            decoder.decode_headers().map_err(corrupt)?;
            let info = decoder
                .info()
                .ok_or_else(|| CodecError::CorruptJpeg("no frame header".into()))?;
            let (dw, dh) = (usize::from(info.width), usize::from(info.height));
            if (dw, dh) != (w, h) {
                return Err(CodecError::SizeMismatch {
                    found_w: dw as u32,
                    found_h: dh as u32,
                    width,
                    height,
                });
            }
            out.resize(w * h * 3, 0);
            decoder.decode_into(out).map_err(corrupt)?;
        }
        Encoding::Png => {
            let image = decode_stored(bytes, encoding, width, height)?;
            out.clear();
            out.extend_from_slice(image.as_raw());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sided_rows_are_an_error_not_an_empty_image() {
        let mut out = Vec::new();
        for (w, h) in [(0, 4), (4, 0), (0, 0)] {
            let err = decode_into(&[], Encoding::Raw, w, h, &mut out).unwrap_err();
            assert!(matches!(err, CodecError::BadSize { .. }), "{w}x{h}: {err}");
        }
    }
}
