//! Replays the fuzz corpus (`fuzz/corpus/*`) and a fixed-seed mutation run over the sample
//! corpus through the same invariants the fuzz targets check, so CI keeps the fuzzers'
//! findings without needing a nightly toolchain.

use std::path::PathBuf;

use plexus_hl7::checks;

fn files_in(dir: PathBuf) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn fuzz_corpus_replays_clean() {
    let parse = files_in(repo().join("fuzz/corpus/parse"));
    let paths = files_in(repo().join("fuzz/corpus/paths"));
    assert!(
        !parse.is_empty() && !paths.is_empty(),
        "the fuzz regression corpus is missing"
    );
    parse.iter().for_each(|d| checks::parse_roundtrip(d));
    paths.iter().for_each(|d| checks::path_ops(d));
}

/// A small xorshift generator: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_samples_never_panic() {
    let dir = repo().join("../shared/corpus/hl7v2");
    let samples = files_in(dir);
    assert!(samples.len() >= 139, "sample corpus missing");
    let interesting = b"|^~\\&#\r\n\x0b\x1c\"X0.MSH\xc3\xff";
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for round in 0..4000 {
        let mut data = samples[round % samples.len()].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(data.len());
            match rng.below(4) {
                0 => data[at] = interesting[rng.below(interesting.len())],
                1 => data.insert(at, interesting[rng.below(interesting.len())]),
                2 if data.len() > 1 => {
                    data.remove(at);
                }
                _ => data.truncate(at.max(1)),
            }
        }
        checks::parse_roundtrip(&data);
    }
    let paths = [
        "PID-5-1",
        "PID-3[2]-4-2",
        "OBX[3]-5",
        "ZZZ-9",
        "MSH-18",
        "MSH[2]-3",
        "PID-11[4]-2-3",
        "OBX[2]",
    ];
    let values = [
        "",
        "x",
        "a|b^c~d&e\\f",
        "\r\n",
        "\"\"",
        "\\.br\\",
        "é",
        "\\H\\b\\N\\",
        "8859/1",
    ];
    for p in paths {
        for v in values {
            checks::path_ops(format!("{p}\0{v}").as_bytes());
        }
    }
}
