//! The single codec of shoal's wire format.
//!
//! bincode 2 through serde, with a hard size limit on every decode so that a
//! hostile length prefix cannot make us allocate, and a rejection of trailing
//! bytes so that one byte string has at most one meaning.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

/// The largest payload a QUIC datagram carries on a conservative path MTU.
/// Membership messages are built to fit it.
pub const MAX_DATAGRAM_BYTES: usize = 1_200;

/// The largest single message on a stream (push-pull state, register
/// batches). Anything larger is refused before it is buffered.
pub const MAX_STREAM_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why bytes could not be decoded. No variant affects any state: the caller
/// drops the input, counts it and goes on.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is longer than the limit for its channel.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Length of the rejected input.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// The bytes do not form a message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A whole message was decoded but bytes were left over.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_STREAM_MESSAGE_BYTES>()
}

/// Encodes a message. Encoding our own types cannot fail except by a bug
/// (a type serde cannot express), which is why this returns bytes, not a
/// `Result`.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(message, config()).expect("shoal wire types are always encodable")
}

/// Appends the encoding of a message to `out` (no allocation when `out`
/// has room).
pub fn encode_into<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    bincode::serde::encode_into_std_write(message, out, config())
        .expect("shoal wire types are always encodable");
}

/// Decodes one message of type `T` that must fill `bytes` exactly and be no
/// longer than `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (message, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(message)
}

/// Like [`decode`], for types that borrow from `bytes` (strings as `&str`):
/// the same format and checks, without copying what the caller only reads.
pub fn decode_borrowed<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (message, used) = bincode::serde::borrow_decode_from_slice(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Ping { seq: u64, note: String },
        List(Vec<u32>),
    }

    #[test]
    fn round_trip() {
        let m = Sample::Ping {
            seq: 7,
            note: "hi".into(),
        };
        assert_eq!(decode::<Sample>(&encode(&m), 100), Ok(m));
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let bytes = encode(&Sample::List(vec![1; 100]));
        assert!(matches!(
            decode::<Sample>(&bytes, 10),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&Sample::List(vec![1, 2]));
        bytes.push(0);
        assert_eq!(
            decode::<Sample>(&bytes, 100),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate() {
        // Variant 1 (List) followed by a varint length of u64::MAX.
        let bytes = [1u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Sample>(&bytes, 100).is_err());
    }
}
