//! Amounts of a machine that a node offers and a task reserves: CPU in
//! millicores, memory in MiB, and named custom resources (`gpu = 2`).
//! Slots stay their own count beside these (every task takes at least one).
//!
//! A task's request is reserved from the moment its claim starts until its
//! attempt ends; a node takes a task only when its free amounts cover the
//! whole request, so no node is ever over-committed by its own decisions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// Most custom resources one node offers or one task asks for.
pub const MAX_CUSTOM: usize = 16;
/// Longest custom resource name, bytes.
pub const MAX_NAME_BYTES: usize = 32;
/// Largest CPU amount, millicores (a 4096-core machine).
pub const MAX_CPU_MILLI: u32 = 4_096_000;
/// Largest memory amount, MiB (1 PiB).
pub const MAX_MEMORY_MIB: u32 = 1 << 30;

/// CPU, memory and custom amounts. A zero (or absent custom) amount in a
/// request asks for nothing of that kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// CPU, millicores (1000 = one core).
    pub cpu_milli: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Named custom amounts, such as `gpu = 2`.
    pub custom: BTreeMap<String, u32>,
}

/// The first kind of resource an offer cannot cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// `cpu`, `memory` or the custom name.
    pub kind: String,
    /// What was asked, in the kind's unit.
    pub asked: u32,
    /// What the offer has.
    pub have: u32,
}

impl Shortfall {
    /// `asked` and `have` written in the kind's unit (`500m`, `256Mi`, `2`).
    pub fn amounts(&self) -> (String, String) {
        (
            amount_text(&self.kind, self.asked),
            amount_text(&self.kind, self.have),
        )
    }
}

fn amount_text(kind: &str, v: u32) -> String {
    match kind {
        "cpu" => cpu_text(v),
        "memory" => memory_text(v),
        _ => v.to_string(),
    }
}

impl Resources {
    /// CPU and memory only.
    pub fn new(cpu_milli: u32, memory_mib: u32) -> Self {
        Resources {
            cpu_milli,
            memory_mib,
            custom: BTreeMap::new(),
        }
    }

    /// Asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.cpu_milli == 0 && self.memory_mib == 0 && self.custom.values().all(|v| *v == 0)
    }

    /// Every kind `ask` names, with its amount here and asked: cpu, memory,
    /// then the custom names in order. Kinds asked as zero are skipped.
    fn kinds<'a>(&'a self, ask: &'a Resources) -> impl Iterator<Item = Shortfall> + 'a {
        let fixed = [
            ("cpu", ask.cpu_milli, self.cpu_milli),
            ("memory", ask.memory_mib, self.memory_mib),
        ]
        .into_iter()
        .map(|(k, a, h)| (k.to_string(), a, h));
        let custom = ask
            .custom
            .iter()
            .map(|(k, a)| (k.clone(), *a, self.custom.get(k).copied().unwrap_or(0)));
        fixed
            .chain(custom)
            .filter(|(_, asked, _)| *asked > 0)
            .map(|(kind, asked, have)| Shortfall { kind, asked, have })
    }

    /// The kinds this request asks for, with their amounts: cpu, memory,
    /// then the custom names in order; kinds of zero left out.
    pub fn asked(&self) -> Vec<(String, u32)> {
        Resources::default()
            .kinds(self)
            .map(|k| (k.kind, k.asked))
            .collect()
    }

    /// The first kind that these amounts do not cover for `ask`, if any.
    pub fn shortfall(&self, ask: &Resources) -> Option<Shortfall> {
        self.kinds(ask).find(|k| k.asked > k.have)
    }

    /// Whether these amounts cover all of `ask`.
    pub fn covers(&self, ask: &Resources) -> bool {
        self.shortfall(ask).is_none()
    }

    /// How much of kind `kind` these amounts hold.
    pub fn amount(&self, kind: &str) -> u32 {
        match kind {
            "cpu" => self.cpu_milli,
            "memory" => self.memory_mib,
            other => self.custom.get(other).copied().unwrap_or(0),
        }
    }

    /// Takes `ask` out of these amounts (never below zero).
    pub fn take(&mut self, ask: &Resources) {
        self.cpu_milli = self.cpu_milli.saturating_sub(ask.cpu_milli);
        self.memory_mib = self.memory_mib.saturating_sub(ask.memory_mib);
        for (k, v) in &ask.custom {
            if let Some(have) = self.custom.get_mut(k) {
                *have = have.saturating_sub(*v);
            }
        }
    }

    /// Adds `more` to these amounts.
    pub fn add(&mut self, more: &Resources) {
        self.cpu_milli = self.cpu_milli.saturating_add(more.cpu_milli);
        self.memory_mib = self.memory_mib.saturating_add(more.memory_mib);
        for (k, v) in &more.custom {
            let have = self.custom.entry(k.clone()).or_insert(0);
            *have = have.saturating_add(*v);
        }
    }

    /// Checks the limits: names, counts and amounts.
    pub fn validate(&self) -> Result<(), ResourceError> {
        if self.cpu_milli > MAX_CPU_MILLI {
            return Err(ResourceError::TooLarge {
                kind: "cpu".into(),
                got: cpu_text(self.cpu_milli),
                limit: cpu_text(MAX_CPU_MILLI),
            });
        }
        if self.memory_mib > MAX_MEMORY_MIB {
            return Err(ResourceError::TooLarge {
                kind: "memory".into(),
                got: memory_text(self.memory_mib),
                limit: memory_text(MAX_MEMORY_MIB),
            });
        }
        if self.custom.len() > MAX_CUSTOM {
            return Err(ResourceError::TooMany(self.custom.len()));
        }
        self.custom.keys().try_for_each(|k| check_name(k))
    }
}

