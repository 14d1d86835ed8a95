//! In-process tests of the wire version at the transport: a peer speaking
//! a version this endpoint cannot read is refused (both ends count it, no
//! frame of it is delivered) while the other peers keep talking, and a
//! build reading two versions talks to one reading only the older.

use shoal_node::tls::{self, TlsMaterial};
use shoal_node::transport::{Inbound, Transport, TransportCounters};
use shoal_protocol::wire::version::WIRE_VERSION_KNOWN_MAX;
use shoal_protocol::wire::{Channel, WireVersions};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

struct Peer {
    transport: Transport,
    rx: mpsc::Receiver<Inbound>,
    counters: TransportCounters,
}

impl Peer {
    fn addr(&self) -> SocketAddr {
        self.transport.local_addr().unwrap()
    }

    /// Sends `payload` to `dst` until one arrives there, or `tries` ran out.
    async fn send_until_heard(&self, dst: &mut Peer, payload: &[u8], tries: usize) -> bool {
        for _ in 0..tries {
            self.transport
                .send(Channel::Membership, dst.addr(), false, payload);
            if let Some(got) = next(&mut dst.rx, Duration::from_millis(300)).await {
                assert_eq!(&got.payload[..], payload);
                return true;
            }
        }
        false
    }
}

fn material(ca_dir: &Path, out: &Path, node: &str) -> TlsMaterial {
    tls::issue_node_cert(ca_dir, node, out, None).unwrap();
    tls::load_tls_material(out).unwrap()
}

fn bind(material: &TlsMaterial, wire: WireVersions) -> Peer {
    let counters = TransportCounters::default();
    let (tx, rx) = mpsc::channel(64);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let transport = Transport::bind_speaking(any, material, counters.clone(), tx, wire).unwrap();
    Peer {
        transport,
        rx,
        counters,
    }
}

async fn next(rx: &mut mpsc::Receiver<Inbound>, within: Duration) -> Option<Inbound> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// Three members of one party: `a` and `b` of this build, `f` of a build
/// reading only `foreign`.
fn trio(dir: &Path, foreign: WireVersions) -> (Peer, Peer, Peer) {
    let ca = dir.join("ca");
    tls::init_ca("acme", &ca).unwrap();
    let a = bind(&material(&ca, &dir.join("a"), "a"), WireVersions::current());
    let b = bind(&material(&ca, &dir.join("b"), "b"), WireVersions::current());
    let f = bind(&material(&ca, &dir.join("f"), "f"), foreign);
    (a, b, f)
}

#[tokio::test]
async fn a_peer_of_a_foreign_wire_version_is_refused_both_ways_and_the_others_keep_talking() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut f) = trio(dir.path(), WireVersions::new(&[2]));
    for _ in 0..5 {
        f.transport
            .send(Channel::Membership, a.addr(), false, b"from f");
        a.transport
            .send(Channel::Membership, f.addr(), false, b"from a");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(next(&mut a.rx, Duration::from_millis(500)).await.is_none());
    assert!(next(&mut f.rx, Duration::from_millis(100)).await.is_none());
    // Each side refused the other's dial and heard the other refuse its own.
    assert!(
        a.counters.wire_version_refused.get() >= 2,
        "a counted {}",
        a.counters.wire_version_refused.get()
    );
    assert!(
        f.counters.wire_version_refused.get() >= 2,
        "f counted {}",
        f.counters.wire_version_refused.get()
    );
    assert_eq!(a.counters.handshake_refusals.get(), 0, "not a TLS refusal");
    assert_eq!(a.transport.connection_count(), 0, "no connection to f kept");
    assert!(a.send_until_heard(&mut b, b"a to b", 10).await);
    assert!(b.send_until_heard(&mut a, b"b to a", 10).await);
    assert_eq!(b.counters.wire_version_refused.get(), 0);
}

#[tokio::test]
async fn a_version_beyond_the_known_ones_is_refused_in_the_handshake_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let far = WireVersions::new(&[WIRE_VERSION_KNOWN_MAX + 100]);
    let (mut a, _b, f) = trio(dir.path(), far);
    for _ in 0..5 {
        f.transport
            .send(Channel::Membership, a.addr(), false, b"from f");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(next(&mut a.rx, Duration::from_millis(300)).await.is_none());
    assert!(a.counters.wire_version_refused.get() >= 1);
    assert!(f.counters.wire_version_refused.get() >= 1);
    assert!(f.counters.dial_failures.get() >= 1);
}

#[tokio::test]
async fn a_build_reading_two_versions_talks_to_one_reading_the_older() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _b, mut n) = trio(dir.path(), WireVersions::new(&[1, 2]));
    assert!(n.send_until_heard(&mut a, b"n to a", 10).await);
    assert!(a.send_until_heard(&mut n, b"a to n", 10).await);
    assert_eq!(a.counters.wire_version_refused.get(), 0);
    assert_eq!(n.counters.wire_version_refused.get(), 0);
}
