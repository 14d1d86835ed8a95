//! The node's one QUIC endpoint (server and client on the same UDP socket).
//!
//! Membership probes, acks and piggybacked gossip go as QUIC datagrams;
//! reliable payloads (push-pull) go one per unidirectional stream with a
//! length prefix. Connections are cached by peer address and reused; a dead
//! one is re-dialled on the next send. Every send is non-blocking for the
//! caller: each destination has its own bounded queue and task, so a dial to
//! a dead peer never delays traffic to live ones.
//!
//! The transport makes no membership decision: it hands every authenticated
//! frame to the agent and sends whatever the agent asks.
//!
//! The wire version is the connection's ALPN protocol (`shoal/<version>`,
//! decided by [`shoal_protocol::wire::version`]): a connection whose
//! version this agent cannot read is closed right after the handshake with
//! a reason naming both versions, logged once per peer and counted, before
//! any frame of it is read.

pub mod frame;
pub mod udp;

use crate::tls::{node_id_from_cert, rustls_configs, TlsError, TlsMaterial, SERVER_NAME};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, IdleTimeout, TransportConfig, VarInt};
use rustls_pki_types::CertificateDer;
use shoal_protocol::wire::version::{self, VersionError, WireVersions};
use shoal_protocol::wire::Channel;
use shoal_protocol::NodeId;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

/// Keep-alives keep NAT bindings and idle connections warm between probes.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A connection that hears nothing for this long is dead; the next send
/// re-dials. Longer than any SWIM probe round of every preset.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dial may take before its queued payloads are dropped.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed dial, payloads to that address are dropped for this long
/// instead of dialling again at once (the protocol retries on its own).
const DIAL_BACKOFF: Duration = Duration::from_millis(500);
/// How long a stream frame may take to arrive in full.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Payloads queued per destination; more are dropped and counted.
const PEER_QUEUE_LEN: usize = 256;
/// A destination's sender task exits after this long without payloads.
const PEER_IDLE_EXIT: Duration = Duration::from_secs(60);
/// Destinations remembered before exited sender tasks are pruned.
const PEER_MAP_PRUNE_AT: usize = 1024;
/// Concurrent inbound streams per connection.
const MAX_INBOUND_STREAMS: u32 = 32;
/// Loopback and Ethernet both carry 1452-byte QUIC packets; starting there
/// lets a full membership datagram (1200 bytes) fit from the first packet.
const INITIAL_MTU: u16 = 1452;
/// The application close code of a connection refused for its wire
/// version; the close reason says which versions.
pub const CLOSE_WIRE_VERSION: u32 = 4;
/// The TLS alert `no_application_protocol` (120) as a QUIC CRYPTO_ERROR:
/// the peer offered no `shoal/<version>` the listener knows.
const CRYPTO_NO_APPLICATION_PROTOCOL: u64 = 0x100 + 120;
/// Peers remembered as already logged for a wire-version refusal; past it
/// the memory is cleared (the next refusals are logged again).
const VERSION_LOGGED_MAX: usize = 1024;

/// Counters the transport keeps (registered by [`crate::metrics`]).
#[derive(Debug, Clone, Default)]
pub struct TransportCounters {
    /// Datagrams received from authenticated peers.
    pub datagrams_in: Counter,
    /// Datagrams sent.
    pub datagrams_out: Counter,
    /// Frame bytes received (datagrams and streams).
    pub bytes_in: Counter,
    /// Frame bytes sent (datagrams and streams).
    pub bytes_out: Counter,
    /// Stream frames received whole.
    pub streams_in: Counter,
    /// Stream frames sent.
    pub streams_out: Counter,
    /// Frames and streams dropped as malformed, oversized or truncated,
    /// plus payloads the protocol machines refused to decode.
    pub decode_errors: Counter,
    /// Peers refused during the TLS handshake (other CA or other party).
    pub handshake_refusals: Counter,
    /// Connections refused because one side cannot read the other's wire
    /// version (`shoal_wire_version_refused_total`).
    pub wire_version_refused: Counter,
    /// Dials that failed or timed out.
    pub dial_failures: Counter,
    /// Outbound payloads dropped (queue full, no connection, send error).
    pub outbound_dropped: Counter,
    /// Inbound Paxos/Task frames dropped because the task host was behind.
    pub inbound_dropped: Counter,
    /// What crossed the wire, QUIC overhead and garbage included.
    pub udp: udp::UdpCounters,
}

