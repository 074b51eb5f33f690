//! Parse throughput on the public sample corpus.
//!
//! `cargo bench -p plexus-hl7 --bench parse` measures, per pass over all 139 messages:
//! * `parse`: index segments and fields (what every message pays on arrival);
//! * `parse_encode`: parse and produce the bytes to send on;
//! * `parse_walk`: parse and decode every leaf value (comparable to parsers that build
//!   the whole tree up front, such as python-hl7);
//! * `parse_set_encode`: parse, edit one field, encode.
//!
//! `bench/hl7_vs_python.py` runs this and python-hl7 on the same corpus and prints the ratio.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plexus_hl7::Message;

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::env::var_os("PLEXUS_HL7_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/hl7v2"),
        PathBuf::from,
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("readable"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let corpus = corpus();
    let bytes: u64 = corpus.iter().map(|m| m.len() as u64).sum();
    let mut group = c.benchmark_group("corpus");
    group.throughput(Throughput::Bytes(bytes));

    group.bench_function("parse", |b| {
        b.iter(|| {
            for m in &corpus {
                black_box(Message::parse(black_box(m)).expect("corpus parses"));
            }
        })
    });
    group.bench_function("parse_encode", |b| {
        b.iter(|| {
            for m in &corpus {
                let msg = Message::parse(black_box(m)).expect("corpus parses");
                black_box(msg.as_bytes().to_vec());
            }
        })
    });
    group.bench_function("parse_walk", |b| {
        b.iter(|| {
            for m in &corpus {
                let msg = Message::parse(black_box(m)).expect("corpus parses");
                for seg in msg.segments() {
                    for (_, field) in seg.fields() {
                        for rep in field.children() {
                            for comp in rep.children() {
                                for sub in comp.children() {
                                    black_box(sub.text());
                                }
                            }
                        }
                    }
                }
            }
        })
    });
    group.bench_function("parse_set_encode", |b| {
        b.iter(|| {
            for m in &corpus {
                let mut msg = Message::parse(black_box(m)).expect("corpus parses");
                msg.set("MSH-10", "BENCH-0001").expect("settable");
                black_box(msg.into_bytes());
            }
        })
    });
    group.finish();
    eprintln!("corpus: {} messages, {bytes} bytes per pass", corpus.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