impl fmt::Display for Resources {
    /// `cpu=500m,memory=256Mi,gpu=1`, kinds of zero left out; `none` if empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.cpu_milli > 0 {
            parts.push(format!("cpu={}", cpu_text(self.cpu_milli)));
        }
        if self.memory_mib > 0 {
            parts.push(format!("memory={}", memory_text(self.memory_mib)));
        }
        parts.extend(
            self.custom
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}={v}")),
        );
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// Why an amount or a resource name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResourceError {
    /// Not a CPU amount.
    #[error("cpu {0:?}: want millicores such as 500m, or cores such as 0.5")]
    Cpu(String),
    /// Not a memory amount.
    #[error("memory {0:?}: want an amount such as 256Mi, 4Gi or 1Ti (a plain number is MiB)")]
    Memory(String),
    /// Not `NAME=COUNT`.
    #[error("resource {0:?}: want NAME=COUNT, such as gpu=1")]
    Custom(String),
    /// A bad custom resource name.
    #[error("resource name {0:?}: want 1..={MAX_NAME_BYTES} of a-z, 0-9, '-', '_', not cpu, memory or slots")]
    Name(String),
    /// Above the limit of its kind.
    #[error("{kind} {got} is above the limit of {limit}")]
    TooLarge {
        /// The kind.
        kind: String,
        /// What was given.
        got: String,
        /// The limit.
        limit: String,
    },
    /// Too many custom kinds.
    #[error("{0} custom resources; at most {MAX_CUSTOM}")]
    TooMany(usize),
}

fn check_name(name: &str) -> Result<(), ResourceError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !matches!(name, "cpu" | "memory" | "slots");
    if ok {
        Ok(())
    } else {
        Err(ResourceError::Name(name.to_string()))
    }
}

/// Parses `500m` (millicores), `2` or `0.5` (cores).
pub fn parse_cpu(text: &str) -> Result<u32, ResourceError> {
    let bad = || ResourceError::Cpu(text.to_string());
    let t = text.trim();
    let milli = if let Some(m) = t.strip_suffix('m') {
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        if whole.is_empty() && frac.is_empty() || frac.len() > 3 {
            return Err(bad());
        }
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(frac) {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac_milli: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<3}").parse().map_err(|_| bad())?
        };
        whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(frac_milli))
            .ok_or_else(bad)?
    };
    let milli = u32::try_from(milli).map_err(|_| bad())?;
    if milli > MAX_CPU_MILLI {
        return Err(ResourceError::TooLarge {
            kind: "cpu".into(),
            got: cpu_text(milli),
            limit: cpu_text(MAX_CPU_MILLI),
        });
    }
    Ok(milli)
}

/// Parses a task's CPU request: a plain integer is millicores (`250`, as
/// `--cpu MILLI|Nm` promises), else as [`parse_cpu`] (`500m`, `0.5`).
pub fn parse_cpu_request(text: &str) -> Result<u32, ResourceError> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        parse_cpu(&format!("{t}m"))
    } else {
        parse_cpu(t)
    }
}

