//! Wire properties of the Paxos channel: every message round-trips, and no
//! random or mutated input makes the decoder or the machine panic.

use proptest::prelude::*;
use shoal_protocol::coordinator::{Bootstrap, Config, Coordinator};
use shoal_protocol::paxos::{Ballot, JobValue, RegisterKey, Slot, Value};
use shoal_protocol::shard::{ShardConfig, ShardId};
use shoal_protocol::tasks::{TaskId, TaskRecord, TaskSpec};
use shoal_protocol::wire::paxos::{
    GroupRefusal, Header, LeaseAsk, LeaseTransfer, LeaseVerdict, PaxosMessage, Snapshot,
};
use shoal_protocol::wire::{decode, encode, MAX_STREAM_MESSAGE_BYTES};
use shoal_protocol::{Instant, NodeId};

fn node(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn ballot(c: u64, n: u64) -> Ballot {
    Ballot {
        counter: c,
        node: node(n),
        incarnation: c ^ n,
    }
}

fn config(shard: u32, epoch: u64, n: u64) -> ShardConfig {
    ShardConfig {
        shard: ShardId(shard),
        epoch,
        members: (0..n % 5 + 1).map(node).collect(),
        previous: (0..n % 3).map(node).collect(),
    }
}

fn record(id: u64, name: String, slots: u32) -> TaskRecord {
    let mut spec = TaskSpec::mock(id % 10_000, (id % 3) as i32);
    spec.name = name;
    spec.slots = slots;
    spec.resources = shoal_protocol::resources::Resources::new((id % 4000) as u32, slots * 64);
    TaskRecord::new(TaskId(id), spec, 0)
}

/// One message of any kind, built from a few random numbers and a string.
fn message(kind: u8, a: u64, b: u64, s: String) -> PaxosMessage {
    let hdr = Header {
        shard: ShardId((a % 64) as u32),
        epoch: b,
        req: a ^ b,
    };
    let slot = Slot {
        promised: ballot(a, b),
        accepted: ballot(b, a),
        value: match a % 3 {
            0 => None,
            1 => Some(Value::Task(Box::new(record(
                a,
                s.clone(),
                (b % 8) as u32 + 1,
            )))),
            _ => Some(Value::Job(JobValue {
                version: b,
                bytes: Some(s.clone().into_bytes()),
            })),
        },
    };
    match kind % 21 {
        0 => PaxosMessage::Prepare {
            hdr,
            key: RegisterKey::Task(TaskId(a)),
            ballot: ballot(a, b),
        },
        1 => PaxosMessage::Promise { hdr, slot },
        2 => PaxosMessage::Accept {
            hdr,
            key: RegisterKey::Job(b),
            ballot: ballot(b, a),
            value: slot.value,
            next: a.is_multiple_of(2).then(|| ballot(b.wrapping_add(1), a)),
        },
        3 => PaxosMessage::Accepted { hdr },
        4 => PaxosMessage::Refused {
            hdr,
            reason: match b % 4 {
                0 => GroupRefusal::Ballot(ballot(a, b)),
                1 => GroupRefusal::Sealed(config(1, b, a)),
                2 => GroupRefusal::Stale(config(2, a, b)),
                _ => GroupRefusal::NotMember,
            },
        },
        5 => PaxosMessage::LeaseRequest {
            hdr,
            lease_ms: a,
            asks: (0..b % 5)
                .map(|i| LeaseAsk {
                    shard: ShardId(i as u32),
                    epoch: b,
                    task: TaskId(a.wrapping_add(i)),
                    attempt: i,
                    ballot: ballot(i, a),
                    renewal: i.is_multiple_of(2),
                })
                .collect(),
        },
        6 => PaxosMessage::LeaseReply {
            hdr,
            verdicts: vec![
                LeaseVerdict::Granted,
                LeaseVerdict::Held {
                    owner: node(a),
                    attempt: b,
                    remaining_ms: a,
                },
                LeaseVerdict::Quarantined,
                LeaseVerdict::Final,
                LeaseVerdict::Stale,
                LeaseVerdict::Group(GroupRefusal::NotMember),
            ],
        },
        7 => PaxosMessage::LeaseRelease {
            hdr,
            task: TaskId(a),
            attempt: b,
            ballot: ballot(b, a),
        },
        8 => PaxosMessage::Seal {
            hdr,
            successor: config(3, b, a),
        },
        9 | 10 => {
            let snapshot = Snapshot {
                registers: vec![(RegisterKey::Successor(b), slot)],
                leases: vec![LeaseTransfer {
                    task: TaskId(a),
                    owner: node(b),
                    attempt: a,
                    ballot: ballot(a, a),
                    remaining_ms: b,
                }],
                quarantine_ms: a,
            };
            if kind % 18 == 9 {
                PaxosMessage::SealedState { hdr, snapshot }
            } else {
                PaxosMessage::Install {
                    hdr,
                    config: config(4, b, a),
                    snapshot,
                    predecessor: config(4, b.saturating_sub(1), b),
                    quarantine: a.is_multiple_of(2),
                }
            }
        }
        11 => PaxosMessage::Installed { hdr },
        12 => PaxosMessage::Activate { hdr },
        13 => PaxosMessage::Pull {
            hdr,
            slots_free: (a % 100) as u32,
            resources_free: shoal_protocol::resources::Resources {
                cpu_milli: (a % 4000) as u32,
                memory_mib: (b % 8192) as u32,
                custom: [(s.clone(), (b % 8) as u32)].into_iter().collect(),
            },
            labels: [(s.clone(), s.clone())].into_iter().collect(),
            max: (b % 100) as u32,
        },
        14 => PaxosMessage::PullReply {
            hdr,
            records: vec![record(a, s, 1)],
        },
        15 => PaxosMessage::ReadyCheck { hdr },
        16 => PaxosMessage::Ready { hdr },
        17 => PaxosMessage::ReplyVia {
            via: node(a),
            request: encode(&PaxosMessage::Prepare {
                hdr,
                key: RegisterKey::Task(TaskId(a)),
                ballot: ballot(a, b),
            }),
        },
        18 => PaxosMessage::Forward {
            to: node(b),
            reply: encode(&PaxosMessage::Accepted { hdr }),
        },
        19 => PaxosMessage::Forwarded {
            origin: node(a),
            reply: s.into_bytes(),
        },
        _ => match b % 3 {
            0 => PaxosMessage::Offer {
                shard: ShardId(1),
                task: TaskId(a),
                attempt: b,
                spec: Box::new(TaskSpec::mock(a, 0)),
            },
            1 => PaxosMessage::CancelNotice { task: TaskId(a) },
            _ => PaxosMessage::Directory {
                configs: vec![config(0, a, b), config(5, b, a)],
            },
        },
    }
}

fn machine() -> Coordinator {
    let founders: Vec<NodeId> = (1..=3).map(node).collect();
    let cfg = Config {
        shards: 8,
        ..Config::default()
    };
    Coordinator::new(
        node(1),
        cfg,
        7,
        Instant::from_millis(1_000),
        Bootstrap::Founder(founders),
    )
    .expect("valid config")
}

proptest! {
    #[test]
    fn every_message_round_trips(kind in 0u8..21, a in any::<u64>(), b in any::<u64>(), s in ".{0,40}") {
        let m = message(kind, a, b, s);
        let bytes = encode(&m);
        prop_assert_eq!(decode::<PaxosMessage>(&bytes, MAX_STREAM_MESSAGE_BYTES), Ok(m));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<PaxosMessage>(&bytes, MAX_STREAM_MESSAGE_BYTES);
        let mut c = machine();
        let _ = c.handle_message(Instant::from_millis(1_001), node(2), &bytes);
        c.handle_timeout(Instant::from_millis(1_002));
        while c.poll_transmit().is_some() {}
        while c.poll_effect().is_some() {}
    }

    #[test]
    fn mutated_messages_never_panic(
        kind in 0u8..21,
        a in any::<u64>(),
        b in prop_oneof![0u64..1_000, (u64::MAX - 4)..=u64::MAX],
        s in ".{0,16}",
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = encode(&message(kind, a, b, s));
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let mut c = machine();
        let now = Instant::from_millis(1_001);
        let _ = c.handle_message(now, node(2), &bytes);
        // Valid messages from a peer must not panic either, whatever the field values.
        let valid = encode(&message(kind, a, b, String::new()));
        let _ = c.handle_message(now, node(3), &valid);
        c.handle_timeout(Instant::from_millis(5_000));
        while c.poll_transmit().is_some() {}
        while c.poll_effect().is_some() {}
    }
}

/// The kinds of the messages a machine sends, with their receivers.
fn sent(c: &mut Coordinator) -> Vec<(NodeId, PaxosMessage)> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = c.poll_transmit() {
        out.push((
            to,
            decode(&bytes, MAX_STREAM_MESSAGE_BYTES).expect("own message"),
        ));
    }
    out
}