/// One frame from an authenticated peer.
#[derive(Debug)]
pub struct Inbound {
    /// The protocol it belongs to.
    pub channel: Channel,
    /// The peer's address (its endpoint, hence its listen address).
    pub src: SocketAddr,
    /// The peer's NodeId, from the certificate TLS verified.
    pub src_id: NodeId,
    /// The payload after the channel byte.
    pub payload: Bytes,
}

/// Why the transport could not start.
#[derive(Debug, Error)]
pub enum TransportError {
    /// TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// QUIC rejected the TLS configuration.
    #[error("quic tls configuration: {0}")]
    QuicTls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

struct Outbound {
    reliable: bool,
    frame: Vec<u8>,
}

struct Shared {
    endpoint: Endpoint,
    counters: TransportCounters,
    inbound: mpsc::Sender<Inbound>,
    conns: Mutex<HashMap<SocketAddr, Connection>>,
    peers: Mutex<HashMap<SocketAddr, mpsc::Sender<Outbound>>>,
    /// Payloads queued or being sent, for a bounded flush at shutdown.
    in_flight: AtomicUsize,
    /// Where bidirectional streams opened by peers go (tunnels), once a
    /// server asked for them.
    streams: Mutex<Option<mpsc::Sender<MeshStream>>>,
    /// The wire versions this endpoint reads.
    wire: WireVersions,
    /// Peers whose wire-version refusal was logged (once per peer).
    version_logged: Mutex<HashSet<SocketAddr>>,
}

/// A bidirectional stream a party member opened to this node.
pub struct MeshStream {
    /// The authenticated member.
    pub peer: NodeId,
    /// Our sending half.
    pub send: quinn::SendStream,
    /// Our receiving half.
    pub recv: quinn::RecvStream,
}

/// Bidirectional streams waiting for the tunnel server.
const MESH_STREAM_QUEUE: usize = 64;

/// The QUIC endpoint of one node.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

/// The QUIC transport parameters shared by server and client sides.
fn transport_config() -> Arc<TransportConfig> {
    let mut config = TransportConfig::default();
    config
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(IDLE_TIMEOUT).expect("idle timeout fits a VarInt"),
        ))
        .initial_mtu(INITIAL_MTU)
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_INBOUND_STREAMS))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_INBOUND_STREAMS))
        .datagram_receive_buffer_size(Some(256 * 1024))
        .datagram_send_buffer_size(256 * 1024);
    Arc::new(config)
}

/// quinn server and client configurations for a node identity.
pub fn quinn_configs(
    material: &TlsMaterial,
    refusals: Counter,
    wire: &WireVersions,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TransportError> {
    let (server_tls, client_tls) = rustls_configs(material, refusals, wire)?;
    let server_crypto = QuicServerConfig::try_from(server_tls)
        .map_err(|e| TransportError::QuicTls(e.to_string()))?;
    let client_crypto = QuicClientConfig::try_from(client_tls)
        .map_err(|e| TransportError::QuicTls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport_config());
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport_config());
    Ok((server, client))
}

/// The NodeId of a connection's authenticated peer.
pub fn peer_node_id(conn: &Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_from_cert(certs.first()?).ok()
}

