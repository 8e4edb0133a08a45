//! The IDX format of MNIST (gzipped or plain): a big-endian header — two zero bytes, a
//! type code, the number of dimensions, then each dimension as a u32 — and the data.

use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// An IDX file of unsigned bytes: its dimensions and its data in row-major order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first (`[60000, 28, 28]` for MNIST's training images).
    pub dims: Vec<usize>,
    /// The elements, `dims.iter().product()` of them.
    pub data: Vec<u8>,
}

/// The type code of unsigned-byte data, the only type MNIST uses.
const UBYTE: u8 = 0x08;

/// Reads an IDX file, gunzipping it when it starts with the gzip magic bytes.
///
/// Checks the magic number, the dimensions and that the data is exactly as long as the
/// dimensions say, so a truncated download is an error rather than a short dataset.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Idx> {
    read_idx_at(path.as_ref())
}

fn read_idx_at(path: &Path) -> Result<Idx> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        inflate_bounded(GzDecoder::new(&raw[..])).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            message: match e {
                Bounded::Io(e) => format!(
                    "the gzip stream is corrupt or truncated ({e}); download the file again"
                ),
                Bounded::Header(m) => m,
            },
        })?
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|message| Error::Data { path: path.to_path_buf(), message })
}

/// Checks an IDX file's first four bytes (zeros, the unsigned-byte type code, a
/// non-zero rank) and returns the rank.
fn check_magic(bytes: &[u8]) -> std::result::Result<usize, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(
            "not an IDX file: it must start with two zero bytes, a type code and a rank".into()
        );
    }
    if bytes[2] != UBYTE {
        return Err(format!(
            "IDX type code 0x{:02x} is not supported; only unsigned bytes (0x08) are: convert the file to unsigned bytes",
            bytes[2]
        ));
    }
    match bytes[3] as usize {
        0 => Err("the IDX header declares zero dimensions: the file is damaged; download it again"
            .into()),
        rank => Ok(rank),
    }
}

/// Why a bounded decompression stopped.
enum Bounded {
    Io(std::io::Error),
    Header(String),
}

/// Decompresses an IDX stream no further than its header declares (plus one byte, to
/// tell trailing data): the header is read first, so a small file that inflates to
/// gigabytes is refused after the bytes it claims, not after all of them.
fn inflate_bounded(mut r: impl Read) -> std::result::Result<Vec<u8>, Bounded> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).map_err(Bounded::Io)?;
    let mut bytes = head.to_vec();
    let rank = check_magic(&head).map_err(Bounded::Header)?;
    let mut dims = vec![0u8; 4 * rank];
    r.read_exact(&mut dims).map_err(Bounded::Io)?;
    bytes.extend_from_slice(&dims);
    let expected = dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
        .try_fold(1u64, |a, d| a.checked_mul(d))
        .ok_or_else(|| Bounded::Header("the dimensions overflow".into()))?;
    r.take(expected.saturating_add(1)).read_to_end(&mut bytes).map_err(Bounded::Io)?;
    Ok(bytes)
}

/// Parses IDX bytes; the error names what is wrong.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<Idx, String> {
    let rank = check_magic(bytes)?;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(format!(
            "the header needs {header} bytes for {rank} dimensions but the file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected =
        dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the dimensions overflow")?;
    let got = bytes.len() - header;
    if got != expected {
        return Err(format!(
            "dimensions {dims:?} need {expected} data bytes but the file holds {got}: it is truncated or corrupt"
        ));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, UBYTE, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    /// A gzip stream whose data runs past its header's declared size stops one byte
    /// past it (and is refused); a well-formed one reads whole.
    #[test]
    fn decompression_stops_at_the_declared_size() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let gz = |b: &[u8]| {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        // Declares 4 bytes, then 64 MiB of zeros.
        let mut bomb = idx(&[4], &[]);
        bomb.resize(bomb.len() + (64 << 20), 0);
        let out = inflate_bounded(flate2::read::GzDecoder::new(&gz(&bomb)[..])).ok().unwrap();
        assert_eq!(out.len(), 8 + 4 + 1, "read the header, the declared bytes and one more");
        assert!(parse_idx(&out).unwrap_err().contains("need 4 data bytes but the file holds 5"));
        let good = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let out = inflate_bounded(flate2::read::GzDecoder::new(&gz(&good)[..])).ok().unwrap();
        assert_eq!(parse_idx(&out).unwrap().data, vec![1, 2, 3, 4, 5, 6]);
        assert!(matches!(inflate_bounded(&b"PK\x03\x04"[..]), Err(Bounded::Header(_))));
    }

    #[test]
    fn parses_a_well_formed_file() {
        let got = parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(got, Idx { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] });
    }

    #[test]
    fn rejects_bad_magic_type_and_length() {
        assert!(parse_idx(b"PK\x03\x04").unwrap_err().contains("not an IDX file"));
        let mut b = idx(&[2], &[1, 2]);
        b[2] = 0x0d;
        assert!(parse_idx(&b).unwrap_err().contains("0x0d is not supported"));
        let e = parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5])).unwrap_err();
        assert!(e.contains("need 6 data bytes but the file holds 5"), "{e}");
        assert!(parse_idx(&idx(&[2, 3], &[0; 7])).is_err(), "trailing bytes");
        assert!(parse_idx(&[0, 0, UBYTE, 3, 0, 0]).unwrap_err().contains("header needs 16 bytes"));
    }

    #[test]
    fn a_truncated_gzip_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("kiln-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, &idx(&[100], &[7; 100])).unwrap();
        let gz = enc.finish().unwrap();
        std::fs::write(&path, &gz).unwrap();
        assert_eq!(read_idx(&path).unwrap().data, vec![7; 100]);
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        let e = read_idx(&path).unwrap_err().to_string();
        assert!(e.contains("corrupt or truncated"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
