//! Model test: random sequences of puts, deletes, txns, compactions and lease operations give the
//! same results on the store as on a naive model that keeps every version of every key in a map
//! and answers each read by scanning it. Reads at random past revisions, and reopening the store
//! (which rebuilds its index from disk), are part of the sequences.

use std::collections::BTreeMap;

use mvcc::*;
use proptest::prelude::*;

const KEYS: &[&str] = &["a", "b", "c", "d", "e", "f"];

/// Every version of every key: (revision, value or None for a delete).
#[derive(Default, Clone)]
struct Model {
    history: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    current: i64,
    compacted: i64,
    leases: BTreeMap<i64, i64>,
}

impl Model {
    fn new() -> Self {
        Model {
            current: 1,
            ..Default::default()
        }
    }

    fn at(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        self.history
            .get(key)?
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)?
            .1
            .as_ref()
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse> {
        let rev = if r.revision <= 0 {
            self.current
        } else {
            r.revision
        };
        if rev > self.current {
            return Err(Error::FutureRevision);
        }
        if rev < self.compacted {
            return Err(Error::Compacted);
        }
        let range = KeyRange::new(&r.key, &r.range_end);
        let all: Vec<KeyValue> = self
            .history
            .keys()
            .filter(|k| range.contains(k))
            .filter_map(|k| self.at(k, rev).cloned())
            .collect();
        let count = all.len() as i64;
        let mut kvs = all;
        let limit = if r.limit > 0 {
            r.limit as usize
        } else {
            usize::MAX
        };
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        if r.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        if r.count_only {
            return Ok(RangeResponse {
                kvs: vec![],
                more: false,
                count,
                revision: self.current,
            });
        }
        Ok(RangeResponse {
            kvs,
            more,
            count,
            revision: self.current,
        })
    }

    fn live_keys(&self, range: KeyRange<'_>) -> Vec<Vec<u8>> {
        self.history
            .keys()
            .filter(|k| range.contains(k) && self.at(k, self.current).is_some())
            .cloned()
            .collect()
    }

    /// Writes one change at revision `self.current + 1` (the caller bumps `current`).
    fn write(&mut self, key: &[u8], kv: Option<KeyValue>) {
        self.history
            .entry(key.to_vec())
            .or_default()
            .push((self.current + 1, kv));
    }

    fn put(&mut self, p: &PutRequest) -> PutResponse {
        let prev = self.at(&p.key, self.current + 1).cloned();
        let rev = self.current + 1;
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |k| k.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value: p.value.clone(),
            lease: p.lease,
        };
        self.write(&p.key, Some(kv));
        PutResponse {
            prev_kv: prev.filter(|_| p.prev_kv),
            revision: 0,
        }
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let keys = self.live_keys(KeyRange::new(&d.key, &d.range_end));
        let mut prev_kvs = Vec::new();
        for k in &keys {
            if d.prev_kv {
                prev_kvs.push(self.at(k, self.current).cloned().expect("live"));
            }
            self.write(k, None);
        }
        DeleteRangeResponse {
            deleted: keys.len() as i64,
            prev_kvs,
            revision: 0,
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kv = self.at(&c.key, self.current);
        let ord = match (&c.target, kv) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.cmp(v),
            (CompareTarget::Version(v), kv) => kv.map_or(0, |k| k.version).cmp(v),
            (CompareTarget::Create(v), kv) => kv.map_or(0, |k| k.create_revision).cmp(v),
            (CompareTarget::Mod(v), kv) => kv.map_or(0, |k| k.mod_revision).cmp(v),
            (CompareTarget::Lease(v), kv) => kv.map_or(0, |k| k.lease).cmp(v),
        };
        match c.result {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::NotEqual => ord.is_ne(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
        }
    }

