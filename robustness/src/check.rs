//! The checkers: a recorded history against the revision history the cluster committed.
//!
//! The revision history ("truth") comes from a watch of the whole keyspace from the first
//! revision, taken after the run (nothing is compacted during a run). Every write gets a unique
//! value, so each revision can be matched to the operation that made it. Linearizability then
//! needs no search: each acknowledged operation's response names its position (the revision a
//! write made, the header revision a read was served at); an indeterminate write (an error or a
//! timeout) that the history holds is placed at its revision, one it does not hold did not
//! happen. The history is linearizable iff
//! - every acknowledged write is in the history at the revision it was acknowledged with
//!   (otherwise it was lost),
//! - every revision was made by some operation (or by a lease's expiry),
//! - every read returns exactly the state at its position, and every compare of a txn held (or
//!   failed) in the state before its position,
//! - positions respect real time: an operation called after another returned is placed after
//!   it (strictly, for a write).
//!
//! These conditions are sufficient (the positions are a linearization) and necessary for
//! etcd's semantics, where a read's header revision is the state it read. The same truth checks
//! the watch guarantees (ordered, unique, reliable, atomic, resumable from a revision,
//! bookmarkable, with exact prev_kv and create detection) and lease safety (a lease never
//! expires before its TTL has run since the last keep-alive that was sent).

use std::collections::{BTreeMap, HashMap};

use crate::history::{Event, Kv, Op, Outcome, Record, WatchRecord};

/// The state of the keyspace after a revision.
pub type State = BTreeMap<String, Kv>;

/// The revision history the cluster committed.
pub struct Truth {
    /// Events per revision, in the order the revision made them.
    pub revisions: BTreeMap<i64, Vec<Event>>,
    /// The state after each revision of `revisions` (and after revision 1: empty).
    states: BTreeMap<i64, State>,
    /// The final revision (the header revision of the read that ended the run).
    pub last: i64,
}

/// What the checks found; the three counts that must be zero, with their first examples.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub lost: Vec<String>,
    pub linearizability: Vec<String>,
    pub watch: Vec<String>,
    pub lease: Vec<String>,
    /// Writes acknowledged by a member after one of its fdatasyncs failed (S13).
    pub fsync: Vec<String>,
    /// A full disk not answered as etcd answers it (S12).
    pub disk: Vec<String>,
    /// Leases that expired (not revoked) during the run.
    pub expired_leases: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.linearizability.is_empty()
            && self.watch.is_empty()
            && self.lease.is_empty()
            && self.fsync.is_empty()
            && self.disk.is_empty()
    }

    /// The first few findings of each kind, for a failure message.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (name, v) in [
            ("acknowledged writes lost", &self.lost),
            ("linearizability violations", &self.linearizability),
            ("watch violations", &self.watch),
            ("lease violations", &self.lease),
            ("acknowledged after a failed fsync", &self.fsync),
            ("full disk not refused as NOSPACE", &self.disk),
        ] {
            s.push_str(&format!("{name}: {}\n", v.len()));
            for line in v.iter().take(5) {
                s.push_str(&format!("  {line}\n"));
            }
        }
        s
    }
}

