//! The gateway's libp2p swarm: QUIC, identify, ping and the `/shoal/fed/1`
//! hello exchange. It dials every trusted party's gateways, judges each
//! hello with [`judge_hello`], refuses unvouched peers before anything else
//! is exchanged on the link, and dials a dropped link again with backoff.

use super::card::{quic_multiaddr, Card};
use super::codec::{FedCodec, FED_PROTOCOL};
use super::keys::GatewayIdentity;
use super::metrics::FedMetrics;
use super::records::FedRecords;
use super::table::{FedHandle, LinkState};
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, ping, Multiaddr, PeerId, Swarm};
use shoal_protocol::federation::holders::{holders, GatewayView};
use shoal_protocol::federation::{judge_hello, RedialBackoff, TrustedParty, Verdict};
use shoal_protocol::wire::fed::{
    FedRequest, FedResponse, Hello, RefuseReason, FED_PROTOCOL_VERSION,
};
use shoal_protocol::NodeId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the link task looks for links to dial and silent peers.
const TICK: Duration = Duration::from_millis(100);
/// A connected peer that sent no hello by then is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Ping period and timeout on a link; a failed ping drops the connection.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// QUIC keep-alives keep a quiet link open; the idle timeout notices a dead
/// peer even when no ping is in flight.
const QUIC_KEEP_ALIVE: Duration = Duration::from_millis(500);
const QUIC_IDLE_TIMEOUT_MS: u32 = 3_000;
const QUIC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// libp2p closes connections no behaviour keeps alive after this; links
/// are held by the ping and QUIC keep-alives, not by open requests.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Backoff between dials of an unreachable party.
const BACKOFF: RedialBackoff = RedialBackoff {
    first_ms: 200,
    max_ms: 2_000,
};

/// What the federation stage needs.
pub struct FedConfig {
    /// UDP address of the gateway.
    pub listen: SocketAddr,
    /// Our party.
    pub party: String,
    /// Our gateway key and voucher.
    pub identity: GatewayIdentity,
    /// Parties trusted by flag (`--fed-trust`); the replicated records
    /// add to them and, for the same party, replace them.
    pub flag_cards: Vec<Card>,
    /// The party's replicated federation records.
    pub records: watch::Receiver<FedRecords>,
    /// This node's id in its party.
    pub me: NodeId,
    /// How many of the party's gateways hold each link.
    pub link_holders: usize,
    /// The party's gateways as membership sees them.
    pub gateways: watch::Receiver<Vec<GatewayView>>,
}

#[derive(NetworkBehaviour)]
struct FedBehaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    hello: request_response::Behaviour<FedCodec>,
    stream: libp2p_stream::Behaviour,
}

/// What the tunnel relay needs of the links: raw streams to peer
/// gateways, and which peers a hello proved, by party.
#[derive(Clone)]
pub struct LinkStreams {
    /// Opens and accepts streams on the swarm's connections.
    pub control: libp2p_stream::Control,
    /// Peers whose hello was accepted, with the party each speaks for.
    pub vouched: Arc<std::sync::Mutex<HashMap<PeerId, String>>>,
}

impl LinkStreams {
    /// The party a linked peer speaks for.
    pub fn party_of(&self, peer: &PeerId) -> Option<String> {
        lock(&self.vouched).get(peer).cloned()
    }

