//! Image encodings: decoding of source files (any JPEG/PNG flavour to RGB8) and of stored rows,
//! and the encoders the packer uses. The writer and the readers share this file, so a stored
//! encoding can never be written one way and read another.

use std::io::Cursor;

use fast_image_resize::{
    images::Image as FirImage, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use image::{ImageDecoder, ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

/// How a row's `image` bytes are stored (the `encoding` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Encoding {
    /// RGB8, row-major HWC, exactly `height * width * 3` bytes.
    Raw = 0,
    Jpeg = 1,
    Png = 2,
    /// Grey u8, row-major, exactly `height * width` bytes; read back as RGB (the value thrice).
    Gray = 3,
}

impl Encoding {
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Raw),
            1 => Some(Self::Jpeg),
            2 => Some(Self::Png),
            3 => Some(Self::Gray),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Gray => "gray",
        }
    }
}

/// Why an image could not be decoded; the caller adds the file or row.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("cannot read: {0}")]
    Unreadable(std::io::Error),
    #[error("the image is null: no bytes and no path")]
    NoBytes,
    #[error("a path-only image (no bytes) whose file {path} does not exist here; put the images there (a relative path is taken from the data file's folder), or embed their bytes before exporting: `from datasets.table import embed_table_storage; ds = ds.with_format(\"arrow\").map(embed_table_storage, batched=True).with_format(None)`")]
    PathOnly { path: String },
    #[error("not a JPEG, PNG, BMP, TIFF, WebP or PPM/PGM image (unrecognised header)")]
    UnknownFormat,
    #[error("image is {width}x{height} = {pixels} pixels, above the limit of {limit} (raise --max-pixels)")]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("image is {width}x{height}; a side is zero or above 65535")]
    BadSize { width: u32, height: u32 },
    #[error("corrupt or truncated {format}: {error}")]
    Corrupt {
        format: &'static str,
        error: image::ImageError,
    },
    #[error("corrupt or truncated jpeg: {0}")]
    CorruptJpeg(String),
    #[error("corrupt image: {0}")]
    DecoderPanic(String),
    #[error("raw image has {found} bytes, expected {expected} for {width}x{height}")]
    RawSize {
        found: usize,
        expected: usize,
        width: u16,
        height: u16,
    },
    #[error("decoded image is {found_w}x{found_h}, the row says {width}x{height}")]
    SizeMismatch {
        found_w: u32,
        found_h: u32,
        width: u16,
        height: u16,
    },
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Default decompression-bomb limit, the one Pillow raises an error at (2 x 89,478,485 pixels
/// gives the error; 89,478,485 gives its warning: we stop at the warning).
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// Recognises JPEG and PNG by their magic bytes (extensions lie).
pub fn sniff(bytes: &[u8]) -> Option<Encoding> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Encoding::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Encoding::Png)
    } else {
        None
    }
}

/// Source formats read besides JPEG and PNG: the rest of torchvision's ImageFolder extensions.
/// Rows are never stored in them, so their bytes are not kept.
const OTHER_SOURCE_FORMATS: [(ImageFormat, &str); 4] = [
    (ImageFormat::Bmp, "bmp"),
    (ImageFormat::Tiff, "tiff"),
    (ImageFormat::WebP, "webp"),
    (ImageFormat::Pnm, "ppm/pgm"),
];

/// Decodes any JPEG or PNG (grayscale, CMYK, palette, 16-bit, alpha), BMP, TIFF, WebP or
/// PPM/PGM to RGB8, with the stored encoding the bytes already are (None for the other formats).
///
/// The size is read from the header first, so an oversized image is refused before its pixels
/// are allocated. Alpha is dropped, as Pillow's `convert("RGB")` does.
pub fn decode_source(
    bytes: &[u8],
    max_pixels: u64,
) -> Result<(RgbImage, Option<Encoding>), CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    let (format, encoding, name) = match sniff(bytes) {
        Some(Encoding::Png) => (ImageFormat::Png, Some(Encoding::Png), "png"),
        Some(_) => (ImageFormat::Jpeg, Some(Encoding::Jpeg), "jpeg"),
        None => {
            let guessed = image::guess_format(bytes).map_err(|_| CodecError::UnknownFormat)?;
            let (format, name) = OTHER_SOURCE_FORMATS
                .into_iter()
                .find(|(f, _)| *f == guessed)
                .ok_or(CodecError::UnknownFormat)?;
            (format, None, name)
        }
    };
    if encoding == Some(Encoding::Jpeg) {
        let mut pixels = Vec::new();
        let (width, height) = decode_jpeg_into(bytes, max_pixels, None, &mut pixels)?;
        let image = RgbImage::from_raw(width, height, pixels).expect("decoded to w * h * 3");
        return Ok((image, encoding));
    }
    let corrupt = |source| CodecError::Corrupt {
        format: name,
        error: source,
    };
    super::contain::contain(|| decode_with_image(bytes, format, max_pixels, corrupt))
        .map_err(CodecError::DecoderPanic)?
        .map(|image| (image, encoding))
}

