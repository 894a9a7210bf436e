//! `decide` on the hot path: what a claimed message costs before its provider is called.
//!
//! Run with `cargo bench --bench policy -- --quick`.

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use tidings::config::ChannelConfig;
use tidings::message::Message;
use tidings::policy::{ChannelPolicy, Decision, decide};

fn policy() -> ChannelPolicy {
    let config: ChannelConfig = toml::from_str(
        r#"
        kind = "sandbox"
        default_timezone = "Europe/Paris"
        [quiet_hours]
        start = "21:00"
        end = "08:00"
        "#,
    )
    .unwrap();
    config.build_policy("sms").unwrap()
}

fn message(use_case: &str, recipient: Value, now: DateTime<Utc>) -> Message {
    Message::example(
        "sms",
        use_case,
        recipient,
        json!({ "text": "hi" }),
        now,
        TimeDelta::hours(36),
    )
}

fn bench_decide(c: &mut Criterion) {
    let p = policy();
    // 09:00 in New York, 04:00 in Honolulu: a +1 number is inside quiet hours (deferred to 18:00 UTC).
    let quiet: DateTime<Utc> = "2026-01-15T14:00:00Z".parse().unwrap();
    // 14:00 in New York, 09:00 in Honolulu: allowed everywhere.
    let allowed: DateTime<Utc> = "2026-01-15T19:00:00Z".parse().unwrap();
    let us = json!({ "phone": "+12125550123" });

    let mut g = c.benchmark_group("decide");

    let m = message("transactional", us.clone(), quiet);
    assert_eq!(decide(&m, &p, quiet), Decision::Send);
    g.bench_function("transactional_us", |b| {
        b.iter(|| decide(black_box(&m), &p, black_box(quiet)))
    });

    let us_quiet = message("marketing", us.clone(), quiet);
    assert!(matches!(
        decide(&us_quiet, &p, quiet),
        Decision::Defer { .. }
    ));
    g.bench_function("marketing_us_quiet", |b| {
        b.iter(|| decide(black_box(&us_quiet), &p, black_box(quiet)))
    });

    let m = message("marketing", us.clone(), allowed);
    assert_eq!(decide(&m, &p, allowed), Decision::Send);
    g.bench_function("marketing_us_allowed", |b| {
        b.iter(|| decide(black_box(&m), &p, black_box(allowed)))
    });

    // A single-region calling code: no phonenumber parse at all.
    let m = message("marketing", json!({ "phone": "+33612345678" }), quiet);
    g.bench_function("marketing_fr", |b| {
        b.iter(|| decide(black_box(&m), &p, black_box(quiet)))
    });

    // A new +1 number every time (more than the phone memo holds): the phonenumber parse on every call.
    let messages: Vec<Message> = (0..100_000u32)
        .map(|i| {
            let phone = format!("+1212{:07}", 2_000_000 + i);
            message("marketing", json!({ "phone": phone }), quiet)
        })
        .collect();
    let mut i = 0;
    g.bench_function("marketing_us_new_number", |b| {
        b.iter(|| {
            i = (i + 1) % messages.len();
            decide(black_box(&messages[i]), &p, black_box(quiet))
        })
    });

    // A cold window memo: the union of the 29 US zones' windows computed from scratch.
    g.bench_function("marketing_us_cold_memo", |b| {
        b.iter_batched(
            policy,
            |fresh| decide(black_box(&us_quiet), &fresh, black_box(quiet)),
            BatchSize::SmallInput,
        )
    });

    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_decide
}
criterion_main!(benches);