impl Transport {
    /// Binds `listen` and starts accepting peers; every authenticated frame
    /// goes to `inbound` (frames are dropped and counted when it is full).
    pub fn bind(
        listen: SocketAddr,
        material: &TlsMaterial,
        counters: TransportCounters,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<Transport, TransportError> {
        Transport::bind_speaking(listen, material, counters, inbound, WireVersions::current())
    }

    /// [`Transport::bind`] for an endpoint reading the wire versions
    /// `wire` instead of this build's (tests play a peer of another build
    /// with it).
    pub fn bind_speaking(
        listen: SocketAddr,
        material: &TlsMaterial,
        counters: TransportCounters,
        inbound: mpsc::Sender<Inbound>,
        wire: WireVersions,
    ) -> Result<Transport, TransportError> {
        let (server, client) = quinn_configs(material, counters.handshake_refusals.clone(), &wire)?;
        let bind_err = |source| TransportError::Bind {
            addr: listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let socket = runtime.wrap_udp_socket(socket).map_err(bind_err)?;
        let socket = udp::CountingSocket::new(socket, counters.udp.clone());
        let mut endpoint = Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(bind_err)?;
        endpoint.set_default_client_config(client);
        let transport = Transport {
            shared: Arc::new(Shared {
                endpoint,
                counters,
                inbound,
                conns: Mutex::new(HashMap::new()),
                peers: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                streams: Mutex::new(None),
                wire,
                version_logged: Mutex::new(HashSet::new()),
            }),
        };
        tokio::spawn(accept_loop(transport.shared.clone()));
        Ok(transport)
    }

    /// Hands every bidirectional stream peers open from now on to the
    /// receiver (a second call replaces the first receiver).
    pub fn serve_streams(&self) -> mpsc::Receiver<MeshStream> {
        let (tx, rx) = mpsc::channel(MESH_STREAM_QUEUE);
        *lock(&self.shared.streams) = Some(tx);
        rx
    }

    /// Opens a bidirectional stream to the member at `dst`, dialling it
    /// when there is no live connection.
    pub async fn open_stream(
        &self,
        dst: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let conn = connection_to(&self.shared, dst)
            .await
            .ok_or_else(|| format!("cannot reach the member at {dst}"))?;
        conn.open_bi().await.map_err(|e| e.to_string())
    }

    /// Counts a malformed message that arrived on a stream this
    /// transport handed out (`shoal_decode_errors_total`).
    pub fn count_decode_error(&self) {
        self.shared.counters.decode_errors.inc();
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Queues `payload` for `dst` on `channel`; never blocks.
    pub fn send(&self, channel: Channel, dst: SocketAddr, reliable: bool, payload: &[u8]) {
        let outbound = Outbound {
            reliable,
            frame: frame::encode(channel, payload),
        };
        let shared = &self.shared;
        let mut peers = lock(&shared.peers);
        if peers.len() >= PEER_MAP_PRUNE_AT {
            // Sender tasks of addresses gone quiet have exited; forget them.
            peers.retain(|_, queue| !queue.is_closed());
        }
        let queue = peers
            .entry(dst)
            .or_insert_with(|| spawn_peer(shared.clone(), dst));
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        match queue.try_send(outbound) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                shared.counters.outbound_dropped.inc();
            }
            Err(mpsc::error::TrySendError::Closed(outbound)) => {
                // The peer task exited while idle: start a new one.
                let queue = spawn_peer(shared.clone(), dst);
                if queue.try_send(outbound).is_err() {
                    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    shared.counters.outbound_dropped.inc();
                }
                peers.insert(dst, queue);
            }
        }
    }

    /// Waits until every queued payload went out, or `max_wait` passed.
    pub async fn flush(&self, max_wait: Duration) {
        let deadline = tokio::time::Instant::now() + max_wait;
        while self.shared.in_flight.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Closes every connection and waits (bounded) for peers to be told.
    pub async fn close(&self, max_wait: Duration) {
        self.shared.endpoint.close(VarInt::from_u32(0), b"shutdown");
        let _ = tokio::time::timeout(max_wait, self.shared.endpoint.wait_idle()).await;
    }

    /// Number of cached connections.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.conns).len()
    }
}

fn spawn_peer(shared: Arc<Shared>, dst: SocketAddr) -> mpsc::Sender<Outbound> {
    let (tx, rx) = mpsc::channel(PEER_QUEUE_LEN);
    tokio::spawn(peer_sender(shared, dst, rx));
    tx
}

/// Sends everything queued for `dst`, dialling when there is no live
/// connection.
async fn peer_sender(shared: Arc<Shared>, dst: SocketAddr, mut rx: mpsc::Receiver<Outbound>) {
    let mut failed_at: Option<tokio::time::Instant> = None;
    loop {
        let outbound = match tokio::time::timeout(PEER_IDLE_EXIT, rx.recv()).await {
            Ok(Some(o)) => o,
            Ok(None) | Err(_) => break,
        };
        let in_backoff = failed_at.is_some_and(|t| t.elapsed() < DIAL_BACKOFF);
        let conn = if in_backoff {
            None
        } else {
            connection_to(&shared, dst).await
        };
        match conn {
            Some(conn) => {
                failed_at = None;
                send_on(&shared, &conn, outbound);
            }
            None => {
                failed_at.get_or_insert_with(tokio::time::Instant::now);
                shared.counters.outbound_dropped.inc();
            }
        }
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
    // Anything still queued when the task ends is dropped.
    rx.close();
    while rx.try_recv().is_ok() {
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        shared.counters.outbound_dropped.inc();
    }
}

fn send_on(shared: &Arc<Shared>, conn: &Connection, outbound: Outbound) {
    let len = outbound.frame.len() as u64;
    let fits = conn
        .max_datagram_size()
        .is_some_and(|max| outbound.frame.len() <= max);
    if !outbound.reliable && fits {
        match conn.send_datagram(Bytes::from(outbound.frame)) {
            Ok(()) => {
                shared.counters.datagrams_out.inc();
                shared.counters.bytes_out.inc_by(len);
            }
            Err(e) => {
                tracing::debug!(peer = %conn.remote_address(), error = %e, "datagram not sent");
                shared.counters.outbound_dropped.inc();
            }
        }
        return;
    }
    // Reliable payloads, and datagrams the path cannot carry, go on a stream.
    let conn = conn.clone();
    let shared = shared.clone();
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let result = tokio::time::timeout(STREAM_READ_TIMEOUT, async {
            let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
            stream
                .write_all(&frame::stream_prefix(outbound.frame.len()))
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(&outbound.frame)
                .await
                .map_err(|e| e.to_string())?;
            stream.finish().map_err(|e| e.to_string())
        })
        .await;
        match result {
            Ok(Ok(())) => {
                shared.counters.streams_out.inc();
                shared.counters.bytes_out.inc_by(len);
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %conn.remote_address(), error = %e, "stream not sent");
                shared.counters.outbound_dropped.inc();
            }
            Err(_) => {
                shared.counters.outbound_dropped.inc();
            }
        }
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    });
}

