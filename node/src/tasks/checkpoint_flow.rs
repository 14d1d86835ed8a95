//! Checkpoint saves and restores as the host carries them out.
//!
//! A save (`shoal checkpoint save FILE` inside an attempt) sends every
//! chunk to every member of the task's shard group, counts the durable
//! ones in the protocol's [`SaveTally`], and once a majority holds them all
//! asks the coordinator to name the checkpoint in the task record, which
//! only the current attempt on its holder may do. A restore (the claim of
//! an attempt whose record names a checkpoint) fetches each chunk from the
//! first holder that has it, checks size and digest, and writes the file
//! the attempt finds at `$SHOAL_CHECKPOINT`. The rules are the protocol's
//! ([`shoal_protocol::tasks::checkpoint`]); this module moves bytes.

use super::checkpoint::CheckpointDir;
use super::mesh::TaskMessage;
use super::{TaskError, REQUEST_TIMEOUT};
use crate::transport::Transport;
use shoal_protocol::coordinator::{Coordinator, OpError, RequestId};
use shoal_protocol::tasks::checkpoint::{
    chunk_range, digest, CheckpointMeta, SaveTally, SaveVerdict, MAX_CHECKPOINT_BYTES,
};
use shoal_protocol::tasks::{Refusal, TaskId, TaskSpec};
use shoal_protocol::wire::{self, Channel};
use shoal_protocol::{Instant, NodeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// Saves in flight on this node, at most (each holds up to 16 MiB).
const MAX_SAVES: usize = 16;

/// What a save answers: the checkpoint the record now names.
pub type SaveReply = oneshot::Sender<Result<CheckpointMeta, TaskError>>;

/// A disk operation of this node finished (it ran off the host's loop).
#[derive(Debug)]
pub enum LocalDone {
    /// A chunk of one of our saves was stored here.
    Stored {
        /// The save.
        req: u64,
        /// The chunk.
        index: u32,
        /// Durable, or why not.
        result: Result<(), String>,
    },
    /// A chunk of one of our restores was read here.
    Read {
        /// The restore.
        req: u64,
        /// The chunk.
        index: u32,
        /// Its bytes, or why not.
        result: Result<Vec<u8>, String>,
    },
    /// A restore's file was written.
    Assembled {
        /// The restore.
        req: u64,
        /// Its path, or why not.
        result: Result<PathBuf, String>,
    },
}

/// A holder's answer about one chunk.
#[derive(Debug)]
pub struct ChunkAnswer<T> {
    /// The save or restore it belongs to.
    pub req: u64,
    /// The chunk.
    pub index: u32,
    /// Done (with the bytes of a read), or why not.
    pub result: Result<T, String>,
}

/// How the host reaches the other members.
pub struct Net<'a> {
    /// The mesh transport.
    pub transport: &'a Transport,
    /// A live member's address.
    pub addr_of: Box<dyn Fn(NodeId) -> Option<SocketAddr> + 'a>,
}

impl Net<'_> {
    fn send(&self, to: NodeId, m: &TaskMessage) -> bool {
        match (self.addr_of)(to) {
            Some(addr) => {
                self.transport
                    .send(Channel::Task, addr, true, &wire::encode(m));
                true
            }
            None => false,
        }
    }
}

/// An attempt ready to start once its checkpoint is in place.
#[derive(Debug)]
pub struct Resume {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: u64,
    /// What it runs.
    pub spec: TaskSpec,
    /// Its lease's latest end.
    pub lease_valid_until: Instant,
    /// `$SHOAL_CHECKPOINT`.
    pub path: PathBuf,
}

/// What the host does after a restore made progress.
#[derive(Debug)]
pub enum RestoreStep {
    /// Start the attempt.
    Start(Box<Resume>),
    /// Report the attempt failed to start, with this reason.
    Fail {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u64,
        /// Why.
        reason: String,
    },
}

struct SaveOp {
    task: TaskId,
    meta: CheckpointMeta,
    tally: SaveTally,
    previous: Option<CheckpointMeta>,
    reply: SaveReply,
    since: std::time::Instant,
    committing: bool,
}

struct RestoreOp {
    task: TaskId,
    attempt: u64,
    spec: TaskSpec,
    lease_valid_until: Instant,
    meta: CheckpointMeta,
    /// Holders in the order they are asked (this node first).
    sources: Vec<NodeId>,
    chunks: Vec<Option<Vec<u8>>>,
    /// Per chunk: the source asked now.
    asking: Vec<usize>,
    errors: Vec<String>,
    since: std::time::Instant,
}

