//! Tunnels to a peer party's exported services (docs/federation.md,
//! "Tunnels"). A TCP connection to a tunnel's local port is carried
//! `node -> own mesh -> a link holder -> link -> peer gateway -> peer mesh
//! -> the service's node`; each hop opens the next with a
//! [`TunnelOpen`], passes the [`TunnelReply`] back, then copies bytes both
//! ways. Every choice of the next hop is
//! `shoal_protocol::federation::tunnel`'s. Flow control of QUIC and of the
//! libp2p streams holds back a fast writer end to end; each hop buffers
//! one copy buffer per direction.

use super::link::LinkStreams;
use super::records::FedRecords;
use crate::agent::driver::{Command, Snapshot};
use crate::transport::{MeshStream, Transport};
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_protocol::federation::holders::GatewayView;
use shoal_protocol::federation::tunnel::{
    route_to_party, route_to_service, PartyRoute, ServiceRoute,
};
use shoal_protocol::wire::fed::{TunnelOpen, TunnelReply, MAX_TUNNEL_HEADER_BYTES};
use shoal_protocol::NodeId;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// The libp2p protocol of tunnel streams between gateways.
pub const TUNNEL_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/tunnel/1");
/// How long opening one hop (and everything behind it) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most tunnels one agent keeps open.
pub const MAX_TUNNELS: usize = 256;

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;
/// The two halves of one hop's stream.
type Duplex = (Reader, Writer);

/// Why a tunnel could not be opened.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TunnelError {
    /// The service is not exported to us (403).
    #[error("{0}")]
    Refused(String),
    /// No path now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The request is wrong (400).
    #[error("{0}")]
    Invalid(String),
}

impl From<TunnelError> for TunnelReply {
    fn from(e: TunnelError) -> Self {
        match e {
            TunnelError::Refused(m) => TunnelReply::Refused(m),
            TunnelError::Unavailable(m) | TunnelError::Invalid(m) => TunnelReply::Unavailable(m),
        }
    }
}

fn unavailable(what: impl std::fmt::Display) -> TunnelError {
    TunnelError::Unavailable(what.to_string())
}

async fn write_msg<T: Serialize>(w: &mut Writer, message: &T) -> std::io::Result<()> {
    let bytes = shoal_protocol::wire::encode(message);
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await
}

