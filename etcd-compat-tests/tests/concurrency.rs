//! etcd's `v3lock` and `v3election` gRPC services (the Rust client's lock and election APIs, the
//! shapes of the Go client's), against tandem and etcd 3.5.1: the same answers, revisions and
//! errors, step by step, with lease ids normalized.

use std::time::Duration;

use etcd_client::{Client, LeaderKey, LockOptions, ProclaimOptions, ResignOptions};
use etcd_compat_tests::*;

const WAIT: Duration = Duration::from_secs(20);

/// A transcript line for a result: its revision and what it says, or the error's code and text.
fn line<T>(what: &str, r: &Result<T, etcd_client::Error>, show: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => format!("{what}: {}", show(v)),
        Err(etcd_client::Error::GRpcStatus(s)) => {
            format!("{what}: error {:?} {}", s.code(), s.message())
        }
        Err(e) => format!("{what}: error {e}"),
    }
}

fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

/// Lease ids differ between servers: name them by the order they were granted.
fn named(text: &str, leases: &[i64]) -> String {
    let mut out = text.to_string();
    for (i, l) in leases.iter().enumerate() {
        out = out.replace(&format!("{l:x}"), &format!("<lease{i}>"));
        out = out.replace(&l.to_string(), &format!("<lease{i}>"));
    }
    out
}

/// Waits until `n` keys are under `prefix` (a waiting lock or candidacy has queued its key).
async fn wait_for_keys(c: &Client, prefix: &str, n: usize) {
    wait_until_async(&format!("{n} keys under {prefix}"), WAIT, || {
        let mut c = c.clone();
        async move {
            let keys = etcd_client::GetOptions::new()
                .with_prefix()
                .with_keys_only();
            c.get(prefix, Some(keys))
                .await
                .is_ok_and(|r| r.kvs().len() == n)
        }
    })
    .await
    .expect("the key is queued");
}

/// The next leader an Observe stream reports.
async fn next_observed(observed: &mut etcd_client::ObserveStream) -> String {
    let m = tokio::time::timeout(WAIT, observed.message())
        .await
        .expect("an observation")
        .expect("observe")
        .expect("a message");
    let kv = m.kv().expect("kv");
    format!(
        "observed {}={} at {}",
        String::from_utf8_lossy(kv.key()),
        String::from_utf8_lossy(kv.value()),
        rev(m.header())
    )
}

async fn scenario(url: String) -> Vec<String> {
    let mut c = Client::connect([url.clone()], None).await.expect("connect");
    let mut t = Vec::new();
    let l1 = c.lease_grant(60, None).await.expect("grant").id();
    let l2 = c.lease_grant(60, None).await.expect("grant").id();
    let leases = [l1, l2];

    // Lock: the first holder at once, the second when the first unlocks.
    let first = c.lock("l", Some(LockOptions::new().with_lease(l1))).await;
    t.push(line("lock l (lease 1)", &first, |r| {
        format!(
            "{} at {}",
            String::from_utf8_lossy(r.key()),
            rev(r.header())
        )
    }));
    let first_key = first.expect("lock").key().to_vec();
    let mut other = Client::connect([url.clone()], None).await.expect("connect");
    let waiting = tokio::spawn(async move {
        other
            .lock("l", Some(LockOptions::new().with_lease(l2)))
            .await
    });
    // The second has queued its key and waits while the first holds the lock.
    wait_for_keys(&c, "l/", 2).await;
    assert!(
        !waiting.is_finished(),
        "the second lock waits for the first"
    );
    let unlocked = c.unlock(first_key).await;
    t.push(line("unlock the first", &unlocked, |r| {
        rev(r.header()).to_string()
    }));
    let second = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the second lock is taken")
        .expect("task");
    t.push(line("lock l (lease 2)", &second, |r| {
        format!(
            "{} at {}",
            String::from_utf8_lossy(r.key()),
            rev(r.header())
        )
    }));
    let unlocked = c.unlock(second.expect("lock").key().to_vec()).await;
    t.push(line("unlock the second", &unlocked, |r| {
        rev(r.header()).to_string()
    }));

    // Election.
    t.push(line(
        "leader of an empty election",
        &c.leader("e").await,
        |r| rev(r.header()).to_string(),
    ));
    let campaign = c.campaign("e", "v1", l1).await;
    t.push(line("campaign v1 (lease 1)", &campaign, |r| {
        let l = r.leader().expect("leader key");
        format!(
            "{} rev {} lease {} at {}",
            String::from_utf8_lossy(l.key()),
            l.rev(),
            l.lease(),
            rev(r.header())
        )
    }));
    let leader1: LeaderKey = campaign.expect("campaign").leader().expect("key").clone();
    let mut observer = Client::connect([url.clone()], None).await.expect("connect");
    let mut observed = observer.observe("e").await.expect("observe");
    t.push(next_observed(&mut observed).await);
    let proclaimed = c
        .proclaim(
            "v2",
            Some(ProclaimOptions::new().with_leader(leader1.clone())),
        )
        .await;
    t.push(line("proclaim v2", &proclaimed, |r| {
        rev(r.header()).to_string()
    }));
    t.push(next_observed(&mut observed).await);
    let mut rival = Client::connect([url.clone()], None).await.expect("connect");
    let rival_campaign = tokio::spawn(async move { rival.campaign("e", "w", l2).await });
    wait_for_keys(&c, "e/", 2).await;
    t.push(line("leader", &c.leader("e").await, |r| {
        let kv = r.kv().expect("kv");
        format!(
            "{} at {}",
            String::from_utf8_lossy(kv.value()),
            rev(r.header())
        )
    }));
    assert!(
        !rival_campaign.is_finished(),
        "the rival waits for the leader"
    );
    let resigned = c
        .resign(Some(ResignOptions::new().with_leader(leader1.clone())))
        .await;
    t.push(line("resign the first", &resigned, |r| {
        rev(r.header()).to_string()
    }));
    let rival = tokio::time::timeout(WAIT, rival_campaign)
        .await
        .expect("the rival wins")
        .expect("task");
    t.push(line("campaign w (lease 2)", &rival, |r| {
        let l = r.leader().expect("leader key");
        format!("rev {} at {}", l.rev(), rev(r.header()))
    }));
    t.push(next_observed(&mut observed).await);
    let stale = c
        .proclaim("v3", Some(ProclaimOptions::new().with_leader(leader1)))
        .await;
    t.push(line("proclaim with a resigned key", &stale, |r| {
        rev(r.header()).to_string()
    }));
    t.push(line(
        "proclaim without a key",
        &c.proclaim("x", None).await,
        |r| rev(r.header()).to_string(),
    ));
    t.push(line("leader", &c.leader("e").await, |r| {
        let kv = r.kv().expect("kv");
        format!(
            "{} at {}",
            String::from_utf8_lossy(kv.value()),
            rev(r.header())
        )
    }));
    t.into_iter().map(|l| named(&l, &leases)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_and_election_services_match_etcd() {
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let reference = scenario(etcd.url()).await;
    drop(etcd);
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let ours = scenario(tandem.url()).await;
    if std::env::var_os("TANDEM_SHOW_TRANSCRIPT").is_some() {
        println!("{}", reference.join("\n"));
    }
    for (i, (a, b)) in reference.iter().zip(&ours).enumerate() {
        assert_eq!(a, b, "step {i}: etcd 3.5.1 (left) vs tandem (right)");
    }
    assert_eq!(reference.len(), ours.len());
}
