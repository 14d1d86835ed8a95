//! shoal's own SWIM machine (`shoal_protocol::membership::Membership`) as a
//! simulated node. Identities are `NodeId::from_u64(i)`; addresses are
//! labels `127.x.y.z:7000` derived from `i`, never bound to any socket.

use super::{NodeIndex, NodeSpec, SimNode, SimTransmit, ViewChange, ViewState};
use shoal_protocol::membership::{ChangeReason, Config, Event, Identity, MemberState, Membership};
use shoal_protocol::{Instant, NodeId, StoreId};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The port every label address uses.
pub const LABEL_PORT: u16 = 7000;

/// The label address of node `i`.
pub fn addr_of(i: NodeIndex) -> SocketAddr {
    let [_, a, b, c] = i.to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, a, b, c), LABEL_PORT))
}

/// The node a label address names.
pub fn index_of_addr(addr: SocketAddr) -> Option<NodeIndex> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == LABEL_PORT => {
            let [x, a, b, c] = v4.ip().octets();
            (x == 127).then(|| u32::from_be_bytes([0, a, b, c]))
        }
        _ => None,
    }
}

/// The node an id names.
pub fn index_of_id(id: &NodeId) -> Option<NodeIndex> {
    let mut be = [0u8; 8];
    be.copy_from_slice(&id.0[8..]);
    let n = u64::from_be_bytes(be);
    (id.0[..8] == [0u8; 8]).then_some(())?;
    u32::try_from(n).ok()
}

/// The identity of node `i`.
pub fn identity_of(i: NodeIndex) -> Identity {
    Identity {
        id: NodeId::from_u64(u64::from(i)),
        name: format!("n{i}"),
        addr: addr_of(i),
        store: StoreId::from_u64(u64::from(i)),
    }
}

fn view_state(s: MemberState) -> ViewState {
    match s {
        MemberState::Alive => ViewState::Alive,
        MemberState::Suspect => ViewState::Suspect,
        MemberState::Down => ViewState::Down,
        MemberState::Left => ViewState::Left,
    }
}

/// A shoal membership node.
pub struct ShoalHost {
    machine: Membership,
    config: Config,
    spec: NodeSpec,
    restarts: u64,
    /// Inputs the machine refused (undecodable or spoofed).
    pub rejected: u64,
}

impl ShoalHost {
    /// A fresh machine for `spec` with the LAN preset.
    pub fn new(spec: NodeSpec) -> Self {
        Self::with_config(spec, Config::lan())
    }

    /// A fresh machine for `spec` running `config`.
    pub fn with_config(spec: NodeSpec, config: Config) -> Self {
        ShoalHost {
            machine: Membership::new(
                identity_of(spec.index),
                config.clone(),
                spec.seed,
                spec.initial_incarnation,
                spec.now,
            ),
            config,
            spec,
            restarts: 0,
            rejected: 0,
        }
    }

    /// The wrapped machine.
    pub fn machine(&self) -> &Membership {
        &self.machine
    }
}

impl SimNode for ShoalHost {
    fn handle_join(&mut self, now: Instant, seeds: &[NodeIndex]) {
        let addrs: Vec<SocketAddr> = seeds.iter().map(|&s| addr_of(s)).collect();
        self.machine.handle_join(now, &addrs);
    }

    fn handle_datagram(&mut self, now: Instant, src: NodeIndex, _reliable: bool, payload: &[u8]) {
        let id = NodeId::from_u64(u64::from(src));
        if self
            .machine
            .handle_datagram(now, addr_of(src), id, payload)
            .is_err()
        {
            self.rejected += 1;
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.machine.handle_timeout(now);
    }

    fn handle_leave(&mut self, now: Instant) {
        self.machine.handle_leave(now);
    }

    fn restart_with_state(&mut self, now: Instant, seeds: &[NodeIndex]) {
        // What survives a crash is the persisted incarnation; the process
        // builds a new machine above it and joins again.
        self.restarts += 1;
        let seed = self.spec.seed ^ self.restarts.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.machine = Membership::new(
            identity_of(self.spec.index),
            self.config.clone(),
            seed,
            self.machine.incarnation() + 1,
            now,
        );
        self.handle_join(now, seeds);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        loop {
            let t = self.machine.poll_transmit()?;
            // A transmit to an address outside the simulation goes nowhere.
            if let Some(dst) = index_of_addr(t.dst) {
                return Some(SimTransmit {
                    dst,
                    reliable: t.reliable,
                    payload: t.payload,
                });
            }
        }
    }

    fn poll_event(&mut self) -> Option<ViewChange> {
        loop {
            let Event::MemberChanged {
                id,
                state,
                incarnation,
                reason,
                ..
            } = self.machine.poll_event()?
            else {
                continue;
            };
            let Some(member) = index_of_id(&id) else {
                continue;
            };
            let state = if reason == ChangeReason::Forgotten {
                ViewState::Unknown
            } else {
                view_state(state)
            };
            return Some(ViewChange {
                member,
                state,
                incarnation: Some(incarnation),
            });
        }
    }

    fn incarnation(&self) -> u64 {
        self.machine.incarnation()
    }

    fn for_each_member(&self, f: &mut dyn FnMut(NodeIndex, ViewState, Option<u64>)) {
        for m in self.machine.members_unordered() {
            if let Some(i) = index_of_id(&m.identity.id) {
                f(i, view_state(m.state), Some(m.incarnation));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_addresses_and_ids_round_trip() {
        for i in [0u32, 1, 255, 256, 999, 70_000] {
            assert_eq!(index_of_addr(addr_of(i)), Some(i));
            assert_eq!(index_of_id(&NodeId::from_u64(u64::from(i))), Some(i));
        }
        assert_eq!(index_of_addr("10.0.0.1:7000".parse().unwrap()), None);
    }
}
