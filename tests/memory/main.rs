//! Tests that measure memory: allocation counts on the hot path, and the peak heap a stalled
//! client or a hostile upstream can make the server hold. They share a counting global
//! allocator: counts are per thread, but the bytes live are the whole process's, so the tests
//! that measure a peak or allocate much hold `support::alloc_counter::alone()` while they do.

#[global_allocator]
static ALLOCATOR: support::alloc_counter::Counting = support::alloc_counter::Counting;

mod allocations;
#[cfg(feature = "gateway")]
mod gateway;
#[cfg(feature = "hub")]
mod hub;
mod idle;
mod stall;