impl Truth {
    /// Builds the truth from the events of a watch from revision 1 (in delivery order) and the
    /// final revision. Checks the events are a well-formed history (each revision's puts carry
    /// that revision, versions and create revisions follow, prev_kv is the state before);
    /// violations go to `report.watch` (the truth is itself a watch).
    pub fn new(events: &[(i64, Event)], last: i64, report: &mut Report) -> Self {
        let mut revisions: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
        for (rev, e) in events {
            revisions.entry(*rev).or_default().push(e.clone());
        }
        let mut states = BTreeMap::new();
        let mut state = State::new();
        states.insert(1, state.clone());
        for (&rev, evs) in &revisions {
            let before = state.clone();
            for e in evs {
                let prev = before.get(&e.kv.key);
                if e.prev_kv.as_ref() != prev {
                    report.watch.push(format!(
                        "history: revision {rev} key {}: prev_kv {:?}, state before {:?}",
                        e.kv.key, e.prev_kv, prev
                    ));
                }
                if e.put {
                    let (create, version) = match prev {
                        None => (rev, 1),
                        Some(p) => (p.create_revision, p.version + 1),
                    };
                    if e.kv.mod_revision != rev
                        || e.kv.create_revision != create
                        || e.kv.version != version
                    {
                        report.watch.push(format!(
                            "history: revision {rev} put of {}: mod {} create {} version {}, expected {rev}/{create}/{version}",
                            e.kv.key, e.kv.mod_revision, e.kv.create_revision, e.kv.version
                        ));
                    }
                    state.insert(e.kv.key.clone(), e.kv.clone());
                } else {
                    if prev.is_none() {
                        report.watch.push(format!(
                            "history: revision {rev} deletes absent key {}",
                            e.kv.key
                        ));
                    }
                    state.remove(&e.kv.key);
                }
            }
            states.insert(rev, state.clone());
        }
        Truth {
            revisions,
            states,
            last,
        }
    }

    /// The state at revision `rev` (after every revision up to it).
    pub fn state_at(&self, rev: i64) -> &State {
        self.states
            .range(..=rev)
            .next_back()
            .map(|(_, s)| s)
            .expect("revision 1 is always there")
    }
}

/// Where an operation sits in the linearization.
#[derive(Clone, Copy, Debug)]
struct Placed {
    index: usize,
    call: u64,
    /// `u64::MAX` for an indeterminate write: it never returned.
    ret: u64,
    position: i64,
    write: bool,
}

fn kvs_in(state: &State, start: &str, end: &str) -> Vec<Kv> {
    state
        .range(start.to_string()..)
        .take_while(|(k, _)| end.is_empty() || k.as_str() < end)
        .map(|(_, v)| v.clone())
        .collect()
}

fn describe(r: &Record) -> String {
    format!("client {} {:?} -> {:?}", r.client, r.op, r.outcome)
}