/// The cached live connection to `dst`, or a new one.
async fn connection_to(shared: &Arc<Shared>, dst: SocketAddr) -> Option<Connection> {
    if let Some(conn) = lock(&shared.conns).get(&dst) {
        if conn.close_reason().is_none() {
            return Some(conn.clone());
        }
    }
    let connecting = match shared.endpoint.connect(dst, SERVER_NAME) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(peer = %dst, error = %e, "cannot dial");
            shared.counters.dial_failures.inc();
            return None;
        }
    };
    match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => {
            register(shared, conn.clone())?;
            Some(conn)
        }
        Ok(Err(e)) => {
            if !note_version_close(shared, dst, None, &e) {
                tracing::debug!(peer = %dst, error = %e, "dial failed");
            }
            shared.counters.dial_failures.inc();
            None
        }
        Err(_) => {
            tracing::debug!(peer = %dst, "dial timed out");
            shared.counters.dial_failures.inc();
            None
        }
    }
}

/// Caches a fresh connection (the newest to an address wins: a restarted
/// peer's new connection replaces the dead one) and starts reading it.
fn register(shared: &Arc<Shared>, conn: Connection) -> Option<NodeId> {
    let Some(peer_id) = peer_node_id(&conn) else {
        // The verifier accepted the chain, so this cannot happen short of a
        // rustls change; refuse rather than guess an identity.
        conn.close(VarInt::from_u32(1), b"no identity");
        shared.counters.handshake_refusals.inc();
        return None;
    };
    let addr = conn.remote_address();
    if let Err(e) = shared.wire.readable_alpn(negotiated_alpn(&conn).as_deref()) {
        refuse_version(shared, &conn, peer_id, &e);
        return None;
    }
    lock(&shared.version_logged).remove(&addr);
    lock(&shared.conns).insert(addr, conn.clone());
    tokio::spawn(read_connection(shared.clone(), conn, peer_id));
    Some(peer_id)
}

/// The ALPN protocol the handshake settled on.
fn negotiated_alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Whether this is the first wire-version refusal involving `peer` since
/// it was last connected (the log says it once per peer, the counter
/// every time).
fn first_version_refusal(shared: &Shared, peer: SocketAddr) -> bool {
    let mut logged = lock(&shared.version_logged);
    if logged.len() >= VERSION_LOGGED_MAX {
        logged.clear();
    }
    logged.insert(peer)
}

