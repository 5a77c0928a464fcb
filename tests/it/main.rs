//! The integration tests, one module per capability, in one test binary (one link of axum,
//! hyper and tonic). Tests that need a process of their own are elsewhere: `tests/memory`
//! (a counting global allocator, and peaks no other test may disturb) and `tests/load.rs`
//! (its client fleet runs in processes of its own).

mod axum;
#[cfg(feature = "compression")]
mod compression;
mod disconnect;
mod encoder;
// The examples' probes need the demo, which needs the `axum` and `compression` features.
#[cfg(all(feature = "axum", feature = "compression"))]
mod examples;
mod extract;
mod framing;
mod grpc;
mod half_open;
mod heartbeat;
mod lenient_parsers;
mod lifecycle;
mod limits;
#[cfg(all(feature = "mercure", feature = "axum"))]
mod mercure;
#[cfg(feature = "metrics")]
mod metrics;
mod negotiation;
mod read;
#[cfg(feature = "redis")]
mod redis;
mod shutdown;
mod source;
mod tower_http;