/// Checks the operations against the truth; findings go to `report`.
pub fn check_ops(ops: &[Record], truth: &Truth, report: &mut Report) {
    // Which revision holds each written value, and which revisions are accounted for.
    let mut value_rev: HashMap<&str, i64> = HashMap::new();
    for (&rev, evs) in &truth.revisions {
        for e in evs.iter().filter(|e| e.put) {
            value_rev.insert(e.kv.value.as_str(), rev);
        }
    }
    let mut explained: HashMap<i64, usize> = HashMap::new();
    let mut placed: Vec<Placed> = Vec::new();
    let mut indeterminate_deletes: Vec<usize> = Vec::new();
    for (i, r) in ops.iter().enumerate() {
        let mut place = |position: i64, write: bool, ret: u64| {
            placed.push(Placed {
                index: i,
                call: r.call,
                ret,
                position,
                write,
            })
        };
        match (&r.op, &r.outcome) {
            (Op::Put { key, value, .. }, Outcome::Put { revision }) => {
                check_written(r, key, value, *revision, &value_rev, report);
                explained.insert(*revision, i);
                place(*revision, true, r.ret);
            }
            (Op::Put { value, .. } | Op::Txn { value, .. }, Outcome::Failed { .. }) => {
                if let Some(&rev) = value_rev.get(value.as_str()) {
                    explained.insert(rev, i);
                    place(rev, true, u64::MAX);
                    if let Op::Txn { key, expect, .. } = &r.op {
                        check_compare(r, truth, key, *expect, rev - 1, true, report);
                    }
                }
            }
            (
                Op::Txn { key, expect, value },
                Outcome::Txn {
                    revision,
                    succeeded,
                    kvs,
                },
            ) => {
                if *succeeded {
                    check_written(r, key, value, *revision, &value_rev, report);
                    explained.insert(*revision, i);
                    check_compare(r, truth, key, *expect, revision - 1, true, report);
                    place(*revision, true, r.ret);
                } else {
                    check_compare(r, truth, key, *expect, *revision, false, report);
                    check_read(r, truth, *revision, kvs, key, "", report);
                    place(*revision, false, r.ret);
                }
            }
            (Op::Get { key }, Outcome::Read { revision, kvs }) => {
                check_read(r, truth, *revision, kvs, key, "", report);
                place(*revision, false, r.ret);
            }
            (Op::Range { start, end }, Outcome::Read { revision, kvs }) => {
                check_read(r, truth, *revision, kvs, start, end, report);
                place(*revision, false, r.ret);
            }
            (Op::Delete { key }, Outcome::Delete { revision, deleted }) => {
                if *deleted > 0 {
                    let in_history = truth
                        .revisions
                        .get(revision)
                        .is_some_and(|evs| evs.iter().any(|e| !e.put && &e.kv.key == key));
                    if !in_history {
                        report.lost.push(format!(
                            "{}: the history has no delete of {key} at {revision}",
                            describe(r)
                        ));
                    }
                    explained.insert(*revision, i);
                    place(*revision, true, r.ret);
                } else {
                    if truth.state_at(*revision).contains_key(key) {
                        report.linearizability.push(format!(
                            "{}: deleted nothing, but {key} exists at {revision}",
                            describe(r)
                        ));
                    }
                    place(*revision, false, r.ret);
                }
            }
            (Op::Delete { .. }, Outcome::Failed { .. }) => indeterminate_deletes.push(i),
            (Op::LeaseRevoke { id }, Outcome::LeaseRevoke { revision }) => {
                let deletes = truth.revisions.get(revision).is_some_and(|evs| {
                    !evs.is_empty()
                        && evs
                            .iter()
                            .all(|e| !e.put && e.prev_kv.as_ref().is_some_and(|p| p.lease == *id))
                });
                if deletes {
                    explained.insert(*revision, i);
                }
                place(*revision, deletes, r.ret);
            }
            (Op::LeaseRevoke { .. }, Outcome::Failed { .. }) => indeterminate_deletes.push(i),
            (Op::LeaseGrant { .. }, Outcome::LeaseGrant { revision, .. }) => {
                place(*revision, false, r.ret);
            }
            (_, Outcome::Failed { .. }) | (Op::LeaseKeepAlive { .. }, _) => {}
            (op, outcome) => report.linearizability.push(format!(
                "client {}: {op:?} answered with {outcome:?}",
                r.client
            )),
        }
    }
    check_real_time(ops, &placed, report);
    explain_revisions(
        ops,
        truth,
        &explained,
        &indeterminate_deletes,
        &placed,
        report,
    );
    check_monotonic(ops, report);
}

/// An acknowledged write of `value` is in the history at the revision it was acknowledged with.
fn check_written(
    r: &Record,
    key: &str,
    value: &str,
    revision: i64,
    value_rev: &HashMap<&str, i64>,
    report: &mut Report,
) {
    let found = value_rev.get(value).copied();
    if found != Some(revision) {
        report.lost.push(format!(
            "{}: the history has {key}={value} at {found:?}",
            describe(r)
        ));
    }
}

/// A txn's compare (`mod_revision(key) == expect`) held at `rev` iff `held`.
fn check_compare(
    r: &Record,
    truth: &Truth,
    key: &str,
    expect: i64,
    rev: i64,
    held: bool,
    report: &mut Report,
) {
    let actual = truth.state_at(rev).get(key).map_or(0, |kv| kv.mod_revision);
    if (actual == expect) != held {
        report.linearizability.push(format!(
            "{}: compare mod_revision({key}) == {expect} {} at {rev}, but it is {actual} there",
            describe(r),
            if held { "held" } else { "failed" }
        ));
    }
}