    fn apply(&mut self, cmd: &Command) -> Result<CommandResponse> {
        let before = self.history.values().map(Vec::len).sum::<usize>();
        let resp = match cmd {
            Command::Put(p) => {
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Err(Error::LeaseNotFound);
                }
                CommandResponse::Put(self.put(p))
            }
            Command::DeleteRange(d) => CommandResponse::DeleteRange(self.delete(d)),
            Command::Txn(t) => {
                let ok = t.compare.iter().all(|c| self.compare(c));
                let ops = if ok { &t.success } else { &t.failure };
                for op in ops {
                    if let RequestOp::Put(p) = op {
                        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                            return Err(Error::LeaseNotFound);
                        }
                    }
                }
                let mut responses = Vec::new();
                for op in ops {
                    let changed = self.history.values().map(Vec::len).sum::<usize>() > before;
                    responses.push(match op {
                        RequestOp::Put(p) => {
                            let mut r = self.put(p);
                            r.revision = self.current + 1;
                            ResponseOp::Put(r)
                        }
                        RequestOp::DeleteRange(d) => {
                            let mut r = self.delete(d);
                            let changed_now =
                                self.history.values().map(Vec::len).sum::<usize>() > before;
                            r.revision = self.current + i64::from(changed_now);
                            ResponseOp::DeleteRange(r)
                        }
                        RequestOp::Range(r) => {
                            // Reads inside a txn see its earlier writes.
                            let mut view = self.clone();
                            view.current += i64::from(changed);
                            ResponseOp::Range(view.range(r)?)
                        }
                        RequestOp::Txn(_) => unreachable!("the generator makes no nested txns"),
                    });
                }
                CommandResponse::Txn(TxnResponse {
                    succeeded: ok,
                    responses,
                    revision: 0,
                })
            }
            Command::Compact { revision } => {
                if *revision <= self.compacted {
                    return Err(Error::Compacted);
                }
                if *revision > self.current {
                    return Err(Error::FutureRevision);
                }
                self.compacted = *revision;
                CommandResponse::Compact { revision: 0 }
            }
            Command::LeaseGrant { id, ttl } => {
                if self.leases.insert(*id, *ttl).is_some() {
                    return Err(Error::LeaseExists);
                }
                CommandResponse::LeaseGrant {
                    id: *id,
                    ttl: *ttl,
                    revision: 0,
                }
            }
            Command::LeaseRevoke { id } => {
                if self.leases.remove(id).is_none() {
                    return Err(Error::LeaseNotFound);
                }
                let attached: Vec<Vec<u8>> = self
                    .history
                    .keys()
                    .filter(|k| self.at(k, self.current).is_some_and(|kv| kv.lease == *id))
                    .cloned()
                    .collect();
                for k in attached {
                    self.write(&k, None);
                }
                CommandResponse::LeaseRevoke { revision: 0 }
            }
            other => unreachable!("not generated: {other:?}"),
        };
        if self.history.values().map(Vec::len).sum::<usize>() > before {
            self.current += 1;
        }
        Ok(resp)
    }
}

#[derive(Debug, Clone)]
struct Read {
    back: i64,
    from: usize,
    to: usize,
    limit: i64,
    keys_only: bool,
    count_only: bool,
}

#[derive(Debug, Clone)]
enum Step {
    Apply(Command),
    /// A read at `current - back` (clamped at 1) over keys [from, to).
    Read(Read),
    Reopen,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS).prop_map(|k| k.as_bytes().to_vec())
}

fn put() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        "[a-z]{0,3}",
        prop::option::weighted(0.2, 1i64..4),
        any::<bool>(),
    )
        .prop_map(|(key, value, lease, prev_kv)| PutRequest {
            key,
            value: value.into_bytes(),
            lease: lease.unwrap_or(0),
            prev_kv,
            ..Default::default()
        })
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (0..KEYS.len(), 0..=KEYS.len(), any::<bool>()).prop_map(|(a, b, prev_kv)| DeleteRangeRequest {
        key: KEYS[a].as_bytes().to_vec(),
        range_end: if b == KEYS.len() {
            vec![]
        } else {
            KEYS[b].as_bytes().to_vec()
        },
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0i64..4).prop_map(CompareTarget::Version),
        (0i64..30).prop_map(CompareTarget::Create),
        (0i64..30).prop_map(CompareTarget::Mod),
        "[a-z]{0,2}".prop_map(|v| CompareTarget::Value(v.into_bytes())),
        (0i64..4).prop_map(CompareTarget::Lease),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ]);
    (result, target, key()).prop_map(|(result, target, key)| Compare {
        result,
        target,
        key,
        range_end: vec![],
    })
}

