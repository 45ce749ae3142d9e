//! A bounds check of a Parquet row group's page headers before parquet decodes them. parquet's
//! own Thrift reader skips an unknown field's bytes through a reader that stops quietly at the
//! end of the data, so a damaged header declaring a list of two billion byte strings makes it
//! loop over empty reads for minutes (tests/fixtures/fuzz/parquet-shard/case-40658-resealed).
//! Here every header is walked with the compact protocol's rules, where each list element takes
//! at least one byte, so a count or length larger than what is left is an error at once, and
//! each page must end inside its column chunk.

use parquet::file::metadata::RowGroupMetaData;

/// Nesting deeper than any real page header (they nest three structs).
const MAX_DEPTH: u32 = 32;

/// Checks every page header of every column chunk of `group` within `file`.
pub fn check(file: &[u8], group: &RowGroupMetaData) -> Result<(), String> {
    for (c, column) in group.columns().iter().enumerate() {
        let (start, len) = column.byte_range();
        let end = start.checked_add(len).filter(|&e| e <= file.len() as u64);
        let Some(end) = end else {
            return Err(format!(
                "column {c}: its pages ({len} bytes at {start}) lie past the end of the file"
            ));
        };
        let chunk = &file[start as usize..end as usize];
        check_chunk(chunk).map_err(|e| format!("column {c}: {e}"))?;
    }
    Ok(())
}

/// Walks the pages of one column chunk: header, then `compressed_page_size` bytes, to its end.
fn check_chunk(chunk: &[u8]) -> Result<(), String> {
    let mut at = 0;
    while at < chunk.len() {
        let mut header = Compact {
            buf: &chunk[at..],
            pos: 0,
        };
        let size = header
            .page_header()
            .map_err(|e| format!("page header at byte {at} of the chunk: {e}"))?;
        let next = (at + header.pos).checked_add(size);
        at = next.filter(|&n| n <= chunk.len()).ok_or_else(|| {
            format!("the page at byte {at} declares {size} bytes, past the end of its column chunk")
        })?;
    }
    Ok(())
}

/// A reader of Thrift's compact protocol that refuses to read past its buffer.
struct Compact<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Compact<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("cut short")?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift.min(63);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 10 bytes".into())
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.remaining() as u64 {
            return Err(format!(
                "a field of {n} bytes with {} left",
                self.remaining()
            ));
        }
        self.pos += n as usize;
        Ok(())
    }

    /// The `PageHeader` struct at the start; returns its `compressed_page_size` (field 3).
    fn page_header(&mut self) -> Result<usize, String> {
        let mut size = None;
        self.fields(0, |this, id, kind| match (id, kind) {
            (3, 5) => {
                let v = this.varint()?;
                // zigzag-decoded i32: a negative size is damage.
                let v = (v >> 1) as i64 ^ -((v & 1) as i64);
                size = Some(usize::try_from(v).map_err(|_| format!("page size {v}"))?);
                Ok(())
            }
            _ => this.value(kind, 1, false),
        })?;
        size.ok_or_else(|| "no compressed_page_size".to_string())
    }

    /// The fields of a struct up to its stop byte, each handed to `field(id, type)`.
    fn fields(
        &mut self,
        depth: u32,
        mut field: impl FnMut(&mut Self, i64, u8) -> Result<(), String>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("structs nested too deep".into());
        }
        let mut id = 0i64;
        loop {
            let b = self.byte()?;
            if b == 0 {
                return Ok(());
            }
            id = match b >> 4 {
                0 => {
                    let v = self.varint()?;
                    (v >> 1) as i64 ^ -((v & 1) as i64)
                }
                delta => id + i64::from(delta),
            };
            field(self, id, b & 0x0f)?;
        }
    }

    /// Skips one value of compact type `kind`; `element` when it sits in a list, set or map
    /// (where a bool takes a byte; as a field its value is in the field's type).
    fn value(&mut self, kind: u8, depth: u32, element: bool) -> Result<(), String> {
        match kind {
            1 | 2 if element => self.skip(1),
            1 | 2 => Ok(()),
            3 => self.skip(1),
            4..=6 => self.varint().map(drop),
            7 => self.skip(8),
            8 => {
                let n = self.varint()?;
                self.skip(n)
            }
            9 | 10 => self.list(depth),
            11 => self.map(depth),
            12 => self.fields(depth + 1, |this, _, kind| {
                this.value(kind, depth + 1, false)
            }),
            other => Err(format!("unknown field type {other}")),
        }
    }

    fn list(&mut self, depth: u32) -> Result<(), String> {
        let head = self.byte()?;
        let (mut n, kind) = (u64::from(head >> 4), head & 0x0f);
        if n == 15 {
            n = self.varint()?;
        }
        // Every element takes at least a byte: this is what parquet's skip lacks.
        if n > self.remaining() as u64 {
            return Err(format!(
                "a list of {n} elements with {} bytes left",
                self.remaining()
            ));
        }
        for _ in 0..n {
            self.value(kind, depth + 1, true)?;
        }
        Ok(())
    }

    fn map(&mut self, depth: u32) -> Result<(), String> {
        let n = self.varint()?;
        if n == 0 {
            return Ok(());
        }
        let kinds = self.byte()?;
        if n.saturating_mul(2) > self.remaining() as u64 {
            return Err(format!(
                "a map of {n} entries with {} bytes left",
                self.remaining()
            ));
        }
        for _ in 0..n {
            self.value(kinds >> 4, depth + 1, true)?;
            self.value(kinds & 0x0f, depth + 1, true)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page header: type 0, sizes 10 and `size`, a data page header with 5 values.
    fn header(size: u8) -> Vec<u8> {
        // field 1 i32 = 0; field 2 i32 = 10; field 3 i32 = size; field 5 struct { field 1 i32
        // = 5 }; stop. Zigzag: 10 -> 20, 5 -> 10.
        vec![
            0x15,
            0x00,
            0x15,
            20,
            0x15,
            size * 2,
            0x2c,
            0x15,
            10,
            0x00,
            0x00,
        ]
    }

    #[test]
    fn walks_pages_to_the_end_of_the_chunk() {
        let mut chunk = header(3);
        chunk.extend([1, 2, 3]);
        chunk.extend(header(0));
        assert_eq!(check_chunk(&chunk), Ok(()));
        chunk.pop();
        assert!(check_chunk(&chunk).unwrap_err().contains("cut short"));
        let mut long = header(9);
        long.extend([1, 2, 3]);
        assert!(check_chunk(&long).unwrap_err().contains("past the end"));
    }

    #[test]
    fn a_huge_list_is_refused_at_once() {
        // field 9 (an unknown one) as a list of 2^31 byte strings, as the damaged fuzz input.
        let mut chunk = vec![0x15, 0x00, 0x15, 20, 0x15, 0, 0x69, 0xf8];
        chunk.extend([0x80, 0x80, 0x80, 0x80, 0x08]);
        chunk.extend([0; 16]);
        let err = check_chunk(&chunk).unwrap_err();
        assert!(err.contains("a list of 2147483648 elements"), "{err}");
    }

    #[test]
    fn nesting_and_garbage_end_in_errors() {
        let deep: Vec<u8> = std::iter::repeat_n(0x1c, 100).collect();
        assert!(check_chunk(&deep).is_err());
        for seed in 0..2000u32 {
            let bytes: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2654435761) ^ i.wrapping_mul(40503)) as u8)
                .collect();
            let _ = check_chunk(&bytes);
        }
    }
}
