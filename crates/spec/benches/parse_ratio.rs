//! Bench binary: how parse + validate of a 5,000-stage pipeline compares with the YAML parser alone on the same
//! file, measured interleaved (tree, events, whole document, round after round) so that a busy neighbour
//! slows all three alike; prints the medians and the ratios. `cargo bench -p pipewright-spec --bench
//! parse_ratio`.

use std::hint::black_box;
use std::time::Instant;

mod common;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench binaries once; a quick pass is enough there.
    let rounds = if std::env::args().any(|a| a == "--bench") { 31 } else { 3 };
    let src = common::generate(5_000);
    let (mut events, mut tree, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        black_box(saphyr_parser::Parser::new_from_str(black_box(&src)).count());
        events.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        drop(black_box(spec::yaml::load(black_box(&src))));
        tree.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        drop(black_box(spec::parse_document("big.yaml", black_box(src.clone()))));
        whole.push(t.elapsed().as_secs_f64());
    }
    let (e, t, w) = (median(events), median(tree), median(whole));
    println!("5,000 stages, median of {rounds} interleaved rounds:");
    println!("  YAML events alone      {:>8.1} ms", e * 1e3);
    println!("  YAML tree alone        {:>8.1} ms", t * 1e3);
    println!("  parse + validate       {:>8.1} ms  = {:.2}x the tree, {:.2}x the events", w * 1e3, w / t, w / e);
}
