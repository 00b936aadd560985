//! A full disk on a real process (issue 9.2, scenario S12), tandem beside etcd 3.5.1: the data
//! dir is a 400 MiB loop-mounted ext4 filesystem that also holds a 100 MiB ballast file;
//! writers fill it. tandem must refuse writes with etcd's NOSPACE error and alarm before the
//! disk is full (its reserve), keep serving reads, take writes again once the ballast is
//! removed, and restart with every acknowledged write. Before the fix the raft core stopped
//! on ENOSPC, writes said only "server stopped", reads failed once the keyspace file had met
//! ENOSPC, and the restart failed ("… is not a tandem raft log segment": a segment whose
//! preallocation the full disk had cut short). etcd 3.5.1 gets the same fill, then is stopped,
//! the ballast removed and restarted; its figures are printed beside tandem's.
//! Needs root (mount); the machine's CI runs as root.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use etcd_client::{Client, GetOptions};
use etcd_compat_tests::loopfs::LoopFs;
use etcd_compat_tests::*;

const IMAGE_MIB: u64 = 400;
const BALLAST_MIB: usize = 100;
const VALUE_BYTES: usize = 64 * 1024;
const WRITERS: usize = 4;
const WAIT: Duration = Duration::from_secs(60);
const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

type Acked = Arc<Mutex<BTreeMap<String, i64>>>;

/// Puts until the server refuses with NOSPACE (returns true) or stops answering.
async fn writer(url: String, id: usize, acked: Acked, refusal: Arc<Mutex<Vec<String>>>) {
    let Ok(mut c) = Client::connect([url], None).await else {
        return;
    };
    let value = vec![b'x'; VALUE_BYTES];
    for seq in 0.. {
        let key = format!("full/{id}/{seq:06}");
        match tokio::time::timeout(WAIT, c.put(key.clone(), value.clone(), None)).await {
            Ok(Ok(r)) => {
                let rev = r.header().expect("header").revision();
                acked.lock().expect("acked").insert(key, rev);
            }
            Ok(Err(e)) => {
                refusal.lock().expect("refusal").push(e.to_string());
                return;
            }
            Err(_) => return,
        }
    }
}

async fn read_back(c: &mut Client, serializable: bool) -> Result<BTreeMap<String, i64>> {
    let mut opts = GetOptions::new().with_prefix().with_keys_only();
    if serializable {
        opts = opts.with_serializable();
    }
    let r = c.get("full/", Some(opts)).await?;
    Ok(r.kvs()
        .iter()
        .map(|kv| (kv.key_str().expect("utf8").to_string(), kv.mod_revision()))
        .collect())
}

fn lost(acked: &BTreeMap<String, i64>, found: &BTreeMap<String, i64>) -> usize {
    acked
        .iter()
        .filter(|(k, r)| found.get(*k) != Some(r))
        .count()
}

struct Report {
    acked: usize,
    errors: Vec<String>,
    restarted: bool,
    lost_after_restart: usize,
}

