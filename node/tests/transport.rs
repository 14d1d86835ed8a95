//! In-process tests of the QUIC transport: frames arrive with the sender's
//! authenticated NodeId, large payloads take a stream, other parties are
//! refused in the handshake, and a peer that went away is re-dialled.

use shoal_node::tls::{self, TlsMaterial};
use shoal_node::transport::{Inbound, Transport, TransportCounters};
use shoal_protocol::wire::Channel;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

fn material(ca_dir: &Path, out: &Path, node: &str, party: Option<&str>) -> TlsMaterial {
    tls::issue_node_cert(ca_dir, node, out, party).unwrap();
    tls::load_tls_material(out).unwrap()
}

fn bind(
    material: &TlsMaterial,
    addr: SocketAddr,
) -> (Transport, mpsc::Receiver<Inbound>, TransportCounters) {
    let counters = TransportCounters::default();
    let (tx, rx) = mpsc::channel(64);
    let transport = Transport::bind(addr, material, counters.clone(), tx).unwrap();
    (transport, rx, counters)
}

async fn next(rx: &mut mpsc::Receiver<Inbound>, within: Duration) -> Option<Inbound> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn frames_arrive_with_the_senders_authenticated_id_and_large_ones_take_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    tls::init_ca("acme", &ca).unwrap();
    let a = material(&ca, &dir.path().join("a"), "a", None);
    let b = material(&ca, &dir.path().join("b"), "b", None);
    let (ta, _rx_a, ca_counters) = bind(&a, any_port());
    let (tb, mut rx_b, cb_counters) = bind(&b, any_port());
    let b_addr = tb.local_addr().unwrap();

    ta.send(Channel::Membership, b_addr, false, b"ping");
    let got = next(&mut rx_b, Duration::from_secs(5))
        .await
        .expect("datagram lost");
    assert_eq!(
        (got.channel, &got.payload[..]),
        (Channel::Membership, &b"ping"[..])
    );
    assert_eq!(got.src_id, a.node_id);
    assert_eq!(got.src, ta.local_addr().unwrap());

    // Too large for a datagram even though not marked reliable: a stream.
    let big = vec![7u8; 100_000];
    ta.send(Channel::Membership, b_addr, false, &big);
    let got = next(&mut rx_b, Duration::from_secs(5))
        .await
        .expect("stream lost");
    assert_eq!(got.payload.len(), big.len());
    assert_eq!(ca_counters.streams_out.get(), 1);
    assert_eq!(cb_counters.streams_in.get(), 1);
    assert_eq!(ta.connection_count(), 1, "the connection is reused");
}

#[tokio::test]
async fn a_peer_from_another_party_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    tls::init_ca("acme", &ca).unwrap();
    let a = material(&ca, &dir.path().join("a"), "a", None);
    let evil = material(&ca, &dir.path().join("e"), "e", Some("evil"));
    let (ta, _rx_a, a_counters) = bind(&a, any_port());
    let (te, mut rx_e, e_counters) = bind(&evil, any_port());
    ta.send(
        Channel::Membership,
        te.local_addr().unwrap(),
        false,
        b"hello",
    );
    te.send(
        Channel::Membership,
        ta.local_addr().unwrap(),
        false,
        b"hello",
    );
    assert!(next(&mut rx_e, Duration::from_secs(3)).await.is_none());
    let refusals = a_counters.handshake_refusals.get() + e_counters.handshake_refusals.get();
    assert!(refusals >= 2, "refusals counted: {refusals}");
    assert!(a_counters.dial_failures.get() >= 1);
}

#[tokio::test]
async fn a_peer_that_went_away_is_redialled_at_the_same_address() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    tls::init_ca("acme", &ca).unwrap();
    let a = material(&ca, &dir.path().join("a"), "a", None);
    let b = material(&ca, &dir.path().join("b"), "b", None);
    let (ta, _rx_a, _) = bind(&a, any_port());
    let (tb, mut rx_b, _) = bind(&b, any_port());
    let b_addr = tb.local_addr().unwrap();
    ta.send(Channel::Membership, b_addr, false, b"one");
    assert!(next(&mut rx_b, Duration::from_secs(5)).await.is_some());

    tb.close(Duration::from_millis(500)).await;
    drop(tb);
    drop(rx_b);
    // Let the close reach `a` so its cached connection is known dead.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_tb2, mut rx_b2, _) = bind(&b, b_addr);
    let mut got = None;
    for _ in 0..20 {
        ta.send(Channel::Membership, b_addr, false, b"two");
        got = next(&mut rx_b2, Duration::from_millis(500)).await;
        if got.is_some() {
            break;
        }
    }
    let got = got.expect("the restarted peer was never re-dialled");
    assert_eq!(&got.payload[..], b"two");
}
