//! CASPaxos registers are linearizable under loss, delay, partitions,
//! pauses and crash-restarts, checked on bounded histories by stateright's
//! independent linearizability tester.

mod tasks_harness;

use rand::Rng;
use shoal_protocol::coordinator::RequestId;
use shoal_protocol::shard::shard_of;
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use std::collections::BTreeMap;
use tasks_harness::{test_config, Sim};

type Value = Option<Vec<u8>>;
type Tester = LinearizabilityTester<u64, Register<Value>>;

/// Operations issued per register: keeps the check's search bounded.
const OPS_PER_KEY: usize = 30;
const NODES: usize = 5;
const MAX_CONCURRENT: usize = 3;

struct Pending {
    key: u64,
    thread: u64,
    write: bool,
    value: u64,
    invoked: u64,
}

fn fault_scale() -> f64 {
    std::env::var("FAULTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn history(seed: u64) -> (Vec<Tester>, usize) {
    let mut cfg = test_config();
    cfg.shards = 4;
    let mut sim = Sim::new(NODES, cfg, seed, 0.01);
    sim.net.loss = 0.05 * fault_scale().min(1.0);
    sim.net.delay_max = 30;
    sim.run_for(100);
    // Three registers on distinct shards where possible.
    let keys: Vec<u64> = (0..3u64)
        .map(|n| {
            (0..10_000u64)
                .find(|k| shard_of(*k, 4).0 as u64 == n)
                .expect("key")
        })
        .collect();
    let mut testers: Vec<Tester> = keys.iter().map(|_| Tester::new(Register(None))).collect();
    let mut issued = vec![0usize; keys.len()];
    let mut pending: BTreeMap<(usize, RequestId), Pending> = BTreeMap::new();
    let mut next_thread = 0u64;
    let mut seen = 0usize;
    let mut completed = 0usize;
    let mut down: Option<(usize, u64)> = None;
    for round in 0..6_000u64 {
        // Issue.
        // Issue, keeping at most MAX_CONCURRENT operations of one register
        // in flight so that the checker's search stays small.
        if sim.rng.gen_bool(0.3) {
            let k = sim.rng.gen_range(0..keys.len());
            let node = sim.rng.gen_range(0..NODES);
            let in_flight = pending.values().filter(|p| p.key == k as u64).count();
            let idle = !sim.nodes[node].up() || sim.nodes[node].paused_until > sim.now;
            if issued[k] < OPS_PER_KEY && in_flight < MAX_CONCURRENT && !idle {
                let write = sim.rng.gen_bool(0.5);
                let value = (round * 100 + node as u64).to_le_bytes().to_vec();
                let value_copy = value.clone();
                let key = keys[k];
                let v = value.clone();
                let req = sim.with(node, |c, now| {
                    if write {
                        c.write_job(now, key, Some(v))
                    } else {
                        c.read_job(now, key)
                    }
                });
                if let Some(Ok(req)) = req {
                    next_thread += 1;
                    let op = if write {
                        RegisterOp::Write(Some(value))
                    } else {
                        RegisterOp::Read
                    };
                    testers[k]
                        .on_invoke(next_thread, op)
                        .expect("valid history");
                    let value = u64::from_le_bytes(value_copy.try_into().expect("8 bytes"));
                    pending.insert(
                        (node, req),
                        Pending {
                            key: k as u64,
                            thread: next_thread,
                            write,
                            value,
                            invoked: sim.now,
                        },
                    );
                    issued[k] += 1;
                }
            }
        }
        // Faults.
        let r: f64 = sim.rng.gen::<f64>() / fault_scale();
        let kind = std::env::var("KIND").unwrap_or_default();
        let allow = |k: &str| kind.is_empty() || kind == k;
        if r < 0.01 && down.is_none() && allow("crash") {
            let i = sim.rng.gen_range(0..NODES);
            sim.crash(i);
            // Its in-flight operations stay in flight forever: they may or
            // may not have taken effect.
            pending.retain(|(n, _), _| *n != i);
            down = Some((i, sim.now + sim.rng.gen_range(200..2_000)));
        } else if r < 0.02 && allow("pause") {
            let i = sim.rng.gen_range(0..NODES);
            let ms = sim.rng.gen_range(50..1_500);
            sim.pause(i, ms);
        } else if r < 0.03 && allow("partition") {
            let a = sim.rng.gen_range(0..NODES);
            let others: Vec<usize> = (0..NODES).filter(|b| *b != a).collect();
            sim.partition(&[a], &others);
        } else if r < 0.06 {
            sim.heal();
        }
        if let Some((i, at)) = down {
            if sim.now >= at {
                sim.restart(i, true);
                down = None;
            }
        }
        sim.run_for(10);
        // Complete.
        for (_, node, req, result) in sim.jobs_done[seen..].iter() {
            let Some(p) = pending.remove(&(*node, *req)) else {
                continue;
            };
            let Ok(value) = result else { continue }; // unknown outcome: stays in flight
            let ret = if p.write {
                RegisterRet::WriteOk
            } else {
                RegisterRet::ReadOk(value.clone())
            };
            if std::env::var("TRACE").is_ok() {
                let shown = |v: &Option<Vec<u8>>| {
                    v.as_ref()
                        .map(|b| u64::from_le_bytes(b.clone().try_into().unwrap_or([0; 8])))
                };
                let v = if p.write { Some(p.value) } else { shown(value) };
                eprintln!(
                    "key {} n{node} {} {:?} invoked {} returned {}",
                    p.key,
                    if p.write { "W" } else { "R" },
                    v,
                    p.invoked,
                    sim.now
                );
            }
            testers[p.key as usize]
                .on_return(p.thread, ret)
                .expect("valid history");
            completed += 1;
        }
        seen = sim.jobs_done.len();
        if issued.iter().all(|n| *n >= OPS_PER_KEY) && pending.is_empty() {
            break;
        }
    }
    (testers, completed)
}

#[test]
fn registers_are_linearizable_under_faults() {
    let mut completed = 0;
    for seed in 1..=8 {
        let (testers, done) = history(seed);
        for (k, t) in testers.iter().enumerate() {
            assert!(
                t.serialized_history().is_some(),
                "seed {seed} register {k}: history is not linearizable: {t:?}"
            );
        }
        completed += done;
    }
    assert!(completed > 100, "only {completed} operations completed");
}

#[test]
fn the_checker_rejects_a_stale_read() {
    // Write 1 completes, then a later read returns the initial value.
    let mut t = Tester::new(Register(None));
    t.on_invoke(1, RegisterOp::Write(Some(vec![1])))
        .expect("valid");
    t.on_return(1, RegisterRet::WriteOk).expect("valid");
    t.on_invoke(2, RegisterOp::Read).expect("valid");
    t.on_return(2, RegisterRet::ReadOk(None)).expect("valid");
    assert!(t.serialized_history().is_none());
}
