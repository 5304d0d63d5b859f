//! Limits that protect the gateway from costly requests, as pure functions and state with no
//! I/O, so they can be checked before any work is done and tested without a server:
//!
//! - [`json_depth_exceeds`]: refuse deeply nested JSON with a clear answer before parsing it.
//! - [`RateLimiter`]: per-client token buckets (a client is a certificate identity, or the peer
//!   address on plain HTTP), with memory bounded however many clients appear.
//!
//! The HTTP layer (`server.rs`, `api.rs`) decides where these are checked and how refusals are
//! answered (400 `structure`, 429 `throttled` with `Retry-After`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Whether `body`, read as JSON, nests arrays and objects more than `max_depth` deep.
///
/// The depth of a value is how many arrays and objects enclose its innermost part: a scalar
/// is 0, `[]` and `{}` are 1, `{"a":[1]}` is 2. A body at exactly `max_depth` passes.
///
/// Why: serde_json stops at 128 levels with a generic parse error, and parsing a hostile body
/// costs stack and time before that. This check is a single pass over the bytes with no
/// allocation, so it can run before parsing and give a clear, Signpost-specific refusal.
/// Brackets inside strings do not count (escapes `\"` and `\\` are followed). It never panics,
/// whatever the bytes: malformed JSON is left for the parser to refuse, and a stray closing
/// bracket never lowers the depth below zero, so it cannot hide deeper nesting after it.
pub fn json_depth_exceeds(body: &[u8], max_depth: usize) -> bool {
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// One token, in the fixed-point unit buckets count in (nanotokens): refilling `rate` tokens a
/// second is then exactly `rate` nanotokens a nanosecond, with no rounding.
const TOKEN: u64 = 1_000_000_000;

/// How many clients a [`RateLimiter`] tracks by default (about 100 bytes each).
pub const DEFAULT_MAX_CLIENTS: usize = 65_536;

/// Per-client rate limiting: each client key gets a token bucket holding up to `burst` tokens,
/// refilled at `rate_per_s` tokens a second; each request takes one token, and a request that
/// finds none is refused with how long until a token is there.
///
/// Why per client: one misbehaving GP system or scheme must not use up the capacity every
/// other client relies on. Why token buckets: a client may send a burst (a practice's morning
/// batch) as long as its average stays within the rate.
///
/// Thread-safe: one mutex over a map, held only for a few arithmetic steps per request.
///
/// Memory is bounded: a bucket that has refilled completely behaves exactly as a missing one,
/// so such buckets are dropped when the map reaches its cap (`max_clients`). If the map is
/// still full of active clients (a flood of distinct addresses within the refill window), new
/// keys share one overflow bucket until room is made: the flood is throttled as a whole, and
/// clients already tracked keep their own buckets. The map's hasher is std's randomly keyed
/// SipHash, so keys cannot be chosen to collide.
///
/// A `rate_per_s` of 0 turns limiting off (every check passes). A `burst` of 0 is taken as 1.
pub struct RateLimiter {
    rate_per_s: u32,
    /// Bucket size in nanotokens: `max(burst, 1)` tokens.
    capacity: u64,
    max_clients: usize,
    state: Mutex<State>,
}

struct State {
    buckets: HashMap<Box<str>, Bucket>,
    /// Shared by keys that arrive while the map is full of active clients.
    overflow: Bucket,
    /// After a pruning pass that freed little, the next is not tried before this: a flood of
    /// new keys then costs O(1) each, not a scan of the whole map each.
    prune_not_before: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left, in nanotokens, as of `updated`.
    nanotokens: u64,
    updated: Instant,
}

impl Bucket {
    fn full(capacity: u64, now: Instant) -> Self {
        Bucket {
            nanotokens: capacity,
            updated: now,
        }
    }

    /// Tokens as of `now` (never more than `capacity`). A `now` earlier than the last update
    /// (callers racing with their clocks) adds nothing.
    fn level(&self, rate_per_s: u32, capacity: u64, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        let refill = elapsed.saturating_mul(u128::from(rate_per_s));
        let level = u128::from(self.nanotokens).saturating_add(refill);
        level.min(u128::from(capacity)) as u64
    }

    /// Take one token as of `now`, or say how long until one is there.
    fn take(&mut self, rate_per_s: u32, capacity: u64, now: Instant) -> Result<(), Duration> {
        self.nanotokens = self.level(rate_per_s, capacity, now);
        self.updated = self.updated.max(now);
        if self.nanotokens >= TOKEN {
            self.nanotokens -= TOKEN;
            Ok(())
        } else {
            // Nanotokens missing / (nanotokens per nanosecond), rounded up.
            let missing = TOKEN - self.nanotokens;
            Err(Duration::from_nanos(
                missing.div_ceil(u64::from(rate_per_s)),
            ))
        }
    }
}

impl RateLimiter {
    /// A limiter allowing each client `rate_per_s` requests a second on average and `burst` at
    /// once, tracking up to [`DEFAULT_MAX_CLIENTS`] clients.
    pub fn new(rate_per_s: u32, burst: u32) -> Self {
        Self::with_max_clients(rate_per_s, burst, DEFAULT_MAX_CLIENTS)
    }

    /// As [`RateLimiter::new`], tracking up to `max_clients` clients (at least 1) in their own
    /// buckets.
    pub fn with_max_clients(rate_per_s: u32, burst: u32, max_clients: usize) -> Self {
        let capacity = u64::from(burst.max(1)) * TOKEN;
        RateLimiter {
            rate_per_s,
            capacity,
            max_clients: max_clients.max(1),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                overflow: Bucket::full(capacity, Instant::now()),
                prune_not_before: None,
            }),
        }
    }

    /// Count one request from `key` at `now`: `Ok` if it may go ahead, or `Err(wait)` with how
    /// long until this client may try again (for `Retry-After`; see [`retry_after_secs`]).
    ///
    /// `now` is a parameter so callers pass one clock reading per request and tests need no
    /// sleeps.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate_per_s == 0 {
            return Ok(());
        }
        let (rate, capacity) = (self.rate_per_s, self.capacity);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = state.buckets.get_mut(key) {
            return bucket.take(rate, capacity, now);
        }
        if state.buckets.len() >= self.max_clients {
            self.prune(&mut state, now);
        }
        if state.buckets.len() >= self.max_clients {
            return state.overflow.take(rate, capacity, now);
        }
        let mut bucket = Bucket::full(capacity, now);
        let answer = bucket.take(rate, capacity, now);
        state.buckets.insert(key.into(), bucket);
        answer
    }

    /// How many clients have a bucket of their own now (for tests and metrics).
    pub fn tracked_clients(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }

    /// Drop the buckets that have refilled completely (dropping them changes no answer). If
    /// that frees less than a quarter of the map, do not scan again until every bucket in it
    /// could have refilled.
    fn prune(&self, state: &mut State, now: Instant) {
        if state.prune_not_before.is_some_and(|t| now < t) {
            return;
        }
        let (rate, capacity) = (self.rate_per_s, self.capacity);
        state
            .buckets
            .retain(|_, b| b.level(rate, capacity, now) < capacity);
        state.prune_not_before = if state.buckets.len() > self.max_clients - self.max_clients / 4 {
            let fill = Duration::from_nanos(capacity.div_ceil(u64::from(rate)));
            now.checked_add(fill)
        } else {
            None
        };
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate_per_s", &self.rate_per_s)
            .field("burst", &(self.capacity / TOKEN))
            .field("max_clients", &self.max_clients)
            .finish_non_exhaustive()
    }
}

