//! Linearizability of CASPaxos registers in the task world: a bounded
//! history of job-register reads and writes issued at random nodes during
//! the safety phase, checked by stateright's independent
//! `LinearizabilityTester` (as `protocol/tests/paxos_linearizability.rs`).

use super::world::World;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocol::coordinator::RequestId;
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use std::collections::BTreeMap;

type Tester = LinearizabilityTester<u64, Register<Option<Vec<u8>>>>;

/// Registers checked (job keys far from task ids).
const KEYS: [u64; 3] = [0x5157_0001, 0x5157_0002, 0x5157_0003];
/// In-flight operations per register: keeps the search small.
const MAX_CONCURRENT: usize = 3;

struct Pending {
    key: usize,
    thread: u64,
    write: bool,
}

/// Issues operations and collects their results.
pub struct Checker {
    budget: usize,
    rng: ChaCha8Rng,
    testers: Vec<Tester>,
    issued: Vec<usize>,
    pending: BTreeMap<(usize, RequestId), Pending>,
    next_thread: u64,
    seen: usize,
    completed: usize,
    invalid: Option<String>,
}

impl Checker {
    /// `ops_per_key` operations per register (0: off).
    pub fn new(ops_per_key: usize, seed: u64) -> Checker {
        Checker {
            budget: ops_per_key,
            rng: ChaCha8Rng::seed_from_u64(seed),
            testers: KEYS.iter().map(|_| Tester::new(Register(None))).collect(),
            issued: vec![0; KEYS.len()],
            pending: BTreeMap::new(),
            next_thread: 0,
            seen: 0,
            completed: 0,
            invalid: None,
        }
    }

    /// One millisecond: maybe issue an operation, absorb completions.
    pub fn tick(&mut self, w: &mut World, issue: bool) {
        if self.budget == 0 {
            return;
        }
        // A crashed node's operations stay in flight forever: they may or
        // may not have taken effect.
        self.pending.retain(|(n, _), _| w.nodes[*n].up());
        if issue && self.rng.gen_bool(0.02) {
            let k = self.rng.gen_range(0..KEYS.len());
            let node = self.rng.gen_range(0..w.nodes.len());
            let in_flight = self.pending.values().filter(|p| p.key == k).count();
            if self.issued[k] < self.budget && in_flight < MAX_CONCURRENT && w.active(node) {
                let write = self.rng.gen_bool(0.5);
                let value = (w.now * 1000 + node as u64).to_le_bytes().to_vec();
                let v = value.clone();
                let key = KEYS[k];
                let req = w.with(node, |c, now| {
                    if write {
                        c.write_job(now, key, Some(v))
                    } else {
                        c.read_job(now, key)
                    }
                });
                if let Some(Ok(req)) = req {
                    self.next_thread += 1;
                    let op = if write {
                        RegisterOp::Write(Some(value))
                    } else {
                        RegisterOp::Read
                    };
                    if self.testers[k].on_invoke(self.next_thread, op).is_err() {
                        self.invalid = Some("invalid history (invoke)".into());
                    }
                    self.pending.insert(
                        (node, req),
                        Pending {
                            key: k,
                            thread: self.next_thread,
                            write,
                        },
                    );
                    self.issued[k] += 1;
                }
            }
        }
        for (node, req, result) in w.jobs_done[self.seen..].iter() {
            let Some(p) = self.pending.remove(&(*node, *req)) else {
                continue;
            };
            let Ok(value) = result else { continue }; // unknown outcome: stays in flight
            let ret = if p.write {
                RegisterRet::WriteOk
            } else {
                RegisterRet::ReadOk(value.clone())
            };
            if self.testers[p.key].on_return(p.thread, ret).is_err() {
                self.invalid = Some("invalid history (return)".into());
            }
            self.completed += 1;
        }
        self.seen = w.jobs_done.len();
    }

    /// Operations that completed.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// `"ok"`, or the first register history that is not linearizable.
    pub fn verdict(&self) -> String {
        if let Some(e) = &self.invalid {
            return e.clone();
        }
        for (k, t) in self.testers.iter().enumerate() {
            if t.serialized_history().is_none() {
                let mut s = format!("register {:#x}: {t:?}", KEYS[k]);
                s.truncate(4_000);
                return s;
            }
        }
        "ok".into()
    }
}
