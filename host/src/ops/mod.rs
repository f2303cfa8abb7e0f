//! The operations side: what an operator sees and drives — Prometheus
//! metrics, health and readiness, the HTTP gateway, W3C trace context, and
//! the serve lifecycle of `busbar run` (listeners, signals, drain).

pub mod http;
pub mod lograte;
pub mod metrics;
pub mod serve;
pub mod trace;
