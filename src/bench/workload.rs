//! What each client asks for next: pure and seeded.
//!
//! A [`Workload`] belongs to one client. From its own RNG (seed + client
//! index) it picks the request kind (by `--op` and `--read-ratio`) and a key
//! uniformly among `--keys`. Keys are `PREFIX` + 10 digits; values have the
//! requested size, start with a readable tag saying who wrote them
//! (`c<client>s<seq>.`) so every write is distinct, and are padded with
//! seeded random letters (so RocksDB's compression gains nothing a real
//! workload would not give it).
//!
//! CAS needs an expected value. The client expects the value it last saw
//! for the key (its own write, or the current value a failed CAS returned);
//! for keys it has not seen it expects the pre-populated value. What it saw
//! is kept in [`KnownValues`], bounded by [`KNOWN_VALUES_MAX_ENTRIES`]: past
//! the bound, unseen keys fall back to the pre-populated guess, which at
//! worst turns a swap into a failed compare (still a completed request).

use std::collections::HashMap;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::config::{BenchConfig, Operation};
use super::stats::OpError;

/// Keys whose last seen value one client remembers, at most.
pub const KNOWN_VALUES_MAX_ENTRIES: usize = 65_536;

/// The kind of one request, the unit of the per-kind statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    Get,
    Set,
    Cas,
    Ping,
    Fsync,
    Produce,
}

impl RequestKind {
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Get => "get",
            RequestKind::Set => "set",
            RequestKind::Cas => "cas",
            RequestKind::Ping => "ping",
            RequestKind::Fsync => "fsync",
            RequestKind::Produce => "produce",
        }
    }
}

/// One request a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Get {
        key: Bytes,
    },
    Set {
        key_index: u64,
        key: Bytes,
        value: Bytes,
    },
    /// `expected = None`: the key must be absent.
    Cas {
        key_index: u64,
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    },
    Ping {
        payload: Bytes,
    },
    /// Append this many bytes to the client's file and fdatasync it.
    Fsync {
        bytes: usize,
    },
    /// `records` copies of `value`, sent together (keyless: spread over the
    /// partitions), done when every one is acknowledged.
    Produce {
        value: Bytes,
        records: usize,
    },
}

impl Request {
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Get { .. } => RequestKind::Get,
            Request::Set { .. } => RequestKind::Set,
            Request::Cas { .. } => RequestKind::Cas,
            Request::Ping { .. } => RequestKind::Ping,
            Request::Fsync { .. } => RequestKind::Fsync,
            Request::Produce { .. } => RequestKind::Produce,
        }
    }
}

/// What a successful request returned that the workload cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// `current`: the value after the CAS (`None`: the key is absent).
    Cas {
        swapped: bool,
        current: Option<Bytes>,
    },
}

/// The last value a client saw per key, bounded.
#[derive(Debug, Default)]
pub struct KnownValues {
    values: HashMap<u64, Option<Bytes>>,
}

impl KnownValues {
    /// `None`: nothing known; `Some(None)`: known to be absent.
    pub fn get(&self, key_index: u64) -> Option<&Option<Bytes>> {
        self.values.get(&key_index)
    }

    /// Remembers `value`, unless the map is full and the key is new.
    pub fn remember(&mut self, key_index: u64, value: Option<Bytes>) {
        if self.values.len() < KNOWN_VALUES_MAX_ENTRIES || self.values.contains_key(&key_index) {
            self.values.insert(key_index, value);
        }
        debug_assert!(self.values.len() <= KNOWN_VALUES_MAX_ENTRIES);
    }

