//! W3C Trace Context (`traceparent`, `tracestate`) across the bus: each
//! invocation is a span of the caller's trace (or the root of a new one),
//! the deliveries it makes through the `bus` import carry it on as their
//! parent, and the guest sees its span in its context headers whenever its
//! caller sent a trace — every nested call does. The root span of a call
//! that came without one is logged and carried on, but not handed to the
//! guest: building that header and the guest's allocator taking it in cost
//! about a microsecond per call (BENCHMARKS.md §1), for a trace nobody asked for.
//!
//! `traceparent` is `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`
//! (<https://www.w3.org/TR/trace-context/>); `tracestate` travels unchanged.

use crate::delivery::{Headers, header, set_header};
use std::fmt;

/// The header naming the trace and the parent span.
pub const TRACEPARENT: &str = "traceparent";

/// The vendor-specific trace state, carried on unchanged.
pub const TRACESTATE: &str = "tracestate";

/// One span's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace, shared by every span of it.
    pub trace_id: u128,
    /// This span.
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl SpanContext {
    /// Parses a `traceparent` value; `None` for anything the spec says to
    /// ignore (bad shape, all-zero ids, version `ff`).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
        let span_id = u64::from_str_radix(parent, 16).ok().filter(|&s| s != 0)?;
        Some(Self { trace_id, span_id, flags: u8::from_str_radix(flags, 16).ok()? })
    }

    /// A span of its own for an invocation whose caller sent `parent` (or
    /// the root of a new, sampled trace when it sent none).
    pub fn child_of(parent: Option<SpanContext>) -> Self {
        match parent {
            Some(p) => Self { trace_id: p.trace_id, span_id: random_nonzero_u64(), flags: p.flags },
            None => Self {
                trace_id: (u128::from(random_nonzero_u64()) << 64) | u128::from(random_nonzero_u64()),
                span_id: random_nonzero_u64(),
                flags: 1,
            },
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl SpanContext {
    /// The `traceparent` value naming this span as the parent (what
    /// `to_string` gives, written without the formatting machinery: it is
    /// made for every invocation).
    pub fn traceparent(&self) -> String {
        fn hex(out: &mut String, value: u128, digits: u32) {
            for i in (0..digits).rev() {
                let nibble = ((value >> (i * 4)) & 0xf) as u32;
                out.push(char::from_digit(nibble, 16).unwrap_or('0'));
            }
        }
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        hex(&mut out, self.trace_id, 32);
        out.push('-');
        hex(&mut out, u128::from(self.span_id), 16);
        out.push('-');
        hex(&mut out, u128::from(self.flags), 2);
        out
    }
}

impl fmt::Display for SpanContext {
    /// The `traceparent` value naming this span as the parent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// Starts the span of an invocation delivered with `headers`: its context
/// replaces the caller's `traceparent` in `headers` (what the guest sees;
/// a delivery without one gets none), and the returned [`Carried`] is what
/// the invocation's own deliveries carry on.
pub fn enter(headers: &mut Headers) -> Carried {
    let sent = header(headers, TRACEPARENT);
    let span = SpanContext::child_of(sent.and_then(SpanContext::parse));
    if sent.is_some() {
        set_header(headers, TRACEPARENT, span.traceparent());
    }
    Carried { parent: span, state: header(headers, TRACESTATE).map(str::to_string) }
}

/// What the deliveries made from inside an invocation carry on of its
/// trace; kept as a value, so that an invocation that makes no bus call
/// allocates nothing for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The invocation's span: their parent.
    pub parent: SpanContext,
    /// The caller's `tracestate`, unchanged.
    pub state: Option<String>,
}

impl Carried {
    /// Adds the trace headers to a delivery's `headers`.
    pub fn add_to(&self, headers: &mut Headers) {
        headers.push((TRACEPARENT.to_string(), self.parent.traceparent()));
        if let Some(state) = &self.state {
            headers.push((TRACESTATE.to_string(), state.clone()));
        }
    }
}

/// A random, non-zero id. Ids need to be unique, not secret: a SplitMix64
/// stream per thread, seeded once from the OS, costs nanoseconds where a
/// `getrandom` system call per id would cost a good part of a microsecond.
fn random_nonzero_u64() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
    }
    loop {
        let n = STATE.with(|state| {
            let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(next);
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        });
        if n != 0 {
            return n;
        }
    }
}

/// The OS's randomness; if it ever fails, a hash of the time and a
/// per-process random key still gives every thread its own stream.
fn seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_prints_the_spec_example() {
        let span = SpanContext::parse(EXAMPLE).unwrap();
        assert_eq!(span.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.span_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(span.to_string(), EXAMPLE);
        let max = SpanContext { trace_id: u128::MAX, span_id: u64::MAX, flags: 0xff };
        assert_eq!(max.traceparent(), format!("00-{:032x}-{:016x}-ff", u128::MAX, u64::MAX));
    }

    #[test]
    fn refuses_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_invocation_continues_the_callers_trace_with_a_span_of_its_own() {
        let mut headers = vec![(TRACEPARENT.into(), EXAMPLE.into()), (TRACESTATE.into(), "k=v".into())];
        let trace = enter(&mut headers);
        let (span, caller) = (trace.parent, SpanContext::parse(EXAMPLE).unwrap());
        assert_eq!((span.trace_id, span.flags), (caller.trace_id, caller.flags));
        assert_ne!(span.span_id, caller.span_id);
        assert_eq!(header(&headers, TRACEPARENT), Some(span.to_string().as_str()), "what the guest sees");
        let mut carried = Vec::new();
        trace.add_to(&mut carried);
        assert_eq!(carried, [(TRACEPARENT.into(), span.to_string()), (TRACESTATE.into(), "k=v".into())]);
    }

    #[test]
    fn without_a_caller_trace_a_new_one_starts() {
        let mut headers = vec![(TRACEPARENT.into(), "garbage".into())];
        let a = enter(&mut headers).parent;
        let b = SpanContext::child_of(None);
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(SpanContext::parse(header(&headers, TRACEPARENT).unwrap()), Some(a));
        let mut untraced = Headers::new();
        let root = enter(&mut untraced).parent;
        assert_eq!((root.flags, untraced.len()), (1, 0), "a root span is sampled, and not handed to the guest");
    }
}
