//! Federation decisions (docs/federation.md): whether a peer gateway speaks
//! for a trusted party, and when a gateway dials a dropped link again.
//!
//! Trust is per party: the other party pins only a party's ed25519 key
//! (from its card); the party key vouches for each of its gateways' libp2p
//! PeerIds. libp2p's own handshake proves the PeerId of a connection, so a
//! hello is judged against that PeerId.

pub mod holders;
pub mod records;
pub mod tunnel;

use crate::wire::fed::{Hello, RefuseReason, FED_PROTOCOL_VERSION};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// Length of an ed25519 public key.
pub const PARTY_KEY_BYTES: usize = 32;

/// Domain separation: a voucher signature can never be taken for a
/// signature of anything else the party key signs.
const VOUCHER_CONTEXT: &[u8] = b"shoal-fed-voucher-v1\0";

/// A party this gateway trusts: its name and pinned federation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedParty {
    /// The party's name.
    pub party: String,
    /// The party's ed25519 public key.
    pub public_key: [u8; PARTY_KEY_BYTES],
}

/// The outcome of judging a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The peer speaks for this trusted party.
    Accept(String),
    /// The peer is refused; nothing past its hello is read.
    Refuse(RefuseReason),
}

/// The bytes a party key signs to vouch for one of its gateways.
pub fn voucher_message(party: &str, gateway_peer: &[u8]) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(VOUCHER_CONTEXT.len() + party.len() + 1 + gateway_peer.len());
    message.extend_from_slice(VOUCHER_CONTEXT);
    message.extend_from_slice(party.as_bytes());
    // Names never hold NUL, so the split between name and PeerId is unique.
    message.push(0);
    message.extend_from_slice(gateway_peer);
    message
}

fn vouches(public_key: &[u8; PARTY_KEY_BYTES], party: &str, peer: &[u8], voucher: &[u8]) -> bool {
    let (Ok(key), Ok(signature)) = (
        VerifyingKey::from_bytes(public_key),
        Signature::from_slice(voucher),
    ) else {
        return false;
    };
    key.verify(&voucher_message(party, peer), &signature)
        .is_ok()
}

/// Judges a peer gateway's hello. `own_party` is the judge's party;
/// `remote_peer` is the PeerId bytes libp2p authenticated for the
/// connection the hello came on.
pub fn judge_hello(
    own_party: &str,
    trusted: &[TrustedParty],
    hello: &Hello,
    remote_peer: &[u8],
) -> Verdict {
    if hello.version != FED_PROTOCOL_VERSION {
        return Verdict::Refuse(RefuseReason::Version);
    }
    if hello.gateway_peer != remote_peer {
        return Verdict::Refuse(RefuseReason::PeerMismatch);
    }
    if hello.party == own_party {
        return Verdict::Refuse(RefuseReason::OwnParty);
    }
    let Some(claimed) = trusted.iter().find(|t| t.party == hello.party) else {
        return Verdict::Refuse(RefuseReason::UnknownParty);
    };
    if vouches(
        &claimed.public_key,
        &claimed.party,
        remote_peer,
        &hello.voucher,
    ) {
        return Verdict::Accept(claimed.party.clone());
    }
    let vouched_by_other = trusted.iter().any(|t| {
        t.party != claimed.party && vouches(&t.public_key, &t.party, remote_peer, &hello.voucher)
    });
    if vouched_by_other {
        Verdict::Refuse(RefuseReason::ClaimsOtherParty)
    } else {
        Verdict::Refuse(RefuseReason::BadVoucher)
    }
}

/// When a gateway dials a party again after failed dials: doubling from
/// `first_ms` up to `max_ms`, reset by a link that came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedialBackoff {
    /// Wait after the first failure.
    pub first_ms: u64,
    /// The longest wait.
    pub max_ms: u64,
}

impl Default for RedialBackoff {
    fn default() -> Self {
        RedialBackoff {
            first_ms: 250,
            max_ms: 5_000,
        }
    }
}