/// The host's checkpoint state.
pub struct Checkpoints {
    dir: CheckpointDir,
    me: NodeId,
    next_req: u64,
    saves: HashMap<u64, SaveOp>,
    committing: HashMap<RequestId, u64>,
    restores: HashMap<u64, RestoreOp>,
    /// The checkpoint each attempt running here last knew, to discard once
    /// it is superseded or its task is final.
    latest: HashMap<TaskId, (u64, Option<CheckpointMeta>)>,
    local_tx: mpsc::UnboundedSender<LocalDone>,
}

impl Checkpoints {
    /// The state of an agent with data directory `dir`; its disk results
    /// arrive on the returned receiver.
    pub fn new(dir: CheckpointDir, me: NodeId) -> (Self, mpsc::UnboundedReceiver<LocalDone>) {
        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let c = Checkpoints {
            dir,
            me,
            next_req: 1,
            saves: HashMap::new(),
            committing: HashMap::new(),
            restores: HashMap::new(),
            latest: HashMap::new(),
            local_tx,
        };
        (c, local_rx)
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    // ----- saves ----------------------------------------------------------

    /// Starts a save of `bytes` by attempt `attempt` of `task`.
    #[allow(clippy::too_many_arguments)]
    pub fn save(
        &mut self,
        now: Instant,
        wall_ms: u64,
        coord: &mut Coordinator,
        net: &Net<'_>,
        task: TaskId,
        attempt: u64,
        bytes: Vec<u8>,
        reply: SaveReply,
    ) {
        let refuse = |reply: SaveReply, e| {
            let _ = reply.send(Err(e));
        };
        if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
            return refuse(
                reply,
                TaskError::Invalid(format!(
                    "checkpoint: {} bytes is larger than the limit of {MAX_CHECKPOINT_BYTES} bytes",
                    bytes.len()
                )),
            );
        }
        let held = coord
            .held_leases(now)
            .iter()
            .any(|l| l.task == task && l.attempt == attempt);
        if !held {
            return refuse(
                reply,
                TaskError::Conflict(format!(
                    "attempt {attempt} of task {task} does not run on this node (it was fenced, ended, or runs elsewhere): the save is refused"
                )),
            );
        }
        if self.saves.len() >= MAX_SAVES {
            return refuse(
                reply,
                TaskError::Unavailable("too many checkpoint saves in flight".into()),
            );
        }
        let Some(holders) = coord.checkpoint_holders(task) else {
            return refuse(
                reply,
                TaskError::Unavailable(format!("the shard group of task {task} is not known yet")),
            );
        };
        let meta = CheckpointMeta {
            attempt,
            generation: rand::random(),
            size: bytes.len() as u64,
            digest: digest(&bytes),
            saved_at_ms: wall_ms,
            holders: holders.clone(),
        };
        let req = self.req();
        let mut tally = SaveTally::new(holders.clone(), meta.chunks());
        for holder in holders {
            if holder == self.me {
                let (dir, tx, generation) =
                    (self.dir.clone(), self.local_tx.clone(), meta.generation);
                let bytes = bytes.clone();
                let chunks = meta.chunks();
                tokio::task::spawn_blocking(move || {
                    for index in 0..chunks {
                        let piece = &bytes[chunk_range(index, bytes.len() as u64)];
                        let result = dir
                            .put(task, generation, index, piece)
                            .map_err(|e| e.to_string());
                        let _ = tx.send(LocalDone::Stored { req, index, result });
                    }
                });
                continue;
            }
            let mut reached = true;
            for index in 0..meta.chunks() {
                let m = TaskMessage::CheckpointPut {
                    req,
                    task,
                    generation: meta.generation,
                    index,
                    bytes: bytes[chunk_range(index, meta.size)].to_vec(),
                };
                reached &= net.send(holder, &m);
            }
            if !reached {
                tally.failed(holder);
            }
        }
        let previous = self
            .latest
            .get(&task)
            .filter(|(a, _)| *a == attempt)
            .and_then(|(_, m)| m.clone());
        self.saves.insert(
            req,
            SaveOp {
                task,
                meta,
                tally,
                previous,
                reply,
                since: std::time::Instant::now(),
                committing: false,
            },
        );
        self.advance_save(now, coord, net, req);
    }

