//! The foca baseline: `foca::Foca` with `Config::new_lan(N)`, its runtime
//! (sends, timers, notifications) mapped onto the simulator, and foca's own
//! bincode codec so its bytes on the wire compare with shoal's.
//!
//! Mapping notes. foca identities carry a generation that a node bumps when
//! it renews itself after being declared down or after a restart without
//! state; the simulator reports foca incarnations as
//! `generation << 16 | incarnation` so that they only grow. foca does not
//! notify suspicions; a scheduled `ChangeSuspectToDown` timer is exactly the
//! moment a prober suspects, so that is reported as the suspicion. foca does
//! not expose its own incarnation; every outgoing header carries it, so the
//! host reads it from there.

use super::{NodeIndex, NodeSpec, SimNode, SimTransmit, ViewChange, ViewState};
use foca::{
    BincodeCodec, Codec, Config, Foca, NoCustomBroadcast, Notification, Runtime, State, Timer,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shoal_protocol::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::time::Duration;

/// A foca identity: the node index plus a generation bumped on renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FocaId {
    /// The node index.
    pub idx: u32,
    /// Bumped on every renewal.
    pub gen: u16,
}

impl foca::Identity for FocaId {
    type Addr = u32;

    fn renew(&self) -> Option<Self> {
        Some(FocaId {
            idx: self.idx,
            gen: self.gen.wrapping_add(1),
        })
    }

    fn addr(&self) -> u32 {
        self.idx
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.gen > adversary.gen
    }
}

/// The simulator's seeded ChaCha, offered to foca through rand 0.9's trait.
#[derive(Debug, Clone)]
pub struct FocaRng(ChaCha8Rng);

impl rand_core_09::RngCore for FocaRng {
    fn next_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut self.0)
    }
    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut self.0, dst)
    }
}

type Bincode = BincodeCodec<bincode::config::Configuration>;
type Machine = Foca<FocaId, Bincode, FocaRng, NoCustomBroadcast>;

fn composite(gen: u16, incarnation: u16) -> u64 {
    (u64::from(gen) << 16) | u64::from(incarnation)
}

#[derive(Default)]
struct Outputs {
    transmits: VecDeque<SimTransmit>,
    events: VecDeque<ViewChange>,
    /// Newest identity generation seen per node: foca keeps probing an old
    /// identity for a while after a rename, and news about a previous life
    /// of a node is not news about the node.
    newest_gen: BTreeMap<u32, u16>,
    timers: Vec<(Duration, Timer<FocaId>)>,
    renewed: Option<FocaId>,
}

impl Outputs {
    /// Records `id`'s generation; false if a newer one is already known.
    fn saw_generation(&mut self, id: FocaId) -> bool {
        let newest = self.newest_gen.entry(id.idx).or_insert(id.gen);
        if id.gen < *newest {
            return false;
        }
        *newest = id.gen;
        true
    }
}

impl Runtime<FocaId> for Outputs {
    fn notify(&mut self, notification: Notification<'_, FocaId>) {
        let (id, state) = match notification {
            Notification::MemberUp(id) => (*id, ViewState::Alive),
            Notification::MemberDown(id) => (*id, ViewState::Down),
            Notification::Rename(_, new) => {
                self.saw_generation(*new);
                return;
            }
            Notification::Rejoin(id) => {
                self.renewed = Some(*id);
                return;
            }
            _ => return,
        };
        if !self.saw_generation(id) {
            return;
        }
        let member = id.idx;
        self.events.push_back(ViewChange {
            member,
            state,
            incarnation: None,
        });
    }

    fn send_to(&mut self, to: FocaId, data: &[u8]) {
        self.transmits.push_back(SimTransmit {
            dst: to.idx,
            reliable: false,
            payload: data.to_vec(),
        });
    }

    fn submit_after(&mut self, event: Timer<FocaId>, after: Duration) {
        if let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &event
        {
            if self.saw_generation(*member_id) {
                self.events.push_back(ViewChange {
                    member: member_id.idx,
                    state: ViewState::Suspect,
                    incarnation: Some(composite(member_id.gen, *incarnation)),
                });
            }
        }
        self.timers.push((after, event));
    }
}

/// Upper bound on timers fired by one `handle_timeout`.
const MAX_TIMERS_PER_WAKEUP: usize = 10_000;

/// A foca node.
pub struct FocaHost {
    foca: Machine,
    codec: Bincode,
    out: Outputs,
    timers: BTreeMap<(u64, u64), Timer<FocaId>>,
    timer_seq: u64,
    own_incarnation: u64,
    seeds: Vec<NodeIndex>,
    /// While no member is known, the join is retried at this local ms (foca
    /// leaves retrying announcements to its host).
    rejoin_at_ms: Option<u64>,
}