impl RedialBackoff {
    /// The wait before the next dial after `failures` failed dials in a row.
    pub fn delay_ms(&self, failures: u32) -> u64 {
        if failures == 0 {
            return 0;
        }
        let shift = (failures - 1).min(20);
        self.first_ms.saturating_mul(1 << shift).min(self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    const PEER: &[u8] = b"peer-of-alpha-gateway";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trusted(name: &str, seed: u8) -> TrustedParty {
        TrustedParty {
            party: name.into(),
            public_key: key(seed).verifying_key().to_bytes(),
        }
    }

    fn hello(party: &str, signer_party: &str, seed: u8, peer: &[u8]) -> Hello {
        Hello {
            version: FED_PROTOCOL_VERSION,
            party: party.into(),
            gateway_peer: peer.to_vec(),
            voucher: key(seed)
                .sign(&voucher_message(signer_party, peer))
                .to_bytes()
                .to_vec(),
        }
    }

    fn cards() -> Vec<TrustedParty> {
        vec![trusted("alpha", 1), trusted("gamma", 3)]
    }

    #[test]
    fn vouched_gateway_of_a_trusted_party_is_accepted() {
        let verdict = judge_hello("beta", &cards(), &hello("alpha", "alpha", 1, PEER), PEER);
        assert_eq!(verdict, Verdict::Accept("alpha".into()));
    }

    #[test]
    fn untrusted_party_is_refused() {
        let verdict = judge_hello("beta", &cards(), &hello("delta", "delta", 4, PEER), PEER);
        assert_eq!(verdict, Verdict::Refuse(RefuseReason::UnknownParty));
    }

    #[test]
    fn voucher_of_an_unpinned_key_is_refused() {
        // A forged voucher: signed by a key that is not alpha's.
        let verdict = judge_hello("beta", &cards(), &hello("alpha", "alpha", 9, PEER), PEER);
        assert_eq!(verdict, Verdict::Refuse(RefuseReason::BadVoucher));
    }

    #[test]
    fn voucher_for_another_peer_is_refused() {
        let mut h = hello("alpha", "alpha", 1, b"another-peer");
        h.gateway_peer = PEER.to_vec();
        let verdict = judge_hello("beta", &cards(), &h, PEER);
        assert_eq!(verdict, Verdict::Refuse(RefuseReason::BadVoucher));
    }

    #[test]
    fn garbage_voucher_is_refused() {
        let mut h = hello("alpha", "alpha", 1, PEER);
        h.voucher = vec![0; 3];
        let verdict = judge_hello("beta", &cards(), &h, PEER);
        assert_eq!(verdict, Verdict::Refuse(RefuseReason::BadVoucher));
    }

    #[test]
    fn gateway_of_one_party_claiming_another_is_refused() {
        // gamma vouched for this gateway as gamma; it claims to be alpha.
        let verdict = judge_hello("beta", &cards(), &hello("alpha", "gamma", 3, PEER), PEER);
        assert_eq!(verdict, Verdict::Refuse(RefuseReason::ClaimsOtherParty));
    }

    #[test]
    fn hello_for_another_connection_is_refused() {
        let verdict = judge_hello(
            "beta",
            &cards(),
            &hello("alpha", "alpha", 1, PEER),
            b"the-real-peer",
        );
        assert_eq!(verdict, Verdict::Refuse(RefuseReason::PeerMismatch));
    }

    #[test]
    fn own_party_is_refused() {
        let mut with_self = cards();
        with_self.push(trusted("beta", 2));
        let verdict = judge_hello("beta", &with_self, &hello("beta", "beta", 2, PEER), PEER);
        assert_eq!(verdict, Verdict::Refuse(RefuseReason::OwnParty));
    }

    #[test]
    fn other_versions_are_refused() {
        let mut h = hello("alpha", "alpha", 1, PEER);
        h.version = FED_PROTOCOL_VERSION + 1;
        let verdict = judge_hello("beta", &cards(), &h, PEER);
        assert_eq!(verdict, Verdict::Refuse(RefuseReason::Version));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = RedialBackoff::default();
        assert_eq!(b.delay_ms(0), 0);
        assert_eq!(b.delay_ms(1), 250);
        assert_eq!(b.delay_ms(2), 500);
        assert_eq!(b.delay_ms(10), 5_000);
        assert_eq!(b.delay_ms(u32::MAX), 5_000);
    }
}
