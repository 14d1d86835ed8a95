//! Behaviour of leases, claims, fencing, reconfiguration and the task life
//! cycle, on the deterministic in-memory cluster of `tasks_harness`.

mod tasks_harness;

use shoal_protocol::coordinator::{Effect, KillReason};
use shoal_protocol::paxos::{RegisterKey, StoreKey, StoreValue, Value};
use shoal_protocol::shard::shard_of;
use shoal_protocol::tasks::{TaskId, TaskSpec, TaskState};
use shoal_protocol::wire::paxos::PaxosMessage;
use tasks_harness::{test_config, Sim};

fn acked_one(sim: &mut Sim, from: usize, spec: TaskSpec) -> TaskId {
    let before: Vec<TaskId> = sim.acked.keys().copied().collect();
    sim.submit(from, spec).expect("submit accepted");
    assert!(
        sim.run_until(2_000, |s| s.acked.len() > before.len()),
        "submit not acknowledged"
    );
    *sim.acked
        .keys()
        .find(|t| !before.contains(t))
        .expect("new task")
}

fn wait_running(sim: &mut Sim, task: TaskId, max_ms: u64) -> (usize, u64) {
    assert!(
        sim.run_until(max_ms, |s| s.running_anywhere(task).is_some()),
        "task never started"
    );
    sim.running_anywhere(task).expect("running")
}

#[test]
fn submit_is_acked_only_after_majority_persisted() {
    let mut sim = Sim::new(3, test_config(), 1, 0.0);
    sim.run_for(50);
    sim.log_effects = true;
    let mut checked = 0;
    for _ in 0..5 {
        let before = sim.acked.len();
        sim.submit(0, TaskSpec::mock(100, 0)).expect("submit");
        // Step one millisecond at a time: at the instant of the ack, a
        // majority must have the record on disk.
        for _ in 0..2_000 {
            sim.step();
            if sim.acked.len() > before {
                break;
            }
        }
        let task = *sim.acked.keys().last().expect("acked");
        let task = sim
            .acked
            .keys()
            .copied()
            .find(|t| sim.acked[t] == sim.now)
            .unwrap_or(task);
        let shard = shard_of(task.0, sim.cfg.shards);
        let key = StoreKey::Register(shard, RegisterKey::Task(task));
        let durable = sim
            .nodes
            .iter()
            .filter(|n| {
                matches!(n.store.get(&key), Some(StoreValue::Register(slot))
                    if matches!(&slot.value, Some(Value::Task(r)) if r.id == task))
            })
            .count();
        assert!(durable >= 2, "acked with {durable} durable copies");
        checked += 1;
    }
    assert_eq!(checked, 5);
    // With two disks stalled, no majority can persist: nothing is acked.
    for i in 1..3 {
        sim.nodes[i].disk_stalled = true;
    }
    let before = sim.acked.len();
    sim.submit(0, TaskSpec::mock(100, 0)).expect("submit");
    sim.run_for(3_000);
    assert_eq!(sim.acked.len(), before, "acked without a durable majority");
}

#[test]
fn two_proposers_one_lease() {
    // Only nodes 3 and 4 carry the label, so no offer reaches anyone; then
    // both are offered the task at the same instant.
    let mut sim = Sim::new_custom(5, test_config(), 2, 0.0, |i, c| {
        if i >= 3 {
            c.labels.insert("pool".into(), "x".into());
        }
        c.pull_interval_ms = 60_000; // no late binding in this test
        c.sweep_interval_ms = 60_000;
    });
    sim.run_for(50);
    let mut spec = TaskSpec::mock(5_000, 0);
    spec.labels.insert("pool".into(), "x".into());
    let task = acked_one(&mut sim, 0, spec.clone());
    let shard = shard_of(task.0, sim.cfg.shards);
    let offer = PaxosMessage::Offer {
        shard,
        task,
        attempt: 0,
        spec: Box::new(spec),
    };
    sim.inject(0, 3, &offer);
    sim.inject(0, 4, &offer);
    sim.run_for(3_000);
    let starts: Vec<_> = sim.starts.iter().filter(|s| s.2 == task).collect();
    assert_eq!(starts.len(), 1, "starts: {starts:?}");
    assert_eq!(sim.lease_overlaps, 0, "{:?}", sim.violations);
    assert!(sim.coord(3).stats().claims_started >= 1 && sim.coord(4).stats().claims_started >= 1);
    let winner = starts[0].1;
    let loser = if winner == 3 { 4 } else { 3 };
    let now = sim.local_now(loser);
    assert!(sim
        .coord(loser)
        .held_leases(now)
        .iter()
        .all(|l| l.task != task));
}

