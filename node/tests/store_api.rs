//! Behaviour of the durable store: round trips, group commit, typed errors.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use shoal_node::store::{Store, StoreError, StoreOptions, WriteOp};

fn put(shard: u32, key: &str, value: &str) -> WriteOp {
    WriteOp::PutAcceptor {
        shard,
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

#[test]
fn committed_writes_survive_reopen_and_scan_by_shard() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .commit_blocking(vec![
                put(1, "a", "1a"),
                put(2, "a", "2a"),
                put(2, "b", "2b"),
                put(u32::MAX, "z", "max"),
                WriteOp::PutMeta {
                    key: "incarnation".into(),
                    value: vec![7],
                },
                WriteOp::PutAttempt {
                    task: "t1".into(),
                    attempt: 3,
                    record: b"started".to_vec(),
                },
            ])
            .unwrap();
        store
            .commit_blocking(vec![WriteOp::DeleteAcceptor {
                shard: 1,
                key: b"a".to_vec(),
            }])
            .unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.get_acceptor(1, b"a").unwrap(), None);
    assert_eq!(store.get_acceptor(2, b"b").unwrap(), Some(b"2b".to_vec()));
    assert_eq!(
        store.acceptor_shard(2).unwrap(),
        vec![
            (b"a".to_vec(), b"2a".to_vec()),
            (b"b".to_vec(), b"2b".to_vec())
        ]
    );
    assert_eq!(
        store.acceptor_shard(u32::MAX).unwrap(),
        vec![(b"z".to_vec(), b"max".to_vec())]
    );
    assert_eq!(store.get_meta("incarnation").unwrap(), Some(vec![7]));
    assert_eq!(
        store.attempts().unwrap(),
        vec![("t1".to_string(), 3, b"started".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let writers = 200;
    let mut joins = Vec::new();
    for i in 0..writers {
        let store = store.clone();
        joins.push(tokio::spawn(async move {
            store.commit(vec![put(0, &format!("k{i}"), "v")]).await
        }));
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    let stats = store.stats();
    // 1 transaction at open is not counted (it does not go through the writer).
    assert_eq!(stats.batches, writers);
    assert!(
        stats.transactions < writers / 2,
        "group commit should batch: {stats:?}"
    );
    assert_eq!(store.acceptor_shard(0).unwrap().len(), writers as usize);
}

/// Prints commits per second with one writer at a time (one fsync per
/// commit) and with 64 concurrent writers (group commit). Not asserted:
/// speed is for reports, not unit tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_throughput_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let serial = 200;
    let started = Instant::now();
    for i in 0..serial {
        store
            .commit(vec![put(1, &format!("s{i}"), "v")])
            .await
            .unwrap();
    }
    let serial_rate = serial as f64 / started.elapsed().as_secs_f64();

    let concurrency = 64;
    let per_writer = 50;
    let started = Instant::now();
    let mut joins = Vec::new();
    for w in 0..concurrency {
        let store = store.clone();
        joins.push(tokio::spawn(async move {
            for i in 0..per_writer {
                store
                    .commit(vec![put(2, &format!("g{w}-{i}"), "v")])
                    .await
                    .unwrap();
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    let group_rate = (concurrency * per_writer) as f64 / started.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "store commits/s: serial {serial_rate:.0}, 64 concurrent writers {group_rate:.0} \
         (transactions {}, batches {}, max batches/txn {})",
        stats.transactions, stats.batches, stats.max_batches_per_transaction
    );
    assert_eq!(
        store.acceptor_shard(2).unwrap().len(),
        concurrency * per_writer
    );
}

#[test]
fn data_dir_below_a_file_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file.join("data"), StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::DataDirUnusable { .. }),
        "got {err:?}"
    );
    assert!(err.to_string().contains("not-a-dir"), "message: {err}");
}

#[test]
fn second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "got {err:?}");
}

fn mount_tmpfs(target: &Path, options: &str) -> Result<(), String> {
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(target)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0)
            .status();
    }
}

#[test]
fn read_only_data_dir_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("ro");
    std::fs::create_dir(&mnt).unwrap();
    if let Err(why) = mount_tmpfs(&mnt, "ro,size=1m") {
        println!("SKIP read_only_data_dir_is_unusable: cannot mount a read-only tmpfs: {why}");
        return;
    }
    let _unmount = Unmount(&mnt);
    let err = Store::open(&mnt, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::DataDirUnusable { .. }),
        "got {err:?}"
    );
}

#[test]
fn full_disk_gives_disk_full_and_keeps_acked_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    if let Err(why) = mount_tmpfs(&mnt, "size=2m") {
        println!("SKIP full_disk_gives_disk_full: cannot mount a small tmpfs: {why}");
        return;
    }
    let _unmount = Unmount(&mnt);
    let store = Store::open(&mnt, StoreOptions::default()).unwrap();
    let value = "x".repeat(16 * 1024);
    let mut acked = Vec::new();
    let mut failure = None;
    // 2 MiB cannot hold 1000 * 16 KiB: the loop must end in an error.
    for i in 0..1000 {
        let key = format!("k{i}");
        match store.commit_blocking(vec![put(0, &key, &value)]) {
            Ok(()) => acked.push(key),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("a 2 MiB disk never filled up");
    assert!(matches!(err, StoreError::DiskFull { .. }), "got {err:?}");
    assert!(!acked.is_empty());
    drop(store);
    // After the failure the file still opens (if space allows) with every
    // acknowledged write; a reopen that itself hits the full disk must say so.
    match Store::open(&mnt, StoreOptions::default()) {
        Ok(store) => {
            for key in &acked {
                assert!(store.get_acceptor(0, key.as_bytes()).unwrap().is_some());
            }
        }
        Err(e) => assert!(matches!(e, StoreError::DiskFull { .. }), "got {e:?}"),
    }
}

#[test]
fn garbage_store_file_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(dir.path().join(shoal_node::store::STORE_FILE_NAME), bytes).unwrap();
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "got {err:?}");
    assert!(err.to_string().contains("corrupt"), "message: {err}");
}

#[test]
fn oversized_writes_are_refused_without_touching_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let huge = WriteOp::PutAcceptor {
        shard: 0,
        key: b"k".to_vec(),
        value: vec![0; shoal_node::store::VALUE_LEN_MAX + 1],
    };
    let err = store
        .commit_blocking(vec![put(0, "ok-in-same-batch", "v"), huge])
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "got {err:?}");
    let long_key = "k".repeat(shoal_node::store::KEY_LEN_MAX + 1);
    assert!(matches!(
        store.commit_blocking(vec![put(0, &long_key, "v")]),
        Err(StoreError::TooLarge { .. })
    ));
    // The refused batch wrote nothing, and the store still works.
    assert_eq!(store.get_acceptor(0, b"ok-in-same-batch").unwrap(), None);
    store.commit_blocking(vec![put(0, "after", "v")]).unwrap();
    assert!(store.get_acceptor(0, b"after").unwrap().is_some());
}
