//! The UDP socket under the QUIC endpoint, wrapped to count what crosses
//! the wire: every UDP datagram and byte, QUIC headers, handshakes,
//! keep-alives and garbage included (quinn drops non-QUIC packets without
//! telling anyone, so this is where they show up).

use prometheus_client::metrics::counter::Counter;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Wire-level counters.
#[derive(Debug, Clone, Default)]
pub struct UdpCounters {
    /// UDP datagrams received (any content).
    pub datagrams_in: Counter,
    /// UDP datagrams sent.
    pub datagrams_out: Counter,
    /// UDP payload bytes received.
    pub bytes_in: Counter,
    /// UDP payload bytes sent.
    pub bytes_out: Counter,
}

/// A socket that counts and otherwise delegates.
pub struct CountingSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    counters: UdpCounters,
}

impl CountingSocket {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, counters: UdpCounters) -> Arc<Self> {
        Arc::new(CountingSocket { inner, counters })
    }
}

impl fmt::Debug for CountingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

/// How many UDP datagrams a (possibly segmented) buffer holds.
fn segments(len: usize, segment: usize) -> u64 {
    if segment == 0 {
        return 1;
    }
    len.div_ceil(segment).max(1) as u64
}

impl AsyncUdpSocket for CountingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)?;
        let len = transmit.contents.len();
        let segment = transmit.segment_size.unwrap_or(len);
        self.counters.datagrams_out.inc_by(segments(len, segment));
        self.counters.bytes_out.inc_by(len as u64);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let result = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &result {
            for m in meta.iter().take(*n) {
                self.counters.datagrams_in.inc_by(segments(m.len, m.stride));
                self.counters.bytes_in.inc_by(m.len as u64);
            }
        }
        result
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmented_buffers_count_every_datagram() {
        assert_eq!(segments(1200, 1200), 1);
        assert_eq!(segments(3000, 1200), 3);
        assert_eq!(segments(10, 0), 1);
        assert_eq!(segments(0, 1200), 1);
    }
}
