//! Turns a source record into a stored row: read, decode (which also validates), optionally
//! downscale, then store as the configured encoding asks. Runs on rayon workers.

use image::{GrayImage, RgbImage};

use super::config::{EncodingMode, PackConfig, DEFAULT_AUTO_RAW_MAX_BYTES};
use super::{Failure, PackError, Payload, Record};
use crate::shard::codec::{
    decode_source, encode_jpeg, fit_max_side, fit_max_side_grey, CodecError, Encoding,
};
use crate::shard::Row;

pub(crate) struct EncodeOptions {
    mode: EncodingMode,
    quality: u8,
    max_side: Option<u32>,
    max_pixels: u64,
}

impl From<&PackConfig> for EncodeOptions {
    fn from(cfg: &PackConfig) -> Self {
        Self {
            mode: cfg.encoding,
            quality: cfg.quality,
            max_side: cfg.max_side,
            max_pixels: cfg.max_pixels,
        }
    }
}

/// Encodes one record; also returns the bytes it took in the source.
pub(crate) fn encode(record: Record, options: &EncodeOptions) -> Result<(Row, u64), Failure> {
    let Record {
        index,
        label,
        origin,
        payload,
    } = record;
    let fail = |error: PackError| Failure {
        origin: origin.clone(),
        error: Box::new(error),
    };
    let (pixels, source_bytes) = match payload {
        Payload::Grey(image) => {
            let row = encode_grey(image, options, &origin)?;
            let bytes_in = row.image.len() as u64;
            return Ok((
                Row {
                    index,
                    label,
                    ..row
                },
                bytes_in,
            ));
        }
        Payload::Pixels(image) => (image, None),
        Payload::Render(render) => (render(), None),
        Payload::Bytes(bytes) => decode(bytes, &origin, options.max_pixels).map_err(fail)?,
        Payload::File(path) => {
            let bytes = std::fs::read(&path)
                .map_err(|e| PackError::Image {
                    origin: origin.clone(),
                    error: CodecError::Unreadable(e),
                })
                .map_err(fail)?;
            decode(bytes, &origin, options.max_pixels).map_err(fail)?
        }
    };
    let bytes_in = source_bytes
        .as_ref()
        .map_or(pixels.as_raw().len(), |(b, _)| b.len()) as u64;
    let (width, height) = pixels.dimensions();
    let resized = match options.max_side {
        Some(side) => fit_max_side(pixels, side),
        None => pixels,
    };
    let (out_w, out_h) = resized.dimensions();
    let unchanged = (out_w, out_h) == (width, height);
    let (image, encoding) = match options.mode {
        EncodingMode::Raw => (resized.into_raw(), Encoding::Raw),
        EncodingMode::Jpeg => (jpeg(&resized, options.quality, &origin)?, Encoding::Jpeg),
        EncodingMode::Keep => match source_bytes {
            Some((bytes, encoding)) => (bytes, encoding),
            None => (resized.into_raw(), Encoding::Raw),
        },
        EncodingMode::Auto if resized.as_raw().len() <= DEFAULT_AUTO_RAW_MAX_BYTES => {
            (resized.into_raw(), Encoding::Raw)
        }
        EncodingMode::Auto => match source_bytes {
            Some((bytes, Encoding::Jpeg)) if unchanged => (bytes, Encoding::Jpeg),
            _ => (jpeg(&resized, options.quality, &origin)?, Encoding::Jpeg),
        },
    };
    // decode_source refused sides above u16::MAX, and resizing only shrinks.
    let row = Row {
        index,
        label,
        image,
        height: out_h as u16,
        width: out_w as u16,
        encoding,
    };
    Ok((row, bytes_in))
}

/// A grey image stays one channel: raw grey rows (a third of RGB), or a grey JPEG when asked
/// for JPEG or too large for `auto`'s raw limit.
fn encode_grey(image: GrayImage, options: &EncodeOptions, origin: &str) -> Result<Row, Failure> {
    let resized = match options.max_side {
        Some(side) => fit_max_side_grey(image, side),
        None => image,
    };
    let (width, height) = resized.dimensions();
    let as_jpeg = match options.mode {
        EncodingMode::Jpeg => true,
        EncodingMode::Auto => resized.as_raw().len() > DEFAULT_AUTO_RAW_MAX_BYTES,
        EncodingMode::Raw | EncodingMode::Keep => false,
    };
    let (image, encoding) = match as_jpeg {
        true => {
            let bytes = encode_jpeg(&resized, options.quality).map_err(|source| Failure {
                origin: origin.to_string(),
                error: Box::new(PackError::Image {
                    origin: origin.to_string(),
                    error: source,
                }),
            })?;
            (bytes, Encoding::Jpeg)
        }
        false => (resized.into_raw(), Encoding::Gray),
    };
    Ok(Row {
        index: 0,
        label: 0,
        image,
        height: height as u16,
        width: width as u16,
        encoding,
    })
}

type Decoded = (RgbImage, Option<(Vec<u8>, Encoding)>);

fn decode(bytes: Vec<u8>, origin: &str, max_pixels: u64) -> Result<Decoded, PackError> {
    let (image, encoding) =
        decode_source(&bytes, max_pixels).map_err(|source| PackError::Image {
            origin: origin.to_string(),
            error: source,
        })?;
    Ok((image, encoding.map(|e| (bytes, e))))
}

fn jpeg(image: &RgbImage, quality: u8, origin: &str) -> Result<Vec<u8>, Failure> {
    encode_jpeg(image, quality).map_err(|source| Failure {
        origin: origin.to_string(),
        error: Box::new(PackError::Image {
            origin: origin.to_string(),
            error: source,
        }),
    })
}
