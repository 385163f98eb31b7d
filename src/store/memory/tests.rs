//! The memory store's unit tests: sweeping, the cap, and the sweeper's life, by an explicit clock.

use super::*;
use crate::policy::Policy;
use std::time::Instant;

fn check(key: &str) -> Check {
    check_of(key, "p: 1 per 1s")
}

fn check_of(key: &str, policy: &str) -> Check {
    let policy: Policy = policy.parse().unwrap();
    Check::new(key.into(), Arc::new(policy))
}

fn capped(max: usize) -> MemoryStore {
    MemoryStore::new().with_max_callers(NonZeroUsize::new(max).unwrap())
}

/// The whole map's capacity, in entries, over all shards.
fn capacity(store: &MemoryStore) -> usize {
    (0..SHARDS)
        .map(|i| store.shared.lock_shard(i).slots.capacity())
        .sum()
}

/// A sweep drops exactly the expired entries, and shrinks the tables they filled.
#[test]
fn a_sweep_drops_expired_entries_and_shrinks_the_map() {
    let store = MemoryStore::new();
    for i in 0..5_000 {
        store.decide_at(&[check(&format!("k{i}"))], 10_000_000);
    }
    store.decide_at(&[check_of("live", "p: 1 per 1h")], 10_000_000);
    assert_eq!(store.len(), 5_001);
    let full = capacity(&store);
    store.sweep_all(11_000);
    assert_eq!(store.len(), 1);
    assert!(
        capacity(&store) * 20 < full,
        "capacity {} after the sweep, {full} before",
        capacity(&store)
    );
    // The live entry is still counted: a second request is denied.
    assert!(
        !store
            .decide_at(&[check_of("live", "p: 1 per 1h")], 11_000_000)
            .allowed
    );
}

/// The timer sweeps expired entries with no decision made: the store's explicit clock is
/// moved on, and the sweeper alone empties the map.
#[tokio::test]
async fn the_timer_sweeps_without_any_decision() {
    let store = MemoryStore::new();
    store.now_us(Clock::At(10_000));
    for i in 0..1_000 {
        store.decide_at(&[check(&format!("k{i}"))], 10_000_000);
    }
    store.decide_at(&[check_of("live", "p: 1 per 1h")], 10_000_000);
    assert!(store.shared.sweeping.load(Ordering::SeqCst));
    // Two seconds later by the store's clock: every 1 s entry has expired.
    store.now_us(Clock::At(12_000));
    let deadline = Instant::now() + 10 * SWEEP_PERIOD;
    while store.len() > 1 {
        assert!(Instant::now() < deadline, "{} entries remain", store.len());
        tokio::time::sleep(SWEEP_PERIOD / SHARDS as u32).await;
    }
    assert_eq!(store.len(), 1, "the live entry was swept");
}

/// The sweeper stops once the store is empty, and ends when the store is dropped.
#[tokio::test]
async fn the_sweeper_stops_when_empty_and_ends_with_the_store() {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let store = MemoryStore::new();
    store.now_us(Clock::At(10_000));
    assert_eq!(tasks(), 0, "an empty store runs no sweeper");
    store.decide_at(&[check("k")], 10_000_000);
    assert_eq!(tasks(), 1);
    store.now_us(Clock::At(20_000));
    let deadline = Instant::now() + 10 * SWEEP_PERIOD;
    while tasks() > 0 {
        assert!(
            Instant::now() < deadline,
            "the sweeper of an empty store runs on"
        );
        tokio::time::sleep(SWEEP_PERIOD / SHARDS as u32).await;
    }
    assert!(store.is_empty());
    // A new entry starts it again, and dropping the store ends it.
    store.decide_at(&[check("k")], 20_000_000);
    assert_eq!(tasks(), 1);
    drop(store);
    while tasks() > 0 {
        assert!(Instant::now() < deadline, "the sweeper outlived its store");
        tokio::time::sleep(SWEEP_PERIOD / SHARDS as u32).await;
    }
}

/// Outside a runtime no sweeper starts, and a full store sweeps itself before refusing.
#[test]
fn a_full_store_sweeps_expired_entries_before_refusing() {
    let store = capped(100);
    for i in 0..100 {
        assert!(
            store
                .decide_at(&[check(&format!("k{i}"))], 10_000_000)
                .allowed
        );
    }
    assert!(!store.shared.sweeping.load(Ordering::SeqCst));
    // Two seconds on, the first callers have expired: newcomers take their room.
    for i in 0..100 {
        let decision = store.decide_at(&[check(&format!("n{i}"))], 12_000_000);
        assert!(decision.allowed, "newcomer {i} was refused");
    }
    assert_eq!(store.len(), 100);
    assert_eq!(store.full_count(), 0);
}