#[test]
fn live_lease_is_never_overwritten_by_higher_ballot() {
    let mut sim = Sim::new(3, test_config(), 3, 0.0);
    sim.run_for(50);
    let task = acked_one(&mut sim, 0, TaskSpec::mock(20_000, 0));
    let (holder, attempt) = wait_running(&mut sim, task, 3_000);
    let other = (holder + 1) % 3;
    let shard = shard_of(task.0, sim.cfg.shards);
    let config = sim.coord(other).directory()[&shard].clone();
    let ask = PaxosMessage::LeaseRequest {
        hdr: shoal_protocol::wire::paxos::Header {
            shard,
            epoch: config.epoch,
            req: 999_999,
        },
        lease_ms: 1_500,
        asks: vec![shoal_protocol::wire::paxos::LeaseAsk {
            shard,
            epoch: config.epoch,
            task,
            attempt: attempt + 1,
            ballot: shoal_protocol::paxos::Ballot {
                counter: u64::MAX,
                node: sim.nodes[other].id,
                incarnation: 1,
            },
            renewal: false,
        }],
    };
    for m in config.members.clone() {
        let idx = sim.nodes.iter().position(|n| n.id == m).expect("member");
        sim.inject(other, idx, &ask);
    }
    sim.run_for(5_000);
    assert_eq!(sim.running_anywhere(task), Some((holder, attempt)));
    for n in &sim.nodes {
        let c = n.coord.as_ref().expect("up");
        for (_, t, owner, _) in c.acceptor_leases(n.local(sim.now)) {
            if t == task {
                assert_eq!(owner, sim.nodes[holder].id, "lease replaced");
            }
        }
    }
    assert_eq!(sim.lease_overlaps, 0);
}

#[test]
fn restarted_acceptor_grants_nothing_for_one_lease_length() {
    let cfg = test_config();
    let acc_ms = cfg.acceptor_lease_ms();
    let mut sim = Sim::new(3, cfg, 4, 0.0);
    sim.run_for(50);
    // Everyone restarts with its disk: every acceptor forgot its leases.
    for i in 0..3 {
        sim.crash(i);
    }
    for i in 0..3 {
        sim.restart(i, true);
    }
    let restarted_at = sim.now;
    let task = acked_one(&mut sim, 0, TaskSpec::mock(100, 0));
    sim.run_until(5_000, |s| s.starts.iter().any(|x| x.2 == task));
    let start = sim
        .starts
        .iter()
        .find(|x| x.2 == task)
        .expect("started eventually")
        .0;
    assert!(
        start >= restarted_at + acc_ms,
        "a lease was granted {} ms after restart, before {acc_ms} ms",
        start - restarted_at
    );
    assert!(
        start <= restarted_at + acc_ms + 1_500,
        "started late: {}",
        start - restarted_at
    );
}

#[test]
fn holder_self_fences_before_its_lease_expires() {
    let mut sim = Sim::new(3, test_config(), 5, 0.0);
    sim.run_for(50);
    sim.log_effects = true;
    let task = acked_one(&mut sim, 0, TaskSpec::mock(30_000, 0));
    let (holder, attempt) = wait_running(&mut sim, task, 3_000);
    let others: Vec<usize> = (0..3).filter(|i| *i != holder).collect();
    sim.partition(&[holder], &others);
    let mut fenced_at = None;
    for _ in 0..3_000 {
        let local = sim.local_now(holder);
        let valid = sim
            .coord(holder)
            .held_leases(local)
            .iter()
            .find(|l| l.task == task)
            .map(|l| l.valid_until);
        sim.step();
        if sim
            .kills
            .iter()
            .any(|k| k.2 == task && k.4 == KillReason::Fenced)
        {
            fenced_at = Some(local);
            let valid = valid.expect("held until the kill");
            assert!(
                local < valid,
                "killed at {local:?}, lease valid until {valid:?}"
            );
            break;
        }
    }
    assert!(fenced_at.is_some(), "holder never fenced");
    assert!(sim.running_anywhere(task).is_none_or(|(n, _)| n != holder));
    // The others take attempt + 1, never while the holder believes it holds.
    assert!(sim.run_until(5_000, |s| s
        .starts
        .iter()
        .any(|x| x.2 == task && x.3 == attempt + 1)));
    assert_eq!(sim.lease_overlaps, 0, "{:?}", sim.violations);
    assert_eq!(sim.double_runs, 0);
}

