//! SimpleBlock / Block payloads: track number, relative timecode, flags and (laced) frames.
//!
//! Frames are returned as `Bytes` slices of the block's buffer, so reading a frame never copies
//! its payload.

use bytes::Bytes;

/// SimpleBlock flag: the frame is a key frame.
pub(crate) const FLAG_KEY: u8 = 0x80;
/// Block and SimpleBlock flag: the frame is not to be displayed.
pub(crate) const FLAG_INVISIBLE: u8 = 0x08;
/// SimpleBlock flag: the frame may be dropped during playback.
pub(crate) const FLAG_DISCARDABLE: u8 = 0x01;
const LACING_MASK: u8 = 0x06;
const LACING_XIPH: u8 = 0x02;
const LACING_FIXED: u8 = 0x04;
const LACING_EBML: u8 = 0x06;

/// The fixed part of a block: what precedes the frame data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHeader {
    pub track: u64,
    pub timecode: i16,
    pub flags: u8,
    /// Bytes of track vint + timecode + flags.
    pub len: usize,
}

/// Reads an EBML variable-length unsigned integer (marker bit removed) from the front of `data`:
/// `(value, length)`. `None` when `data` is too short; `Err` for a first byte of 0 (a length
/// beyond 8 bytes).
pub(crate) fn read_vint(data: &[u8]) -> Result<Option<(u64, usize)>, String> {
    let Some(&first) = data.first() else {
        return Ok(None);
    };
    if first == 0 {
        return Err("a variable-length integer starts with 0x00".to_owned());
    }
    let len = first.leading_zeros() as usize + 1;
    if data.len() < len {
        return Ok(None);
    }
    // The marker bit is the highest set bit of the first byte; mask it off.
    let mut value = u64::from(first) & (0xFF >> len);
    for &b in &data[1..len] {
        value = (value << 8) | u64::from(b);
    }
    Ok(Some((value, len)))
}

pub(crate) fn parse_header(data: &[u8]) -> Result<BlockHeader, String> {
    let (track, track_len) = match read_vint(data) {
        Ok(Some(v)) => v,
        Ok(None) => return Err("block is empty".to_owned()),
        Err(e) => return Err(format!("bad track number: {e}")),
    };
    let len = track_len + 3;
    if data.len() < len {
        return Err(format!(
            "block of {} bytes is shorter than its header",
            data.len()
        ));
    }
    let timecode = i16::from_be_bytes([data[track_len], data[track_len + 1]]);
    let flags = data[track_len + 2];
    Ok(BlockHeader {
        track,
        timecode,
        flags,
        len,
    })
}

/// The frames of a block: one slice for an unlaced block, one per laced frame otherwise.
pub(crate) fn frames(block: &Bytes, header: &BlockHeader) -> Result<Frames, String> {
    let payload = &block[header.len..];
    let lacing = header.flags & LACING_MASK;
    if lacing == 0 {
        return Ok(Frames::One(block.slice(header.len..)));
    }
    let Some(&count_minus_one) = payload.first() else {
        return Err("laced block has no frame count".to_owned());
    };
    let count = usize::from(count_minus_one) + 1;
    let mut pos = 1;
    let mut sizes = Vec::with_capacity(count);
    match lacing {
        LACING_XIPH => {
            for _ in 1..count {
                let mut size = 0usize;
                loop {
                    let Some(&b) = payload.get(pos) else {
                        return Err("Xiph lace sizes run past the end of the block".to_owned());
                    };
                    pos += 1;
                    size += usize::from(b);
                    if b != 255 {
                        break;
                    }
                }
                sizes.push(size);
            }
        }
        LACING_EBML => {
            let mut previous: i64 = 0;
            for i in 1..count {
                let (raw, len) = match read_vint(&payload[pos..]) {
                    Ok(Some(v)) => v,
                    Ok(None) => return Err("EBML lace sizes run past the end of the block".into()),
                    Err(e) => return Err(format!("bad EBML lace size: {e}")),
                };
                pos += len;
                let size = if i == 1 {
                    i64::try_from(raw).map_err(|_| "EBML lace size overflows".to_owned())?
                } else {
                    // Signed vint: the raw value minus half its range (2^(7*len-1) - 1).
                    let bias = (1i64 << (7 * len - 1)) - 1;
                    let delta = i64::try_from(raw).map_err(|_| "EBML lace delta overflows")?;
                    previous
                        .checked_add(delta - bias)
                        .ok_or_else(|| "EBML lace size overflows".to_owned())?
                };
                if size < 0 {
                    return Err(format!("EBML lace gives frame {i} a negative size {size}"));
                }
                previous = size;
                sizes.push(usize::try_from(size).map_err(|_| "EBML lace size overflows")?);
            }
        }
        LACING_FIXED => {
            let rest = payload.len() - pos;
            if !rest.is_multiple_of(count) {
                return Err(format!(
                    "{rest} bytes do not split into {count} fixed-size frames"
                ));
            }
            sizes.resize(count - 1, rest / count);
        }
        _ => unreachable!("lacing has two bits"),
    }
    let listed = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
    let rest = payload.len() - pos;
    let Some(last) = listed.and_then(|listed| rest.checked_sub(listed)) else {
        return Err(format!(
            "lace sizes add up to more than the {rest} bytes of frame data"
        ));
    };
    sizes.push(last);
    let mut start = header.len + pos;
    let mut out = Vec::with_capacity(count);
    for size in sizes {
        out.push(block.slice(start..start + size));
        start += size;
    }
    Ok(Frames::Laced(out))
}