fn check_read(
    r: &Record,
    truth: &Truth,
    rev: i64,
    kvs: &[Kv],
    start: &str,
    end: &str,
    report: &mut Report,
) {
    if rev > truth.last {
        report.linearizability.push(format!(
            "{}: read at {rev}, beyond the final revision {}",
            describe(r),
            truth.last
        ));
        return;
    }
    let state = truth.state_at(rev);
    let want = if end.is_empty() {
        state.get(start).cloned().into_iter().collect()
    } else {
        kvs_in(state, start, end)
    };
    if kvs != want.as_slice() {
        report
            .linearizability
            .push(format!("{}: the state at {rev} is {want:?}", describe(r)));
    }
}

/// Positions respect real time: an operation called after another returned is placed at or
/// after it (strictly after, for a write).
fn check_real_time(ops: &[Record], placed: &[Placed], report: &mut Report) {
    let mut by_ret: Vec<&Placed> = placed.iter().filter(|p| p.ret != u64::MAX).collect();
    by_ret.sort_by_key(|p| p.ret);
    // The highest position among the first i returned operations, and which one it was.
    let mut best: Vec<(i64, usize)> = Vec::with_capacity(by_ret.len());
    for p in &by_ret {
        let prev = best.last().copied().unwrap_or((i64::MIN, usize::MAX));
        best.push(if p.position > prev.0 {
            (p.position, p.index)
        } else {
            prev
        });
    }
    for p in placed {
        let n = by_ret.partition_point(|q| q.ret < p.call);
        if n == 0 {
            continue;
        }
        let (bound, by) = best[n - 1];
        let ok = if p.write {
            p.position > bound
        } else {
            p.position >= bound
        };
        if !ok {
            report.linearizability.push(format!(
                "{} is at revision {}, but {} returned before it was called",
                describe(&ops[p.index]),
                p.position,
                describe(&ops[by])
            ));
        }
    }
}

/// Every revision was made by an operation: the ones matched already, an indeterminate
/// delete or revoke of its keys, or the expiry of the lease its keys had.
fn explain_revisions(
    ops: &[Record],
    truth: &Truth,
    explained: &HashMap<i64, usize>,
    indeterminate: &[usize],
    placed: &[Placed],
    report: &mut Report,
) {
    let mut used = vec![false; indeterminate.len()];
    // The highest position of an operation that returned before `t`.
    let mut returned: Vec<(u64, i64)> = placed
        .iter()
        .filter(|p| p.ret != u64::MAX)
        .map(|p| (p.ret, p.position))
        .collect();
    returned.sort_unstable();
    let mut max_so_far = i64::MIN;
    for r in &mut returned {
        max_so_far = max_so_far.max(r.1);
        r.1 = max_so_far;
    }
    let bound_at = |t: u64| {
        let n = returned.partition_point(|r| r.0 < t);
        if n == 0 {
            i64::MIN
        } else {
            returned[n - 1].1
        }
    };
    for (&rev, evs) in &truth.revisions {
        if explained.contains_key(&rev) {
            continue;
        }
        let deleted: Vec<&Event> = evs.iter().filter(|e| !e.put).collect();
        if deleted.len() != evs.len() {
            report.linearizability.push(format!(
                "revision {rev} ({evs:?}) puts a value no operation wrote"
            ));
            continue;
        }
        let lease = deleted[0].prev_kv.as_ref().map_or(0, |p| p.lease);
        let by_op = indeterminate.iter().enumerate().position(|(j, &i)| {
            !used[j]
                && bound_at(ops[i].call) < rev
                && match &ops[i].op {
                    Op::Delete { key } => deleted.len() == 1 && &deleted[0].kv.key == key,
                    Op::LeaseRevoke { id } => *id == lease && lease != 0,
                    _ => false,
                }
        });
        if let Some(j) = by_op {
            used[j] = true;
            continue;
        }
        let same_lease = lease != 0
            && deleted
                .iter()
                .all(|e| e.prev_kv.as_ref().is_some_and(|p| p.lease == lease));
        if same_lease {
            report.expired_leases += 1;
            check_expiry(ops, lease, rev, placed, report);
            continue;
        }
        report
            .linearizability
            .push(format!("revision {rev} ({evs:?}) was made by no operation"));
    }
}