#[test]
fn stale_attempt_cannot_commit() {
    let mut sim = Sim::new(3, test_config(), 6, 0.0);
    sim.run_for(50);
    sim.log_effects = true;
    let task = acked_one(&mut sim, 0, TaskSpec::mock(4_000, 0));
    let (holder, attempt) = wait_running(&mut sim, task, 3_000);
    // The holder stalls for longer than its lease: the watchdog kills its
    // process, the others take attempt + 1; when it wakes, its result of
    // attempt n must be refused.
    sim.pause(holder, 3_500);
    assert!(sim.run_until(10_000, |s| s
        .record(task)
        .is_some_and(|r| r.state.is_final())));
    sim.run_for(2_000);
    let r = sim.record(task).expect("record");
    assert_eq!(r.state, TaskState::Succeeded);
    assert!(r.attempt > attempt);
    assert_eq!(r.final_attempt, Some(r.attempt));
    assert!(!sim
        .commits
        .iter()
        .any(|c| c.task == task && c.attempt == attempt && c.state.is_final()));
    let refused = sim.effects.iter().any(|(_, n, e)| {
        *n == holder && matches!(e, Effect::AttemptRefused { task: t, attempt: a, .. } if *t == task && *a == attempt)
    });
    assert!(refused, "the stale attempt's result was not refused");
    assert_eq!(sim.stale_commits, 0);
    assert_eq!(sim.double_runs, 0, "{:?}", sim.violations);
}

#[test]
fn failover_after_holder_crash_takes_attempt_plus_one() {
    let mut sim = Sim::new(5, test_config(), 7, 0.01);
    sim.run_for(50);
    let task = acked_one(&mut sim, 0, TaskSpec::mock(20_000, 0));
    let (holder, attempt) = wait_running(&mut sim, task, 3_000);
    sim.run_for(700);
    let crash_at = sim.now;
    sim.crash(holder);
    assert!(sim.run_until(5_000, |s| s.running_anywhere(task).is_some()));
    let (node, next) = sim.running_anywhere(task).expect("restarted");
    assert_ne!(node, holder);
    assert_eq!(next, attempt + 1);
    let failover = sim.now - crash_at;
    assert!(failover <= 2_000, "failover took {failover} ms");
    assert_eq!(sim.lease_overlaps, 0);
}

#[test]
fn reconfiguration_survives_proposer_crash_midway() {
    let mut sim = Sim::new(6, test_config(), 8, 0.0);
    sim.run_for(50);
    let task = acked_one(&mut sim, 0, TaskSpec::mock(50, 0));
    assert!(sim.run_until(3_000, |s| s
        .record(task)
        .is_some_and(|r| r.state.is_final())));
    let shard = shard_of(task.0, sim.cfg.shards);
    let old = sim.coord(0).directory()[&shard].clone();
    // A node outside the group drives the move, and crashes once the old
    // group is partly sealed.
    let driver = (0..6)
        .find(|i| !old.contains(&sim.nodes[*i].id))
        .expect("outsider");
    let mut new_members: Vec<_> = old.members[..2].to_vec();
    new_members.push(sim.nodes[driver].id);
    let members = new_members.clone();
    sim.with(driver, |c, now| c.reconfigure(now, shard, members))
        .expect("up")
        .expect("accepted");
    let sealed = |s: &Sim| {
        s.nodes.iter().any(|n| {
            n.coord
                .as_ref()
                .and_then(|c| c.acceptor().shard(shard))
                .is_some_and(|a| {
                    matches!(a.meta.status, shoal_protocol::paxos::GroupStatus::Sealed(_))
                })
        })
    };
    assert!(sim.run_until(2_000, sealed), "never sealed");
    sim.crash(driver);
    // Traffic to the shard meets the sealed group and finishes the move.
    let job = (0..10_000u64)
        .find(|k| shard_of(*k, sim.cfg.shards) == shard)
        .expect("key");
    sim.log_effects = true;
    let writer = (0..6).find(|i| *i != driver).expect("writer");
    let done = |s: &Sim| {
        s.effects.iter().any(
            |(_, _, e)| matches!(e, Effect::JobDone { result: Ok(Some(v)), .. } if v == &vec![7]),
        )
    };
    // The driver is a member of the new group but down: a majority of it
    // must still be reachable, or a second reconfiguration moves it on.
    // Writes that fail while the move is half done are retried.
    let mut served = false;
    for _ in 0..15 {
        sim.with(writer, |c, now| c.write_job(now, job, Some(vec![7])))
            .expect("up")
            .expect("ok");
        if sim.run_until(1_000, done) {
            served = true;
            break;
        }
    }
    assert!(served, "the shard never served again");
    sim.restart(driver, true);
    sim.run_for(3_000);
    let newest = sim.coord(writer).directory()[&shard].clone();
    assert!(newest.epoch > old.epoch, "still at epoch {}", newest.epoch);
    let r = sim.record(task).expect("record survived the move");
    assert_eq!(r.state, TaskState::Succeeded);
}