/// Parses `256Mi`, `4Gi`, `1Ti` or a plain number of MiB.
pub fn parse_memory(text: &str) -> Result<u32, ResourceError> {
    let bad = || ResourceError::Memory(text.to_string());
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let factor: u64 = match unit {
        "" | "Mi" => 1,
        "Gi" => 1024,
        "Ti" => 1024 * 1024,
        _ => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let mib = n.checked_mul(factor).ok_or_else(bad)?;
    if mib > u64::from(MAX_MEMORY_MIB) {
        return Err(ResourceError::TooLarge {
            kind: "memory".into(),
            got: text.to_string(),
            limit: memory_text(MAX_MEMORY_MIB),
        });
    }
    u32::try_from(mib).map_err(|_| bad())
}

/// Parses `NAME=COUNT`.
pub fn parse_custom(text: &str) -> Result<(String, u32), ResourceError> {
    let bad = || ResourceError::Custom(text.to_string());
    let (name, count) = text.split_once('=').ok_or_else(bad)?;
    check_name(name.trim())?;
    let count = count.trim().parse::<u32>().map_err(|_| bad())?;
    Ok((name.trim().to_string(), count))
}

/// Millicores as people write them: `2` for whole cores, else `1500m`.
pub fn cpu_text(milli: u32) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// MiB as people write them: `4Gi` when whole, else `300Mi`.
pub fn memory_text(mib: u32) -> String {
    if mib > 0 && mib.is_multiple_of(1024) {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_amounts_parse_as_millicores_or_cores() {
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("0.25"), Ok(250));
        assert_eq!(parse_cpu("1.5"), Ok(1500));
        assert_eq!(parse_cpu(".5"), Ok(500));
        for bad in ["", "m", "-1", "1.2345", "abc", "1e3", "2 cores", "."] {
            assert!(parse_cpu(bad).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            parse_cpu("5000"),
            Err(ResourceError::TooLarge { .. })
        ));
        assert_eq!(parse_cpu_request("250"), Ok(250));
        assert_eq!(parse_cpu_request("500m"), Ok(500));
        assert_eq!(parse_cpu_request("0.5"), Ok(500));
        assert!(parse_cpu_request("two").is_err());
    }

    #[test]
    fn memory_amounts_parse_as_mib() {
        assert_eq!(parse_memory("256Mi"), Ok(256));
        assert_eq!(parse_memory("4Gi"), Ok(4096));
        assert_eq!(parse_memory("512"), Ok(512));
        assert_eq!(parse_memory("1Ti"), Ok(1 << 20));
        for bad in ["", "Mi", "4GB", "4gi", "-1Mi", "1.5Gi"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            parse_memory("2048Ti"),
            Err(ResourceError::TooLarge { .. })
        ));
    }

    #[test]
    fn custom_resources_need_a_plain_name_and_a_count() {
        assert_eq!(parse_custom("gpu=2"), Ok(("gpu".into(), 2)));
        for bad in ["gpu", "gpu=", "gpu=-1", "=1", "GPU=1", "cpu=1", "g\u{1b}=1"] {
            assert!(parse_custom(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn an_offer_covers_a_request_only_in_every_kind_it_asks_for() {
        let mut node = Resources::new(2000, 1024);
        node.custom.insert("gpu".into(), 1);
        let mut ask = Resources::new(500, 256);
        assert!(node.covers(&ask));
        ask.custom.insert("gpu".into(), 2);
        assert_eq!(
            node.shortfall(&ask),
            Some(Shortfall {
                kind: "gpu".into(),
                asked: 2,
                have: 1
            })
        );
        ask.custom.insert("tpu".into(), 1);
        ask.custom.remove("gpu");
        assert_eq!(node.shortfall(&ask).map(|s| s.kind), Some("tpu".into()));
        let memory = Resources::new(0, 2048);
        assert_eq!(
            node.shortfall(&memory).map(|s| s.amounts()),
            Some(("2Gi".into(), "1Gi".into()))
        );
        assert!(node.covers(&Resources::default()));
    }

    #[test]
    fn taking_and_giving_back_a_request_restores_the_free_amounts() {
        let mut node = Resources::new(2000, 1024);
        node.custom.insert("gpu".into(), 2);
        let before = node.clone();
        let mut ask = Resources::new(1500, 1000);
        ask.custom.insert("gpu".into(), 1);
        node.take(&ask);
        assert_eq!(node.cpu_milli, 500);
        assert!(!node.covers(&ask));
        node.add(&ask);
        assert_eq!(node, before);
        assert_eq!(ask.to_string(), "cpu=1500m,memory=1000Mi,gpu=1");
        assert_eq!(Resources::default().to_string(), "none");
    }
}