/// A lease that expired at `rev` was seen expired only after its TTL had run since the last
/// keep-alive (or grant) that succeeded.
fn check_expiry(ops: &[Record], lease: i64, rev: i64, placed: &[Placed], report: &mut Report) {
    let ttl = ops.iter().find_map(|r| match r.outcome {
        Outcome::LeaseGrant { id, ttl, .. } if id == lease => Some(ttl),
        _ => None,
    });
    let Some(ttl) = ttl else {
        return; // granted by an operation whose answer was lost: nothing to compare with
    };
    let alive_until = ops
        .iter()
        .filter(|r| match (&r.op, &r.outcome) {
            (Op::LeaseKeepAlive { id }, Outcome::KeepAlive { ttl }) => *id == lease && *ttl > 0,
            (_, Outcome::LeaseGrant { id, .. }) => *id == lease,
            _ => false,
        })
        .map(|r| r.call + ttl as u64 * 1_000_000_000)
        .max()
        .unwrap_or(0);
    let seen = placed
        .iter()
        .filter(|p| p.ret != u64::MAX && (p.position > rev || (!p.write && p.position == rev)))
        .map(|p| p.ret)
        .min();
    if let Some(seen) = seen {
        if seen < alive_until {
            report.lease.push(format!(
                "lease {lease:x} (TTL {ttl} s) expired at revision {rev}, seen at {:.3} s, but a keep-alive kept it until {:.3} s",
                seen as f64 / 1e9,
                alive_until as f64 / 1e9
            ));
        }
    }
}

/// I6: the revisions one client is answered with never decrease.
fn check_monotonic(ops: &[Record], report: &mut Report) {
    let mut last: HashMap<u32, (i64, usize)> = HashMap::new();
    let mut by_call: Vec<usize> = (0..ops.len()).collect();
    by_call.sort_by_key(|&i| ops[i].call);
    for i in by_call {
        let r = &ops[i];
        let rev = match &r.outcome {
            Outcome::Put { revision }
            | Outcome::Read { revision, .. }
            | Outcome::Delete { revision, .. }
            | Outcome::Txn { revision, .. }
            | Outcome::LeaseGrant { revision, .. }
            | Outcome::LeaseRevoke { revision } => *revision,
            _ => continue,
        };
        if let Some(&(prev, j)) = last.get(&r.client) {
            if rev < prev {
                report.linearizability.push(format!(
                    "I6: {} answered at {rev} after {} at {prev}",
                    describe(r),
                    describe(&ops[j])
                ));
            }
        }
        last.insert(r.client, (rev, i));
    }
}

fn in_range(key: &str, start: &str, end: &str) -> bool {
    if end.is_empty() {
        key == start
    } else {
        key >= start && (end == "\0" || key < end)
    }
}