/// Fills the disk of a `kind` member, checks what it answers, frees space and restarts it.
async fn fill_free_restart(kind: Kind) -> Report {
    let fs = Arc::new(Mutex::new(None));
    let slot = fs.clone();
    let mut server = Server::start_prepared(kind, move |data| {
        let mounted = LoopFs::mount_at(data, IMAGE_MIB)?;
        let ballast = std::fs::File::create(mounted.ballast())?;
        std::io::Write::write_all(&mut &ballast, &vec![0xB5u8; BALLAST_MIB << 20])?;
        ballast.sync_all()?;
        *slot.lock().expect("fs") = Some(mounted);
        Ok(())
    })
    .expect("start on a small filesystem (needs root for mount)");
    let acked: Acked = Arc::default();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(server.url(), id, acked.clone(), errors.clone())))
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let acked = acked.lock().expect("acked").clone();
    let mut errors = errors.lock().expect("errors").clone();
    println!(
        "{}: disk full after {} acknowledged puts of 64 KiB; writers stopped on {:?}",
        kind.name(),
        acked.len(),
        errors
    );
    assert!(!acked.is_empty(), "{}: nothing was written", kind.name());
    let ballast = fs.lock().expect("fs").as_ref().expect("mounted").ballast();
    if kind == Kind::Tandem {
        check_full_tandem(&server, &acked, &mut errors).await;
        std::fs::remove_file(&ballast).expect("free space");
        let started = std::time::Instant::now();
        let mut c = server.client().await.expect("connect");
        wait_until_async("a write once space is freed", WAIT, || {
            let mut c = c.clone();
            async move { c.put("freed", "v", None).await.is_ok() }
        })
        .await
        .expect("writes resume once space is freed");
        println!(
            "tandem: writes resumed {:?} after the ballast was removed",
            started.elapsed()
        );
        let _ = c.delete("freed", None).await;
    }
    let _ = server.stop("KILL");
    if ballast.exists() {
        std::fs::remove_file(&ballast).expect("free space");
    }
    let restarted = server.restart_refused(START_DEADLINE).expect("restart");
    let (restarted, lost_after_restart) = match restarted {
        Some((status, log)) => {
            println!(
                "{}: restart after freeing space failed ({status}): {}",
                kind.name(),
                log.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            );
            (false, acked.len())
        }
        None => {
            let mut c = server.client().await.expect("connect");
            let found = read_back(&mut c, false).await.expect("read back");
            c.put("after", "free", None)
                .await
                .expect("a write after the restart");
            (true, lost(&acked, &found))
        }
    };
    println!(
        "{}: restarted: {restarted}, acknowledged writes lost: {lost_after_restart} of {}",
        kind.name(),
        acked.len()
    );
    drop(server);
    drop(fs.lock().expect("fs").take());
    Report {
        acked: acked.len(),
        errors,
        restarted,
        lost_after_restart,
    }
}

/// While the disk is full: etcd's NOSPACE error for writes, the alarm listed, reads served.
async fn check_full_tandem(
    server: &Server,
    acked: &BTreeMap<String, i64>,
    errors: &mut Vec<String>,
) {
    let mut c = server.client().await.expect("connect");
    let refused = c
        .put("one-more", "v", None)
        .await
        .expect_err("a put on a full disk");
    errors.push(refused.to_string());
    assert!(
        refused.to_string().contains(NO_SPACE),
        "a put on a full disk: {refused}"
    );
    let alarms = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .expect("alarm list");
    assert!(
        alarms
            .alarms()
            .iter()
            .any(|a| a.alarm() == etcd_client::AlarmType::Nospace),
        "NOSPACE is listed: {alarms:?}"
    );
    let (code, body) = http_get(&format!("{}/health", server.url())).expect("/health");
    assert!(
        code == 503 && body.contains("ALARM NOSPACE"),
        "/health on a full disk: {code} {body}"
    );
    for serializable in [true, false] {
        let found = read_back(&mut c, serializable)
            .await
            .expect("a read on a full disk");
        assert_eq!(
            lost(acked, &found),
            0,
            "reads (serializable: {serializable}) show every acknowledged write"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_raises_nospace_and_the_member_restarts_once_space_is_freed() {
    let tandem = fill_free_restart(Kind::Tandem).await;
    let etcd = fill_free_restart(Kind::Etcd35).await;
    println!(
        "full disk: tandem {} acked, restart {}, {} lost, errors {:?}; etcd 3.5.1 {} acked, \
         restart {}, {} lost, errors {:?}",
        tandem.acked,
        tandem.restarted,
        tandem.lost_after_restart,
        tandem.errors,
        etcd.acked,
        etcd.restarted,
        etcd.lost_after_restart,
        etcd.errors
    );
    assert!(tandem.restarted, "tandem restarts once space is freed");
    assert_eq!(tandem.lost_after_restart, 0);
}
