//! What every fuzz target links: an allocator that refuses any single
//! allocation above [`MAX_ALLOCATION`] by aborting, which libFuzzer
//! reports as a crash with the input that caused it. libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer's malloc hooks; the targets are
//! built without a sanitizer (`-s none`, all our code is safe Rust), so
//! this guard does that job, and `-rss_limit_mb` bounds the total.

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a target may make: far above what any
/// input of at most a few hundred kilobytes should need.
pub const MAX_ALLOCATION: usize = 256 << 20;

struct Guard;

// SAFETY: forwards to the system allocator unchanged; only refuses sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No allocation here (no panic message formatting): say it with a
        // fixed string and abort, which libFuzzer catches as a crash.
        let msg = b"fuzz: single allocation above MAX_ALLOCATION (256 MiB)\n";
        use std::io::Write;
        let _ = std::io::stderr().write_all(msg);
        std::process::abort();
    }
}

#[global_allocator]
static GUARD: Guard = Guard;