/// The watch guarantees for one stream: what it delivered is exactly the history's events on
/// its keys from its start revision, in order, without gaps or repeats, each revision whole in
/// one response, with prev_kv; and after a progress notification at revision R, every event up
/// to R was delivered.
pub fn check_watch(w: &WatchRecord, truth: &Truth, report: &mut Report) {
    let expected: Vec<(i64, &Event)> = truth
        .revisions
        .range(w.start_revision.max(1)..)
        .flat_map(|(&rev, evs)| evs.iter().map(move |e| (rev, e)))
        .filter(|(_, e)| in_range(&e.kv.key, &w.start, &w.end))
        .collect();
    let name = format!(
        "client {} watch [{:?}, {:?}) from {}",
        w.client, w.start, w.end, w.start_revision
    );
    if let Some(target) = w.behind {
        report.watch.push(format!(
            "{name}: did not deliver every revision up to the final one ({target}) within {} s of the run's end",
            crate::workload::CATCH_UP.as_secs()
        ));
    }
    let mut n = 0;
    let mut last_header = 0;
    for (i, resp) in w.responses.iter().enumerate() {
        if resp.revision < last_header {
            report.watch.push(format!(
                "{name}: response {i} has header revision {} after {last_header}",
                resp.revision
            ));
        }
        last_header = last_header.max(resp.revision);
        if resp.events.is_empty() && !resp.canceled && i > 0 {
            // A progress notification: everything up to its revision was delivered.
            if let Some((rev, _)) = expected.get(n) {
                if *rev <= resp.revision {
                    report.watch.push(format!(
                        "{name}: progress at {} before the event at {rev} was delivered",
                        resp.revision
                    ));
                }
            }
        }
        for e in &resp.events {
            // Leases go on expiring after the final revision was read: what a watcher
            // delivered past it is beyond the history checked.
            if e.kv.mod_revision > truth.last {
                return;
            }
            match expected.get(n) {
                Some((_, want)) if *want == e => {}
                Some((rev, want)) => {
                    report.watch.push(format!(
                        "{name}: event {n} is {e:?}; the history has {want:?} at {rev}"
                    ));
                    return;
                }
                None => {
                    report
                        .watch
                        .push(format!("{name}: event {n} is {e:?}, beyond the history"));
                    return;
                }
            }
            n += 1;
        }
        // Atomic: the response did not end in the middle of a revision.
        if let (Some(last), Some((next_rev, _))) = (resp.events.last(), expected.get(n)) {
            if last.kv.mod_revision == *next_rev && resp.events.len() < 1_000 {
                report.watch.push(format!(
                    "{name}: revision {next_rev} split across responses"
                ));
            }
        }
    }
}