    /// A holder answered a chunk of save `req`.
    pub fn on_stored(
        &mut self,
        now: Instant,
        coord: &mut Coordinator,
        net: &Net<'_>,
        holder: NodeId,
        answer: ChunkAnswer<()>,
    ) {
        let ChunkAnswer { req, index, result } = answer;
        let Some(op) = self.saves.get_mut(&req) else {
            return;
        };
        match result {
            Ok(()) => op.tally.stored(holder, index),
            Err(e) => {
                tracing::warn!(task = %op.task, holder = %holder.to_hex(), error = %e, "a holder could not store a checkpoint chunk");
                op.tally.failed(holder);
            }
        }
        self.advance_save(now, coord, net, req);
    }

    fn advance_save(&mut self, now: Instant, coord: &mut Coordinator, net: &Net<'_>, req: u64) {
        let Some(op) = self.saves.get_mut(&req) else {
            return;
        };
        if op.committing {
            return;
        }
        match op.tally.verdict() {
            SaveVerdict::Waiting => {}
            SaveVerdict::Durable => match coord.save_checkpoint(now, op.task, op.meta.clone()) {
                Ok(request) => {
                    op.committing = true;
                    self.committing.insert(request, req);
                }
                Err(e) => {
                    let op = self.saves.remove(&req).expect("present");
                    self.discard(net, &op.meta.holders, op.task, op.meta.generation);
                    let _ = op.reply.send(Err(TaskError::Unavailable(e.to_string())));
                }
            },
            SaveVerdict::Lost => {
                let op = self.saves.remove(&req).expect("present");
                self.discard(net, &op.meta.holders, op.task, op.meta.generation);
                let _ = op.reply.send(Err(TaskError::Unavailable(format!(
                    "no majority of the {} holders of task {}'s shard group could store the checkpoint",
                    op.meta.holders.len(),
                    op.task
                ))));
            }
        }
    }

    /// The coordinator's answer to a save's commit (`Effect::CheckpointSaved`).
    /// `false` if the request was not one of ours.
    pub fn on_saved(
        &mut self,
        net: &Net<'_>,
        request: RequestId,
        result: Result<(), OpError>,
    ) -> bool {
        let Some(req) = self.committing.remove(&request) else {
            return false;
        };
        let Some(op) = self.saves.remove(&req) else {
            return true;
        };
        match result {
            Ok(()) => {
                if let Some(prev) = &op.previous {
                    if prev.generation != op.meta.generation {
                        self.discard(net, &prev.holders, op.task, prev.generation);
                    }
                }
                self.latest
                    .insert(op.task, (op.meta.attempt, Some(op.meta.clone())));
                let _ = op.reply.send(Ok(op.meta));
            }
            Err(e) => {
                self.discard(net, &op.meta.holders, op.task, op.meta.generation);
                let error = match e {
                    OpError::Refused(Refusal::StaleAttempt { asked, have }) => {
                        TaskError::Conflict(format!(
                            "attempt {asked} is fenced (attempt {have} of task {} is current): the save is refused",
                            op.task
                        ))
                    }
                    OpError::Refused(Refusal::Final) => TaskError::Conflict(format!(
                        "task {} is final: the save is refused",
                        op.task
                    )),
                    OpError::Refused(Refusal::Missing) => {
                        TaskError::NotFound(op.task.to_string())
                    }
                    e => TaskError::Unavailable(format!("checkpoint not saved: {e}")),
                };
                let _ = op.reply.send(Err(error));
            }
        }
        true
    }

    fn discard(&self, net: &Net<'_>, holders: &[NodeId], task: TaskId, generation: u64) {
        for &holder in holders {
            if holder == self.me {
                let dir = self.dir.clone();
                tokio::task::spawn_blocking(move || dir.discard(task, generation));
            } else {
                net.send(holder, &TaskMessage::CheckpointDiscard { task, generation });
            }
        }
    }

    // ----- the holder's side ---------------------------------------------

