//! Timing loops for the resolver: substitution, environment loading, `$resource` resolution,
//! the line index, and building the development components. Run with
//! `cargo bench -p dynreg-resource-resolver --all-features`.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dynreg_resource_resolver::{
    DomainConfig, Environment, LineIndex, LoadOptions, Missing, ResolveOptions, VarMap,
    substitute_str,
};

fn time<T>(name: &str, iters: u32, mut f: impl FnMut() -> T) -> Duration {
    for _ in 0..iters.div_ceil(10) {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    let per = start.elapsed() / iters;
    println!("{name:<58} {:>10.2} µs/op", per.as_secs_f64() * 1e6);
    per
}

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn prod_vars() -> VarMap {
    VarMap::new()
        .with("RDS_HOST", "db.internal")
        .with("RDS_DATABASE", "bots")
        .with("RDS_PASSWORD", "s3cret")
        .with("ELASTICACHE_HOST", "cache.internal")
        .with("KNOWLEDGE_BUCKET", "kb")
        .with("AWS_REGION", "eu-west-1")
}

fn main() {
    let vars = prod_vars();
    let lookup = |n: &str| dynreg_resource_resolver::VarSource::var(&vars, n);
    time("substitute_str: 3 placeholders in a URL", 200_000, || {
        substitute_str(
            "postgres://${RDS_USER:app}:${RDS_PASSWORD}@${RDS_HOST}:5432/x",
            &lookup,
            Missing::Error,
        )
        .unwrap()
    });
    time(
        "substitute_str: 200-byte string without placeholder",
        200_000,
        || substitute_str(&"x".repeat(200), &lookup, Missing::Error).unwrap(),
    );

    let prod = std::fs::read_to_string(configs().join("environments/production.yaml")).unwrap();
    let load = LoadOptions::with_vars(prod_vars());
    time(
        "Environment::parse(production.yaml) incl. substitution",
        5_000,
        || Environment::parse(&prod, None, &load).unwrap(),
    );

    let dev_load = LoadOptions::with_vars(VarMap::new());
    let dev =
        Environment::load_named(configs().join("environments"), "development", &dev_load).unwrap();
    let my_bot = DomainConfig::load(configs().join("domains/my-bot.yaml")).unwrap();
    let opts = ResolveOptions::with_load(dev_load.clone());
    time(
        "resolve my-bot.yaml (3 refs) incl. portability check",
        20_000,
        || my_bot.resolve_with(&dev, &opts).unwrap(),
    );

    // A bigger domain config: 200 bots, each with three references and some plain settings.
    let mut big = String::from("bots:\n");
    for i in 0..200 {
        big.push_str(&format!(
            "  bot{i}:\n    name: Bot {i}\n    prompt: \"You are bot {i} in ${{REGION:eu}}\"\n    registry: {{$resource: registry, type: databases, pool_size: 5}}\n    events: {{$resource: default, type: event_buses}}\n    knowledge: {{$resource: knowledge, type: knowledge}}\n"
        ));
    }
    let big_text = big.clone();
    let big = DomainConfig::parse(&big, None).unwrap();
    time(
        "resolve 200 bots x 3 refs (1400 lines) incl. portability",
        200,
        || big.resolve_with(&dev, &opts).unwrap(),
    );

    time(
        "  of which: portability_findings of the 200 bots",
        200,
        || big.portability_findings(),
    );
    let mut no_check = opts.clone();
    no_check.check_portability = false;
    time(
        "  resolve 200 bots without the portability check",
        200,
        || big.resolve_with(&dev, &no_check).unwrap(),
    );
    time(
        "  of which: DomainConfig::parse of the 200 bots",
        200,
        || DomainConfig::parse(&big_text, None).unwrap(),
    );

    let text: String = (0..1000)
        .map(|i| format!("k{i}:\n  a: 1\n  b: [1, 2]\n"))
        .collect();
    time("LineIndex::build for a 3000-line file", 500, || {
        LineIndex::build(&text)
    });
}
