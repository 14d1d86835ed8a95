//! The `/shoal/fed/1` request-response codec: one wire-codec message per
//! stream, read to its end with the size limit applied before decoding.

use futures::prelude::*;
use libp2p::request_response;
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_protocol::wire::fed::{FedRequest, FedResponse, MAX_FED_MESSAGE_BYTES};
use shoal_protocol::wire::{decode, encode};
use std::io;

/// The link protocol's name.
pub const FED_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/fed/1");

/// The codec (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct FedCodec;

async fn read_message<M, T>(io: &mut T) -> io::Result<M>
where
    M: DeserializeOwned,
    T: AsyncRead + Unpin + Send,
{
    let mut bytes = Vec::new();
    // One byte past the limit tells an oversized message from a full one.
    io.take(MAX_FED_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    decode(&bytes, MAX_FED_MESSAGE_BYTES).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_message<M, T>(io: &mut T, message: &M) -> io::Result<()>
where
    M: Serialize,
    T: AsyncWrite + Unpin + Send,
{
    io.write_all(&encode(message)).await
}

impl request_response::Codec for FedCodec {
    type Protocol = StreamProtocol;
    type Request = FedRequest;
    type Response = FedResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<FedRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<FedResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: FedRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: FedResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &response).await
    }
}
