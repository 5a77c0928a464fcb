//! A global allocator that counts the allocations made on the current thread, so a test or
//! bench can measure the hot path exactly, and the bytes live in the whole process, so a test
//! can bound the memory a peer makes it hold.
//!
//! Install it with `#[global_allocator] static ALLOC: Counting = Counting;`, then read
//! [`allocations`] before and after the code measured, or call [`reset_peak`] before and
//! [`peak`] after.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed by this thread (it may go below zero).
    static THREAD_BYTES: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting each allocation (and reallocation) of the calling thread.
pub struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; only a thread-local counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        grew(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        grew(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        grew(new_size);
        thread_bytes_add(-(layout.size() as isize));
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        thread_bytes_add(-(layout.size() as isize));
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

fn grew(size: usize) {
    thread_bytes_add(size as isize);
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Starts a new peak at the bytes live now, and returns them.
pub fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// The most bytes live at once since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

fn count() {
    // `try_with`: the counter may already be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

fn thread_bytes_add(delta: isize) {
    let _ = THREAD_BYTES.try_with(|bytes| bytes.set(bytes.get() + delta));
}

/// Bytes allocated minus bytes freed by this thread so far: what it holds, when nothing it
/// allocated is freed elsewhere (a current-thread runtime's tasks run on it).
pub fn thread_bytes() -> isize {
    THREAD_BYTES.with(Cell::get)
}

/// Allocations (and reallocations) made so far on this thread.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Held by every test of the binary that allocates much or measures a peak, so that no two of
/// them run at once (the bytes live are the whole process's).
pub async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}
