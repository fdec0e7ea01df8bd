//! Every counter a call site keeps, declared once.
//!
//! [`site_counters!`] hands the list to a macro of the caller's, which makes
//! from it what that layer needs: the fields of the totals and of an
//! interval ([`SiteStats`](crate::SiteStats), `IntervalStats`), the interval
//! deltas, the exported families (Prometheus text and the `metrics` facade,
//! with their names and help) and the fields of the `/snapshot` schema. A
//! new counter is one line here, plus where the shard counts it and
//! `Totals` reads it.
//!
//! Each line is `field: "family", scale, "help";`: the field (in the totals,
//! the interval and the JSON), the family's name after
//! `ferrite_{probe,command}_` (a counter, in base units), the factor that
//! turns the field's unit into the family's, and the help text.

/// Calls `$then! { $($prefix)* <the list> }`.
macro_rules! site_counters {
    ($then:ident! { $($prefix:tt)* }) => {
        $then! {
            $($prefix)*
            calls: "calls_total", 1.0, "Calls completed.";
            errors: "errors_total", 1.0, "Calls that returned Err (with #[probe(err)]).";
            cancelled: "cancelled_total", 1.0, "Async calls whose future was dropped before completing.";
            panicked: "panicked_total", 1.0, "Calls that unwound from a panic.";
            polls: "polls_total", 1.0, "Polls of async calls.";
            busy_ns: "busy_seconds_total", 1e-9, "Time spent inside polls of async calls.";
        }
    };
}

pub(crate) use site_counters;