    /// Serves a peer's checkpoint message; `false` if it is not one.
    pub fn serve(&self, net: &Net<'_>, from: NodeId, m: TaskMessage) -> Option<TaskMessage> {
        match m {
            TaskMessage::CheckpointPut {
                req,
                task,
                generation,
                index,
                bytes,
            } => {
                let (dir, transport, addr) =
                    (self.dir.clone(), net.transport.clone(), (net.addr_of)(from));
                tokio::task::spawn_blocking(move || {
                    let result = dir
                        .put(task, generation, index, &bytes)
                        .map_err(|e| e.to_string());
                    if let Some(addr) = addr {
                        let reply = TaskMessage::CheckpointStored { req, index, result };
                        transport.send(Channel::Task, addr, true, &wire::encode(&reply));
                    }
                });
                None
            }
            TaskMessage::CheckpointGet {
                req,
                task,
                generation,
                index,
            } => {
                let (dir, transport, addr) =
                    (self.dir.clone(), net.transport.clone(), (net.addr_of)(from));
                tokio::task::spawn_blocking(move || {
                    let result = dir.get(task, generation, index).map_err(|e| e.to_string());
                    if let Some(addr) = addr {
                        let reply = TaskMessage::CheckpointChunk { req, index, result };
                        transport.send(Channel::Task, addr, true, &wire::encode(&reply));
                    }
                });
                None
            }
            TaskMessage::CheckpointDiscard { task, generation } => {
                let dir = self.dir.clone();
                tokio::task::spawn_blocking(move || dir.discard(task, generation));
                None
            }
            other => Some(other),
        }
    }

    // ----- restores -------------------------------------------------------

    /// An attempt won here; with a checkpoint it starts once the file is
    /// in place (`None` now), without one at once.
    pub fn attempt_won(
        &mut self,
        net: &Net<'_>,
        task: TaskId,
        attempt: u64,
        spec: TaskSpec,
        lease_valid_until: Instant,
        checkpoint: Option<CheckpointMeta>,
    ) -> Option<(TaskSpec, Instant)> {
        self.latest.insert(task, (attempt, checkpoint.clone()));
        let Some(meta) = checkpoint else {
            return Some((spec, lease_valid_until));
        };
        let mut sources = meta.holders.clone();
        sources.sort_by_key(|h| *h != self.me);
        let chunks = meta.chunks() as usize;
        let req = self.req();
        self.restores.insert(
            req,
            RestoreOp {
                task,
                attempt,
                spec,
                lease_valid_until,
                meta,
                sources,
                chunks: vec![None; chunks],
                asking: vec![0; chunks],
                errors: Vec::new(),
                since: std::time::Instant::now(),
            },
        );
        for index in 0..chunks as u32 {
            self.ask(net, req, index);
        }
        if chunks == 0 {
            self.assemble(req);
        }
        None
    }

