//! The party's replicated federation records (docs/federation.md): the
//! parties it trusts and the services it exports. Each set lives in one
//! register of the party's shard groups, so every node reads the same set
//! and it survives the loss of any minority of a group.
//!
//! A set is edited in place by one CASPaxos round ([`RecordEdit`] applied by
//! the proposer to the value a majority holds), so two operators editing at
//! once never lose each other's change, as a read-then-write would.

use crate::wire::{self, DecodeError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// The register that holds the party's trusted cards, by party name. Job
/// registers are keyed by ids drawn at random; the two at the top of the
/// key space are kept for these sets.
pub const TRUST_REGISTER: u64 = u64::MAX - 1;
/// The register that holds the party's exported services, by
/// [`export_name`].
pub const EXPORTS_REGISTER: u64 = u64::MAX - 2;

/// Most records in one set.
pub const MAX_RECORDS: usize = 1_024;
/// Largest record name.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest record value (a card with many gateway addresses fits).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Largest encoded set: it must fit a mesh stream frame with room to spare.
pub const MAX_SET_BYTES: usize = 512 * 1024;

/// How many edit ids a set remembers: far more edits than can land
/// between two tries of one round.
pub const REMEMBERED_EDITS: usize = 64;

/// A named set of opaque records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    /// Value by name.
    pub records: BTreeMap<String, Vec<u8>>,
    /// Ids of the latest edits applied, newest last: a round retried after
    /// its first try was chosen finds its id here and applies nothing again.
    pub recent_edits: Vec<u64>,
}

/// One change to a [`RecordSet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordEdit {
    /// Adds the record, or replaces the one of that name.
    Put {
        /// The record's name.
        name: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// Removes the record of that name, if there is one.
    Remove {
        /// The record's name.
        name: String,
    },
}

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum RecordError {
    /// The name is empty, too long or holds a control character.
    #[error("record name {0:?} is empty, longer than 256 bytes or holds a control character")]
    BadName(String),
    /// The value is too large.
    #[error("record value of {0} bytes is over the limit of {MAX_VALUE_BYTES}")]
    ValueTooLarge(usize),
    /// The set is full.
    #[error("the set holds {MAX_RECORDS} records already")]
    Full,
    /// The register holds something that is not a record set.
    #[error("the register does not hold a record set: {0}")]
    Corrupt(String),
}

impl RecordSet {
    /// Decodes a register's bytes; an absent register is the empty set.
    pub fn decode(bytes: Option<&[u8]>) -> Result<RecordSet, RecordError> {
        match bytes {
            None => Ok(RecordSet::default()),
            Some(bytes) => wire::decode(bytes, MAX_SET_BYTES)
                .map_err(|e: DecodeError| RecordError::Corrupt(e.to_string())),
        }
    }

    /// The register's bytes.
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Applies `edit`, or says why not (the set is then unchanged).
    pub fn apply(&mut self, edit: &RecordEdit) -> Result<(), RecordError> {
        match edit {
            RecordEdit::Put { name, value } => {
                check_name(name)?;
                if value.len() > MAX_VALUE_BYTES {
                    return Err(RecordError::ValueTooLarge(value.len()));
                }
                if !self.records.contains_key(name) && self.records.len() >= MAX_RECORDS {
                    return Err(RecordError::Full);
                }
                self.records.insert(name.clone(), value.clone());
            }
            RecordEdit::Remove { name } => {
                self.records.remove(name);
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), RecordError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(RecordError::BadName(name.to_string()));
    }
    Ok(())
}

/// The record name of service `service` exported to party `to`.
pub fn export_name(to: &str, service: &str) -> String {
    format!("{to}/{service}")
}

/// Longest service name.
pub const MAX_SERVICE_NAME: usize = 64;

/// One exported service: the TCP service at `127.0.0.1:port` on `node`,
/// open to party `to` through the party's links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    /// The service's name, unique per receiving party.
    pub service: String,
    /// The party it is exported to.
    pub to: String,
    /// The node the service runs on.
    pub node: crate::NodeId,
    /// Its TCP port on that node's loopback.
    pub port: u16,
}

