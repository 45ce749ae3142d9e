//! Stored rows to RGB8 pixels on the hot path: raw rows are copied, grey rows expanded, JPEG goes
//! straight into a reused buffer through the packer's own JPEG decoder (`codec::decode_jpeg_into`:
//! grayscale and CMYK JPEGs come out as RGB), PNG through `image`.

use crate::shard::codec::{decode_jpeg_into, decode_stored, CodecError};
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
        Encoding::Gray => {
            if bytes.len() != w * h {
                return Err(CodecError::RawSize {
                    found: bytes.len(),
                    expected: w * h,
                    width,
                    height,
                });
            }
            out.clear();
            out.extend(bytes.iter().flat_map(|&v| [v, v, v]));
        }
        Encoding::Jpeg => {
            let size = (u32::from(width), u32::from(height));
            decode_jpeg_into(bytes, u64::MAX, Some(size), out)?;
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
