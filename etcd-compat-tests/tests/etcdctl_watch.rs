//! etcdctl's long-running commands (watch, lock, elect) and `check perf`, against tandem and
//! the real etcd of the same etcdctl version. Watches start at an explicit revision so their
//! output does not depend on when the watch was established.

use std::time::Duration;

use etcd_compat_tests::*;

const BOTH: [CtlVersion; 2] = [CtlVersion::V35, CtlVersion::V34];
const WAIT: Duration = Duration::from_secs(20);

/// Writes that give a watcher puts, an overwrite, a delete and a multi-key txn revision.
fn writes(t: &mut Transcript) {
    t.run(&["put", "w/a", "1"], None);
    t.run(&["put", "w/b", "2"], None);
    t.run(&["put", "w/a", "3"], None);
    t.run(&["del", "w/b"], None);
    t.run(&["txn"], Some("\nput w/c 4\nput w/d 5\ndel w/a\n\n\n"));
    t.run(&["put", "other", "x"], None);
    t.run(&["put", "w/e", "6"], None);
}

fn watch_scenario(t: &mut Transcript, _s: &Server) {
    let start = current_revision(&t.ctl) + 1;
    let rev = format!("--rev={start}");
    let plain = Background::start(&t.ctl, &["watch", "w/", "--prefix", &rev], None);
    let prev = Background::start(
        &t.ctl,
        &["watch", "w/", "--prefix", "--prev-kv", &rev],
        None,
    );
    let json = Background::start(&t.ctl, &["watch", "w/a", &rev, "-w", "json"], None);
    writes(t);
    // 8 events of 3 lines each (PUT/DELETE, key, value); with --prev-kv a put of an existing
    // key and a delete print the previous key and value too (2 + 2 + 2 more lines).
    plain.wait_lines(24, WAIT).expect("plain watch output");
    prev.wait_lines(30, WAIT).expect("prev-kv watch output");
    wait_until("3 events on the json watch", WAIT, || {
        json_events(&json.output()).len() == 3
    })
    .expect("json watch output");
    t.note(format!("watch --prefix:\n{}", normalize(&plain.finish())));
    t.note(format!(
        "watch --prefix --prev-kv:\n{}",
        normalize(&prev.finish())
    ));
    // How events are grouped into responses depends on timing (etcd batches a catching-up
    // watcher's events); the events themselves, in order, must be the same.
    let events: Vec<String> = json_events(&json.finish())
        .iter()
        .map(|e| normalize(&e.to_string()))
        .collect();
    t.note(format!("watch -w json events:\n{}", events.join("\n")));
    // Replaying all history from revision 1.
    let replay = Background::start(&t.ctl, &["watch", "", "--prefix", "--rev=1"], None);
    replay.wait_lines(27, WAIT).expect("replay output");
    t.note(format!("watch --rev=1:\n{}", normalize(&replay.finish())));
}

/// The events of every response etcdctl printed with `-w json`, in order.
fn json_events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| v["Events"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn watch_matches_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], watch_scenario);
    }
}

fn interactive_watch_scenario(t: &mut Transcript, _s: &Server) {
    t.run(&["put", "i/x", "1"], None);
    t.run(&["put", "i/y", "2"], None);
    let input = "watch i/ --prefix --rev=2\n";
    let w = Background::start(&t.ctl, &["watch", "-i"], Some(input));
    w.wait_lines(6, WAIT).expect("interactive watch replay");
    t.note(format!("watch -i:\n{}", normalize(&w.finish())));
}

#[test]
fn interactive_watch_matches_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], interactive_watch_scenario);
    }
}

fn compacted_watch_scenario(t: &mut Transcript, _s: &Server) {
    for i in 0..5 {
        t.run(&["put", "c", &i.to_string()], None);
    }
    t.run(&["compaction", "4"], None);
    let mut w = Background::start(&t.ctl, &["watch", "c", "--rev=2"], None);
    wait_until("the compacted watch to end", WAIT, || {
        w.exited() || !w.output().is_empty()
    })
    .expect("watch ends");
    t.note(format!(
        "watch --rev=2 after compaction at 4:\n{}",
        normalize(&w.finish())
    ));
    let ok = Background::start(&t.ctl, &["watch", "c", "--rev=4"], None);
    ok.wait_lines(6, WAIT)
        .expect("watch at the compacted revision");
    t.note(format!("watch --rev=4:\n{}", normalize(&ok.finish())));
}

#[test]
fn compacted_watch_matches_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], compacted_watch_scenario);
    }
}

fn progress_scenario(t: &mut Transcript, _s: &Server) {
    t.run(&["put", "p", "1"], None);
    let w = Background::start(&t.ctl, &["watch", "p", "--progress-notify"], None);
    let out = w
        .wait_for("progress notify", WAIT)
        .expect("a progress notification");
    let first = out
        .lines()
        .find(|l| l.contains("progress notify"))
        .unwrap_or_default()
        .to_string();
    t.note(format!("first progress line: {first}"));
}

#[test]
fn progress_notify_matches_etcd() {
    // etcdctl 3.4 does not print progress notifications; 3.5 does.
    compare_with_etcd(
        CtlVersion::V35,
        &["--experimental-watch-progress-notify-interval=500ms"],
        progress_scenario,
    );
}

fn lock_elect_scenario(t: &mut Transcript, _s: &Server) {
    t.run(&["lock", "mylock", "echo", "locked"], None);
    let leader = Background::start(&t.ctl, &["elect", "myelection", "proposal-1"], None);
    leader.wait_lines(2, WAIT).expect("campaign won");
    let listen = Background::start(&t.ctl, &["elect", "-l", "myelection"], None);
    listen.wait_lines(2, WAIT).expect("leader observed");
    t.note(format!("elect:\n{}", normalize(&leader.finish())));
    t.note(format!("elect -l:\n{}", normalize(&listen.finish())));
    t.run(&["get", "myelection", "--prefix", "--keys-only"], None);
}

#[test]
fn lock_and_elect_match_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], lock_elect_scenario);
    }
}
