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
    let path = path.as_ref();
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            message: format!(
                "the gzip stream is corrupt or truncated ({e}); download the file again"
            ),
        })?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|message| Error::Data { path: path.to_path_buf(), message })
}

/// Parses IDX bytes; the error names what is wrong.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<Idx, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(
            "not an IDX file: it must start with two zero bytes, a type code and a rank".into()
        );
    }
    if bytes[2] != UBYTE {
        return Err(format!(
            "IDX type code 0x{:02x} is not supported; only unsigned bytes (0x08) are",
            bytes[2]
        ));
    }
    let rank = bytes[3] as usize;
    if rank == 0 {
        return Err("the IDX header declares zero dimensions".into());
    }
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
