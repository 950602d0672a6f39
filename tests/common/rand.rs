//! A deterministic generator (SplitMix64, no extra crate) and random JSON
//! for the fuzz and property tests. `MM_FUZZ_SEED=N` replays another
//! sequence.
#![allow(dead_code)]

use serde_json::{json, Map, Value};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

pub fn seed() -> u64 {
    std::env::var("MM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d75_6c74_696d_6573)
}

/// Strings that mean something to some parser, or break naive ones.
pub const WORDS: &[&str] = &[
    "",
    " ",
    "*",
    "0",
    "1",
    "-1",
    "65535",
    "65536",
    "4294967295",
    "1,2,3",
    "80, 443",
    ",,",
    "eth0",
    "net1",
    "lo",
    "a b",
    "a/b",
    "..",
    ".",
    "../../etc",
    "/etc/passwd",
    "\u{0}",
    "\n-j ACCEPT",
    "é",
    "\"",
    "\\",
    "istio",
    "linkerd",
    "iptables",
    "nftables",
    "legacy",
    "nft",
    "auto",
    "bridge",
    "mm-recorder",
    "0.0.0.0/0",
    "::/0",
    "198.51.100.0/24",
    "2001:db8::/32",
    "203.0.113.7",
    "1.2.3.4/33",
    "1.2.3.4/",
    "1.2.3.4/-1",
    "fe80::1%eth0",
    "10.0.0.0/8 -j ACCEPT",
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "0.3.1",
    "0.4.0",
    "1.0.0",
    "1.1.0",
    "99.0.0",
    "1.0",
    "true",
    "null",
    "ADD",
    "kube-system",
    "IgnoreUnknown=1;IP=1.2.3.4",
];

pub fn rand_string(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=5 => rng.pick(WORDS).to_string(),
        6 => "x".repeat(rng.pick(&[15usize, 16, 255, 256, 4096, 100_000]).to_owned()),
        _ => {
            const CH: &[char] = &[
                'a',
                'Z',
                '0',
                '9',
                '-',
                '_',
                '.',
                '/',
                ':',
                ',',
                ';',
                '=',
                ' ',
                '*',
                '"',
                '\\',
                '\n',
                '\t',
                '\u{0}',
                '\u{7f}',
                'é',
                '\u{202e}',
                '\u{10ffff}',
                '[',
                '{',
                '%',
            ];
            (0..rng.below(24)).map(|_| *rng.pick(CH)).collect()
        }
    }
}

pub fn rand_number(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(65535),
        3 => json!(65536),
        4 => json!(u32::MAX),
        5 => json!(u64::MAX),
        6 => json!(i64::MIN),
        7 => json!(1.5),
        8 => json!(-0.0),
        9 => json!(1e308),
        10 => json!(f64::MIN_POSITIVE),
        11 => json!(15006),
        _ => json!(rng.next() >> rng.below(64)),
    }
}

pub fn rand_value(rng: &mut Rng, depth: usize) -> Value {
    let k = if depth == 0 {
        rng.below(5)
    } else {
        rng.below(7)
    };
    match k {
        0 => Value::Null,
        1 => Value::Bool(rng.percent(50)),
        2 => rand_number(rng),
        3 | 4 => Value::String(rand_string(rng)),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| rand_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                m.insert(rand_string(rng), rand_value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// `depth` levels of arrays (or objects) around a number.
pub fn nest(depth: usize, arrays: bool) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = if arrays { json!([v]) } else { json!({"a": v}) };
    }
    v
}