fn txn_ops() -> impl Strategy<Value = Vec<RequestOp>> {
    let op = prop_oneof![
        put().prop_map(RequestOp::Put),
        key().prop_map(|key| RequestOp::DeleteRange(DeleteRangeRequest {
            key,
            range_end: vec![],
            prev_kv: true
        })),
        key().prop_map(|key| RequestOp::Range(RangeRequest {
            key,
            ..Default::default()
        })),
    ];
    // One write per key per branch, as the server's duplicate-key check guarantees.
    prop::collection::vec(op, 0..4).prop_map(|ops| {
        let mut seen = std::collections::HashSet::new();
        ops.into_iter()
            .filter(|op| match op {
                RequestOp::Put(p) => seen.insert(p.key.clone()),
                RequestOp::DeleteRange(d) => seen.insert(d.key.clone()),
                _ => true,
            })
            .collect()
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => put().prop_map(|p| Step::Apply(Command::Put(p))),
        2 => delete().prop_map(|d| Step::Apply(Command::DeleteRange(d))),
        3 => (prop::collection::vec(compare(), 0..3), txn_ops(), txn_ops())
            .prop_map(|(compare, success, failure)| Step::Apply(Command::Txn(TxnRequest { compare, success, failure }))),
        1 => (0i64..40).prop_map(|revision| Step::Apply(Command::Compact { revision })),
        1 => (1i64..4, 1i64..100).prop_map(|(id, ttl)| Step::Apply(Command::LeaseGrant { id, ttl })),
        1 => (1i64..4).prop_map(|id| Step::Apply(Command::LeaseRevoke { id })),
        4 => (0i64..12, 0..KEYS.len(), 0..=KEYS.len(), 0i64..3, any::<bool>(), any::<bool>())
            .prop_map(|(back, from, to, limit, keys_only, count_only)| Step::Read(Read { back, from, to, limit, keys_only, count_only })),
        1 => Just(Step::Reopen),
    ]
}

fn read_request(model: &Model, r: &Read) -> RangeRequest {
    let Read {
        back,
        from,
        to,
        limit,
        keys_only,
        count_only,
    } = *r;
    RangeRequest {
        key: KEYS[from].as_bytes().to_vec(),
        range_end: if to == KEYS.len() {
            vec![0]
        } else {
            KEYS[to].as_bytes().to_vec()
        },
        revision: (model.current - back).max(1),
        limit,
        keys_only,
        count_only,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_naive_model(steps in prop::collection::vec(step(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let mut store = Store::open(&path).unwrap();
        let mut model = Model::new();
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Apply(cmd) => {
                    let got = store.apply(std::slice::from_ref(cmd), &[], false).unwrap().outcomes.remove(0).response;
                    let want = model.apply(cmd).map(|r| r.with_revision(model.current));
                    prop_assert_eq!(got, want, "step {} {:?}", i, cmd);
                    prop_assert_eq!(store.current_revision(), model.current);
                }
                Step::Read(r) => {
                    let req = read_request(&model, r);
                    prop_assert_eq!(store.range(&req), model.range(&req), "step {} {:?}", i, req);
                }
                Step::Reopen => {
                    store.sync().unwrap();
                    drop(store);
                    store = Store::open(&path).unwrap();
                }
            }
        }
        // Every kept revision reads the same at the end.
        for rev in model.compacted.max(1)..=model.current {
            let req = RangeRequest { key: b"a".to_vec(), range_end: vec![0], revision: rev, ..Default::default() };
            prop_assert_eq!(store.range(&req), model.range(&req), "final read at {}", rev);
        }
    }
}