fn decode_with_image(
    bytes: &[u8],
    format: ImageFormat,
    max_pixels: u64,
    corrupt: impl Fn(image::ImageError) -> CodecError,
) -> Result<RgbImage, CodecError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.no_limits();
    let decoder = reader.into_decoder().map_err(&corrupt)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels)?;
    let image = image::DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok(image.to_rgb8())
}

/// The one JPEG decoder of `ssl-pack`, `verify` and the loader, so that a file that packs and
/// verifies also trains: zune-jpeg in strict mode (a truncated or malformed file is an error,
/// as Pillow refuses a truncated one, never a picture padded with grey), sides up to 65,535
/// (what a row can record), `max_pixels` checked from the header before any pixel is decoded,
/// and the decoder's own panics contained. `expect` is the size the row recorded. Decodes to
/// RGB8 (grey and CMYK files converted) into `out`; returns the size.
pub fn decode_jpeg_into(
    bytes: &[u8],
    max_pixels: u64,
    expect: Option<(u32, u32)>,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), CodecError> {
    use zune_core::{colorspace::ColorSpace, options::DecoderOptions};
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let corrupt = |e: zune_jpeg::errors::DecodeErrors| CodecError::CorruptJpeg(e.to_string());
    let decode = || -> Result<(u32, u32), CodecError> {
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(Cursor::new(bytes), options);
        decoder.decode_headers().map_err(corrupt)?;
        let info = decoder
            .info()
            .ok_or_else(|| CodecError::CorruptJpeg("no frame header".into()))?;
        let (width, height) = (u32::from(info.width), u32::from(info.height));
        check_size(width, height, max_pixels)?;
        if let Some((w, h)) = expect.filter(|&e| e != (width, height)) {
            return Err(CodecError::SizeMismatch {
                found_w: width,
                found_h: height,
                width: w as u16,
                height: h as u16,
            });
        }
        out.resize(width as usize * height as usize * 3, 0);
        decoder.decode_into(out).map_err(corrupt)?;
        Ok((width, height))
    };
    super::contain::contain(decode).map_err(CodecError::DecoderPanic)?
}

fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), CodecError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(CodecError::TooLarge {
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    if width == 0 || height == 0 || width > u32::from(u16::MAX) || height > u32::from(u16::MAX) {
        return Err(CodecError::BadSize { width, height });
    }
    Ok(())
}

/// Decodes a stored row back to RGB8 and checks it against the row's recorded size.
pub fn decode_stored(
    bytes: &[u8],
    encoding: Encoding,
    width: u16,
    height: u16,
) -> Result<RgbImage, CodecError> {
    let image = match encoding {
        Encoding::Raw | Encoding::Gray => {
            let channels = if encoding == Encoding::Raw { 3 } else { 1 };
            let expected = usize::from(width) * usize::from(height) * channels;
            if bytes.len() != expected {
                return Err(CodecError::RawSize {
                    found: bytes.len(),
                    expected,
                    width,
                    height,
                });
            }
            let pixels = match encoding {
                Encoding::Raw => bytes.to_vec(),
                _ => grey_to_rgb(bytes),
            };
            RgbImage::from_raw(width.into(), height.into(), pixels).expect("length checked above")
        }
        Encoding::Jpeg | Encoding::Png => decode_source(bytes, u64::MAX)?.0,
    };
    if image.width() != u32::from(width) || image.height() != u32::from(height) {
        return Err(CodecError::SizeMismatch {
            found_w: image.width(),
            found_h: image.height(),
            width,
            height,
        });
    }
    Ok(image)
}

/// Grey bytes as RGB8, each value three times.
pub fn grey_to_rgb(grey: &[u8]) -> Vec<u8> {
    grey.iter().flat_map(|&v| [v, v, v]).collect()
}

/// Encodes RGB8 (or grey) as a baseline JPEG with 4:2:0 chroma, as Pillow and FFCV do by default.
pub fn encode_jpeg<P>(
    image: &image::ImageBuffer<P, Vec<u8>>,
    quality: u8,
) -> Result<Vec<u8>, CodecError>
where
    P: image::Pixel<Subpixel = u8> + image::PixelWithColorType,
{
    let mut out = Vec::with_capacity(image.as_raw().len() / 8 + 1024);
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    image
        .write_with_encoder(encoder)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Downscales so the longer side is at most `max_side`, with an area (box) filter; never upscales.
pub fn fit_max_side(image: RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let (new_w, new_h, pixels) = fit(w, h, image.into_raw(), PixelType::U8x3, max_side);
    RgbImage::from_raw(new_w, new_h, pixels).expect("buffer is new_w*new_h*3")
}

/// [`fit_max_side`] for grey images.
pub fn fit_max_side_grey(image: image::GrayImage, max_side: u32) -> image::GrayImage {
    let (w, h) = image.dimensions();
    let (new_w, new_h, pixels) = fit(w, h, image.into_raw(), PixelType::U8, max_side);
    image::GrayImage::from_raw(new_w, new_h, pixels).expect("buffer is new_w*new_h")
}

fn fit(w: u32, h: u32, pixels: Vec<u8>, kind: PixelType, max_side: u32) -> (u32, u32, Vec<u8>) {
    let longer = w.max(h);
    if longer <= max_side {
        return (w, h, pixels);
    }
    let scale = f64::from(max_side) / f64::from(longer);
    let new_w = ((f64::from(w) * scale).round() as u32).clamp(1, max_side);
    let new_h = ((f64::from(h) * scale).round() as u32).clamp(1, max_side);
    let src =
        FirImage::from_vec_u8(w, h, pixels, kind).expect("buffer matches w*h by construction");
    let mut dst = FirImage::new(new_w, new_h, kind);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("same pixel type on both sides");
    (new_w, new_h, dst.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        })
    }

    #[test]
    fn jpeg_round_trip_keeps_size_and_is_close() {
        let img = gradient(40, 24);
        let bytes = encode_jpeg(&img, 95).unwrap();
        assert_eq!(sniff(&bytes), Some(Encoding::Jpeg));
        let back = decode_stored(&bytes, Encoding::Jpeg, 40, 24).unwrap();
        let err: f64 = img
            .as_raw()
            .iter()
            .zip(back.as_raw())
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / img.as_raw().len() as f64;
        assert!(err < 3.0, "mean abs error {err}");
    }

    #[test]
    fn raw_with_wrong_length_is_refused() {
        let err = decode_stored(&[0; 10], Encoding::Raw, 2, 2).unwrap_err();
        assert!(err.to_string().contains("expected 12"), "{err}");
    }

    #[test]
    fn max_side_downscales_and_never_upscales() {
        let small = fit_max_side(gradient(30, 20), 64);
        assert_eq!(small.dimensions(), (30, 20));
        let big = fit_max_side(gradient(500, 375), 256);
        assert_eq!(big.dimensions(), (256, 192));
    }

    #[test]
    fn torchvision_folder_formats_decode_to_the_same_pixels() {
        let img = gradient(33, 17);
        for format in [
            ImageFormat::Bmp,
            ImageFormat::Tiff,
            ImageFormat::WebP,
            ImageFormat::Pnm,
        ] {
            let mut bytes = Vec::new();
            image::DynamicImage::ImageRgb8(img.clone())
                .write_to(&mut Cursor::new(&mut bytes), format)
                .unwrap();
            let (back, stored) = decode_source(&bytes, u64::MAX).unwrap();
            assert_eq!(stored, None, "{format:?} bytes are not a stored encoding");
            assert!(back == img, "{format:?} is lossless here");
        }
        let err = decode_source(b"GIF89a\x01\x00\x01\x00", u64::MAX).unwrap_err();
        assert!(matches!(err, CodecError::UnknownFormat), "{err}");
    }

    #[test]
    fn oversized_header_is_refused_before_decoding() {
        let bytes = encode_jpeg(&gradient(100, 100), 80).unwrap();
        let err = decode_source(&bytes, 5_000).unwrap_err();
        assert!(err.to_string().contains("above the limit of 5000"), "{err}");
    }
}