#[derive(Debug)]
pub(crate) enum Frames {
    One(Bytes),
    Laced(Vec<Bytes>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn laced(flags: u8, lace: &[u8], data: &[u8]) -> Result<Vec<Bytes>, String> {
        let mut block = vec![0x81, 0x00, 0x10, flags];
        block.extend_from_slice(lace);
        block.extend_from_slice(data);
        let block = Bytes::from(block);
        let header = parse_header(&block)?;
        assert_eq!((header.track, header.timecode, header.len), (1, 16, 4));
        Ok(match frames(&block, &header)? {
            Frames::One(b) => vec![b],
            Frames::Laced(v) => v,
        })
    }

    #[test]
    fn vints() {
        assert_eq!(read_vint(&[0x81]), Ok(Some((1, 1))));
        assert_eq!(read_vint(&[0x40, 0x02]), Ok(Some((2, 2))));
        assert_eq!(read_vint(&[0x40]), Ok(None));
        assert_eq!(read_vint(&[0x01, 0, 0, 0, 0, 0, 1, 0]), Ok(Some((256, 8))));
        assert!(read_vint(&[0x00]).is_err());
    }

    #[test]
    fn unlaced() {
        let f = laced(0x80, &[], b"abc").expect("parses");
        assert_eq!(f, vec![Bytes::from_static(b"abc")]);
    }

    #[test]
    fn xiph_lacing() {
        // 3 frames: sizes 2, 256 (255 + 1), and the rest (1).
        let mut data = vec![b'a'; 2];
        data.extend(vec![b'b'; 256]);
        data.push(b'c');
        let f = laced(LACING_XIPH, &[2, 2, 255, 1], &data).expect("parses");
        assert_eq!(
            f.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![2, 256, 1]
        );
        assert_eq!(&f[2][..], b"c");
    }

    #[test]
    fn ebml_lacing() {
        // 3 frames: 3, then 3 + (-1) = 2 (signed 1-byte vint: raw 62 = -1), then the rest (4).
        let f = laced(LACING_EBML, &[2, 0x83, 0x80 | 62], b"aaabbcccc").expect("parses");
        assert_eq!(f.iter().map(Bytes::len).collect::<Vec<_>>(), vec![3, 2, 4]);
    }

    #[test]
    fn fixed_lacing() {
        let f = laced(LACING_FIXED, &[2], b"aabbcc").expect("parses");
        assert_eq!(
            f,
            vec![
                Bytes::from_static(b"aa"),
                Bytes::from_static(b"bb"),
                Bytes::from_static(b"cc")
            ]
        );
        assert!(laced(LACING_FIXED, &[2], b"aabbc").is_err());
    }

    #[test]
    fn bad_lacing_is_an_error() {
        assert!(laced(LACING_XIPH, &[1, 200], b"abc").is_err());
        assert!(laced(LACING_XIPH, &[1, 255], b"").is_err());
        assert!(laced(LACING_EBML, &[1, 0x00], b"abc").is_err());
        assert!(laced(LACING_EBML, &[2, 0x81, 0x80], b"abc").is_err());
        assert!(laced(LACING_XIPH, &[], b"").is_err());
        assert!(parse_header(&[0x81, 0]).is_err());
        assert!(parse_header(&[]).is_err());
    }
}
