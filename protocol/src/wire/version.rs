//! The version of the wire format, and which versions an agent reads.
//!
//! The version travels once per connection, as the QUIC connection's ALPN
//! protocol `shoal/<version>`: the dialler offers every version it reads,
//! newest first, and the listener picks the newest it reads too. Every
//! frame on that connection (membership, Paxos, task, tunnel) is then in
//! the negotiated version, so no frame carries a version of its own.
//!
//! A listener also accepts, in the handshake, the versions it knows of but
//! cannot read (up to [`WIRE_VERSION_KNOWN_MAX`]), only to close the
//! connection at once with a reason naming both sides' versions: that way
//! both ends can say why, instead of a bare TLS `no_application_protocol`
//! alert. The decision is [`WireVersions::readable`]; the host applies it.

use thiserror::Error;

/// A wire format version.
pub type WireVersion = u16;

/// The wire version this build speaks (and offers first).
pub const WIRE_VERSION: WireVersion = 1;

/// The versions this build reads, newest first.
pub const WIRE_VERSIONS_READ: &[WireVersion] = &[WIRE_VERSION];

/// The highest version a listener completes a handshake for just to say
/// it cannot read it. Versions above are refused by the TLS handshake
/// itself (`no_application_protocol`).
pub const WIRE_VERSION_KNOWN_MAX: WireVersion = 64;

/// The ALPN prefix; the version follows in decimal.
pub const ALPN_PREFIX: &str = "shoal/";

/// Why a peer's wire version is refused. Nothing is changed: the caller
/// closes the connection, logs and counts.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum VersionError {
    /// The peer speaks a version this agent cannot read.
    #[error("wire version {} is not readable: this agent reads {}", alpn_name(*found), list(reads))]
    Unreadable {
        /// The peer's version.
        found: WireVersion,
        /// What this agent reads, newest first.
        reads: Vec<WireVersion>,
    },
    /// The connection's ALPN protocol is not `shoal/<version>`.
    #[error("ALPN protocol {found:?} is not shoal/<version>")]
    NotShoal {
        /// The protocol as received (lossy UTF-8).
        found: String,
    },
    /// The connection negotiated no ALPN protocol at all.
    #[error("no ALPN protocol was negotiated")]
    Missing,
}

/// A version list for messages: `shoal/1` or `shoal/2, shoal/1`.
pub fn list(versions: &[WireVersion]) -> String {
    let names: Vec<String> = versions.iter().map(|v| alpn_name(*v)).collect();
    names.join(", ")
}

/// `shoal/<version>`.
pub fn alpn_name(version: WireVersion) -> String {
    format!("{ALPN_PREFIX}{version}")
}

/// The version an ALPN protocol names.
pub fn parse_alpn(protocol: Option<&[u8]>) -> Result<WireVersion, VersionError> {
    let protocol = protocol.ok_or(VersionError::Missing)?;
    let not_shoal = || VersionError::NotShoal {
        found: String::from_utf8_lossy(protocol).into_owned(),
    };
    let text = std::str::from_utf8(protocol).map_err(|_| not_shoal())?;
    let digits = text.strip_prefix(ALPN_PREFIX).ok_or_else(not_shoal)?;
    // Canonical decimal only: one spelling per version.
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(not_shoal());
    }
    digits.parse().map_err(|_| not_shoal())
}

/// The wire versions one agent reads: this build's, or (in tests) another
/// build's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireVersions {
    /// Newest first, never empty, no duplicates.
    reads: Vec<WireVersion>,
}

impl Default for WireVersions {
    fn default() -> Self {
        WireVersions::current()
    }
}

impl WireVersions {
    /// What this build reads.
    pub fn current() -> WireVersions {
        WireVersions::new(WIRE_VERSIONS_READ)
    }

    /// An agent reading exactly `reads` (at least one version; order and
    /// duplicates do not matter).
    pub fn new(reads: &[WireVersion]) -> WireVersions {
        assert!(!reads.is_empty(), "an agent reads at least one version");
        let mut reads = reads.to_vec();
        reads.sort_unstable_by(|a, b| b.cmp(a));
        reads.dedup();
        WireVersions { reads }
    }

    /// The versions read, newest first.
    pub fn reads(&self) -> &[WireVersion] {
        &self.reads
    }