async fn read_msg<T: DeserializeOwned>(r: &mut Reader) -> std::io::Result<T> {
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_TUNNEL_HEADER_BYTES {
        return Err(bad(format!("tunnel header of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    shoal_protocol::wire::decode(&body, MAX_TUNNEL_HEADER_BYTES).map_err(|e| bad(e.to_string()))
}

/// Sends `open` on a fresh hop and waits for its reply.
async fn open_hop(mut hop: Duplex, open: &TunnelOpen) -> Result<Duplex, TunnelError> {
    let exchange = async {
        write_msg(&mut hop.1, open).await?;
        read_msg::<TunnelReply>(&mut hop.0).await
    };
    match tokio::time::timeout(OPEN_TIMEOUT, exchange).await {
        Ok(Ok(TunnelReply::Open)) => Ok(hop),
        Ok(Ok(TunnelReply::Refused(m))) => Err(TunnelError::Refused(m)),
        Ok(Ok(TunnelReply::Unavailable(m))) => Err(TunnelError::Unavailable(m)),
        Ok(Err(e)) => Err(unavailable(format!("the next hop broke off: {e}"))),
        Err(_) => Err(unavailable("the next hop did not answer in time")),
    }
}

/// Copies both ways until both ends closed their sending side.
async fn splice(a: Duplex, b: Duplex) {
    let (mut a_read, mut a_write) = a;
    let (mut b_read, mut b_write) = b;
    let forward = async {
        let _ = tokio::io::copy(&mut a_read, &mut b_write).await;
        let _ = b_write.shutdown().await;
    };
    let backward = async {
        let _ = tokio::io::copy(&mut b_read, &mut a_write).await;
        let _ = a_write.shutdown().await;
    };
    tokio::join!(forward, backward);
}

fn tcp_duplex(stream: tokio::net::TcpStream) -> Duplex {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    (Box::new(r), Box::new(w))
}

fn mesh_duplex(send: quinn::SendStream, recv: quinn::RecvStream) -> Duplex {
    (Box::new(recv), Box::new(send))
}

/// Carries tunnels for this agent: opens them for local tunnel ports and
/// relays the hops that other nodes and peer gateways ask of it.
pub struct Relay {
    me: NodeId,
    transport: Transport,
    commands: mpsc::Sender<Command>,
    link_holders: usize,
    /// On a gateway: its links and the party's records.
    gateway: Option<(LinkStreams, watch::Receiver<FedRecords>)>,
}

impl Relay {
    /// A relay for the agent `me`; `gateway` when it holds links.
    pub fn new(
        me: NodeId,
        transport: Transport,
        commands: mpsc::Sender<Command>,
        link_holders: usize,
        gateway: Option<(LinkStreams, watch::Receiver<FedRecords>)>,
    ) -> Arc<Relay> {
        Arc::new(Relay {
            me,
            transport,
            commands,
            link_holders,
            gateway,
        })
    }

    /// Serves the hops asked of this agent, over the mesh and the links.
    pub fn serve(self: &Arc<Self>) {
        let mut mesh = self.transport.serve_streams();
        let relay = self.clone();
        tokio::spawn(async move {
            while let Some(stream) = mesh.recv().await {
                tokio::spawn(relay.clone().serve_mesh(stream));
            }
        });
        if let Some((links, _)) = &self.gateway {
            let mut control = links.control.clone();
            match control.accept(TUNNEL_PROTOCOL) {
                Ok(mut incoming) => {
                    let relay = self.clone();
                    tokio::spawn(async move {
                        use futures::StreamExt;
                        while let Some((peer, stream)) = incoming.next().await {
                            tokio::spawn(relay.clone().serve_link(peer, stream));
                        }
                    });
                }
                Err(e) => tracing::error!(error = %e, "cannot accept tunnel streams"),
            }
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, TunnelError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Snapshot(tx))
            .await
            .map_err(|_| unavailable("the membership driver is not running"))?;
        rx.await
            .map_err(|_| unavailable("the membership driver is not running"))
    }

    async fn addr_of(&self, node: &NodeId) -> Result<SocketAddr, TunnelError> {
        let snapshot = self.snapshot().await?;
        snapshot
            .members
            .iter()
            .find(|m| m.identity.id == *node)
            .map(|m| m.identity.addr)
            .ok_or_else(|| unavailable(format!("member {} is not in the mesh", node.to_hex())))
    }

    async fn mesh_hop(&self, node: &NodeId, open: &TunnelOpen) -> Result<Duplex, TunnelError> {
        let addr = self.addr_of(node).await?;
        let (send, recv) = self
            .transport
            .open_stream(addr)
            .await
            .map_err(unavailable)?;
        open_hop(mesh_duplex(send, recv), open).await
    }

    /// Opens a path to `service` of `party`; `None` for a probe, which
    /// checks the path to the service's node and connects nothing.
    pub async fn open(
        &self,
        party: &str,
        service: &str,
        probe: bool,
    ) -> Result<Option<Duplex>, TunnelError> {
        let peer = self
            .gateway
            .as_ref()
            .and_then(|(links, _)| links.peer_of(party).map(|p| (links, p)));
        let view: Vec<GatewayView> = {
            let snapshot = self.snapshot().await?;
            super::view::gateway_views(&snapshot)
                .into_iter()
                .filter(|g| g.id != self.me || self.gateway.is_some())
                .collect()
        };
        let hop = match route_to_party(&self.me, peer.is_some(), party, &view, self.link_holders) {
            PartyRoute::Link => {
                let (links, peer) = peer.ok_or_else(|| unavailable("the link just dropped"))?;
                let stream = links
                    .control
                    .clone()
                    .open_stream(peer, TUNNEL_PROTOCOL)
                    .await
                    .map_err(|e| unavailable(format!("opening a stream on the link: {e}")))?;
                let (r, w) = tokio::io::split(stream.compat());
                let open = TunnelOpen::ToService {
                    service: service.to_string(),
                    probe,
                };
                open_hop((Box::new(r), Box::new(w)), &open).await?
            }
            PartyRoute::Holder(holder) => {
                let open = TunnelOpen::ToParty {
                    party: party.to_string(),
                    service: service.to_string(),
                    probe,
                };
                self.mesh_hop(&holder, &open).await?
            }
            PartyRoute::NoLink => {
                return Err(unavailable(format!(
                    "no gateway of this party has a link to party {party:?}"
                )))
            }
        };
        Ok((!probe).then_some(hop))
    }

    /// At a gateway: the path to `service` that `asking` party asked for.
    async fn open_service(
        &self,
        asking: &str,
        service: &str,
        probe: bool,
    ) -> Result<Option<Duplex>, TunnelError> {
        let Some((_, records)) = &self.gateway else {
            return Err(unavailable("this node holds no links"));
        };
        let exports = records.borrow().exports.clone();
        match route_to_service(&self.me, &exports, asking, service) {
            ServiceRoute::Refused(why) => {
                tracing::warn!(party = ?asking, service = ?service, "tunnel refused: not exported");
                Err(TunnelError::Refused(why))
            }
            ServiceRoute::Local(port) => connect_port(port, probe).await,
            ServiceRoute::Node(node, port) => {
                let hop = self
                    .mesh_hop(&node, &TunnelOpen::ToPort { port, probe })
                    .await?;
                Ok((!probe).then_some(hop))
            }
        }
    }

    /// Answers the hop's opener and, once open, carries its bytes.
    async fn answer(
        mut upstream: Duplex,
        next: Result<Option<Duplex>, TunnelError>,
    ) -> std::io::Result<()> {
        match next {
            Ok(next) => {
                write_msg(&mut upstream.1, &TunnelReply::Open).await?;
                if let Some(next) = next {
                    splice(upstream, next).await;
                }
            }
            Err(e) => write_msg(&mut upstream.1, &TunnelReply::from(e)).await?,
        }
        Ok(())
    }

    async fn serve_mesh(self: Arc<Self>, stream: MeshStream) {
        let mut upstream = mesh_duplex(stream.send, stream.recv);
        let open = match tokio::time::timeout(OPEN_TIMEOUT, read_msg::<TunnelOpen>(&mut upstream.0))
            .await
        {
            Ok(Ok(open)) => open,
            _ => {
                self.transport.count_decode_error();
                tracing::debug!(peer = %stream.peer.to_hex(), "a mesh stream without a tunnel header");
                return;
            }
        };
        let next = match open {
            TunnelOpen::ToParty {
                party,
                service,
                probe,
            } => match self.gateway.as_ref().and_then(|(l, _)| l.peer_of(&party)) {
                Some(_) => self.open(&party, &service, probe).await,
                None => Err(unavailable(format!("this holder has no link to {party:?}"))),
            },
            TunnelOpen::ToPort { port, probe } => connect_port(port, probe).await,
            TunnelOpen::ToService { .. } => Err(TunnelError::Invalid(
                "a service hop comes over a link, not the mesh".into(),
            )),
        };
        let _ = Self::answer(upstream, next).await;
    }

    async fn serve_link(self: Arc<Self>, peer: libp2p::PeerId, stream: libp2p::Stream) {
        let Some(asking) = self.gateway.as_ref().and_then(|(l, _)| l.party_of(&peer)) else {
            tracing::warn!(%peer, "tunnel stream from a peer without an accepted hello; dropped");
            return;
        };
        let (r, w) = tokio::io::split(stream.compat());
        let mut upstream: Duplex = (Box::new(r), Box::new(w));
        let open = match tokio::time::timeout(OPEN_TIMEOUT, read_msg::<TunnelOpen>(&mut upstream.0))
            .await
        {
            Ok(Ok(open)) => open,
            _ => {
                tracing::debug!(%peer, "a link stream without a tunnel header");
                return;
            }
        };
        let next = match open {
            TunnelOpen::ToService { service, probe } => {
                self.open_service(&asking, &service, probe).await
            }
            _ => Err(TunnelError::Invalid(
                "a peer party may only ask for a service".into(),
            )),
        };
        let _ = Self::answer(upstream, next).await;
    }
}

async fn connect_port(port: u16, probe: bool) -> Result<Option<Duplex>, TunnelError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match tokio::time::timeout(OPEN_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok((!probe).then(|| tcp_duplex(stream))),
        Ok(Err(e)) => Err(unavailable(format!("the service at {addr}: {e}"))),
        Err(_) => Err(unavailable(format!(
            "the service at {addr} did not accept in time"
        ))),
    }
}

/// One open tunnel as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TunnelView {
    /// `127.0.0.1:PORT`, where applications connect.
    pub local: String,
    /// The peer party.
    pub party: String,
    /// Its service.
    pub service: String,
}

struct OpenTunnel {
    view: TunnelView,
    accept: tokio::task::JoinHandle<()>,
}

/// This agent's tunnels, by local port.
#[derive(Clone)]
pub struct Tunnels {
    relay: Arc<Relay>,
    open: Arc<Mutex<BTreeMap<u16, OpenTunnel>>>,
}

impl Tunnels {
    /// No tunnels yet.
    pub fn new(relay: Arc<Relay>) -> Tunnels {
        Tunnels {
            relay,
            open: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, OpenTunnel>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks the path to `service` of `party` and listens on a free
    /// loopback port for connections to carry there.
    pub async fn open(&self, party: &str, service: &str) -> Result<TunnelView, TunnelError> {
        if self.lock().len() >= MAX_TUNNELS {
            return Err(TunnelError::Invalid(format!(
                "this agent has {MAX_TUNNELS} tunnels open already; close one"
            )));
        }
        self.relay.open(party, service, true).await?;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| unavailable(format!("cannot listen on loopback: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| unavailable(e.to_string()))?;
        let view = TunnelView {
            local: local.to_string(),
            party: party.to_string(),
            service: service.to_string(),
        };
        let relay = self.relay.clone();
        let (party, service) = (party.to_string(), service.to_string());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((conn, from)) = listener.accept().await else {
                    continue;
                };
                let relay = relay.clone();
                let (party, service) = (party.clone(), service.clone());
                tokio::spawn(async move {
                    match relay.open(&party, &service, false).await {
                        Ok(Some(path)) => splice(tcp_duplex(conn), path).await,
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(%from, party = ?party, service = ?service, error = %e, "tunnel connection not carried");
                        }
                    }
                });
            }
        });
        tracing::info!(local = %local, party = ?view.party, service = ?view.service, "tunnel open");
        self.lock().insert(
            local.port(),
            OpenTunnel {
                view: view.clone(),
                accept,
            },
        );
        Ok(view)
    }

    /// Closes the tunnel listening on `port`: no new connections; the
    /// ones carried already run to their end.
    pub fn close(&self, port: u16) -> Option<TunnelView> {
        let tunnel = self.lock().remove(&port)?;
        tunnel.accept.abort();
        tracing::info!(local = %tunnel.view.local, "tunnel closed");
        Some(tunnel.view)
    }

    /// The open tunnels.
    pub fn list(&self) -> Vec<TunnelView> {
        self.lock().values().map(|t| t.view.clone()).collect()
    }
}