/// Runs every check; `truth_events` and `last` come from the final watch.
pub fn check(
    ops: &[Record],
    watches: &[WatchRecord],
    truth_events: &[(i64, Event)],
    last: i64,
) -> (Truth, Report) {
    let mut report = Report::default();
    let truth = Truth::new(truth_events, last, &mut report);
    check_ops(ops, &truth, &mut report);
    for w in watches {
        check_watch(w, &truth, &mut report);
    }
    (truth, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::WatchResponse;

    fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64) -> Kv {
        Kv {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: modr,
            version,
            lease: 0,
        }
    }

    /// Revision 2: a=v1; revision 3: a=v2; revision 4: a deleted.
    fn truth_events() -> Vec<(i64, Event)> {
        let v1 = kv("a", "v1", 2, 2, 1);
        let v2 = kv("a", "v2", 2, 3, 2);
        vec![
            (
                2,
                Event {
                    put: true,
                    kv: v1.clone(),
                    prev_kv: None,
                },
            ),
            (
                3,
                Event {
                    put: true,
                    kv: v2.clone(),
                    prev_kv: Some(v1),
                },
            ),
            (
                4,
                Event {
                    put: false,
                    kv: kv("a", "", 0, 4, 0),
                    prev_kv: Some(v2),
                },
            ),
        ]
    }

    fn op(client: u32, call: u64, ret: u64, op: Op, outcome: Outcome) -> Record {
        Record {
            client,
            call,
            ret,
            op,
            outcome,
        }
    }

    fn put(value: &str) -> Op {
        Op::Put {
            key: "a".into(),
            value: value.into(),
            lease: 0,
        }
    }

    fn get() -> Op {
        Op::Get { key: "a".into() }
    }

    fn good_ops() -> Vec<Record> {
        vec![
            op(0, 0, 10, put("v1"), Outcome::Put { revision: 2 }),
            op(
                1,
                5,
                20,
                put("v2"),
                Outcome::Failed {
                    error: "timeout".into(),
                },
            ),
            op(
                0,
                11,
                12,
                get(),
                Outcome::Read {
                    revision: 2,
                    kvs: vec![kv("a", "v1", 2, 2, 1)],
                },
            ),
            op(
                2,
                30,
                40,
                Op::Delete { key: "a".into() },
                Outcome::Delete {
                    revision: 4,
                    deleted: 1,
                },
            ),
            op(
                0,
                41,
                42,
                get(),
                Outcome::Read {
                    revision: 4,
                    kvs: vec![],
                },
            ),
        ]
    }

    fn run(ops: &[Record], watches: &[WatchRecord]) -> Report {
        check(ops, watches, &truth_events(), 4).1
    }

    #[test]
    fn a_linearizable_history_passes() {
        let r = run(&good_ops(), &[]);
        assert!(r.ok(), "{}", r.summary());
    }

    #[test]
    fn an_acknowledged_write_missing_from_the_history_is_lost() {
        let mut ops = good_ops();
        ops.push(op(3, 50, 60, put("v9"), Outcome::Put { revision: 5 }));
        let r = run(&ops, &[]);
        assert_eq!(r.lost.len(), 1, "{}", r.summary());
    }

    #[test]
    fn a_stale_read_is_caught() {
        let mut ops = good_ops();
        // Called after the delete returned, answered with the state before it.
        ops.push(op(
            4,
            45,
            46,
            get(),
            Outcome::Read {
                revision: 3,
                kvs: vec![kv("a", "v2", 2, 3, 2)],
            },
        ));
        let r = run(&ops, &[]);
        assert_eq!(r.linearizability.len(), 1, "{}", r.summary());
    }

    #[test]
    fn a_read_that_does_not_match_its_revision_is_caught() {
        let mut ops = good_ops();
        ops[2].outcome = Outcome::Read {
            revision: 2,
            kvs: vec![kv("a", "v2", 2, 3, 2)],
        };
        assert!(!run(&ops, &[]).linearizability.is_empty());
    }

    #[test]
    fn a_revision_no_operation_made_is_caught() {
        let ops: Vec<Record> = good_ops()
            .into_iter()
            .filter(|r| !r.outcome.failed())
            .collect();
        let r = run(&ops, &[]);
        assert_eq!(r.linearizability.len(), 1, "{}", r.summary());
    }

    fn watch(events: Vec<Vec<Event>>, from: i64) -> WatchRecord {
        WatchRecord {
            client: 9,
            start: "a".into(),
            end: "b".into(),
            start_revision: from,
            behind: None,
            responses: events
                .into_iter()
                .map(|events| WatchResponse {
                    received: 0,
                    revision: 4,
                    events,
                    canceled: false,
                    compact_revision: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn watches_must_deliver_the_history_exactly() {
        let all: Vec<Event> = truth_events().into_iter().map(|e| e.1).collect();
        let ok = watch(vec![all[..1].to_vec(), all[1..].to_vec()], 1);
        assert!(run(&good_ops(), &[ok]).ok());
        let resumed = watch(vec![all[1..].to_vec()], 3);
        assert!(run(&good_ops(), &[resumed]).ok());
        // Resuming at 3 but getting revision 2 again; a gap; a repeat; a wrong prev_kv.
        let mut wrong_prev = all.clone();
        wrong_prev[1].prev_kv = None;
        for (name, w) in [
            ("resumed one revision early", watch(vec![all.clone()], 3)),
            ("gap", watch(vec![vec![all[0].clone(), all[2].clone()]], 1)),
            (
                "repeat",
                watch(vec![vec![all[0].clone(), all[0].clone()]], 1),
            ),
            ("prev_kv", watch(vec![wrong_prev], 1)),
        ] {
            assert_eq!(run(&good_ops(), &[w]).watch.len(), 1, "{name}");
        }
        // A watcher that never caught up with the final revision after the run.
        let mut stuck = watch(vec![all[..1].to_vec()], 1);
        stuck.behind = Some(4);
        assert_eq!(run(&good_ops(), &[stuck]).watch.len(), 1, "behind");
        // A progress notification at 4 before the events up to 4 were delivered.
        let mut early = watch(vec![all[..1].to_vec(), vec![], all[1..].to_vec()], 1);
        early.responses[1].revision = 4;
        assert_eq!(run(&good_ops(), &[early]).watch.len(), 1);
    }
}