    /// The newest version read: what this agent speaks when it can.
    pub fn newest(&self) -> WireVersion {
        self.reads[0]
    }

    /// Whether a peer's version can be read.
    pub fn readable(&self, version: WireVersion) -> Result<(), VersionError> {
        if self.reads.contains(&version) {
            Ok(())
        } else {
            Err(VersionError::Unreadable {
                found: version,
                reads: self.reads.clone(),
            })
        }
    }

    /// Whether a connection's negotiated ALPN protocol can be read.
    pub fn readable_alpn(&self, protocol: Option<&[u8]>) -> Result<WireVersion, VersionError> {
        let version = parse_alpn(protocol)?;
        self.readable(version)?;
        Ok(version)
    }

    /// The ALPN protocols a dialler offers: every version read, newest
    /// first.
    pub fn alpn_offer(&self) -> Vec<Vec<u8>> {
        self.reads
            .iter()
            .map(|v| alpn_name(*v).into_bytes())
            .collect()
    }

    /// The ALPN protocols a listener accepts, in its order of preference:
    /// the versions read, newest first, then every other known version
    /// (accepted only to be refused with a reason).
    pub fn alpn_accept(&self) -> Vec<Vec<u8>> {
        let others = (1..=WIRE_VERSION_KNOWN_MAX.max(self.newest()))
            .rev()
            .filter(|v| !self.reads.contains(v))
            .map(|v| alpn_name(v).into_bytes());
        self.alpn_offer().into_iter().chain(others).collect()
    }
}

/// Whether this build reads a peer's version.
pub fn readable(version: WireVersion) -> Result<(), VersionError> {
    WireVersions::current().readable(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_reads_its_own_version_and_refuses_others() {
        assert_eq!(readable(WIRE_VERSION), Ok(()));
        let err = readable(WIRE_VERSION + 1).unwrap_err();
        assert_eq!(
            err,
            VersionError::Unreadable {
                found: WIRE_VERSION + 1,
                reads: vec![WIRE_VERSION]
            }
        );
        assert_eq!(
            err.to_string(),
            "wire version shoal/2 is not readable: this agent reads shoal/1"
        );
        assert!(readable(0).is_err());
    }

    #[test]
    fn alpn_names_parse_in_one_spelling_only() {
        assert_eq!(parse_alpn(Some(b"shoal/1")), Ok(1));
        assert_eq!(parse_alpn(Some(b"shoal/65535")), Ok(65535));
        for bad in [
            &b"shoal/"[..],
            b"shoal/01",
            b"shoal/+1",
            b"shoal/1 ",
            b"shoal/65536",
            b"h3",
            b"shoal/\xff",
            b"",
        ] {
            assert!(
                matches!(parse_alpn(Some(bad)), Err(VersionError::NotShoal { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(parse_alpn(None), Err(VersionError::Missing));
    }

    #[test]
    fn a_listener_prefers_the_newest_version_both_read_and_accepts_others_only_to_refuse_them() {
        let v2 = WireVersions::new(&[1, 2]);
        assert_eq!(v2.reads(), &[2, 1]);
        assert_eq!(
            v2.alpn_offer(),
            vec![b"shoal/2".to_vec(), b"shoal/1".to_vec()]
        );
        let accept = v2.alpn_accept();
        assert_eq!(&accept[..2], &v2.alpn_offer()[..]);
        assert_eq!(accept[2], b"shoal/64".to_vec());
        assert_eq!(accept.len(), usize::from(WIRE_VERSION_KNOWN_MAX));
        // Every accepted protocol parses, and exactly the read ones pass.
        let passing: Vec<WireVersion> = accept
            .iter()
            .filter_map(|p| v2.readable_alpn(Some(p)).ok())
            .collect();
        assert_eq!(passing, vec![2, 1]);
        let v1 = WireVersions::current();
        assert!(matches!(
            v1.readable_alpn(Some(b"shoal/2")),
            Err(VersionError::Unreadable { found: 2, .. })
        ));
    }

    #[test]
    fn a_version_beyond_the_known_range_is_still_accepted_by_its_own_kind() {
        let far = WireVersions::new(&[500]);
        let accept = far.alpn_accept();
        assert_eq!(accept[0], b"shoal/500".to_vec());
        assert!(accept.contains(&b"shoal/1".to_vec()));
        assert!(accept.len() <= 500);
    }
}