    pub fn forget(&mut self, key_index: u64) {
        self.values.remove(&key_index);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Builds keys and values; identical for every client of a run (it depends
/// only on the seed), so all clients agree on the pre-populated values.
#[derive(Clone, Debug)]
pub struct Values {
    key_prefix: String,
    value_bytes: usize,
    /// `value_bytes` seeded random letters.
    pad: Bytes,
}

impl Values {
    pub fn new(key_prefix: &str, value_bytes: usize, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x7061_645f_7061_6421);
        let pad: Vec<u8> = (0..value_bytes).map(|_| rng.sample(rand::distr::Alphanumeric)).collect();
        Values { key_prefix: key_prefix.to_string(), value_bytes, pad: Bytes::from(pad) }
    }

    pub fn key(&self, index: u64) -> Bytes {
        Bytes::from(format!("{}{index:010}", self.key_prefix))
    }

    /// The value pre-population writes to key `index`.
    pub fn initial(&self, index: u64) -> Bytes {
        self.tagged(&format!("init{index}."))
    }

    /// The `seq`-th value written by `client`.
    pub fn written(&self, client: usize, seq: u64) -> Bytes {
        self.tagged(&format!("c{client}s{seq}."))
    }

    /// `value_bytes` bytes of padding (ping payloads).
    pub fn payload(&self) -> Bytes {
        self.pad.clone()
    }

    fn tagged(&self, tag: &str) -> Bytes {
        let mut v = self.pad.to_vec();
        let n = tag.len().min(v.len());
        v[..n].copy_from_slice(&tag.as_bytes()[..n]);
        Bytes::from(v)
    }
}

/// One client's request generator.
#[derive(Debug)]
pub struct Workload {
    operation: Operation,
    client: usize,
    keys: u64,
    read_ratio: f64,
    rng: SmallRng,
    values: Values,
    /// Writes issued so far (makes every written value distinct).
    seq: u64,
    known: KnownValues,
    /// Records per produce request.
    batch_records: usize,
}

impl Workload {
    pub fn new(cfg: &BenchConfig, client: usize) -> Self {
        Workload {
            operation: cfg.operation,
            client,
            keys: cfg.keys,
            read_ratio: cfg.read_ratio,
            rng: SmallRng::seed_from_u64(cfg.seed.wrapping_add(client as u64)),
            values: Values::new(&cfg.key_prefix, cfg.value_bytes, cfg.seed),
            seq: 0,
            known: KnownValues::default(),
            batch_records: cfg.batch_records,
        }
    }

    pub fn values(&self) -> &Values {
        &self.values
    }

    pub fn known(&self) -> &KnownValues {
        &self.known
    }

    /// The next request of the measured (or warm-up) phase.
    pub fn next_request(&mut self) -> Request {
        match self.operation {
            Operation::Get => self.get(),
            Operation::Set => self.set(),
            Operation::Cas => self.cas(),
            Operation::Mixed => {
                if self.rng.random_bool(self.read_ratio) {
                    self.get()
                } else {
                    self.set()
                }
            }
            Operation::Ping => Request::Ping { payload: self.values.payload() },
            Operation::Fsync => Request::Fsync { bytes: self.values.value_bytes },
            Operation::Produce => {
                self.seq += 1;
                Request::Produce { value: self.values.written(self.client, self.seq), records: self.batch_records }
            }
        }
    }

    /// Key indexes this client pre-populates: `client, client + n, ...`.
    pub fn population(client: usize, clients: usize, keys: u64) -> impl Iterator<Item = u64> {
        assert!(client < clients, "client {client} of {clients}");
        (client as u64..keys).step_by(clients)
    }

    /// The write that pre-populates key `index`.
    pub fn populate_request(&self, index: u64) -> Request {
        Request::Set { key_index: index, key: self.values.key(index), value: self.values.initial(index) }
    }

    /// One request of each kind the workload issues, run once before the
    /// measurement so a missing level fails fast with its real error. For
    /// workloads on pre-populated keys the first is the write that
    /// populates key 0.
    pub fn probe_requests(&mut self) -> Vec<Request> {
        let key0 = || self.values.key(0);
        match self.operation {
            Operation::Get => vec![self.populate_request(0), Request::Get { key: key0() }],
            Operation::Set => vec![self.populate_request(0)],
            Operation::Cas => {
                let cas = Request::Cas {
                    key_index: 0,
                    key: key0(),
                    expected: Some(self.values.initial(0)),
                    new: self.values.initial(0),
                };
                vec![self.populate_request(0), cas]
            }
            Operation::Mixed => vec![self.populate_request(0), Request::Get { key: key0() }],
            Operation::Ping | Operation::Fsync | Operation::Produce => vec![self.next_request()],
        }
    }

    /// Learns from a completed (or failed) request what the next CAS on
    /// that key should expect.
    pub fn observe(&mut self, request: &Request, result: &Result<Outcome, OpError>) {
        match (request, result) {
            (Request::Set { key_index, value, .. }, Ok(_)) => self.known.remember(*key_index, Some(value.clone())),
            (Request::Cas { key_index, .. }, Ok(Outcome::Cas { current, .. })) => {
                self.known.remember(*key_index, current.clone())
            }
            // The write may or may not have happened: the value is unknown.
            (Request::Set { key_index, .. } | Request::Cas { key_index, .. }, Err(_)) => self.known.forget(*key_index),
            _ => {}
        }
    }

    fn key_index(&mut self) -> u64 {
        self.rng.random_range(0..self.keys)
    }

    fn get(&mut self) -> Request {
        let i = self.key_index();
        Request::Get { key: self.values.key(i) }
    }

    fn set(&mut self) -> Request {
        let i = self.key_index();
        self.seq += 1;
        Request::Set { key_index: i, key: self.values.key(i), value: self.values.written(self.client, self.seq) }
    }

    fn cas(&mut self) -> Request {
        let i = self.key_index();
        self.seq += 1;
        let expected = match self.known.get(i) {
            Some(v) => v.clone(),
            None => Some(self.values.initial(i)),
        };
        Request::Cas {
            key_index: i,
            key: self.values.key(i),
            expected,
            new: self.values.written(self.client, self.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::config::Target;
    use crate::bench::stats::ErrorKind;

    fn cfg(op: Operation) -> BenchConfig {
        let mut c = BenchConfig::new(op, Target::Capkv, vec!["127.0.0.1:1".into()]);
        c.keys = 100;
        c.value_bytes = 32;
        c
    }

    /// The same seed and client give the same requests (reproducible runs);
    /// another client gets another stream.
    #[test]
    fn generation_is_deterministic_per_seed_and_client() {
        let c = cfg(Operation::Mixed);
        let a: Vec<_> = {
            let mut w = Workload::new(&c, 3);
            (0..50).map(|_| w.next_request()).collect()
        };
        let b: Vec<_> = {
            let mut w = Workload::new(&c, 3);
            (0..50).map(|_| w.next_request()).collect()
        };
        let other: Vec<_> = {
            let mut w = Workload::new(&c, 4);
            (0..50).map(|_| w.next_request()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, other);
    }

    /// Keys stay within --keys, values have exactly --value-size bytes and
    /// every written value is distinct.
    #[test]
    fn keys_and_values_respect_the_settings() {
        let c = cfg(Operation::Set);
        let mut w = Workload::new(&c, 0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let Request::Set { key_index, key, value } = w.next_request() else { panic!("set workload") };
            assert!(key_index < c.keys);
            assert_eq!(key, w.values().key(key_index));
            assert_eq!(value.len(), c.value_bytes);
            assert!(seen.insert(value), "values must be distinct");
        }
        assert!(w.values().key(7).starts_with(b"bench/0000000007"));
    }

    /// A value shorter than its tag is still exactly --value-size bytes.
    #[test]
    fn tiny_values_keep_their_size() {
        let v = Values::new("k", 0, 1);
        assert!(v.written(12, 345).is_empty());
        let v = Values::new("k", 3, 1);
        assert_eq!(v.initial(12345).len(), 3);
    }

    /// --read-ratio 0.9 gives about 90 % gets (binomial, n = 10,000: the
    /// bound is over 10 standard deviations, so it never flakes); 0 and 1
    /// are exact.
    #[test]
    fn mixed_follows_the_read_ratio() {
        let mut c = cfg(Operation::Mixed);
        let count_gets = |c: &BenchConfig| {
            let mut w = Workload::new(c, 1);
            (0..10_000).filter(|_| w.next_request().kind() == RequestKind::Get).count()
        };
        let gets = count_gets(&c);
        assert!((8_700..=9_300).contains(&gets), "{gets} gets out of 10000");
        c.read_ratio = 0.0;
        assert_eq!(count_gets(&c), 0);
        c.read_ratio = 1.0;
        assert_eq!(count_gets(&c), 10_000);
    }

    /// Pre-population covers every key exactly once across clients.
    #[test]
    fn population_partitions_the_keys() {
        let mut all: Vec<u64> = (0..7).flat_map(|c| Workload::population(c, 7, 100)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // More clients than keys: the extra clients populate nothing.
        assert_eq!(Workload::population(5, 8, 3).count(), 0);
    }

    /// CAS expects the pre-populated value first, then whatever the client
    /// last saw, and forgets a key whose write had an unknown outcome.
    #[test]
    fn cas_expects_the_last_seen_value() {
        let mut c = cfg(Operation::Cas);
        c.keys = 1;
        let mut w = Workload::new(&c, 0);
        let first = w.next_request();
        let Request::Cas { expected, new, .. } = &first else { panic!("cas workload") };
        assert_eq!(expected.as_ref(), Some(&w.values().initial(0)));
        w.observe(&first, &Ok(Outcome::Cas { swapped: true, current: Some(new.clone()) }));

        let second = w.next_request();
        let Request::Cas { expected, .. } = &second else { panic!("cas workload") };
        assert_eq!(expected.as_ref(), Some(new));
        // A failed compare teaches the current value, here "absent".
        w.observe(&second, &Ok(Outcome::Cas { swapped: false, current: None }));
        let third = w.next_request();
        let Request::Cas { expected, .. } = &third else { panic!("cas workload") };
        assert_eq!(expected, &None);

        w.observe(&third, &Err(OpError::new(ErrorKind::Indeterminate, "lost reply")));
        assert!(w.known().get(0).is_none());
    }

    /// The memory of seen values never passes its bound.
    #[test]
    fn known_values_are_bounded() {
        let mut k = KnownValues::default();
        for i in 0..(KNOWN_VALUES_MAX_ENTRIES as u64 + 10) {
            k.remember(i, None);
        }
        assert_eq!(k.len(), KNOWN_VALUES_MAX_ENTRIES);
        // Known keys still update when full.
        k.remember(0, Some(Bytes::from_static(b"x")));
        assert_eq!(k.get(0), Some(&Some(Bytes::from_static(b"x"))));
    }

    /// The probe of a get workload populates key 0 and then reads it.
    #[test]
    fn probes_cover_every_request_kind_of_the_workload() {
        let kinds = |op| Workload::new(&cfg(op), 0).probe_requests().iter().map(Request::kind).collect::<Vec<_>>();
        assert_eq!(kinds(Operation::Get), [RequestKind::Set, RequestKind::Get]);
        assert_eq!(kinds(Operation::Set), [RequestKind::Set]);
        assert_eq!(kinds(Operation::Cas), [RequestKind::Set, RequestKind::Cas]);
        assert_eq!(kinds(Operation::Mixed), [RequestKind::Set, RequestKind::Get]);
        assert_eq!(kinds(Operation::Ping), [RequestKind::Ping]);
        assert_eq!(kinds(Operation::Produce), [RequestKind::Produce]);
    }

    /// Each produce request carries the configured batch of one fresh value.
    #[test]
    fn produce_batches_distinct_values() {
        let mut c = cfg(Operation::Produce);
        c.batch_records = 16;
        c.value_bytes = 1024;
        let mut w = Workload::new(&c, 3);
        let (a, b) = (w.next_request(), w.next_request());
        let (Request::Produce { value: va, records: ra }, Request::Produce { value: vb, records: rb }) = (a, b) else {
            panic!("not produce requests")
        };
        assert_eq!((ra, rb), (16, 16));
        assert_eq!((va.len(), vb.len()), (1024, 1024));
        assert_ne!(va, vb);
    }
}