#[test]
fn sealed_group_refuses_and_points_to_successor() {
    let mut sim = Sim::new(4, test_config(), 9, 0.0);
    sim.run_for(50);
    let shard = shoal_protocol::shard::ShardId(0);
    let old = sim.coord(0).directory()[&shard].clone();
    let member = sim
        .nodes
        .iter()
        .position(|n| n.id == old.members[0])
        .expect("member");
    let successor = shoal_protocol::shard::ShardConfig {
        shard,
        epoch: old.epoch + 1,
        members: old.members.clone(),
        previous: old.members.clone(),
    };
    let hdr = shoal_protocol::wire::paxos::Header {
        shard,
        epoch: old.epoch,
        req: 1,
    };
    let outsider = (0..4).find(|i| *i != member).expect("other");
    sim.inject(
        outsider,
        member,
        &PaxosMessage::Seal {
            hdr,
            successor: successor.clone(),
        },
    );
    sim.run_for(20);
    let acc = sim.coord(member).acceptor().shard(shard).expect("state");
    assert_eq!(
        acc.meta.status,
        shoal_protocol::paxos::GroupStatus::Sealed(successor.clone())
    );
    // Any later operation on the old epoch is refused with the successor.
    let mut acceptor = sim.coord(member).acceptor().clone();
    let params = shoal_protocol::paxos::acceptor::AcceptorParams {
        acceptor_lease_ms: 1_600,
        rho: 0.01,
        pull_pending_after_ms: 100,
        pull_orphan_after_ms: 600,
        orphan_hand_out_hold_ms: 200,
        bugs: shoal_protocol::Bugs::none(),
    };
    let prepare = PaxosMessage::Prepare {
        hdr,
        key: RegisterKey::Job(1),
        ballot: shoal_protocol::paxos::Ballot {
            counter: 1_000,
            node: sim.nodes[outsider].id,
            incarnation: 1,
        },
    };
    let out = acceptor.handle(
        sim.local_now(member),
        sim.nodes[outsider].id,
        &prepare,
        &params,
    );
    assert_eq!(
        out.reply,
        Some(PaxosMessage::Refused {
            hdr,
            reason: shoal_protocol::wire::paxos::GroupRefusal::Sealed(successor.clone())
        })
    );
    assert!(out.writes.is_empty());
}

#[test]
fn cancel_from_running() {
    let mut sim = Sim::new(3, test_config(), 10, 0.0);
    sim.run_for(50);
    sim.log_effects = true;
    let task = acked_one(&mut sim, 0, TaskSpec::mock(30_000, 0));
    let (holder, attempt) = wait_running(&mut sim, task, 3_000);
    let canceller = (holder + 1) % 3;
    sim.with(canceller, |c, now| c.cancel(now, task))
        .expect("up")
        .expect("ok");
    assert!(sim.run_until(2_000, |s| s.running_anywhere(task).is_none()));
    assert!(sim
        .kills
        .iter()
        .any(|k| k.1 == holder && k.2 == task && k.3 == attempt && k.4 == KillReason::Cancelled));
    assert!(sim.effects.iter().any(|(_, n, e)| *n == canceller
        && matches!(e, Effect::CancelDone { task: t, result: Ok(()), .. } if *t == task)));
    sim.run_for(3_000);
    assert_eq!(
        sim.record(task).expect("record").state,
        TaskState::Cancelled
    );
    assert_eq!(
        sim.starts.iter().filter(|s| s.2 == task).count(),
        1,
        "restarted after cancel"
    );
    // Any node reads the record linearizably.
    let reader = (holder + 2) % 3;
    let req = sim
        .with(reader, |c, now| c.read_task(now, task))
        .expect("up")
        .expect("ok");
    sim.run_for(200);
    let read = sim.effects.iter().find_map(|(_, n, e)| match e {
        Effect::TaskRead {
            request,
            result: Ok(Some(r)),
            ..
        } if *n == reader && *request == req => Some(r.state.clone()),
        _ => None,
    });
    assert_eq!(read, Some(TaskState::Cancelled));
}

#[test]
fn retries_with_backoff() {
    let mut sim = Sim::new(3, test_config(), 11, 0.0);
    sim.run_for(50);
    let mut spec = TaskSpec::mock(100, 3);
    spec.retries = 2;
    spec.retry_backoff_ms = 600;
    let task = acked_one(&mut sim, 0, spec);
    assert!(sim.run_until(10_000, |s| s
        .record(task)
        .is_some_and(|r| r.state.is_final())));
    let r = sim.record(task).expect("record");
    assert_eq!(r.state, TaskState::Failed);
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.retries_used, 2);
    let starts: Vec<u64> = sim
        .starts
        .iter()
        .filter(|s| s.2 == task)
        .map(|s| s.0)
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    // Each retry waits its backoff after the previous attempt's end
    // (100 ms of run time): 600 ms, then 1200 ms.
    assert!(starts[1] - starts[0] >= 100 + 600, "{starts:?}");
    assert!(starts[2] - starts[1] >= 100 + 1_200, "{starts:?}");
}

