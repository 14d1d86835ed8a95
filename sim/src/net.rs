//! The network model: per-message latency, loss, duplication and reordering
//! drawn from the network seed, and the link state (partitions and clogs)
//! that decides whether a message between two nodes can pass at all.

use crate::scenario::{Latency, NetworkModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What the network does with one send: up to two deliveries (a duplicate),
/// each after its own delay in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// Delay of the first copy, `None` if lost.
    pub first_us: Option<u64>,
    /// Delay of a duplicate copy, if any.
    pub duplicate_us: Option<u64>,
}

/// Draws each message's fate from the network seed.
#[derive(Debug, Clone)]
pub struct NetworkSampler {
    model: NetworkModel,
    rng: ChaCha8Rng,
}

impl NetworkSampler {
    /// A sampler for `model` seeded with `seed`.
    pub fn new(model: NetworkModel, seed: u64) -> Self {
        NetworkSampler {
            model,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The fate of one message. Streams (`reliable`) are never lost or
    /// duplicated here; only partitions and clogs stop them.
    pub fn fate(&mut self, reliable: bool) -> Fate {
        if !reliable && self.model.loss > 0.0 && self.rng.gen_bool(self.model.loss) {
            return Fate {
                first_us: None,
                duplicate_us: None,
            };
        }
        let first = self.delay_us();
        let duplicate =
            if !reliable && self.model.duplicate > 0.0 && self.rng.gen_bool(self.model.duplicate) {
                Some(self.delay_us())
            } else {
                None
            };
        Fate {
            first_us: Some(first),
            duplicate_us: duplicate,
        }
    }

    fn delay_us(&mut self) -> u64 {
        let base_ms = match self.model.latency {
            Latency::Uniform { min_ms, max_ms } => {
                if max_ms > min_ms {
                    self.rng.gen_range(min_ms..max_ms)
                } else {
                    min_ms
                }
            }
            Latency::Lognormal {
                median_ms,
                sigma,
                max_ms,
            } => (median_ms.ln() + sigma * self.standard_normal())
                .exp()
                .min(max_ms),
        };
        let extra_ms = if self.model.reorder > 0.0
            && self.model.reorder_extra_ms > 0.0
            && self.rng.gen_bool(self.model.reorder)
        {
            self.rng.gen_range(0.0..self.model.reorder_extra_ms)
        } else {
            0.0
        };
        // At least one microsecond: a message never arrives at its send instant.
        ((base_ms + extra_ms) * 1000.0).round().max(1.0) as u64
    }

    /// Box-Muller; one normal per call keeps the draw count per message fixed.
    fn standard_normal(&mut self) -> f64 {
        let u1: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = self.rng.gen_range(0.0..1.0);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A partition's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKind {
    /// Nodes inside and outside the set cannot talk either way.
    Symmetric,
    /// Messages from inside the set to outside are dropped; the other
    /// direction works.
    Asymmetric,
}

#[derive(Debug, Clone)]
struct Partition {
    id: u64,
    kind: PartitionKind,
    inside: Vec<bool>,
}

/// Which links are up: active partitions and clogged nodes.
#[derive(Debug, Clone)]
pub struct Links {
    nodes: usize,
    partitions: Vec<Partition>,
    clogs: Vec<u32>,
    /// Nodes with a clog count above zero: keeps `all_up` O(1), since it
    /// runs on every send and delivery (scanning `clogs` there was ~14% of a
    /// 1000-node run).
    clogged: usize,
}

impl Links {
    /// All links up.
    pub fn new(nodes: usize) -> Self {
        Links {
            nodes,
            partitions: Vec::new(),
            clogs: vec![0; nodes],
            clogged: 0,
        }
    }

    /// Starts partition `id` with `inside` as the special side.
    pub fn partition(&mut self, id: u64, kind: PartitionKind, inside: &[u32]) {
        let mut set = vec![false; self.nodes];
        for &n in inside {
            if let Some(slot) = set.get_mut(n as usize) {
                *slot = true;
            }
        }
        self.partitions.push(Partition {
            id,
            kind,
            inside: set,
        });
    }

    /// Heals partition `id` (no-op if already healed).
    pub fn heal_partition(&mut self, id: u64) {
        self.partitions.retain(|p| p.id != id);
    }

    /// Clogs every link of `node` (nested clogs count).
    pub fn clog(&mut self, node: u32) {
        if let Some(c) = self.clogs.get_mut(node as usize) {
            if *c == 0 {
                self.clogged += 1;
            }
            *c += 1;
        }
    }

    /// Undoes one clog of `node`.
    pub fn unclog(&mut self, node: u32) {
        if let Some(c) = self.clogs.get_mut(node as usize) {
            if *c == 1 {
                self.clogged -= 1;
            }
            *c = c.saturating_sub(1);
        }
    }

    /// Heals everything.
    pub fn heal_all(&mut self) {
        self.partitions.clear();
        self.clogs.iter_mut().for_each(|c| *c = 0);
        self.clogged = 0;
    }

    /// Whether anything is broken at all (fast path).
    pub fn all_up(&self) -> bool {
        self.partitions.is_empty() && self.clogged == 0
    }

    /// Whether a message from `src` to `dst` is dropped.
    pub fn blocked(&self, src: u32, dst: u32) -> bool {
        let (s, d) = (src as usize, dst as usize);
        if self.clogs[s] > 0 || self.clogs[d] > 0 {
            return true;
        }
        self.partitions.iter().any(|p| match p.kind {
            PartitionKind::Symmetric => p.inside[s] != p.inside[d],
            PartitionKind::Asymmetric => p.inside[s] && !p.inside[d],
        })
    }

    /// For every node, whether it can exchange messages both ways with a
    /// strict majority of all nodes (itself included).
    pub fn reaches_majority(&self) -> Vec<bool> {
        let n = self.nodes;
        if self.partitions.is_empty() {
            return self.clogs.iter().map(|&c| c == 0).collect();
        }
        (0..n as u32)
            .map(|x| {
                let reach = (0..n as u32)
                    .filter(|&y| x == y || (!self.blocked(x, y) && !self.blocked(y, x)))
                    .count();
                reach * 2 > n
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_never_lost_by_the_loss_model() {
        let model = NetworkModel {
            loss: 1.0,
            ..NetworkModel::default()
        };
        let mut s = NetworkSampler::new(model, 7);
        for _ in 0..100 {
            assert!(s.fate(true).first_us.is_some());
            assert!(s.fate(false).first_us.is_none());
        }
    }

    #[test]
    fn all_up_follows_nested_clogs() {
        let mut links = Links::new(3);
        assert!(links.all_up());
        links.clog(1);
        links.clog(1);
        links.clog(2);
        links.unclog(1);
        links.unclog(2);
        assert!(!links.all_up());
        links.unclog(1);
        links.unclog(1);
        assert!(links.all_up());
        links.clog(0);
        links.heal_all();
        assert!(links.all_up());
    }

    #[test]
    fn lognormal_respects_its_cut_off() {
        let model = NetworkModel {
            latency: Latency::Lognormal {
                median_ms: 1.0,
                sigma: 2.0,
                max_ms: 5.0,
            },
            ..NetworkModel::default()
        };
        let mut s = NetworkSampler::new(model, 1);
        let max = (0..1000)
            .map(|_| s.fate(false).first_us.unwrap())
            .max()
            .unwrap();
        assert!(max <= 5_000 && max > 1_000, "{max}");
    }
}