/// Interval between two announcements while a foca node knows no member.
pub const JOIN_RETRY_MS: u64 = 1_000;

impl FocaHost {
    /// A fresh foca node; `spec.generation` becomes its identity generation.
    pub fn new(spec: NodeSpec) -> Self {
        Self::with_preset(spec, false)
    }

    /// A foca node with `Config::new_wan(N)` when `wan`, else `new_lan(N)`.
    pub fn with_preset(spec: NodeSpec, wan: bool) -> Self {
        let id = FocaId {
            idx: spec.index,
            gen: spec.generation as u16,
        };
        let nodes = NonZeroU32::new(spec.nodes.max(1)).expect("nonzero");
        let config = if wan {
            Config::new_wan(nodes)
        } else {
            Config::new_lan(nodes)
        };
        let rng = FocaRng(ChaCha8Rng::seed_from_u64(spec.seed));
        let codec = BincodeCodec(bincode::config::standard());
        FocaHost {
            foca: Foca::new(id, config, rng, codec),
            codec,
            out: Outputs::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            own_incarnation: composite(id.gen, 0),
            seeds: Vec::new(),
            rejoin_at_ms: None,
        }
    }

    fn announce(&mut self, now: Instant) {
        for &s in &self.seeds {
            let _ = self.foca.announce(FocaId { idx: s, gen: 0 }, &mut self.out);
        }
        self.rejoin_at_ms = Some(now.as_millis() + JOIN_RETRY_MS);
        self.absorb(now);
    }

    /// Moves what foca asked for into the host's queues.
    fn absorb(&mut self, now: Instant) {
        for (after, timer) in self.out.timers.drain(..) {
            let after_ms = u64::try_from(after.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
            let at = now.as_millis().saturating_add(after_ms);
            self.timer_seq += 1;
            self.timers.insert((at, self.timer_seq), timer);
        }
        if let Some(id) = self.out.renewed.take() {
            self.own_incarnation = self.own_incarnation.max(composite(id.gen, 0));
        }
    }
}

impl SimNode for FocaHost {
    fn handle_join(&mut self, now: Instant, seeds: &[NodeIndex]) {
        self.seeds = seeds.to_vec();
        self.announce(now);
    }

    fn handle_datagram(&mut self, now: Instant, _src: NodeIndex, _reliable: bool, payload: &[u8]) {
        // Malformed or stale input is foca's to refuse; the error changes nothing.
        let _ = self.foca.handle_data(payload, &mut self.out);
        self.absorb(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.rejoin_at_ms.is_some_and(|at| at <= now.as_millis()) {
            if self.foca.num_members() == 0 {
                self.announce(now);
            } else {
                self.rejoin_at_ms = None;
            }
        }
        for _ in 0..MAX_TIMERS_PER_WAKEUP {
            let Some(entry) = self.timers.first_entry() else {
                break;
            };
            if entry.key().0 > now.as_millis() {
                break;
            }
            let timer = entry.remove();
            let _ = self.foca.handle_timer(timer, &mut self.out);
            self.absorb(now);
        }
    }

    fn handle_leave(&mut self, now: Instant) {
        self.rejoin_at_ms = None;
        let _ = self.foca.leave_cluster(&mut self.out);
        self.absorb(now);
    }

    fn restart_with_state(&mut self, now: Instant, seeds: &[NodeIndex]) {
        // The same foca object resumes: its overdue timers fire at once.
        self.handle_join(now, seeds);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.keys().next().map(|&(at, _)| at);
        let at = match (timer, self.rejoin_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        at.map(Instant::from_millis)
    }

    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        let t = self.out.transmits.pop_front()?;
        if let Ok(header) = Codec::<FocaId>::decode_header(&mut self.codec, &t.payload[..]) {
            let inc = composite(header.src.gen, header.src_incarnation);
            self.own_incarnation = self.own_incarnation.max(inc);
        }
        Some(t)
    }

    fn poll_event(&mut self) -> Option<ViewChange> {
        self.out.events.pop_front()
    }

    fn incarnation(&self) -> u64 {
        self.own_incarnation
    }

    fn for_each_member(&self, f: &mut dyn FnMut(NodeIndex, ViewState, Option<u64>)) {
        for m in self.foca.iter_membership_state() {
            if self
                .out
                .newest_gen
                .get(&m.id().idx)
                .is_some_and(|&g| g > m.id().gen)
            {
                continue;
            }
            let state = match m.state() {
                State::Alive => ViewState::Alive,
                State::Suspect => ViewState::Suspect,
                State::Down => ViewState::Down,
            };
            // foca writes down records with whatever incarnation the
            // declarer had (often 0): down beats every incarnation there.
            let incarnation =
                (state != ViewState::Down).then(|| composite(m.id().gen, m.incarnation()));
            f(m.id().idx, state, incarnation);
        }
    }
}
