//! A counting global allocator: live heap bytes for the memory benchmark, and allocation
//! counts (process-wide and per thread) for the no-allocation check of picks.
//!
//! A program opts in with
//! `#[global_allocator] static ALLOC: herald_bench::alloc::Counting = herald_bench::alloc::Counting;`
//! and reads the counters with the functions below.
// A global allocator cannot be written without `unsafe`: this module only forwards to the
// system allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Whether allocations are counted: on unless [`count`] turned it off.
static COUNTING: AtomicBool = AtomicBool::new(true);

/// Turns counting on or off for the whole process. A program that measures no memory turns it
/// off first thing; the allocator then costs it one relaxed load per call.
pub fn count(on: bool) {
    COUNTING.store(on, Relaxed);
}

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_CHUNK_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Live bytes requested, by size class: class `k` holds requests of `2^(k-1)` to `2^k - 1`
/// bytes (class 0: zero-sized).
static LIVE_BY_CLASS: [AtomicI64; SIZE_CLASSES] = [const { AtomicI64::new(0) }; SIZE_CLASSES];

/// Number of size classes [`live_bytes_by_class`] reports (up to 2^47 bytes).
pub const SIZE_CLASSES: usize = 48;

fn class(size: usize) -> usize {
    ((usize::BITS - size.leading_zeros()) as usize).min(SIZE_CLASSES - 1)
}

thread_local! {
    // Const-initialised and without `Drop`: reading it never allocates, so the allocator
    // itself may use it.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting what passes through it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

/// What glibc's malloc really takes for a request of `size` bytes: an 8-byte header, rounded
/// up to 16 bytes, at least 32.
fn chunk(size: usize) -> i64 {
    ((size + 8 + 15) & !15).max(32) as i64
}

fn on_alloc(size: usize) {
    if !COUNTING.load(Relaxed) {
        return;
    }
    LIVE_BYTES.fetch_add(size as i64, Relaxed);
    LIVE_CHUNK_BYTES.fetch_add(chunk(size), Relaxed);
    LIVE_BY_CLASS[class(size)].fetch_add(size as i64, Relaxed);
    ALLOCATIONS.fetch_add(1, Relaxed);
    let _ = THREAD_ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn on_dealloc(size: usize) {
    if !COUNTING.load(Relaxed) {
        return;
    }
    LIVE_BYTES.fetch_sub(size as i64, Relaxed);
    LIVE_CHUNK_BYTES.fetch_sub(chunk(size), Relaxed);
    LIVE_BY_CLASS[class(size)].fetch_sub(size as i64, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract; the
// counters are plain atomics and a const thread-local that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        on_dealloc(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            on_dealloc(layout.size());
            on_alloc(new_size);
        }
        p
    }
}

/// Heap bytes requested and not yet freed, process-wide (meaningful only under [`Counting`]).
pub fn live_bytes() -> i64 {
    LIVE_BYTES.load(Relaxed)
}

/// [`live_bytes`] as glibc's malloc lays them out (header and 16-byte rounding included).
pub fn live_chunk_bytes() -> i64 {
    LIVE_CHUNK_BYTES.load(Relaxed)
}

/// [`live_bytes`] split by request size: entry `k` counts the live requests of `2^(k-1)` to
/// `2^k - 1` bytes.
pub fn live_bytes_by_class() -> [i64; SIZE_CLASSES] {
    std::array::from_fn(|k| LIVE_BY_CLASS[k].load(Relaxed))
}

/// Allocations (including reallocations) so far, process-wide.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Relaxed)
}

/// Allocations (including reallocations) so far by the calling thread.
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}