#[test]
fn gc_of_finished_records() {
    let mut cfg = test_config();
    cfg.retention_ms = 2_000;
    let mut sim = Sim::new(3, cfg, 12, 0.0);
    sim.run_for(50);
    let task = acked_one(&mut sim, 0, TaskSpec::mock(50, 0));
    assert!(sim.run_until(3_000, |s| s
        .record(task)
        .is_some_and(|r| r.state.is_final())));
    // Kept for the retention time...
    sim.run_for(1_500);
    assert!(sim.record(task).is_some(), "collected before its retention");
    // ...then deleted on every acceptor.
    assert!(
        sim.run_until(5_000, |s| s.record(task).is_none()),
        "never collected"
    );
    sim.run_for(200);
    let shard = shard_of(task.0, sim.cfg.shards);
    let gone = sim
        .nodes
        .iter()
        .filter_map(|n| n.coord.as_ref().and_then(|c| c.acceptor().shard(shard)))
        .filter(|a| a.record(task).is_none())
        .count();
    assert!(gone >= 2, "deleted on {gone} acceptors only");
    // One more retention period later the tombstones are gone too, from
    // memory and from disk.
    sim.run_for(3_500);
    let key = StoreKey::Register(shard, RegisterKey::Task(task));
    let pruned = sim
        .nodes
        .iter()
        .filter(|n| {
            let in_memory = n
                .coord
                .as_ref()
                .and_then(|c| c.acceptor().shard(shard))
                .is_some_and(|a| a.registers.contains_key(&RegisterKey::Task(task)));
            !in_memory && !n.store.contains_key(&key)
        })
        .count();
    assert!(pruned >= 2, "tombstone pruned on {pruned} nodes only");
}

#[test]
fn per_task_timeout_kills_the_attempt_and_fails_the_task() {
    let mut sim = Sim::new(3, test_config(), 13, 0.0);
    sim.run_for(50);
    let mut spec = TaskSpec::mock(30_000, 0);
    spec.timeout_ms = Some(400);
    let task = acked_one(&mut sim, 0, spec);
    let (holder, attempt) = wait_running(&mut sim, task, 3_000);
    let started = sim.now;
    assert!(sim.run_until(3_000, |s| s
        .record(task)
        .is_some_and(|r| r.state.is_final())));
    let kill = sim
        .kills
        .iter()
        .find(|k| k.2 == task && k.4 == KillReason::Timeout)
        .expect("killed by its timeout");
    assert_eq!((kill.1, kill.3), (holder, attempt));
    assert!(
        kill.0 >= started + 390 && kill.0 <= started + 500,
        "killed at +{}",
        kill.0 - started
    );
    let r = sim.record(task).expect("record");
    assert_eq!(r.state, TaskState::Failed);
    assert_eq!(sim.starts.iter().filter(|s| s.2 == task).count(), 1);
}