impl ExportRecord {
    /// The record's name and value in the exports set.
    pub fn to_edit(&self) -> RecordEdit {
        RecordEdit::Put {
            name: export_name(&self.to, &self.service),
            value: wire::encode(self),
        }
    }

    /// Decodes a value of the exports set.
    pub fn decode(bytes: &[u8]) -> Result<ExportRecord, RecordError> {
        wire::decode(bytes, MAX_VALUE_BYTES).map_err(|e| RecordError::Corrupt(e.to_string()))
    }
}

/// Whether `name` is a usable service name: 1 to 64 of `A-Za-z0-9._-`.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Applies edit `id` to a register's current bytes, once: the new bytes,
/// or why the edit is refused. The proposer of the round calls this on the
/// value a majority holds.
pub fn edit_register(
    current: Option<&[u8]>,
    id: u64,
    edit: &RecordEdit,
) -> Result<Vec<u8>, RecordError> {
    let mut set = RecordSet::decode(current)?;
    if set.recent_edits.contains(&id) {
        return Ok(set.encode());
    }
    set.apply(edit)?;
    set.recent_edits.push(id);
    if set.recent_edits.len() > REMEMBERED_EDITS {
        set.recent_edits.remove(0);
    }
    Ok(set.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(name: &str, value: &[u8]) -> RecordEdit {
        RecordEdit::Put {
            name: name.into(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn edits_compose_on_the_register_bytes() {
        let a = edit_register(None, 1, &put("beta", b"card-b")).unwrap();
        let b = edit_register(Some(&a), 2, &put("gamma", b"card-g")).unwrap();
        let remove = RecordEdit::Remove {
            name: "beta".into(),
        };
        let c = edit_register(Some(&b), 3, &remove).unwrap();
        let set = RecordSet::decode(Some(&c)).unwrap();
        assert_eq!(set.records.len(), 1);
        assert_eq!(set.records["gamma"], b"card-g");
        // A retried round of edit 1 (chosen already) puts nothing back.
        let d = edit_register(Some(&c), 1, &put("beta", b"card-b")).unwrap();
        assert_eq!(RecordSet::decode(Some(&d)).unwrap().records, set.records);
        // Removing what is not there changes nothing and is no error.
        let e = edit_register(Some(&c), 4, &remove).unwrap();
        assert_eq!(RecordSet::decode(Some(&e)).unwrap().records, set.records);
    }

    #[test]
    fn bad_names_values_and_bytes_are_refused_and_change_nothing() {
        let mut set = RecordSet::default();
        assert!(matches!(
            set.apply(&put("", b"x")),
            Err(RecordError::BadName(_))
        ));
        assert!(matches!(
            set.apply(&put("a\u{1b}[2J", b"x")),
            Err(RecordError::BadName(_))
        ));
        assert!(matches!(
            set.apply(&put("a", &vec![0; MAX_VALUE_BYTES + 1])),
            Err(RecordError::ValueTooLarge(_))
        ));
        assert!(set.records.is_empty());
        assert!(matches!(
            edit_register(Some(b"\xff\xff\xff\xff\xff"), 1, &put("a", b"x")),
            Err(RecordError::Corrupt(_))
        ));
    }

    #[test]
    fn a_full_set_refuses_a_new_name_but_replaces_an_old_one() {
        let mut set = RecordSet::default();
        for i in 0..MAX_RECORDS {
            set.apply(&put(&format!("p{i}"), b"v")).unwrap();
        }
        assert_eq!(set.apply(&put("new", b"v")), Err(RecordError::Full));
        set.apply(&put("p0", b"w")).unwrap();
        assert_eq!(set.records["p0"], b"w");
        assert!(set.encode().len() <= MAX_SET_BYTES);
    }
}
