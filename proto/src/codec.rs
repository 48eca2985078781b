//! The frame codec: a 4-byte big-endian length, then that many bytes of MessagePack.
//!
//! [`decode`] takes whatever bytes have arrived and answers `Ok(None)` when a frame is not yet
//! complete, `Ok(Some((msg, consumed)))` for a whole frame, or an error for a frame that is too
//! large (detected from the header alone, before buffering it) or that does not decode. It never
//! panics on any input.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;
/// Default largest frame body accepted. A cluster state of 50,000 agents fits; anything larger
/// is a bug or an attack.
pub const MAX_FRAME_LEN: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {len} bytes exceeds the maximum frame of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("cannot encode message: {0}")]
    Serialize(String),
}

/// Appends one frame holding `msg` to `out`.
pub fn encode<T: Serialize>(msg: &T, max: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    let res = rmp_serde::encode::write_named(out, msg);
    if let Err(e) = res {
        out.truncate(start);
        return Err(EncodeError::Serialize(e.to_string()));
    }
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > max || len > u32::MAX as usize {
        out.truncate(start);
        return Err(EncodeError::FrameTooLarge { len, max });
    }
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes `msg` as one frame in a fresh buffer.
pub fn encode_to_vec<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode(msg, max, &mut out)?;
    Ok(out)
}

/// Reads the body length from a frame header, checking it against `max`.
pub fn frame_len(header: [u8; FRAME_HEADER_LEN], max: usize) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(DecodeError::FrameTooLarge { len, max });
    }
    Ok(len)
}

/// Decodes one frame body (without its header).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let mut rest_of_body = body;
    let mut de = rmp_serde::Deserializer::new(&mut rest_of_body);
    let msg = T::deserialize(&mut de).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let rest = rest_of_body.len();
    if rest != 0 {
        return Err(DecodeError::Malformed(format!(
            "{rest} trailing bytes after the message"
        )));
    }
    Ok(msg)
}

/// Decodes the first frame in `buf`, if it is complete.
pub fn decode<T: DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, DecodeError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let mut header = [0u8; FRAME_HEADER_LEN];
    header.copy_from_slice(&buf[..FRAME_HEADER_LEN]);
    let len = frame_len(header, max)?;
    let total = FRAME_HEADER_LEN + len;
    if buf.len() < total {
        return Ok(None);
    }
    let msg = decode_body(&buf[FRAME_HEADER_LEN..total])?;
    Ok(Some((msg, total)))
}