#[test]
fn read_task_returns_the_majority_record_and_none_for_unknown_ids() {
    let mut sim = Sim::new(3, test_config(), 7, 0.0);
    sim.run_for(50);
    sim.log_effects = true;
    let task = acked_one(&mut sim, 0, TaskSpec::mock(10, 0));
    assert!(
        sim.run_until(3_000, |s| s
            .record(task)
            .is_some_and(|r| r.state == TaskState::Succeeded)),
        "task did not succeed"
    );
    let unknown = TaskId(task.0 ^ 0x10);
    // Read from another node than the submitter: it must see the final state.
    let req = sim
        .with(2, |c, now| c.read_task(now, task))
        .expect("node up")
        .expect("read accepted");
    let req_unknown = sim
        .with(2, |c, now| c.read_task(now, unknown))
        .expect("node up")
        .expect("read accepted");
    let reads = |s: &Sim| {
        s.effects
            .iter()
            .filter_map(|(_, i, e)| match e {
                Effect::TaskRead {
                    request, result, ..
                } if *i == 2 => Some((*request, result.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(
        sim.run_until(2_000, |s| reads(s).len() >= 2),
        "reads did not complete"
    );
    let got = reads(&sim);
    let rec = got
        .iter()
        .find(|(r, _)| *r == req)
        .and_then(|(_, res)| res.clone().ok())
        .flatten()
        .map(|r| *r)
        .expect("record read");
    assert_eq!(rec.id, task);
    assert_eq!(rec.state, TaskState::Succeeded);
    assert_eq!(rec.exit_code, Some(0));
    let none = got
        .iter()
        .find(|(r, _)| *r == req_unknown)
        .map(|(_, res)| res.clone());
    assert_eq!(none, Some(Ok(None)));
}

/// A task's life takes one prepare round: the submit writes a fresh
/// register with its creator's reserved first ballot, the claim prepares,
/// and its accept leaves the holder a promise that lets the finish skip the
/// prepare too (before: submit, claim, start and finish each prepared).
#[test]
fn a_task_life_cycle_prepares_only_for_its_claim() {
    let mut sim = Sim::new(3, test_config(), 7, 0.0);
    sim.run_for(50);
    let before = sim.prepares_sent;
    let task = acked_one(&mut sim, 0, TaskSpec::mock(20, 0));
    assert_eq!(sim.prepares_sent, before, "the submit prepared");
    assert!(
        sim.run_until(3_000, |s| s
            .commits
            .iter()
            .any(|c| c.task == task && c.state == TaskState::Succeeded)),
        "task never succeeded"
    );
    // One round of the claim, to the two other members of the group.
    assert_eq!(sim.prepares_sent - before, 2);
}

/// The state of `task` in member `i`'s own copy of the register.
fn copy_at(sim: &Sim, i: usize, task: TaskId) -> Option<TaskState> {
    let shard = shard_of(task.0, sim.coord(i).config().shards);
    let slot = sim
        .coord(i)
        .acceptor()
        .shard(shard)?
        .registers
        .get(&RegisterKey::Task(task))?;
    match slot.value.as_ref()? {
        Value::Task(r) => Some(r.state.clone()),
        _ => None,
    }
}

#[test]
fn a_member_that_missed_the_final_write_is_repaired_and_stops_claiming() {
    let mut sim = Sim::new(3, test_config(), 11, 0.0);
    sim.run_for(50);
    let task = acked_one(&mut sim, 0, TaskSpec::mock(1_500, 0));
    let (holder, _) = wait_running(&mut sim, task, 3_000);
    // One member of the group (all three nodes) misses the finish.
    let stale = (holder + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|i| *i != stale).collect();
    sim.partition(&[stale], &others);
    assert!(
        sim.run_until(5_000, |s| s
            .record(task)
            .is_some_and(|r| r.state.is_final())),
        "task never finished"
    );
    assert!(
        copy_at(&sim, stale, task).is_some_and(|s| !s.is_final()),
        "the isolated member saw the final write"
    );
    sim.heal();
    // Its copy looks orphaned: its first claim learns the task is final
    // and writes the value back everywhere.
    assert!(
        sim.run_until(5_000, |s| copy_at(s, stale, task)
            .is_some_and(|s| s.is_final())),
        "the stale copy was never repaired"
    );
    let claims = sim.coord(stale).stats().claims_started;
    sim.run_for(3_000);
    assert_eq!(
        sim.coord(stale).stats().claims_started,
        claims,
        "the member kept claiming a final task"
    );
}

#[test]
fn a_claim_from_a_copy_that_missed_the_claim_repairs_it_instead_of_splitting_votes() {
    let mut sim = Sim::new(3, test_config(), 5, 0.0);
    sim.run_for(50);
    let task = acked_one(&mut sim, 0, TaskSpec::mock(20_000, 0));
    // Member 2 keeps the pending copy: it misses the claim's accept.
    let stale = 2;
    sim.partition(&[stale], &[0, 1]);
    let (holder, attempt) = wait_running(&mut sim, task, 3_000);
    assert_ne!(holder, stale);
    assert_eq!(copy_at(&sim, stale, task), Some(TaskState::Pending));
    sim.run_for(500);
    sim.heal();
    sim.crash(holder);
    let crash_at = sim.now;
    // The stale member claims attempt 1 again from its copy; the live
    // member answers that attempt 1 exists, and the claimer's read writes
    // the dead holder's record back at once: while that holder's lease
    // still runs at the live member (renewed at most 260 ms before the
    // crash, for 800 ms), so no orphan claim can have carried it.
    let mut repaired_at = None;
    let restarted = sim.run_until(5_000, |s| {
        let seen = copy_at(s, stale, task).and_then(|st| st.holder());
        if repaired_at.is_none() && seen.is_some_and(|(a, _)| a == attempt) {
            repaired_at = Some(s.now);
        }
        s.running_anywhere(task).is_some()
    });
    assert!(restarted, "the orphan never restarted");
    let repaired_after = repaired_at.map(|at| at - crash_at);
    assert!(
        repaired_after.is_some_and(|ms| ms < 500),
        "the stale copy was repaired {repaired_after:?} ms after the crash, not by the refused claim"
    );
    let (_, next) = sim.running_anywhere(task).expect("restarted");
    assert_eq!(next, attempt + 1);
    let failover = sim.now - crash_at;
    assert!(failover <= 1_500, "failover took {failover} ms");
    assert_eq!(sim.lease_overlaps, 0);
}

/// The node indices of the group serving `task`, as node 0 knows it.
fn group_of(sim: &Sim, task: TaskId) -> Vec<usize> {
    let shard = shard_of(task.0, test_config().shards);
    let config = &sim.coord(0).directory()[&shard];
    config
        .members
        .iter()
        .map(|id| sim.nodes.iter().position(|n| n.id == *id).expect("member"))
        .collect()
}

#[test]
fn a_holder_cut_off_one_way_from_a_member_renews_through_another() {
    let mut sim = Sim::new(5, test_config(), 11, 0.0);
    sim.run_for(50);
    // A task whose holder is not one of its group's members.
    let (task, holder, attempt, group) = (0..20)
        .find_map(|_| {
            let task = acked_one(&mut sim, 0, TaskSpec::mock(30_000, 0));
            let (holder, attempt) = wait_running(&mut sim, task, 3_000);
            let group = group_of(&sim, task);
            (!group.contains(&holder)).then_some((task, holder, attempt, group))
        })
        .expect("some task runs outside its group");
    assert_eq!(group.len(), 3);
    sim.run_for(300);
    // One member's answers cannot reach the holder, another is paused:
    // only the third member hears from both.
    let (relay, cut, paused) = (group[0], group[1], group[2]);
    sim.net.blocked.insert((cut, holder));
    sim.pause(paused, 3_000);
    sim.run_for(2_500);
    assert_eq!(
        sim.running_anywhere(task),
        Some((holder, attempt)),
        "the holder lost its attempt although {relay} could pass on {cut}'s grants:\n{}",
        sim.describe(task)
    );
    assert_eq!(sim.lease_overlaps, 0);
}

fn last_record_set(sim: &Sim) -> Option<shoal_protocol::federation::records::RecordSet> {
    sim.effects.iter().rev().find_map(|(_, _, e)| match e {
        Effect::JobDone {
            result: Ok(bytes), ..
        } => shoal_protocol::federation::records::RecordSet::decode(bytes.as_deref()).ok(),
        _ => None,
    })
}

#[test]
fn record_edits_from_two_nodes_at_once_both_survive_a_crash() {
    use shoal_protocol::federation::records::{RecordEdit, TRUST_REGISTER};
    let mut sim = Sim::new(5, test_config(), 17, 0.0);
    sim.run_for(50);
    sim.log_effects = true;
    let put = |name: &str| RecordEdit::Put {
        name: name.into(),
        value: name.as_bytes().to_vec(),
    };
    // Two operators edit the same set in the same instant from two nodes: a
    // read-then-write would lose one of the two.
    sim.with(0, |c, now| c.edit_records(now, TRUST_REGISTER, put("beta")))
        .expect("up")
        .expect("accepted");
    sim.with(3, |c, now| {
        c.edit_records(now, TRUST_REGISTER, put("gamma"))
    })
    .expect("up")
    .expect("accepted");
    let done = |s: &Sim| {
        s.effects
            .iter()
            .filter(|(_, _, e)| matches!(e, Effect::JobDone { result: Ok(_), .. }))
            .count()
            >= 2
    };
    assert!(sim.run_until(3_000, done), "the edits never completed");
    let shard = shard_of(TRUST_REGISTER, sim.cfg.shards);
    let member = sim.coord(1).directory()[&shard].members[0];
    let member = sim
        .nodes
        .iter()
        .position(|n| n.id == member)
        .expect("member");
    sim.crash(member);
    let reader = (0..5).find(|i| *i != member).expect("reader");
    sim.effects.clear();
    let mut read = None;
    for _ in 0..10 {
        sim.with(reader, |c, now| c.read_job(now, TRUST_REGISTER))
            .expect("up")
            .expect("accepted");
        if sim.run_until(1_000, |s| last_record_set(s).is_some()) {
            read = last_record_set(&sim);
            break;
        }
    }
    let set = read.expect("the set was never read after the crash");
    let names: Vec<&str> = set.records.keys().map(String::as_str).collect();
    assert_eq!(names, ["beta", "gamma"]);
    // A refused edit answers with the reason and leaves the set as it was.
    sim.effects.clear();
    sim.with(reader, |c, now| {
        c.edit_records(now, TRUST_REGISTER, put(""))
    })
    .expect("up")
    .expect("accepted");
    assert!(
        sim.run_until(2_000, |s| s.effects.iter().any(|(_, _, e)| matches!(
            e,
            Effect::JobDone {
                result: Err(shoal_protocol::coordinator::OpError::Refused(
                    shoal_protocol::tasks::Refusal::Record(_)
                )),
                ..
            }
        )))
    );
}

#[test]
fn a_checkpoint_reaches_the_next_attempt_and_a_fenced_attempts_late_save_is_refused() {
    use shoal_protocol::coordinator::OpError;
    use shoal_protocol::tasks::checkpoint::{digest, CheckpointMeta};
    use shoal_protocol::tasks::Refusal;
    let mut sim = Sim::new(3, test_config(), 21, 0.0);
    sim.run_for(50);
    sim.log_effects = true;
    let task = acked_one(&mut sim, 0, TaskSpec::mock(30_000, 0));
    let (holder, attempt) = wait_running(&mut sim, task, 3_000);
    let meta = |attempt, generation| CheckpointMeta {
        attempt,
        generation,
        size: 5,
        digest: digest(b"state"),
        saved_at_ms: 0,
        holders: vec![tasks_harness::node_id(0)],
    };
    let saved = |sim: &Sim, req| {
        sim.effects.iter().find_map(|(_, n, e)| match e {
            Effect::CheckpointSaved {
                request, result, ..
            } if *n == holder && *request == req => Some(result.clone()),
            _ => None,
        })
    };
    let req = sim
        .with(holder, |c, now| {
            c.save_checkpoint(now, task, meta(attempt, 1))
        })
        .expect("up")
        .expect("accepted");
    assert!(sim.run_until(2_000, |s| saved(s, req).is_some()));
    assert_eq!(saved(&sim, req), Some(Ok(())));
    assert_eq!(sim.record(task).unwrap().checkpoint, Some(meta(attempt, 1)));

    // The holder stalls past its lease; the next attempt starts elsewhere
    // with the checkpoint, and the stalled attempt's save is refused.
    sim.pause(holder, 3_500);
    assert!(sim.run_until(6_000, |s| s
        .running_anywhere(task)
        .is_some_and(|(n, a)| n != holder && a > attempt)));
    let handed = sim.effects.iter().find_map(|(_, _, e)| match e {
        Effect::StartAttempt {
            task: t,
            attempt: a,
            checkpoint,
            ..
        } if *t == task && *a == attempt + 1 => Some(checkpoint.clone()),
        _ => None,
    });
    assert_eq!(handed, Some(Some(meta(attempt, 1))));
    sim.run_for(1_000);
    let late = sim
        .with(holder, |c, now| {
            c.save_checkpoint(now, task, meta(attempt, 2))
        })
        .expect("up")
        .expect("accepted");
    assert!(sim.run_until(3_000, |s| saved(s, late).is_some()));
    assert!(
        matches!(
            saved(&sim, late),
            Some(Err(OpError::Refused(Refusal::StaleAttempt { .. })))
        ),
        "{:?}",
        saved(&sim, late)
    );
    assert_eq!(sim.record(task).unwrap().checkpoint, Some(meta(attempt, 1)));
}

#[test]
fn a_task_that_fits_nowhere_is_parked_where_room_frees_first() {
    // Late binding's timers are off: only the parked offer's hint can
    // bring the wide task to the node whose room frees.
    let mut sim = Sim::new_custom(3, test_config(), 11, 0.0, |_, c| {
        c.capacity = shoal_protocol::resources::Resources::new(4000, 8192);
        c.pull_interval_ms = 60_000;
        c.sweep_interval_ms = 60_000;
    });
    sim.run_for(50);
    let blocker = |ms: u64| {
        let mut spec = TaskSpec::mock(ms, 0);
        spec.resources = shoal_protocol::resources::Resources::new(3000, 512);
        spec
    };
    // Every node holds 3 of its 4 CPUs; one node's blocker ends first.
    let short = acked_one(&mut sim, 0, blocker(2_500));
    let long: Vec<TaskId> = (0..2)
        .map(|_| acked_one(&mut sim, 0, blocker(30_000)))
        .collect();
    let (short_node, _) = wait_running(&mut sim, short, 1_000);
    for t in &long {
        let (node, _) = wait_running(&mut sim, *t, 1_000);
        assert_ne!(node, short_node, "blockers spread over the nodes");
    }
    let mut wide = TaskSpec::mock(1_000, 0);
    wide.resources = shoal_protocol::resources::Resources::new(2000, 512);
    let wide = acked_one(&mut sim, 0, wide);
    let parked: u64 = (0..3).map(|i| sim.coord(i).stats().parked_offers).sum();
    assert!(parked >= 1, "no node fits the wide task, so it is parked");
    let (node, _) = wait_running(&mut sim, wide, 3_000);
    assert_eq!(node, short_node, "it runs where room freed first");
}
