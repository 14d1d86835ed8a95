//! Framing of node-to-node payloads: one [`Channel`] byte in front of every
//! payload; on streams a 4-byte big-endian length in front of that.

use shoal_protocol::wire::{Channel, MAX_DATAGRAM_BYTES, MAX_STREAM_MESSAGE_BYTES};
use thiserror::Error;

/// The length prefix of a stream frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The largest frame accepted on a stream: a channel byte and the largest
/// message.
pub const MAX_STREAM_FRAME_BYTES: usize = MAX_STREAM_MESSAGE_BYTES + 1;

/// The largest frame accepted as a datagram.
pub const MAX_DATAGRAM_FRAME_BYTES: usize = MAX_DATAGRAM_BYTES + 1;

/// Why a frame was dropped. Nothing is changed by a dropped frame.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// Zero bytes.
    #[error("empty frame")]
    Empty,
    /// The first byte names no channel.
    #[error("unknown channel byte {0}")]
    UnknownChannel(u8),
    /// Longer than the channel allows.
    #[error("frame of {len} bytes exceeds {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// `channel || payload`.
pub fn encode(channel: Channel, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 1);
    frame.push(channel as u8);
    frame.extend_from_slice(payload);
    frame
}

/// Splits a frame into its channel and payload.
pub fn decode(frame: &[u8], limit: usize) -> Result<(Channel, &[u8]), FrameError> {
    if frame.len() > limit {
        return Err(FrameError::TooLarge {
            len: frame.len(),
            limit,
        });
    }
    let (&first, payload) = frame.split_first().ok_or(FrameError::Empty)?;
    let channel = Channel::from_byte(first).ok_or(FrameError::UnknownChannel(first))?;
    Ok((channel, payload))
}

/// The length a stream frame announces, refused before any buffer is
/// allocated if it is over the limit.
pub fn stream_frame_len(prefix: [u8; LENGTH_PREFIX_BYTES]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_STREAM_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            limit: MAX_STREAM_FRAME_BYTES,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len)
}

/// The length prefix for a stream frame of `len` bytes.
pub fn stream_prefix(len: usize) -> [u8; LENGTH_PREFIX_BYTES] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let frame = encode(Channel::Membership, b"abc");
        assert_eq!(
            decode(&frame, MAX_DATAGRAM_FRAME_BYTES),
            Ok((Channel::Membership, &b"abc"[..]))
        );
        assert_eq!(decode(&[], 10), Err(FrameError::Empty));
        assert_eq!(
            decode(&[0xee, 1], 10),
            Err(FrameError::UnknownChannel(0xee))
        );
        assert!(matches!(
            decode(&[1; 20], 10),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_stream_lengths_are_refused_before_allocation() {
        assert!(stream_frame_len([0xff; 4]).is_err());
        assert_eq!(stream_frame_len([0; 4]), Err(FrameError::Empty));
        assert_eq!(stream_frame_len(stream_prefix(10)), Ok(10));
    }
}