/// The cap holds: past it, new callers are denied untracked, with nothing remaining and a
/// retry after one sweep period, and counted.
#[test]
fn the_cap_holds_and_refusals_are_counted() {
    let store = capped(100);
    let policy = "p: 5 per 1h";
    for i in 0..150 {
        let decision = store.decide_at(&[check_of(&format!("k{i}"), policy)], 10_000_000);
        assert_eq!(decision.allowed, i < 100, "caller {i}");
        if i >= 100 {
            let refused = &decision.policies[0];
            assert_eq!(refused.remaining, 0);
            assert_eq!(refused.retry_after, FULL_RETRY_AFTER);
            assert_eq!(decision.retry_after(), FULL_RETRY_AFTER);
        }
    }
    assert_eq!(store.len(), 100);
    assert_eq!(store.full_count(), 50);
    let counts = store.counts();
    assert_eq!((counts.memory_entries, counts.memory_full), (100, 50));
}

/// At the cap, a caller already tracked still gets exactly its limit, neither more nor less,
/// whatever the newcomers do.
#[test]
fn at_the_cap_a_tracked_caller_gets_exactly_its_limit() {
    let store = capped(10);
    let policy = "p: 5 per 1h";
    let now = 10_000_000;
    assert!(store.decide_at(&[check_of("joe", policy)], now).allowed);
    for i in 0..9 {
        assert!(
            store
                .decide_at(&[check_of(&format!("k{i}"), policy)], now)
                .allowed
        );
    }
    let mut admitted = 1;
    for round in 0..20 {
        assert!(
            !store
                .decide_at(&[check_of(&format!("new{round}"), policy)], now)
                .allowed
        );
        admitted += usize::from(store.decide_at(&[check_of("joe", policy)], now).allowed);
    }
    assert_eq!(admitted, 5);
    assert_eq!(store.full_count(), 20);
}

fn shadow_of(key: &str, policy: &str) -> Check {
    let policy: Policy = policy.parse().unwrap();
    Check::new(key.into(), Arc::new(policy.with_shadow(true)))
}

/// A shadow policy never denies, not even at the cap: its new entry takes what room is left or
/// goes untracked, so the policies that decide decide alone, and a caller they track gets
/// exactly its limit.
#[test]
fn at_the_cap_a_shadow_policy_goes_untracked_rather_than_deny() {
    let store = capped(1);
    let now = 10_000_000;
    let real = check_of("joe:real", "real: 3 per 1h");
    let shadow = shadow_of("joe:shadow", "shadow: 1 per 1h");
    let admitted = (0..5)
        .filter(|_| {
            store
                .decide_at(&[real.clone(), shadow.clone()], now)
                .allowed
        })
        .count();
    assert_eq!(admitted, 3, "the real policy alone decides");
    assert_eq!(store.len(), 1);
    assert_eq!(store.full_count(), 0);
    // Alone, a shadow policy of a caller the full store cannot track admits too.
    let alone = store.decide_at(&[shadow_of("ann:shadow", "shadow: 1 per 1h")], now);
    assert!(alone.allowed);
    assert_eq!(store.len(), 1);
    // With room, the shadow policy is tracked again and reports its would-be denial.
    let roomy = capped(2);
    for _ in 0..2 {
        roomy.decide_at(&[real.clone(), shadow.clone()], now);
    }
    let second = roomy.decide_at(&[real.clone(), shadow.clone()], now);
    assert!(second.allowed);
    assert_eq!(second.shadow_denials().count(), 1);
}

/// Several policies at the cap stay all-or-nothing: when one key cannot be tracked, the
/// tracked ones are not charged, and the refusal names the untracked policy.
#[test]
fn a_refused_decision_charges_no_policy() {
    let store = capped(2);
    let now = 10_000_000;
    let a = check_of("joe:a", "a: 3 per 1h");
    let b = check_of("joe:b", "b: 3 per 1h");
    assert!(store.decide_at(std::slice::from_ref(&a), now).allowed);
    assert!(store.decide_at(&[check("other")], now).allowed);
    let refused = store.decide_at(&[a.clone(), b.clone()], now);
    assert!(!refused.allowed);
    assert!(refused.policies[0].allowed, "a would have admitted");
    assert_eq!(refused.policies[0].remaining, 2, "a was charged");
    assert_eq!(refused.policies[1].retry_after, FULL_RETRY_AFTER);
    assert_eq!(store.len(), 2);
    // Once "other" has expired, both are tracked and a is charged its second unit.
    let later = store.decide_at(&[a, b], now + 2_000_000);
    assert!(later.allowed);
    assert_eq!(later.policies[0].remaining, 1);
    assert_eq!(later.policies[1].remaining, 2);
    assert_eq!(store.len(), 2);
}

/// Decisions spread over the shards, and several policies lock several shards without
/// losing an entry or counting one twice.
#[test]
fn entries_spread_over_shards_and_are_counted_once() {
    let store = MemoryStore::new();
    for i in 0..5_000 {
        let checks = [
            check_of(&format!("u{i}:a"), "a: 9 per 1h"),
            check_of(&format!("u{i}:b"), "b: 9 per 1h"),
            check_of(&format!("u{i}:a"), "a: 9 per 1h"),
        ];
        assert!(store.decide_at(&checks, 10_000_000).allowed);
    }
    let held: Vec<usize> = (0..SHARDS)
        .map(|i| store.shared.lock_shard(i).slots.len())
        .collect();
    assert_eq!(held.iter().sum::<usize>(), 10_000);
    assert_eq!(store.len(), 10_000);
    assert!(held.iter().all(|&n| n > 0), "an empty shard: {held:?}");
}