    /// Asks the current source of chunk `index`; moves on past sources that
    /// cannot be reached.
    /// Asks the next source for chunk `index`; `false` when none is left.
    fn ask(&mut self, net: &Net<'_>, req: u64, index: u32) -> bool {
        let Some(op) = self.restores.get_mut(&req) else {
            return false;
        };
        while let Some(&source) = op.sources.get(op.asking[index as usize]) {
            let (task, generation) = (op.task, op.meta.generation);
            if source == self.me {
                let (dir, tx) = (self.dir.clone(), self.local_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let result = dir.get(task, generation, index).map_err(|e| e.to_string());
                    let _ = tx.send(LocalDone::Read { req, index, result });
                });
                return true;
            }
            let m = TaskMessage::CheckpointGet {
                req,
                task,
                generation,
                index,
            };
            if net.send(source, &m) {
                return true;
            }
            op.errors
                .push(format!("holder {} is not a live member", source.to_hex()));
            op.asking[index as usize] += 1;
        }
        false
    }

    /// A source answered chunk `index` of restore `req`.
    pub fn on_chunk(&mut self, net: &Net<'_>, answer: ChunkAnswer<Vec<u8>>) -> Option<RestoreStep> {
        let ChunkAnswer { req, index, result } = answer;
        let op = self.restores.get_mut(&req)?;
        let slot = op.chunks.get_mut(index as usize)?;
        match result {
            Ok(bytes) if bytes.len() == chunk_range(index, op.meta.size).len() => {
                *slot = Some(bytes);
            }
            other => {
                let why = match other {
                    Ok(b) => format!("chunk {index} has {} bytes", b.len()),
                    Err(e) => e,
                };
                op.errors.push(why);
                op.asking[index as usize] += 1;
                if self.ask(net, req, index) {
                    return None;
                }
                return self.fail(req);
            }
        }
        if op.chunks.iter().all(Option::is_some) {
            return self.assemble(req);
        }
        None
    }

    fn assemble(&mut self, req: u64) -> Option<RestoreStep> {
        let op = self.restores.get(&req)?;
        let bytes: Vec<u8> = op.chunks.iter().flatten().flatten().copied().collect();
        if bytes.len() as u64 != op.meta.size || digest(&bytes) != op.meta.digest {
            let op = self.restores.get_mut(&req)?;
            op.errors
                .push("the assembled bytes do not match the checkpoint's digest".into());
            return self.fail(req);
        }
        let (dir, tx, task, attempt) =
            (self.dir.clone(), self.local_tx.clone(), op.task, op.attempt);
        tokio::task::spawn_blocking(move || {
            let result = dir
                .write_restore(task, attempt, &bytes)
                .map_err(|e| e.to_string());
            let _ = tx.send(LocalDone::Assembled { req, result });
        });
        None
    }

    /// The restore's file was written (or not).
    pub fn on_assembled(
        &mut self,
        req: u64,
        result: Result<PathBuf, String>,
    ) -> Option<RestoreStep> {
        match result {
            Ok(path) => {
                let op = self.restores.remove(&req)?;
                Some(RestoreStep::Start(Box::new(Resume {
                    task: op.task,
                    attempt: op.attempt,
                    spec: op.spec,
                    lease_valid_until: op.lease_valid_until,
                    path,
                })))
            }
            Err(e) => {
                self.restores.get_mut(&req)?.errors.push(e);
                self.fail(req)
            }
        }
    }

    fn fail(&mut self, req: u64) -> Option<RestoreStep> {
        let op = self.restores.remove(&req)?;
        Some(RestoreStep::Fail {
            task: op.task,
            attempt: op.attempt,
            reason: format!(
                "checkpoint of attempt {} unavailable: {}",
                op.meta.attempt,
                op.errors.join("; ")
            ),
        })
    }

    /// A lease renewal of an attempt still restoring: `true` if it was one.
    pub fn lease_extended(&mut self, task: TaskId, attempt: u64, valid_until: Instant) -> bool {
        match self
            .restores
            .values_mut()
            .find(|r| r.task == task && r.attempt == attempt)
        {
            Some(r) => {
                r.lease_valid_until = valid_until;
                true
            }
            None => false,
        }
    }

    /// Drops a restore whose attempt is to be killed: `true` if it was one
    /// (the attempt never started; the host reports its end).
    pub fn abandon(&mut self, task: TaskId, attempt: u64) -> bool {
        let before = self.restores.len();
        self.restores
            .retain(|_, r| !(r.task == task && r.attempt == attempt));
        self.restores.len() != before
    }

    /// Attempt `attempt` of `task` ended here: its restored file goes.
    pub fn attempt_ended(&self, task: TaskId, attempt: u64) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || dir.remove_restore(task, attempt));
    }

    /// The record of `task` moved on after an attempt of this node; when
    /// it is final no attempt will read its checkpoint again.
    pub fn committed(&mut self, net: &Net<'_>, task: TaskId, attempt: u64, is_final: bool) {
        let Some((a, meta)) = self.latest.get(&task) else {
            return;
        };
        if *a != attempt {
            return;
        }
        if let (true, Some(meta)) = (is_final, meta) {
            self.discard(net, &meta.holders, task, meta.generation);
        }
        self.latest.remove(&task);
    }

    /// Ends saves and restores that waited too long. Saves answer
    /// unavailable; restores come back as failures for the host to report.
    pub fn sweep(&mut self, net: &Net<'_>) -> Vec<RestoreStep> {
        let old: Vec<u64> = self
            .saves
            .iter()
            .filter(|(_, s)| !s.committing && s.since.elapsed() > REQUEST_TIMEOUT)
            .map(|(r, _)| *r)
            .collect();
        for req in old {
            if let Some(op) = self.saves.remove(&req) {
                self.discard(net, &op.meta.holders, op.task, op.meta.generation);
                let _ = op.reply.send(Err(TaskError::Unavailable(format!(
                    "no majority of task {}'s shard group stored the checkpoint within {} s",
                    op.task,
                    REQUEST_TIMEOUT.as_secs()
                ))));
            }
        }
        let stuck: Vec<u64> = self
            .restores
            .iter()
            .filter(|(_, r)| r.since.elapsed() > REQUEST_TIMEOUT)
            .map(|(r, _)| *r)
            .collect();
        stuck
            .into_iter()
            .filter_map(|req| {
                self.restores
                    .get_mut(&req)?
                    .errors
                    .push(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()));
                self.fail(req)
            })
            .collect()
    }
}