/// The `Retry-After` value (whole seconds) for a wait: rounded up, and at least 1, so a client
/// that honours it is never refused again for coming back too early.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut v = vec![b'['; depth];
        v.extend(std::iter::repeat_n(b']', depth));
        v
    }

    #[test]
    fn scalars_and_empty_bodies_have_depth_zero() {
        for body in [&b""[..], b"1", b"\"x\"", b"null", b"  true "] {
            assert!(!json_depth_exceeds(body, 0), "{body:?}");
        }
        assert!(json_depth_exceeds(b"[]", 0));
        assert!(json_depth_exceeds(b"{}", 0));
    }

    #[test]
    fn depth_equal_to_the_limit_passes_and_one_more_fails() {
        for max in [1, 2, 16, 64, 200] {
            assert!(!json_depth_exceeds(&nested(max), max), "{max}");
            assert!(json_depth_exceeds(&nested(max + 1), max), "{max}");
        }
    }

    #[test]
    fn objects_and_arrays_count_alike_and_siblings_do_not_add_up() {
        let body = br#"{"a":[{"b":1},{"c":[2]}],"d":{"e":{}}}"#;
        assert!(!json_depth_exceeds(body, 4));
        assert!(json_depth_exceeds(body, 3));
        let wide: Vec<u8> = std::iter::repeat_n(&b"[[1],[2]],"[..], 1000)
            .flatten()
            .copied()
            .collect();
        assert!(!json_depth_exceeds(&wide, 2), "many siblings at depth 2");
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let body = br#"{"div":"[[[[{{{{ ]]]] }}","x":["[","{"]}"#;
        assert!(!json_depth_exceeds(body, 2));
        assert!(json_depth_exceeds(body, 1));
        let deep_in_string = format!("[\"{}\"]", "[".repeat(10_000));
        assert!(!json_depth_exceeds(deep_in_string.as_bytes(), 1));
    }

    #[test]
    fn escaped_quotes_do_not_end_a_string_and_escaped_backslashes_do() {
        // `\"` stays inside the string: the brackets after it are text.
        assert!(!json_depth_exceeds(br#"["a\"[[[["]"#, 1));
        // `\\` is a whole escape, so the quote after it ends the string: the brackets count.
        assert!(json_depth_exceeds(br#"["a\\",[[]]]"#, 2));
        assert!(!json_depth_exceeds(br#"["a\\",[[]]]"#, 3));
        // `\\\"` is an escaped backslash then an escaped quote: still inside.
        assert!(!json_depth_exceeds(br#"["a\\\"[[[","b"]"#, 1));
        // Unicode escapes are plain text to this scan.
        assert!(!json_depth_exceeds(br#"["\u005b\u007b[["]"#, 1));
    }

    #[test]
    fn it_stops_at_the_first_byte_past_the_limit() {
        let mut body = nested(3);
        body.truncate(3);
        body.extend_from_slice(b"\xff\xfe garbage that is never read");
        assert!(json_depth_exceeds(&body, 2));
    }

    #[test]
    fn stray_closers_cannot_hide_deeper_nesting() {
        let mut body = b"]]]]}}}}".to_vec();
        body.extend(nested(5));
        assert!(json_depth_exceeds(&body, 4));
        assert!(!json_depth_exceeds(&body, 5));
    }

    #[test]
    fn any_bytes_give_an_answer_without_panicking() {
        // A deterministic spread of byte strings, heavy in the bytes the scan cares about.
        let alphabet = b"[]{}\"\\ a\x00\xff\xc3";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2_000 {
            let body: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let deep = json_depth_exceeds(&body, 3);
            // Monotone in the limit: passing at 3 means passing at anything larger.
            if !deep {
                assert!(!json_depth_exceeds(&body, 4), "{body:?}");
            }
        }
        assert!(!json_depth_exceeds(b"\"unterminated [[[[", 0));
        assert!(!json_depth_exceeds(b"\\\\\\", 0));
        assert!(!json_depth_exceeds(&[b'['; 1 << 20], usize::MAX));
    }

    #[test]
    fn it_agrees_with_serde_json_on_what_serde_can_parse() {
        for body in [
            r#"{"a":[1,2,{"b":"]]]"}]}"#,
            r#"[[["\\"],"\"["]]"#,
            r#"{"resourceType":"Bundle","entry":[{"resource":{"x":[[[]]]}}]}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(body).expect(body);
            let depth = depth_of(&v);
            assert!(!json_depth_exceeds(body.as_bytes(), depth), "{body}");
            assert!(json_depth_exceeds(body.as_bytes(), depth - 1), "{body}");
        }
    }

    fn depth_of(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth_of).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fresh_client_gets_its_burst_at_once_then_waits() {
        let limiter = RateLimiter::new(5, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                limiter.check("gp-a", t0),
                Ok(()),
                "request {i} of the burst"
            );
        }
        // 5 a second: one token every 200 ms, and the bucket is empty.
        assert_eq!(limiter.check("gp-a", t0), Err(ms(200)));
        assert_eq!(limiter.check("gp-a", t0 + ms(150)), Err(ms(50)));
    }

    #[test]
    fn tokens_refill_at_the_rate_and_never_past_the_burst() {
        let limiter = RateLimiter::new(5, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check("k", t0).unwrap();
        }
        assert!(limiter.check("k", t0 + ms(199)).is_err());
        assert_eq!(
            limiter.check("k", t0 + ms(200)),
            Ok(()),
            "one token after 200 ms"
        );
        assert!(limiter.check("k", t0 + ms(200)).is_err(), "and only one");
        // A long idle spell refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.check("k", later), Ok(()));
        }
        assert!(limiter.check("k", later).is_err());
    }

    #[test]
    fn partial_refills_add_up_exactly() {
        // 3 a second does not divide a second into whole nanoseconds; fixed point keeps it exact.
        let limiter = RateLimiter::new(3, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.check("k", t0).unwrap();
        }
        // Checks 100 ms apart each add 0.3 tokens: one passes at 400 ms (1.2, leaving 0.2), at
        // 700 ms (1.1, leaving 0.1) and at exactly 1 s (1.0): nothing is lost to rounding.
        let mut passed = Vec::new();
        for step in 1..=10 {
            if limiter.check("k", t0 + ms(100 * step)).is_ok() {
                passed.push(step);
            }
        }
        assert_eq!(passed, vec![4, 7, 10]);
    }

    #[test]
    fn the_steady_rate_is_the_configured_one() {
        let limiter = RateLimiter::new(50, 10);
        let t0 = Instant::now();
        // A client hammering every millisecond for 10 s gets the burst plus 50 a second.
        let passed = (0..10_000)
            .filter(|i| limiter.check("k", t0 + ms(*i)).is_ok())
            .count();
        assert_eq!(
            passed,
            10 + 50 * 10 - 1,
            "burst, then one every 20 ms up to 9.999 s"
        );
    }

    #[test]
    fn clients_have_separate_buckets() {
        let limiter = RateLimiter::new(1, 2);
        let t0 = Instant::now();
        limiter.check("a", t0).unwrap();
        limiter.check("a", t0).unwrap();
        assert!(limiter.check("a", t0).is_err());
        assert_eq!(limiter.check("b", t0), Ok(()), "b is not slowed by a");
        assert_eq!(limiter.check("b", t0), Ok(()));
        assert!(limiter.check("b", t0).is_err());
        assert_eq!(limiter.tracked_clients(), 2);
    }

    #[test]
    fn retry_after_is_when_the_next_token_is_there() {
        let limiter = RateLimiter::new(2, 1);
        let t0 = Instant::now();
        limiter.check("k", t0).unwrap();
        let wait = limiter.check("k", t0 + ms(100)).unwrap_err();
        assert_eq!(wait, ms(400));
        assert!(limiter.check("k", t0 + ms(100) + wait - ms(1)).is_err());
        assert_eq!(limiter.check("k", t0 + ms(100) + wait), Ok(()));
        // Refusals take nothing: waiting the advertised time is enough even after many retries.
        let limiter = RateLimiter::new(1, 1);
        limiter.check("k", t0).unwrap();
        for i in 0..100 {
            assert!(limiter.check("k", t0 + ms(i)).is_err());
        }
        assert_eq!(limiter.check("k", t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn retry_after_seconds_round_up_and_are_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(ms(1)), 1);
        assert_eq!(retry_after_secs(ms(1000)), 1);
        assert_eq!(retry_after_secs(ms(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn a_clock_reading_from_the_past_refills_nothing_and_panics_nowhere() {
        let limiter = RateLimiter::new(10, 1);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        limiter.check("k", t1).unwrap();
        assert!(
            limiter.check("k", t0).is_err(),
            "an older reading adds nothing"
        );
        assert!(
            limiter.check("k", t1).is_err(),
            "nor moves the bucket back in time"
        );
        assert_eq!(limiter.check("k", t1 + ms(100)), Ok(()));
    }

    #[test]
    fn zero_rate_turns_limiting_off_and_zero_burst_means_one() {
        let off = RateLimiter::new(0, 0);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| off.check("k", t0).is_ok()));
        assert_eq!(off.tracked_clients(), 0);
        let one = RateLimiter::new(10, 0);
        assert_eq!(one.check("k", t0), Ok(()));
        assert_eq!(one.check("k", t0), Err(ms(100)));
    }

    #[test]
    fn a_flood_of_distinct_clients_keeps_memory_bounded() {
        let limiter = RateLimiter::with_max_clients(10, 5, 100);
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            // Every key new, a thousand a millisecond: mostly nothing can be evicted, and now and
            // then (after the 0.5 s a bucket takes to refill) everything can.
            let _ = limiter.check(&format!("10.0.{}.{}", i / 256, i % 256), t0 + ms(i / 1000));
            assert!(limiter.tracked_clients() <= 100);
        }
        assert!(limiter.tracked_clients() > 0);
    }

    #[test]
    fn idle_full_buckets_make_room_for_new_clients() {
        let limiter = RateLimiter::with_max_clients(10, 5, 4);
        let t0 = Instant::now();
        for k in ["a", "b", "c", "d"] {
            limiter.check(k, t0).unwrap();
        }
        assert_eq!(limiter.tracked_clients(), 4);
        // 100 ms later every bucket is full again (one token at 10 a second): all evictable.
        let t1 = t0 + ms(100);
        assert_eq!(limiter.check("e", t1), Ok(()));
        assert_eq!(
            limiter.tracked_clients(),
            1,
            "the full buckets were dropped for e"
        );
        // A bucket that is not full yet is kept.
        for k in ["f", "g", "h"] {
            limiter.check(k, t1).unwrap();
        }
        limiter.check("h", t1).unwrap();
        let t2 = t1 + ms(100);
        assert_eq!(limiter.check("i", t2), Ok(()));
        assert_eq!(limiter.tracked_clients(), 2, "h (still refilling) and i");
    }

    #[test]
    fn keys_that_find_the_map_full_share_the_overflow_bucket() {
        let limiter = RateLimiter::with_max_clients(1, 3, 2);
        let t0 = Instant::now();
        limiter.check("a", t0).unwrap();
        limiter.check("b", t0).unwrap();
        // The map is full of active clients: newcomers share one bucket of burst 3.
        let overflow: Vec<bool> = ["c", "d", "e", "f"]
            .iter()
            .map(|k| limiter.check(k, t0).is_ok())
            .collect();
        assert_eq!(overflow, [true, true, true, false]);
        // Tracked clients keep their own buckets.
        assert_eq!(limiter.check("a", t0), Ok(()));
        assert_eq!(limiter.tracked_clients(), 2);
        // Once a and b have refilled, newcomers get buckets of their own again.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.check("c", later), Ok(()));
        assert_eq!(limiter.check("c", later), Ok(()));
        assert_eq!(limiter.check("c", later), Ok(()));
        assert!(
            limiter.check("c", later).is_err(),
            "c now has its own bucket"
        );
        assert_eq!(limiter.check("d", later), Ok(()));
    }

    #[test]
    fn a_flood_does_not_rescan_the_map_for_every_new_key() {
        let limiter = RateLimiter::with_max_clients(1, 1, 8);
        let t0 = Instant::now();
        for i in 0..8 {
            limiter.check(&i.to_string(), t0).unwrap();
        }
        // Nothing evictable: the pass frees nothing, so the next is put off until a bucket can
        // have refilled (1 s); meanwhile newcomers go to the overflow bucket.
        let _ = limiter.check("new-1", t0);
        let pause = limiter
            .state
            .lock()
            .unwrap()
            .prune_not_before
            .expect("the next pass is put off");
        assert_eq!(pause, t0 + Duration::from_secs(1));
        // After the pause, the idle buckets are evicted again.
        assert_eq!(limiter.check("new-2", pause), Ok(()));
        assert_eq!(limiter.tracked_clients(), 1);
    }

    #[test]
    fn it_is_shared_across_threads() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1, 100));
        let t0 = Instant::now();
        let passed: usize = (0..4)
            .map(|_| {
                let l = limiter.clone();
                std::thread::spawn(move || (0..50).filter(|_| l.check("k", t0).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(passed, 100, "exactly the burst across all threads");
    }
}