/// Closes a connection whose wire version this endpoint cannot read, with
/// a reason the peer logs.
fn refuse_version(shared: &Shared, conn: &Connection, peer_id: NodeId, error: &VersionError) {
    let peer = conn.remote_address();
    let reads = version::list(shared.wire.reads());
    let speaks = match error {
        VersionError::Unreadable { found, .. } => version::alpn_name(*found),
        other => other.to_string(),
    };
    shared.counters.wire_version_refused.inc();
    if first_version_refusal(shared, peer) {
        tracing::warn!(%peer, node = %peer_id, peer_speaks = %speaks, reads = %reads,
            "refused a peer whose wire version this agent cannot read: {peer} (node {peer_id}) \
             speaks {speaks}, this agent reads {reads}; it runs another shoal build, \
             run builds that read a common version");
    }
    let reason = format!("reads {reads}, cannot read {speaks}");
    conn.close(VarInt::from_u32(CLOSE_WIRE_VERSION), reason.as_bytes());
}

/// Logs (once per peer) and counts a connection the peer closed or
/// refused for its wire version; whether `error` was one.
fn note_version_close(
    shared: &Shared,
    peer: SocketAddr,
    peer_id: Option<NodeId>,
    error: &quinn::ConnectionError,
) -> bool {
    let speaks = version::list(shared.wire.reads());
    let why = match error {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(CLOSE_WIRE_VERSION) =>
        {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        quinn::ConnectionError::ConnectionClosed(c)
            if u64::from(c.error_code) == CRYPTO_NO_APPLICATION_PROTOCOL =>
        {
            "knows none of the versions offered (TLS no_application_protocol)".to_string()
        }
        _ => return false,
    };
    shared.counters.wire_version_refused.inc();
    if first_version_refusal(shared, peer) {
        let node = peer_id.map(|id| id.to_string()).unwrap_or_default();
        tracing::warn!(%peer, node = %node, reads = %speaks,
            "a peer refused this agent's wire version: {peer} {why} \
             (this agent speaks {speaks}); it runs another shoal build, \
             run builds that read a common version");
    }
    true
}

/// A failed incoming handshake that is a TLS refusal, and by which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// This node's verifier refused the peer's certificate (it counted it).
    OursOfTheirs,
    /// The peer refused this node's certificate: it trusts another CA or
    /// party (in TLS 1.3 the dialler checks first, so a joiner from another
    /// CA is seen only this way).
    TheirsOfOurs,
}

/// TLS alerts travel as QUIC CRYPTO_ERROR codes 0x100..=0x1ff.
fn is_crypto_code(code: quinn::TransportErrorCode) -> bool {
    (0x100..=0x1ff).contains(&u64::from(code))
}

/// A handshake this endpoint failed with `no_application_protocol`.
fn is_no_common_version(error: &quinn::ConnectionError) -> bool {
    matches!(error, quinn::ConnectionError::TransportError(e)
        if u64::from(e.code) == CRYPTO_NO_APPLICATION_PROTOCOL)
}