#[test]
fn a_relayed_request_is_answered_through_the_relay_and_passed_on_as_from_its_origin() {
    let mut c = machine();
    let now = Instant::from_millis(1_001);
    let prepare = PaxosMessage::Prepare {
        hdr: Header {
            shard: ShardId(0),
            epoch: 1,
            req: 9,
        },
        key: RegisterKey::Task(TaskId(5)),
        ballot: Ballot {
            counter: 1,
            node: node(2),
            incarnation: 1,
        },
    };
    let relayed = PaxosMessage::ReplyVia {
        via: node(3),
        request: encode(&prepare),
    };
    c.handle_message(now, node(2), &encode(&relayed)).unwrap();
    // The promise is persisted before it is sent.
    while let Some(e) = c.poll_effect() {
        if let shoal_protocol::coordinator::Effect::Persist { token, .. } = e {
            c.handle_persisted(now, token);
        }
    }
    let out = sent(&mut c);
    let forward = out
        .iter()
        .find_map(|(to, m)| match m {
            PaxosMessage::Forward {
                to: requester,
                reply,
            } => Some((*to, *requester, reply)),
            _ => None,
        })
        .expect("the answer goes through the relay");
    assert_eq!((forward.0, forward.1), (node(3), node(2)));
    assert!(matches!(
        decode::<PaxosMessage>(forward.2, MAX_STREAM_MESSAGE_BYTES),
        Ok(PaxosMessage::Promise { .. })
    ));
    assert!(
        !out.iter().any(|(to, _)| *to == node(2)),
        "nothing went straight to the requester: {out:?}"
    );

    // The relay passes an answer on, naming who gave it.
    let reply = encode(&PaxosMessage::Accepted {
        hdr: Header {
            shard: ShardId(0),
            epoch: 1,
            req: 9,
        },
    });
    let forward = PaxosMessage::Forward {
        to: node(2),
        reply: reply.clone(),
    };
    c.handle_message(now, node(3), &encode(&forward)).unwrap();
    assert_eq!(
        sent(&mut c),
        vec![(
            node(2),
            PaxosMessage::Forwarded {
                origin: node(3),
                reply
            }
        )]
    );
    assert_eq!(c.stats().answers_relayed, 1);
}

#[test]
fn relays_carry_one_level_of_the_right_kind_only() {
    let mut c = machine();
    let now = Instant::from_millis(1_001);
    let hdr = Header {
        shard: ShardId(0),
        epoch: 1,
        req: 9,
    };
    let nested = PaxosMessage::Forward {
        to: node(2),
        reply: encode(&PaxosMessage::Forwarded {
            origin: node(3),
            reply: encode(&PaxosMessage::Accepted { hdr }),
        }),
    };
    let request_as_reply = PaxosMessage::Forward {
        to: node(2),
        reply: encode(&PaxosMessage::Activate { hdr }),
    };
    let reply_as_request = PaxosMessage::ReplyVia {
        via: node(3),
        request: encode(&PaxosMessage::Accepted { hdr }),
    };
    let garbage = PaxosMessage::Forwarded {
        origin: node(3),
        reply: vec![0xff; 7],
    };
    for (i, m) in [nested, request_as_reply, reply_as_request, garbage]
        .iter()
        .enumerate()
    {
        c.handle_message(now, node(2), &encode(m)).unwrap();
        assert_eq!(sent(&mut c), vec![], "{m:?} was acted on");
        assert_eq!(c.stats().malformed, i as u64 + 1);
    }
}