    /// A linked peer gateway of `party`, if any link to it is up here.
    pub fn peer_of(&self, party: &str) -> Option<PeerId> {
        lock(&self.vouched)
            .iter()
            .find(|(_, p)| *p == party)
            .map(|(id, _)| *id)
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Dial state of one trusted party.
struct PartyLink {
    addrs: Vec<Multiaddr>,
    /// Dials in flight.
    dialing: HashSet<ConnectionId>,
    /// Consecutive dial rounds that brought no link up.
    failures: u32,
    next_dial: Instant,
}

/// A connected peer gateway.
struct Peer {
    remote: Multiaddr,
    connected_at: Instant,
    /// The party it speaks for, once its hello was accepted.
    party: Option<String>,
}

struct LinkTask {
    swarm: Swarm<FedBehaviour>,
    own_party: String,
    own_hello: Hello,
    trusted: Vec<TrustedParty>,
    parties: BTreeMap<String, PartyLink>,
    peers: HashMap<PeerId, Peer>,
    /// Peers refused, dropped once the refusal was sent.
    refusing: HashSet<PeerId>,
    table: FedHandle,
    metrics: Arc<FedMetrics>,
    me: NodeId,
    link_holders: usize,
    gateways: watch::Receiver<Vec<GatewayView>>,
    /// Connections this gateway dialed, closed when it stops holding the
    /// link they serve (inbound ones stay: the peer party chose them).
    dialed: HashMap<ConnectionId, PeerId>,
    flag_cards: Vec<Card>,
    records: watch::Receiver<FedRecords>,
    /// Shared with the tunnel relay: accepted peers and their parties.
    vouched: Arc<std::sync::Mutex<HashMap<PeerId, String>>>,
}

/// Binds the gateway and spawns its link task; returns the link table and
/// the links' streams.
pub fn start(
    config: FedConfig,
    metrics: Arc<FedMetrics>,
) -> anyhow::Result<(FedHandle, LinkStreams)> {
    let keypair = config.identity.keypair.clone();
    let local_peer = keypair.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic_config(|mut quic| {
            quic.keep_alive_interval = QUIC_KEEP_ALIVE;
            quic.max_idle_timeout = QUIC_IDLE_TIMEOUT_MS;
            quic.handshake_timeout = QUIC_HANDSHAKE_TIMEOUT;
            quic
        })
        .with_behaviour(|key| FedBehaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                FED_PROTOCOL.to_string(),
                key.public(),
            )),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            hello: request_response::Behaviour::new(
                [(FED_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(HELLO_TIMEOUT),
            ),
            stream: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    swarm.listen_on(quic_multiaddr(config.listen))?;

    let table = FedHandle::default();
    let streams = LinkStreams {
        control: swarm.behaviour().stream.new_control(),
        vouched: Arc::default(),
    };
    tracing::info!(
        gateway = %config.listen, peer = %local_peer,
        trusted_by_flag = ?config.flag_cards.iter().map(|c| &c.party).collect::<Vec<_>>(),
        "federation gateway listening"
    );
    let task = LinkTask {
        swarm,
        own_hello: Hello {
            version: FED_PROTOCOL_VERSION,
            party: config.party.clone(),
            gateway_peer: local_peer.to_bytes(),
            voucher: config.identity.voucher.clone(),
        },
        own_party: config.party,
        trusted: Vec::new(),
        parties: BTreeMap::new(),
        peers: HashMap::new(),
        refusing: HashSet::new(),
        table: table.clone(),
        metrics,
        me: config.me,
        link_holders: config.link_holders,
        gateways: config.gateways,
        dialed: HashMap::new(),
        flag_cards: config.flag_cards,
        records: config.records,
        vouched: streams.vouched.clone(),
    };
    let mut task = task;
    task.apply_trust(Instant::now());
    tokio::spawn(task.run());
    Ok((table, streams))
}

impl LinkTask {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
        }
    }

    /// The trusted cards: the flags', then the records', a record card
    /// replacing a flag card of the same party.
    fn trusted_cards(&self) -> BTreeMap<String, Card> {
        let records = self.records.borrow();
        self.flag_cards
            .iter()
            .chain(records.cards.iter())
            .map(|c| (c.party.clone(), c.clone()))
            .collect()
    }

    /// Brings the dial table in line with the trusted cards: new parties
    /// are dialled, changed cards take effect, and the links of a party no
    /// longer trusted are dropped.
    fn apply_trust(&mut self, now: Instant) {
        let mut trusted = Vec::new();
        let mut wanted = BTreeMap::new();
        for (party, card) in self.trusted_cards() {
            if party == self.own_party {
                continue;
            }
            match (card.trusted(), card.dial_addrs()) {
                (Ok(t), Ok(addrs)) => {
                    trusted.push(t);
                    wanted.insert(party, addrs);
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(party = ?party, error = %e, "an unusable trusted card is skipped");
                }
            }
        }
        let gone: Vec<String> = self
            .parties
            .keys()
            .filter(|p| !wanted.contains_key(*p))
            .cloned()
            .collect();
        for party in gone {
            tracing::info!(party = ?party, "party trusted no more; dropping its links");
            self.parties.remove(&party);
            self.table.remove(&party);
            self.metrics.forget(&party);
            let peers: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.party.as_deref() == Some(party.as_str()))
                .map(|(id, _)| *id)
                .collect();
            for peer in peers {
                lock(&self.vouched).remove(&peer);
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.party = None;
                }
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
        for (party, addrs) in wanted {
            match self.parties.get_mut(&party) {
                Some(link) => link.addrs = addrs,
                None => {
                    tracing::info!(party = ?party, "party trusted; its links will be dialled");
                    self.table.set(&party, LinkState::Down, None, None);
                    self.metrics.set_links_up(&party, false);
                    self.parties.insert(
                        party,
                        PartyLink {
                            addrs,
                            dialing: HashSet::new(),
                            failures: 0,
                            next_dial: now,
                        },
                    );
                }
            }
        }
        // A changed key takes effect for the next hello; a peer accepted
        // under the old key keeps its link until it drops.
        self.trusted = trusted;
    }

    fn on_tick(&mut self, now: Instant) {
        if self.records.has_changed().unwrap_or(false) {
            self.records.mark_unchanged();
            self.apply_trust(now);
        }
        let silent: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.party.is_none() && now.duration_since(p.connected_at) > HELLO_TIMEOUT
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in silent {
            tracing::debug!(%peer, "no hello in time; dropping the connection");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let up: HashSet<String> = self
            .peers
            .values()
            .filter_map(|p| p.party.clone())
            .collect();
        let holding = self.choose_holders();
        let mut dials = Vec::new();
        for (party, link) in &mut self.parties {
            if !holding.contains(party) {
                continue;
            }
            if up.contains(party) || !link.dialing.is_empty() || now < link.next_dial {
                continue;
            }
            if link.addrs.is_empty() {
                continue;
            }
            link.failures = link.failures.saturating_add(1);
            link.next_dial = now + Duration::from_millis(BACKOFF.delay_ms(link.failures));
            dials.extend(link.addrs.iter().map(|a| (party.clone(), a.clone())));
        }
        for (party, addr) in dials {
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    if let Some(link) = self.parties.get_mut(&party) {
                        link.dialing.insert(id);
                    }
                    self.table.set(&party, LinkState::Connecting, None, None);
                }
                Err(e) => tracing::debug!(%party, %addr, error = %e, "federation dial failed"),
            }
        }
    }

