//! Hosts: one virtual node's protocol machine behind a common interface, so
//! the same network, faults and checkers drive shoal's machine and foca.

pub mod foca;
pub mod shoal;

use crate::scenario::MembershipPreset;
use shoal_protocol::Instant;

/// A node's index in the simulation, `0..nodes`.
pub type NodeIndex = u32;

/// A member's state in one observer's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ViewState {
    /// Not known (never heard of, or forgotten).
    Unknown = 0,
    /// Alive.
    Alive = 1,
    /// Suspected: still counted as probably alive.
    Suspect = 2,
    /// Confirmed down.
    Down = 3,
    /// Left gracefully.
    Left = 4,
}

impl ViewState {
    /// "Probably alive": what routing would use.
    pub fn is_active(self) -> bool {
        matches!(self, ViewState::Alive | ViewState::Suspect)
    }

    /// Decodes the matrix byte.
    pub fn from_u8(b: u8) -> ViewState {
        match b {
            1 => ViewState::Alive,
            2 => ViewState::Suspect,
            3 => ViewState::Down,
            4 => ViewState::Left,
            _ => ViewState::Unknown,
        }
    }
}

/// A change in a node's view of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewChange {
    /// The member the view is about.
    pub member: NodeIndex,
    /// Its new state.
    pub state: ViewState,
    /// Its incarnation in this view, when the machine reports it with the
    /// change (foca's notifications do not; its views are checked by snapshot).
    pub incarnation: Option<u64>,
}

/// A payload for the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTransmit {
    /// Destination node.
    pub dst: NodeIndex,
    /// Stream (`true`) or datagram.
    pub reliable: bool,
    /// The bytes, exactly as the machine encoded them.
    pub payload: Vec<u8>,
}

/// What a host factory needs to build a node's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node.
    pub index: NodeIndex,
    /// Cluster size the scenario plans for (config presets scale with it).
    pub nodes: u32,
    /// Seed of the machine's own RNG.
    pub seed: u64,
    /// Incarnation the machine starts at (a restart that kept its state
    /// passes its last incarnation plus one).
    pub initial_incarnation: u64,
    /// How many times this node was restarted without state (foca bumps its
    /// identity with it).
    pub generation: u32,
    /// The node's local time at creation.
    pub now: Instant,
}

/// One virtual node's protocol machine, driven by the simulator.
///
/// The call order follows the protocol crate: feed one input, then drain
/// transmits and events, then read the timer.
pub trait SimNode {
    /// Starts joining through the given seed nodes.
    fn handle_join(&mut self, now: Instant, seeds: &[NodeIndex]);
    /// A payload from `src` arrived.
    fn handle_datagram(&mut self, now: Instant, src: NodeIndex, reliable: bool, payload: &[u8]);
    /// The timer fired (or a spurious early wake-up: must change nothing).
    fn handle_timeout(&mut self, now: Instant);
    /// Announces a graceful leave.
    fn handle_leave(&mut self, now: Instant);
    /// The node restarts after a crash keeping its persistent state.
    fn restart_with_state(&mut self, now: Instant, seeds: &[NodeIndex]);
    /// When `handle_timeout` is due, in local time.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Next payload to send.
    fn poll_transmit(&mut self) -> Option<SimTransmit>;
    /// Next view change.
    fn poll_event(&mut self) -> Option<ViewChange>;
    /// This node's own current incarnation.
    fn incarnation(&self) -> u64;
    /// Calls `f(member, state, incarnation)` for every member in the view
    /// (`None` where the machine's incarnation carries no meaning, such as
    /// foca's down records).
    fn for_each_member(&self, f: &mut dyn FnMut(NodeIndex, ViewState, Option<u64>));
}

/// Builds a node's machine; restarts without state call it again with a
/// bumped generation.
pub type HostFactory = Box<dyn Fn(NodeSpec) -> Box<dyn SimNode> + Send + Sync>;

/// The implementations the CLI can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Impl {
    /// shoal's own SWIM machine (`shoal_protocol::membership`).
    Shoal,
    /// The foca crate, the baseline.
    Foca,
}

impl Impl {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Shoal => "shoal",
            Impl::Foca => "foca",
        }
    }

    /// The factory that builds its nodes with the LAN preset.
    pub fn factory(self) -> HostFactory {
        self.factory_with(MembershipPreset::Lan)
    }

    /// The factory that builds its nodes with `preset`'s timing.
    pub fn factory_with(self, preset: MembershipPreset) -> HostFactory {
        match self {
            Impl::Shoal => {
                let config = preset.config();
                Box::new(move |spec| {
                    Box::new(shoal::ShoalHost::with_config(spec, config.clone()))
                        as Box<dyn SimNode>
                })
            }
            Impl::Foca => {
                let wan = preset == MembershipPreset::Wan;
                Box::new(move |spec| {
                    Box::new(foca::FocaHost::with_preset(spec, wan)) as Box<dyn SimNode>
                })
            }
        }
    }
}
