//! Every fuzz target (`sockit::fuzzing`) on the stable toolchain: over its committed corpus
//! (`fuzz/corpus/NAME`, where libFuzzer's long runs add what they find, and the crashes they found
//! as `crash-*` files), then over a fixed number of inputs mutated from it by a small seeded
//! mutator, so CI exercises every parser with hostile input without nightly or libFuzzer.
//! `FUZZ_RUNS` sets the mutated inputs per target (default 20000); the seed is fixed, so a failure
//! repeats, and the failing input is printed in hex and written to `target/fuzz-failures/`.
//!
//! The mutator is written here because it has to run without libFuzzer's runtime: byte flips,
//! inserts of bytes that parsers treat specially, deletions, duplications and splices.

use std::path::{Path, PathBuf};

/// Bytes and tokens the parsers give meaning to.
const TOKENS: &[&[u8]] = &[
    b"..",
    b"%2e",
    b"%2f",
    b"%00",
    b"%25",
    b"%c0%ae",
    b"\\",
    b"/",
    b"\r\n",
    b"\n",
    b"\r\0",
    b"\xff\xfd",
    b"\xff\xfa",
    b"\xff\xf0",
    b"\xff\xff",
    b"\x08",
    b"\x7f",
    b"[",
    b"]",
    b":",
    b"::",
    b"%",
    b",",
    b"-",
    b"=",
    b"bytes=",
    b"{",
    b"}",
    b"\"",
    b"#",
    b"/nick ",
    b"/msg ",
    b"\xe2\x80\xae",
    b"\xe2\x80\x8b",
    b"\xef\xbd\x81",
    b"\xd0\xb0",
    b"\xcc\x81",
    b"unix:",
    b"0",
    b"65535",
    b"99999999999999999999",
    b"/8",
    b"/129",
    b"none",
];

/// xorshift64*: reproducible, and enough for choosing mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, t.iter().copied());
            }
            3 if !input.is_empty() => {
                let end = (at + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            4 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(32)).min(input.len());
                let piece = input[start..end].to_vec();
                for _ in 0..1 + rng.below(8) {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                if !input.is_empty() {
                    let i = rng.below(input.len());
                    input[i] = [0, 0xff, b'\n', b'/', b'%', b'.'][rng.below(6)];
                }
            }
        }
    }
    input.truncate(4096);
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("corpus file"))
        .collect()
}

/// Runs `target` on `input`; on a panic, keeps the input and says what failed.
fn run_one(name: &str, target: fn(&[u8]), input: &[u8]) -> Result<(), String> {
    let failed = match std::panic::catch_unwind(|| target(input)) {
        Ok(()) => return Ok(()),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{name}-{:016x}", fnv(input)));
    let _ = std::fs::write(&file, input);
    Err(format!(
        "fuzz target {name} failed ({failed}) on {} (kept as {}); once fixed, copy it into \
         fuzz/corpus/{name}/ as a regression input",
        hex(input),
        file.display()
    ))
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_wrapper() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in sockit::fuzzing::TARGETS {
        assert!(!corpus(name).is_empty(), "fuzz/corpus/{name} is empty");
        let wrapper = root.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(wrapper.is_file(), "{} is missing", wrapper.display());
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations() {
    let runs: usize = std::env::var("FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // The panics caught are reported by run_one; the default hook would print each one too.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = (|| {
        for (name, target) in sockit::fuzzing::TARGETS {
            let corpus = corpus(name);
            for input in &corpus {
                run_one(name, *target, input)?;
            }
            let mut rng = Rng(0x5eed_0000 ^ fnv(name.as_bytes()));
            for _ in 0..runs {
                let mut input = corpus[rng.below(corpus.len())].clone();
                mutate(&mut rng, &mut input, &corpus);
                run_one(name, *target, &input)?;
            }
        }
        Ok::<(), String>(())
    })();
    std::panic::set_hook(hook);
    if let Err(e) = result {
        panic!("{e}");
    }
}
