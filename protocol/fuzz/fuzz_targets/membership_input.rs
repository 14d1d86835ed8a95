//! Arbitrary bytes into `Membership::handle_datagram`: the machine must
//! never panic, whatever arrives. The first byte picks whether the payload
//! claims to come from the authenticated peer (so decodable messages get
//! past the sender check and into the state machine) and how far the clock
//! moves before the timers run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::membership::{Config, Identity, Membership};
use shoal_protocol::{Instant, NodeId, StoreId};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Some((&control, payload)) = data.split_first() else {
        return;
    };
    let identity = Identity {
        id: NodeId::from_u64(1),
        name: "fuzzed".into(),
        addr: "127.0.0.1:7001".parse().unwrap(),
        store: StoreId::from_u64(1),
    };
    let mut m = Membership::new(identity, Config::lan(), 1, 0, Instant::ZERO);
    let src = "127.0.0.1:7002".parse().unwrap();
    // Split the input into up to four payloads at 0xFE bytes so one
    // run can build state and then exercise it.
    let peer = if control & 1 == 0 {
        NodeId::from_u64(2)
    } else {
        NodeId::from_u64(u64::from(control))
    };
    let mut now = Instant::ZERO;
    for chunk in payload.split(|b| *b == 0xfe).take(4) {
        now = now + Duration::from_millis(u64::from(control >> 1) * 10);
        let _ = m.handle_datagram(now, src, peer, chunk);
        while m.poll_transmit().is_some() {}
        while m.poll_event().is_some() {}
        if m.poll_timeout().is_some_and(|t| t <= now) {
            m.handle_timeout(now);
        }
    }
    m.handle_timeout(now + Duration::from_secs(3600));
    while m.poll_transmit().is_some() {}
});