fn refusal(error: &quinn::ConnectionError) -> Option<Refusal> {
    match error {
        quinn::ConnectionError::TransportError(e) if is_crypto_code(e.code) => {
            Some(Refusal::OursOfTheirs)
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_crypto_code(c.error_code) => {
            Some(Refusal::TheirsOfOurs)
        }
        _ => None,
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        let peer = incoming.remote_address();
        tokio::spawn(async move {
            match tokio::time::timeout(DIAL_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => {
                    register(&shared, conn);
                }
                Ok(Err(e)) if is_no_common_version(&e) => {
                    shared.counters.wire_version_refused.inc();
                    if first_version_refusal(&shared, peer) {
                        let reads = version::list(shared.wire.reads());
                        tracing::warn!(%peer, reads = %reads,
                            "refused a peer that offers no wire version this agent knows (it reads {reads}); \
                             it runs another shoal build");
                    }
                }
                Ok(Err(e)) => match refusal(&e) {
                    Some(Refusal::OursOfTheirs) => {
                        tracing::warn!(%peer, reason = %e, "refused a joining peer's certificate");
                    }
                    Some(Refusal::TheirsOfOurs) => {
                        shared.counters.handshake_refusals.inc();
                        tracing::warn!(%peer, reason = %e,
                            "handshake refused: the joining peer does not trust this party's certificate (another CA or party)");
                    }
                    None => tracing::debug!(%peer, error = %e, "incoming handshake failed"),
                },
                Err(_) => tracing::debug!(%peer, "incoming handshake timed out"),
            }
        });
    }
}

async fn read_connection(shared: Arc<Shared>, conn: Connection, peer_id: NodeId) {
    let src = conn.remote_address();
    let closed = loop {
        tokio::select! {
            datagram = conn.read_datagram() => match datagram {
                Ok(bytes) => {
                    shared.counters.datagrams_in.inc();
                    shared.counters.bytes_in.inc_by(bytes.len() as u64);
                    deliver(&shared, src, peer_id, bytes, frame::MAX_DATAGRAM_FRAME_BYTES);
                }
                Err(e) => break e,
            },
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    tokio::spawn(read_stream(shared.clone(), src, peer_id, recv));
                }
                Err(e) => break e,
            },
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let server = lock(&shared.streams).clone();
                    match server {
                        Some(server) => {
                            let stream = MeshStream { peer: peer_id, send, recv };
                            if server.try_send(stream).is_err() {
                                tracing::debug!(peer = %src, "stream queue full; stream dropped");
                            }
                        }
                        None => {
                            // Nobody serves streams here: read the frame
                            // like a uni stream and close our half.
                            let mut send = send;
                            let _ = send.finish();
                            tokio::spawn(read_stream(shared.clone(), src, peer_id, recv));
                        }
                    }
                }
                Err(e) => break e,
            },
        }
    };
    note_version_close(&shared, src, Some(peer_id), &closed);
    let mut conns = lock(&shared.conns);
    if conns
        .get(&src)
        .is_some_and(|c| c.stable_id() == conn.stable_id())
    {
        conns.remove(&src);
    }
}

async fn read_stream(
    shared: Arc<Shared>,
    src: SocketAddr,
    peer_id: NodeId,
    mut recv: quinn::RecvStream,
) {
    let result = tokio::time::timeout(STREAM_READ_TIMEOUT, async {
        let mut prefix = [0u8; frame::LENGTH_PREFIX_BYTES];
        recv.read_exact(&mut prefix)
            .await
            .map_err(|e| e.to_string())?;
        let len = frame::stream_frame_len(prefix).map_err(|e| e.to_string())?;
        // Memory grows with the bytes that actually arrive, not with what
        // the prefix claims; one frame per stream, so the stream must end
        // exactly where the frame does.
        let body = recv.read_to_end(len).await.map_err(|e| e.to_string())?;
        if body.len() != len {
            return Err(format!("stream ended after {} of {len} bytes", body.len()));
        }
        Ok::<_, String>(body)
    })
    .await;
    match result {
        Ok(Ok(body)) => {
            shared.counters.streams_in.inc();
            shared
                .counters
                .bytes_in
                .inc_by((body.len() + frame::LENGTH_PREFIX_BYTES) as u64);
            deliver(
                &shared,
                src,
                peer_id,
                Bytes::from(body),
                frame::MAX_STREAM_FRAME_BYTES,
            );
        }
        Ok(Err(e)) => {
            shared.counters.decode_errors.inc();
            tracing::debug!(peer = %src, error = %e, "dropped a malformed or truncated stream");
            let _ = recv.stop(VarInt::from_u32(2));
        }
        Err(_) => {
            shared.counters.decode_errors.inc();
            tracing::debug!(peer = %src, "dropped a stream that stalled");
            let _ = recv.stop(VarInt::from_u32(3));
        }
    }
}

fn deliver(shared: &Arc<Shared>, src: SocketAddr, src_id: NodeId, bytes: Bytes, limit: usize) {
    let channel = match frame::decode(&bytes, limit) {
        Ok((channel, _)) => channel,
        Err(e) => {
            shared.counters.decode_errors.inc();
            tracing::debug!(peer = %src, error = %e, "dropped a malformed frame");
            return;
        }
    };
    let inbound = Inbound {
        channel,
        src,
        src_id,
        payload: bytes.slice(1..),
    };
    if shared.inbound.try_send(inbound).is_err() {
        tracing::debug!(peer = %src, "inbound queue full; frame dropped");
    }
}

/// The transport's maps stay whole if a task panics while holding them (each
/// critical section is one insert, remove or lookup), so a poisoned lock is
/// taken over rather than turned into a panic in every later datagram.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