    /// Recomputes who holds each link from the latest gateway view; records
    /// it and closes the connections this node dialed for links it no
    /// longer holds. Returns the parties whose links this node holds.
    fn choose_holders(&mut self) -> HashSet<String> {
        let view = self.gateways.borrow().clone();
        let mut holding = HashSet::new();
        for party in self.parties.keys() {
            let chosen = holders(party, &view, self.link_holders);
            let slot = chosen.iter().position(|id| *id == self.me);
            let mine = slot.is_some();
            self.metrics.set_link_holders(party, chosen.len());
            self.table
                .set_holders(party, slot, chosen.iter().map(NodeId::to_hex).collect());
            if mine {
                holding.insert(party.clone());
            }
        }
        let released: Vec<ConnectionId> = self
            .dialed
            .iter()
            .filter(|(_, peer)| {
                self.peers
                    .get(peer)
                    .and_then(|p| p.party.as_ref())
                    .is_some_and(|party| !holding.contains(party))
            })
            .map(|(id, _)| *id)
            .collect();
        for connection in released {
            tracing::info!(
                ?connection,
                "no longer a holder of this link; closing the dialed connection"
            );
            self.dialed.remove(&connection);
            self.swarm.close_connection(connection);
        }
        holding
    }

    fn dial_ended(&mut self, connection: ConnectionId) {
        for (party, link) in &mut self.parties {
            if link.dialing.remove(&connection) && link.dialing.is_empty() {
                let up = self.peers.values().any(|p| p.party.as_ref() == Some(party));
                if !up {
                    self.table.set(party, LinkState::Down, None, None);
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<FedBehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = endpoint.get_remote_address().clone();
                let known = self.peers.contains_key(&peer_id);
                self.peers.entry(peer_id).or_insert(Peer {
                    remote,
                    connected_at: Instant::now(),
                    party: None,
                });
                if endpoint.is_dialer() {
                    self.dialed.insert(connection_id, peer_id);
                }
                if endpoint.is_dialer() && !known {
                    self.swarm
                        .behaviour_mut()
                        .hello
                        .send_request(&peer_id, FedRequest::Hello(self.own_hello.clone()));
                }
                self.dial_ended(connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.dialed.remove(&connection_id);
                if num_established > 0 {
                    return;
                }
                self.refusing.remove(&peer_id);
                lock(&self.vouched).remove(&peer_id);
                if let Some(party) = self.peers.remove(&peer_id).and_then(|p| p.party) {
                    self.link_lost(&party, &peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                tracing::debug!(error = %error, "federation dial failed");
                self.dial_ended(connection_id);
            }
            SwarmEvent::Behaviour(FedBehaviourEvent::Hello(event)) => self.on_hello_event(event),
            SwarmEvent::Behaviour(FedBehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            })) => match result {
                Ok(rtt) => {
                    if let Some(party) = self.peers.get(&peer).and_then(|p| p.party.clone()) {
                        self.table.set_rtt(&party, rtt.as_secs_f64() * 1e3);
                    }
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "federation ping failed; dropping the connection");
                    self.swarm.close_connection(connection);
                }
            },
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "federation listen address");
            }
            _ => {}
        }
    }

    fn link_lost(&mut self, party: &str, peer_id: &PeerId) {
        let still_up = self
            .peers
            .values()
            .any(|p| p.party.as_deref() == Some(party));
        if still_up {
            return;
        }
        tracing::warn!(party = %party, peer = %peer_id, "federation link down");
        self.metrics.set_links_up(party, false);
        self.table.set(party, LinkState::Down, None, None);
        if let Some(link) = self.parties.get_mut(party) {
            // Dial again at once after a drop; backoff only for failures.
            link.failures = 0;
            link.next_dial = Instant::now();
        }
    }

    fn on_hello_event(&mut self, event: request_response::Event<FedRequest, FedResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request: FedRequest::Hello(hello),
                        channel,
                        ..
                    },
                ..
            } => {
                let answer = match self.judge(&peer, &hello) {
                    Ok(()) => FedResponse::Hello(self.own_hello.clone()),
                    Err(reason) => FedResponse::Refused(reason),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .hello
                    .send_response(channel, answer);
            }
            Event::Message {
                peer,
                message: Message::Response { response, .. },
                ..
            } => match response {
                FedResponse::Hello(hello) => {
                    if self.judge(&peer, &hello).is_err() {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
                FedResponse::Refused(reason) => {
                    let remote = self.remote_of(&peer);
                    tracing::warn!(%peer, remote = %remote, reason = reason.as_str(), "the peer gateway refused us");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            },
            Event::ResponseSent { peer, .. } => {
                if self.refusing.remove(&peer) {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                if let request_response::InboundFailure::Io(e) = &error {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        self.refuse(&peer, RefuseReason::Malformed, "?");
                        let _ = self.swarm.disconnect_peer_id(peer);
                        return;
                    }
                }
                tracing::debug!(%peer, error = %error, "federation inbound hello failed");
            }
            Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, error = %error, "federation hello failed");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn remote_of(&self, peer: &PeerId) -> String {
        self.peers
            .get(peer)
            .map_or_else(|| "?".to_string(), |p| p.remote.to_string())
    }

    /// Judges a peer's hello and records the outcome.
    fn judge(&mut self, peer: &PeerId, hello: &Hello) -> Result<(), RefuseReason> {
        match judge_hello(&self.own_party, &self.trusted, hello, &peer.to_bytes()) {
            Verdict::Accept(party) => {
                self.link_up(peer, &party);
                Ok(())
            }
            Verdict::Refuse(reason) => {
                self.refuse(peer, reason, &hello.party);
                self.refusing.insert(*peer);
                Err(reason)
            }
        }
    }

    fn refuse(&mut self, peer: &PeerId, reason: RefuseReason, claimed_party: &str) {
        self.metrics.refused(reason);
        let remote = self.remote_of(peer);
        // {:?} escapes whatever the peer put in its party name.
        tracing::warn!(
            %peer, remote = %remote, reason = reason.as_str(), claimed_party = ?claimed_party,
            "federation peer refused"
        );
    }

    fn link_up(&mut self, peer_id: &PeerId, party: &str) {
        let was_up = self
            .peers
            .values()
            .any(|p| p.party.as_deref() == Some(party));
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return;
        };
        peer.party = Some(party.to_string());
        lock(&self.vouched).insert(*peer_id, party.to_string());
        let remote = peer.remote.to_string();
        if let Some(link) = self.parties.get_mut(party) {
            link.failures = 0;
        }
        if !was_up {
            tracing::info!(party = %party, peer = %peer_id, remote = %remote, "federation link up");
            self.metrics.set_links_up(party, true);
            self.table.set(
                party,
                LinkState::Up,
                Some(peer_id.to_string()),
                Some(remote),
            );
        }
    }
}
